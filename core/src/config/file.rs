//! Reading one app file: JSON or TOML, one app, an array of apps (soketi's
//! array app manager), or `{"apps": [...]}` / `[[apps]]`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::settings::{BatchingSettings, RetrySettings, Settings};
use crate::sinks::SinkRegistry;

use super::app::{App, DeadLetterRetention, build_app};
use super::env::{EnvLookup, substitute_tree};

/// The daemon-level defaults an app file's fields fall back to.
#[derive(Debug, Clone)]
pub struct LoadDefaults {
    /// `[batching]`
    pub batching: BatchingSettings,
    /// `[retry]`
    pub retry: RetrySettings,
    /// `[delivery] max_in_flight`
    pub max_in_flight: usize,
    /// `[dead_letter]`: how long and how many dead letters an app keeps.
    pub dead_letters: DeadLetterRetention,
    /// The WASM filter host; `None` refuses app files that use filters.
    pub filters: Option<std::sync::Arc<crate::filter::FilterHost>>,
    /// Read `filters` entries and `sink` objects but compile none: the apps
    /// carry no filters and their sink components deliver nothing. For
    /// tools that need only apps' ids, keys and secrets.
    pub skip_filters: bool,
    /// The sink component host; `None` refuses webhooks with a `sink`.
    pub components: Option<std::sync::Arc<crate::sink_component::SinkComponentHost>>,
    /// Load filter chains in the background (the daemon's first load): an
    /// app serves ingest at once and its batches wait for its chains.
    pub load_filters_in_background: bool,
}

impl From<&Settings> for LoadDefaults {
    fn from(settings: &Settings) -> Self {
        Self {
            batching: settings.batching,
            retry: settings.retry,
            max_in_flight: settings.delivery.max_in_flight,
            dead_letters: DeadLetterRetention::from(&settings.dead_letter),
            filters: None,
            skip_filters: false,
            components: None,
            load_filters_in_background: false,
        }
    }
}

/// Whether a path looks like an app file (`*.json` or `*.toml`, not hidden,
/// so editors' swap and temp files are skipped).
pub fn is_app_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    !hidden && matches!(path.extension().and_then(|e| e.to_str()), Some("json" | "toml"))
}

/// Everything wrong with one app file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// Each problem, already saying where (`line 3 column 7: …`, `app "a": …`).
    pub problems: Vec<String>,
    /// What else looked wrong in the file (unknown keys, …), reported
    /// beside the problems so one run shows the file's every mistake.
    pub warnings: Vec<String>,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {problem}", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for FileError {}

/// Loads app files into [`App`]s. Shared by `serve`, reloads and `check`,
/// so that `check` accepts exactly what `serve` would.
#[derive(Clone)]
pub struct AppLoader {
    sinks: SinkRegistry,
    defaults: LoadDefaults,
    env: EnvLookup,
}

impl fmt::Debug for AppLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppLoader")
            .field("sinks", &self.sinks)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

/// The apps of one file that loaded, and the warnings found on the way.
#[derive(Debug)]
pub struct LoadedFile {
    /// The apps, in file order.
    pub apps: Vec<Arc<App>>,
    /// Things that were accepted but look like mistakes (unknown keys).
    pub warnings: Vec<String>,
}

impl AppLoader {
    /// A loader building sinks from `sinks`, with `defaults` for unset fields
    /// and `env` resolving `${NAME}` references.
    /// Sink components (the `sink` key) are built with `defaults.components`.
    pub fn new(mut sinks: SinkRegistry, defaults: LoadDefaults, env: EnvLookup) -> Self {
        use crate::sink_component::ComponentSinkPlugin;
        let components = if defaults.skip_filters {
            ComponentSinkPlugin::unloaded()
        } else {
            ComponentSinkPlugin::new(defaults.components.clone())
        };
        sinks.register(std::sync::Arc::new(components));
        Self { sinks, defaults, env }
    }

    /// This loader, loading filter chains in the background (see
    /// [`LoadDefaults::load_filters_in_background`]).
    pub fn loading_filters_in_background(&self) -> Self {
        let mut loader = self.clone();
        loader.defaults.load_filters_in_background = true;
        loader
    }

