//! Fault injection: rules that make the simulated operators fail, slow down or go quiet.
//!
//! A rule names what it targets and what happens to it:
//!
//! ```text
//! package=kubelet-1.29.0,rate=0.3   30% of the machines that get this version fail to install it
//! idc=idc-b,delay=10m               every operation on a machine in idc-b takes 10 minutes longer
//! machine=node-0042,silent          this machine never reports status again
//! ```
//!
//! Targets: `package=<MachinePackageVersion or ClusterPackageVersion name>`, `idc=<idc>`,
//! `machine=<name>`, `cluster=<name>`. Effects, at least one: `rate=<0..1>` (the share of the
//! targeted objects whose operation fails), `delay=<duration>` (added to the operation),
//! `silent` (no status is ever reported). A `package` rule only targets objects that are moving
//! *to* that version: a machine that already runs it, or moves away from it, is not affected.
//!
//! Whether a rule with a rate hits an object is decided by a hash of the seed, the object and
//! the target, so the same machines fail in every run with the same seed, whatever the order in
//! which they are rolled out.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, FaultError, RuleMistake};
use crate::seed;

/// A set of fault rules.
///
/// In a file (YAML or JSON) it is either a list of rules or a map with a `rules` list; a rule is
/// either the CLI string or a map with the same keys:
///
/// ```yaml
/// rules:
///   - package=kubelet-1.29.0,rate=0.3
///   - idc: idc-b
///     delay: 10m
///   - machine: node-0042
///     silent: true
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// The rules; every matching rule applies.
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

/// One fault rule: a target and its effects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RuleForm", into = "RawRule")]
pub struct FaultRule {
    /// What the rule applies to.
    pub target: FaultTarget,
    /// The share of targeted operations that fail, in `[0, 1]`.
    pub rate: Option<f64>,
    /// Added to the duration of every targeted operation.
    pub delay: Option<Duration>,
    /// Targeted objects never report status.
    pub silent: bool,
}

/// What a fault rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FaultTarget {
    /// Objects moving to this package version (a `MachinePackageVersion` name for machines, a
    /// `ClusterPackageVersion` name for clusters).
    Package(String),
    /// Machines in this failure domain, and clusters with masters in it.
    Idc(String),
    /// One machine.
    Machine(String),
    /// One cluster.
    Cluster(String),
}

impl FaultTarget {
    fn key(&self) -> &'static str {
        match self {
            FaultTarget::Package(_) => "package",
            FaultTarget::Idc(_) => "idc",
            FaultTarget::Machine(_) => "machine",
            FaultTarget::Cluster(_) => "cluster",
        }
    }

    fn name(&self) -> &str {
        match self {
            FaultTarget::Package(n)
            | FaultTarget::Idc(n)
            | FaultTarget::Machine(n)
            | FaultTarget::Cluster(n) => n,
        }
    }
}

impl fmt::Display for FaultTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key(), self.name())
    }
}

/// What the matching rules do to one operation of one object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effect {
    /// The object never reports.
    pub silent: bool,
    /// Extra time the operation takes.
    pub delay: Duration,
    /// The operation fails, with this message.
    pub failure: Option<String>,
}

