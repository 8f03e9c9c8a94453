//! The SenML decoder (RFC 8428): JSON (section 5) and CBOR (section 6) packs, with base
//! fields, relative and absolute times, and name resolution as the RFC specifies.

use crate::draft::{DecodeCtx, Draft};
use crate::feed::too_many;
use crate::jsonx::{self, type_name};
use crate::reject::{Failure, RejectReason};
use crate::units::metric_for_senml_unit;
use base64::Engine;
use ciborium::Value as Cbor;
use cityops_config::{SenmlConfig, SenmlEncoding};
use cityops_event::{Attrs, Timestamp};
use serde_json::Value as Json;

/// Times below 2^28 seconds are relative to "now" (RFC 8428 section 4.5.3).
const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;
/// The SenML version this decoder implements (RFC 8428 section 4.4).
const SUPPORTED_VERSION: i64 = 10;

/// One record with its fields as written, before resolution.
#[derive(Debug, Default)]
struct RawRecord {
    bn: Option<String>,
    bt: Option<f64>,
    bu: Option<String>,
    bv: Option<f64>,
    bs: Option<f64>,
    bver: Option<i64>,
    n: Option<String>,
    u: Option<String>,
    v: Option<f64>,
    vs: Option<String>,
    vb: Option<bool>,
    vd: Option<String>,
    s: Option<f64>,
    t: Option<f64>,
    ut: Option<f64>,
}

/// A field value as read from either encoding.
enum Field {
    Num(f64),
    Text(String),
    Bool(bool),
    Bytes(Vec<u8>),
    Other(&'static str),
}

impl Field {
    fn kind(&self) -> &'static str {
        match self {
            Field::Num(_) => "a number",
            Field::Text(_) => "a string",
            Field::Bool(_) => "a boolean",
            Field::Bytes(_) => "a byte string",
            Field::Other(kind) => kind,
        }
    }
}

impl RawRecord {
    /// Stores one field; `label` is the JSON label (CBOR keys are mapped to it first).
    fn set(&mut self, index: usize, label: &str, value: Field) -> Result<(), Failure> {
        let wrong = |expected: &str, value: &Field| {
            Failure::new(
                RejectReason::WrongType,
                format!(
                    "record {index}: \"{label}\" must be {expected}, got {}",
                    value.kind()
                ),
            )
        };
        let num = |value: Field| match value {
            Field::Num(n) => Ok(n),
            other => Err(wrong("a number", &other)),
        };
        let text = |value: Field| match value {
            Field::Text(s) => Ok(s),
            other => Err(wrong("a string", &other)),
        };
        match label {
            "bn" => self.bn = Some(text(value)?),
            "bt" => self.bt = Some(num(value)?),
            "bu" => self.bu = Some(text(value)?),
            "bv" => self.bv = Some(num(value)?),
            "bs" => self.bs = Some(num(value)?),
            "bver" => {
                let n = num(value)?;
                if n.fract() != 0.0 || !(0.0..=1e9).contains(&n) {
                    return Err(Failure::new(
                        RejectReason::InvalidSenml,
                        format!("record {index}: \"bver\" must be a positive integer, got {n}"),
                    ));
                }
                self.bver = Some(n as i64);
            }
            "n" => self.n = Some(text(value)?),
            "u" => self.u = Some(text(value)?),
            "v" => self.v = Some(num(value)?),
            "vs" => self.vs = Some(text(value)?),
            "vb" => match value {
                Field::Bool(b) => self.vb = Some(b),
                other => return Err(wrong("a boolean", &other)),
            },
            "vd" => match value {
                // JSON carries data values base64url-encoded already; CBOR as raw bytes.
                Field::Text(s) => self.vd = Some(s),
                Field::Bytes(b) => {
                    self.vd = Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b));
                }
                other => return Err(wrong("a base64url string or byte string", &other)),
            },
            "s" => self.s = Some(num(value)?),
            "t" => self.t = Some(num(value)?),
            "ut" => self.ut = Some(num(value)?),
            other if other.ends_with('_') => {
                return Err(Failure::new(
                    RejectReason::InvalidSenml,
                    format!(
                        "record {index}: unknown must-understand field \"{other}\" (RFC 8428 section 4.4)"
                    ),
                ));
            }
            // Unknown extension fields are ignored, as the RFC requires.
            _ => {}
        }
        Ok(())
    }

    fn value_fields(&self) -> usize {
        usize::from(self.v.is_some())
            + usize::from(self.vs.is_some())
            + usize::from(self.vb.is_some())
            + usize::from(self.vd.is_some())
    }
}

