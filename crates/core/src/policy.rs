//! The `RolloutPolicy` of a rendered commit, resolved: defaults filled in, durations and
//! percents parsed, every problem found. This is the one reading of a policy: `validate`
//! reports its problems (with the policy's file and line) and the engine runs what it returns.

use std::fmt;
use std::time::Duration;

use endstate_api::IntOrString;
use endstate_api::policy::{self, OnNewCommit, RolloutPolicySpec};
use serde::{Deserialize, Serialize};

use crate::syntax::{Size, size};

/// The operation classes budgets limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BudgetClass {
    /// Machine creates and updates.
    #[serde(rename = "machine-update")]
    MachineUpdate,
    /// Machine deletes (and undoing a Machine create).
    #[serde(rename = "machine-delete")]
    MachineDelete,
    /// Machine reinstalls (`osGeneration` bumps), and undoing them.
    #[serde(rename = "machine-reinstall")]
    MachineReinstall,
    /// Cluster creates, updates and deletes.
    #[serde(rename = "cluster-update")]
    ClusterUpdate,
}

impl BudgetClass {
    /// Every class.
    pub const ALL: [BudgetClass; 4] = [
        BudgetClass::MachineUpdate,
        BudgetClass::MachineDelete,
        BudgetClass::MachineReinstall,
        BudgetClass::ClusterUpdate,
    ];

    /// The class's name in policies and status.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetClass::MachineUpdate => "machine-update",
            BudgetClass::MachineDelete => "machine-delete",
            BudgetClass::MachineReinstall => "machine-reinstall",
            BudgetClass::ClusterUpdate => "cluster-update",
        }
    }

    /// The class named `name`.
    pub fn parse(name: &str) -> Option<BudgetClass> {
        BudgetClass::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether an exhausted class pauses the rollout as high risk.
    pub fn high_risk(self) -> bool {
        matches!(
            self,
            BudgetClass::MachineDelete | BudgetClass::MachineReinstall
        )
    }
}

impl fmt::Display for BudgetClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One wave of a sequence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WaveSpec {
    /// Its name in status and logs. A wave left unnamed is called by its place among the
    /// waves that run (`wave-2`), so that waves with nothing to do leave no gaps.
    pub name: Option<String>,
    /// The cumulative share of the changed objects done by the end of the wave.
    pub size: Amount,
    /// How long the wave must stay healthy before the next starts.
    pub bake: Duration,
    /// Hold after the wave until approved.
    pub pause: bool,
}

/// A count or a percent.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Amount {
    /// This many.
    Count(u64),
    /// This percent of a total, rounded up.
    Percent(f64),
}

impl Amount {
    /// The amount out of `total`: a percent rounds up, and nothing exceeds `total`.
    pub fn of(self, total: usize) -> usize {
        let n = match self {
            Amount::Count(n) => n.min(total as u64) as usize,
            Amount::Percent(p) => ((total as f64) * p / 100.0).ceil() as usize,
        };
        n.min(total)
    }

    fn parse(value: &IntOrString, field: &str, problems: &mut Problems) -> Option<Amount> {
        match size(value) {
            Ok(Size::Count(n)) => Some(Amount::Count(u64::from(n))),
            Ok(Size::Percent(p)) => Some(Amount::Percent(p)),
            Err(why) => problems.add(format!("{field} {why}")),
        }
    }
}

/// A wave sequence for one kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sequence {
    /// The waves; the last one reaches 100%.
    pub waves: Vec<WaveSpec>,
    /// The spec field or label each wave is drawn evenly across.
    pub spread_by: Option<String>,
    /// Most objects changed but not yet healthy at once.
    pub max_unavailable: Amount,
    /// Machines only: most Machines of one Cluster changed but not yet healthy at once (a
    /// percent is of the Cluster's Machines in the commit).
    #[serde(default)]
    pub max_unavailable_per_cluster: Option<Amount>,
}

/// A budget class limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetLimit {
    /// The operation class.
    pub class: BudgetClass,
    /// Most operations per window.
    pub limit: u64,
    /// The sliding window.
    pub window: Duration,
}