/// The object an operation runs on, as far as fault rules look at it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subject<'a> {
    /// `Machine` or `Cluster`.
    pub kind: &'static str,
    pub name: &'a str,
    /// The machine's idc, or a cluster's master idcs.
    pub idcs: &'a [String],
    /// The package versions the operation installs (new to the object).
    pub installs: &'a [String],
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Faults::default()
    }

    /// Parses rules in the CLI syntax, one per string (`--sim-fault` is repeatable).
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, FaultError> {
        let rules = rules
            .iter()
            .map(|rule| rule.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(Faults { rules })
    }

    /// Parses a YAML (or JSON) document: a list of rules or a map with a `rules` list.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        // Each rule is decoded on its own so that an error names the rule and keeps serde's
        // message, instead of an untagged enum's "did not match any variant".
        let value: serde_json::Value =
            serde_norway::from_str(text).map_err(|err| Error::Faults {
                message: err.to_string(),
            })?;
        let rules = match value {
            serde_json::Value::Array(items) => items,
            serde_json::Value::Object(mut map) => {
                if let Some(key) = map.keys().find(|k| *k != "rules") {
                    return Err(Error::Faults {
                        message: format!("unknown key {key:?}: expected `rules`"),
                    });
                }
                match map.remove("rules") {
                    Some(serde_json::Value::Array(items)) => items,
                    None | Some(serde_json::Value::Null) => Vec::new(),
                    Some(_) => {
                        return Err(Error::Faults {
                            message: "`rules` must be a list".into(),
                        });
                    }
                }
            }
            serde_json::Value::Null => Vec::new(),
            _ => {
                return Err(Error::Faults {
                    message: "expected a list of rules or a map with `rules`".into(),
                });
            }
        };
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let rule = match item {
                    serde_json::Value::String(text) => text
                        .parse::<FaultRule>()
                        .map_err(|err| RuleMistake(err.message)),
                    fields => serde_json::from_value::<RawRule>(fields)
                        .map_err(|err| RuleMistake(err.to_string()))
                        .and_then(FaultRule::try_from),
                };
                rule.map_err(|message| Error::Faults {
                    message: format!("rule {}: {message}", i + 1),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Faults { rules })
    }

    /// Reads a YAML or JSON file of rules.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Faults::from_yaml(&text).map_err(|err| match err {
            Error::Faults { message } => Error::FaultsFile {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The combined effect of every rule that matches an operation.
    pub(crate) fn effect(&self, seed: u64, subject: Subject<'_>) -> Effect {
        let mut effect = Effect::default();
        for rule in &self.rules {
            let hit_package = match &rule.target {
                FaultTarget::Package(p) => {
                    if !subject.installs.iter().any(|i| i == p) {
                        continue;
                    }
                    Some(p.as_str())
                }
                FaultTarget::Idc(idc) => {
                    if !subject.idcs.iter().any(|i| i == idc) {
                        continue;
                    }
                    None
                }
                FaultTarget::Machine(n) if subject.kind == "Machine" && n == subject.name => None,
                FaultTarget::Cluster(n) if subject.kind == "Cluster" && n == subject.name => None,
                FaultTarget::Machine(_) | FaultTarget::Cluster(_) => continue,
            };
            effect.silent |= rule.silent;
            effect.delay += rule.delay.unwrap_or_default();
            let Some(rate) = rule.rate else { continue };
            if effect.failure.is_some() {
                continue;
            }
            let target = rule.target.to_string();
            if seed::unit(seed, &["fault", subject.kind, subject.name, &target]) < rate {
                effect.failure = Some(match hit_package {
                    Some(package) => format!(
                        "installing {package} failed (simulated fault {target}, rate {rate})"
                    ),
                    None => format!("operation failed (simulated fault {target}, rate {rate})"),
                });
            }
        }
        effect
    }
}

impl FromStr for FaultRule {
    type Err = FaultError;

    fn from_str(text: &str) -> Result<Self, FaultError> {
        let bad = |RuleMistake(message)| FaultError {
            rule: text.to_owned(),
            message,
        };
        let mut raw = RawRule::default();
        for field in text.split(',').map(str::trim) {
            if field.is_empty() {
                return Err(bad(RuleMistake(
                    "empty field: separate `key=value` pairs with one comma".into(),
                )));
            }
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (field, None),
            };
            let value_of = |key: &str| {
                value
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| bad(RuleMistake(format!("`{key}` needs a value: `{key}=<…>`"))))
            };
            let slot = match key {
                "package" => &mut raw.package,
                "idc" => &mut raw.idc,
                "machine" => &mut raw.machine,
                "cluster" => &mut raw.cluster,
                "rate" => {
                    let v = value_of(key)?;
                    let rate = v.parse::<f64>().map_err(|_| {
                        bad(RuleMistake(format!(
                            "rate {v:?} is not a number between 0 and 1"
                        )))
                    })?;
                    set_once(&mut raw.rate, rate, key).map_err(bad)?;
                    continue;
                }
                "delay" => {
                    let v = value_of(key)?;
                    set_once(&mut raw.delay, v, key).map_err(bad)?;
                    continue;
                }
                "silent" => {
                    let silent = match value {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(v) => {
                            return Err(bad(RuleMistake(format!(
                                "silent takes no value (or true/false), not {v:?}"
                            ))));
                        }
                    };
                    set_once(&mut raw.silent, silent, key).map_err(bad)?;
                    continue;
                }
                other => {
                    return Err(bad(RuleMistake(format!(
                        "unknown key {other:?}: expected package, idc, machine or cluster, then rate, delay or silent"
                    ))));
                }
            };
            let v = value_of(key)?;
            set_once(slot, v, key).map_err(bad)?;
        }
        FaultRule::try_from(raw).map_err(bad)
    }
}

