//! Compile-fail and pass cases for `#[patron::route]`, `#[patron::consumer]`
//! and `#[patron::main]`. Each `.stderr` was read and judged: the error sits
//! on the user's token and says how to fix it. Regenerate with
//! `TRYBUILD=overwrite` and review the diff.
//!
//! Consumer and gRPC cases that need the feature's code run with
//! `--features amqp,sqs,kafka,grpc,openapi`;
//! without them, the cases for the "enable the feature" errors run, and
//! the route whose types have no JSON schema must compile.
//! `scripts/test` runs both.

/// The rustflags trybuild gives cargo when it builds the cases. It builds
/// the dependencies first without the last one, and cargo keys artifacts by
/// their flags, so every dependency of patron would compile twice, and each
/// pass case once more when it runs. `CARGO_ENCODED_RUSTFLAGS` outranks the
/// `--config` rustflags trybuild passes, so every step gets these flags, the
/// ones the cases' diagnostics were written under, and one build serves all.
const CASE_RUSTFLAGS: [&str; 6] = [
    "--cfg",
    "trybuild",
    "--verbose",
    "-A",
    "dead_code",
    "--diagnostic-width=140",
];

#[test]
fn ui() {
    // SAFETY: nothing else runs in this test process yet: trybuild reads
    // the variable only in the cargo processes it starts below.
    unsafe { std::env::set_var("CARGO_ENCODED_RUSTFLAGS", CASE_RUSTFLAGS.join("\x1f")) };
    let t = trybuild::TestCases::new();
    t.pass("tests/pass/*.rs");
    t.compile_fail("tests/fail/*.rs");
    if cfg!(feature = "amqp") {
        t.pass("tests/pass_amqp/*.rs");
        t.compile_fail("tests/fail_amqp/*.rs");
    } else {
        t.compile_fail("tests/fail_no_amqp/*.rs");
    }
    if cfg!(feature = "kafka") {
        t.pass("tests/pass_kafka/*.rs");
    } else {
        t.compile_fail("tests/fail_no_kafka/*.rs");
    }
    if cfg!(feature = "grpc") {
        t.pass("tests/pass_grpc/*.rs");
        t.compile_fail("tests/fail_grpc/*.rs");
    } else {
        t.compile_fail("tests/fail_no_grpc/*.rs");
    }
    if cfg!(feature = "openapi") {
        t.compile_fail("tests/fail_openapi/*.rs");
        if cfg!(feature = "amqp") {
            t.compile_fail("tests/fail_openapi_amqp/*.rs");
        }
    } else {
        t.pass("tests/pass_no_openapi/*.rs");
    }
    if cfg!(feature = "sqs") {
        t.pass("tests/pass_sqs/*.rs");
    } else {
        t.compile_fail("tests/fail_no_sqs/*.rs");
    }
}
