//! Compiled feeds: config turned into something that matches topics and decodes payloads.

use crate::draft::{DecodeCtx, Draft, Labels};
use crate::reject::{Failure, Reject, RejectReason};
use crate::{json_mapping, ngsi_ld, senml};
use cityops_config::{DecoderConfig, FeedConfig, LabelsConfig, SourceKind, TopicPattern};
use cityops_event::{Domain, Event, EventId, SourceCoordinates, Timestamp};

/// One received message, as a source hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The transport it came from.
    pub source: SourceKind,
    /// MQTT topic or Kafka topic name.
    pub topic: &'a str,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// When cityops received it (becomes `ingested_at`, and `ts` when the payload has none).
    pub received_at: Timestamp,
    /// Kafka partition/offset or spool sequence, when the source has them.
    pub coordinates: Option<&'a SourceCoordinates>,
}

/// The result of decoding one message: events, or exactly one reject.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// At least one event.
    Events(Vec<Event>),
    /// Why the payload could not be decoded, with its raw bytes.
    Reject(Reject),
}

/// A validated feed, ready to decode.
#[derive(Debug, Clone)]
pub struct Feed {
    config: FeedConfig,
    pattern: Option<TopicPattern>,
    static_labels: Labels,
}

impl Feed {
    /// Compiles a feed. The config must have passed validation; an unparsable MQTT pattern is
    /// reported here too rather than trusted.
    pub fn new(config: FeedConfig) -> Result<Feed, String> {
        let pattern = match config.source {
            SourceKind::Mqtt => Some(
                TopicPattern::parse(&config.topic)
                    .map_err(|e| format!("feed {}: topic {:?}: {e}", config.name, config.topic))?,
            ),
            SourceKind::Kafka => None,
        };
        let static_labels = Labels {
            entity_id: config.entity_id.clone(),
            entity_type: config.entity_type.clone(),
            district: config.district.clone(),
            ward: config.ward.clone(),
            attrs: config.attrs.clone(),
        };
        Ok(Feed {
            config,
            pattern,
            static_labels,
        })
    }

    /// The feed's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The feed's config.
    pub fn config(&self) -> &FeedConfig {
        &self.config
    }

    /// The MQTT subscription filter (captures as `+`), or the Kafka topic.
    pub fn subscription(&self) -> String {
        match &self.pattern {
            Some(p) => p.mqtt_filter(),
            None => self.config.topic.clone(),
        }
    }

    /// Whether this feed reads `topic` from `source` (without building its labels).
    fn reads(&self, source: SourceKind, topic: &str) -> bool {
        source == self.config.source
            && match &self.pattern {
                None => topic == self.config.topic,
                Some(pattern) => pattern.matches(topic).is_some(),
            }
    }

    /// The labels this feed gives a message on `topic`, or `None` if it does not read it.
    fn labels_for(&self, source: SourceKind, topic: &str) -> Option<Labels> {
        if source != self.config.source {
            return None;
        }
        match &self.pattern {
            None => (topic == self.config.topic).then(|| self.static_labels.clone()),
            Some(pattern) => {
                let captures = pattern.matches(topic)?;
                let mut labels = self.static_labels.clone();
                for (name, value) in captures {
                    let value = value.to_owned();
                    match name {
                        "entity_id" => labels.entity_id = Some(value),
                        "entity_type" => labels.entity_type = Some(value),
                        "district" => labels.district = Some(value),
                        "ward" => labels.ward = Some(value),
                        other => {
                            labels.attrs.insert(other.to_owned(), value);
                        }
                    }
                }
                Some(labels)
            }
        }
    }

