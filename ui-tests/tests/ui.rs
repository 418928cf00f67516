//! Compile-fail and pass cases for `#[patron::route]` and `#[patron::main]`.
//! Each `.stderr` was read and judged: the error sits on the user's token
//! and says how to fix it. Regenerate with `TRYBUILD=overwrite` and review
//! the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/pass/*.rs");
    t.compile_fail("tests/fail/*.rs");
}
