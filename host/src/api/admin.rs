//! Platform settings and the audit log.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::accounts::{registration_open, set_registration_open};
use crate::api::{paging, Paged};
use crate::error::{ApiResult, Json, Query};
use crate::model::{AuditEntry, AuditQuery};
use crate::policy::Caller;
use crate::state::AppState;

/// Filters for the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only entries by this user id.
    pub actor: Option<String>,
    /// Only this action, e.g. `user.role`.
    pub action: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// Entries to skip.
    #[param(maximum = 1_000_000_000)]
    pub offset: Option<u64>,
}

/// The audit log, newest first. Admins see entries about models and nodes
/// with their name and the fields changed, not the values.
#[utoipa::path(get, path = "/api/audit", tag = "admin",
    params(AuditParams),
    responses((status = 200, description = "A page of entries", body = Paged<AuditEntry>)))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<AuditParams>,
) -> ApiResult<Json<Paged<AuditEntry>>> {
    let (limit, offset) = paging(params.limit, params.offset)?;
    let page = state
        .store
        .list_audit(&AuditQuery {
            actor_id: params.actor.filter(|s| !s.is_empty()),
            action: params.action.filter(|s| !s.is_empty()),
            limit,
            offset,
        })
        .await?;
    let mut items = page.items;
    if caller.user.role != corral_sdk::Role::Technician {
        for entry in &mut items {
            for_admins(entry);
        }
    }
    Ok(Json(Paged {
        items,
        total: page.total,
        limit,
        offset,
    }))
}

/// Entries about models and nodes keep, for admins, the name, which
/// fields changed, and the values of those admins see anyway (a model's
/// access rules): the rest hold sources, server paths, node addresses and
/// errors, which the API shows technicians only.
fn for_admins(entry: &mut AuditEntry) {
    let technical = ["model.", "node."]
        .iter()
        .any(|domain| entry.action.starts_with(domain));
    if !technical {
        return;
    }
    let details = std::mem::take(&mut entry.details);
    let mut kept = serde_json::Map::new();
    if let Some(name) = details.get("name") {
        kept.insert("name".into(), name.clone());
    }
    let changed = details
        .get("changed")
        .and_then(|c| c.as_object())
        .or_else(|| {
            details
                .as_object()
                .filter(|_| entry.action == "node.update")
        });
    if let Some(changed) = changed {
        let fields: Vec<&String> = changed.keys().collect();
        kept.insert("changed".into(), serde_json::json!(fields));
        if let Some(access) = changed.get("access") {
            kept.insert("access".into(), access.clone());
        }
    }
    entry.details = serde_json::Value::Object(kept);
}

/// Platform settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct Settings {
    /// Whether anyone may create an account at `/api/auth/register`.
    pub registration_open: bool,
}

/// Current platform settings.
#[utoipa::path(get, path = "/api/settings", tag = "admin",
    responses((status = 200, description = "Settings", body = Settings)))]
pub async fn get_settings(State(state): State<AppState>) -> ApiResult<Json<Settings>> {
    Ok(Json(Settings {
        registration_open: registration_open(state.store.as_ref()).await?,
    }))
}

/// Settings to change; absent ones stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSettingsRequest {
    pub registration_open: Option<bool>,
}

/// Change platform settings.
#[utoipa::path(patch, path = "/api/settings", tag = "admin",
    request_body = UpdateSettingsRequest,
    responses((status = 200, description = "Settings after the change", body = Settings)))]
pub async fn update_settings(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<UpdateSettingsRequest>,
) -> ApiResult<Json<Settings>> {
    if let Some(open) = req.registration_open {
        set_registration_open(state.store.as_ref(), &caller.user, open).await?;
    }
    get_settings(State(state)).await
}
