//! Bounded YAML reading.
//!
//! endstate reads YAML 1.2 (the core schema: only `true`/`false` are booleans) with
//! `serde_norway`, a maintained fork of `serde_yaml` on libyaml. It was chosen for speed:
//! about 7 µs per Machine document against about 27 µs for the pure-Rust alternative, which is
//! the difference between meeting and missing the 100k-machine render budget.
//!
//! Limits, so that a hostile or broken file cannot take the controller down:
//! - files larger than [`Limits::max_file_bytes`] are refused before they are parsed;
//! - nesting deeper than 128 levels is refused (libyaml's recursion limit in `serde_norway`);
//! - alias expansion is bounded (a "billion laughs" document is refused);
//! - duplicate mapping keys and YAML merge keys (`<<`) are refused, since readers disagree on
//!   them and a silently dropped key is a silently dropped setting.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

use crate::error::Diagnostic;

/// Size limits for reading a repository.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest file read, in bytes.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 64 << 20,
        }
    }
}

/// One document of a multi-document file.
#[derive(Clone, Copy, Debug)]
pub struct Document<'a> {
    /// The document's text.
    pub text: &'a str,
    /// The 1-based line of the file the text starts at.
    pub first_line: usize,
}

/// Splits a YAML stream at its `---` markers without parsing it, so that documents can be
/// parsed in parallel. A marker is `---` at the start of a line followed by a space, a tab or
/// the end of the line; YAML ends block scalars at such a line too, so this cannot cut a
/// document in the middle of a value.
pub fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = bare == "---"
            || bare.starts_with("--- ")
            || bare.starts_with("---\t")
            || bare == "..."
            || bare.starts_with("... ");
        if is_marker {
            push_document(&mut docs, &text[start..offset], start_line);
            if bare.starts_with("---") {
                // Content after `--- ` on the same line belongs to the next document.
                start = offset + 3;
                start_line = index + 1;
            } else {
                start = offset + line.len();
                start_line = index + 2;
            }
        }
        offset += line.len();
    }
    push_document(&mut docs, &text[start..], start_line);
    docs
}

fn push_document<'a>(docs: &mut Vec<Document<'a>>, text: &'a str, first_line: usize) {
    let empty = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if !empty {
        docs.push(Document { text, first_line });
    }
}

/// Parses one document into a JSON value. `Ok(None)` for a document that is only `null`.
pub fn parse(doc: &Document<'_>, file: &str) -> Result<Option<Value>, Diagnostic> {
    let de = serde_norway::Deserializer::from_str(doc.text);
    match ValueSeed.deserialize(de) {
        Ok(Value::Null) => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(err) => Err(diagnostic(&err, doc, file)),
    }
}

/// Turns a `serde_norway` error into a diagnostic with the file's own line numbers.
pub fn diagnostic(err: &serde_norway::Error, doc: &Document<'_>, file: &str) -> Diagnostic {
    // The message carries "at line L column C" relative to the document; strip it and put the
    // file-relative position in the diagnostic instead.
    let text = err.to_string();
    let message = match text.find(" at line ") {
        Some(at) => {
            let rest = &text[at + 9..];
            let tail = rest.find(',').map(|i| &rest[i..]).unwrap_or("");
            format!("{}{}", &text[..at], tail)
        }
        None => text,
    };
    let message = match message.as_str() {
        "repetition limit exceeded" => {
            "too many alias expansions (refused as a YAML bomb); write the values out".to_string()
        }
        "recursion limit exceeded" => "nesting too deep (more than 128 levels)".to_string(),
        _ => message,
    };
    let d = Diagnostic::file(file, message);
    match err.location() {
        Some(at) => d.at(at.line() + doc.first_line - 1, at.column()),
        None => d.at_line(doc.first_line),
    }
}

/// Deserialises any YAML into a `serde_json::Value`, refusing duplicate and merge keys.
struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a number JSON can hold; quote it")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(ValueSeed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<KeyString>()? {
            let key = key.0;
            if key == "<<" {
                return Err(de::Error::custom(
                    "YAML merge keys (`<<`) are not supported; write the keys out",
                ));
            }
            let value = map.next_value_seed(ValueSeed)?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A mapping key: a string, or a scalar written as one (`1: x` has the key `"1"`).
struct KeyString(String);

