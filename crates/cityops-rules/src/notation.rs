//! The compact notation of input series in rule tests, as promtool's `input_series`:
//! `1 2 3`, `2.0+0.1x5` (six values rising by 0.1), `2.6x10` (eleven times 2.6), `_` (no
//! event), `_x3` (three missing), `"ok"` and `"fault"x4` for text values.

use crate::condition::Value;

/// Expands `values` into one slot per interval: `None` where there is no event.
pub fn expand(values: &str) -> Result<Vec<Option<Value>>, String> {
    let mut out = Vec::new();
    for token in tokens(values)? {
        expand_token(&token, &mut out)?;
    }
    Ok(out)
}

fn tokens(values: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in values.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err(format!(
            "values {values:?}: a quoted text has no closing quote"
        ));
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    Ok(tokens)
}

fn expand_token(token: &str, out: &mut Vec<Option<Value>>) -> Result<(), String> {
    if let Some(rest) = token.strip_prefix('"') {
        let (text, times) = match rest.rsplit_once('"') {
            Some((text, "")) => (text, 1),
            Some((text, count)) => (text, repeat(count, token)? + 1),
            None => return Err(format!("{token:?}: no closing quote")),
        };
        out.extend(std::iter::repeat_n(Some(Value::Text(text.into())), times));
        return Ok(());
    }
    if token == "_" {
        out.push(None);
        return Ok(());
    }
    if let Some(count) = token.strip_prefix("_x") {
        let n = count
            .parse::<usize>()
            .map_err(|_| format!("{token:?}: expected _xN with a whole N"))?;
        out.extend(std::iter::repeat_n(None, n));
        return Ok(());
    }
    let Some((start_step, count)) = token.split_once('x') else {
        out.push(Some(Value::Num(number(token, token)?)));
        return Ok(());
    };
    let n = count
        .parse::<usize>()
        .map_err(|_| format!("{token:?}: expected a whole number after x"))?;
    // `a+b` / `a-b`: the sign after the first character separates start and step.
    let split = start_step
        .char_indices()
        .skip(1)
        .find(|&(i, c)| (c == '+' || c == '-') && !start_step[..i].ends_with(['e', 'E']));
    let (start, step) = match split {
        Some((i, _)) => (
            number(&start_step[..i], token)?,
            number(&start_step[i..], token)?,
        ),
        None => (number(start_step, token)?, 0.0),
    };
    if n > 1_000_000 {
        return Err(format!("{token:?}: more than a million values"));
    }
    for i in 0..=n {
        out.push(Some(Value::Num(start + step * i as f64)));
    }
    Ok(())
}

fn repeat(count: &str, token: &str) -> Result<usize, String> {
    count
        .strip_prefix('x')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{token:?}: expected \"text\"xN"))
}

fn number(text: &str, token: &str) -> Result<f64, String> {
    let n: f64 = text
        .parse()
        .map_err(|_| format!("{token:?}: {text:?} is not a number"))?;
    if n.is_finite() {
        Ok(n)
    } else {
        Err(format!("{token:?}: values must be finite"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nums(values: &str) -> Vec<Option<f64>> {
        expand(values)
            .unwrap()
            .into_iter()
            .map(|v| v.and_then(|v| v.as_f64()))
            .collect()
    }

    #[test]
    fn promtool_notation_expands() {
        assert_eq!(nums("1 2 _ 3"), [Some(1.0), Some(2.0), None, Some(3.0)]);
        assert_eq!(nums("2.6x2"), [Some(2.6); 3]);
        assert_eq!(nums("1+1x3"), [Some(1.0), Some(2.0), Some(3.0), Some(4.0)]);
        assert_eq!(nums("5-2x2"), [Some(5.0), Some(3.0), Some(1.0)]);
        assert_eq!(nums("-1+1x1"), [Some(-1.0), Some(0.0)]);
        assert_eq!(nums("1e-1 _x2"), [Some(0.1), None, None]);
        let text = expand(r#""ok" "mất điện"x1"#).unwrap();
        assert_eq!(
            text,
            [
                Some(Value::Text("ok".into())),
                Some(Value::Text("mất điện".into())),
                Some(Value::Text("mất điện".into()))
            ]
        );
    }

    #[test]
    fn bad_tokens_say_which() {
        for (values, says) in [
            ("abc", "not a number"),
            ("1x", "whole number"),
            ("\"ok", "closing quote"),
            ("_xa", "_xN"),
        ] {
            let e = expand(values).unwrap_err();
            assert!(e.contains(says), "{values}: {e}");
        }
    }
}
