//! Feed definitions: which topic a feed reads, which decoder turns payloads into events, and the
//! labels its events carry.

use crate::problem::{Problems, join_path};
use crate::topic::{TopicPattern, is_label_name};
use cityops_event::Domain;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// Which transport a feed reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// An MQTT topic pattern.
    Mqtt,
    /// A Kafka topic.
    Kafka,
}

impl SourceKind {
    /// The lowercase name used in config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Mqtt => "mqtt",
            SourceKind::Kafka => "kafka",
        }
    }
}

/// One feed: a topic, a decoder, and the labels its events get.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Unique name (`[a-z][a-z0-9_]*`, at most 64 bytes). Stored in every event and reject and
    /// used as the `feed` metric label.
    pub name: String,
    /// Transport: `mqtt` or `kafka`.
    pub source: SourceKind,
    /// MQTT: a topic pattern, levels separated by `/`, `+` for any one level, `#` (last) for
    /// the rest, `{label}` for one level captured as a label. Kafka: the exact topic name.
    pub topic: String,
    /// City domain of every event of this feed.
    pub domain: Domain,
    /// Entity type given to events whose payload does not say (e.g. `AirQualityObserved`).
    #[serde(default)]
    pub entity_type: Option<String>,
    /// Entity id given to events whose payload and topic do not say (a single-device feed).
    #[serde(default)]
    pub entity_id: Option<String>,
    /// District given to events whose payload and topic do not say.
    #[serde(default)]
    pub district: Option<String>,
    /// Ward given to events whose payload and topic do not say.
    #[serde(default)]
    pub ward: Option<String>,
    /// Static string attributes added to every event (payload and topic values win).
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    /// Payloads larger than this are rejected as `too_large` without being parsed.
    #[serde(default = "defaults::max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Payloads that would yield more events than this are rejected as `too_many_events`.
    #[serde(default = "defaults::max_events_per_payload")]
    pub max_events_per_payload: usize,
    /// Events older than this, relative to arrival, reject the payload as `ts_out_of_range`.
    #[serde(default = "defaults::max_past_ms")]
    pub max_past_ms: u64,
    /// Events further in the future than this, relative to arrival, reject the payload as
    /// `ts_out_of_range` (a device clock set to local time instead of UTC shows up here).
    #[serde(default = "defaults::max_future_ms")]
    pub max_future_ms: u64,
    /// MQTT stall watchdog: if this feed receives nothing for this long while the
    /// connections look healthy, the ingest reconnects and subscribes again (a broker that
    /// lost the subscription, a proxy that stopped forwarding). Set it well above the feed's
    /// longest normal silence; unset, the feed is not watched.
    #[serde(default)]
    pub stall_timeout_ms: Option<u64>,
    /// Attribute (from `attrs` of the decoder) that carries a per-device message sequence
    /// number: the MQTT ingest counts and logs numbers that never arrive (messages lost
    /// before the broker, or dropped by it).
    #[serde(default)]
    pub sequence_attr: Option<String>,
    /// How payloads become events.
    pub decoder: DecoderConfig,
}

/// Default values, written once.
pub(crate) mod defaults {
    pub fn max_payload_bytes() -> usize {
        1024 * 1024
    }
    pub fn max_events_per_payload() -> usize {
        10_000
    }
    pub fn max_past_ms() -> u64 {
        30 * 24 * 3600 * 1000
    }
    pub fn max_future_ms() -> u64 {
        3600 * 1000
    }
    pub fn scale() -> f64 {
        1.0
    }
}

/// The decoder of a feed, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DecoderConfig {
    /// Arbitrary JSON, mapped field by field with JSON Pointers.
    Json(JsonMappingConfig),
    /// SenML (RFC 8428), JSON or CBOR.
    Senml(SenmlConfig),
    /// NGSI-LD entities and notifications (ETSI GS CIM 009), normalized or keyValues.
    NgsiLd(NgsiLdConfig),
}

impl DecoderConfig {
    /// The `type` name of this decoder.
    pub fn kind(&self) -> &'static str {
        match self {
            DecoderConfig::Json(_) => "json",
            DecoderConfig::Senml(_) => "senml",
            DecoderConfig::NgsiLd(_) => "ngsi_ld",
        }
    }
}

