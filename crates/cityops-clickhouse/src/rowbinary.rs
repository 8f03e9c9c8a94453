//! `events` rows in ClickHouse's RowBinary format, written straight from an [`Event`]: the
//! ingest keeps batches as these bytes (a fifth of the memory of row structs, no allocation per
//! field) and sends them as they are. The decoder reads them back for the rare cases that need
//! a row (a refused message, a look-up after a failed INSERT) and for tests.

use crate::{EventRow, RowSource};
use cityops_event::Event;
use uuid::Uuid;

/// Appends the `events` row of `event` received from `source`, in the column order of
/// [`EventRow`] (see its `COLUMNS`).
pub fn encode_event(out: &mut Vec<u8>, event: &Event, source: &RowSource<'_>) {
    uuid(out, event.event_id);
    out.extend_from_slice(&event.ts.unix_seconds().to_le_bytes());
    out.extend_from_slice(&event.ts.subsec_millis().to_le_bytes());
    out.extend_from_slice(&event.ingested_at.unix_seconds().to_le_bytes());
    string(out, event.feed.as_bytes());
    string(out, event.domain.as_str().as_bytes());
    string(out, event.entity_id.as_bytes());
    string(out, event.entity_type.as_bytes());
    string(out, event.metric.as_bytes());
    nullable_f64(out, event.value);
    match &event.text {
        Some(text) => {
            out.push(0);
            string(out, text.as_bytes());
        }
        None => out.push(1),
    }
    string(out, event.unit.as_bytes());
    string(out, event.district.as_bytes());
    string(out, event.ward.as_bytes());
    nullable_f64(out, event.lat);
    nullable_f64(out, event.lon);
    varint(out, event.attrs.len() as u64);
    for key in event.attrs.keys() {
        string(out, key.as_bytes());
    }
    varint(out, event.attrs.len() as u64);
    for value in event.attrs.values() {
        string(out, value.as_bytes());
    }
    string(out, event.quality.as_str().as_bytes());
    string(out, source.kind.as_bytes());
    string(out, source.topic.as_bytes());
    out.extend_from_slice(&source.partition.to_le_bytes());
    out.extend_from_slice(&source.offset.to_le_bytes());
}

fn uuid(out: &mut Vec<u8>, id: Uuid) {
    // ClickHouse stores a UUID as two little-endian 64-bit halves, high half first.
    let (high, low) = id.as_u64_pair();
    out.extend_from_slice(&high.to_le_bytes());
    out.extend_from_slice(&low.to_le_bytes());
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn nullable_f64(out: &mut Vec<u8>, value: Option<f64>) {
    match value {
        Some(v) => {
            out.push(0);
            out.extend_from_slice(&v.to_le_bytes());
        }
        None => out.push(1),
    }
}

/// Reads `events` rows written by [`encode_event`].
pub fn decode_events(mut bytes: &[u8]) -> Result<Vec<EventRow>, String> {
    let mut rows = Vec::new();
    while !bytes.is_empty() {
        let mut r = Reader { bytes };
        rows.push(r.event_row()?);
        bytes = r.bytes;
    }
    Ok(rows)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or("RowBinary ends in the middle of a value")?;
        self.bytes = rest;
        Ok(*head)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let [byte] = self.take::<1>()?;
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("RowBinary length is not a valid varint".into())
    }

    fn string(&mut self) -> Result<String, String> {
        let len = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
        if len > self.bytes.len() {
            return Err("RowBinary string runs past the end".into());
        }
        let (text, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        String::from_utf8(text.to_vec()).map_err(|e| e.to_string())
    }

    fn null(&mut self) -> Result<bool, String> {
        Ok(self.take::<1>()?[0] != 0)
    }

    fn nullable_f64(&mut self) -> Result<Option<f64>, String> {
        if self.null()? {
            Ok(None)
        } else {
            Ok(Some(f64::from_le_bytes(self.take()?)))
        }
    }

    fn strings(&mut self) -> Result<Vec<String>, String> {
        let n = self.varint()?;
        (0..n).map(|_| self.string()).collect()
    }

    fn event_row(&mut self) -> Result<EventRow, String> {
        let high = u64::from_le_bytes(self.take()?);
        let low = u64::from_le_bytes(self.take()?);
        Ok(EventRow {
            event_id: Uuid::from_u64_pair(high, low),
            ts: u32::from_le_bytes(self.take()?),
            ts_ms: u16::from_le_bytes(self.take()?),
            ingested_at: u32::from_le_bytes(self.take()?),
            feed: self.string()?,
            domain: self.string()?,
            entity_id: self.string()?,
            entity_type: self.string()?,
            metric: self.string()?,
            value: self.nullable_f64()?,
            text: if self.null()? {
                None
            } else {
                Some(self.string()?)
            },
            unit: self.string()?,
            district: self.string()?,
            ward: self.string()?,
            lat: self.nullable_f64()?,
            lon: self.nullable_f64()?,
            attr_keys: self.strings()?,
            attr_values: self.strings()?,
            quality: self.string()?,
            source_kind: self.string()?,
            source_topic: self.string()?,
            source_partition: i32::from_le_bytes(self.take()?),
            source_offset: i64::from_le_bytes(self.take()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cityops_event::{Domain, Quality, Timestamp};

    fn event(i: u32) -> Event {
        Event {
            event_id: Uuid::from_u64_pair(0x0123_4567_89ab_cdef, u64::from(i)),
            ts: Timestamp::from_millis(1_764_000_000_123 + i64::from(i)).unwrap(),
            ingested_at: Timestamp::from_millis(1_764_000_001_000).unwrap(),
            feed: "citizen_reports".into(),
            domain: Domain::CitizenReport,
            entity_id: format!("PA-{i}"),
            entity_type: "CitizenReport".into(),
            metric: "status".into(),
            value: i.is_multiple_of(2).then_some(f64::from(i) * 0.5),
            text: i
                .is_multiple_of(3)
                .then(|| "Đèn đường hỏng ở Hải Châu".to_owned()),
            unit: String::new(),
            district: "Hải Châu".into(),
            ward: "Thạch Thang".into(),
            lat: Some(16.07),
            lon: None,
            attrs: [("channel".to_owned(), "app".to_owned())].into(),
            quality: Quality::Suspect,
        }
    }

    #[test]
    fn decodes_to_the_rows_the_structs_give() {
        let source = RowSource {
            kind: "kafka",
            topic: "danang.citizen.reports",
            partition: 3,
            offset: 1 << 40,
        };
        let mut bytes = Vec::new();
        let events: Vec<Event> = (0..200).map(event).collect();
        for e in &events {
            encode_event(&mut bytes, e, &source);
        }
        let rows = decode_events(&bytes).unwrap();
        let want: Vec<EventRow> = events.iter().map(|e| EventRow::new(e, &source)).collect();
        assert_eq!(rows, want);
        assert!(decode_events(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn varints_round_trip_across_byte_boundaries() {
        for n in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            varint(&mut out, n);
            assert_eq!(Reader { bytes: &out }.varint().unwrap(), n);
        }
    }
}
