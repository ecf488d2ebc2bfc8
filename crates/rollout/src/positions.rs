//! Sets of positions in a sequence's order, and their compact persisted form.
//!
//! In-flight, failed and restored objects are persisted as positions in the order a sequence
//! starts its changes (see [`crate::plan`]), never as names: a position costs at most a few
//! bits, a name tens of bytes. The persisted form is whichever is shorter of
//!
//! - run lengths: alternating gap and run lengths as LEB128 varints (one run of 10,000
//!   contiguous positions is three bytes), and
//! - a bitmap from the first position to the last (scattered positions: one bit each),
//!
//! tagged by its first byte and written as base64 text.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const RUNS: u8 = b'r';
const BITMAP: u8 = b'b';

/// A set of positions.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Positions {
    set: BTreeSet<u32>,
}

impl fmt::Debug for Positions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.runs().map(|(a, b)| a..b))
            .finish()
    }
}

impl Positions {
    /// An empty set.
    pub fn new() -> Self {
        Positions::default()
    }

    /// Adds a position; whether it was new.
    pub fn insert(&mut self, position: u32) -> bool {
        self.set.insert(position)
    }

    /// Removes a position; whether it was there.
    pub fn remove(&mut self, position: u32) -> bool {
        self.set.remove(&position)
    }

    /// Whether the position is in the set.
    pub fn contains(&self, position: u32) -> bool {
        self.set.contains(&position)
    }

    /// How many positions.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The positions in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = u32> + '_ {
        self.set.iter().copied()
    }

    /// The positions as maximal runs `[start, end)`.
    pub fn runs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let mut iter = self.set.iter().copied().peekable();
        std::iter::from_fn(move || {
            let start = iter.next()?;
            let mut end = start + 1;
            while iter.next_if(|&p| p == end).is_some() {
                end += 1;
            }
            Some((start, end))
        })
    }

    /// The compact bytes (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut runs = vec![RUNS];
        let mut at = 0u32;
        for (start, end) in self.runs() {
            varint(start - at, &mut runs);
            varint(end - start, &mut runs);
            at = end;
        }
        let (Some(&first), Some(&last)) = (self.set.first(), self.set.last()) else {
            return runs;
        };
        let span = (last - first + 1) as usize;
        let bitmap_len = 1 + 5 + span.div_ceil(8);
        if runs.len() <= bitmap_len {
            return runs;
        }
        let mut bitmap = Vec::with_capacity(bitmap_len);
        bitmap.push(BITMAP);
        varint(first, &mut bitmap);
        let base = bitmap.len();
        bitmap.resize(base + span.div_ceil(8), 0);
        for p in &self.set {
            let bit = (p - first) as usize;
            bitmap[base + bit / 8] |= 1 << (bit % 8);
        }
        bitmap
    }

    /// Reads [`Positions::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, BadPositions> {
        let mut set = BTreeSet::new();
        match bytes.split_first() {
            None => {}
            Some((&RUNS, mut rest)) => {
                let mut at = 0u32;
                while !rest.is_empty() {
                    let gap = read_varint(&mut rest)?;
                    let len = read_varint(&mut rest)?;
                    let start = at.checked_add(gap).ok_or(BadPositions::Overflow)?;
                    let end = start.checked_add(len).ok_or(BadPositions::Overflow)?;
                    if len == 0 || (gap == 0 && at > 0) {
                        return Err(BadPositions::NotMaximal);
                    }
                    set.extend(start..end);
                    at = end;
                }
            }
            Some((&BITMAP, mut rest)) => {
                let first = read_varint(&mut rest)?;
                for (i, byte) in rest.iter().enumerate() {
                    for bit in 0..8 {
                        if byte & (1 << bit) != 0 {
                            let offset =
                                u32::try_from(i * 8 + bit).map_err(|_| BadPositions::Overflow)?;
                            set.insert(first.checked_add(offset).ok_or(BadPositions::Overflow)?);
                        }
                    }
                }
            }
            Some((&tag, _)) => return Err(BadPositions::Encoding(tag)),
        }
        Ok(Positions { set })
    }
}

impl FromIterator<u32> for Positions {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        Positions {
            set: iter.into_iter().collect(),
        }
    }
}

impl Serialize for Positions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD_NO_PAD.encode(self.encode()))
    }
}

impl<'de> Deserialize<'de> for Positions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = STANDARD_NO_PAD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)?;
        Positions::decode(&bytes).map_err(serde::de::Error::custom)
    }
}

/// Why persisted bytes are not a position set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadPositions {
    /// A position past `u32::MAX`.
    #[error("position overflow")]
    Overflow,
    /// Two runs that touch, or an empty one: not what [`Positions::encode`] writes.
    #[error("runs are not maximal")]
    NotMaximal,
    /// A number wider than 32 bits.
    #[error("varint overflow")]
    VarintOverflow,
    /// The bytes end inside a number.
    #[error("a varint is cut short")]
    CutShort,
    /// A first byte that names no encoding.
    #[error("unknown position set encoding {0:#x}")]
    Encoding(u8),
}

fn varint(mut n: u32, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(bytes: &mut &[u8]) -> Result<u32, BadPositions> {
    let mut n: u32 = 0;
    for shift in (0..35).step_by(7) {
        let Some((&byte, rest)) = bytes.split_first() else {
            return Err(BadPositions::CutShort);
        };
        *bytes = rest;
        n |= u32::from(byte & 0x7f)
            .checked_shl(shift)
            .filter(|v| v >> shift == u32::from(byte & 0x7f))
            .ok_or(BadPositions::VarintOverflow)?;
        if byte & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(BadPositions::VarintOverflow)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn runs_are_compact_and_scattered_sets_use_a_bitmap() {
        let contiguous: Positions = (5_000..15_000).collect();
        assert_eq!(contiguous.encode(), vec![RUNS, 0x88, 0x27, 0x90, 0x4e]);
        let every_other: Positions = (0..10_000).map(|p| p * 2).collect();
        let bytes = every_other.encode();
        assert_eq!(bytes[0], BITMAP);
        assert!(bytes.len() <= 2 + 20_000 / 8, "{}", bytes.len());
        assert_eq!(Positions::decode(&bytes).unwrap(), every_other);
        assert_eq!(
            Positions::decode(&Positions::new().encode()).unwrap(),
            Positions::new()
        );
        assert!(Positions::decode(b"x").is_err());
        assert!(Positions::decode(&[RUNS, 0x80]).is_err());
    }

    proptest! {
        #[test]
        fn encoding_round_trips_and_is_never_longer_than_a_bitmap(
            positions in prop::collection::btree_set(0u32..200_000, 0..400)
        ) {
            let set: Positions = positions.iter().copied().collect();
            let bytes = set.encode();
            prop_assert_eq!(&Positions::decode(&bytes).unwrap(), &set);
            if let (Some(first), Some(last)) = (positions.first(), positions.last()) {
                prop_assert!(bytes.len() <= 6 + ((last - first + 1) as usize).div_ceil(8));
            }
            let json = serde_json::to_string(&set).unwrap();
            prop_assert_eq!(serde_json::from_str::<Positions>(&json).unwrap(), set);
        }
    }
}
