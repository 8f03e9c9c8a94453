//! ClickHouse server versions, for gating modern-only DDL.

use std::fmt;

/// A server version such as `18.16.1` or `26.9.2.1` (major, minor, patch; the rest ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// Major version (the year for current releases).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version, 0 when absent.
    pub patch: u32,
}

impl ServerVersion {
    /// Parses `SELECT version()` output or a `-- requires:` header.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.').map(|p| p.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = match parts.next() {
            Some(p) => p?,
            None => 0,
        };
        Some(ServerVersion {
            major,
            minor,
            patch,
        })
    }

    /// Whether the server has what the modern-only migrations and TTL need; 18.16 does not.
    pub fn supports_ttl(self) -> bool {
        self >= ServerVersion {
            major: 19,
            minor: 6,
            patch: 0,
        }
    }

    /// Whether the client's schema validation (RowBinaryWithNamesAndTypes) works here.
    pub fn supports_client_validation(self) -> bool {
        self >= ServerVersion {
            major: 22,
            minor: 1,
            patch: 0,
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_versions() {
        let old = ServerVersion::parse("18.16.1").unwrap();
        let new = ServerVersion::parse("26.9.2.1").unwrap();
        assert!(old < new);
        assert!(!old.supports_ttl() && new.supports_ttl());
        assert_eq!(ServerVersion::parse("21.8").unwrap().to_string(), "21.8.0");
        assert!(ServerVersion::parse("x.1").is_none());
        assert!(ServerVersion::parse("18").is_none());
    }
}
