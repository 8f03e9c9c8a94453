//! Fuzz target: the config loader (TOML, `${ENV}` substitution, validation of every section).
#![no_main]

use cityops_config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Some variables are set, some are not: both paths of the substitution run.
    let lookup = |name: &str| name.starts_with('C').then(|| format!("v-{name}"));
    match Config::from_str_with_env(text, &lookup) {
        Ok(config) => {
            // A valid config prints (secrets redacted) without panicking.
            let _ = format!("{config:?}");
        }
        Err(error) => {
            // Every problem names where it is and what is wrong.
            assert!(!error.problems.is_empty());
            let _ = error.to_string();
        }
    }
});
