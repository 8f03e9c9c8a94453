//! What a decoder extracts from a payload before feed labels, ids and checks are applied.

use cityops_event::{Attrs, Quality, Timestamp};

/// One event as a decoder sees it: payload facts only. `None` means "the payload did not say",
/// so the feed's topic captures and static labels can fill it in.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Draft {
    pub entity_id: Option<String>,
    pub entity_type: Option<String>,
    pub metric: String,
    pub value: Option<f64>,
    pub text: Option<String>,
    pub unit: String,
    pub district: Option<String>,
    pub ward: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub attrs: Attrs,
    pub ts: Option<Timestamp>,
    pub quality: Quality,
}

/// Labels known before the payload is read: the feed's static labels overlaid with the topic's
/// captures. Decoders may consult them (SenML does, to tell a device name from a metric name).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Labels {
    pub entity_id: Option<String>,
    pub entity_type: Option<String>,
    pub district: Option<String>,
    pub ward: Option<String>,
    pub attrs: Attrs,
}

/// What every decoder gets besides the payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DecodeCtx<'a> {
    /// Arrival time: the default event time and the "now" of relative times.
    pub received_at: Timestamp,
    /// Labels from config and topic.
    pub labels: &'a Labels,
    /// Upper bound on drafts; decoders stop early past it.
    pub max_events: usize,
}
