//! The engine's state as it is persisted (in the `Fleet` status), and back.
//!
//! The persisted form is bounded by the policy, not by the fleet:
//!
//! ```text
//! size ≈ C                                   commits, phase, breaker evidence (20 reasons
//!                                            of ≤ 256 characters), the newest 100 quarantined
//!      + W · s                               W stages of ~100 bytes: ranges, sizes, limits
//!      + B · b                               B budget classes × ≤ 17 buckets of ~50 bytes
//!      + 4/3 · min(runs, span / 8)           in flight, per start bucket (≤ 17 groups):
//!                                            run lengths or a bitmap over their span
//!      + 4/3 · min(runs, span / 8)           failed positions (≤ 1000)
//!      + 200 · n                             orphans named (≤ 200)
//! ```
//!
//! In flight is at most `maxUnavailable` positions of the current wave; at 100k Machines with
//! `maxUnavailable: 10%` the bitmap is at most 10k bits (≈ 1.7 KiB of base64) per group, and in
//! practice a few runs. No part holds one entry per object of the fleet.
//!
//! The format carries a `version`. A state of an earlier format is migrated when it can be
//! read without guessing (budgets, breaker, quarantine, a finished rollout) and refused with
//! what to do when it cannot (a rollout in progress, whose plan it stored whole).

use std::collections::BTreeMap;

use endstate_core::{Kind, ObjectRef};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::budget::{Bucket, BudgetClass, Budgets};
use crate::engine::{
    Engine, FLIGHT_BUCKETS, Failures, Flight, Flights, Held, KEPT_FAILURES, KEPT_QUARANTINE,
    KEPT_REVERTS, KEPT_UNRESTORED, Notes, Phase, QUARANTINE_REASON_CHARS, Quarantined, Restore,
    Rollout, Trip,
};
use crate::plan::MAX_ORPHANS;
use crate::plan::StageSpec;
use crate::positions::Positions;
use crate::text::cut;
use crate::time::Time;
use endstate_core::policy::Policy;

/// The format written by this release.
pub const VERSION: u32 = 2;

/// What the engine's state takes at most of the `Fleet` object's 256 KiB, for any fleet size;
/// the readable projection, metadata and managedFields share the rest.
pub const STATE_BOUND: usize = 112 * 1024;

