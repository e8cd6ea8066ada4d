//! App files: the first byte picks JSON (even) or TOML (odd), the rest is
//! the text, loaded with the built-in sink plugins as `serve` loads it.
#![no_main]

use std::sync::{Arc, OnceLock};

use hookline_core::config::{AppLoader, LoadDefaults};
use hookline_core::settings::Settings;
use hookline_core::sinks::SinkRegistry;

fn loader() -> &'static AppLoader {
    static LOADER: OnceLock<AppLoader> = OnceLock::new();
    LOADER.get_or_init(|| {
        let mut sinks = SinkRegistry::new();
        sinks.register(Arc::new(hookline_sink_http::HttpSinkPlugin::new().unwrap()));
        sinks.register(Arc::new(hookline_sink_lambda::LambdaSinkPlugin::new()));
        let env: hookline_core::config::EnvLookup = Arc::new(|name| (name == "SET").then(|| "value".to_string()));
        AppLoader::new(sinks, LoadDefaults::from(&Settings::default()), env)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    if let Ok(text) = std::str::from_utf8(rest) {
        hookline_core::fuzzing::app_file(loader(), kind % 2 == 1, text);
    }
});
