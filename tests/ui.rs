//! The macros' compile-time contract: what `#[workflow]`, `#[state]` and
//! `#[derive(TypedContextData)]` reject (`tests/ui/*.rs`, each with the compiler's output in
//! a `.stderr` beside it) and what they accept and run (`tests/ui/pass/*.rs`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
