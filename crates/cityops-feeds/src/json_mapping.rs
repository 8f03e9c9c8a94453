//! The JSON mapping decoder: picks fields by JSON Pointer, one event per mapped field.

use crate::borrowed::Json;
use crate::draft::{DecodeCtx, Draft};
use crate::feed::too_many;
use crate::jsonx;
use crate::reject::{Failure, RejectReason};
use cityops_config::{FieldMapping, JsonMappingConfig, TsFormat, ValueKind};
use cityops_event::{Attrs, Quality, Timestamp};

/// Epoch numbers at or above this are read as milliseconds by `ts_format = "auto"` (10^11 s is
/// the year 5138, 10^11 ms is 1973).
const AUTO_MS_THRESHOLD: f64 = 1e11;

pub(crate) fn decode(
    m: &JsonMappingConfig,
    payload: &[u8],
    ctx: &DecodeCtx<'_>,
) -> Result<Vec<Draft>, Failure> {
    let root = Json::parse(payload)?;
    let mut drafts = Vec::new();
    match &m.records {
        None => decode_record(m, &root, &root, None, &mut drafts)?,
        Some(pointer) => {
            let records = match root.pointer(pointer) {
                Some(Json::Array(items)) => items,
                Some(Json::Null) | None => {
                    return Err(Failure::new(
                        RejectReason::MissingField,
                        format!("records {pointer}: not found"),
                    ));
                }
                Some(other) => {
                    return Err(Failure::new(
                        RejectReason::WrongType,
                        format!(
                            "records {pointer}: expected an array, got {}",
                            other.type_name()
                        ),
                    ));
                }
            };
            for (i, record) in records.iter().enumerate() {
                decode_record(m, &root, record, Some((pointer, i)), &mut drafts)?;
                if drafts.len() > ctx.max_events {
                    return Err(too_many(ctx.max_events));
                }
            }
        }
    }
    Ok(drafts)
}

/// Where a pointer leads: `^/x` from the payload root, `/x` from the record.
struct Scope<'v, 'a> {
    root: &'v Json<'a>,
    record: &'v Json<'a>,
    /// The records pointer and the record's index, for messages (`None` for the root).
    at: Option<(&'v str, usize)>,
}

impl<'v, 'a> Scope<'v, 'a> {
    fn get(&self, pointer: &str) -> Option<&'v Json<'a>> {
        let found = match pointer.strip_prefix('^') {
            Some(abs) => self.root.pointer(abs),
            None => self.record.pointer(pointer),
        };
        found.filter(|v| !v.is_null())
    }

    /// The full pointer of a field for messages.
    fn name(&self, pointer: &str) -> String {
        match pointer.strip_prefix('^') {
            Some(abs) => abs.to_owned(),
            None => match self.at {
                Some((records, i)) => format!("{records}/{i}{pointer}"),
                None => pointer.to_owned(),
            },
        }
    }

    fn text(&self, pointer: &Option<String>, what: &str) -> Result<Option<String>, Failure> {
        let Some(p) = pointer else { return Ok(None) };
        match self.get(p) {
            None => Ok(None),
            Some(v) => v.as_id().map(Some).ok_or_else(|| {
                Failure::new(
                    RejectReason::WrongType,
                    format!(
                        "{} ({what}): expected a non-empty string or an integer, got {}",
                        self.name(p),
                        v.preview()
                    ),
                )
            }),
        }
    }

