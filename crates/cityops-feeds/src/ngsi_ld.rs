//! The NGSI-LD decoder (ETSI GS CIM 009): single entities, arrays of entities and notifications,
//! in normalized, concise or keyValues form, as FIWARE brokers and the Smart Data Models
//! (AirQualityObserved, Streetlight, ParkingSpot, WasteContainer, ...) write them.

use crate::draft::{DecodeCtx, Draft};
use crate::feed::too_many;
use crate::jsonx::{self, type_name};
use crate::reject::{Failure, RejectReason};
use crate::units::symbol_for_unit_code;
use cityops_config::NgsiLdConfig;
use cityops_event::{Attrs, Timestamp};
use serde_json::{Map, Value};

/// Attributes that describe an entity rather than measure it. They never become events; those
/// with a short string value are kept as event attributes.
const DESCRIPTIVE: [&str; 18] = [
    "name",
    "description",
    "alternateName",
    "address",
    "areaServed",
    "dataProvider",
    "source",
    "seeAlso",
    "owner",
    "dateCreated",
    "dateModified",
    "dateObserved",
    "dateLastReported",
    "createdAt",
    "modifiedAt",
    "image",
    "annotations",
    "location",
];

/// Longest string attribute copied into event attributes.
const MAX_ATTR_TEXT_BYTES: usize = 256;

pub(crate) fn decode(
    options: &NgsiLdConfig,
    payload: &[u8],
    ctx: &DecodeCtx<'_>,
) -> Result<Vec<Draft>, Failure> {
    let root: Value = jsonx::parse(payload)?;
    let (entities, notified_at) = match &root {
        Value::Object(obj) if obj.get("type").and_then(Value::as_str) == Some("Notification") => {
            let notified_at = match obj.get("notifiedAt") {
                Some(Value::String(s)) => Some(jsonx::rfc3339(|| "notifiedAt".to_owned(), s)?),
                Some(other) => {
                    return Err(Failure::new(
                        RejectReason::WrongType,
                        format!("notifiedAt: expected a string, got {}", type_name(other)),
                    ));
                }
                None => None,
            };
            match obj.get("data") {
                Some(Value::Array(items)) => (items.iter().collect::<Vec<_>>(), notified_at),
                Some(other) => {
                    return Err(Failure::new(
                        RejectReason::WrongType,
                        format!(
                            "data: a notification's data must be an array of entities, got {}",
                            type_name(other)
                        ),
                    ));
                }
                None => {
                    return Err(Failure::new(
                        RejectReason::MissingField,
                        "data: a notification must carry a data array",
                    ));
                }
            }
        }
        Value::Object(_) => (vec![&root], None),
        Value::Array(items) => (items.iter().collect(), None),
        other => {
            return Err(Failure::new(
                RejectReason::WrongType,
                format!(
                    "expected an entity, an array of entities or a notification, got {}",
                    type_name(other)
                ),
            ));
        }
    };
    let mut drafts = Vec::new();
    for (index, entity) in entities.into_iter().enumerate() {
        let Value::Object(entity) = entity else {
            return Err(Failure::new(
                RejectReason::WrongType,
                format!(
                    "entities[{index}]: expected an object, got {}",
                    type_name(entity)
                ),
            ));
        };
        decode_entity(options, index, entity, notified_at, &mut drafts)?;
        if drafts.len() > ctx.max_events {
            return Err(too_many(ctx.max_events));
        }
    }
    Ok(drafts)
}

