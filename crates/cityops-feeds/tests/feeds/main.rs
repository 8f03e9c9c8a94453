//! Integration tests of the feed decoders: golden files and property tests.

// Test helpers may unwrap: a failure there is a test failure with its message.
#![allow(clippy::unwrap_used)]

mod golden;
mod properties;
