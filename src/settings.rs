//! Layered daemon settings: embedded defaults, then the `--config` TOML
//! file, then `HOOKLINE_*` environment variables, then flags.
//!
//! Each layer is checked on its own before they are merged, so an error
//! names where the bad value came from: the file, the variable or the flag.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use hookline_core::Settings;
use hookline_core::settings::LogFormat;
use serde::Deserialize;
use toml::{Table, Value};

/// Values given as flags; `None` when the flag was not given.
#[derive(Debug, Default, Clone)]
pub(crate) struct FlagOverrides {
    pub(crate) listen: Option<String>,
    pub(crate) apps_dir: Option<PathBuf>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) log_format: Option<String>,
}

/// The settings, and what looked wrong without being an error.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) settings: Settings,
    /// e.g. an unknown `HOOKLINE_*` variable; to be logged once logging runs.
    pub(crate) warnings: Vec<String>,
}

/// Settings that hold paths; relative ones in a config file are relative
/// to that file.
const PATH_KEYS: &[&str] = &["apps_dir", "data_dir"];

/// Builds the settings from every layer, reading the process environment.
pub(crate) fn load(config_file: Option<&Path>, flags: &FlagOverrides) -> Result<Loaded> {
    load_from(config_file, flags, std::env::vars())
}

fn load_from(
    config_file: Option<&Path>,
    flags: &FlagOverrides,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<Loaded> {
    let defaults = Table::try_from(Settings::default()).context("default settings must serialize")?;
    let mut table = match config_file {
        Some(path) => read_config_file(path)?,
        None => Table::new(),
    };
    let mut warnings = Vec::new();
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("HOOKLINE_") else {
            continue;
        };
        let Some((section, key)) = locate(&defaults, &rest.to_ascii_lowercase()) else {
            warnings.push(unknown_variable(&defaults, &name));
            continue;
        };
        let value = parse_env_value(&raw);
        check_alone(section.as_deref(), &key, &value).map_err(|e| anyhow!("environment variable {name}: {e}"))?;
        set(&mut table, section, key, value);
    }
    let flag_values = [
        ("--listen", "listen", flags.listen.clone()),
        (
            "--apps",
            "apps_dir",
            flags.apps_dir.as_ref().map(|d| d.display().to_string()),
        ),
        (
            "--data-dir",
            "data_dir",
            flags.data_dir.as_ref().map(|d| d.display().to_string()),
        ),
        ("--log-format", "log_format", flags.log_format.clone()),
    ];
    for (flag, key, value) in flag_values {
        if let Some(value) = value {
            let value = Value::String(value);
            check_alone(None, key, &value).map_err(|e| anyhow!("{flag}: {e}"))?;
            set(&mut table, None, key.to_string(), value);
        }
    }
    // Every layer passed on its own; together they can only fail on a
    // combination, which no single source is to blame for.
    let settings = Settings::deserialize(Value::Table(table))
        .map_err(|e| anyhow!("invalid settings (config file, HOOKLINE_* variables and flags together): {e}"))?;
    Ok(Loaded { settings, warnings })
}

/// Reads and checks the config file; relative paths in it are made
/// relative to the file's directory.
fn read_config_file(path: &Path) -> Result<Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {} (--config)", path.display()))?;
    let mut table = text.parse::<Table>().map_err(|e| {
        anyhow!(
            "config file {}: not valid TOML: {}",
            path.display(),
            e.message().trim_end()
        )
    })?;
    let base = path.parent().unwrap_or(Path::new(""));
    for key in PATH_KEYS {
        if let Some(Value::String(value)) = table.get_mut(*key)
            && Path::new(value.as_str()).is_relative()
        {
            *value = base.join(value.as_str()).display().to_string();
        }
    }
    Settings::deserialize(Value::Table(table.clone())).map_err(|e| anyhow!("config file {}: {e}", path.display()))?;
    Ok(table)
}

/// Deserializes a single setting on its own, to blame its source.
fn check_alone(section: Option<&str>, key: &str, value: &Value) -> Result<(), String> {
    let mut table = Table::new();
    set(&mut table, section.map(str::to_string), key.to_string(), value.clone());
    Settings::deserialize(Value::Table(table))
        .map(drop)
        .map_err(|e| e.message().trim_end().to_string())
}

