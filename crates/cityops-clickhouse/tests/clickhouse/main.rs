//! Schema tests: migrations on the real ClickHouse 18.16 server and on the 26.9 engine (chDB),
//! row types against `system.columns`, users, retention, the example queries of
//! docs/schema.md, and the alert analytics of docs/engineers.md.

// Test helpers may unwrap: a failure there is a test failure with its message.
#![allow(clippy::unwrap_used)]

mod analytics;
mod cluster;
mod examples;
mod https;
mod modern;
mod schema;
