//! trybuild cases for patron's macros live in `tests/`; this crate has no code.