    fn number(&self, pointer: &str, what: &str) -> Result<Option<f64>, Failure> {
        match self.get(pointer) {
            None => Ok(None),
            Some(v) => v.as_number().map(Some).ok_or_else(|| {
                Failure::new(
                    RejectReason::WrongType,
                    format!(
                        "{} ({what}): expected a number, got {}",
                        self.name(pointer),
                        v.preview()
                    ),
                )
            }),
        }
    }
}

fn decode_record(
    m: &JsonMappingConfig,
    root: &Json<'_>,
    record: &Json<'_>,
    at: Option<(&str, usize)>,
    out: &mut Vec<Draft>,
) -> Result<(), Failure> {
    let scope = Scope { root, record, at };
    let entity_id = scope.text(&m.entity_id, "entity_id")?;
    let entity_type = scope.text(&m.entity_type, "entity_type")?;
    let district = scope.text(&m.district, "district")?;
    let ward = scope.text(&m.ward, "ward")?;
    let (lat, lon) = match (&m.lat, &m.lon) {
        (Some(lat_p), Some(lon_p)) => {
            let lat = scope.number(lat_p, "lat")?;
            let lon = scope.number(lon_p, "lon")?;
            match (lat, lon) {
                (Some(lat), Some(lon)) => {
                    jsonx::check_position(|| scope.name(lat_p), lat, lon)?;
                    (Some(lat), Some(lon))
                }
                _ => (None, None),
            }
        }
        _ => (None, None),
    };
    let ts = match &m.ts {
        None => None,
        Some(p) => match scope.get(p) {
            None => {
                return Err(Failure::new(
                    RejectReason::MissingField,
                    format!("{} (ts): not found", scope.name(p)),
                ));
            }
            Some(v) => Some(read_ts(&|| scope.name(p), v, m.ts_format)?),
        },
    };
    let record_quality = match &m.quality {
        None => Quality::Good,
        Some(q) => match scope.get(&q.pointer).and_then(Json::as_text_cow) {
            Some(status) if q.bad.iter().any(|b| *b == *status) => Quality::Bad,
            Some(status) if q.suspect.iter().any(|s| *s == *status) => Quality::Suspect,
            _ => Quality::Good,
        },
    };
    let mut attrs = Attrs::new();
    for (name, p) in &m.attrs {
        if let Some(v) = scope.get(p).and_then(Json::as_text) {
            attrs.insert(name.clone(), v);
        }
    }
    for field in &m.fields {
        let Some(raw) = scope.get(&field.pointer) else {
            if field.optional {
                continue;
            }
            return Err(Failure::new(
                RejectReason::MissingField,
                format!(
                    "{} (metric {}): not found",
                    scope.name(&field.pointer),
                    field.metric
                ),
            ));
        };
        let (value, text, quality) = read_value(field, raw, &|| scope.name(&field.pointer))?;
        out.push(Draft {
            entity_id: entity_id.clone(),
            entity_type: entity_type.clone(),
            metric: field.metric.clone(),
            value,
            text,
            unit: field.unit.clone(),
            district: district.clone(),
            ward: ward.clone(),
            lat,
            lon,
            attrs: attrs.clone(),
            ts,
            quality: worse(record_quality, quality),
        });
    }
    Ok(())
}

fn worse(a: Quality, b: Quality) -> Quality {
    match (a, b) {
        (Quality::Bad, _) | (_, Quality::Bad) => Quality::Bad,
        (Quality::Suspect, _) | (_, Quality::Suspect) => Quality::Suspect,
        _ => Quality::Good,
    }
}

fn read_value(
    field: &FieldMapping,
    raw: &Json<'_>,
    name: &dyn Fn() -> String,
) -> Result<(Option<f64>, Option<String>, Quality), Failure> {
    let wrong = |expected: &str| {
        Failure::new(
            RejectReason::WrongType,
            format!(
                "{} (metric {}): expected {expected}, got {}",
                name(),
                field.metric,
                raw.preview()
            ),
        )
    };
    match field.kind {
        ValueKind::Number => {
            let n = raw.as_number().ok_or_else(|| wrong("a number"))?;
            let v = n * field.scale + field.offset;
            if !v.is_finite() {
                return Err(Failure::new(
                    RejectReason::NotFinite,
                    format!(
                        "{} (metric {}): {n:e} scaled by {:e} plus {:e} is not finite",
                        name(),
                        field.metric,
                        field.scale,
                        field.offset
                    ),
                ));
            }
            let outside = field.valid_min.is_some_and(|lo| v < lo)
                || field.valid_max.is_some_and(|hi| v > hi);
            Ok((
                Some(v),
                None,
                if outside {
                    Quality::Suspect
                } else {
                    Quality::Good
                },
            ))
        }
        ValueKind::Bool => match raw {
            Json::Bool(b) => Ok((Some(if *b { 1.0 } else { 0.0 }), None, Quality::Good)),
            _ => Err(wrong("true or false")),
        },
        ValueKind::String => raw
            .as_text()
            .map(|t| (None, Some(t), Quality::Good))
            .ok_or_else(|| wrong("a string")),
    }
}

fn read_ts(
    name: &dyn Fn() -> String,
    v: &Json<'_>,
    format: TsFormat,
) -> Result<Timestamp, Failure> {
    let wrong = |expected: &str| {
        Failure::new(
            RejectReason::InvalidTimestamp,
            format!("{} (ts): expected {expected}, got {}", name(), v.preview()),
        )
    };
    let from_number = |n: f64, millis: bool| {
        let t = if millis {
            Timestamp::from_millis_f64(n)
        } else {
            Timestamp::from_secs_f64(n)
        };
        t.map_err(|e| {
            Failure::new(
                RejectReason::TsOutOfRange,
                format!("{} (ts): {n}: {e}", name()),
            )
        })
    };
    match format {
        TsFormat::Rfc3339 => match v {
            Json::String(s) => jsonx::rfc3339(name, s),
            _ => Err(wrong("an RFC 3339 string")),
        },
        TsFormat::EpochS => {
            from_number(v.as_number().ok_or_else(|| wrong("epoch seconds"))?, false)
        }
        TsFormat::EpochMs => from_number(
            v.as_number().ok_or_else(|| wrong("epoch milliseconds"))?,
            true,
        ),
        TsFormat::Auto => match (v, v.as_number()) {
            (_, Some(n)) => from_number(n, n.abs() >= AUTO_MS_THRESHOLD),
            (Json::String(s), None) => jsonx::rfc3339(name, s),
            _ => Err(wrong("an RFC 3339 string or epoch seconds/milliseconds")),
        },
    }
}
