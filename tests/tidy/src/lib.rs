//! Kiseki's tidy check: house rules that hold for every Rust file of the repository,
//! enforced by an ordinary test so they do not depend on anyone's memory.
//!
//! The crate has no code of its own; the rules live in `tests/tidy.rs`, which walks the
//! repository (two folders above this crate) and fails with a list of `path:line` places
//! when a rule is broken. The rules: no placeholder or debugging macros and no fix-me
//! markers left behind; every crate root opens with a `//!` paragraph; every unsafe block
//! carries a `SAFETY:` comment and every unsafe function or impl a `# Safety` section; no
//! line longer than 120 characters; no function longer than 150 lines outside tests.
//! It runs on the build machine only and touches nothing but the files it reads.
#![forbid(unsafe_code)]
