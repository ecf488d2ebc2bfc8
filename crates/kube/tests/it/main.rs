//! The kube backend on a real kube-apiserver + etcd (see `endstate-testenv`): one server per
//! test process, one namespace per test; the throttling test starts a server of its own.

mod apply;
mod crds;
mod reads;
mod status;
mod support;
mod targets;
mod throttle;