/// A metric gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricGate {
    /// Its name in evidence.
    pub name: String,
    /// The query API's base URL.
    pub url: String,
    /// An instant query returning one value.
    pub query: String,
    /// Fail below.
    pub min: Option<f64>,
    /// Fail above.
    pub max: Option<f64>,
    /// How often to sample while baking.
    pub interval: Duration,
    /// Extra request headers, in name order.
    pub headers: Vec<(String, String)>,
    /// The Secret (in the Fleet's namespace) holding the credentials and CA, if any.
    pub secret: Option<String>,
}

impl MetricGate {
    /// Whether a sampled value is within bounds (NaN never is).
    pub fn admits(&self, value: f64) -> bool {
        !value.is_nan()
            && self.min.is_none_or(|min| value >= min)
            && self.max.is_none_or(|max| value <= max)
    }
}

/// Breaker thresholds; `None` is not checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Trip at this many failures in one wave.
    pub per_wave: Option<u64>,
    /// Trip when this percent of a wave failed.
    pub per_wave_ratio: Option<f64>,
    /// Trip at this many failures in the rollout.
    pub total: Option<u64>,
    /// Trip when this percent of the rollout's changed objects failed.
    pub total_ratio: Option<f64>,
    /// Push a revert when tripped.
    pub revert: bool,
}

/// A maintenance window: minutes since midnight UTC on some weekdays (0 = Monday).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// The weekdays the window opens on.
    pub days: Vec<u32>,
    /// Opening minute.
    pub start: u32,
    /// Closing minute; before `start` when the window crosses midnight.
    pub end: u32,
}

/// A resolved policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Machine waves.
    pub machines: Sequence,
    /// Cluster waves.
    pub clusters: Sequence,
    /// How long an object may take to become healthy for its new revision.
    pub gate_timeout: Duration,
    /// How long one query of a metric gate may take.
    pub query_timeout: Duration,
    /// Metric gates checked while a wave bakes.
    pub metrics: Vec<MetricGate>,
    /// Breaker thresholds.
    pub breaker: Thresholds,
    /// Budget limits; a class without one is unlimited (the high-risk classes always have
    /// one: [`DEFAULT_BUDGETS`] when the policy sets none).
    pub budgets: Vec<BudgetLimit>,
    /// Maintenance windows; empty is always open.
    pub windows: Vec<Window>,
    /// Whether a new commit aborts the wave in flight instead of letting it finish.
    pub abort_on_new_commit: bool,
    /// The floor under deletes.
    pub prune: Prune,
}

/// How much one commit may delete.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prune {
    /// The largest percent of a scope's live objects of a kind one commit may delete (at least
    /// [`Prune::ALWAYS`] objects are allowed).
    pub max_delete_ratio: f64,
    /// Whether a commit may delete every live object of a scope, whatever the ratio.
    pub allow_empty: bool,
}

impl Prune {
    /// Deletes of a scope always allowed, whatever the ratio (unless they empty it).
    pub const ALWAYS: usize = 5;

    /// Whether deleting `deletes` of a scope's `live` objects is allowed.
    pub fn allows(&self, deletes: usize, live: usize) -> bool {
        if self.allow_empty || deletes == 0 {
            return true;
        }
        if deletes >= live {
            return false;
        }
        let ratio = (live as f64 * self.max_delete_ratio / 100.0).floor() as usize;
        deletes <= ratio.max(Self::ALWAYS)
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::resolve(&RolloutPolicySpec::default()).expect("the defaults resolve")
    }
}

impl Policy {
    /// Resolves a policy spec, filling in defaults; every problem is returned, each naming
    /// its field.
    pub fn resolve(spec: &RolloutPolicySpec) -> Result<Policy, Vec<String>> {
        let mut problems = Problems::default();
        let policy = resolve(spec, &mut problems);
        match policy {
            Some(policy) if problems.0.is_empty() => Ok(policy),
            _ => Err(problems.0),
        }
    }