    fn decode_with_labels(
        &self,
        msg: &Message<'_>,
        labels: &Labels,
        names: &LabelsConfig,
    ) -> Result<Vec<Event>, Failure> {
        let cfg = &self.config;
        if msg.payload.len() > cfg.max_payload_bytes {
            return Err(Failure::new(
                RejectReason::TooLarge,
                format!(
                    "payload is {} bytes, the feed allows {} (max_payload_bytes)",
                    msg.payload.len(),
                    cfg.max_payload_bytes
                ),
            ));
        }
        let ctx = DecodeCtx {
            received_at: msg.received_at,
            labels,
            max_events: cfg.max_events_per_payload,
        };
        let drafts = match &cfg.decoder {
            DecoderConfig::Json(mapping) => json_mapping::decode(mapping, msg.payload, &ctx)?,
            DecoderConfig::Senml(options) => senml::decode(options, msg.payload, &ctx)?,
            DecoderConfig::NgsiLd(options) => ngsi_ld::decode(options, msg.payload, &ctx)?,
        };
        if drafts.is_empty() {
            return Err(Failure::new(
                RejectReason::Empty,
                "the payload holds no measurement",
            ));
        }
        if drafts.len() > cfg.max_events_per_payload {
            return Err(too_many(cfg.max_events_per_payload));
        }
        self.finish(drafts, msg, labels, names)
    }

    /// Applies labels (payload, then topic, then static), checks event times, derives ids.
    fn finish(
        &self,
        drafts: Vec<Draft>,
        msg: &Message<'_>,
        labels: &Labels,
        names: &LabelsConfig,
    ) -> Result<Vec<Event>, Failure> {
        let cfg = &self.config;
        let earliest = msg
            .received_at
            .as_millis()
            .saturating_sub(cfg.max_past_ms.min(i64::MAX as u64) as i64);
        let latest = msg
            .received_at
            .as_millis()
            .saturating_add(cfg.max_future_ms.min(i64::MAX as u64) as i64);
        let mut events = Vec::with_capacity(drafts.len());
        for (index, d) in drafts.into_iter().enumerate() {
            let ts = d.ts.unwrap_or(msg.received_at);
            if ts.as_millis() < earliest || ts.as_millis() > latest {
                return Err(Failure::new(
                    RejectReason::TsOutOfRange,
                    format!(
                        "event {index} ({}) has time {ts}, outside the accepted window {} .. {} around arrival {} (max_past_ms, max_future_ms)",
                        d.metric,
                        Timestamp::from_millis(earliest.max(0)).unwrap_or(Timestamp::MIN),
                        Timestamp::from_millis(latest).unwrap_or(Timestamp::MAX),
                        msg.received_at
                    ),
                ));
            }
            let Some(entity_id) = d.entity_id.or_else(|| labels.entity_id.clone()) else {
                return Err(Failure::new(
                    RejectReason::MissingField,
                    format!(
                        "event {index} ({}): no entity id in the payload, the topic or the feed config",
                        d.metric
                    ),
                ));
            };
            let mut attrs = labels.attrs.clone();
            attrs.extend(d.attrs);
            let event_id = EventId {
                feed: &cfg.name,
                coordinates: msg.coordinates,
                entity_id: &entity_id,
                metric: &d.metric,
                ts_millis: ts.as_millis(),
                index: u32::try_from(index).unwrap_or(u32::MAX),
            }
            .derive();
            events.push(Event {
                event_id,
                ts,
                ingested_at: msg.received_at,
                feed: cfg.name.clone(),
                domain: cfg.domain,
                entity_id,
                entity_type: d
                    .entity_type
                    .or_else(|| labels.entity_type.clone())
                    .unwrap_or_default(),
                metric: d.metric,
                value: d.value,
                text: d.text,
                unit: d.unit,
                district: canonical(
                    &names.district,
                    d.district.or_else(|| labels.district.clone()),
                ),
                ward: canonical(&names.ward, d.ward.or_else(|| labels.ward.clone())),
                lat: d.lat,
                lon: d.lon,
                attrs,
                quality: d.quality,
            });
        }
        Ok(events)
    }

    /// The feed's domain.
    pub fn domain(&self) -> Domain {
        self.config.domain
    }
}

/// The canonical spelling of a label value (`[labels]` in config), or the value as it is.
fn canonical(names: &std::collections::BTreeMap<String, String>, value: Option<String>) -> String {
    let value = value.unwrap_or_default();
    names.get(&value).cloned().unwrap_or(value)
}