impl fmt::Display for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.target)?;
        if let Some(rate) = self.rate {
            write!(f, ",rate={rate}")?;
        }
        if let Some(delay) = self.delay {
            write!(f, ",delay={}", format_duration(delay))?;
        }
        if self.silent {
            f.write_str(",silent")?;
        }
        Ok(())
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: &str) -> Result<(), RuleMistake> {
    if slot.is_some() {
        return Err(RuleMistake(format!("`{key}` is given twice")));
    }
    *slot = Some(value);
    Ok(())
}

/// A rule in a document: the CLI string or a map.
#[derive(Deserialize)]
#[serde(untagged)]
enum RuleForm {
    Text(String),
    Fields(RawRule),
}

impl TryFrom<RuleForm> for FaultRule {
    type Error = RuleMistake;

    fn try_from(form: RuleForm) -> Result<Self, RuleMistake> {
        match form {
            RuleForm::Text(text) => text
                .parse()
                .map_err(|err: FaultError| RuleMistake(err.message)),
            RuleForm::Fields(raw) => FaultRule::try_from(raw),
        }
    }
}

/// A rule as written: in a file, or split from the CLI syntax.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    machine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    silent: Option<bool>,
}

impl TryFrom<RawRule> for FaultRule {
    type Error = RuleMistake;

    fn try_from(raw: RawRule) -> Result<Self, RuleMistake> {
        let mut targets = [
            raw.package.map(FaultTarget::Package),
            raw.idc.map(FaultTarget::Idc),
            raw.machine.map(FaultTarget::Machine),
            raw.cluster.map(FaultTarget::Cluster),
        ]
        .into_iter()
        .flatten();
        let target = targets.next().ok_or_else(|| {
            RuleMistake("no target: name one of package=, idc=, machine= or cluster=".into())
        })?;
        if let Some(second) = targets.next() {
            return Err(RuleMistake(format!(
                "two targets ({target} and {second}): a rule names exactly one; write two rules"
            )));
        }
        if target.name().is_empty() {
            return Err(RuleMistake(format!("`{}` needs a name", target.key())));
        }
        if let Some(rate) = raw.rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(RuleMistake(format!(
                "rate {rate} is out of range: use a number between 0 and 1"
            )));
        }
        let delay = raw
            .delay
            .map(|d| endstate_api::duration::parse(&d))
            .transpose()
            .map_err(|err| RuleMistake(err.to_string()))?;
        let silent = raw.silent.unwrap_or(false);
        if raw.rate.is_none() && delay.is_none() && !silent {
            return Err(RuleMistake(format!(
                "no effect for {target}: add rate=<0..1>, delay=<duration> or silent"
            )));
        }
        Ok(FaultRule {
            target,
            rate: raw.rate,
            delay,
            silent,
        })
    }
}

impl From<FaultRule> for RawRule {
    fn from(rule: FaultRule) -> Self {
        let mut raw = RawRule {
            rate: rule.rate,
            delay: rule.delay.map(format_duration),
            silent: rule.silent.then_some(true),
            ..RawRule::default()
        };
        match rule.target {
            FaultTarget::Package(n) => raw.package = Some(n),
            FaultTarget::Idc(n) => raw.idc = Some(n),
            FaultTarget::Machine(n) => raw.machine = Some(n),
            FaultTarget::Cluster(n) => raw.cluster = Some(n),
        }
        raw
    }
}

