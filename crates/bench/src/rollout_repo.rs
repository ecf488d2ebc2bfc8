//! The repository the loop benchmarks roll out: the generated fleet with the benchmark's
//! policy (waves `1`, `5%`, `25%`, `100%`, `maxUnavailable: 10%`), pushed to a bare remote,
//! and the fleet-wide kubelet upgrade committed on top.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::fleetgen;

/// Runs git in `dir` as the benchmark's author; its output is dropped.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .context("git must be installed")?;
    if !status.success() {
        bail!("git {args:?} failed");
    }
    Ok(())
}

/// The fleet of `n` Machines (kubelet 1.27.9 on half, 1.28.4 on the other half) with the
/// benchmark's policy, in `dir/work`, pushed to `dir/remote.git`; returns (work, remote).
pub fn create(dir: &Path, n: usize) -> anyhow::Result<(PathBuf, PathBuf)> {
    let _ = std::fs::remove_dir_all(dir);
    let work = dir.join("work");
    let remote = dir.join("remote.git");
    fleetgen::generate(&work, fleetgen::Spec::machines(n)).context("generating the fleet")?;
    std::fs::write(
        work.join("overlays/prod/policy.yaml"),
        "apiVersion: fleet.endstate.dev/v1alpha1\nkind: RolloutPolicy\nmetadata:\n  name: prod\nspec:\n  machines:\n    waves:\n    - size: 1\n    - size: 5%\n    - size: 25%\n    - size: 100%\n    spreadBy: idc\n    maxUnavailable: 10%\n  clusters:\n    waves:\n    - size: 100%\n    maxUnavailable: 100%\n  gates:\n    timeout: 30m\n",
    )?;
    let status = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&remote)
        .status()?;
    if !status.success() {
        bail!("git init {} failed", remote.display());
    }
    git(&work, &["init", "-q", "-b", "main"])?;
    git(&work, &["add", "-A"])?;
    git(&work, &["commit", "-q", "-m", "The fleet"])?;
    let url = format!("file://{}", remote.display());
    git(&work, &["remote", "add", "origin", &url])?;
    git(&work, &["push", "-q", "origin", "main"])?;
    Ok((work, remote))
}

/// Commits and pushes the fleet-wide upgrade: a new kubelet package version, and every
/// Machine pointed at it.
pub fn upgrade(work: &Path) -> anyhow::Result<()> {
    let packages = work.join("base/packages.yaml");
    let mut text = std::fs::read_to_string(&packages)?;
    text.push_str("---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: MachinePackageVersion\nmetadata:\n  name: kubelet-1.29.1\nspec:\n  packageName: kubelet\n  version: \"1.29.1\"\n  install:\n    url: https://packages.example.internal/kubelet-1.29.1.rpm\n    sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n");
    std::fs::write(&packages, text)?;
    let overlay = work.join("overlays/prod/kustomization.yaml");
    let text = std::fs::read_to_string(&overlay)?
        .replace(
            "    kind: Machine\n    labelSelector: fleet.endstate.dev/group=early\n",
            "    kind: Machine\n",
        )
        .replace("kubelet: kubelet-1.28.4", "kubelet: kubelet-1.29.1");
    std::fs::write(&overlay, text)?;
    git(
        work,
        &[
            "commit",
            "-q",
            "-am",
            "Upgrade kubelet to 1.29.1 everywhere",
        ],
    )?;
    git(work, &["push", "-q", "origin", "main"])
}