/// How one attribute is written.
enum Attribute<'a> {
    /// A Property (normalized or concise) with its value and its metadata object.
    Property {
        value: &'a Value,
        meta: &'a Map<String, Value>,
    },
    /// A LanguageProperty: text per language.
    Language {
        map: &'a Map<String, Value>,
        meta: &'a Map<String, Value>,
    },
    /// A Relationship pointing at another entity.
    Relationship { object: &'a Value },
    /// A GeoProperty or bare GeoJSON geometry.
    Geo { geometry: &'a Value },
    /// A keyValues scalar.
    Plain(&'a Value),
    /// Something that carries no measurement (a structured keyValues value).
    Structured,
}

fn classify(value: &Value) -> Attribute<'_> {
    let Value::Object(obj) = value else {
        return match value {
            Value::Array(_) | Value::Null => Attribute::Structured,
            scalar => Attribute::Plain(scalar),
        };
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("Property") | Some("JsonProperty") | Some("ListProperty") => match obj
            .get("value")
            .or_else(|| obj.get("json"))
            .or_else(|| obj.get("valueList"))
        {
            Some(v) => Attribute::Property {
                value: v,
                meta: obj,
            },
            None => Attribute::Structured,
        },
        Some("VocabProperty") => match obj.get("vocab") {
            Some(v) => Attribute::Property {
                value: v,
                meta: obj,
            },
            None => Attribute::Structured,
        },
        Some("LanguageProperty") => match obj.get("languageMap") {
            Some(Value::Object(map)) => Attribute::Language { map, meta: obj },
            _ => Attribute::Structured,
        },
        Some("Relationship") => {
            obj.get("object")
                .map_or(Attribute::Structured, |object| Attribute::Relationship {
                    object,
                })
        }
        Some("GeoProperty") => {
            obj.get("value")
                .map_or(Attribute::Structured, |geometry| Attribute::Geo {
                    geometry,
                })
        }
        Some("Point") if obj.contains_key("coordinates") => Attribute::Geo { geometry: value },
        _ if obj.contains_key("value") => Attribute::Property {
            value: &obj["value"],
            meta: obj,
        },
        _ if obj.contains_key("languageMap") => match obj.get("languageMap") {
            Some(Value::Object(map)) => Attribute::Language { map, meta: obj },
            _ => Attribute::Structured,
        },
        _ if obj.contains_key("object") => Attribute::Relationship {
            object: &obj["object"],
        },
        _ => Attribute::Structured,
    }
}

/// The short name of an attribute: expanded URIs keep their last segment.
fn short_name(name: &str) -> &str {
    name.rsplit(['/', '#']).next().unwrap_or(name)
}

/// A keyValues relationship by Smart Data Models convention: `refDevice`, `refParkingSite`.
fn is_ref_name(name: &str) -> bool {
    name.strip_prefix("ref")
        .and_then(|r| r.chars().next())
        .is_some_and(|c| c.is_ascii_uppercase())
}

fn decode_entity(
    options: &NgsiLdConfig,
    index: usize,
    entity: &Map<String, Value>,
    notified_at: Option<Timestamp>,
    out: &mut Vec<Draft>,
) -> Result<(), Failure> {
    let at = |field: &str| format!("entities[{index}].{field}");
    let id = match entity.get("id").or_else(|| entity.get("@id")) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(Failure::new(
                RejectReason::InvalidNgsiLd,
                format!(
                    "{}: must be a non-empty URI string, got {}",
                    at("id"),
                    jsonx::preview(other)
                ),
            ));
        }
        None => {
            return Err(Failure::new(
                RejectReason::InvalidNgsiLd,
                format!("{}: every entity needs an id", at("id")),
            ));
        }
    };
    let entity_type = match entity.get("type").or_else(|| entity.get("@type")) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Array(types)) => match types.first() {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(Failure::new(
                    RejectReason::InvalidNgsiLd,
                    format!(
                        "{}: an array of types must start with a type name",
                        at("type")
                    ),
                ));
            }
        },
        Some(other) => {
            return Err(Failure::new(
                RejectReason::InvalidNgsiLd,
                format!(
                    "{}: must be a string or an array of strings, got {}",
                    at("type"),
                    jsonx::preview(other)
                ),
            ));
        }
        None => {
            return Err(Failure::new(
                RejectReason::InvalidNgsiLd,
                format!("{}: every entity needs a type", at("type")),
            ));
        }
    };

    // dateObserved is the entity-wide observation time of the Smart Data Models.
    let date_observed = match entity.get("dateObserved").map(classify) {
        Some(Attribute::Property { value, .. }) | Some(Attribute::Plain(value)) => {
            Some(read_time(&at("dateObserved"), value)?)
        }
        _ => None,
    };
    let default_ts = date_observed.or(notified_at);

    let (mut lat, mut lon) = (None, None);
    if let Some(Attribute::Geo { geometry }) = entity.get("location").map(classify)
        && let Some((la, lo)) = point(&at("location"), geometry)?
    {
        lat = Some(la);
        lon = Some(lo);
    }

    let mut shared_attrs = Attrs::new();
    let mut measured: Vec<(&str, Attribute<'_>)> = Vec::new();
    for (raw_name, value) in entity {
        if matches!(
            raw_name.as_str(),
            "id" | "@id" | "type" | "@type" | "@context" | "scope"
        ) {
            continue;
        }
        let name = short_name(raw_name);
        let attribute = classify(value);
        match attribute {
            Attribute::Relationship { object } => {
                if let Some(target) = relationship_target(object) {
                    shared_attrs.insert(name.to_owned(), target);
                }
                continue;
            }
            Attribute::Plain(Value::String(s)) if is_ref_name(name) => {
                shared_attrs.insert(name.to_owned(), s.clone());
                continue;
            }
            _ => {}
        }
        let excluded = DESCRIPTIVE.contains(&name) || options.exclude.iter().any(|e| e == name);
        let not_included =
            !options.include.is_empty() && !options.include.iter().any(|i| i == name);
        if excluded || not_included {
            let text = match attribute {
                Attribute::Plain(Value::String(s))
                | Attribute::Property {
                    value: Value::String(s),
                    ..
                } => Some(s),
                _ => None,
            };
            if let Some(s) = text.filter(|s| s.len() <= MAX_ATTR_TEXT_BYTES && excluded) {
                shared_attrs.insert(name.to_owned(), s.clone());
            }
            continue;
        }
        measured.push((name, attribute));
    }

    // A multi-attribute (several instances told apart by datasetId) is an array of attributes.
    for (name, attribute) in measured {
        let instances: Vec<Attribute<'_>> = match attribute {
            Attribute::Structured => match entity
                .iter()
                .find(|(k, _)| short_name(k) == name)
                .map(|(_, v)| v)
            {
                Some(Value::Array(items)) if items.iter().all(|i| i.is_object()) => {
                    items.iter().map(classify).collect()
                }
                _ => continue,
            },
            other => vec![other],
        };
        for instance in instances {
            let Some(draft) = measure(name, instance, &at(name), default_ts)? else {
                continue;
            };
            let mut draft = draft;
            draft.entity_id = Some(id.clone());
            draft.entity_type = Some(entity_type.clone());
            draft.lat = lat;
            draft.lon = lon;
            let mut attrs = shared_attrs.clone();
            attrs.append(&mut draft.attrs);
            draft.attrs = attrs;
            out.push(draft);
        }
    }
    Ok(())
}