pub(crate) fn decode(
    options: &SenmlConfig,
    payload: &[u8],
    ctx: &DecodeCtx<'_>,
) -> Result<Vec<Draft>, Failure> {
    let records = match options.encoding {
        SenmlEncoding::Json => read_json(payload, ctx.max_events)?,
        SenmlEncoding::Cbor => read_cbor(payload, ctx.max_events)?,
    };
    resolve(options, records, ctx)
}

fn read_json(payload: &[u8], max_events: usize) -> Result<Vec<RawRecord>, Failure> {
    let root: Json = jsonx::parse(payload)?;
    let Json::Array(items) = root else {
        return Err(Failure::new(
            RejectReason::WrongType,
            format!(
                "a SenML pack is an array of records, got {}",
                type_name(&root)
            ),
        ));
    };
    if items.len() > max_events {
        return Err(too_many(max_events));
    }
    let mut records = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let Json::Object(fields) = item else {
            return Err(Failure::new(
                RejectReason::WrongType,
                format!(
                    "record {index}: expected an object, got {}",
                    type_name(&item)
                ),
            ));
        };
        let mut record = RawRecord::default();
        for (label, value) in fields {
            let field = match value {
                Json::Number(n) => match n.as_f64() {
                    Some(f) => Field::Num(f),
                    None => Field::Other("an unrepresentable number"),
                },
                Json::String(s) => Field::Text(s),
                Json::Bool(b) => Field::Bool(b),
                Json::Null => Field::Other("null"),
                Json::Array(_) => Field::Other("an array"),
                Json::Object(_) => Field::Other("an object"),
            };
            record.set(index, &label, field)?;
        }
        records.push(record);
    }
    Ok(records)
}

/// CBOR labels of RFC 8428 section 6, table 6.
fn cbor_label(key: i128) -> Option<&'static str> {
    Some(match key {
        -1 => "bver",
        -2 => "bn",
        -3 => "bt",
        -4 => "bu",
        -5 => "bv",
        -6 => "bs",
        0 => "n",
        1 => "u",
        2 => "v",
        3 => "vs",
        4 => "vb",
        5 => "s",
        6 => "t",
        7 => "ut",
        8 => "vd",
        _ => return None,
    })
}

