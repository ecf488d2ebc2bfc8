//! Seeded decisions that depend only on what they are about.
//!
//! Every random choice the simulator makes (a delay, whether a fault hits a machine, a uid) is
//! a hash of the seed and the identity of the thing decided, never a draw from a shared
//! generator: the outcome for one machine does not depend on how many other machines were
//! decided before it, or in which order the engine applied them.

use std::time::Duration;

use endstate_core::hash::Fnv1a;

/// A 64-bit hash of the seed and the parts, stable across runs, platforms and Rust versions.
pub fn hash(seed: u64, parts: &[&str]) -> u64 {
    // FNV-1a over the parts (each followed by a separator so that ("ab", "c") and ("a", "bc")
    // differ), then splitmix64's finaliser to spread the bits.
    let mut h = Fnv1a::seeded(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    for part in parts {
        h.write(part.bytes().chain([0xff]));
    }
    mix(h.finish())
}

/// A number in `[0, 1)` decided by the seed and the parts.
pub fn unit(seed: u64, parts: &[&str]) -> f64 {
    // The top 53 bits fill an f64 mantissa exactly.
    (hash(seed, parts) >> 11) as f64 / (1u64 << 53) as f64
}

/// A duration in `[min, max]` decided by the seed and the parts.
pub fn between(seed: u64, parts: &[&str], min: Duration, max: Duration) -> Duration {
    if max <= min {
        return min;
    }
    let span = (max - min).as_millis() as f64;
    min + Duration::from_millis((unit(seed, parts) * (span + 1.0)).floor().min(span) as u64)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_depend_on_seed_and_parts_only() {
        assert_eq!(hash(1, &["m1", "kubelet"]), hash(1, &["m1", "kubelet"]));
        assert_ne!(hash(1, &["m1", "kubelet"]), hash(2, &["m1", "kubelet"]));
        assert_ne!(hash(1, &["ab", "c"]), hash(1, &["a", "bc"]));
    }

    #[test]
    fn units_are_spread_over_the_interval() {
        let below_half = (0..10_000)
            .filter(|i| unit(7, &["m", &i.to_string()]) < 0.5)
            .count();
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
        let (min, max) = (Duration::from_secs(20), Duration::from_secs(90));
        for i in 0..1000 {
            let d = between(7, &[&i.to_string()], min, max);
            assert!(min <= d && d <= max);
        }
    }
}
