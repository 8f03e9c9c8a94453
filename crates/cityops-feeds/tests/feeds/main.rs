//! Integration tests of the feed decoders: golden files and property tests.

mod golden;
mod properties;