fn read_cbor(payload: &[u8], max_events: usize) -> Result<Vec<RawRecord>, Failure> {
    let root: Cbor = ciborium::from_reader(payload).map_err(|e| {
        let detail = match e {
            ciborium::de::Error::Io(_) => "it ends in the middle of an item".to_owned(),
            ciborium::de::Error::Syntax(offset) => format!("syntax error at byte {offset}"),
            ciborium::de::Error::Semantic(Some(offset), msg) => format!("{msg} at byte {offset}"),
            ciborium::de::Error::Semantic(None, msg) => msg,
            ciborium::de::Error::RecursionLimitExceeded => "nested too deeply".to_owned(),
        };
        Failure::new(
            RejectReason::InvalidCbor,
            format!("payload is not CBOR: {detail}"),
        )
    })?;
    let Cbor::Array(items) = untag(root) else {
        return Err(Failure::new(
            RejectReason::WrongType,
            "a SenML pack is an array of records",
        ));
    };
    if items.len() > max_events {
        return Err(too_many(max_events));
    }
    let mut records = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let Cbor::Map(entries) = untag(item) else {
            return Err(Failure::new(
                RejectReason::WrongType,
                format!("record {index}: expected a map"),
            ));
        };
        let mut record = RawRecord::default();
        for (key, value) in entries {
            let label: String = match untag(key) {
                Cbor::Integer(i) => match cbor_label(i128::from(i)) {
                    Some(label) => label.to_owned(),
                    // Negative labels below -6 are must-understand extensions we do not know.
                    None if i128::from(i) < 0 => format!("label{}_", i128::from(i)),
                    None => continue,
                },
                Cbor::Text(s) => s,
                _ => continue,
            };
            let field = match untag(value) {
                Cbor::Integer(i) => Field::Num(i128::from(i) as f64),
                Cbor::Float(f) => Field::Num(f),
                Cbor::Text(s) => Field::Text(s),
                Cbor::Bool(b) => Field::Bool(b),
                Cbor::Bytes(b) => Field::Bytes(b),
                Cbor::Null => Field::Other("null"),
                Cbor::Array(_) => Field::Other("an array"),
                Cbor::Map(_) => Field::Other("a map"),
                _ => Field::Other("an unsupported CBOR value"),
            };
            record.set(index, &label, field)?;
        }
        records.push(record);
    }
    Ok(records)
}

/// Strips CBOR tags (a tagged value means the same for SenML).
fn untag(mut v: Cbor) -> Cbor {
    while let Cbor::Tag(_, inner) = v {
        v = *inner;
    }
    v
}

/// The base fields in force while walking the pack.
#[derive(Default)]
struct Base {
    name: String,
    time: f64,
    unit: Option<String>,
    value: f64,
    sum: f64,
}

fn resolve(
    options: &SenmlConfig,
    records: Vec<RawRecord>,
    ctx: &DecodeCtx<'_>,
) -> Result<Vec<Draft>, Failure> {
    let mut base = Base::default();
    let mut drafts = Vec::with_capacity(records.len());
    for (index, r) in records.into_iter().enumerate() {
        if let Some(version) = r.bver
            && version > SUPPORTED_VERSION
        {
            return Err(Failure::new(
                RejectReason::InvalidSenml,
                format!(
                    "record {index}: SenML version {version} is newer than the supported {SUPPORTED_VERSION}"
                ),
            ));
        }
        // Base fields apply to this record and the ones after it, until replaced.
        if let Some(bn) = &r.bn {
            base.name.clone_from(bn);
        }
        if let Some(bt) = r.bt {
            base.time = bt;
        }
        if let Some(bu) = &r.bu {
            base.unit = Some(bu.clone());
        }
        if let Some(bv) = r.bv {
            base.value = bv;
        }
        if let Some(bs) = r.bs {
            base.sum = bs;
        }
        let values = r.value_fields();
        if values > 1 {
            return Err(Failure::new(
                RejectReason::InvalidSenml,
                format!("record {index} has more than one value field (v, vs, vb, vd)"),
            ));
        }
        if values == 0 && r.s.is_none() {
            if r.n.is_some() || r.u.is_some() || r.t.is_some() || r.ut.is_some() {
                return Err(Failure::new(
                    RejectReason::InvalidSenml,
                    format!("record {index} has no value (v, vs, vb, vd) and no sum (s)"),
                ));
            }
            // A record of base fields only, as in RFC 8428 section 5.1.7.
            continue;
        }
        let own_name = r.n.as_deref().unwrap_or("");
        let name = format!("{}{own_name}", base.name);
        check_name(index, &name)?;
        let time = base.time + r.t.unwrap_or(0.0);
        let ts = resolve_time(index, time, ctx.received_at)?;
        let unit =
            r.u.clone()
                .or_else(|| base.unit.clone())
                .unwrap_or_default();

        // Which part of the name is the device and which the quantity: the base name is the
        // device when there is one; a name without a base name is the device itself unless the
        // feed already knows the device (from the topic or config).
        let (entity_id, metric) = if !base.name.is_empty() {
            let entity = base
                .name
                .trim_end_matches([':', '/', '.', '_', '-'])
                .to_owned();
            let metric = if own_name.is_empty() {
                metric_from_unit(options, &unit)
            } else {
                own_name.to_owned()
            };
            (
                Some(if entity.is_empty() {
                    base.name.clone()
                } else {
                    entity
                }),
                metric,
            )
        } else if ctx.labels.entity_id.is_some() {
            (None, own_name.to_owned())
        } else {
            (Some(name.clone()), metric_from_unit(options, &unit))
        };

        let mut attrs = Attrs::new();
        attrs.insert("senml_name".into(), name.clone());
        if let Some(ut) = r.ut {
            attrs.insert("senml_update_time_s".into(), ut.to_string());
        }
        let draft = Draft {
            entity_id,
            metric: metric.clone(),
            unit,
            attrs,
            ts: Some(ts),
            ..Draft::default()
        };
        if values == 1 {
            let mut d = draft.clone();
            if let Some(v) = r.v {
                d.value = Some(finite(index, "v", base.value + v)?);
            } else if let Some(b) = r.vb {
                d.value = Some(if b { 1.0 } else { 0.0 });
            } else {
                d.text = r.vs.clone().or_else(|| r.vd.clone());
            }
            drafts.push(d);
        }
        if let Some(s) = r.s {
            let mut d = draft;
            d.metric = format!("{metric}_sum");
            d.value = Some(finite(index, "s", base.sum + s)?);
            drafts.push(d);
        }
        if drafts.len() > ctx.max_events {
            return Err(too_many(ctx.max_events));
        }
    }
    Ok(drafts)
}

