//! Protobuf's wire format, written by hand: the few primitives the OTLP
//! trace encoder and the CPU profile encoder share. Fields are written in
//! tag order and proto3 defaults left out, as prost does.

/// Wire type of varint fields.
pub(crate) const VARINT: u32 = 0;
/// Wire type of 64-bit fixed-width fields.
pub(crate) const FIXED64: u32 = 1;
/// Wire type of length-delimited fields (strings, bytes, messages, packed
/// repeated scalars).
pub(crate) const LEN: u32 = 2;
/// Wire type of 32-bit fixed-width fields.
pub(crate) const FIXED32: u32 = 5;

/// A field's key: its number and wire type.
#[inline]
pub(crate) fn tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    varint(buf, u64::from((field << 3) | wire));
}

/// `v` as a base-128 varint.
#[inline]
pub(crate) fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A varint field (`uint64`, or `int64` as two's complement); proto3
/// leaves zero out.
#[inline]
pub(crate) fn uint(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, VARINT);
        varint(buf, v);
    }
}

/// A `fixed64` field; zero is left out.
#[inline]
pub(crate) fn fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// A `fixed32` field; zero is left out.
#[inline]
pub(crate) fn fixed32(buf: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        tag(buf, field, FIXED32);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// A `bytes` field; empty is left out.
#[inline]
pub(crate) fn bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    if !v.is_empty() {
        tag(buf, field, LEN);
        varint(buf, v.len() as u64);
        buf.extend_from_slice(v);
    }
}

/// A `string` field; empty is left out.
#[inline]
pub(crate) fn string(buf: &mut Vec<u8>, field: u32, v: &str) {
    bytes(buf, field, v.as_bytes());
}

/// A length-delimited sub-message written by `body`. One byte is reserved
/// for the length (most sub-messages are shorter than 128 bytes); a longer
/// one moves its body up by the extra length bytes.
pub(crate) fn message(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    tag(buf, field, LEN);
    let at = buf.len();
    buf.push(0);
    body(buf);
    let len = buf.len() - at - 1;
    if len < 0x80 {
        buf[at] = len as u8;
        return;
    }
    let mut prefix = [0u8; 10];
    let mut n = 0;
    let mut v = len;
    while v >= 0x80 {
        prefix[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    prefix[n] = v as u8;
    n += 1;
    buf.resize(buf.len() + n - 1, 0);
    buf.copy_within(at + 1..at + 1 + len, at + n);
    buf[at..at + n].copy_from_slice(&prefix[..n]);
}
