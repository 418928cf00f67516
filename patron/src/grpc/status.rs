//! gRPC wire details the call handler needs: the `grpc-timeout` header,
//! status code names for labels and spans, and trailers-only error
//! responses.

use std::time::Duration;

use axum::body::Body;
use http::{HeaderMap, HeaderValue};
use tonic::Code;

/// The `grpc-timeout` request header.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";
/// The `grpc-status` header or trailer.
const GRPC_STATUS: &str = "grpc-status";

/// The client's deadline from `grpc-timeout` (gRPC over HTTP/2: at most 8
/// ASCII digits and a unit, `H M S m u n`). `Err` holds the malformed value.
pub(crate) fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, String> {
    let Some(value) = headers.get(GRPC_TIMEOUT) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| "(not ASCII)".to_string())?;
    let bad = || text.to_string();
    if text.len() < 2 || text.len() > 9 {
        return Err(bad());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let duration = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    };
    Ok(Some(duration))
}

pub(crate) use crate::observe::rpc::{code_in, code_name, is_server_error};

/// A trailers-only response ending the call with `code` and `message`.
pub(crate) fn response(code: Code, message: &str) -> http::Response<Body> {
    tonic::Status::new(code, message).into_http::<Body>()
}

/// The trailers that end a streamed response with `code` and `message`.
pub(crate) fn trailers(code: Code, message: &str) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(GRPC_STATUS, HeaderValue::from(code as i32));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        map.insert("grpc-message", value);
    }
    map
}

/// `grpc-message` is percent-encoded outside printable ASCII and `%`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(GRPC_TIMEOUT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(timeout(&HeaderMap::new()), Ok(None));
        assert_eq!(timeout(&with("2H")), Ok(Some(Duration::from_secs(7200))));
        assert_eq!(timeout(&with("3M")), Ok(Some(Duration::from_secs(180))));
        assert_eq!(timeout(&with("5S")), Ok(Some(Duration::from_secs(5))));
        assert_eq!(timeout(&with("250m")), Ok(Some(Duration::from_millis(250))));
        assert_eq!(timeout(&with("7u")), Ok(Some(Duration::from_micros(7))));
        assert_eq!(
            timeout(&with("99999999n")),
            Ok(Some(Duration::from_nanos(99_999_999)))
        );
    }

    #[test]
    fn malformed_grpc_timeouts_are_errors() {
        for bad in ["", "S", "5", "5s", "-5S", "123456789S", "5 S", "1.5S"] {
            assert!(timeout(&with(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trailers_carry_the_code_and_an_encoded_message() {
        let t = trailers(Code::Unavailable, "shutting down: 100%");
        assert_eq!(t[GRPC_STATUS], "14");
        assert_eq!(t["grpc-message"], "shutting down: 100%25");
        assert_eq!(code_in(&t), Some(Code::Unavailable));
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
    }
}
