//! The rules crate's integration tests: goldens (events in, transitions out), properties, and
//! the shipped Da Nang rules with their tests.

mod golden;
mod properties;
mod shipped;
mod support;
