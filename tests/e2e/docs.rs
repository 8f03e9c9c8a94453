//! The docs match the code: every config key the structs accept is documented.

use cityops_e2e::repo_root;

/// The serde names of the `pub` fields of the config structs in one source file.
fn config_keys(source: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rename: Option<String> = None;
    for line in source.lines().map(str::trim) {
        if line.starts_with("#[serde(") {
            if let Some(start) = line.find("rename = \"") {
                let rest = &line[start + 10..];
                rename = rest.split('"').next().map(str::to_owned);
            }
            continue;
        }
        if let Some(field) = line
            .strip_prefix("pub ")
            .and_then(|l| l.split_once(':'))
            .map(|(name, _)| name)
            && field.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && !field.is_empty()
        {
            keys.push(rename.take().unwrap_or_else(|| field.to_owned()));
            continue;
        }
        if !line.starts_with("///") && !line.is_empty() {
            rename = None;
        }
    }
    keys
}

#[test]
fn every_config_key_is_documented_in_configuration_md() {
    let root = repo_root();
    let docs = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
    let mut undocumented = Vec::new();
    let mut checked = 0;
    for file in ["feed.rs", "sections.rs", "ingest.rs", "mqtt.rs", "alert.rs"] {
        let source =
            std::fs::read_to_string(root.join("crates/cityops-config/src").join(file)).unwrap();
        for key in config_keys(&source) {
            checked += 1;
            if !docs.contains(&format!("`{key}`")) {
                undocumented.push(format!("{file}: {key}"));
            }
        }
    }
    assert!(
        checked > 40,
        "found only {checked} config keys; is the parser still right?"
    );
    assert!(
        undocumented.is_empty(),
        "config keys missing from docs/configuration.md: {undocumented:?}"
    );
}

#[test]
fn every_event_field_is_documented_in_events_md() {
    let root = repo_root();
    let docs = std::fs::read_to_string(root.join("docs/events.md")).unwrap();
    let source = std::fs::read_to_string(root.join("crates/cityops-event/src/event.rs")).unwrap();
    let fields = config_keys(&source);
    assert_eq!(fields.len(), 17, "{fields:?}");
    for field in fields {
        assert!(
            docs.contains(&format!("`{field}`")),
            "docs/events.md does not describe `{field}`"
        );
    }
}
