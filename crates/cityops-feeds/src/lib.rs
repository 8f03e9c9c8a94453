//! Feed decoders: turn one received payload into normalized [`Event`]s or one [`Reject`].
//!
//! Pure by design: no I/O, no clock (the arrival time is passed in), no global state, and no
//! panics on any input. Sources (Kafka, MQTT) and the `cityops decode` command call
//! [`FeedSet::decode`]; the alerter reuses the same code so that a rule sees exactly what
//! ClickHouse stores.
//!
//! [`Event`]: cityops_event::Event

mod borrowed;
mod draft;
mod feed;
mod json_mapping;
mod jsonx;
mod ngsi_ld;
mod reject;
mod senml;
mod units;

pub use feed::{Feed, FeedSet, Message, Outcome};
pub use reject::{Failure, Reject, RejectReason};