    /// The limit of a budget class, if it has one.
    pub fn budget(&self, class: BudgetClass) -> Option<&BudgetLimit> {
        self.budgets.iter().find(|b| b.class == class)
    }

    /// Whether `minute_of_week` (0 = Monday 00:00 UTC) is inside a window (always, when none
    /// is configured).
    pub fn window_open(&self, weekday: u32, minute: u32) -> bool {
        self.windows.is_empty() || self.windows.iter().any(|w| w.contains(weekday, minute))
    }
}

impl fmt::Display for Window {
    /// As people read it: `Tue,Thu 02:00–06:00 UTC`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<&str> = self
            .days
            .iter()
            .filter_map(|d| WEEKDAYS.get(*d as usize).copied())
            .collect();
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        write!(
            f,
            "{} {}–{} UTC",
            days.join(","),
            hm(self.start),
            hm(self.end)
        )
    }
}

impl Window {
    /// Whether the window is open at `minute` of `weekday`.
    pub fn contains(&self, weekday: u32, minute: u32) -> bool {
        if self.start <= self.end {
            self.days.contains(&weekday) && (self.start..self.end).contains(&minute)
        } else {
            // Crosses midnight: the evening part belongs to `weekday`, the morning part to the
            // day before.
            (self.days.contains(&weekday) && minute >= self.start)
                || (self.days.contains(&((weekday + 6) % 7)) && minute < self.end)
        }
    }
}

/// The budgets of the high-risk classes when the policy sets none for them: a commit that
/// deletes or reinstalls many Machines proceeds at this pace, never all at once.
pub const DEFAULT_BUDGETS: [(BudgetClass, u64, Duration); 2] = [
    (BudgetClass::MachineDelete, 100, Duration::from_secs(3600)),
    (BudgetClass::MachineReinstall, 50, Duration::from_secs(3600)),
];

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    /// Records a problem; `None`, so that a field that failed can be returned as missing.
    fn add<T>(&mut self, problem: String) -> Option<T> {
        self.0.push(problem);
        None
    }
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn resolve(spec: &RolloutPolicySpec, problems: &mut Problems) -> Option<Policy> {
    let machines = sequence(
        spec.machines.as_ref(),
        &[
            Amount::Count(1),
            Amount::Percent(5.0),
            Amount::Percent(25.0),
            Amount::Percent(100.0),
        ],
        "spec.machines",
        problems,
    );
    let clusters = sequence(
        spec.clusters.as_ref(),
        &[
            Amount::Count(1),
            Amount::Percent(25.0),
            Amount::Percent(100.0),
        ],
        "spec.clusters",
        problems,
    );
    let gates = spec.gates.as_ref();
    let gate_timeout = duration(
        gates.and_then(|g| g.timeout.as_deref()).unwrap_or("15m"),
        "spec.gates.timeout",
        problems,
    );
    let query_timeout = duration(
        gates
            .and_then(|g| g.query_timeout.as_deref())
            .unwrap_or("10s"),
        "spec.gates.queryTimeout",
        problems,
    );
    let metrics = metrics(gates, problems);
    let breaker = thresholds(spec.breaker.as_ref(), problems);
    let budgets = budgets(spec.budgets.as_deref().unwrap_or_default(), problems);
    let windows: Vec<Option<Window>> = spec
        .windows
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, w)| window(w, &format!("spec.windows[{i}]"), problems))
        .collect();
    let prune = prune(spec.prune.as_ref(), problems);
    Some(Policy {
        machines: machines?,
        clusters: clusters?,
        gate_timeout: gate_timeout?,
        query_timeout: query_timeout?,
        metrics: metrics?,
        breaker: breaker?,
        budgets: budgets?,
        windows: windows.into_iter().collect::<Option<_>>()?,
        abort_on_new_commit: matches!(spec.on_new_commit, Some(OnNewCommit::Abort)),
        prune: prune?,
    })
}

