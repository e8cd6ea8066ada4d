//! The sink plugin registry: which plugin builds a webhook, chosen by which
//! selector key (`url`, `lambda_function`, …) the webhook carries.

use std::sync::Arc;

use hookline_sink_api::{BuildContext, Sink, SinkConfigError, SinkPlugin, WebhookSpec};

/// The plugins the daemon was started with. The engine knows no plugin by
/// name; the binary registers them.
#[derive(Clone, Default)]
pub struct SinkRegistry {
    plugins: Vec<Arc<dyn SinkPlugin>>,
}

impl std::fmt::Debug for SinkRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.plugins.iter().map(|p| p.kind())).finish()
    }
}

impl SinkRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a plugin. Panics if another plugin already claims its selector
    /// key: that is a programming error in the binary.
    pub fn register(&mut self, plugin: Arc<dyn SinkPlugin>) -> &mut Self {
        assert!(
            self.plugins.iter().all(|p| p.selector_key() != plugin.selector_key()),
            "two sink plugins claim `{}`",
            plugin.selector_key()
        );
        self.plugins.push(plugin);
        self
    }

    /// The selector keys, for error messages (`` `url` or `lambda_function` ``).
    pub fn selector_keys(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.selector_key()).collect()
    }

    /// What to tell the user about the keys of a webhook that `kind` (the
    /// plugin that built it, when one did) does not read: a key of another
    /// kind (`sqs` on an http webhook) names that kind, any other key is
    /// unknown. Both are ignored.
    pub fn key_warnings(&self, kind: Option<&str>, spec: &WebhookSpec) -> Vec<String> {
        let reads = |p: &Arc<dyn SinkPlugin>, key: &str| p.selector_key() == key || p.own_keys().contains(&key);
        // A sink's own kind is its plugin's, a colon, and a detail.
        let kind = kind.map(|k| k.split_once(':').map_or(k, |(plugin, _)| plugin));
        let mut warnings = Vec::new();
        for key in spec.keys() {
            if self.plugins.iter().any(|p| Some(p.kind()) == kind && reads(p, key)) {
                continue;
            }
            let owners: Vec<String> = self
                .plugins
                .iter()
                .filter(|p| reads(p, key))
                .map(|p| format!("{} (`{}`)", p.kind(), p.selector_key()))
                .collect();
            match (owners.is_empty(), kind) {
                (true, _) => warnings.push(format!("unknown key `{key}` is ignored")),
                (false, Some(kind)) => warnings.push(format!(
                    "`{key}` belongs to {} webhooks and is ignored on this {kind} webhook",
                    owners.join(" and ")
                )),
                (false, None) => {}
            }
        }
        warnings
    }

    /// Picks the plugin for a webhook and builds its sink; returns the
    /// sink's kind (the plugin's, or the sink's own, see [`Sink::kind`]),
    /// the default webhook id and the sink.
    pub fn build(
        &self,
        spec: &WebhookSpec,
        context: &BuildContext<'_>,
    ) -> Result<(&'static str, String, Arc<dyn Sink>), SinkConfigError> {
        let present: Vec<&Arc<dyn SinkPlugin>> = self
            .plugins
            .iter()
            .filter(|p| spec.get(p.selector_key()).is_some_and(|v| !v.is_null()))
            .collect();
        let keys = || {
            self.selector_keys()
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        let plugin = match present.as_slice() {
            [one] => *one,
            [] => {
                return Err(SinkConfigError::new(format!(
                    "a webhook needs a target: set {}",
                    keys()
                )));
            }
            _ => {
                return Err(SinkConfigError::new(format!(
                    "a webhook has exactly one target, but this one sets {}",
                    present
                        .iter()
                        .map(|p| format!("`{}`", p.selector_key()))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )));
            }
        };
        let Some(default_id) = plugin.default_id(spec) else {
            return Err(SinkConfigError::new(format!(
                "`{}` must be a non-empty string",
                plugin.selector_key()
            )));
        };
        let sink = plugin.build_with(spec, context)?;
        let kind = sink.kind().map_or(plugin.kind(), intern_kind);
        Ok((kind, default_id, Arc::from(sink)))
    }
}

/// One `&'static str` per distinct kind a sink named (`wasm:slack.wasm`):
/// metric labels and webhooks hold the kind as a `&'static str`, and the
/// kinds of a process are few (one per component file name).
fn intern_kind(kind: String) -> &'static str {
    static KINDS: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut kinds = KINDS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = kinds.iter().find(|k| **k == kind) {
        return known;
    }
    let leaked: &'static str = Box::leak(kind.into_boxed_str());
    kinds.push(leaked);
    leaked
}
