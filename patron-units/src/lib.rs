//! The grammar of patron's duration (`"2s"`), size (`"1MiB"`) and rate
//! (`"100/s"`) literals, and its "did you mean" hints: one piece of code
//! that the macros use at compile time (so a typo in an attribute is a
//! compile error) and the runtime uses for `PATRON_*` variables (so both
//! accept exactly the same spellings). Also the runtime [`defaults`] that
//! the `patron new` templates must agree with.

#![warn(missing_docs)]

pub mod defaults;

/// Parses a humantime-style duration such as `"2s"`, `"150ms"` or `"1m30s"`
/// into nanoseconds. Returns a message that says what is allowed on failure.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let allowed = "expected a number followed by a unit (ns, us, ms, s, m, h), e.g. \"2s\", \"500ms\" or \"1m30s\"";
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("empty duration: {allowed}"));
    }
    let bytes = trimmed.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("invalid duration \"{text}\": {allowed}"));
        }
        let number: u128 = trimmed[start..i]
            .parse()
            .map_err(|_| format!("invalid duration \"{text}\": number too large"))?;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let unit_start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] >= 0x80) {
            i += 1;
        }
        let unit = &trimmed[unit_start..i];
        let factor: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" | "sec" | "secs" => 1_000_000_000,
            "m" | "min" | "mins" => 60_000_000_000,
            "h" | "hr" | "hrs" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "invalid duration \"{text}\": missing unit after {number}; {allowed}"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration \"{text}\": unknown unit `{other}`; {allowed}"
                ));
            }
        };
        total = total
            .checked_add(number.saturating_mul(factor))
            .ok_or_else(|| format!("invalid duration \"{text}\": too large"))?;
    }
    u64::try_from(total).map_err(|_| format!("invalid duration \"{text}\": too large"))
}

/// Parses a byte size such as `"1MiB"`, `"512KiB"`, `"2MB"` or `"1024"` into
/// bytes. Returns a message that says what is allowed on failure.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let allowed = "expected a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB), e.g. \"1MiB\" or \"512KiB\"";
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    if digits_end == 0 {
        return Err(format!("invalid size \"{text}\": {allowed}"));
    }
    let number: u64 = trimmed[..digits_end]
        .parse()
        .map_err(|_| format!("invalid size \"{text}\": number too large"))?;
    let unit = trimmed[digits_end..].trim();
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size \"{text}\": unknown unit `{unit}`; {allowed}"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("invalid size \"{text}\": too large"))
}

/// Parses a rate such as `"100/s"`, `"20/m"`, `"1000/h"` or `"5/10s"` into
/// `(count, period in nanoseconds)`.
pub fn parse_rate(text: &str) -> Result<(u32, u64), String> {
    let allowed =
        "expected a count per period such as \"100/s\", \"20/m\", \"1000/h\" or \"5/10s\"";
    let Some((count, period)) = text.split_once('/') else {
        return Err(format!("invalid rate \"{text}\": {allowed}"));
    };
    let count: u32 = match count.trim().parse() {
        Ok(n) if n > 0 => n,
        _ => {
            return Err(format!(
                "invalid rate \"{text}\": the count must be a whole number above zero; {allowed}"
            ));
        }
    };
    let period = period.trim();
    let nanos = match period {
        "s" | "sec" | "second" => 1_000_000_000,
        "m" | "min" | "minute" => 60_000_000_000,
        "h" | "hour" => 3_600_000_000_000,
        other => parse_duration(other)
            .map_err(|_| format!("invalid rate \"{text}\": unknown period `{other}`; {allowed}"))?,
    };
    if nanos == 0 {
        return Err(format!(
            "invalid rate \"{text}\": the period must be longer than zero"
        ));
    }
    Ok((count, nanos))
}

/// The closest candidate to `word` by edit distance, if it is close enough to
/// be a plausible typo; else one that `word` is a shortened or other form of
/// (`retry` for `retries`: the same first four letters or more, all but the
/// word's last one).
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let typo = candidates
        .iter()
        .map(|c| (levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    typo.or_else(|| {
        let stem: String = word
            .chars()
            .take(word.chars().count().saturating_sub(1))
            .collect();
        (stem.chars().count() >= 4)
            .then(|| {
                candidates
                    .iter()
                    .find(|c| c.starts_with(stem.as_str()))
                    .copied()
            })
            .flatten()
    })
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(2_000_000_000));
        assert_eq!(parse_duration("150ms"), Ok(150_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert!(parse_duration("2").unwrap_err().contains("missing unit"));
        assert!(
            parse_duration("2 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("lots").is_err());
        assert!(
            parse_size("1 furlong")
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100/s"), Ok((100, 1_000_000_000)));
        assert_eq!(parse_rate("20/m"), Ok((20, 60_000_000_000)));
        assert_eq!(parse_rate("5/10s"), Ok((5, 10_000_000_000)));
        assert!(parse_rate("lots").unwrap_err().contains("count per period"));
        assert!(parse_rate("0/s").unwrap_err().contains("above zero"));
        assert!(
            parse_rate("3/fortnight")
                .unwrap_err()
                .contains("unknown period")
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("tmeout", &["timeout", "trace"]),
            Some("timeout")
        );
        assert_eq!(did_you_mean("zzzzzz", &["timeout", "trace"]), None);
        assert_eq!(did_you_mean("retry", &["retries", "dlq"]), Some("retries"));
        assert_eq!(did_you_mean("rety", &["retries"]), None, "too short a stem");
    }
}