impl<'de> de::Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyString, E> {
                Ok(KeyString(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyString, E> {
                Err(E::custom("a mapping key is empty"))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

/// Scalars that YAML 1.1 readers (kustomize's reader of `kustomization.yaml` and of JSON
/// patches, and Kubernetes' own YAML decoder) take for booleans, while YAML 1.2 takes them for
/// strings.
const YAML11_BOOLEANS: [&str; 16] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// Finds plain (unquoted) scalars that YAML 1.1 reads as booleans, as `(line, column, word)`.
///
/// endstate refuses them in kustomization files and patches: `kubectl kustomize` reads those
/// as YAML 1.1, so `value: on` would be `true` there and `"on"` here. Quoting the word (or
/// writing `true`/`false`) means the same thing to every reader.
pub fn ambiguous_booleans(doc: &Document<'_>) -> Vec<(usize, usize, String)> {
    let mut found = Vec::new();
    let mut block_indent: Option<usize> = None;
    for (index, line) in doc.text.lines().enumerate() {
        let indent = line.len() - line.trim_start().len();
        if let Some(block) = block_indent {
            if line.trim().is_empty() || indent > block {
                continue;
            }
            block_indent = None;
        }
        let mut token_start = None;
        let mut chars = line.char_indices().peekable();
        let check = |start: usize, end: usize, found: &mut Vec<_>| {
            let word = line[start..end].trim();
            if YAML11_BOOLEANS.contains(&word) {
                let column = start + (line[start..end].len() - line[start..end].trim_start().len());
                found.push((doc.first_line + index, column + 1, word.to_string()));
            }
        };
        let mut last_significant = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' | '"' if token_start.is_none() => {
                    // Skip a quoted scalar.
                    let quote = c;
                    let mut escaped = false;
                    for (_, q) in chars.by_ref() {
                        if quote == '"' && q == '\\' && !escaped {
                            escaped = true;
                            continue;
                        }
                        if q == quote && !escaped {
                            break;
                        }
                        escaped = false;
                    }
                    last_significant = Some(c);
                }
                '#' if i == 0 || line[..i].ends_with([' ', '\t']) => {
                    break;
                }
                ':' if matches!(chars.peek(), None | Some((_, ' ' | '\t'))) => {
                    if let Some(s) = token_start.take() {
                        check(s, i, &mut found);
                    }
                    last_significant = Some(':');
                }
                ',' | '[' | ']' | '{' | '}' => {
                    if let Some(s) = token_start.take() {
                        check(s, i, &mut found);
                    }
                    last_significant = Some(c);
                }
                '-' if token_start.is_none()
                    && matches!(chars.peek(), None | Some((_, ' ' | '\t'))) =>
                {
                    last_significant = Some('-');
                }
                '|' | '>'
                    if token_start.is_none() && matches!(last_significant, Some(':' | '-')) =>
                {
                    let rest = line[i + 1..].trim();
                    let rest = rest.split('#').next().unwrap_or("").trim();
                    if rest.chars().all(|c| matches!(c, '+' | '-' | '0'..='9')) {
                        block_indent = Some(indent);
                        break;
                    }
                    token_start = Some(i);
                }
                ' ' | '\t' => {}
                _ => {
                    if token_start.is_none() {
                        token_start = Some(i);
                    }
                    last_significant = Some(c);
                }
            }
        }
        if let Some(s) = token_start {
            let end = line[s..].find(" #").map(|e| s + e).unwrap_or(line.len());
            check(s, end, &mut found);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Document<'_> {
        Document {
            text,
            first_line: 1,
        }
    }

    #[test]
    fn splits_documents_with_line_numbers() {
        let text = "a: 1\n---\nb: 2\n--- \n# only a comment\n---\nc: |\n  x\n...\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].first_line, 1);
        assert_eq!(docs[1].first_line, 2);
        assert_eq!(docs[2].first_line, 6);
        assert_eq!(parse(&docs[2], "f").unwrap().unwrap()["c"], "x\n");
    }

    #[test]
    fn refuses_duplicate_keys_with_position() {
        let text = "a: 1\n---\nb:\n  c: 2\n  c: 3\n";
        let docs = split_documents(text);
        let err = parse(&docs[1], "f.yaml").unwrap_err();
        assert!(err.message.contains("duplicate key `c`"), "{err}");
        assert_eq!(err.line, Some(4));
    }

    #[test]
    fn refuses_merge_keys_and_bombs() {
        let err = parse(&one("<<: {a: 1}\nb: 2\n"), "f").unwrap_err();
        assert!(err.message.contains("merge keys"), "{err}");
        let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x,x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .windows(2)
            .map(|w| (w[0], w[1]))
        {
            bomb.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 10].join(",")
            ));
        }
        let err = parse(&one(&bomb), "f").unwrap_err();
        assert!(err.message.contains("YAML bomb"), "{err}");
        let deep = "[".repeat(300);
        assert!(
            parse(&one(&deep), "f")
                .unwrap_err()
                .message
                .contains("nesting")
        );
    }

    #[test]
    fn yaml_12_scalars() {
        let v = parse(&one("a: on\nb: 'no'\nc: 1.5\nd: true\ne: ~\n"), "f")
            .unwrap()
            .unwrap();
        assert_eq!(v["a"], "on");
        assert_eq!(v["b"], "no");
        assert_eq!(v["c"], 1.5);
        assert_eq!(v["d"], true);
        assert!(v["e"].is_null());
    }

    #[test]
    fn finds_yaml11_booleans_only_where_plain() {
        let text = "a: on\nb: 'on'\nc: \"yes\"\nlist:\n- no\n- nothing\nflow: {x: y, z: \"n\"}\n\
                    text: |\n  on\n  yes: no\nafter: off # comment\nurl: http://on\nOn: 1\n";
        let hits: Vec<_> = ambiguous_booleans(&one(text))
            .into_iter()
            .map(|(l, _, w)| (l, w))
            .collect();
        assert_eq!(
            hits,
            vec![
                (1, "on".to_string()),
                (5, "no".to_string()),
                (7, "y".to_string()),
                (11, "off".to_string()),
                (13, "On".to_string()),
            ]
        );
    }
}