/// Turns one attribute instance into a draft, or `None` when it carries no measurement.
fn measure(
    name: &str,
    attribute: Attribute<'_>,
    at: &str,
    default_ts: Option<Timestamp>,
) -> Result<Option<Draft>, Failure> {
    let mut draft = Draft {
        metric: name.to_owned(),
        ts: default_ts,
        ..Draft::default()
    };
    let meta = match attribute {
        Attribute::Property { value, meta } => {
            if !set_value(&mut draft, value, at)? {
                return Ok(None);
            }
            Some(meta)
        }
        Attribute::Plain(value) => {
            if !set_value(&mut draft, value, at)? {
                return Ok(None);
            }
            None
        }
        Attribute::Language { map, meta } => {
            let preferred = ["vi", "en", "@none"]
                .iter()
                .find_map(|lang| map.get(*lang).map(|v| (*lang, v)));
            let Some((lang, Value::String(text))) =
                preferred.or_else(|| map.iter().next().map(|(k, v)| (k.as_str(), v)))
            else {
                return Ok(None);
            };
            draft.text = Some(text.clone());
            draft.attrs.insert("lang".into(), lang.to_owned());
            Some(meta)
        }
        Attribute::Relationship { .. } | Attribute::Geo { .. } | Attribute::Structured => {
            return Ok(None);
        }
    };
    if let Some(meta) = meta {
        match meta.get("observedAt") {
            Some(Value::String(s)) => {
                draft.ts = Some(jsonx::rfc3339(|| format!("{at}.observedAt"), s)?)
            }
            Some(other) => {
                return Err(Failure::new(
                    RejectReason::InvalidTimestamp,
                    format!(
                        "{at}.observedAt: expected a date-time string, got {}",
                        jsonx::preview(other)
                    ),
                ));
            }
            None => {}
        }
        match meta.get("unitCode") {
            Some(Value::String(code)) => {
                draft.unit = symbol_for_unit_code(code).unwrap_or(code).to_owned();
                draft.attrs.insert("unit_code".into(), code.clone());
            }
            Some(other) => {
                return Err(Failure::new(
                    RejectReason::WrongType,
                    format!("{at}.unitCode: expected a string, got {}", type_name(other)),
                ));
            }
            None => {}
        }
        if let Some(Value::String(dataset)) = meta.get("datasetId") {
            draft.attrs.insert("dataset_id".into(), dataset.clone());
        }
    }
    Ok(Some(draft))
}