fn sequence(
    plan: Option<&policy::WavePlan>,
    defaults: &[Amount],
    field: &str,
    problems: &mut Problems,
) -> Option<Sequence> {
    let waves = match plan.and_then(|p| p.waves.as_ref()) {
        Some(waves) if waves.is_empty() => {
            problems.add(format!("{field}.waves is empty; omit it for the defaults"))
        }
        Some(waves) => {
            let mut last_percent = 0.0;
            let mut last_count = 0;
            let resolved: Vec<Option<WaveSpec>> = waves
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let at = format!("{field}.waves[{i}]");
                    let size = Amount::parse(&w.size, &format!("{at}.size"), problems);
                    match size {
                        Some(Amount::Count(n)) if n < last_count => {
                            problems.add::<()>(format!(
                                "{at}.size {n} is smaller than the wave before; sizes are cumulative"
                            ));
                        }
                        Some(Amount::Percent(p)) if p < last_percent => {
                            problems.add::<()>(format!(
                                "{at}.size {p}% is smaller than the wave before; sizes are cumulative"
                            ));
                        }
                        Some(Amount::Count(n)) => last_count = n,
                        Some(Amount::Percent(p)) => last_percent = p,
                        None => {}
                    }
                    let bake = match &w.bake {
                        Some(bake) => duration(bake, &format!("{at}.bake"), problems),
                        None => Some(Duration::ZERO),
                    };
                    Some(WaveSpec {
                        name: w.name.clone(),
                        size: size?,
                        bake: bake?,
                        pause: w.pause.unwrap_or(false),
                    })
                })
                .collect();
            let resolved: Option<Vec<WaveSpec>> = resolved.into_iter().collect();
            if let Some(last) = resolved.as_ref().and_then(|w| w.last())
                && last.size != Amount::Percent(100.0)
            {
                problems.add::<()>(format!(
                    "{field}.waves: the last wave must be 100% so the rollout can finish"
                ));
            }
            resolved
        }
        None => Some(
            defaults
                .iter()
                .enumerate()
                .map(|(i, &size)| WaveSpec {
                    name: (i == 0).then(|| "canary".to_owned()),
                    size,
                    bake: Duration::ZERO,
                    pause: false,
                })
                .collect(),
        ),
    };
    let max_unavailable = match plan.and_then(|p| p.max_unavailable.as_ref()) {
        Some(value) => Amount::parse(value, &format!("{field}.maxUnavailable"), problems),
        None => Some(Amount::Count(1)),
    };
    let machines = field == "spec.machines";
    let spread_by = plan.and_then(|p| p.spread_by.clone());
    if let Some(by) = &spread_by
        && by != "idc"
        && !(machines && by == "cluster")
        && crate::syntax::qualified_name(by).is_err()
    {
        problems.add::<()>(format!(
            "{field}.spreadBy {by:?} must be `idc`{} or a label key",
            if machines { ", `cluster`" } else { "" }
        ));
    }
    let per_cluster = match plan.and_then(|p| p.max_unavailable_per_cluster.as_ref()) {
        Some(_) if !machines => problems.add(format!(
            "{field}.maxUnavailablePerCluster is for Machines (spec.machines) only"
        )),
        Some(value) => Amount::parse(
            value,
            &format!("{field}.maxUnavailablePerCluster"),
            problems,
        )
        .map(Some),
        None => Some(None),
    };
    Some(Sequence {
        waves: waves?,
        spread_by,
        max_unavailable: max_unavailable?,
        max_unavailable_per_cluster: per_cluster?,
    })
}

