//! The model registry over HTTP. Everyone signed in lists the models they
//! may use; technicians add, change and remove models and watch downloads.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures::Stream;
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use crate::api::audit;
use crate::download::DownloadProgress;
use crate::error::{ApiResult, AppError, Json, Path};
use crate::model::ModelRecord;
use crate::policy::Caller;
use crate::registry::{self, ModelChanges, NewModel};
use crate::state::AppState;

/// A model as the API shows it; technicians also get its download progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelView {
    #[serde(flatten)]
    pub model: ModelRecord,
    /// Technicians only, while a download or check runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<DownloadProgress>,
}

fn view(state: &AppState, caller: &Caller, model: ModelRecord) -> ModelView {
    let progress = (caller.user.role == corral_sdk::Role::Technician
        && state.downloads.is_active(&model.id))
    .then(|| state.downloads.progress(&model));
    ModelView { model, progress }
}

/// Models the caller may use, by name (technicians: every model).
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub items: Vec<ModelView>,
}

/// The models the caller may use; technicians see all, with status and
/// download progress.
#[utoipa::path(get, path = "/api/models", tag = "models",
    responses((status = 200, description = "The models, by name", body = ModelList)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<ModelList>> {
    let models = registry::usable_models(&state, &caller.user).await?;
    let items = models
        .into_iter()
        .map(|m| view(&state, &caller, m))
        .collect();
    Ok(Json(ModelList { items }))
}

/// One model the caller may use.
#[utoipa::path(get, path = "/api/models/{id}", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 200, description = "The model", body = ModelView),
        (status = 404, description = "No such model usable by the caller", body = corral_sdk::ErrorBody),
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ModelView>> {
    let model = registry::get_usable(&state, &caller.user, &id).await?;
    Ok(Json(view(&state, &caller, model)))
}

/// Add a model. A URL source is downloaded in the background (watch
/// `status`, `/api/models/{id}/progress` or `/api/events`); a local path is
/// ready at once.
#[utoipa::path(post, path = "/api/models", tag = "models",
    request_body = NewModel,
    responses(
        (status = 202, description = "Added; the download runs in the background", body = ModelView),
        (status = 409, description = "A model with this name exists", body = corral_sdk::ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(req): Json<NewModel>,
) -> ApiResult<(StatusCode, Json<ModelView>)> {
    let model = registry::create(&state, req).await?;
    let details = json!({ "name": model.name, "backend": model.backend, "source": model.source });
    audit(&state, &caller, "model.create", &model.id, details).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&state, &caller, model))))
}

/// Change a model. A new `source` or `sha256` downloads the file again; the
/// current file stays in use until the new one is ready.
#[utoipa::path(patch, path = "/api/models/{id}", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    request_body = ModelChanges,
    responses(
        (status = 200, description = "Updated", body = ModelView),
        (status = 404, description = "No such model", body = corral_sdk::ErrorBody),
        (status = 409, description = "Another model has this name", body = corral_sdk::ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(changes): Json<ModelChanges>,
) -> ApiResult<Json<ModelView>> {
    let (before, model) = registry::update(&state, &id, changes).await?;
    if before != model {
        let mut changed = serde_json::Map::new();
        let (old, new) = (json!(before), json!(model));
        if let (Some(old), Some(new)) = (old.as_object(), new.as_object()) {
            for (key, value) in new {
                if key != "updated_at" && old.get(key) != Some(value) {
                    changed.insert(key.clone(), value.clone());
                }
            }
        }
        let details = json!({ "name": model.name, "changed": changed });
        audit(&state, &caller, "model.update", &model.id, details).await?;
    }
    Ok(Json(view(&state, &caller, model)))
}

/// Remove a model: stops its download and deletes its downloaded files.
/// Chats that used it keep showing its name.
#[utoipa::path(delete, path = "/api/models/{id}", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such model", body = corral_sdk::ErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let model = registry::delete(&state, &id).await?;
    let details = json!({ "name": model.name, "source": model.source });
    audit(&state, &caller, "model.delete", &model.id, details).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A model's download progress.
#[utoipa::path(get, path = "/api/models/{id}/progress", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 200, description = "Progress now", body = DownloadProgress),
        (status = 404, description = "No such model", body = corral_sdk::ErrorBody),
    ))]
pub async fn progress(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DownloadProgress>> {
    let model = state
        .store
        .get_model(&id)
        .await?
        .ok_or(AppError::NotFound("model"))?;
    Ok(Json(state.downloads.progress(&model)))
}

/// The host's events as Server-Sent Events: each with the event name and
/// JSON data of an `Event` (`model_download`, `model_status`,
/// `model_deleted`). A listener that falls behind gets a `lagged` event
/// saying how many it missed.
#[utoipa::path(get, path = "/api/events", tag = "models",
    responses((status = 200, description = "An endless stream of events",
        content_type = "text/event-stream", body = crate::events::Event)))]
pub async fn events(State(state): State<AppState>) -> impl IntoResponse {
    let rx = state.events.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(event) => SseEvent::default()
                .event(event.name())
                .json_data(&event)
                .unwrap_or_else(|_| SseEvent::default().comment("unencodable event")),
            Err(RecvError::Lagged(n)) => SseEvent::default()
                .event("lagged")
                .data(json!({ "missed": n }).to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(event), rx))
    });
    sse(stream)
}

fn sse<S>(stream: S) -> impl IntoResponse
where
    S: Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
{
    crate::api::event_stream(
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
}
