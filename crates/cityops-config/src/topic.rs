//! MQTT topic patterns with named captures: `danang/{district}/air/{entity_id}/up`.

use std::fmt;

/// One level of a topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// Must equal this text.
    Literal(String),
    /// `+`: any one level.
    Any,
    /// `{name}`: any one level, captured under `name`.
    Capture(String),
    /// `#`: this and all further levels (also none); only last.
    Rest,
}

/// A parsed MQTT topic pattern.
///
/// The syntax is an MQTT topic filter in which a whole level may be written `{name}`: it
/// matches like `+` and captures the level's text as the label `name`. The subscription filter
/// is the pattern with every capture replaced by `+`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    levels: Vec<Level>,
}

impl TopicPattern {
    /// Parses a pattern, explaining the first syntax error.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.starts_with("$share/") {
            return Err(
                "write the plain filter here; shared subscriptions are set on the MQTT source"
                    .into(),
            );
        }
        if text.contains('\0') {
            return Err("must not contain NUL".into());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" => Level::Any,
                "#" if i + 1 == parts.len() => Level::Rest,
                "#" => return Err("'#' may only be the last level".into()),
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    let name = &p[1..p.len() - 1];
                    if !is_label_name(name) {
                        return Err(format!(
                            "capture {{{name}}}: label names are lowercase letters, digits and '_', starting with a letter"
                        ));
                    }
                    if names.contains(&name) {
                        return Err(format!("capture {{{name}}} appears twice"));
                    }
                    names.push(name);
                    Level::Capture(name.to_owned())
                }
                p if p.contains(['+', '#', '{', '}']) => {
                    return Err(format!(
                        "level {p:?}: '+', '#' and '{{name}}' must stand alone in a level"
                    ));
                }
                p => Level::Literal(p.to_owned()),
            };
            levels.push(level);
        }
        Ok(TopicPattern { levels })
    }

    /// The MQTT subscription filter: captures become `+`.
    pub fn mqtt_filter(&self) -> String {
        let parts: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Any | Level::Capture(_) => "+",
                Level::Rest => "#",
            })
            .collect();
        parts.join("/")
    }

    /// The names this pattern captures, in order.
    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().filter_map(|l| match l {
            Level::Capture(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Matches a concrete topic, returning the captured `(name, value)` pairs, or `None`.
    ///
    /// Follows MQTT matching: wildcards do not match topics starting with `$` at the first
    /// level, and a captured level must not be empty (an empty id is never meaningful).
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Vec<(&str, &'t str)>> {
        let mut captures = Vec::new();
        let mut parts = topic.split('/');
        for (i, level) in self.levels.iter().enumerate() {
            match level {
                Level::Rest => {
                    if i == 0 && topic.starts_with('$') {
                        return None;
                    }
                    return Some(captures);
                }
                _ => {
                    let part = parts.next()?;
                    match level {
                        Level::Literal(s) if s == part => {}
                        Level::Literal(_) => return None,
                        Level::Any | Level::Capture(_) if i == 0 && part.starts_with('$') => {
                            return None;
                        }
                        Level::Any => {}
                        Level::Capture(name) => {
                            if part.is_empty() {
                                return None;
                            }
                            captures.push((name.as_str(), part));
                        }
                        Level::Rest => unreachable!("handled above"),
                    }
                }
            }
        }
        if parts.next().is_some() {
            None
        } else {
            Some(captures)
        }
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.clone(),
                Level::Any => "+".into(),
                Level::Capture(name) => format!("{{{name}}}"),
                Level::Rest => "#".into(),
            })
            .collect();
        f.write_str(&parts.join("/"))
    }
}

/// Whether `name` is a valid label name: `[a-z][a-z0-9_]*`, at most 64 bytes.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c == '_' || c.is_ascii_lowercase() || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_levels_and_builds_the_filter() {
        let p = TopicPattern::parse("danang/{district}/air/{entity_id}/up").unwrap();
        assert_eq!(p.mqtt_filter(), "danang/+/air/+/up");
        assert_eq!(
            p.matches("danang/hai-chau/air/aq-07/up").unwrap(),
            [("district", "hai-chau"), ("entity_id", "aq-07")]
        );
        assert!(p.matches("danang/hai-chau/air/aq-07").is_none());
        assert!(p.matches("danang/hai-chau/air/aq-07/up/x").is_none());
        assert!(p.matches("danang//air/aq-07/up").is_none());
        assert_eq!(p.to_string(), "danang/{district}/air/{entity_id}/up");
    }

    #[test]
    fn hash_matches_the_rest_including_nothing() {
        let p = TopicPattern::parse("city/{kind}/#").unwrap();
        assert_eq!(p.matches("city/flood").unwrap(), [("kind", "flood")]);
        assert_eq!(p.matches("city/flood/a/b").unwrap(), [("kind", "flood")]);
        assert!(
            TopicPattern::parse("#")
                .unwrap()
                .matches("$SYS/x")
                .is_none()
        );
    }

    #[test]
    fn rejects_malformed_patterns() {
        for bad in [
            "",
            "a/#/b",
            "a/b+/c",
            "a/{Bad}/c",
            "a/{x}/{x}",
            "$share/g/a/b",
            "a/{}/b",
        ] {
            assert!(
                TopicPattern::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
