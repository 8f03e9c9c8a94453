//! Conditions: `> 2.5`, `<= 45`, `!= "ok"`: a comparison of the series' value with a bound.

use std::fmt;

/// The value a condition looks at: a number, or text (a status such as `ok` or `fault`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    /// A numeric value.
    Num(f64),
    /// A text value.
    Text(Box<str>),
}

impl Value {
    /// The number, when the value is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            Value::Text(_) => None,
        }
    }
}

/// How a condition compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
}

impl Cmp {
    fn symbol(self) -> &'static str {
        match self {
            Cmp::Greater => ">",
            Cmp::GreaterOrEqual => ">=",
            Cmp::Less => "<",
            Cmp::LessOrEqual => "<=",
            Cmp::Equal => "==",
            Cmp::NotEqual => "!=",
        }
    }
}

/// The bound of a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// Compared as numbers.
    Num(f64),
    /// Compared as text, with `==` or `!=` only.
    Text(String),
}

/// `<op> <bound>`, e.g. `> 2.5` or `!= "ok"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The comparison.
    pub cmp: Cmp,
    /// What the value is compared with.
    pub bound: Bound,
}

impl Condition {
    /// Parses `> 2.5`, `>= 50`, `< 2.3`, `== 0`, `!= "ok"`, `== "fault"`.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let text = text.trim();
        let (cmp, rest) = [
            (">=", Cmp::GreaterOrEqual),
            ("<=", Cmp::LessOrEqual),
            ("==", Cmp::Equal),
            ("!=", Cmp::NotEqual),
            (">", Cmp::Greater),
            ("<", Cmp::Less),
        ]
        .into_iter()
        .find_map(|(token, cmp)| text.strip_prefix(token).map(|rest| (cmp, rest.trim())))
        .ok_or_else(|| format!("condition {text:?} must start with one of >, >=, <, <=, ==, != (e.g. \"> 2.5\" or '!= \"ok\"')"))?;
        let bound = if let Some(quoted) = rest.strip_prefix('"') {
            let inner = quoted
                .strip_suffix('"')
                .ok_or_else(|| format!("condition {text:?}: the text has no closing quote"))?;
            if !matches!(cmp, Cmp::Equal | Cmp::NotEqual) {
                return Err(format!(
                    "condition {text:?}: text can only be compared with == or !="
                ));
            }
            Bound::Text(inner.to_owned())
        } else {
            let number: f64 = rest.parse().map_err(|_| {
                format!("condition {text:?}: {rest:?} is not a number (quote text: \"ok\")")
            })?;
            if !number.is_finite() {
                return Err(format!("condition {text:?}: the bound must be finite"));
            }
            Bound::Num(number)
        };
        Ok(Condition { cmp, bound })
    }

    /// Whether `value` satisfies the condition. A number never satisfies a text condition and
    /// the other way round (a text bound against a numeric metric is refused when rules load).
    pub fn holds(&self, value: &Value) -> bool {
        match (&self.bound, value) {
            (Bound::Num(bound), Value::Num(v)) => self.holds_f64(*v, *bound),
            (Bound::Text(bound), Value::Text(v)) => match self.cmp {
                Cmp::Equal => **v == **bound,
                Cmp::NotEqual => **v != **bound,
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether a number satisfies the condition (false for a text bound).
    pub fn holds_num(&self, v: f64) -> bool {
        match self.bound {
            Bound::Num(bound) => self.holds_f64(v, bound),
            Bound::Text(_) => false,
        }
    }

    fn holds_f64(&self, v: f64, bound: f64) -> bool {
        match self.cmp {
            Cmp::Greater => v > bound,
            Cmp::GreaterOrEqual => v >= bound,
            Cmp::Less => v < bound,
            Cmp::LessOrEqual => v <= bound,
            Cmp::Equal => v == bound,
            Cmp::NotEqual => v != bound,
        }
    }

    /// Whether the bound is text.
    pub fn is_text(&self) -> bool {
        matches!(self.bound, Bound::Text(_))
    }

    /// The numeric bound, when there is one.
    pub fn bound_f64(&self) -> Option<f64> {
        match self.bound {
            Bound::Num(n) => Some(n),
            Bound::Text(_) => None,
        }
    }

    /// The comparison.
    pub fn cmp(&self) -> Cmp {
        self.cmp
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.bound {
            Bound::Num(n) => write!(f, "{} {n}", self.cmp.symbol()),
            Bound::Text(t) => write!(f, "{} {t:?}", self.cmp.symbol()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_text_compare_as_written() {
        let num = |c: &str, v: f64| Condition::parse(c).unwrap().holds(&Value::Num(v));
        assert!(num("> 2.5", 2.6));
        assert!(!num("> 2.5", 2.5));
        assert!(num(">= 2.5", 2.5));
        assert!(num("<2.3", 2.2));
        assert!(num("<= 2.3", 2.3));
        assert!(num("== 0", 0.0));
        assert!(num("!= 0", 1.0));
        let text = |c: &str, v: &str| Condition::parse(c).unwrap().holds(&Value::Text(v.into()));
        assert!(text(r#"!= "ok""#, "fault"));
        assert!(!text(r#"!= "ok""#, "ok"));
        assert!(text(r#"== "mất điện""#, "mất điện"));
        assert!(
            !Condition::parse("> 1")
                .unwrap()
                .holds(&Value::Text("2".into()))
        );
    }

    #[test]
    fn malformed_conditions_say_what_is_wrong() {
        for (c, says) in [
            ("2.5", "must start with"),
            ("> abc", "not a number"),
            (r#"> "ok""#, "only be compared"),
            (r#"== "ok"#, "closing quote"),
            ("> inf", "finite"),
        ] {
            let e = Condition::parse(c).unwrap_err();
            assert!(e.contains(says), "{c}: {e}");
        }
    }
}
