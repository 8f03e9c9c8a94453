//! Selectors: `{metric="water_level", district=~"Hải Châu|Sơn Trà", quality!="bad"}`, the
//! PromQL matcher syntax on-call engineers already write, parsed and matched against events.

use crate::labels::{Field, is_label_name};
use cityops_event::Event;
use regex::Regex;

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`: the whole value matches the regular expression.
    Regex,
    /// `!~`
    NotRegex,
}

/// One `label op "value"` of a selector.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label's name as written.
    pub name: String,
    field: Field,
    /// The comparison.
    pub op: MatchOp,
    /// The value as written (the pattern for regex matchers).
    pub value: String,
    regex: Option<Regex>,
    /// A pattern that is only alternatives of plain words (`water_level|air_quality`),
    /// matched as a set: the common case, and a regex search on every event is not free.
    words: Option<Vec<String>>,
}

impl Matcher {
    /// Whether `event` satisfies this matcher.
    pub fn matches(&self, event: &Event) -> bool {
        self.matches_value(self.field.get(event))
    }

    fn matches_value(&self, actual: &str) -> bool {
        if let Some(words) = &self.words {
            let found = words.iter().any(|w| w == actual);
            return if self.op == MatchOp::Regex {
                found
            } else {
                !found
            };
        }
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => actual == self.value,
            (MatchOp::NotEqual, _) => actual != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(actual),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(actual),
            (_, None) => false,
        }
    }
}

/// A list of matchers that must all hold. The empty selector `{}` matches every event.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// The matchers, in the order written.
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// Parses `{name op "value", ...}`; values are double-quoted with `\"`, `\\`, `\n` escapes.
    /// Regular expressions are anchored at both ends, as in PromQL.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut p = Parser { text, pos: 0 };
        p.skip_ws();
        p.expect('{')?;
        let mut matchers = Vec::new();
        loop {
            p.skip_ws();
            if p.eat('}') {
                break;
            }
            let name = p.name()?;
            p.skip_ws();
            let op = p.op()?;
            p.skip_ws();
            let value = p.quoted()?;
            let regex = match op {
                MatchOp::Regex | MatchOp::NotRegex => {
                    Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                        // The regex crate's message draws the pattern over several lines; the last says what is wrong.
                        let text = e.to_string();
                        let what = text
                            .lines()
                            .last()
                            .unwrap_or_default()
                            .trim_start_matches("error: ")
                            .to_owned();
                        format!("label {name}: invalid regular expression {value:?}: {what}")
                    })?)
                }
                _ => None,
            };
            let words = regex.as_ref().and_then(|_| plain_alternatives(&value));
            matchers.push(Matcher {
                field: Field::from_name(&name),
                name,
                op,
                value,
                regex,
                words,
            });
            p.skip_ws();
            if p.eat(',') {
                continue;
            }
            p.skip_ws();
            p.expect('}')?;
            break;
        }
        p.skip_ws();
        if p.pos != text.len() {
            return Err(format!(
                "unexpected {:?} after the closing brace",
                &text[p.pos..]
            ));
        }
        Ok(Selector { matchers })
    }

    /// Whether every matcher holds for `event`.
    pub fn matches(&self, event: &Event) -> bool {
        self.matchers.iter().all(|m| m.matches(event))
    }

    /// The value of the first `name="value"` equality matcher, if there is one: how an input
    /// series of a rule test says what its events carry.
    pub fn equality(&self, name: &str) -> Option<&str> {
        self.matchers
            .iter()
            .find(|m| m.name == name && m.op == MatchOp::Equal)
            .map(|m| m.value.as_str())
    }
}

/// `a|b|c` of plain words (letters, digits, `_`, `-`, spaces): the words, which a whole-value
/// regex would match exactly.
fn plain_alternatives(pattern: &str) -> Option<Vec<String>> {
    let words: Vec<String> = pattern.split('|').map(str::to_owned).collect();
    let plain = words.iter().all(|w| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == ' ')
    });
    plain.then_some(words)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, c: char) -> bool {
        if self.rest().starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(match self.rest().chars().next() {
                Some(found) => format!("expected {c:?} at byte {}, found {found:?}", self.pos),
                None => format!("expected {c:?} at the end"),
            })
        }
    }

    fn name(&mut self) -> Result<String, String> {
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest().len());
        let name = self.rest()[..len].to_owned();
        if !is_label_name(&name) {
            return Err(format!("expected a label name at byte {}", self.pos));
        }
        self.pos += len;
        Ok(name)
    }

    fn op(&mut self) -> Result<MatchOp, String> {
        for (token, op) in [
            ("=~", MatchOp::Regex),
            ("!~", MatchOp::NotRegex),
            ("!=", MatchOp::NotEqual),
            ("=", MatchOp::Equal),
        ] {
            if self.rest().starts_with(token) {
                self.pos += token.len();
                return Ok(op);
            }
        }
        Err(format!(
            "expected one of =, !=, =~, !~ at byte {}",
            self.pos
        ))
    }

    fn quoted(&mut self) -> Result<String, String> {
        let at = self.pos;
        self.expect('"')
            .map_err(|_| format!("expected a double-quoted value at byte {at}"))?;
        let mut value = String::new();
        let rest = self.rest().to_owned();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, escaped @ ('"' | '\\'))) => value.push(escaped),
                    // Regular expressions keep their own escapes (`\.`, `\d`).
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => break,
                },
                other => value.push(other),
            }
        }
        Err(format!(
            "the value starting at byte {at} has no closing quote"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::event;

    #[test]
    fn all_four_operators_match_fields_and_attributes() {
        let e = event();
        for (selector, expected) in [
            (r#"{}"#, true),
            (r#"{metric="water_level"}"#, true),
            (r#"{metric="water_level", domain="water"}"#, true),
            (r#"{district=~"Hải Châu|Sơn Trà"}"#, true),
            (r#"{district=~"Sơn Trà|Cẩm Lệ"}"#, false),
            (r#"{district!~"Sơn Trà|Cẩm Lệ"}"#, true),
            (r#"{district!~"Hải Châu"}"#, false),
            (r#"{district=~"Hải"}"#, false),
            (r#"{district!~"Sơn.*"}"#, true),
            (r#"{quality!="bad"}"#, true),
            (r#"{station="Cầu Rồng"}"#, true),
            (r#"{missing=""}"#, true),
            (r#"{missing!=""}"#, false),
            (r#" { entity_id =~ "gauge-\d+" , } "#, true),
        ] {
            let parsed = Selector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
            assert_eq!(parsed.matches(&e), expected, "{selector}");
        }
    }

    #[test]
    fn malformed_selectors_say_where() {
        for (selector, says) in [
            ("metric=\"x\"", "expected '{'"),
            ("{metric \"x\"}", "expected one of"),
            ("{metric=x}", "double-quoted"),
            ("{metric=\"x}", "no closing quote"),
            ("{metric=~\"(\"}", "invalid regular expression"),
            ("{9x=\"a\"}", "label name"),
            ("{a=\"b\"} extra", "after the closing brace"),
        ] {
            let error = Selector::parse(selector).unwrap_err();
            assert!(error.contains(says), "{selector}: {error}");
        }
    }
}
