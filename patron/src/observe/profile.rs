//! A CPU profile from the sampling profiler (pprof-rs) encoded as pprof's
//! protobuf `Profile` (`perftools.profiles`, the format `go tool pprof` and
//! Google's `pprof` read), written with the shared wire primitives instead
//! of pprof-rs's prost codec, whose code generator would be built with
//! every service.
//!
//! Each distinct stack frame is one `Location`; the functions inlined at
//! that frame are its `Line`s, innermost first and the caller last, as the
//! format says. Functions are told apart by name, symbol and file. Every
//! sample carries its thread as the `thread` label.

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use pprof::Report;

use super::protobuf::{LEN, message, tag, uint, varint};

/// The string table: index 0 is the empty string, as the format requires.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, u64>,
}

impl Strings {
    fn new() -> Self {
        Strings {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }

    fn id(&mut self, s: &str) -> u64 {
        if let Some(id) = self.index.get(s) {
            return *id;
        }
        let id = self.table.len() as u64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), id);
        id
    }
}

/// A `Function`: its name, system name and file, as string ids.
type FunctionKey = (u64, u64, u64);
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
    let mut strings = Strings::new();
    let mut functions: Vec<FunctionKey> = Vec::new();
    let mut function_ids: HashMap<FunctionKey, u64> = HashMap::new();
    let mut locations: Vec<Lines> = Vec::new();
    let mut location_ids: HashMap<Lines, u64> = HashMap::new();
    let mut samples = Vec::with_capacity(report.data.len());
    for (frames, count) in &report.data {
        let mut stack = Vec::with_capacity(frames.frames.len());
        for frame in &frames.frames {
            let mut lines = Lines::with_capacity(frame.len());
            for symbol in frame {
                let key = (
                    strings.id(&symbol.name()),
                    strings.id(&symbol.sys_name()),
                    strings.id(&symbol.filename()),
                );
                let function = *function_ids.entry(key).or_insert_with(|| {
                    functions.push(key);
                    functions.len() as u64
                });
                lines.push((function, u64::from(symbol.lineno())));
            }
            if lines.is_empty() {
                continue;
            }
            let location = match location_ids.get(&lines) {
                Some(id) => *id,
                None => {
                    locations.push(lines.clone());
                    let id = locations.len() as u64;
                    location_ids.insert(lines, id);
                    id
                }
            };
            stack.push(location);
        }
        samples.push(Sample {
            locations: stack,
            count: u64::try_from(*count).unwrap_or(0),
            thread: strings.id(&frames.thread_name_or_id()),
        });
    }
    let frequency = u64::try_from(report.timing.frequency.max(1)).unwrap_or(1);
    let period = 1_000_000_000 / frequency;
    let samples_type = (strings.id("samples"), strings.id("count"));
    let cpu_type = (strings.id("cpu"), strings.id("nanoseconds"));
    let thread_key = strings.id("thread");

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
    for (i, lines) in locations.iter().enumerate() {
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
    for (i, (name, system_name, filename)) in functions.iter().enumerate() {
        message(&mut buf, 5, |buf| {
            uint(buf, 1, i as u64 + 1);
            uint(buf, 2, *name);
            uint(buf, 3, *system_name);
            uint(buf, 4, *filename);
        });
    }
    for s in &strings.table {
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