    /// Reads and validates one file. Any problem fails the whole file, so a
    /// half-valid file never replaces its last good version.
    pub fn load_file(&self, path: &Path) -> Result<LoadedFile, FileError> {
        let fail = |problems: Vec<String>, warnings: Vec<String>| FileError {
            path: path.to_path_buf(),
            problems,
            warnings,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| fail(vec![format!("cannot read the file: {e}")], Vec::new()))?;
        let (loaded, problems) = self.load_parts(path, &text);
        if problems.is_empty() {
            Ok(loaded)
        } else {
            Err(fail(problems, loaded.warnings))
        }
    }

    /// Validates the text of an app file; `path` decides the format and is
    /// recorded as the apps' source. The error is every problem found.
    pub fn load_text(&self, path: &Path, text: &str) -> Result<LoadedFile, Vec<String>> {
        let (loaded, problems) = self.load_parts(path, text);
        if problems.is_empty() { Ok(loaded) } else { Err(problems) }
    }

    /// The apps that validated with the file's warnings, and its problems
    /// (the file loads only if there are none).
    fn load_parts(&self, path: &Path, text: &str) -> (LoadedFile, Vec<String>) {
        let refused = |problems: Vec<String>| {
            let nothing = LoadedFile {
                apps: Vec::new(),
                warnings: Vec::new(),
            };
            (nothing, problems)
        };
        let document = match parse_document(path, text) {
            Ok(document) => document,
            Err(e) => return refused(vec![e]),
        };
        let definitions = match document {
            Value::Array(items) => items,
            Value::Object(mut obj) if obj.contains_key("apps") => match obj.remove("apps") {
                Some(Value::Array(items)) => items,
                _ => return refused(vec!["`apps` must be an array of apps".to_string()]),
            },
            obj @ Value::Object(_) => vec![obj],
            _ => {
                return refused(vec![
                    "an app file holds an app object, an array of apps, or {\"apps\": [...]}".to_string(),
                ]);
            }
        };
        let source: Arc<Path> = Arc::from(path);
        let mut apps = Vec::with_capacity(definitions.len());
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        for (index, mut definition) in definitions.into_iter().enumerate() {
            let unresolved = substitute_tree(&mut definition, &self.env, &mut vec![]);
            let name = definition
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| format!("app {index}"), |id| format!("app {id:?}"));
            problems.extend(unresolved.iter().map(|e| format!("{name}: {e}")));
            // Validated even with references unresolved (left as written),
            // so one run reports every problem of the app.
            match build_app(definition, &source, &self.sinks, &self.defaults, &mut warnings) {
                Ok(app) if unresolved.is_empty() => apps.push(Arc::new(app)),
                Ok(_) => {}
                Err(e) => problems.extend(e),
            }
        }
        let mut seen_ids = std::collections::HashSet::new();
        let mut seen_keys = std::collections::HashSet::new();
        for app in &apps {
            if !seen_ids.insert(app.id.clone()) {
                problems.push(format!("app id {:?} is defined twice in this file", app.id));
            }
            if !seen_keys.insert(app.key.clone()) {
                problems.push(format!("app key {:?} is used by two apps in this file", app.key));
            }
        }
        (LoadedFile { apps, warnings }, problems)
    }
}