/// Maps JSON fields to events. Pointers (RFC 6901, e.g. `/data/pm25`) are resolved against the
/// record; a pointer written `^/route` is resolved against the whole payload instead.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonMappingConfig {
    /// Pointer to an array whose elements are decoded as separate records (e.g. `/vehicles`).
    /// Unset: the whole payload is one record.
    #[serde(default)]
    pub records: Option<String>,
    /// Pointer to the entity id (string or integer).
    #[serde(default)]
    pub entity_id: Option<String>,
    /// Pointer to the entity type.
    #[serde(default)]
    pub entity_type: Option<String>,
    /// Pointer to the district.
    #[serde(default)]
    pub district: Option<String>,
    /// Pointer to the ward.
    #[serde(default)]
    pub ward: Option<String>,
    /// Pointer to the latitude (number or numeric string, degrees).
    #[serde(default)]
    pub lat: Option<String>,
    /// Pointer to the longitude (number or numeric string, degrees).
    #[serde(default)]
    pub lon: Option<String>,
    /// Pointer to the event time. Unset: the arrival time.
    #[serde(default)]
    pub ts: Option<String>,
    /// How to read the event time.
    #[serde(default)]
    pub ts_format: TsFormat,
    /// Derives the quality flag from a status field.
    #[serde(default)]
    pub quality: Option<QualityMapping>,
    /// Extra attributes: attribute name to pointer. Missing ones are left out.
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    /// The measured quantities; each present field yields one event.
    #[serde(default)]
    pub fields: Vec<FieldMapping>,
}

/// How a timestamp field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TsFormat {
    /// RFC 3339 strings; numbers above 10^11 as epoch milliseconds, else epoch seconds.
    #[default]
    Auto,
    /// RFC 3339 / ISO 8601 with an offset, e.g. `2026-11-26T09:00:00+07:00`.
    Rfc3339,
    /// Seconds since the epoch (fractions allowed), number or numeric string.
    EpochS,
    /// Milliseconds since the epoch, number or numeric string.
    EpochMs,
}

/// The type of a mapped field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// A number (or a numeric string); goes to `value`.
    #[default]
    Number,
    /// A string (numbers and booleans are rendered as text); goes to `text`.
    String,
    /// `true`/`false`; goes to `value` as 1/0.
    Bool,
}

/// One mapped field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// Metric name of the events this field yields (`[A-Za-z0-9_.:-]`, at most 128 bytes).
    pub metric: String,
    /// Pointer to the value.
    pub pointer: String,
    /// Value type.
    #[serde(default, rename = "type")]
    pub kind: ValueKind,
    /// Unit stored with the value (e.g. `ug/m3`, `m`, `km/h`).
    #[serde(default)]
    pub unit: String,
    /// Multiplier applied to numbers (e.g. 0.01 for centimetres to metres).
    #[serde(default = "defaults::scale")]
    pub scale: f64,
    /// Added after scaling.
    #[serde(default)]
    pub offset: f64,
    /// When true, a missing or null field yields no event; when false it rejects the payload.
    #[serde(default)]
    pub optional: bool,
    /// Values below this (after scaling) are kept with quality `suspect`.
    #[serde(default)]
    pub valid_min: Option<f64>,
    /// Values above this (after scaling) are kept with quality `suspect`.
    #[serde(default)]
    pub valid_max: Option<f64>,
}

/// Maps a device status field to the quality flag.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityMapping {
    /// Pointer to the status (string, number or bool; compared as text).
    pub pointer: String,
    /// Status values meaning the device reports its measurement as faulty.
    #[serde(default)]
    pub bad: Vec<String>,
    /// Status values meaning the measurement is doubtful.
    #[serde(default)]
    pub suspect: Vec<String>,
}

/// SenML options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenmlConfig {
    /// `json` (application/senml+json) or `cbor` (application/senml+cbor).
    #[serde(default)]
    pub encoding: SenmlEncoding,
    /// Metric names for records that have no name of their own beyond the base name, keyed by
    /// SenML unit; extends and overrides the built-in table (`Cel` = `temperature`, ...).
    #[serde(default)]
    pub metric_by_unit: BTreeMap<String, String>,
}

