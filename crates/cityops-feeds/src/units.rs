//! Unit tables: SenML units to metric names, and UN/CEFACT unit codes (NGSI-LD `unitCode`) to
//! unit symbols.

/// The metric a SenML record measures when its name says only which device it is, keyed by its
/// SenML unit (RFC 8428 section 12.1 registry). A feed's `metric_by_unit` overrides this.
pub(crate) fn metric_for_senml_unit(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "Cel" | "K" => "temperature",
        "%RH" => "humidity",
        "%EL" => "battery",
        "V" => "voltage",
        "A" => "current",
        "W" => "power",
        "Wh" | "J" => "energy",
        "Hz" => "frequency",
        "Pa" => "pressure",
        "lx" => "illuminance",
        "lat" => "latitude",
        "lon" => "longitude",
        "m" => "distance",
        "m/s" => "speed",
        "m/s2" => "acceleration",
        "dB" | "dBW" => "sound_level",
        "ppm" => "concentration",
        "count" => "count",
        "%" => "percentage",
        "/" => "ratio",
        "1/s" => "rate",
        "m3/s" | "l/s" => "flow",
        "mm/h" => "rain_rate",
        "mm" => "precipitation",
        "beat/min" | "beats" => "heart_rate",
        _ => return None,
    })
}

/// The unit symbol of a UN/CEFACT Recommendation 20 common code, as NGSI-LD `unitCode` and the
/// Smart Data Models use them. Unknown codes are kept as they are.
pub(crate) fn symbol_for_unit_code(code: &str) -> Option<&'static str> {
    Some(match code {
        "GQ" => "ug/m3",
        "GP" => "mg/m3",
        "CEL" => "Cel",
        "KEL" => "K",
        "P1" => "%",
        "MTR" => "m",
        "CMT" => "cm",
        "MMT" => "mm",
        "KMT" => "km",
        "KMH" => "km/h",
        "MTS" => "m/s",
        "WTT" => "W",
        "KWT" => "kW",
        "KWH" => "kWh",
        "VLT" => "V",
        "AMP" => "A",
        "LUX" => "lx",
        "PAL" => "Pa",
        "A97" => "hPa",
        "59" => "ppm",
        "61" => "ppb",
        "2N" => "dB",
        "SEC" => "s",
        "MIN" => "min",
        "HUR" => "h",
        "LTR" => "l",
        "MQH" => "m3/h",
        "MQS" => "m3/s",
        "KGM" => "kg",
        "C62" => "1",
        "H87" => "piece",
        "E50" => "vehicle",
        _ => return None,
    })
}
