//! Validation of a rendered set: each object on its own, then the references between them.
//!
//! ```text
//!   Machine ──spec.cluster──────────▶ Cluster ──spec.packageVersion──▶ ClusterPackageVersion
//!      └────spec.packages[c] = name ─▶ MachinePackageVersion (spec.packageName must be c)
//! ```
//!
//! References resolve within a namespace. Every problem is reported, with the object's file
//! and line.

use std::collections::{BTreeMap, HashMap, HashSet};

use rayon::prelude::*;

use crate::error::Diagnostic;
use crate::invalid::Invalid;
use crate::object::RenderedObject;
use crate::object::{FleetObject, Kind, ObjectRef};
use crate::syntax::{dns_label, dns_subdomain, qualified_name};

/// Validates a rendered set sorted by identity. `unrenderable` names objects that are
/// declared but failed to render (already reported): references to them are not errors.
pub fn validate(objects: &[RenderedObject], unrenderable: &HashSet<ObjectRef>) -> Vec<Diagnostic> {
    let mut diags = check_each(objects);
    diags.extend(check_references(objects, unrenderable));
    diags
}

/// The checks of each object on its own (in any order): what does not depend on the rest of
/// the set, so it can be remembered with the object.
pub(crate) fn check_each(objects: &[RenderedObject]) -> Vec<Diagnostic> {
    objects
        .par_iter()
        .flat_map_iter(|o| {
            let mut problems = Vec::new();
            check_object(&o.object, &mut problems);
            problems.into_iter().map(move |message| about(o, message))
        })
        .collect()
}

fn about(o: &RenderedObject, message: String) -> Diagnostic {
    Diagnostic::file(&o.origin.file, message)
        .at_line(o.origin.line)
        .object(o.object.id())
}

fn check_object(object: &FleetObject, out: &mut Vec<String>) {
    let meta = object.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    if let Err(why) = dns_subdomain(name) {
        out.push(format!("metadata.name {name:?} {why}"));
    }
    if let Some(ns) = meta.namespace.as_deref()
        && let Err(why) = dns_label(ns)
    {
        out.push(format!("metadata.namespace {ns:?} {why}"));
    }
    for (key, value) in meta.labels.iter().flatten() {
        if let Err(why) = qualified_name(key) {
            out.push(format!("label key {key:?} {why}"));
        }
        if let Err(why) = label_value(value) {
            out.push(format!("label {key}: value {value:?} {why}"));
        }
    }
    for key in meta.annotations.iter().flatten().map(|(k, _)| k) {
        if let Err(why) = qualified_name(key) {
            out.push(format!("annotation key {key:?} {why}"));
        }
    }
    match object {
        FleetObject::MachinePackageVersion(p) => {
            let s = &p.spec;
            if let Err(why) = dns_label(&s.package_name) {
                out.push(format!("spec.packageName {:?} {why}", s.package_name));
            }
            if s.version.trim().is_empty() {
                out.push("spec.version is empty".into());
            }
            if s.install.sha256.len() != 64
                || !s.install.sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                out.push(format!(
                    "spec.install.sha256 {:?} is not a SHA-256 (64 hex digits)",
                    s.install.sha256
                ));
            }
            if !["https://", "http://", "file://"]
                .iter()
                .any(|p| s.install.url.starts_with(p))
            {
                out.push(format!(
                    "spec.install.url {:?} must be an http(s):// or file:// URL",
                    s.install.url
                ));
            }
            for cm in s.config_maps.iter().flatten() {
                if let Err(why) = dns_subdomain(cm) {
                    out.push(format!("spec.configMaps: {cm:?} {why}"));
                }
            }
        }
        FleetObject::ClusterPackageVersion(p) => {
            let s = &p.spec;
            if s.version.trim().is_empty() {
                out.push("spec.version is empty".into());
            }
            for (field, c) in [
                ("etcd", &s.etcd),
                ("apiserver", &s.apiserver),
                ("controllerManager", &s.controller_manager),
                ("scheduler", &s.scheduler),
            ] {
                if c.image.trim().is_empty() || c.image.contains(char::is_whitespace) {
                    out.push(format!(
                        "spec.{field}.image {:?} is not an image reference",
                        c.image
                    ));
                }
            }
        }
        FleetObject::Machine(m) => {
            let s = &m.spec;
            if let Err(why) = dns_subdomain(&s.cluster) {
                out.push(format!("spec.cluster {:?} {why}", s.cluster));
            }
            if s.ip.parse::<std::net::IpAddr>().is_err() {
                out.push(format!("spec.ip {:?} is not an IP address", s.ip));
            }
            if let Err(why) = hostname(&s.hostname) {
                out.push(format!("spec.hostname {:?} {why}", s.hostname));
            }
            if let Err(why) = label_value(&s.idc).and_then(|_| {
                if s.idc.is_empty() {
                    Err("is empty".into())
                } else {
                    Ok(())
                }
            }) {
                out.push(format!("spec.idc {:?} {why}", s.idc));
            }
            if s.packages.is_empty() {
                out.push("spec.packages is empty: a machine runs at least one package".into());
            }
            let mut seen = HashSet::new();
            for gate in s.readiness_gates() {
                if gate.is_empty() {
                    out.push("spec.readinessGates has an empty condition type".into());
                } else if !seen.insert(gate) {
                    out.push(format!("spec.readinessGates lists {gate:?} twice"));
                }
            }
            if s.os_generation.is_some_and(|g| g < 0) {
                out.push("spec.osGeneration must not be negative".into());
            }
        }
        FleetObject::Cluster(c) => {
            let s = &c.spec;
            if let Some(m) = &s.masters {
                if m.replicas < 1 || m.replicas % 2 == 0 {
                    out.push(format!(
                        "spec.masters.replicas {} must be odd and at least 1 (etcd quorum)",
                        m.replicas
                    ));
                }
                if s.mode == Some(endstate_api::ClusterMode::Minimal) && m.replicas != 1 {
                    out.push("spec.masters.replicas must be 1 in minimal mode".into());
                }
            }
            if let Some(v) = &s.etcd_volume
                && !is_quantity(&v.size)
            {
                out.push(format!(
                    "spec.etcdVolume.size {:?} is not a quantity like 50Gi",
                    v.size
                ));
            }
        }
        FleetObject::RolloutPolicy(p) => check_policy(&p.spec, out),
    }
}