fn metric_from_unit(options: &SenmlConfig, unit: &str) -> String {
    options
        .metric_by_unit
        .get(unit)
        .map(String::as_str)
        .or_else(|| metric_for_senml_unit(unit))
        .unwrap_or("value")
        .to_owned()
}

fn finite(index: usize, field: &str, v: f64) -> Result<f64, Failure> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Failure::new(
            RejectReason::NotFinite,
            format!("record {index}: \"{field}\" plus its base value is not finite"),
        ))
    }
}

/// RFC 8428 section 4.5.1: the resolved name is `[A-Za-z0-9][A-Za-z0-9:./_-]*`.
fn check_name(index: usize, name: &str) -> Result<(), Failure> {
    let mut chars = name.chars();
    let first_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric());
    if !first_ok
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_'))
    {
        return Err(Failure::new(
            RejectReason::InvalidSenml,
            format!(
                "record {index}: resolved name {name:?} must start with a letter or digit and use only letters, digits and - : . / _"
            ),
        ));
    }
    Ok(())
}

/// RFC 8428 section 4.5.3: at or above 2^28 the time is absolute (epoch seconds), below it is
/// relative to now (negative in the past).
fn resolve_time(index: usize, time: f64, now: Timestamp) -> Result<Timestamp, Failure> {
    let out_of_range = |detail: String| {
        Failure::new(
            RejectReason::TsOutOfRange,
            format!("record {index}: time {time}: {detail}"),
        )
    };
    if !time.is_finite() {
        return Err(Failure::new(
            RejectReason::NotFinite,
            format!("record {index}: time is not finite"),
        ));
    }
    if time >= RELATIVE_TIME_LIMIT {
        Timestamp::from_secs_f64(time).map_err(|e| out_of_range(e.to_string()))
    } else {
        let ms = now.as_millis() as f64 + time * 1000.0;
        Timestamp::from_millis_f64(ms).map_err(|e| out_of_range(e.to_string()))
    }
}
