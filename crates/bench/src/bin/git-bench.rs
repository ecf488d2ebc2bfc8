//! `git-bench`: fetch + render of a generated fleet repository from Git, cold (an empty
//! mirror and cache) and warm (a new commit that changes one file, with the mirror and the
//! render cache of the previous commit).
//!
//! ```text
//! cargo run --release -p endstate-bench --bin git-bench -- --machines 100000 --commits 5
//! ```

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use endstate_bench::fleetgen;
use endstate_git::{History, RenderCache, Source, SourceConfig};

/// Measure fetch + render of a synthetic fleet from Git.
#[derive(Debug, Parser)]
struct Args {
    /// Machines in the repository.
    #[arg(long, default_value_t = 100_000)]
    machines: usize,
    /// Warm measurements: each pushes a new commit that changes one file.
    #[arg(long, default_value_t = 5)]
    commits: usize,
    /// Serve the repository with `git daemon` on loopback instead of `file://`.
    #[arg(long)]
    daemon: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scratch = std::env::temp_dir().join(format!("endstate-git-bench-{}", std::process::id()));
    let result = bench(&args, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn bench(args: &Args, scratch: &Path) -> anyhow::Result<()> {
    let work = scratch.join("work");
    fleetgen::generate(&work, fleetgen::Spec::machines(args.machines))?;
    git(&work, &["init", "-q"])?;
    git(&work, &["add", "-A"])?;
    git(&work, &["commit", "-q", "-m", "Generate the fleet"])?;
    git(scratch, &["clone", "-q", "--bare", "work", "remote.git"])?;
    git(&work, &["remote", "add", "origin", "../remote.git"])?;

    let mut daemon = None;
    let url = if args.daemon {
        let (child, url) = serve(scratch)?;
        daemon = Some(Kill(child));
        url
    } else {
        format!("file://{}", scratch.join("remote.git").display())
    };
    let transport = if args.daemon { "git://" } else { "file://" };
    println!(
        "fetch + render + validate of overlays/prod from Git ({} machines, {transport})",
        args.machines
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "", "fetch", "render", "total"
    );

    let config = SourceConfig::new(url, scratch.join("mirror.git")).path("overlays/prod");
    let start = Instant::now();
    let mut source = Source::open(config, History::default())?;
    let head = source.fetch()?.commit;
    let fetched = start.elapsed();
    let mut cache = RenderCache::new().keep_renders(2);
    let render_start = Instant::now();
    let rendered = source
        .render(head, &mut cache)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    row("cold clone, empty cache", fetched, render_start.elapsed());
    let objects = rendered.objects.len();
    // As a controller does, the previous rendering is dropped once the next is made; its
    // objects are shared with the cache, which the next render hands out again.
    drop(rendered);

    let mut totals = Vec::new();
    for i in 0..args.commits {
        // One machine in one cluster file changes its kubelet.
        let cluster = i % fleetgen::Spec::machines(args.machines).clusters();
        let file = work.join(format!("base/machines/cluster-{cluster:03}.yaml"));
        let text = std::fs::read_to_string(&file)?;
        let text = if text.contains("kubelet: kubelet-1.27.9") {
            text.replacen("kubelet: kubelet-1.27.9", "kubelet: kubelet-1.28.4", 1)
        } else {
            text.replacen("kubelet: kubelet-1.28.4", "kubelet: kubelet-1.27.9", 1)
        };
        std::fs::write(&file, text)?;
        git(
            &work,
            &["commit", "-q", "-am", &format!("Change one machine ({i})")],
        )?;
        git(&work, &["push", "-q", "origin", "HEAD:main"])?;

        let start = Instant::now();
        let commit = source.fetch()?.commit;
        let fetched = start.elapsed();
        let render_start = Instant::now();
        let rendered = source
            .render(commit, &mut cache)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let rendered_in = render_start.elapsed();
        if rendered.objects.len() != objects {
            bail!(
                "the warm render has {} objects, not {objects}",
                rendered.objects.len()
            );
        }
        drop(rendered);
        row(
            &format!("new commit, one file changed ({})", i + 1),
            fetched,
            rendered_in,
        );
        totals.push(fetched + rendered_in);
    }
    if !totals.is_empty() {
        totals.sort();
        println!(
            "warm: best {:.0} ms, median {:.0} ms (target ≤ 300 ms); cache {:?}",
            ms(totals[0]),
            ms(totals[totals.len() / 2]),
            cache.stats()
        );
    }
    drop(daemon);
    Ok(())
}

fn row(what: &str, fetch: Duration, render: Duration) {
    println!(
        "{what:<34} {:>7.0} ms {:>7.0} ms {:>7.0} ms",
        ms(fetch),
        ms(render),
        ms(fetch + render)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .context("running git (is it on PATH?)")?;
    if !status.success() {
        bail!("git {args:?} failed");
    }
    Ok(())
}

/// Kills the daemon when the benchmark ends.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(scratch: &Path) -> anyhow::Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exec = Command::new("git").arg("--exec-path").output()?;
    let program = Path::new(String::from_utf8(exec.stdout)?.trim()).join("git-daemon");
    let child = Command::new(&program)
        .args([
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", scratch.display()),
        ])
        .arg(scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("git daemon did not listen on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, format!("git://127.0.0.1:{port}/remote.git")))
}