/// Formats a duration in the syntax manifests use (`90s`, `10m`, `1500ms`).
pub(crate) fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0".into()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> FaultRule {
        text.parse().unwrap()
    }

    fn error(text: &str) -> String {
        text.parse::<FaultRule>().unwrap_err().to_string()
    }

    #[test]
    fn parses_the_cli_syntax() {
        assert_eq!(
            rule("package=kubelet-1.29.0,rate=0.3"),
            FaultRule {
                target: FaultTarget::Package("kubelet-1.29.0".into()),
                rate: Some(0.3),
                delay: None,
                silent: false,
            }
        );
        assert_eq!(
            rule("idc=idc-b,delay=10m").delay,
            Some(Duration::from_secs(600))
        );
        assert!(rule("machine=node-0042,silent").silent);
        assert!(rule(" cluster = c1 , silent=true ").silent);
        for text in [
            "package=kubelet-1.29.0,rate=0.3",
            "idc=idc-b,delay=10m",
            "machine=node-0042,silent",
            "idc=a,rate=0.5,delay=90s,silent",
        ] {
            assert_eq!(rule(text).to_string(), text);
        }
    }

    #[test]
    fn errors_name_the_rule_and_the_problem() {
        let cases = [
            ("package=p,rate=2", "rate 2 is out of range"),
            ("package=p,rate=lots", "rate \"lots\" is not a number"),
            ("idc=a,delay=10d", "invalid duration \"10d\""),
            ("idc=a", "no effect for idc=a"),
            ("rate=0.5", "no target"),
            ("package=p,idc=a,rate=1", "two targets"),
            ("package=p,rate=1,rate=0", "`rate` is given twice"),
            ("pkg=p,rate=1", "unknown key \"pkg\""),
            ("package=,rate=1", "`package` needs a value"),
            ("machine=m,silent=maybe", "silent takes no value"),
            ("machine=m,,silent", "empty field"),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(got.starts_with(&format!("fault rule {text:?}: ")), "{got}");
            assert!(got.contains(want), "{text}: {got}");
        }
    }

    #[test]
    fn reads_yaml_and_json_documents() {
        let yaml = "rules:\n  - package=kubelet-1.29.0,rate=0.3\n  - idc: idc-b\n    delay: 10m\n  - machine: node-0042\n    silent: true\n";
        let faults = Faults::from_yaml(yaml).unwrap();
        assert_eq!(faults.rules.len(), 3);
        assert_eq!(faults.rules[1], rule("idc=idc-b,delay=10m"));
        assert_eq!(faults.rules[2], rule("machine=node-0042,silent"));
        let list = Faults::from_yaml(r#"[{"package": "p", "rate": 1}]"#).unwrap();
        assert_eq!(list.rules, [rule("package=p,rate=1")]);
        assert!(Faults::from_yaml("").unwrap().is_empty());

        // serde round trip, as a config embedding the faults would do.
        let json = serde_json::to_string(&faults).unwrap();
        assert!(json.contains(r#"{"idc":"idc-b","delay":"10m"}"#), "{json}");
        assert_eq!(serde_json::from_str::<Faults>(&json).unwrap(), faults);
        let strings: Faults = serde_json::from_str(r#"{"rules": ["machine=m,silent"]}"#).unwrap();
        assert!(strings.rules[0].silent);

        let err = Faults::from_yaml("rules:\n  - idc: a\n  - idc: b\n    delay: soon\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("fault rules: rule 1: no effect for idc=a"),
            "{err}"
        );
        let err = Faults::from_yaml("- idc: a\n  dealy: 1m\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rule 1: unknown field `dealy`"), "{err}");
        let err = Faults::from_yaml("faults: []").unwrap_err().to_string();
        assert!(err.contains("unknown key \"faults\""), "{err}");
    }

    #[test]
    fn loads_files_and_names_them_in_errors() {
        let dir = std::env::temp_dir().join(format!("endstate-sim-faults-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.yaml");
        std::fs::write(&good, "- package=p,rate=0.1\n").unwrap();
        assert_eq!(Faults::load(&good).unwrap().rules.len(), 1);
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "- package=p,rate=7\n").unwrap();
        let err = Faults::load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.yaml: rule 1: rate 7 is out of range"),
            "{err}"
        );
        let missing = Faults::load(&dir.join("missing.yaml")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn package_rules_target_objects_moving_to_the_version() {
        let faults = Faults::parse(&["package=p2,rate=1,delay=1m"]).unwrap();
        let effect = |installs: &[String]| {
            faults.effect(
                1,
                Subject {
                    kind: "Machine",
                    name: "m1",
                    idcs: &[],
                    installs,
                },
            )
        };
        assert_eq!(effect(&["p1".to_owned()]), Effect::default());
        let hit = effect(&["p1".to_owned(), "p2".to_owned()]);
        assert_eq!(hit.delay, Duration::from_secs(60));
        assert!(hit.failure.unwrap().starts_with("installing p2 failed"));
    }
}
