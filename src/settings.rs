//! Layered daemon settings: embedded defaults, then the `--config` TOML
//! file, then `HOOKLINE_*` environment variables, then flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hookline_core::Settings;
use toml::{Table, Value};

/// Values given as flags; `None` when the flag was not given.
#[derive(Debug, Default, Clone)]
pub(crate) struct FlagOverrides {
    pub(crate) listen: Option<String>,
    pub(crate) apps_dir: Option<PathBuf>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) log_format: Option<String>,
}

/// Builds the settings from every layer.
pub(crate) fn load(config_file: Option<&Path>, flags: &FlagOverrides) -> Result<Settings> {
    let mut table = Table::new();
    if let Some(path) = config_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the config file {}", path.display()))?;
        table = text
            .parse::<Table>()
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
    }
    apply_env(&mut table, std::env::vars())?;
    let mut set = |key: &str, value: Value| {
        table.insert(key.to_string(), value);
    };
    if let Some(listen) = &flags.listen {
        set("listen", Value::String(listen.clone()));
    }
    if let Some(dir) = &flags.apps_dir {
        set("apps_dir", Value::String(dir.display().to_string()));
    }
    if let Some(dir) = &flags.data_dir {
        set("data_dir", Value::String(dir.display().to_string()));
    }
    if let Some(format) = &flags.log_format {
        set("log_format", Value::String(format.clone()));
    }
    let origin = config_file.map_or("the settings".to_string(), |p| p.display().to_string());
    Settings::deserialize(toml::Value::Table(table))
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))
        .context("invalid settings (config file, HOOKLINE_* variables or flags)")
}

use serde::Deserialize;

/// Overlays `HOOKLINE_<SECTION>_<KEY>` and `HOOKLINE_<KEY>` variables. Only
/// names of real settings are read, so unrelated `HOOKLINE_*` variables are
/// left alone.
fn apply_env(table: &mut Table, vars: impl Iterator<Item = (String, String)>) -> Result<()> {
    let defaults = Table::try_from(Settings::default()).context("default settings must serialize")?;
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("HOOKLINE_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = locate(&defaults, &rest) else {
            continue;
        };
        let value = parse_env_value(&raw);
        match section {
            None => {
                table.insert(key, value);
            }
            Some(section) => {
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| Value::Table(Table::new()));
                let Value::Table(inner) = entry else {
                    bail!("config file: `{section}` must be a table");
                };
                inner.insert(key, value);
            }
        }
    }
    Ok(())
}

/// Finds which setting `retry_max_age_ms` names: `(Some("retry"), "max_age_ms")`.
fn locate(defaults: &Table, name: &str) -> Option<(Option<String>, String)> {
    if let Some(v) = defaults.get(name)
        && !v.is_table()
    {
        return Some((None, name.to_string()));
    }
    for (section, value) in defaults {
        if let Value::Table(inner) = value
            && let Some(key) = name.strip_prefix(section.as_str()).and_then(|k| k.strip_prefix('_'))
            && inner.contains_key(key)
        {
            return Some((Some(section.clone()), key.to_string()));
        }
    }
    None
}

/// An environment value as TOML: numbers and booleans typed, the rest strings.
fn parse_env_value(raw: &str) -> Value {
    if let Ok(n) = raw.parse::<i64>() {
        return Value::Integer(n);
    }
    match raw {
        "true" => Value::Boolean(true),
        "false" => Value::Boolean(false),
        _ => Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_map_to_sections() {
        let mut table = Table::new();
        let vars = [
            ("HOOKLINE_RETRY_MAX_AGE_MS", "5000"),
            ("HOOKLINE_DEAD_LETTER_RETENTION_MS", "7"),
            ("HOOKLINE_LISTEN", "0.0.0.0:1"),
            ("HOOKLINE_INGEST_DURABILITY", "memory"),
            ("HOOKLINE_BATCHING_ENABLED", "false"),
            ("HOOKLINE_TEST_PEERS", "/somewhere"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        apply_env(&mut table, vars.into_iter()).unwrap();
        let settings = Settings::deserialize(Value::Table(table)).unwrap();
        assert_eq!(settings.retry.max_age_ms, 5000);
        assert_eq!(settings.dead_letter.retention_ms, 7);
        assert_eq!(settings.listen.to_string(), "0.0.0.0:1");
        assert!(!settings.batching.enabled);
        assert_eq!(settings.ingest.durability, hookline_core::settings::Durability::Memory);
    }
}
