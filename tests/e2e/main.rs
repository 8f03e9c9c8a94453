//! End-to-end and repository-wide checks.

// Test helpers may unwrap: a failure there is a test failure with its message.
#![allow(clippy::unwrap_used)]

mod dashboards;
mod demo;
mod docs;
mod stack;
mod style;
