//! Scenarios of the whole loop in virtual time: a real Git repository (over file://), the
//! controller, the rollout engine and the simulated fleet.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use endstate_controller::{Config, Controller, Outcome, Reporter, SimClock};
use endstate_core::FleetObject;
use endstate_git::{History, RevertConfig, RevertWriter, Source, SourceConfig};
use endstate_rollout::Time;
use endstate_rollout::engine::Phase;
use endstate_sim::{Faults, SimConfig, SimFleet, SimLive};

#[path = "../support/mod.rs"]
mod support;

mod deletes;
mod fields;
mod rollout;

use support::{NS, Repo, commit_and_push, unique_dir};

/// A callback on every reported line.
type Hook = Box<dyn FnMut(&str) + Send>;

/// Keeps the lines; runs a hook on each (to push a commit mid-rollout).
#[derive(Clone, Default)]
struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    hook: Arc<Mutex<Option<Hook>>>,
}

impl Reporter for Lines {
    fn line(&mut self, _now: Time, _commit: Option<&str>, text: &str) {
        self.lines.lock().unwrap().push(text.to_owned());
        if let Some(hook) = self.hook.lock().unwrap().as_mut() {
            hook(text);
        }
    }
}

impl Lines {
    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

struct Harness {
    repo: Repo,
    live: SimLive,
    lines: Lines,
    controller: Controller<SimLive, SimClock>,
}

fn harness(name: &str, machines: usize, policy: &str, faults: &[&str]) -> Harness {
    let repo = Repo::new(name, machines, policy);
    let faults = Faults::parse(faults).unwrap();
    let live = SimLive::new(SimFleet::new(SimConfig::new(NS, 3).with_faults(faults)));
    let lines = Lines::default();
    let controller = controller(&repo, &live, &lines, &unique_dir("mirror"));
    Harness {
        repo,
        live,
        lines,
        controller,
    }
}

fn controller(
    repo: &Repo,
    live: &SimLive,
    lines: &Lines,
    state: &Path,
) -> Controller<SimLive, SimClock> {
    let source_config = SourceConfig::new(
        format!("file://{}", repo.remote.display()),
        state.join("mirror"),
    )
    .branch("main")
    .path("prod");
    let writer = RevertWriter::open(
        &source_config,
        RevertConfig::new("f", "endstate", "endstate@example.com"),
    )
    .unwrap();
    let source = Source::open(source_config, History::default()).unwrap();
    let mut config = Config::new("f", NS);
    config.interval = Duration::from_secs(30);
    Controller::new(
        config,
        source,
        Some(writer),
        live.clone(),
        SimClock::new(live.clone(), 0.0),
        Box::new(lines.clone()),
    )
}

impl Harness {
    /// Starts the fleet converged at the branch head.
    async fn converged_at_head(&mut self) -> String {
        self.controller.resume().await.unwrap();
        let head = self.controller.resolve("main").unwrap();
        let objects = self.controller.prepare(&head).unwrap();
        self.live.lock().seed_converged(objects).unwrap();
        self.controller.adopt(&head).await.unwrap();
        head
    }

    fn agents(&self) -> Vec<(String, String)> {
        self.live
            .lock()
            .snapshot()
            .into_iter()
            .filter_map(|o| match o {
                FleetObject::Machine(m) => {
                    let running = m
                        .status
                        .as_ref()
                        .and_then(|s| s.versions.as_ref())
                        .and_then(|v| v.get("agent").cloned())
                        .unwrap_or_default();
                    Some((m.spec.packages["agent"].clone(), running))
                }
                _ => None,
            })
            .collect()
    }
}

const WAVES: &str = "  machines:\n    waves:\n    - name: canary\n      size: 1\n      bake: 2m\n    - name: half\n      size: 50%\n      bake: 2m\n    - name: all\n      size: 100%\n    spreadBy: idc\n    maxUnavailable: 3\n  gates:\n    timeout: 10m\n";
