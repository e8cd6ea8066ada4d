//! Dead-letter retention: each app's dead letters go once older than its
//! `dead_letters.max_age_ms`, and past its `max_count` the oldest go.

use std::sync::Arc;
use std::time::Duration;

use crate::config::DeadLetterRetention;
use crate::metrics::{ExpiryLabels, Metrics};
use crate::registry::Snapshot;
use crate::store::{DeadLetterQuery, SharedStore, StoreError};

/// Runs one round over every app; returns when to run the next.
///
/// Every letter past the longest `max_age_ms` of any app (at least the
/// daemon's) goes in one store call, whatever its app; apps with a shorter
/// age or a `max_count` are then read and trimmed one by one.
pub(crate) async fn expire_once(
    store: &SharedStore,
    snapshot: &Snapshot,
    defaults: DeadLetterRetention,
    metrics: &Metrics,
    now_ms: u64,
) -> Duration {
    let apps: Vec<(Arc<str>, DeadLetterRetention)> = snapshot.apps().map(|a| (a.id.clone(), a.dead_letters)).collect();
    let ages = || apps.iter().map(|(_, r)| r.max_age_ms).chain([defaults.max_age_ms]);
    let longest = ages().max().unwrap_or(defaults.max_age_ms);
    let shortest = ages().min().unwrap_or(defaults.max_age_ms);
    let counted = |cause: &'static str, result: Result<usize, StoreError>| match result {
        Ok(0) => {}
        Ok(n) => {
            metrics
                .dead_letters_expired
                .get_or_create(&ExpiryLabels { cause })
                .inc_by(n as u64);
            tracing::info!(expired = n, cause, "dead letters expired");
        }
        Err(error) => tracing::warn!(%error, "could not expire dead letters"),
    };
    counted("age", store.expire_dead_letters(now_ms.saturating_sub(longest)).await);
    for (app, retention) in apps {
        if retention.max_age_ms >= longest && retention.max_count.is_none() {
            continue;
        }
        let query = DeadLetterQuery {
            app_id: Some(app.to_string()),
            ..DeadLetterQuery::default()
        };
        let mut letters = match store.dead_letters(query).await {
            Ok(letters) => letters,
            Err(error) => {
                tracing::warn!(%error, app = %app, "could not read dead letters to expire them");
                continue;
            }
        };
        letters.sort_by_key(|l| (l.dead_at_ms, l.record.key));
        let before = now_ms.saturating_sub(retention.max_age_ms);
        let old = letters.partition_point(|l| l.dead_at_ms < before);
        let aged: Vec<_> = letters[..old].iter().map(|l| l.record.key).collect();
        let kept = &letters[old..];
        let over = retention.max_count.map_or(0, |max| {
            kept.len().saturating_sub(usize::try_from(max).unwrap_or(usize::MAX))
        });
        let surplus: Vec<_> = kept[..over].iter().map(|l| l.record.key).collect();
        if !aged.is_empty() {
            counted("age", store.purge_dead_letters(aged).await);
        }
        if !surplus.is_empty() {
            counted("count", store.purge_dead_letters(surplus).await);
        }
    }
    Duration::from_millis((shortest / 10).clamp(100, 60_000))
}
