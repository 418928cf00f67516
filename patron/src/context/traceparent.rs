//! The one W3C Trace Context `traceparent` parser: the sampler, the
//! propagator and the pass-through of incoming headers all ask it, so a
//! header one of them rejects is never taken as a parent by another.
//!
//! `version-traceid-parentid-flags`: two, 32, 16 and two lowercase or
//! uppercase hex digits; version `ff` and all-zero ids are invalid; version
//! `00` has exactly these four fields, a later version may carry more after
//! a `-` (W3C Trace Context §3.2).

/// A valid `traceparent`'s sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent {
    /// Whether the caller sampled the trace (flag bit 0).
    pub sampled: bool,
}

/// Parses `value`; `None` when it is not a valid `traceparent`.
pub(crate) fn parse(value: &[u8]) -> Option<TraceParent> {
    let text = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    let b = text.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let hex = |s: &[u8]| s.iter().all(u8::is_ascii_hexdigit);
    let (version, trace, span, flags) = (&b[..2], &b[3..35], &b[36..52], &b[53..55]);
    if !(hex(version) && hex(trace) && hex(span) && hex(flags)) {
        return None;
    }
    if version.eq_ignore_ascii_case(b"ff") {
        return None;
    }
    // Version 00 ends after the flags; later versions may add `-…`.
    if b.len() > 55 && (version == b"00" || b[55] != b'-') {
        return None;
    }
    if trace.iter().all(|&c| c == b'0') || span.iter().all(|&c| c == b'0') {
        return None;
    }
    let flags = u8::from_str_radix(std::str::from_utf8(flags).ok()?, 16).ok()?;
    Some(TraceParent {
        sampled: flags & 1 == 1,
    })
}

/// Whether `value` is a valid `traceparent`.
pub(crate) fn is_valid(value: &[u8]) -> bool {
    parse(value).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn accepts_the_spec_example_and_reads_the_flag() {
        assert_eq!(parse(OK.as_bytes()), Some(TraceParent { sampled: true }));
        let unsampled = OK.replace("-01", "-00");
        assert_eq!(
            parse(unsampled.as_bytes()),
            Some(TraceParent { sampled: false })
        );
        let future = format!("cc{}-extra", &OK[2..]);
        assert!(
            is_valid(future.as_bytes()),
            "a later version may add fields"
        );
    }

    #[test]
    fn rejects_wrong_lengths_and_values() {
        for bad in [
            // trace id one digit short, span id one digit long
            "00-0af7651916cd43dd8448eb211c8031c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033311-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "garbage",
            "",
        ] {
            assert!(!is_valid(bad.as_bytes()), "{bad:?}");
        }
        assert!(!is_valid(b"00-\xff"), "not UTF-8");
    }
}
