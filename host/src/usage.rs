//! Usage events for the statistics (sign-ins, refreshes, tickets opened
//! and resolved, messages): one per thing that happened, counted by day.

use crate::model::{new_id, UsageEvent};
use crate::store::Store;
use crate::time::now;

/// Records that `user_id` did `kind` (see [`crate::model::usage_kind`])
/// now. A failure is logged, not returned: statistics never fail a
/// user's request.
pub async fn record(store: &dyn Store, user_id: &str, kind: &str) {
    let event = UsageEvent {
        id: new_id(),
        user_id: user_id.to_owned(),
        kind: kind.to_owned(),
        at: now(),
    };
    if let Err(err) = store.record_usage(&event).await {
        tracing::warn!(%err, kind, "could not record a usage event");
    }
}
