//! A deadline that may be absent, for `tokio::select!` loops that wait on
//! an optional timer (an open batch's close, a lane's next retry).

use tokio::time::Instant;

/// Sleeps until `due`, or forever when there is none.
pub(crate) async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}
