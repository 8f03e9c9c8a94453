//! The test kit's own tests: each service starts, answers, restarts, survives a kill -9 by being
//! started again, stops leaving no process, and two instances run side by side.

// Test helpers may unwrap: a failure there is a test failure with its message.
#![allow(clippy::unwrap_used)]

mod services;
