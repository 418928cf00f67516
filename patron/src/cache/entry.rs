//! A stored response: its RFC 9111 policy (request and response heads,
//! when it was received) and its body, and the encoding the Redis store
//! keeps it in.

use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_cache_semantics::CachePolicy;

/// The most variants (by `Vary`) kept for one URL.
pub(crate) const MAX_VARIANTS: usize = 8;

/// One cached response.
#[derive(Clone)]
pub(crate) struct Entry {
    pub policy: CachePolicy,
    pub body: Bytes,
}

/// The responses cached for one URL, one per `Vary` variant.
#[derive(Clone, Default)]
pub(crate) struct Variants(pub Vec<Entry>);

impl Variants {
    /// Bytes held, for the memory store's bound.
    pub(crate) fn weight(&self) -> u32 {
        let bytes: usize = self.0.iter().map(|e| e.body.len() + 1024).sum();
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }

    /// How long to keep them: the longest time to live among them, plus a
    /// grace for `max-stale` requests.
    pub(crate) fn keep_for(&self, now: SystemTime, grace: Duration) -> Duration {
        self.0
            .iter()
            .map(|e| e.policy.time_to_live(now))
            .max()
            .unwrap_or_default()
            + grace
    }

    /// Adds `entry`, replacing a variant for the same request (by `Vary`)
    /// and dropping the oldest past [`MAX_VARIANTS`].
    pub(crate) fn insert(&mut self, entry: Entry, same: impl Fn(&Entry) -> bool) {
        self.0.retain(|e| !same(e));
        self.0.push(entry);
        if self.0.len() > MAX_VARIANTS {
            self.0.remove(0);
        }
    }

    /// `[count u32] ([policy len u32][policy JSON][body len u32][body])*`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        let mut out = BytesMut::new();
        out.put_u32(self.0.len() as u32);
        for e in &self.0 {
            let policy = serde_json::to_vec(&e.policy)
                .map_err(|err| format!("cannot encode a cache policy: {err}"))?;
            out.put_u32(policy.len() as u32);
            out.put_slice(&policy);
            out.put_u32(e.body.len() as u32);
            out.put_slice(&e.body);
        }
        Ok(out.to_vec())
    }

    /// The inverse of [`encode`](Self::encode); `Err` for bytes it did not write.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn decode(bytes: &[u8]) -> Result<Variants, String> {
        let mut buf = bytes;
        let take = |buf: &mut &[u8], what: &str| -> Result<Bytes, String> {
            if buf.remaining() < 4 {
                return Err(format!("truncated cache entry: no {what} length"));
            }
            let len = buf.get_u32() as usize;
            if buf.remaining() < len {
                return Err(format!(
                    "truncated cache entry: {what} shorter than {len} bytes"
                ));
            }
            let out = Bytes::copy_from_slice(&buf[..len]);
            buf.advance(len);
            Ok(out)
        };
        if buf.remaining() < 4 {
            return Err("truncated cache entry: no count".to_string());
        }
        let count = buf.get_u32() as usize;
        let mut entries = Vec::with_capacity(count.min(MAX_VARIANTS));
        for _ in 0..count {
            let policy = take(&mut buf, "policy")?;
            let policy: CachePolicy = serde_json::from_slice(&policy)
                .map_err(|e| format!("unreadable cache policy: {e}"))?;
            let body = take(&mut buf, "body")?;
            entries.push(Entry { policy, body });
        }
        Ok(Variants(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &'static str) -> Entry {
        let req = http::Request::get("http://x/a").body(()).unwrap();
        let res = http::Response::builder()
            .header("cache-control", "max-age=60")
            .body(())
            .unwrap();
        Entry {
            policy: CachePolicy::new(&req, &res),
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    #[test]
    fn variants_survive_encoding_and_bad_bytes_are_refused() {
        let v = Variants(vec![entry("one"), entry("two")]);
        let back = Variants::decode(&v.encode().unwrap()).unwrap();
        assert_eq!(back.0.len(), 2);
        assert_eq!(back.0[1].body, "two");
        let ttl = back.0[0].policy.time_to_live(SystemTime::now());
        assert!(
            ttl > Duration::from_secs(50) && ttl <= Duration::from_secs(60),
            "{ttl:?}"
        );
        let encoded = v.encode().unwrap();
        assert!(Variants::decode(&encoded[..encoded.len() - 1]).is_err());
        assert!(Variants::decode(b"\x00\x00\x00\x01\x00\x00\x00\x02{}").is_err());
    }

    #[test]
    fn variants_are_bounded_and_replaced() {
        let mut v = Variants::default();
        for _ in 0..(MAX_VARIANTS + 3) {
            v.insert(entry("x"), |_| false);
        }
        assert_eq!(v.0.len(), MAX_VARIANTS);
        v.insert(entry("y"), |_| true);
        assert_eq!(v.0.len(), 1);
    }
}

#[cfg(test)]
mod roundtrip {
    use super::*;
    use http_cache_semantics::BeforeRequest;

    #[test]
    fn a_decoded_policy_still_answers_its_request() {
        let req = http::Request::get("/counted/x?vary=true")
            .header("host", "h")
            .header("accept-language", "en")
            .body(())
            .unwrap();
        let res = http::Response::builder()
            .header("cache-control", "max-age=60")
            .header("vary", "accept-language")
            .body(())
            .unwrap();
        let now = SystemTime::now();
        let policy = CachePolicy::new(&req, &res);
        assert!(matches!(
            policy.before_request(&req, now),
            BeforeRequest::Fresh(_)
        ));
        let v = Variants(vec![Entry {
            policy,
            body: Bytes::new(),
        }]);
        let back = Variants::decode(&v.encode().unwrap()).unwrap();
        let fresh = back.0[0].policy.before_request(&req, now);
        assert!(matches!(fresh, BeforeRequest::Fresh(_)), "decoded policy");
    }
}
