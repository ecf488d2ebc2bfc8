//! Property tests of the renderer's invariants:
//! - rendering is deterministic and independent of the order of files, documents and
//!   `resources` entries;
//! - merge patches follow RFC 7386 and JSON patches RFC 6902, checked against small
//!   reference implementations written from the RFCs' text.

use endstate_api::Machine;
use endstate_core::{MemTree, render};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const API: &str = "fleet.endstate.dev/v1alpha1";

fn machine(i: usize, idc: &str, role: &str) -> String {
    Machine::test(&format!("m-{i}"))
        .label("idc", idc)
        .label("role", role)
        .in_cluster("c")
        .ip(format!("10.0.{}.{}", i / 200, i % 200))
        .hostname(format!("m-{i}.example"))
        .idc(idc)
        .package("kubelet", "kubelet-1")
        .yaml()
}

fn shared() -> Vec<String> {
    vec![
        format!(
            "apiVersion: {API}\nkind: MachinePackageVersion\nmetadata:\n  name: kubelet-1\nspec:\n  packageName: kubelet\n  version: \"1\"\n  install: {{url: \"https://p/k1\", sha256: {}}}\n",
            "a".repeat(64)
        ),
        format!(
            "apiVersion: {API}\nkind: MachinePackageVersion\nmetadata:\n  name: kubelet-2\nspec:\n  packageName: kubelet\n  version: \"2\"\n  install: {{url: \"https://p/k2\", sha256: {}}}\n",
            "b".repeat(64)
        ),
        format!(
            "apiVersion: {API}\nkind: ClusterPackageVersion\nmetadata:\n  name: cp\nspec:\n  version: \"1\"\n  etcd: {{image: e}}\n  apiserver: {{image: a}}\n  controllerManager: {{image: c}}\n  scheduler: {{image: s}}\n"
        ),
        format!(
            "apiVersion: {API}\nkind: Cluster\nmetadata:\n  name: c\nspec:\n  packageVersion: cp\n"
        ),
    ]
}

const OVERLAY: &str = "namespace: prod\nresources: [../base]\nlabels:\n- pairs: {env: prod}\npatches:\n- target: {kind: Machine, labelSelector: role=canary}\n  patch: |\n    kind: Machine\n    metadata: {name: x}\n    spec:\n      packages: {kubelet: kubelet-2}\n- target: {kind: Machine, labelSelector: idc=b}\n  patch: |\n    - {op: add, path: /spec/unschedulable, value: true}\n";

/// Builds a repository whose base splits `docs` into `files` files in the given order.
fn repo(docs: &[String], files: usize, file_order: &[usize]) -> MemTree {
    let mut tree = MemTree::new();
    let mut contents = vec![String::new(); files];
    for (i, doc) in docs.iter().enumerate() {
        let f = &mut contents[i % files];
        f.push_str("---\n");
        f.push_str(doc);
    }
    let mut kustomization = String::from("resources:\n");
    for &f in file_order {
        kustomization.push_str(&format!("- f{f}.yaml\n"));
        tree.insert(&format!("base/f{f}.yaml"), contents[f].clone());
    }
    tree.insert("base/kustomization.yaml", kustomization);
    tree.insert("overlay/kustomization.yaml", OVERLAY);
    tree
}