/// SenML wire encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SenmlEncoding {
    /// RFC 8428 section 5.
    #[default]
    Json,
    /// RFC 8428 section 6.
    Cbor,
}

/// NGSI-LD options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NgsiLdConfig {
    /// When not empty, only these attributes become events.
    #[serde(default)]
    pub include: Vec<String>,
    /// Attributes that never become events, in addition to the built-in descriptive ones
    /// (`name`, `description`, `address`, `dateObserved`, ...). Excluded attributes with a
    /// string value are kept as event attributes instead.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl FeedConfig {
    /// Validates one feed; `path` is where it sits (`feeds[3]`).
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if !is_label_name(&self.name) {
            problems.at(
                path,
                "name",
                format!(
                    "{:?} is not a valid feed name (lowercase letters, digits and '_', starting with a letter, at most 64 bytes)",
                    self.name
                ),
            );
        }
        let mut topic_captures = BTreeSet::new();
        match self.source {
            SourceKind::Mqtt => match TopicPattern::parse(&self.topic) {
                Ok(pattern) => {
                    topic_captures.extend(pattern.capture_names().map(str::to_owned));
                }
                Err(e) => problems.at(path, "topic", format!("{:?}: {e}", self.topic)),
            },
            SourceKind::Kafka => {
                if let Err(e) = validate_kafka_topic(&self.topic) {
                    problems.at(path, "topic", format!("{:?}: {e}", self.topic));
                }
            }
        }
        for key in self.attrs.keys() {
            if !is_label_name(key) {
                problems.at(
                    path,
                    &format!("attrs.{key}"),
                    "attribute names are lowercase letters, digits and '_', starting with a letter",
                );
            }
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > 256 * 1024 * 1024 {
            problems.at(
                path,
                "max_payload_bytes",
                format!("{} is outside 1..=268435456", self.max_payload_bytes),
            );
        }
        if self.max_events_per_payload == 0 || self.max_events_per_payload > 1_000_000 {
            problems.at(
                path,
                "max_events_per_payload",
                format!("{} is outside 1..=1000000", self.max_events_per_payload),
            );
        }
        if let Some(timeout) = self.stall_timeout_ms {
            if self.source != SourceKind::Mqtt {
                problems.at(
                    path,
                    "stall_timeout_ms",
                    "only MQTT feeds are watched for stalls",
                );
            } else if timeout < 1_000 {
                problems.at(path, "stall_timeout_ms", format!("{timeout} is below 1000"));
            }
        }
        if let Some(attr) = &self.sequence_attr {
            if self.source != SourceKind::Mqtt {
                problems.at(
                    path,
                    "sequence_attr",
                    "only the MQTT ingest checks sequences",
                );
            } else if !is_label_name(attr) {
                problems.at(
                    path,
                    "sequence_attr",
                    format!("{attr:?} is not an attribute name"),
                );
            }
        }
        let decoder_path = join_path(path, "decoder");
        match &self.decoder {
            DecoderConfig::Json(m) => {
                let entity_known = m.entity_id.is_some()
                    || self.entity_id.is_some()
                    || topic_captures.contains("entity_id");
                m.validate(&decoder_path, entity_known, problems);
            }
            DecoderConfig::Senml(s) => {
                for (unit, metric) in &s.metric_by_unit {
                    if !is_metric_name(metric) {
                        problems.at(
                            &decoder_path,
                            &format!("metric_by_unit.{unit}"),
                            format!("{metric:?} is not a valid metric name ({METRIC_RULE})"),
                        );
                    }
                }
            }
            DecoderConfig::NgsiLd(n) => {
                for name in n.include.iter().filter(|name| n.exclude.contains(name)) {
                    problems.at(
                        &decoder_path,
                        "include",
                        format!("{name:?} is also in exclude"),
                    );
                }
            }
        }
    }
}

const METRIC_RULE: &str = "letters, digits, '_', '.', ':', '-', at most 128 bytes";

/// Whether `name` is a valid metric name.
pub fn is_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