fn set(table: &mut Table, section: Option<String>, key: String, value: Value) {
    match section {
        None => {
            table.insert(key, value);
        }
        Some(section) => {
            let entry = table.entry(section).or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(inner) = entry {
                inner.insert(key, value);
            }
        }
    }
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

/// Every variable name that sets something, e.g. `HOOKLINE_RETRY_MAX_AGE_MS`.
fn known_variables(defaults: &Table) -> Vec<String> {
    let mut names = Vec::new();
    for (key, value) in defaults {
        match value {
            Value::Table(inner) => {
                names.extend(inner.keys().map(|k| format!("HOOKLINE_{key}_{k}").to_ascii_uppercase()))
            }
            _ => names.push(format!("HOOKLINE_{key}").to_ascii_uppercase()),
        }
    }
    names
}

fn unknown_variable(defaults: &Table, name: &str) -> String {
    let nearest = known_variables(defaults)
        .into_iter()
        .map(|known| (strsim::levenshtein(name, &known), known))
        .min();
    match nearest {
        Some((distance, known)) if distance <= 3 => {
            format!("environment variable {name} is not a Hookline setting and is ignored; did you mean {known}?")
        }
        _ => format!(
            "environment variable {name} is not a Hookline setting and is ignored (settings are HOOKLINE_<KEY> or HOOKLINE_<SECTION>_<KEY>, e.g. HOOKLINE_RETRY_MAX_AGE_MS)"
        ),
    }
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

/// The log format asked for, read leniently, for reporting an error in the
/// settings themselves in the format the operator expects.
pub(crate) fn requested_log_format(config_file: Option<&Path>, flags: &FlagOverrides) -> LogFormat {
    let from_file = || {
        let text = std::fs::read_to_string(config_file?).ok()?;
        let table = text.parse::<Table>().ok()?;
        table.get("log_format")?.as_str().map(str::to_string)
    };
    let asked = flags
        .log_format
        .clone()
        .or_else(|| std::env::var("HOOKLINE_LOG_FORMAT").ok())
        .or_else(from_file);
    match asked.as_deref() {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn env_names_map_to_sections() {
        let loaded = load_from(
            None,
            &FlagOverrides::default(),
            vars(&[
                ("HOOKLINE_RETRY_MAX_AGE_MS", "5000"),
                ("HOOKLINE_DEAD_LETTER_RETENTION_MS", "7"),
                ("HOOKLINE_LISTEN", "0.0.0.0:1"),
                ("HOOKLINE_INGEST_DURABILITY", "memory"),
                ("HOOKLINE_BATCHING_ENABLED", "false"),
            ]),
        )
        .unwrap();
        let settings = loaded.settings;
        assert_eq!(settings.retry.max_age_ms, 5000);
        assert_eq!(settings.dead_letter.retention_ms, 7);
        assert_eq!(settings.listen.to_string(), "0.0.0.0:1");
        assert!(!settings.batching.enabled);
        assert_eq!(settings.ingest.durability, hookline_core::settings::Durability::Memory);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn an_unknown_variable_is_a_warning_naming_the_nearest_setting() {
        let loaded = load_from(
            None,
            &FlagOverrides::default(),
            vars(&[
                ("HOOKLINE_RETRY_MAX_AGE", "5"),
                ("HOOKLINE_WHATEVER_ELSE_ENTIRELY", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(loaded.warnings.len(), 2);
        assert!(
            loaded.warnings[0].contains("HOOKLINE_RETRY_MAX_AGE is not a Hookline setting")
                && loaded.warnings[0].contains("did you mean HOOKLINE_RETRY_MAX_AGE_MS?"),
            "{}",
            loaded.warnings[0]
        );
        assert!(!loaded.warnings[1].contains("did you mean"), "{}", loaded.warnings[1]);
    }

    #[test]
    fn errors_name_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookline.toml");
        std::fs::write(&file, "[retry]\nmax_age_ms = \"soon\"\n").unwrap();
        let error = load_from(Some(&file), &FlagOverrides::default(), vars(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("config file {}:", file.display())),
            "{error}"
        );

        std::fs::write(&file, "[retry]\nmax_age_ms = 5\n").unwrap();
        let error = load_from(
            Some(&file),
            &FlagOverrides::default(),
            vars(&[("HOOKLINE_RETRY_MAX_ATTEMPTS", "many")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("environment variable HOOKLINE_RETRY_MAX_ATTEMPTS:"),
            "{error}"
        );

        let flags = FlagOverrides {
            listen: Some("nowhere".into()),
            ..FlagOverrides::default()
        };
        let error = load_from(Some(&file), &flags, vars(&[])).unwrap_err().to_string();
        assert!(error.starts_with("--listen:"), "{error}");
    }

    #[test]
    fn paths_in_a_config_file_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookline.toml");
        std::fs::write(&file, "apps_dir = \"apps\"\ndata_dir = \"/var/lib/hookline\"\n").unwrap();
        let loaded = load_from(Some(&file), &FlagOverrides::default(), vars(&[])).unwrap();
        assert_eq!(loaded.settings.apps_dir, dir.path().join("apps"));
        assert_eq!(loaded.settings.data_dir, Path::new("/var/lib/hookline"));
        // Variables and flags stay relative to the working directory.
        let loaded = load_from(
            Some(&file),
            &FlagOverrides::default(),
            vars(&[("HOOKLINE_APPS_DIR", "here")]),
        )
        .unwrap();
        assert_eq!(loaded.settings.apps_dir, Path::new("here"));
    }
}