fn fleet_docs() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec((0..3usize, prop::bool::weighted(0.2)), 1..40).prop_map(|machines| {
        let mut docs = shared();
        for (i, (idc, canary)) in machines.into_iter().enumerate() {
            docs.push(machine(
                i,
                ["a", "b", "c"][idc],
                if canary { "canary" } else { "worker" },
            ));
        }
        docs
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn rendering_is_deterministic_and_order_independent(
        docs in fleet_docs(),
        files in 1..5usize,
        shuffle in any::<prop::sample::Index>(),
        doc_seed in any::<u64>(),
    ) {
        let canary_exists = docs.iter().any(|d| d.contains("role: canary"));
        let idc_b_exists = docs.iter().any(|d| d.contains("idc: b"));
        prop_assume!(canary_exists && idc_b_exists);
        let files = files.min(docs.len());
        let order: Vec<usize> = (0..files).collect();
        let reference = render(&repo(&docs, files, &order), "overlay", Default::default())
            .expect("the generated fleet is valid");
        // Same input twice: same output.
        let again = render(&repo(&docs, files, &order), "overlay", Default::default()).unwrap();
        prop_assert_eq!(&reference.objects, &again.objects);

        // Rotate the resources list, and permute the documents (and so the files they land in).
        let mut rotated = order.clone();
        rotated.rotate_left(shuffle.index(files.max(1)));
        let mut permuted = docs.clone();
        let mut state = doc_seed | 1;
        for i in (1..permuted.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            permuted.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let other = render(&repo(&permuted, files, &rotated), "overlay", Default::default()).unwrap();
        // Objects are equal; only where they were declared may differ.
        let objects = |r: &endstate_core::Rendered| r.objects.iter().map(|o| o.object.clone()).collect::<Vec<_>>();
        prop_assert_eq!(objects(&reference), objects(&other));
    }

    #[test]
    fn merge_patches_follow_rfc_7386(target in json_value(), patch in json_value()) {
        let mut ours = target.clone();
        json_patch::merge(&mut ours, &patch);
        prop_assert_eq!(ours, rfc7386(target, &patch));
    }

    #[test]
    fn merge_patches_through_the_renderer_follow_rfc_7386(spec_patch in json_object(3)) {
        // The identity fields select; everything else is merged as RFC 7386 says.
        let machine_doc: Value = serde_norway::from_str(&machine(1, "a", "worker")).unwrap();
        let patch = json!({"kind": "Machine", "metadata": {"name": "m-1"}, "spec": {"extra": spec_patch.clone()}});
        let (body, selection) = endstate_core::render::patch::merge_patch(patch, false).unwrap();
        let patch = endstate_core::render::patch::Patch {
            origin: "test".into(),
            file: "test".into(),
            line: None,
            body: endstate_core::render::patch::PatchBody::Merge(body),
            selection,
            applied: Default::default(),
        };
        prop_assert!(patch.selects(&machine_doc));
        let mut ours = machine_doc.clone();
        patch.apply(&mut ours).unwrap();
        let expected = rfc7386(machine_doc, &json!({"spec": {"extra": spec_patch}}));
        prop_assert_eq!(ours, expected);
    }

    #[test]
    fn json_patches_follow_rfc_6902(doc in json_object(3), ops in prop::collection::vec(op_seed(), 1..6)) {
        // Build operations on paths that exist (or, for add, whose parent exists).
        let mut reference = doc.clone();
        let mut operations = Vec::new();
        for (kind, pick, value) in ops {
            let paths = pointers(&reference);
            let path = &paths[pick.index(paths.len())];
            if path.is_empty() { continue; }
            let op = match kind {
                0 => json!({"op": "replace", "path": path, "value": value}),
                1 => json!({"op": "remove", "path": path}),
                _ => {
                    let parent = &path[..path.rfind('/').unwrap()];
                    match pointer(&reference, parent) {
                        Some(Value::Array(_)) => json!({"op": "add", "path": format!("{parent}/-"), "value": value}),
                        _ => json!({"op": "add", "path": format!("{parent}/new"), "value": value}),
                    }
                }
            };
            reference = rfc6902(reference, &op);
            operations.push(op);
        }
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(operations)).unwrap();
        let patch = endstate_core::render::patch::Patch {
            origin: "test".into(),
            file: "test".into(),
            line: None,
            body: endstate_core::render::patch::PatchBody::Json(patch),
            selection: endstate_core::render::patch::Selection::Target(Box::new(
                endstate_core::render::selector::Target::compile(&Default::default()).unwrap(),
            )),
            applied: Default::default(),
        };
        let mut ours = doc;
        patch.apply(&mut ours).unwrap();
        prop_assert_eq!(ours, reference);
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(Value::from),
        "[a-c]{0,2}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        (-5i64..5).prop_map(Value::from),
        "[a-c]{1,2}".prop_map(Value::String)
    ];
    leaf.prop_recursive(depth, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-d]", inner, 1..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .prop_map(|v| match v {
        Value::Object(_) => v,
        other => json!({"root": other}),
    })
}

fn op_seed() -> impl Strategy<Value = (u8, prop::sample::Index, Value)> {
    (
        0..3u8,
        any::<prop::sample::Index>(),
        (-5i64..5).prop_map(Value::from),
    )
}

/// RFC 7386, section 2, as written.
fn rfc7386(target: Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut target = match target {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for (name, value) in patch {
        if value.is_null() {
            target.remove(name);
        } else {
            let current = target.remove(name).unwrap_or(Value::Null);
            target.insert(name.clone(), rfc7386(current, value));
        }
    }
    Value::Object(target)
}

/// Every JSON pointer in a document.
fn pointers(doc: &Value) -> Vec<String> {
    let mut out = vec![String::new()];
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, c)| {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                walk(c, p, out);
            }),
            Value::Array(items) => items.iter().enumerate().for_each(|(i, c)| {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                walk(c, p, out);
            }),
            _ => {}
        }
    }
    walk(doc, String::new(), &mut out);
    out
}

fn pointer<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    doc.pointer(path)
}

/// RFC 6902 `add`, `remove` and `replace` (sections 4.1–4.3), on valid paths.
fn rfc6902(mut doc: Value, op: &Value) -> Value {
    let path = op["path"].as_str().unwrap();
    let (parent, last) = path.rsplit_once('/').unwrap();
    let kind = op["op"].as_str().unwrap();
    let container = doc.pointer_mut(parent).unwrap();
    match (kind, container) {
        ("remove", Value::Object(m)) => {
            m.remove(last);
        }
        ("remove", Value::Array(a)) => {
            a.remove(last.parse::<usize>().unwrap());
        }
        ("replace" | "add", Value::Object(m)) => {
            m.insert(last.to_owned(), op["value"].clone());
        }
        ("replace", Value::Array(a)) => a[last.parse::<usize>().unwrap()] = op["value"].clone(),
        ("add", Value::Array(a)) if last == "-" => a.push(op["value"].clone()),
        ("add", Value::Array(a)) => a.insert(last.parse::<usize>().unwrap(), op["value"].clone()),
        other => panic!("unexpected {other:?}"),
    }
    doc
}

#[test]
fn reference_helpers_agree_on_a_known_case() {
    // RFC 7386 appendix A, one of its examples.
    let target = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"], "content": "This will be unchanged"});
    let patch = json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": null}, "tags": ["example"]});
    let expected = json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"], "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"});
    assert_eq!(rfc7386(target, &patch), expected);
}
