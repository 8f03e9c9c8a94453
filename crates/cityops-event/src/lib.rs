//! The normalized city event ("long" format: one measured quantity of one entity at one time).
//!
//! Every feed, whatever its wire format, is decoded into [`Event`]s. Ingest writes them to
//! ClickHouse, the alerter evaluates rules on them, and engineers query them. This crate is the
//! leaf of the workspace: it does no I/O, reads no clock and knows nothing of feeds or services.

mod domain;
mod event;
mod id;
mod timestamp;

pub use domain::{Domain, Quality};
pub use event::{Attrs, Event};
pub use id::{EventId, SourceCoordinates};
pub use timestamp::{Timestamp, TimestampError};
