//! Patch targets: kustomize's `target` selector.
//!
//! `group`, `version`, `kind`, `name` and `namespace` are anchored regular expressions, as in
//! kustomize (`name: m-.*` selects every name starting with `m-`); `labelSelector` and
//! `annotationSelector` use Kubernetes label-selector syntax (`a=b`, `a!=b`, `a in (x,y)`,
//! `a notin (x)`, `a`, `!a`, comma meaning "and").

use regex_lite::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::invalid::Invalid;

/// A `target:` as written in a kustomization.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSpec {
    /// API group regex.
    #[serde(default)]
    pub group: Option<String>,
    /// API version regex.
    #[serde(default)]
    pub version: Option<String>,
    /// Kind regex.
    #[serde(default)]
    pub kind: Option<String>,
    /// Name regex.
    #[serde(default)]
    pub name: Option<String>,
    /// Namespace regex.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Label selector.
    #[serde(default)]
    pub label_selector: Option<String>,
    /// Annotation selector.
    #[serde(default)]
    pub annotation_selector: Option<String>,
}

/// A compiled target.
#[derive(Clone, Debug)]
pub struct Target {
    group: Option<Pattern>,
    version: Option<Pattern>,
    kind: Option<Pattern>,
    name: Option<Pattern>,
    namespace: Option<Pattern>,
    labels: Option<LabelSelector>,
    annotations: Option<LabelSelector>,
}

impl Target {
    /// Compiles a target, or says which field is wrong.
    pub fn compile(spec: &TargetSpec) -> Result<Self, Invalid> {
        fn re(field: &str, text: &Option<String>) -> Result<Option<Pattern>, Invalid> {
            text.as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| {
                    if t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'))
                    {
                        return Ok(Pattern::Literal(t.to_owned()));
                    }
                    Regex::new(&format!("^(?:{t})$"))
                        .map(Pattern::Regex)
                        .map_err(|e| {
                            Invalid(format!("target.{field}: invalid regular expression: {e}"))
                        })
                })
                .transpose()
        }
        fn sel(field: &str, text: &Option<String>) -> Result<Option<LabelSelector>, Invalid> {
            text.as_deref()
                .filter(|t| !t.trim().is_empty())
                .map(|t| {
                    LabelSelector::parse(t).map_err(|e| Invalid(format!("target.{field}: {e}")))
                })
                .transpose()
        }
        Ok(Target {
            group: re("group", &spec.group)?,
            version: re("version", &spec.version)?,
            kind: re("kind", &spec.kind)?,
            name: re("name", &spec.name)?,
            namespace: re("namespace", &spec.namespace)?,
            labels: sel("labelSelector", &spec.label_selector)?,
            annotations: sel("annotationSelector", &spec.annotation_selector)?,
        })
    }

    /// Whether the object is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let meta = &obj["metadata"];
        fn text(v: &Value) -> &str {
            v.as_str().unwrap_or_default()
        }
        let check = |p: &Option<Pattern>, value: &str| p.as_ref().is_none_or(|p| p.matches(value));
        check(&self.group, group)
            && check(&self.version, version)
            && check(&self.kind, text(&obj["kind"]))
            && check(&self.name, text(&meta["name"]))
            && check(&self.namespace, text(&meta["namespace"]))
            && self
                .labels
                .as_ref()
                .is_none_or(|s| s.matches(&meta["labels"]))
            && self
                .annotations
                .as_ref()
                .is_none_or(|s| s.matches(&meta["annotations"]))
    }
}

/// A name pattern: most targets name a kind or an object outright, and a string comparison
/// is much cheaper than a regex run on every object of a large fleet.
#[derive(Clone, Debug)]
enum Pattern {
    Literal(String),
    Regex(Regex),
}

impl Pattern {
    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Literal(text) => text == value,
            Pattern::Regex(re) => re.is_match(value),
        }
    }
}

/// A parsed Kubernetes label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),!f`.
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                return Err(Invalid(format!("empty requirement in selector {text:?}")));
            }
            requirements.push(parse_requirement(part).ok_or_else(|| {
                format!("cannot parse {part:?} in selector {text:?} (use a=b, a!=b, a in (x,y), a notin (x), a or !a)")
            })?);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether a `labels` (or `annotations`) map satisfies every requirement.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Option<Requirement> {
    let valid_key = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    };
    let valid_value = |v: &str| {
        v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key).then(|| Requirement::NotExists(key.to_owned()));
    }
    for (op, make) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((k, v)) = part.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            return (valid_key(k) && valid_value(v)).then(|| make(k.to_owned(), v.to_owned()));
        }
    }
    for (op, make) in [
        (
            " notin ",
            Requirement::NotIn as fn(String, Vec<String>) -> Requirement,
        ),
        (" in ", Requirement::In),
    ] {
        if let Some((k, rest)) = part.split_once(op) {
            let k = k.trim();
            let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
            let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
            let ok = valid_key(k) && values.iter().all(|v| valid_value(v));
            return ok.then(|| make(k.to_owned(), values));
        }
    }
    valid_key(part).then(|| Requirement::Exists(part.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let labels = json!({"idc": "hz-a", "tier": "canary"});
        let yes = [
            "idc=hz-a",
            "idc==hz-a",
            "idc in (hz-a, hz-b)",
            "tier,!gone",
            "idc notin (x)",
            "a!=b",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&labels), "{s}");
        }
        let no = [
            "idc=hz-b",
            "idc in (x)",
            "gone",
            "!tier",
            "idc notin (hz-a)",
            "idc=hz-a,tier=x",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&labels), "{s}");
        }
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a=b,").is_err());
    }

    #[test]
    fn targets_are_anchored_regexes() {
        let obj = json!({"apiVersion": "fleet.endstate.dev/v1alpha1", "kind": "Machine",
                         "metadata": {"name": "m-001"}});
        let t = |spec: TargetSpec| Target::compile(&spec).unwrap().matches(&obj);
        assert!(t(TargetSpec {
            name: Some("m-.*".into()),
            ..Default::default()
        }));
        assert!(!t(TargetSpec {
            name: Some("m".into()),
            ..Default::default()
        }));
        assert!(t(TargetSpec {
            kind: Some("Machine".into()),
            group: Some("fleet.endstate.dev".into()),
            version: Some("v1alpha1".into()),
            ..Default::default()
        }));
        assert!(!t(TargetSpec {
            kind: Some("Mach".into()),
            ..Default::default()
        }));
    }
}
