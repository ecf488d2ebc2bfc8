//! The bodies of the fuzz targets (`fuzz/`), so that `cargo test` replays the committed corpus
//! through exactly what the fuzzer runs. Each takes arbitrary bytes and must return — no panic,
//! no hang, no unbounded allocation — whatever the input; a refusal is a diagnostic. The
//! render targets say whether the input rendered, so tests can check that the fixed parts do.

use crate::render::Options;
use crate::tree::MemTree;
use crate::yaml;

/// The largest input a target looks at; longer inputs are cut (the fuzzer runs with
/// `-max_len` equal to this).
pub const MAX_INPUT: usize = 64 * 1024;

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(&data[..data.len().min(MAX_INPUT)])
}

/// The YAML reader: split a stream into documents, parse each, check its booleans, and print
/// what parsed.
pub fn yaml(data: &[u8]) {
    let text = text(data);
    for doc in yaml::split_documents(&text) {
        let _ = yaml::ambiguous_booleans(&doc);
        if let Ok(Some(value)) = yaml::parse(&doc, "fuzz.yaml") {
            let _ = yaml::to_string(&value);
        }
    }
}

/// A fixed small fleet (one package version, one Cluster, two Machines) under a base.
const BASE: [(&str, &str); 2] = [
    ("base/kustomization.yaml", "resources:\n- fleet.yaml\n"),
    (
        "base/fleet.yaml",
        "apiVersion: fleet.endstate.dev/v1alpha1\nkind: MachinePackageVersion\nmetadata:\n  name: kubelet-1\nspec:\n  packageName: kubelet\n  version: \"1\"\n  install:\n    url: https://pkg.example/kubelet-1.rpm\n    sha256: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: ClusterPackageVersion\nmetadata:\n  name: k8s-1\nspec:\n  version: \"1\"\n  etcd: {image: e}\n  apiserver: {image: a}\n  controllerManager: {image: c}\n  scheduler: {image: s}\n---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\n  labels: {tier: gold}\nspec:\n  packageVersion: k8s-1\n---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: m-0\n  labels: {idc: a}\nspec:\n  cluster: c1\n  ip: 10.0.0.1\n  hostname: m-0\n  idc: a\n  packages: {kubelet: kubelet-1}\n---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: m-1\n  labels: {idc: b}\nspec:\n  cluster: c1\n  ip: 10.0.0.2\n  hostname: m-1\n  idc: b\n  packages: {kubelet: kubelet-1}\n",
    ),
];

fn render_tree(tree: &MemTree, dir: &str) -> bool {
    let options = Options {
        limits: yaml::Limits {
            max_file_bytes: MAX_INPUT as u64,
        },
        owner: None,
    };
    crate::render(tree, dir, options).is_ok()
}

/// The kustomization parser: the input is an overlay's `kustomization.yaml` over the fixed
/// base, rendered.
pub fn kustomization(data: &[u8]) -> bool {
    let mut tree = MemTree::new();
    for (path, content) in BASE {
        tree.insert(path, content);
    }
    tree.insert("overlay/kustomization.yaml", text(data).as_bytes());
    render_tree(&tree, "overlay")
}

/// The render of a small tree: the input is split on lines `=== <path>` into files (the part
/// before the first such line is `kustomization.yaml` at the root), rendered from the root.
pub fn render(data: &[u8]) -> bool {
    let text = text(data);
    let mut tree = MemTree::new();
    let mut path = "kustomization.yaml".to_owned();
    let mut content = String::new();
    for line in text.split_inclusive('\n') {
        if let Some(next) = line.strip_prefix("=== ") {
            tree.insert(&path, content.as_bytes());
            path = next.trim().to_owned();
            content.clear();
        } else {
            content.push_str(line);
        }
    }
    tree.insert(&path, content.as_bytes());
    render_tree(&tree, "")
}
