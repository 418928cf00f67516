//! A CPU profile from the sampling profiler (pprof-rs) encoded as pprof's
//! protobuf `Profile` (`perftools.profiles`, the format `go tool pprof` and
//! Google's `pprof` read), written with the shared wire primitives instead
//! of pprof-rs's prost codec, whose code generator would be built with
//! every service.
//!
//! Each distinct stack frame is one `Location`; the functions inlined at
//! that frame are its `Line`s, innermost first and the caller last, as the
//! format says. Functions are told apart by symbol and file. Every
//! sample carries its thread as the `thread` label.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::UNIX_EPOCH;

use pprof::Report;

use super::protobuf::{LEN, message, tag, uint, varint};

/// Values numbered in the order they are first seen, from `first` on:
/// the profile's string, function and location tables.
struct Table<K> {
    items: Vec<K>,
    ids: HashMap<K, u64>,
    first: u64,
}

impl<K: Hash + Eq> Table<K> {
    fn new(first: u64) -> Self {
        Table {
            items: Vec::new(),
            ids: HashMap::new(),
            first,
        }
    }

    /// `key`'s number, and whether it was new.
    fn id<Q>(&mut self, key: &Q) -> (u64, bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(id) = self.ids.get(key) {
            return (*id, false);
        }
        let id = self.first + self.items.len() as u64;
        self.items.push(key.to_owned());
        self.ids.insert(key.to_owned(), id);
        (id, true)
    }
}

/// A `Location`'s lines: (function id, line number), innermost first.
type Lines = Vec<(u64, u64)>;

/// One sample: its locations, leaf first, its count and its thread's name.
struct Sample {
    locations: Vec<u64>,
    count: u64,
    thread: u64,
}

/// The encoded `Profile` of `report`, sampled at `report.timing.frequency`
/// times a second.
pub(crate) fn encode(report: &Report) -> Vec<u8> {
    // Index 0 is the empty string, as the format requires.
    let mut strings = Table::<String>::new(0);
    strings.id("");
    let mut text = |s: &str| strings.id(s).0;
    // By symbol and file; the demangled name, which follows from the
    // symbol, is made once per function.
    let mut functions = Table::<(u64, u64)>::new(1);
    let mut names = Vec::new();
    let mut locations = Table::<Lines>::new(1);
    let mut samples = Vec::with_capacity(report.data.len());
    for (frames, count) in &report.data {
        let mut stack = Vec::with_capacity(frames.frames.len());
        for frame in &frames.frames {
            let mut lines = Lines::with_capacity(frame.len());
            for symbol in frame {
                let key = (text(&symbol.sys_name()), text(&symbol.filename()));
                let (function, new) = functions.id(&key);
                if new {
                    names.push(text(&symbol.name()));
                }
                lines.push((function, u64::from(symbol.lineno())));
            }
            if !lines.is_empty() {
                stack.push(locations.id(lines.as_slice()).0);
            }
        }
        samples.push(Sample {
            locations: stack,
            count: u64::try_from(*count).unwrap_or(0),
            thread: text(&frames.thread_name_or_id()),
        });
    }
    let frequency = u64::try_from(report.timing.frequency.max(1)).unwrap_or(1);
    let period = 1_000_000_000 / frequency;
    let samples_type = (text("samples"), text("count"));
    let cpu_type = (text("cpu"), text("nanoseconds"));
    let thread_key = text("thread");

    let mut buf = Vec::new();
    for (kind, unit) in [samples_type, cpu_type] {
        message(&mut buf, 1, |buf| value_type(buf, kind, unit));
    }
    for sample in &samples {
        message(&mut buf, 2, |buf| {
            packed(buf, 1, &sample.locations);
            packed(buf, 2, &[sample.count, sample.count * period]);
            message(buf, 3, |buf| {
                uint(buf, 1, thread_key);
                uint(buf, 2, sample.thread);
            });
        });
    }
    for (i, lines) in locations.items.iter().enumerate() {
        message(&mut buf, 4, |buf| {
            uint(buf, 1, i as u64 + 1);
            for (function, line) in lines {
                message(buf, 4, |buf| {
                    uint(buf, 1, *function);
                    uint(buf, 2, *line);
                });
            }
        });
    }
    for (i, ((system_name, filename), name)) in functions.items.iter().zip(&names).enumerate() {
        message(&mut buf, 5, |buf| {
            uint(buf, 1, i as u64 + 1);
            uint(buf, 2, *name);
            uint(buf, 3, *system_name);
            uint(buf, 4, *filename);
        });
    }
    for s in &strings.items {
        // Repeated: the empty first entry is written too.
        tag(&mut buf, 6, LEN);
        varint(&mut buf, s.len() as u64);
        buf.extend_from_slice(s.as_bytes());
    }
    let started = report
        .timing
        .start_time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    uint(&mut buf, 9, u64::try_from(started.as_nanos()).unwrap_or(0));
    uint(
        &mut buf,
        10,
        u64::try_from(report.timing.duration.as_nanos()).unwrap_or(0),
    );
    message(&mut buf, 11, |buf| value_type(buf, cpu_type.0, cpu_type.1));
    uint(&mut buf, 12, period);
    buf
}

fn value_type(buf: &mut Vec<u8>, kind: u64, unit: u64) {
    uint(buf, 1, kind);
    uint(buf, 2, unit);
}

/// A packed repeated varint field.
fn packed(buf: &mut Vec<u8>, field: u32, values: &[u64]) {
    if !values.is_empty() {
        message(buf, field, |buf| {
            for v in values {
                varint(buf, *v);
            }
        });
    }
}

#[cfg(test)]
mod tests;