/// Sets value or text from a Property value; false when the value is not a measurement.
fn set_value(draft: &mut Draft, value: &Value, at: &str) -> Result<bool, Failure> {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => draft.value = Some(f),
            _ => {
                return Err(Failure::new(
                    RejectReason::NotFinite,
                    format!("{at}: {n} is not a finite number"),
                ));
            }
        },
        Value::Bool(b) => draft.value = Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => draft.text = Some(s.clone()),
        // A typed literal such as {"@type": "DateTime", "@value": "..."}.
        Value::Object(obj) if obj.contains_key("@value") => {
            return set_value(draft, &obj["@value"], at);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn relationship_target(object: &Value) -> Option<String> {
    match object {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let targets: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            (!targets.is_empty()).then(|| targets.join(","))
        }
        _ => None,
    }
}

fn read_time(at: &str, value: &Value) -> Result<Timestamp, Failure> {
    match value {
        Value::String(s) => jsonx::rfc3339(|| at.to_owned(), s),
        Value::Object(obj) if obj.contains_key("@value") => read_time(at, &obj["@value"]),
        other => Err(Failure::new(
            RejectReason::InvalidTimestamp,
            format!(
                "{at}: expected a date-time string, got {}",
                jsonx::preview(other)
            ),
        )),
    }
}

/// Reads a GeoJSON Point as (lat, lon); other geometries carry no single position.
fn point(at: &str, geometry: &Value) -> Result<Option<(f64, f64)>, Failure> {
    let Value::Object(obj) = geometry else {
        return Ok(None);
    };
    if obj.get("type").and_then(Value::as_str) != Some("Point") {
        return Ok(None);
    }
    let coords = match obj.get("coordinates") {
        Some(Value::Array(c)) if c.len() >= 2 => c,
        _ => {
            return Err(Failure::new(
                RejectReason::WrongType,
                format!("{at}: a Point needs coordinates [longitude, latitude]"),
            ));
        }
    };
    match (coords[0].as_f64(), coords[1].as_f64()) {
        (Some(lon), Some(lat)) => {
            jsonx::check_position(|| at.to_owned(), lat, lon)?;
            Ok(Some((lat, lon)))
        }
        _ => Err(Failure::new(
            RejectReason::WrongType,
            format!("{at}: Point coordinates must be numbers"),
        )),
    }
}