fn metrics(gates: Option<&policy::Gates>, problems: &mut Problems) -> Option<Vec<MetricGate>> {
    let mut names = std::collections::HashSet::new();
    let metrics: Vec<Option<MetricGate>> = gates
        .and_then(|g| g.metrics.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("spec.gates.metrics[{i}]");
            if !names.insert(&m.name) {
                problems.add::<()>(format!("{at}.name {:?} is used twice", m.name));
            }
            let host = m
                .url
                .strip_prefix("http://")
                .or_else(|| m.url.strip_prefix("https://"));
            if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
                problems.add::<()>(format!(
                    "{at}.url {:?} must be an http:// or https:// URL",
                    m.url
                ));
            }
            if let Some(secret) = &m.secret_ref
                && let Err(why) = crate::syntax::dns_subdomain(&secret.name)
            {
                problems.add::<()>(format!("{at}.secretRef.name {:?} {why}", secret.name));
            }
            for (name, value) in m.headers.iter().flatten() {
                let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
                if name.is_empty() || !name.chars().all(token) {
                    problems.add::<()>(format!("{at}.headers: {name:?} is not a header name"));
                } else if name.eq_ignore_ascii_case("authorization") {
                    problems.add::<()>(format!(
                        "{at}.headers: put the credentials in the Secret of secretRef \
                         (`token`, or `username` and `password`), not in the policy"
                    ));
                }
                if value.chars().any(|c| c.is_control()) {
                    problems.add::<()>(format!(
                        "{at}.headers.{name}: a header value cannot hold control characters"
                    ));
                }
            }
            if m.min.is_none() && m.max.is_none() {
                problems.add::<()>(format!("{at} needs `min`, `max` or both"));
            }
            if let (Some(lo), Some(hi)) = (m.min, m.max)
                && lo > hi
            {
                problems.add::<()>(format!("{at}: min {lo} is above max {hi}"));
            }
            let interval = duration(
                m.interval.as_deref().unwrap_or("30s"),
                &format!("{at}.interval"),
                problems,
            );
            Some(MetricGate {
                name: m.name.clone(),
                url: m.url.clone(),
                query: m.query.clone(),
                min: m.min,
                max: m.max,
                interval: interval?,
                headers: m
                    .headers
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                secret: m.secret_ref.as_ref().map(|r| r.name.clone()),
            })
        })
        .collect();
    metrics.into_iter().collect()
}

fn budgets(specs: &[policy::Budget], problems: &mut Problems) -> Option<Vec<BudgetLimit>> {
    let mut budgets = Vec::new();
    let mut failed = false;
    for (i, b) in specs.iter().enumerate() {
        let at = format!("spec.budgets[{i}]");
        let class = match BudgetClass::parse(&b.class) {
            Some(class) if budgets.iter().any(|l: &BudgetLimit| l.class == class) => {
                problems.add(format!("{at}.class {:?} has a budget already", b.class))
            }
            Some(class) => Some(class),
            None => problems.add(format!(
                "{at}.class {:?} is not one of {}",
                b.class,
                BudgetClass::ALL.map(BudgetClass::as_str).join(", ")
            )),
        };
        let limit = match u64::try_from(b.limit) {
            Ok(limit) => Some(limit),
            Err(_) => problems.add(format!("{at}.limit must not be negative")),
        };
        let window = match duration(&b.window, &format!("{at}.window"), problems) {
            Some(w) if w.is_zero() => problems.add(format!("{at}.window must be longer than 0")),
            other => other,
        };
        match (class, limit, window) {
            (Some(class), Some(limit), Some(window)) => budgets.push(BudgetLimit {
                class,
                limit,
                window,
            }),
            _ => failed = true,
        }
    }
    for (class, limit, window) in DEFAULT_BUDGETS {
        if !specs.iter().any(|b| b.class == class.as_str()) {
            budgets.push(BudgetLimit {
                class,
                limit,
                window,
            });
        }
    }
    (!failed).then_some(budgets)
}

fn thresholds(breaker: Option<&policy::Breaker>, problems: &mut Problems) -> Option<Thresholds> {
    let Some(b) = breaker else {
        return Some(Thresholds {
            per_wave: Some(1),
            per_wave_ratio: None,
            total: None,
            total_ratio: None,
            revert: true,
        });
    };
    let mut failed = false;
    let mut count = |v: Option<i32>, field: &str, problems: &mut Problems| match v {
        Some(n) if n < 1 => {
            failed = true;
            problems.add(format!("spec.breaker.{field} must be at least 1"))
        }
        Some(n) => Some(n as u64),
        None => None,
    };
    let per_wave = count(b.max_failures_per_wave, "maxFailuresPerWave", problems);
    let total = count(b.max_failures, "maxFailures", problems);
    let per_wave_ratio = ratio(
        b.max_failure_ratio_per_wave.as_deref(),
        "spec.breaker.maxFailureRatioPerWave",
        problems,
    );
    let total_ratio = ratio(
        b.max_failure_ratio.as_deref(),
        "spec.breaker.maxFailureRatio",
        problems,
    );
    let mut t = Thresholds {
        per_wave,
        per_wave_ratio: per_wave_ratio?,
        total,
        total_ratio: total_ratio?,
        revert: b.revert.unwrap_or(true),
    };
    if failed {
        return None;
    }
    if t.per_wave.is_none()
        && t.per_wave_ratio.is_none()
        && t.total.is_none()
        && t.total_ratio.is_none()
    {
        t.per_wave = Some(1);
    }
    Some(t)
}