/// Writes a value as block-style YAML that every reader (YAML 1.1 or 1.2) reads back as the
/// same value: strings that could be taken for anything else (`yes`, `1.28`, `~`, `a: b`) are
/// double-quoted. Mapping keys come in the value's order (sorted, for `serde_json` maps).
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            write_scalar(&mut out, scalar);
            out.push('\n');
        }
    }
    out
}

fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    for (key, value) in map {
        push_indent(out, indent);
        write_string(out, key);
        out.push(':');
        write_child(out, value, indent, true);
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        push_indent(out, indent);
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key goes on the dash's line.
                out.push(' ');
                let mut first = true;
                for (key, value) in map {
                    if !first {
                        push_indent(out, indent + 2);
                    }
                    first = false;
                    write_string(out, key);
                    out.push(':');
                    write_child(out, value, indent + 2, true);
                }
            }
            other => write_child(out, other, indent, false),
        }
    }
}

fn write_child(out: &mut String, value: &Value, indent: usize, in_map: bool) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            // Sequences under a key sit at the key's indentation, as kubectl writes them.
            write_seq(out, items, if in_map { indent } else { indent + 2 });
        }
        scalar => {
            out.push(' ');
            write_scalar(out, scalar);
            out.push('\n');
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn write_scalar(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s),
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

fn write_string(out: &mut String, s: &str) {
    if is_plain_safe(s) {
        out.push_str(s);
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string always serialises"));
    }
}

/// Whether a string can be written unquoted and still read back as this string by YAML 1.1
/// and 1.2 readers alike.
fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '/' || first == '_') {
        return false;
    }
    if s.ends_with([' ', ':']) || s.contains(": ") || s.contains(" #") {
        return false;
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || " ._/@+=,:-".contains(c);
    if !s.chars().all(allowed) {
        return false;
    }
    const RESERVED: [&str; 9] = [
        "true", "false", "null", "~", ".inf", ".nan", "True", "False", "Null",
    ];
    let upper_words = ["TRUE", "FALSE", "NULL"];
    !(YAML11_BOOLEANS.contains(&s) || RESERVED.contains(&s) || upper_words.contains(&s))
}

#[cfg(test)]
mod emit_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_yaml_12_and_quotes_what_yaml_11_would_misread() {
        let value = json!({
            "apiVersion": "fleet.endstate.dev/v1alpha1",
            "metadata": {"name": "kubelet-1.28.4", "labels": {}, "annotations": {"a": "yes", "b": "on"}},
            "spec": {"version": "1.28", "ip": "10.0.0.1", "empty": "", "tilde": "~", "colon": "a: b",
                     "multi": "x\ny", "list": [{"name": "a", "size": 1}, {"size": "5%"}], "n": 1.5,
                     "nested": [[1, 2], []], "date": "2024-01-01", "hex": "0x10", "NULL": null}
        });
        let text = to_string(&value);
        for needle in [
            "a: \"yes\"",
            "b: \"on\"",
            "version: \"1.28\"",
            "ip: \"10.0.0.1\"",
            "tilde: \"~\"",
            "colon: \"a: b\"",
            "hex: \"0x10\"",
            "date: \"2024-01-01\"",
            "name: kubelet-1.28.4",
            "- name: a\n    size: 1",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
        let doc = Document {
            text: &text,
            first_line: 1,
        };
        assert_eq!(parse(&doc, "t").unwrap().unwrap(), value);
    }
}
