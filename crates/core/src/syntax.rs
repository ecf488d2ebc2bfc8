//! The shapes of field values shared by the checks of objects (`validate`) and the reading of
//! a policy (`policy`): names and sizes.

use endstate_api::IntOrString;

use crate::invalid::Invalid;

/// A wave size or `maxUnavailable`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Size {
    /// A number of objects.
    Count(u32),
    /// A percentage of the changed objects.
    Percent(f64),
}

/// Parses a count (`1`, `"3"`) or a percent (`"5%"`, 0 < p ≤ 100).
pub fn size(value: &IntOrString) -> Result<Size, Invalid> {
    match value {
        IntOrString::Int(n) if *n >= 1 => Ok(Size::Count(*n as u32)),
        IntOrString::Int(n) => Err(Invalid(format!("{n} must be at least 1"))),
        IntOrString::String(s) => {
            if let Some(p) = percent(s) {
                if p > 0.0 && p <= 100.0 {
                    return Ok(Size::Percent(p));
                }
                return Err(Invalid(format!("{s:?} must be above 0% and at most 100%")));
            }
            match s.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(Size::Count(n)),
                _ => Err(Invalid(format!(
                    "{s:?} must be a count (1) or a percent (5%)"
                ))),
            }
        }
    }
}

pub(crate) fn percent(s: &str) -> Option<f64> {
    s.strip_suffix('%')?
        .parse::<f64>()
        .ok()
        .filter(|p| p.is_finite())
}

/// A DNS-1123 subdomain (a namespace or object name).
pub fn dns_subdomain(s: &str) -> Result<(), Invalid> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(
            "must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', starting and \
             ending with a letter or digit, at most 253)"
                .into(),
        )
    }
}

/// A DNS-1123 label (a namespace's name, a Cluster's).
pub fn dns_label(s: &str) -> Result<(), Invalid> {
    dns_subdomain(s)?;
    if s.len() > 63 || s.contains('.') {
        return Err(
            "must be a DNS-1123 label (lowercase letters, digits and '-', at most 63)".into(),
        );
    }
    Ok(())
}

/// A qualified name, as label keys and values are (optionally with a DNS prefix and `/`).
pub(crate) fn qualified_name(key: &str) -> Result<(), Invalid> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        dns_subdomain(p).map_err(|why| Invalid(format!("has a prefix that {why}")))?;
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(
            "must be a qualified name (letters, digits, '-', '_', '.', at most 63, optionally \
             with a DNS prefix and '/')"
                .into(),
        )
    }
}
