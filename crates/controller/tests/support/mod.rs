//! What the scenario and end-to-end tests share: a fleet repository with a bare remote.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use endstate_api::Machine;

/// The namespace of the test fleets.
pub const NS: &str = "fleet";

/// A work repository with a bare remote, holding a fleet of `machines` machines.
pub struct Repo {
    _dir: tempdir::Dir,
    /// The bare remote.
    pub remote: PathBuf,
    /// The work clone.
    pub work: PathBuf,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A fresh directory under the system's temporary directory.
pub fn unique_dir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "endstate-scenario-{}-{name}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Repo {
    /// A repository of `machines` machines on agent-1.0 with `policy`, pushed.
    pub fn new(name: &str, machines: usize, policy: &str) -> Repo {
        let dir = unique_dir(name);
        let remote = dir.join("remote.git");
        let work = dir.join("work");
        git2::Repository::init_opts(
            &remote,
            git2::RepositoryInitOptions::new()
                .bare(true)
                .initial_head("main"),
        )
        .unwrap();
        let repo = git2::Repository::init_opts(
            &work,
            git2::RepositoryInitOptions::new().initial_head("main"),
        )
        .unwrap();
        repo.remote("origin", &format!("file://{}", remote.display()))
            .unwrap();
        let this = Repo {
            _dir: tempdir::Dir(dir),
            remote,
            work,
        };
        let mut packages = String::new();
        for v in ["1.0", "2.0", "3.0"] {
            packages.push_str(&format!(
                "---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: MachinePackageVersion\nmetadata:\n  name: agent-{v}\nspec:\n  packageName: agent\n  version: \"{v}\"\n  install:\n    url: https://pkg.example/agent-{v}.rpm\n    sha256: {}\n",
                "ab".repeat(32)
            ));
        }
        packages.push_str("---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: ClusterPackageVersion\nmetadata:\n  name: k8s-1\nspec:\n  version: \"1\"\n  etcd:\n    image: etcd:1\n  apiserver:\n    image: apiserver:1\n  controllerManager:\n    image: cm:1\n  scheduler:\n    image: sched:1\n---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\nspec:\n  packageVersion: k8s-1\n");
        this.write("base/packages.yaml", &packages);
        let mut out = String::new();
        for i in 0..machines {
            let idc = ["idc-a", "idc-b", "idc-c"][i % 3];
            let machine = Machine::test(&format!("m-{i:03}"))
                .in_cluster("c1")
                .ip(format!("10.0.{}.{}", i / 250, i % 250))
                .hostname(format!("m-{i:03}"))
                .idc(idc)
                .package("agent", "agent-1.0")
                .readiness_gate("AgentReady");
            out.push_str("---\n");
            out.push_str(&machine.yaml());
        }
        this.write("base/machines.yaml", &out);
        this.write(
            "base/kustomization.yaml",
            "resources:\n- packages.yaml\n- machines.yaml\n",
        );
        this.write("prod/policy.yaml", &format!("apiVersion: fleet.endstate.dev/v1alpha1\nkind: RolloutPolicy\nmetadata:\n  name: p\nspec:\n{policy}"));
        this.set_agent("agent-1.0", "initial");
        this
    }

    pub fn write(&self, path: &str, content: &str) {
        let path = self.work.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// Points every machine at `version` and pushes the commit.
    pub fn set_agent(&self, version: &str, message: &str) -> String {
        self.write("prod/kustomization.yaml", &overlay(version));
        commit_and_push(&self.work, message)
    }
}

/// Commits everything in `work` and pushes it to `origin`.
pub fn commit_and_push(work: &Path, message: &str) -> String {
    let repo = git2::Repository::open(work).unwrap();
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let who = git2::Signature::now("Dev", "dev@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let oid = repo
        .commit(Some("HEAD"), &who, &who, message, &tree, &parents)
        .unwrap();
    repo.find_remote("origin")
        .unwrap()
        .push(&["refs/heads/main:refs/heads/main"], None)
        .unwrap();
    oid.to_string()
}

/// The overlay's kustomization: the base, the policy, and every machine on agent `version`.
pub fn overlay(version: &str) -> String {
    format!(
        "resources:\n- ../base\n- policy.yaml\npatches:\n- target:\n    kind: Machine\n  patch: |\n    - op: replace\n      path: /spec/packages/agent\n      value: {version}\n"
    )
}