/// Why a persisted state cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    /// It does not decode.
    #[error("the persisted rollout state does not decode: {0}")]
    Malformed(String),
    /// It was written by a newer release.
    #[error(
        "the persisted rollout state has format {0}, newer than this release understands ({VERSION}); run the release that wrote it, or a newer one"
    )]
    Newer(u32),
    /// An earlier format that cannot be migrated.
    #[error("{0}")]
    Unmigratable(String),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Persisted {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollout: Option<PersistedRollout>,
    #[serde(default)]
    budgets: Budgets,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    breaker: Option<Trip>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    quarantine: Vec<Quarantined>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersistedRollout {
    commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_good: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base: Option<String>,
    /// `Kind/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    orphans: Vec<String>,
    stages: Vec<StageSpec>,
    stage: usize,
    cursor: u32,
    /// Start bucket → positions of the current stage in flight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inflight: Vec<(Time, Positions)>,
    failures: Failures,
    phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    superseded_by: Option<String>,
    started_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    waiting: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restore: Option<Restore>,
    #[serde(default)]
    unrestored: Notes,
    /// Changes held back (a failed Cluster, a business cluster that cannot be used).
    #[serde(default, skip_serializing_if = "is_zero")]
    held: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Engine {
    /// The persisted form of the state.
    pub fn to_json(&self) -> Value {
        let rollout = self.rollout.as_ref().map(|r| PersistedRollout {
            commit: r.commit.clone(),
            last_good: r.last_good.clone(),
            base: r.base.clone(),
            orphans: r.orphans.iter().map(orphan_text).collect(),
            stages: r.stages.clone(),
            stage: r.stage,
            cursor: r.cursor,
            inflight: r
                .flights
                .by_start
                .iter()
                .map(|(t, ps)| (*t, ps.clone()))
                .collect(),
            failures: r.failures.clone(),
            phase: r.phase.clone(),
            superseded_by: r.superseded_by.clone(),
            started_at: r.started_at,
            waiting: r.waiting.as_ref().map(ToString::to_string),
            restore: r.restore.clone(),
            unrestored: r.unrestored.clone(),
            held: r.held.machines,
        });
        let persisted = Persisted {
            version: VERSION,
            rollout,
            budgets: self.budgets.clone(),
            breaker: self.breaker.clone(),
            quarantine: self.quarantine.clone(),
        };
        serde_json::to_value(&persisted).unwrap_or(Value::Null)
    }

    /// Reads a persisted state (of this format, or migrated from an earlier one). A rollout
    /// under way must then be given its plan with [`Engine::resume`].
    pub fn from_json(value: Value) -> Result<Engine, StateError> {
        let version = match value.get("version") {
            None => 1,
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| StateError::Malformed(format!("version {v} is not a number")))?,
        };
        match version {
            1 => return migrate_v1(value),
            VERSION => {}
            newer => return Err(StateError::Newer(newer)),
        }
        let p: Persisted =
            serde_json::from_value(value).map_err(|e| StateError::Malformed(e.to_string()))?;
        let rollout = match p.rollout {
            None => None,
            Some(r) => Some(rollout(r)?),
        };
        Ok(Engine {
            rollout,
            budgets: p.budgets,
            breaker: p.breaker,
            quarantine: p.quarantine,
        })
    }
}

fn rollout(r: PersistedRollout) -> Result<Rollout, StateError> {
    if r.stage >= r.stages.len().max(1) {
        return Err(StateError::Malformed(format!(
            "stage {} of {} stages",
            r.stage,
            r.stages.len()
        )));
    }
    if r.failures.per_stage.len() != r.stages.len() {
        return Err(StateError::Malformed(
            "failure counts do not match the stages".into(),
        ));
    }
    let orphans = r
        .orphans
        .iter()
        .map(|o| {
            parse_orphan(o).ok_or_else(|| {
                StateError::Malformed(format!("orphan {o:?} is not Kind/name[@cluster]"))
            })
        })
        .collect::<Result<Vec<_>, StateError>>()?;
    let mut flights = Flights::default();
    for (started, positions) in r.inflight {
        for p in positions.iter() {
            flights.by_position.insert(
                p,
                Flight {
                    started,
                    generation: None,
                    last: None,
                },
            );
        }
        flights.by_start.insert(started, positions);
    }
    Ok(Rollout {
        commit: r.commit,
        last_good: r.last_good,
        base: r.base,
        orphans,
        stages: r.stages,
        stage: r.stage,
        cursor: r.cursor,
        flights,
        failures: r.failures,
        phase: r.phase,
        superseded_by: r.superseded_by,
        started_at: r.started_at,
        // A text no reason writes back the same (none this release writes) is dropped: the
        // engine finds out again why it waits on its next step.
        waiting: r.waiting.and_then(|w| w.parse().ok()),
        restore: r.restore,
        unrestored: r.unrestored,
        plan: None,
        policy: Policy::default(),
        healthy: Positions::new(),
        revert_asked: false,
        regating: false,
        held: Held {
            machines: r.held,
            ..Held::default()
        },
        settled: 0,
    })
}

/// Format 1 held the whole plan, one timestamp per budget spend and every failure.
fn migrate_v1(value: Value) -> Result<Engine, StateError> {
    #[derive(Deserialize)]
    struct V1 {
        #[serde(default)]
        rollout: Option<Value>,
        #[serde(default)]
        budgets: Option<V1Budgets>,
        #[serde(default)]
        breaker: Option<Trip>,
        #[serde(default)]
        quarantine: Vec<Quarantined>,
    }
    #[derive(Deserialize)]
    struct V1Budgets {
        #[serde(default)]
        spent: BTreeMap<String, Vec<(Time, u64)>>,
    }
    let v1: V1 = serde_json::from_value(value).map_err(|e| {
        StateError::Malformed(format!("neither format {VERSION} nor format 1: {e}"))
    })?;
    if let Some(rollout) = &v1.rollout {
        let phase = rollout.get("phase");
        let finished = phase
            .is_some_and(|p| matches!(p.as_str(), Some("Completed" | "Superseded" | "Restored")));
        if !finished {
            let commit = rollout.get("commit").and_then(Value::as_str).unwrap_or("?");
            return Err(StateError::Unmigratable(format!(
                "the persisted state holds a rollout of {commit} in progress, written by an earlier endstate release (state format 1); finish it with that release, or clear status.rollout (kubectl patch fleet NAME --subresource=status --type=merge -p '{{\"status\":{{\"rollout\":null}}}}') to plan again from the live fleet"
            )));
        }
    }
    // Spends into conservative buckets: each counts from the start of its 225 s bucket to the
    // end, which is at least as long as the spend itself would.
    const WIDTH: i64 = 225_000;
    let mut budgets = BTreeMap::<BudgetClass, Vec<Bucket>>::new();
    for (class, spends) in v1.budgets.map(|b| b.spent).unwrap_or_default() {
        let Some(class) = BudgetClass::parse(&class) else {
            continue;
        };
        let mut by_bucket = BTreeMap::<i64, u64>::new();
        for (t, n) in spends {
            *by_bucket.entry(t.millis().div_euclid(WIDTH)).or_default() += n;
        }
        budgets.insert(
            class,
            by_bucket
                .into_iter()
                .map(|(b, count)| Bucket {
                    start: Time(b * WIDTH),
                    end: Time((b + 1) * WIDTH),
                    count,
                })
                .collect(),
        );
    }
    let mut quarantine = v1.quarantine;
    let excess = quarantine.len().saturating_sub(KEPT_QUARANTINE);
    quarantine.drain(..excess);
    for q in &mut quarantine {
        q.reason = cut(&q.reason, crate::engine::QUARANTINE_REASON_CHARS);
    }
    let mut breaker = v1.breaker;
    if let Some(trip) = &mut breaker {
        trip.evidence.failed.truncate(crate::engine::KEPT_FAILURES);
        trip.reverts.truncate(crate::engine::KEPT_REVERTS);
    }
    let budgets: Budgets = serde_json::from_value(serde_json::json!({ "spent": budgets }))
        .map_err(|e| StateError::Malformed(e.to_string()))?;
    Ok(Engine {
        rollout: None,
        budgets,
        breaker,
        quarantine,
    })
}

fn text(n: usize, c: char) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// A persisted state at every limit, for tests of the bound (here and in the controller's): `n` positions in the current stage, `inflight` of them (sorted)
/// in flight over 17 start buckets. Changes start in the order of positions, so a later
/// bucket holds later positions.
pub fn worst_state(n: u32, inflight: &[u32], failed: &[u32]) -> Value {
    const T0: Time = Time(1_767_225_600_000);
    let commit = text(40, 'c');
    let per_bucket = inflight.len().div_ceil(FLIGHT_BUCKETS as usize + 1).max(1);
    let buckets: Vec<serde_json::Value> = inflight
        .chunks(per_bucket)
        .enumerate()
        .map(|(b, group)| {
            let group: Positions = group.iter().copied().collect();
            json!([T0.millis() + b as i64 * 60_000, group])
        })
        .collect();
    let note = json!({"object": format!("Machine/{}/{}", text(63, 'n'), text(253, 'm')), "reason": text(256, 'r')});
    let failed_positions: Positions = failed.iter().copied().collect();
    let buckets_full: Vec<serde_json::Value> = (0..34)
        .map(|i| {
            json!([
                T0.millis() + i * 225_000,
                T0.millis() + (i + 1) * 225_000,
                u64::MAX / 64
            ])
        })
        .collect();
    let mut spent = serde_json::Map::new();
    for class in [
        "machine-update",
        "machine-delete",
        "machine-reinstall",
        "cluster-update",
    ] {
        spent.insert(class.into(), buckets_full.clone().into());
    }
    let stages: Vec<serde_json::Value> = (0..12)
        .map(|i| {
            json!({"seq": "Machines", "name": format!("machines/{}", text(60, 'w')), "start": if i == 11 { 0 } else { n }, "end": n, "size": n, "maxUnavailable": n / 10, "bakeMs": 3_600_000, "pause": true})
        })
        .collect();
    json!({
        "version": 2,
        "rollout": {
            "commit": commit,
            "lastGood": commit,
            "base": commit,
            "orphans": (0..MAX_ORPHANS).map(|i| format!("Machine/{i:03}{}", text(250, 'o'))).collect::<Vec<_>>(),
            "stages": stages,
            "stage": 11,
            "cursor": n,
            "inflight": buckets,
            "failures": {
                "perStage": vec![u32::MAX; 12],
                "total": u32::MAX,
                "first": vec![note.clone(); KEPT_FAILURES],
                "positions": {"Machines": failed_positions},
                "fleet": 7
            },
            // A bake holding every kept answer of its metric gates (the largest phase).
            "phase": {"Baking": {
                "until": T0,
                "next_sample": T0,
                "metrics_ok": false,
                "metrics_missing_since": T0,
                "asked": T0,
                "samples": (0..crate::gates::KEPT_GATES * crate::gates::KEPT_PER_GATE)
                    .map(|_| json!({
                        "gate": text(crate::gates::ANSWER_CHARS + 3, 'g'),
                        "at": T0,
                        "answer": text(crate::gates::ANSWER_CHARS + 3, 'a'),
                    }))
                    .collect::<Vec<_>>(),
            }},
            "supersededBy": commit,
            "startedAt": T0,
            "waiting": text(200, 'w'),
            "restore": {"lanes": [[1, n], [2, n]], "issued": [0, 1, 0, n]},
            "unrestored": {"count": u32::MAX, "first": vec![note.clone(); KEPT_UNRESTORED]}
        },
        "budgets": {"spent": spent},
        "breaker": {
            "at": T0, "commit": commit,
            "evidence": {"stage": text(70, 's'), "threshold": text(200, 't'), "stageFailures": [1, 2], "totalFailures": [3, 4],
                         "failed": vec![(text(320, 'o'), text(256, 'r')); KEPT_FAILURES]},
            "reverts": vec![commit.clone(); KEPT_REVERTS], "revertOutcome": text(1024, 'x')
        },
        "quarantine": vec![json!({"commit": commit, "reason": text(QUARANTINE_REASON_CHARS, 'q'), "revert": commit}); KEPT_QUARANTINE]
    })
}

/// An orphan as the state names it: `Kind/name`, and `Kind/name@cluster` in a business
/// cluster (its namespace is where its Fleet or business cluster keeps such objects).
fn orphan_text(id: &ObjectRef) -> String {
    match id.cluster.as_str() {
        "" => format!("{}/{}", id.kind, id.name),
        cluster => format!("{}/{}@{cluster}", id.kind, id.name),
    }
}

/// Reads what [`orphan_text`] writes.
fn parse_orphan(text: &str) -> Option<ObjectRef> {
    let (kind, name) = text.split_once('/')?;
    let (name, cluster) = name.split_once('@').unwrap_or((name, ""));
    Some(ObjectRef::new(Kind::parse(kind)?, "", name).in_cluster(cluster))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_finished_format_1_state_is_migrated_and_one_in_progress_is_refused() {
        let v1 = json!({
            "rollout": {"commit": "abc", "phase": "Completed", "plan": {"stages": []}},
            "budgets": {"spent": {"machine-update": [[1000, 3], [2000, 2], [900_000, 1]]}},
            "breaker": null,
            "quarantine": [{"commit": "bad", "reason": "tripped", "revert": "rev"}]
        });
        let engine = Engine::from_json(v1).unwrap();
        assert!(engine.rollout().is_none());
        assert_eq!(engine.quarantine()[0].commit, "bad");
        let p = Policy {
            budgets: vec![endstate_core::policy::BudgetLimit {
                class: BudgetClass::MachineUpdate,
                limit: 10,
                window: std::time::Duration::from_secs(3600),
            }],
            ..Policy::default()
        };
        assert_eq!(
            engine
                .budgets()
                .available(&p, Some(BudgetClass::MachineUpdate), Time(1_000_000)),
            4
        );

        let busy = json!({"rollout": {"commit": "abc", "phase": "Running"}});
        let err = Engine::from_json(busy).unwrap_err().to_string();
        assert!(
            err.contains("in progress") && err.contains("status.rollout"),
            "{err}"
        );
        assert_eq!(
            Engine::from_json(json!({"version": 9})).unwrap_err(),
            StateError::Newer(9)
        );
    }

    #[test]
    fn orphans_are_named_with_their_business_cluster() {
        for id in [
            ObjectRef::new(Kind::Machine, "", "m-1"),
            ObjectRef::new(Kind::MachinePackageVersion, "", "kubelet-1.28").in_cluster("a"),
        ] {
            assert_eq!(parse_orphan(&orphan_text(&id)), Some(id));
        }
        assert_eq!(
            orphan_text(&ObjectRef::new(Kind::Machine, "", "m-1")),
            "Machine/m-1"
        );
        assert_eq!(parse_orphan("Fleet/f"), None);
    }

    #[test]
    fn an_idle_state_round_trips() {
        let engine = Engine::default();
        let json = engine.to_json();
        assert_eq!(json["version"], 2);
        let back = Engine::from_json(json.clone()).unwrap();
        assert_eq!(back.to_json(), json);
    }
}
