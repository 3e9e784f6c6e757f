//! The macros' compile-time contract: what `#[workflow]`, `#[state]` and
//! `#[derive(TypedContextData)]` reject (`fail/*.rs`, each with the compiler's output in a
//! `.stderr` beside it). What they accept is in `pass/`, built and run as ordinary tests, so
//! this project needs no code generation (trybuild only checks when no case is meant to pass).
//!
//! After a deliberate change to a message: `TRYBUILD=overwrite cargo test -p agent-ui-tests
//! --test ui`, then review the `.stderr` diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("fail/*.rs");
}