pub(crate) fn too_many(max: usize) -> Failure {
    Failure::new(
        RejectReason::TooManyEvents,
        format!("the payload yields more than {max} events (max_events_per_payload)"),
    )
}

/// All feeds of a config; finds the feed for a message and decodes it.
#[derive(Debug, Clone)]
pub struct FeedSet {
    feeds: Vec<Feed>,
    max_reject_raw_bytes: usize,
    names: LabelsConfig,
}

impl FeedSet {
    /// Compiles validated feed configs. `max_reject_raw_bytes` bounds what a reject keeps.
    pub fn new(configs: &[FeedConfig], max_reject_raw_bytes: usize) -> Result<FeedSet, String> {
        let feeds = configs
            .iter()
            .cloned()
            .map(Feed::new)
            .collect::<Result<_, _>>()?;
        Ok(FeedSet {
            feeds,
            max_reject_raw_bytes,
            names: LabelsConfig::default(),
        })
    }

    /// Uses the canonical district and ward spellings of `[labels]`.
    pub fn with_label_names(mut self, names: &LabelsConfig) -> Self {
        self.names = names.clone();
        self
    }

    /// The feeds, in config order.
    pub fn feeds(&self) -> &[Feed] {
        &self.feeds
    }

    /// The first feed (in config order) that reads `topic` from `source`.
    pub fn find(&self, source: SourceKind, topic: &str) -> Option<&Feed> {
        self.feeds.iter().find(|f| f.reads(source, topic))
    }

    /// The position (in config order) of the first feed that reads `topic` from `source`.
    pub fn position(&self, source: SourceKind, topic: &str) -> Option<usize> {
        self.feeds.iter().position(|f| f.reads(source, topic))
    }

    /// Decodes a message with the first feed that reads its topic. Never panics; every failure
    /// is a [`Reject`] carrying the raw payload.
    pub fn decode(&self, msg: &Message<'_>) -> Outcome {
        let found = self.feeds.iter().find_map(|f| {
            f.labels_for(msg.source, msg.topic)
                .map(|labels| (f, labels))
        });
        let Some((feed, labels)) = found else {
            let failure = Failure::new(
                RejectReason::NoMatchingFeed,
                format!(
                    "no feed reads {} topic {:?}",
                    msg.source.as_str(),
                    msg.topic
                ),
            );
            return Outcome::Reject(Reject::new(
                failure,
                None,
                msg.payload,
                self.max_reject_raw_bytes,
            ));
        };
        match feed.decode_with_labels(msg, &labels, &self.names) {
            Ok(events) => Outcome::Events(events),
            Err(failure) => Outcome::Reject(Reject::new(
                failure,
                Some(feed.name()),
                msg.payload,
                self.max_reject_raw_bytes,
            )),
        }
    }
}

impl Outcome {
    /// Renders the outcome as `cityops decode` prints it: one JSON event per line, or one line
    /// `{"reject": {"reason", "message", "feed", "raw_bytes", "raw_truncated"}}`.
    pub fn to_json_lines(&self) -> String {
        #[derive(serde::Serialize)]
        struct RejectLine<'a> {
            reject: RejectBody<'a>,
        }
        #[derive(serde::Serialize)]
        struct RejectBody<'a> {
            reason: RejectReason,
            message: &'a str,
            feed: Option<&'a str>,
            raw_bytes: usize,
            raw_truncated: bool,
        }
        let mut out = String::new();
        let mut push = |line: Result<String, serde_json::Error>| {
            // Serializing these plain structs cannot fail; keep a line either way.
            out.push_str(&line.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
            out.push('\n');
        };
        match self {
            Outcome::Events(events) => events.iter().for_each(|e| push(serde_json::to_string(e))),
            Outcome::Reject(r) => push(serde_json::to_string(&RejectLine {
                reject: RejectBody {
                    reason: r.reason,
                    message: &r.message,
                    feed: r.feed.as_deref(),
                    raw_bytes: r.raw_len,
                    raw_truncated: r.raw_truncated(),
                },
            })),
        }
        out
    }
}
