//! Da Nang: districts, wards, approximate coordinates, local time and daily rhythms.

use cityops_event::Timestamp;

/// A district (quận/huyện) with its wards and an approximate centre.
#[derive(Debug, Clone, Copy)]
pub struct District {
    /// Vietnamese name, as city systems write it.
    pub name: &'static str,
    /// ASCII slug, as sensor topics write it.
    pub slug: &'static str,
    /// Latitude of the centre.
    pub lat: f64,
    /// Longitude of the centre.
    pub lon: f64,
    /// Wards (phường) or communes (xã).
    pub wards: &'static [&'static str],
    /// How prone to flooding (0..1): low-lying districts by the Hàn and Cẩm Lệ rivers.
    pub flood_prone: f64,
}

/// The seven districts of the simulated city.
pub const DISTRICTS: [District; 7] = [
    District {
        name: "Hải Châu",
        slug: "hai-chau",
        lat: 16.0471,
        lon: 108.2208,
        wards: &[
            "Thạch Thang",
            "Hải Châu I",
            "Phước Ninh",
            "Hòa Thuận Tây",
            "Bình Hiên",
            "Hòa Cường Bắc",
            "Thuận Phước",
        ],
        flood_prone: 0.5,
    },
    District {
        name: "Thanh Khê",
        slug: "thanh-khe",
        lat: 16.0640,
        lon: 108.1880,
        wards: &[
            "Tam Thuận",
            "Thanh Khê Tây",
            "Xuân Hà",
            "Chính Gián",
            "Thạc Gián",
            "An Khê",
            "Hòa Khê",
        ],
        flood_prone: 0.4,
    },
    District {
        name: "Sơn Trà",
        slug: "son-tra",
        lat: 16.0860,
        lon: 108.2450,
        wards: &[
            "Thọ Quang",
            "Nại Hiên Đông",
            "Mân Thái",
            "An Hải Bắc",
            "Phước Mỹ",
            "An Hải Đông",
        ],
        flood_prone: 0.3,
    },
    District {
        name: "Ngũ Hành Sơn",
        slug: "ngu-hanh-son",
        lat: 16.0000,
        lon: 108.2540,
        wards: &["Mỹ An", "Khuê Mỹ", "Hòa Quý", "Hòa Hải"],
        flood_prone: 0.5,
    },
    District {
        name: "Liên Chiểu",
        slug: "lien-chieu",
        lat: 16.0720,
        lon: 108.1500,
        wards: &[
            "Hòa Hiệp Bắc",
            "Hòa Hiệp Nam",
            "Hòa Khánh Bắc",
            "Hòa Khánh Nam",
            "Hòa Minh",
        ],
        flood_prone: 0.6,
    },
    District {
        name: "Cẩm Lệ",
        slug: "cam-le",
        lat: 16.0150,
        lon: 108.1970,
        wards: &[
            "Khuê Trung",
            "Hòa Phát",
            "Hòa An",
            "Hòa Thọ Tây",
            "Hòa Thọ Đông",
            "Hòa Xuân",
        ],
        flood_prone: 0.9,
    },
    District {
        name: "Hòa Vang",
        slug: "hoa-vang",
        lat: 16.0300,
        lon: 108.0700,
        wards: &[
            "Hòa Bắc",
            "Hòa Liên",
            "Hòa Ninh",
            "Hòa Sơn",
            "Hòa Phú",
            "Hòa Châu",
            "Hòa Tiến",
        ],
        flood_prone: 0.8,
    },
];

/// The ASCII slug of a Vietnamese name: `Hòa Thọ Đông` → `hoa-tho-dong`.
pub fn slug(name: &str) -> String {
    let ascii = deunicode::deunicode(name).to_ascii_lowercase();
    let mut out = String::with_capacity(ascii.len());
    for c in ascii.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// Da Nang is UTC+7 all year.
pub const LOCAL_OFFSET_MS: i64 = 7 * 3600 * 1000;

/// Local hour of day as a fraction (0.0..24.0).
pub fn local_hour(ts: Timestamp) -> f64 {
    let local_ms = ts.as_millis() + LOCAL_OFFSET_MS;
    (local_ms.rem_euclid(86_400_000)) as f64 / 3_600_000.0
}

/// Local day of the week, 0 = Monday .. 6 = Sunday.
pub fn local_weekday(ts: Timestamp) -> u8 {
    let days = (ts.as_millis() + LOCAL_OFFSET_MS).div_euclid(86_400_000);
    // 1970-01-01 was a Thursday.
    ((days + 3).rem_euclid(7)) as u8
}

/// Traffic and activity: two rush hours on weekdays, a flatter day at weekends, quiet nights.
pub fn activity(ts: Timestamp) -> f64 {
    let h = local_hour(ts);
    let weekend = local_weekday(ts) >= 5;
    let bump = |centre: f64, width: f64| (-((h - centre) / width).powi(2)).exp();
    let base = 0.15 + 0.55 * bump(12.5, 5.0);
    let rush = if weekend { 0.2 } else { 0.6 };
    (base + rush * (bump(7.5, 1.0) + bump(17.5, 1.2))).min(1.4)
}

/// Whether street lights are on (dusk to dawn, local time).
pub fn is_dark(ts: Timestamp) -> bool {
    let h = local_hour(ts);
    !(5.5..18.0).contains(&h)
}

/// RFC 3339 in Vietnam's offset, as city systems write times: `2026-11-26T07:59:30+07:00`.
pub fn local_rfc3339(ts: Timestamp) -> String {
    let local = Timestamp::from_millis(ts.as_millis() + LOCAL_OFFSET_MS).unwrap_or(ts);
    let text = local.to_string();
    // "...T00:59:30.000Z" -> "...T00:59:30+07:00" (whole seconds, as most systems send).
    format!("{}+07:00", &text[..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_local_time() {
        assert_eq!(slug("Hòa Thọ Đông"), "hoa-tho-dong");
        assert_eq!(slug("Hải Châu I"), "hai-chau-i");
        for d in DISTRICTS {
            assert_eq!(slug(d.name), d.slug);
        }
        let t = Timestamp::parse_rfc3339("2026-11-26T00:30:00Z").unwrap();
        assert!((local_hour(t) - 7.5).abs() < 1e-9);
        assert_eq!(local_weekday(t), 3, "2026-11-26 is a Thursday");
        assert_eq!(local_rfc3339(t), "2026-11-26T07:30:00+07:00");
        assert!(activity(t) > activity(Timestamp::parse_rfc3339("2026-11-26T20:00:00Z").unwrap()));
    }
}
