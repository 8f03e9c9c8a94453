//! Annotation templates, rendered with minijinja (Jinja2 syntax): `Mực nước tại
//! {{ labels.station }} đạt {{ value }} m`.

use crate::condition::Value;
use minijinja::{Environment, UndefinedBehavior};
use std::collections::BTreeMap;
use std::sync::OnceLock;

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // A label a series lacks renders as empty rather than failing the notification.
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        // Annotations are plain text (Alertmanager, webhooks), never HTML.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env
    })
}

/// Checks that `source` is a valid template (its syntax); the error says where.
pub fn check(source: &str) -> Result<(), String> {
    environment()
        .template_from_str(source)
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// What a template can use.
pub struct Context<'a> {
    /// Every label of the alert (alertname, severity, the rule's labels, the series labels).
    pub labels: &'a BTreeMap<String, String>,
    /// The value that decided the transition: the latest value, the aggregate, the change, or
    /// the seconds of silence.
    pub value: Option<&'a Value>,
    /// Whether a `suspect` event contributed to the value.
    pub suspect: bool,
}

/// Renders `source`; a failure renders as the error text, so that a notification still goes out.
pub fn render(source: &str, cx: &Context<'_>) -> Result<String, String> {
    let value = match cx.value {
        Some(Value::Num(n)) => minijinja::Value::from(*n),
        Some(Value::Text(t)) => minijinja::Value::from(&**t),
        None => minijinja::Value::from(()),
    };
    let labels = minijinja::Value::from(cx.labels.clone());
    let ctx = minijinja::context! {
        labels => labels,
        value => value,
        suspect => cx.suspect,
    };
    environment()
        .render_str(source, ctx)
        .map_err(|e| describe(&e))
}

fn describe(error: &minijinja::Error) -> String {
    let mut text = error
        .detail()
        .map_or_else(|| error.kind().to_string(), str::to_owned);
    if let Some(line) = error.line() {
        text = format!("{text} (template line {line})");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_renders_exactly() {
        let labels = BTreeMap::from([("station".to_string(), "Cầu Trần Thị Lý".to_string())]);
        let value = Value::Num(2.61);
        let cx = Context {
            labels: &labels,
            value: Some(&value),
            suspect: false,
        };
        assert_eq!(
            render("Mực nước tại {{ labels.station }} đạt {{ value }} m", &cx).unwrap(),
            "Mực nước tại Cầu Trần Thị Lý đạt 2.61 m"
        );
        assert_eq!(
            render("{{ value | round(1) }} <b>&", &cx).unwrap(),
            "2.6 <b>&"
        );
        assert_eq!(render("[{{ labels.missing }}]", &cx).unwrap(), "[]");
        assert_eq!(
            render("{% if suspect %}nghi ngờ{% else %}tốt{% endif %}", &cx).unwrap(),
            "tốt"
        );
    }

    #[test]
    fn syntax_errors_are_found_when_rules_load() {
        let e = check("{{ labels.station ").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        assert!(check("{{ value | round(1) }}").is_ok());
    }
}
