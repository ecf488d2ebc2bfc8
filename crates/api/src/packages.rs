//! `Packages`: component name → package version name, as a Machine declares it
//! (`spec.packages`) and reports it (`status.versions`).
//!
//! A map of a handful of entries, held by every Machine of a fleet twice or three times (the
//! desired object, the live one, its status). A `BTreeMap` allocates a node for eleven entries
//! whatever it holds (about half a kilobyte); this is a sorted vector of the entries it has, so a
//! 100k-Machine fleet keeps about 130 MB less. It reads and writes as a JSON/YAML mapping.

use std::borrow::Borrow;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A small map of strings, sorted by key.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Packages {
    entries: Vec<(String, String)>,
}

impl Packages {
    /// An empty map.
    pub fn new() -> Self {
        Packages::default()
    }

    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        String: Borrow<Q>,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// The value of `key`.
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&String>
    where
        String: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `key`, to change.
    pub fn get_mut<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<&mut String>
    where
        String: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &mut self.entries[i].1)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Ord + ?Sized>(&self, key: &Q) -> bool
    where
        String: Borrow<Q>,
    {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; the value it had, if any.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.find(key.as_str()) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`; the value it had, if any.
    pub fn remove<Q: Ord + ?Sized>(&mut self, key: &Q) -> Option<String>
    where
        String: Borrow<Q>,
    {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, by key.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &String)> + DoubleEndedIterator {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> + DoubleEndedIterator {
        self.entries.iter().map(|(k, _)| k)
    }

    /// The values, in key order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &String> + DoubleEndedIterator {
        self.entries.iter().map(|(_, v)| v)
    }
}

impl fmt::Debug for Packages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<Q: Ord + ?Sized> std::ops::Index<&Q> for Packages
where
    String: Borrow<Q>,
{
    type Output = String;

    fn index(&self, key: &Q) -> &String {
        self.get(key).expect("no entry for the key")
    }
}

impl FromIterator<(String, String)> for Packages {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut map = Packages::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map.entries.shrink_to_fit();
        map
    }
}

impl<const N: usize> From<[(String, String); N]> for Packages {
    fn from(entries: [(String, String); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl From<std::collections::BTreeMap<String, String>> for Packages {
    fn from(map: std::collections::BTreeMap<String, String>) -> Self {
        Packages {
            entries: map.into_iter().collect(),
        }
    }
}

impl<'a> IntoIterator for &'a Packages {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl Serialize for Packages {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Packages {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Packages;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of component names to package version names")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Packages, A::Error> {
                let mut map = Packages::new();
                while let Some((k, v)) = access.next_entry::<String, String>()? {
                    // As a YAML mapping and a BTreeMap would: the last value of a key wins.
                    map.insert(k, v);
                }
                map.entries.shrink_to_fit();
                Ok(map)
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

impl JsonSchema for Packages {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Packages".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <std::collections::BTreeMap<String, String>>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_as_a_sorted_mapping() {
        let p: Packages =
            serde_json::from_str(r#"{"kubelet": "k-2", "containerd": "c-1", "kubelet": "k-3"}"#)
                .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p["kubelet"], "k-3");
        assert_eq!(p.get("os"), None);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"containerd":"c-1","kubelet":"k-3"}"#
        );
        let mut q = Packages::from([("kubelet".to_owned(), "k-3".to_owned())]);
        q.insert("containerd".into(), "c-1".into());
        assert_eq!(p, q);
        assert_eq!(q.keys().collect::<Vec<_>>(), ["containerd", "kubelet"]);
        let schema = serde_json::to_value(schemars::schema_for!(Packages)).unwrap();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["additionalProperties"]["type"], "string");
    }
}
