//! The encoded profile, decoded with prost from `profile.proto`'s messages
//! as declared here (the integration test decodes a live profile with
//! pprof-rs's own generated types).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use pprof::{Frames, Report, Symbol};
use prost::Message as _;

use super::encode;

#[derive(Clone, PartialEq, prost::Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    time_nanos: i64,
    #[prost(int64, tag = "10")]
    duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    period: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    label: Vec<Label>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Label {
    #[prost(int64, tag = "1")]
    key: i64,
    #[prost(int64, tag = "2")]
    str: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
    #[prost(int64, tag = "2")]
    line: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
    #[prost(int64, tag = "3")]
    system_name: i64,
    #[prost(int64, tag = "4")]
    filename: i64,
}

fn symbol(raw: &str, file: &str, line: u32) -> Symbol {
    Symbol {
        name: Some(raw.as_bytes().to_vec()),
        addr: None,
        lineno: Some(line),
        filename: Some(file.into()),
    }
}

fn frames(thread: &str, id: u64, frames: Vec<Vec<Symbol>>) -> Frames {
    Frames {
        frames,
        thread_name: thread.into(),
        thread_id: id,
        sample_timestamp: SystemTime::UNIX_EPOCH,
    }
}

/// Two stacks on two threads sharing their outermost frame; the first's
/// leaf frame has a function inlined into it.
fn report() -> Report {
    let main = || {
        vec![symbol(
            "_ZN4demo4main17h0123456789abcdefE",
            "src/main.rs",
            5,
        )]
    };
    let leaf = vec![
        symbol("_ZN4demo5inner17h0123456789abcdefE", "src/work.rs", 10),
        symbol("_ZN4demo5outer17h0123456789abcdefE", "src/work.rs", 20),
    ];
    let mut data = HashMap::new();
    data.insert(frames("worker-1", 1, vec![leaf, main()]), 3);
    data.insert(frames("worker-2", 2, vec![main()]), 2);
    // The timing's type is not exported: filled in place.
    let mut report = Report {
        data,
        timing: Default::default(),
    };
    report.timing.frequency = 100;
    report.timing.start_time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    report.timing.duration = Duration::from_millis(1500);
    report
}

#[test]
fn a_profile_decodes_with_its_tables_and_samples() {
    let profile = Profile::decode(encode(&report()).as_slice()).expect("a Profile message");
    let text = |i: i64| profile.string_table[usize::try_from(i).unwrap()].as_str();
    assert_eq!(profile.string_table[0], "", "the string table starts empty");

    let types: Vec<_> = profile
        .sample_type
        .iter()
        .map(|t| (text(t.r#type), text(t.unit)))
        .collect();
    assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
    let period = profile.period_type.as_ref().expect("a period type");
    assert_eq!(
        (text(period.r#type), text(period.unit)),
        ("cpu", "nanoseconds")
    );
    assert_eq!(profile.period, 10_000_000);
    assert_eq!(profile.time_nanos, 1_700_000_000_000_000_000);
    assert_eq!(profile.duration_nanos, 1_500_000_000);

    // Functions: demangled name, raw symbol, file; ids from 1.
    let function = |id: u64| {
        let f = &profile.function[usize::try_from(id - 1).unwrap()];
        assert_eq!(f.id, id);
        (text(f.name), text(f.system_name), text(f.filename))
    };
    assert_eq!(profile.function.len(), 3, "main is one function");
    let location = |id: u64| {
        let l = &profile.location[usize::try_from(id - 1).unwrap()];
        assert_eq!(l.id, id);
        l.line
            .iter()
            .map(|line| (function(line.function_id).0, line.line))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        profile.location.len(),
        2,
        "the shared frame is one location"
    );

    let mut samples: Vec<_> = profile
        .sample
        .iter()
        .map(|s| {
            assert_eq!(s.label.len(), 1);
            assert_eq!(text(s.label[0].key), "thread");
            (
                text(s.label[0].str),
                s.value.clone(),
                s.location_id
                    .iter()
                    .map(|id| location(*id))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    samples.sort();
    assert_eq!(
        samples,
        [
            (
                "worker-1",
                vec![3, 30_000_000],
                vec![
                    vec![("demo::inner", 10), ("demo::outer", 20)],
                    vec![("demo::main", 5)],
                ]
            ),
            (
                "worker-2",
                vec![2, 20_000_000],
                vec![vec![("demo::main", 5)]]
            ),
        ]
    );
    let main = profile
        .function
        .iter()
        .find(|f| text(f.name) == "demo::main")
        .expect("main");
    assert_eq!(
        (text(main.system_name), text(main.filename)),
        ("_ZN4demo4main17h0123456789abcdefE", "src/main.rs")
    );
}

#[test]
fn an_empty_profile_still_declares_its_types() {
    let mut report = report();
    report.data.clear();
    let profile = Profile::decode(encode(&report).as_slice()).expect("a Profile message");
    assert!(profile.sample.is_empty() && profile.location.is_empty());
    assert_eq!(profile.sample_type.len(), 2);
    assert_eq!(profile.string_table[0], "");
}