/// An optional percent in (0, 100]: `Some(None)` when unset.
fn ratio(value: Option<&str>, field: &str, problems: &mut Problems) -> Option<Option<f64>> {
    let Some(s) = value else {
        return Some(None);
    };
    match s
        .strip_suffix('%')
        .and_then(|p| p.trim().parse::<f64>().ok())
        .filter(|p| p.is_finite() && *p > 0.0 && *p <= 100.0)
    {
        Some(p) => Some(Some(p)),
        None => problems.add(format!("{field} {s:?} must be a percent like 10%")),
    }
}

fn prune(prune: Option<&policy::Prune>, problems: &mut Problems) -> Option<Prune> {
    let max_delete_ratio = ratio(
        prune.and_then(|p| p.max_delete_ratio.as_deref()),
        "spec.prune.maxDeleteRatio",
        problems,
    )?;
    Some(Prune {
        max_delete_ratio: max_delete_ratio.unwrap_or(10.0),
        allow_empty: prune.and_then(|p| p.allow_empty).unwrap_or(false),
    })
}

fn duration(text: &str, field: &str, problems: &mut Problems) -> Option<Duration> {
    match endstate_api::duration::parse(text) {
        Ok(d) => Some(d),
        Err(why) => problems.add(format!("{field}: {why}")),
    }
}

