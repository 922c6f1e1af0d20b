//! The audit log: what staff changed, written by the services that make
//! the change, so every way to reach a change (API, command line) records
//! it the same way.

use crate::model::{new_id, AuditEntry, User};
use crate::store::{Store, StoreResult};
use crate::time::now;

/// Appends an entry for an action of `actor` on `target` (a user id, a
/// setting name, a ticket id, ...).
pub async fn record(
    store: &dyn Store,
    actor: &User,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> StoreResult<()> {
    let entry = AuditEntry {
        id: new_id(),
        at: now(),
        actor_id: actor.id.clone(),
        actor_username: actor.username.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        details,
    };
    store.append_audit(&entry).await
}