fn parse_document(path: &Path, text: &str) -> Result<Value, String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str::<Value>(text).map_err(|e| {
            let message = e.message().trim_end_matches('\n').to_string();
            match e.span() {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    format!("line {line} column {column}: {message}")
                }
                None => message,
            }
        }),
        _ => serde_json::from_str::<Value>(text).map_err(|e| {
            let message = e.to_string();
            // serde_json appends " at line L column C"; lead with it instead.
            let message = message
                .rsplit_once(" at line ")
                .map(|(m, _)| m.to_string())
                .unwrap_or(message);
            format!("line {} column {}: {message}", e.line(), e.column())
        }),
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loader() -> AppLoader {
        let env: EnvLookup = Arc::new(|name| (name == "APP_SECRET").then(|| "from-env".to_string()));
        AppLoader::new(SinkRegistry::new(), LoadDefaults::from(&Settings::default()), env)
    }

    #[test]
    fn json_syntax_errors_have_line_and_column() {
        let err = loader()
            .load_text(Path::new("a.json"), "[\n  {\"id\": \"a\",,}\n]")
            .unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].starts_with("line 2 column 14: "), "{}", err[0]);
    }

    #[test]
    fn toml_syntax_errors_have_line_and_column() {
        let err = loader()
            .load_text(Path::new("a.toml"), "[[apps]]\nid = \"a\"\nkey = \n")
            .unwrap_err();
        assert!(err[0].starts_with("line 3 column "), "{}", err[0]);
    }

    #[test]
    fn accepts_the_three_shapes_and_env_references() {
        let one = r#"{"id":"a","key":"k","secret":"${APP_SECRET}"}"#;
        let loaded = loader().load_text(Path::new("a.json"), one).unwrap();
        assert_eq!(loaded.apps[0].secret.expose(), "from-env");
        let array = r#"[{"id":"a","key":"k","secret":"s"},{"id":"b","key":"k2","secret":"s"}]"#;
        assert_eq!(loader().load_text(Path::new("a.json"), array).unwrap().apps.len(), 2);
        let toml = "[[apps]]\nid = \"a\"\nkey = \"k\"\nsecret = \"s\"\n[[apps]]\nid = \"b\"\nkey = \"k2\"\nsecret = \"s\"\nenabled = false\n";
        let loaded = loader().load_text(Path::new("a.toml"), toml).unwrap();
        assert_eq!(loaded.apps.len(), 2);
        assert!(!loaded.apps[1].enabled);
    }

    #[test]
    fn reports_every_bad_app_and_duplicates() {
        let text = r#"[{"id":"a","key":"k","secret":"${NOPE}"},{"id":"b","secret":"s"},
                       {"id":"c","key":"k3","secret":"s"},{"id":"c","key":"k3","secret":"s"}]"#;
        let problems = loader().load_text(Path::new("a.json"), text).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].starts_with("app \"a\": "), "{}", problems[0]);
        assert!(problems[0].contains("NOPE is not set"));
        assert!(problems[1].contains("`key` is missing"));
        assert!(problems[2].contains("defined twice"));
        assert!(problems[3].contains("used by two apps"));
    }

    #[test]
    fn every_problem_of_a_webhook_is_reported_with_its_key() {
        let text = r#"{"id":"a","key":"k","secret":"s","webhooks":[
            {"event_types":"channel_occupied","timeout_ms":0,"ordering":"sideways","filters":"x.wasm",
             "headers":{"X-N":[1]},"retry":{"max_tries":3},"max_in_flight":0,"id":""},
            7]}"#;
        let problems = loader().load_text(Path::new("a.json"), text).unwrap_err();
        let all = problems.join("\n");
        for expected in [
            "webhook 0: a webhook needs a target",
            "webhook 0: `id` must be a non-empty string",
            "webhook 0: `event_types` must be an array of event names",
            "webhook 0: `filters` must be an array of {\"wasm\"",
            "webhook 0: header `X-N` must be a string, found an array",
            "webhook 0: `timeout_ms` must be a positive whole number",
            "webhook 0: `retry`: unknown field `max_tries`",
            "webhook 0: `max_in_flight` must be a whole number of at least 1",
            "webhook 0: `ordering` must be \"none\" or \"strict\"",
            "webhook 1 must be an object",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
    }

    #[test]
    fn skips_hidden_and_other_files() {
        assert!(is_app_file(Path::new("/x/apps.json")));
        assert!(is_app_file(Path::new("/x/apps.toml")));
        assert!(!is_app_file(Path::new("/x/.apps.json.swp")));
        assert!(!is_app_file(Path::new("/x/.#apps.json")));
        assert!(!is_app_file(Path::new("/x/apps.json~")));
        assert!(!is_app_file(Path::new("/x/README.md")));
    }
}
