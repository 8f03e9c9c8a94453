//! `${NAME}` and `${NAME:-default}` substitution in the config text, before it is parsed.

use crate::Problem;

/// Replaces `${NAME}` and `${NAME:-default}` in `text` with values from `lookup`.
///
/// `$$` stands for a literal `$`. Whole-line comments (first non-blank character `#`) are left
/// untouched, so a commented-out setting never fails for a missing variable. The substitution is
/// textual, as in Vector and Telegraf: put it inside a TOML string (`"${CH_URL}"`) for strings,
/// bare (`max_payload_bytes = ${MAX_BYTES:-1048576}`) for numbers. A variable that is unset and
/// has no default is a problem reported with its line; an empty value counts as set (as in
/// POSIX `${NAME-default}`, the `:-` form also replaces an empty value).
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body_and_tail) = after.strip_prefix('{') {
                let Some(end) = body_and_tail.find('}') else {
                    problems.push(Problem::new(
                        format!("line {line_no}"),
                        "unterminated ${ (write $$ for a literal $)",
                    ));
                    rest = "";
                    break;
                };
                let body = &body_and_tail[..end];
                let (name, default) = match body.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (body, None),
                };
                if !is_env_name(name) {
                    problems.push(Problem::new(
                        format!("line {line_no}"),
                        format!("invalid environment variable name {name:?} in ${{{body}}}"),
                    ));
                } else {
                    match (lookup(name), default) {
                        (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
                        (Some(value), _) => out.push_str(&value),
                        (None, Some(default)) => out.push_str(default),
                        (None, None) => problems.push(Problem::new(
                            format!("line {line_no}"),
                            format!(
                                "environment variable {name} is not set (give a default with ${{{name}:-value}})"
                            ),
                        )),
                    }
                }
                rest = &body_and_tail[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("ch.local".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_values_defaults_and_escapes() {
        let text =
            "a = \"${HOST}\"\nb = \"${MISSING:-x}\"\nc = \"${EMPTY:-d}\"\nd = \"$$HOST $5\"\n";
        assert_eq!(
            substitute(text, &env).unwrap(),
            "a = \"ch.local\"\nb = \"x\"\nc = \"d\"\nd = \"$HOST $5\"\n"
        );
    }

    #[test]
    fn reports_every_missing_variable_with_its_line() {
        let problems = substitute(
            "a = \"${A}\"\n# b = \"${B}\"\nc = \"${C} ${bad-name}\"\nd = \"${D",
            &env,
        )
        .unwrap_err();
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "line 1: environment variable A is not set (give a default with ${A:-value})",
                "line 3: environment variable C is not set (give a default with ${C:-value})",
                "line 3: invalid environment variable name \"bad-name\" in ${bad-name}",
                "line 4: unterminated ${ (write $$ for a literal $)",
            ]
        );
    }
}
