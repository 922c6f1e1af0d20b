//! Liveness and readiness probes.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Json;
use crate::state::AppState;
use crate::store::StoreError;

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
    /// The store kind, for `/readyz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Why `/readyz` is not ready, when the operator must act: a newer
    /// Corral has upgraded the store, so this host must be upgraded too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        store: None,
        reason: None,
    })
}

/// The process can serve requests: the store answers, and no newer Corral
/// has upgraded it past what this host knows.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The store does not answer, or was upgraded by a newer \
            Corral (`status` is `upgraded` and `reason` says what to do)", body = Health),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let store = Some(state.store.kind().to_owned());
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
                store,
                reason: None,
            }),
        ),
        Err(StoreError::Newer(why)) => {
            tracing::error!(%why, "the store was upgraded by a newer Corral; this host is not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "upgraded".into(),
                    store,
                    reason: Some(why),
                }),
            )
        }
        Err(err) => {
            tracing::warn!(%err, "store not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable".into(),
                    store,
                    reason: None,
                }),
            )
        }
    }
}
