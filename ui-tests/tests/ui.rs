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

#[test]
fn ui() {
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
