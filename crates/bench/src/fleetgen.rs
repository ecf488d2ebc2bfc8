//! Generates a synthetic fleet repository of any size, laid out like
//! `examples/repo-layout`: one file of Machines per cluster, package versions, and a `prod`
//! overlay with label-targeted merge and JSON patches and a `RolloutPolicy`.
//!
//! The output is a pure function of the [`Spec`], so two runs give byte-identical trees.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Number of Machines.
    pub machines: usize,
    /// Machines per cluster (one file per cluster).
    pub machines_per_cluster: usize,
}

impl Spec {
    /// `machines` machines, 1000 per cluster.
    pub fn machines(machines: usize) -> Self {
        Spec {
            machines,
            machines_per_cluster: 1000,
        }
    }

    /// The number of clusters.
    pub fn clusters(&self) -> usize {
        self.machines.div_ceil(self.machines_per_cluster).max(1)
    }
}

const IDCS: [&str; 3] = ["hz-a", "hz-b", "hz-c"];
const API: &str = "fleet.endstate.dev/v1alpha1";

/// Writes the repository under `root` (created if missing). The overlay to render is
/// `overlays/prod`.
pub fn generate(root: &Path, spec: Spec) -> io::Result<()> {
    let write = |path: &str, text: &str| -> io::Result<()> {
        let full = root.join(path);
        fs::create_dir_all(full.parent().expect("paths have a parent"))?;
        fs::write(full, text)
    };
    write(
        "base/kustomization.yaml",
        "resources:\n- packages.yaml\n- clusters.yaml\n- machines\nlabels:\n- pairs:\n    app.kubernetes.io/managed-by: endstate\n",
    )?;
    let mut packages = String::new();
    for (name, package, version) in [
        ("kubelet-1.27.9", "kubelet", "1.27.9"),
        ("kubelet-1.28.4", "kubelet", "1.28.4"),
        ("containerd-1.7.13", "containerd", "1.7.13"),
        ("containerd-1.7.18", "containerd", "1.7.18"),
    ] {
        write!(
            packages,
            "---\napiVersion: {API}\nkind: MachinePackageVersion\nmetadata:\n  name: {name}\nspec:\n  packageName: {package}\n  version: \"{version}\"\n  install:\n    url: https://packages.example.internal/{package}-{version}.rpm\n    sha256: {}\n",
            "0123456789abcdef".repeat(4)
        )
        .expect("writing to a String");
    }
    write!(
        packages,
        "---\napiVersion: {API}\nkind: ClusterPackageVersion\nmetadata:\n  name: k8s-1.27.9\nspec:\n  version: \"1.27.9\"\n  etcd: {{image: registry.example.internal/etcd:3.5.9}}\n  apiserver: {{image: registry.example.internal/kube-apiserver:v1.27.9}}\n  controllerManager: {{image: registry.example.internal/kube-controller-manager:v1.27.9}}\n  scheduler: {{image: registry.example.internal/kube-scheduler:v1.27.9}}\n"
    )
    .expect("writing to a String");
    write("base/packages.yaml", &packages)?;

    let clusters = spec.clusters();
    let mut cluster_docs = String::new();
    let mut machine_files = String::from("resources:\n");
    for c in 0..clusters {
        let cluster = format!("cluster-{c:03}");
        write!(
            cluster_docs,
            "---\napiVersion: {API}\nkind: Cluster\nmetadata:\n  name: {cluster}\n  labels:\n    fleet.endstate.dev/cluster: {cluster}\nspec:\n  packageVersion: k8s-1.27.9\n"
        )
        .expect("writing to a String");
        writeln!(machine_files, "- {cluster}.yaml").expect("writing to a String");
        let first = c * spec.machines_per_cluster;
        let last = ((c + 1) * spec.machines_per_cluster).min(spec.machines);
        let path = root.join(format!("base/machines/{cluster}.yaml"));
        fs::create_dir_all(path.parent().expect("has a parent"))?;
        let mut out = io::BufWriter::new(fs::File::create(path)?);
        for m in first..last {
            let idc = IDCS[m % IDCS.len()];
            // Even clusters are the canary group the overlay upgrades.
            let group = if c % 2 == 0 { "early" } else { "late" };
            write!(
                out,
                "---\napiVersion: {API}\nkind: Machine\nmetadata:\n  name: m-{m:06}\n  labels:\n    fleet.endstate.dev/cluster: {cluster}\n    fleet.endstate.dev/group: {group}\n    topology.endstate.dev/idc: {idc}\nspec:\n  cluster: {cluster}\n  ip: 10.{}.{}.{}\n  hostname: m-{m:06}.{idc}.example.internal\n  idc: {idc}\n  packages:\n    kubelet: kubelet-1.27.9\n    containerd: containerd-1.7.13\n  readinessGates: [KubeletReady]\n",
                m >> 16,
                (m >> 8) & 255,
                m & 255
            )?;
        }
        out.flush()?;
    }
    write("base/clusters.yaml", &cluster_docs)?;
    write("base/machines/kustomization.yaml", &machine_files)?;

    // The overlay: a merge patch on the early group, a JSON patch on one idc, a policy.
    write(
        "overlays/prod/kustomization.yaml",
        "namespace: fleet-prod\nresources:\n- ../../base\n- policy.yaml\nlabels:\n- pairs:\n    fleet.endstate.dev/environment: prod\npatches:\n- target:\n    kind: Machine\n    labelSelector: fleet.endstate.dev/group=early\n  patch: |\n    apiVersion: fleet.endstate.dev/v1alpha1\n    kind: Machine\n    metadata:\n      name: early\n    spec:\n      packages:\n        kubelet: kubelet-1.28.4\n- target:\n    kind: Machine\n    labelSelector: topology.endstate.dev/idc=hz-c\n  patch: |\n    - op: add\n      path: /spec/readinessGates/-\n      value: DiskHealthy\n",
    )?;
    write(
        "overlays/prod/policy.yaml",
        &format!(
            "apiVersion: {API}\nkind: RolloutPolicy\nmetadata:\n  name: prod\nspec:\n  machines:\n    waves:\n    - size: 1\n    - size: 5%\n    - size: 25%\n    - size: 100%\n    spreadBy: idc\n    maxUnavailable: 10\n"
        ),
    )?;
    Ok(())
}