fn check_policy(spec: &endstate_api::RolloutPolicySpec, out: &mut Vec<String>) {
    if let Err(problems) = crate::policy::Policy::resolve(spec) {
        out.extend(problems);
    }
}

fn is_quantity(s: &str) -> bool {
    let digits = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    digits > 0
        && s[..digits].parse::<f64>().is_ok()
        && ["", "Ki", "Mi", "Gi", "Ti", "Pi", "k", "M", "G", "T", "P"].contains(&&s[digits..])
}

/// The checks across a set sorted by identity: duplicates and references.
pub(crate) fn check_references(
    objects: &[RenderedObject],
    unrenderable: &HashSet<ObjectRef>,
) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    for pair in objects.windows(2) {
        if pair[0].object.key() == pair[1].object.key() {
            let (a, b) = (&pair[0].origin, &pair[1].origin);
            diags.push(about(
                &pair[1],
                format!(
                    "declared twice (also at {}:{}); identities must be unique",
                    a.file, a.line
                ),
            ));
            let _ = b;
        }
    }
    // Keyed by names from the repository: foldhash is quick on short strings and seeded per
    // map, so a crafted repository cannot aim collisions at it.
    type Fast = foldhash::fast::RandomState;
    let mut packages: HashMap<(&str, &str), &str, Fast> = HashMap::default();
    let mut control_planes: HashSet<(&str, &str), Fast> = HashSet::default();
    let mut clusters: HashSet<(&str, &str), Fast> = HashSet::default();
    let mut policies: BTreeMap<&str, usize> = BTreeMap::new();
    fn ns(o: &FleetObject) -> &str {
        o.meta().namespace.as_deref().unwrap_or_default()
    }
    for o in objects {
        let name = o.object.meta().name.as_deref().unwrap_or_default();
        match &o.object {
            FleetObject::MachinePackageVersion(p) => {
                packages.insert((ns(&o.object), name), p.spec.package_name.as_str());
            }
            FleetObject::ClusterPackageVersion(_) => {
                control_planes.insert((ns(&o.object), name));
            }
            FleetObject::Cluster(_) => {
                clusters.insert((ns(&o.object), name));
            }
            FleetObject::RolloutPolicy(_) => {
                let n = policies.entry(ns(&o.object)).or_default();
                *n += 1;
                if *n == 2 {
                    diags.push(about(
                        o,
                        "a second RolloutPolicy in the same namespace; a fleet has one policy"
                            .into(),
                    ));
                }
            }
            FleetObject::Machine(_) => {}
        }
    }
    let declared = |kind: Kind, namespace: &str, name: &str| {
        !unrenderable.is_empty() && unrenderable.contains(&ObjectRef::new(kind, namespace, name))
    };
    // By index: an identity is only spelled out for the rare clash.
    let mut ips: HashMap<(&str, &str), usize, Fast> =
        HashMap::with_capacity_and_hasher(objects.len(), Fast::default());
    let mut hostnames: HashMap<(&str, &str), usize, Fast> =
        HashMap::with_capacity_and_hasher(objects.len(), Fast::default());
    for (index, o) in objects.iter().enumerate() {
        let namespace = ns(&o.object);
        match &o.object {
            FleetObject::Machine(m) => {
                if !clusters.contains(&(namespace, m.spec.cluster.as_str()))
                    && !declared(Kind::Cluster, namespace, &m.spec.cluster)
                {
                    diags.push(about(
                        o,
                        format!("spec.cluster: Cluster {:?} does not exist", m.spec.cluster),
                    ));
                }
                for (component, version) in &m.spec.packages {
                    match packages.get(&(namespace, version.as_str())) {
                        None if declared(Kind::MachinePackageVersion, namespace, version) => {}
                        None => diags.push(about(
                            o,
                            format!(
                                "spec.packages.{component}: MachinePackageVersion {version:?} \
                                 does not exist"
                            ),
                        )),
                        Some(package) if package != component => diags.push(about(
                            o,
                            format!(
                                "spec.packages.{component}: MachinePackageVersion {version:?} is \
                                 a version of {package:?}, not of {component:?}"
                            ),
                        )),
                        Some(_) => {}
                    }
                }
                if let Some(other) = ips.insert((namespace, m.spec.ip.as_str()), index) {
                    diags.push(about(
                        o,
                        format!(
                            "spec.ip {} is also the IP of {}",
                            m.spec.ip,
                            objects[other].object.id()
                        ),
                    ));
                }
                if let Some(other) = hostnames.insert((namespace, m.spec.hostname.as_str()), index)
                {
                    diags.push(about(
                        o,
                        format!(
                            "spec.hostname {} is also the hostname of {}",
                            m.spec.hostname,
                            objects[other].object.id()
                        ),
                    ));
                }
            }
            FleetObject::Cluster(c)
                if !control_planes.contains(&(namespace, c.spec.package_version.as_str()))
                    && !declared(
                        Kind::ClusterPackageVersion,
                        namespace,
                        &c.spec.package_version,
                    ) =>
            {
                diags.push(about(
                    o,
                    format!(
                        "spec.packageVersion: ClusterPackageVersion {:?} does not exist",
                        c.spec.package_version
                    ),
                ));
            }
            _ => {}
        }
    }
    diags
}