impl JsonMappingConfig {
    fn validate(&self, path: &str, entity_known: bool, problems: &mut Problems) {
        let pointers = [
            ("records", &self.records),
            ("entity_id", &self.entity_id),
            ("entity_type", &self.entity_type),
            ("district", &self.district),
            ("ward", &self.ward),
            ("lat", &self.lat),
            ("lon", &self.lon),
            ("ts", &self.ts),
        ];
        for (field, pointer) in pointers {
            if let Some(p) = pointer {
                check_pointer(path, field, p, field != "records", problems);
            }
        }
        if self.lat.is_some() != self.lon.is_some() {
            problems.at(path, "lat", "lat and lon must be set together");
        }
        if let Some(q) = &self.quality {
            check_pointer(path, "quality.pointer", &q.pointer, true, problems);
            if q.bad.is_empty() && q.suspect.is_empty() {
                problems.at(
                    path,
                    "quality",
                    "list at least one status in bad or suspect",
                );
            }
        }
        for (name, pointer) in &self.attrs {
            if !is_label_name(name) {
                problems.at(
                    path,
                    &format!("attrs.{name}"),
                    "attribute names are lowercase letters, digits and '_', starting with a letter",
                );
            }
            check_pointer(path, &format!("attrs.{name}"), pointer, true, problems);
        }
        if !entity_known {
            problems.at(path, "entity_id", "no entity id: set decoder.entity_id (a JSON Pointer), capture {entity_id} in the topic, or set the feed's entity_id");
        }
        if self.fields.is_empty() {
            problems.at(path, "fields", "at least one field is required");
        }
        let mut seen = BTreeSet::new();
        for (i, field) in self.fields.iter().enumerate() {
            let fpath = format!("{path}.fields[{i}]");
            if !is_metric_name(&field.metric) {
                problems.at(
                    &fpath,
                    "metric",
                    format!(
                        "{:?} is not a valid metric name ({METRIC_RULE})",
                        field.metric
                    ),
                );
            } else if !seen.insert(field.metric.as_str()) {
                problems.at(
                    &fpath,
                    "metric",
                    format!("{:?} is mapped twice", field.metric),
                );
            }
            check_pointer(&fpath, "pointer", &field.pointer, true, problems);
            if !field.scale.is_finite() || field.scale == 0.0 {
                problems.at(
                    &fpath,
                    "scale",
                    format!("{} must be finite and not zero", field.scale),
                );
            }
            if !field.offset.is_finite() {
                problems.at(&fpath, "offset", "must be finite");
            }
            if field.kind != ValueKind::Number
                && (field.scale != 1.0
                    || field.offset != 0.0
                    || field.valid_min.is_some()
                    || field.valid_max.is_some())
            {
                problems.at(
                    &fpath,
                    "type",
                    "scale, offset, valid_min and valid_max apply to numbers only",
                );
            }
            if let (Some(lo), Some(hi)) = (field.valid_min, field.valid_max)
                && lo > hi
            {
                problems.at(&fpath, "valid_min", format!("{lo} is above valid_max {hi}"));
            }
        }
    }
}

/// Checks a JSON Pointer (RFC 6901), optionally prefixed with `^` for the payload root.
fn check_pointer(
    path: &str,
    field: &str,
    pointer: &str,
    allow_root: bool,
    problems: &mut Problems,
) {
    let body = match pointer.strip_prefix('^') {
        Some(rest) if allow_root => rest,
        Some(_) => {
            problems.at(
                path,
                field,
                format!("{pointer:?}: '^' (payload root) is not allowed here"),
            );
            return;
        }
        None => pointer,
    };
    if let Err(e) = validate_json_pointer(body) {
        problems.at(
            path,
            field,
            format!("{pointer:?} is not a JSON Pointer: {e}"),
        );
    }
}

/// Validates RFC 6901 syntax: empty, or `/`-prefixed tokens where `~` is followed by 0 or 1.
pub fn validate_json_pointer(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() {
        return Ok(());
    }
    if !pointer.starts_with('/') {
        return Err("must start with '/' (e.g. /data/pm25)".into());
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("'~' must be followed by 0 or 1".into());
        }
    }
    Ok(())
}

fn validate_kafka_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("must not be empty".into());
    }
    if topic.len() > 249 {
        return Err("longer than 249 bytes".into());
    }
    if topic == "." || topic == ".." {
        return Err("'.' and '..' are not topic names".into());
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("Kafka topics use only letters, digits, '.', '_' and '-'".into());
    }
    Ok(())
}