fn window(w: &policy::MaintenanceWindow, field: &str, problems: &mut Problems) -> Option<Window> {
    let minute = |s: &str, f: &str, problems: &mut Problems| {
        let parsed = s.split_once(':').and_then(|(h, m)| {
            let ok = h.len() == 2 && m.len() == 2;
            match (h.parse::<u32>(), m.parse::<u32>()) {
                (Ok(h), Ok(m)) if ok && h < 24 && m < 60 => Some(h * 60 + m),
                _ => None,
            }
        });
        match parsed {
            Some(m) => Some(m),
            None => problems.add(format!("{field}.{f} {s:?} must be HH:MM (24-hour, UTC)")),
        }
    };
    let start = minute(&w.start, "start", problems);
    let end = minute(&w.end, "end", problems);
    let days = match &w.days {
        None => Some((0..7).collect()),
        Some(days) => days
            .iter()
            .map(|d| match WEEKDAYS.iter().position(|w| w == d) {
                Some(i) => Some(i as u32),
                None => problems.add(format!(
                    "{field}.days: {d:?} is not one of {}",
                    WEEKDAYS.join(", ")
                )),
            })
            .collect::<Vec<_>>()
            .into_iter()
            .collect::<Option<Vec<u32>>>(),
    };
    Some(Window {
        days: days?,
        start: start?,
        end: end?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_canary_then_growing_waves() {
        let p = Policy::default();
        let sizes: Vec<usize> = p.machines.waves.iter().map(|w| w.size.of(1000)).collect();
        assert_eq!(sizes, [1, 50, 250, 1000]);
        assert_eq!(p.machines.max_unavailable, Amount::Count(1));
        assert_eq!(p.breaker.per_wave, Some(1));
        assert_eq!(p.gate_timeout, Duration::from_secs(900));
        assert_eq!(p.budget(BudgetClass::MachineDelete).unwrap().limit, 100);
        assert_eq!(p.budget(BudgetClass::MachineReinstall).unwrap().limit, 50);
        assert!(p.budget(BudgetClass::MachineUpdate).is_none());
    }

    #[test]
    fn machines_spread_and_limit_per_cluster_and_clusters_do_not() {
        let spec: RolloutPolicySpec = serde_json::from_value(serde_json::json!({
            "machines": {"spreadBy": "cluster", "maxUnavailable": "10%",
                         "maxUnavailablePerCluster": "2%"},
        }))
        .unwrap();
        let p = Policy::resolve(&spec).unwrap();
        assert_eq!(p.machines.spread_by.as_deref(), Some("cluster"));
        assert_eq!(
            p.machines.max_unavailable_per_cluster,
            Some(Amount::Percent(2.0))
        );
        assert_eq!(Policy::default().machines.max_unavailable_per_cluster, None);
        let spec: RolloutPolicySpec = serde_json::from_value(serde_json::json!({
            "clusters": {"maxUnavailablePerCluster": 1},
            "machines": {"maxUnavailablePerCluster": 0},
        }))
        .unwrap();
        let problems = Policy::resolve(&spec).unwrap_err();
        assert_eq!(
            problems,
            [
                "spec.machines.maxUnavailablePerCluster 0 must be at least 1",
                "spec.clusters.maxUnavailablePerCluster is for Machines (spec.machines) only",
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let spec: RolloutPolicySpec = serde_json::from_value(serde_json::json!({
            "machines": {"waves": [{"size": "50%"}, {"size": "5%"}], "maxUnavailable": 0},
            "gates": {"timeout": "soon", "metrics": [
                {"name": "m", "url": "prom:9090", "query": "up", "min": 1,
                 "secretRef": {"name": "../auth"}}]},
            "budgets": [{"class": "machine-delete", "limit": -1, "window": "1h"},
                        {"class": "nodes", "limit": 1, "window": "0s"}],
            "windows": [{"days": ["Monday"], "start": "25:00", "end": "02:00"}],
            "prune": {"maxDeleteRatio": "150%"}
        }))
        .unwrap();
        let problems = Policy::resolve(&spec).unwrap_err();
        for expected in [
            "spec.machines.waves[1].size 5% is smaller than the wave before",
            "spec.machines.waves: the last wave must be 100%",
            "spec.machines.maxUnavailable 0 must be at least 1",
            "spec.gates.timeout:",
            "spec.gates.metrics[0].url \"prom:9090\" must be an http:// or https:// URL",
            "spec.gates.metrics[0].secretRef.name \"../auth\" must be a DNS-1123 subdomain",
            "spec.budgets[0].limit must not be negative",
            "spec.budgets[1].class \"nodes\" is not one of",
            "spec.budgets[1].window must be longer than 0",
            "spec.windows[0].start \"25:00\" must be HH:MM",
            "spec.windows[0].days: \"Monday\" is not one of",
            "spec.prune.maxDeleteRatio \"150%\" must be a percent",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "no {expected:?} in {problems:#?}"
            );
        }
    }

    #[test]
    fn the_delete_floor_allows_a_few_or_a_share_never_all() {
        let prune = Policy::default().prune;
        assert!(prune.allows(5, 6) && !prune.allows(6, 6));
        assert!(prune.allows(5, 20) && !prune.allows(6, 20));
        assert!(prune.allows(100, 1000) && !prune.allows(101, 1000));
        assert!(!prune.allows(1, 1));
        let lenient = Prune {
            max_delete_ratio: 50.0,
            allow_empty: false,
        };
        assert!(lenient.allows(500, 1000) && !lenient.allows(1000, 1000));
        let empty = Prune {
            max_delete_ratio: 10.0,
            allow_empty: true,
        };
        assert!(empty.allows(1000, 1000));
    }

    #[test]
    fn windows_cross_midnight() {
        let w = Window {
            days: vec![0],
            start: 22 * 60,
            end: 2 * 60,
        };
        assert!(w.contains(0, 23 * 60));
        assert!(w.contains(1, 60));
        assert!(!w.contains(1, 23 * 60));
        assert!(!w.contains(0, 60));
    }
}