fn hostname(s: &str) -> Result<(), Invalid> {
    dns_subdomain(&s.to_ascii_lowercase())
        .map_err(|_| "is not a valid host name (letters, digits, '-' and '.')".into())
}

fn label_value(v: &str) -> Result<(), Invalid> {
    if v.is_empty() {
        return Ok(());
    }
    qualified_name(v)
        .ok()
        .filter(|_| !v.contains('/'))
        .ok_or_else(|| "must be a label value (letters, digits, '-', '_', '.', at most 63)".into())
}

#[cfg(test)]
mod tests {
    use endstate_api::IntOrString;

    use super::*;
    use crate::syntax::{Size, size};

    #[test]
    fn names() {
        assert!(dns_subdomain("kubelet-1.28.4").is_ok());
        assert!(dns_subdomain("Kubelet").is_err());
        assert!(dns_subdomain("-a").is_err());
        assert!(dns_label("a.b").is_err());
        assert!(qualified_name("fleet.endstate.dev/prune").is_ok());
        assert!(qualified_name("bad key").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("a/b").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size(&IntOrString::Int(1)), Ok(Size::Count(1)));
        assert_eq!(
            size(&IntOrString::String("5%".into())),
            Ok(Size::Percent(5.0))
        );
        assert!(size(&IntOrString::String("0%".into())).is_err());
        assert!(size(&IntOrString::String("101%".into())).is_err());
        assert!(size(&IntOrString::Int(0)).is_err());
        assert!(is_quantity("50Gi") && !is_quantity("lots"));
    }
}
