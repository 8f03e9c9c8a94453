//! The ingest pipeline: decode messages with the feeds, batch the rows, store them in
//! ClickHouse (retrying, isolating refused rows), and acknowledge to the source only what is
//! stored. Sources plug in per transport (`kafka`, `mqtt` with its `spool`) and share the batching,
//! writer and metrics.

mod batch;
mod held;
pub mod kafka;
mod le;
mod metrics;
pub mod mqtt;
mod pipeline;
pub mod replay;
mod resend;
mod rows;
mod sequence;
pub mod spool;
mod writer;

pub use batch::{
    Batch, BatchBuilder, Limits, MessageRows, PartitionKey, ReplayFilter, Stored, reject_row_bytes,
};
pub use cityops_runtime::Backoff;
pub use metrics::{IngestMetrics, NO_FEED};
pub use pipeline::Summary;
pub use rows::reject_row;
pub use writer::{Writer, WriterSettings, Written};

/// What can stop an ingest from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config has no feed of this source.
    #[error("the config has no {0} feed: nothing to consume")]
    NoFeeds(&'static str),
    /// The feeds could not be compiled.
    #[error("feeds: {0}")]
    Feeds(String),
    /// The Kafka client could not be created or subscribed.
    #[error(transparent)]
    Kafka(#[from] cityops_kafka::Error),
    /// The MQTT sessions could not be set up.
    #[error("mqtt: {0}")]
    Mqtt(String),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
}
