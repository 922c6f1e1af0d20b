//! The model registry over HTTP. Everyone signed in lists the models they
//! may use; technicians add, change and remove models and watch downloads.
//!
//! What a model's record shows depends on the caller: users see what
//! picking a model takes; admins, who manage accounts, also see who may
//! use it; technicians, who manage models, see everything, a source URL's
//! credentials redacted (they are kept only for the download itself).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use corral_sdk::Role;
use futures::{Stream, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use crate::api::audit;
use crate::download::{redact_source, DownloadProgress};
use crate::error::{ApiResult, AppError, Json, Path};
use crate::model::{ModelAccess, ModelKind, ModelRecord, ModelStatus};
use crate::policy::Caller;
use crate::registry::{self, ModelChanges, NewModel};
use crate::state::AppState;
use crate::time::serde_millis;

/// A model as the API shows it. The fields marked "technicians only" are
/// left out for everyone else; `access` is shown to admins too.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelView {
    pub id: String,
    /// Unique; what chats and API clients name.
    #[schema(example = "gemma-3-270m", pattern = r"^[A-Za-z0-9._:-]{1,100}$")]
    pub name: String,
    /// The backend that runs it.
    #[schema(example = "llama")]
    pub backend: String,
    pub kind: ModelKind,
    pub description: String,
    /// The state of the file for the model's source.
    pub status: ModelStatus,
    /// Whether a file is in place to serve requests (during a re-download,
    /// the previous one).
    pub usable: bool,
    /// Context window in tokens; 0 = the model's own.
    pub context_length: u32,
    /// Size of the file (or directory) in use.
    pub size_bytes: Option<u64>,
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_millis")]
    pub updated_at: DateTime<Utc>,
    /// Technicians only: the http(s) URL (credentials shown as `***`) or
    /// the path on the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Technicians only: the expected sha256 of the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub sha256: Option<Option<String>>,
    /// Technicians only: the file (or directory) in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub file_path: Option<Option<String>>,
    /// Technicians only: why the last download or check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub error: Option<Option<String>>,
    /// Technicians only: CPU threads; 0 = automatic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Technicians only: requests served at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 64)]
    pub slots: Option<u32>,
    /// Technicians only: default sampling for requests that do not set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub sampling: Option<corral_sdk::backend::SamplingParams>,
    /// Technicians only: the chat template that overrides the model's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub chat_template: Option<Option<String>>,
    /// Admins and technicians: who may use the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<ModelAccess>,
    /// Technicians only, while a download or check runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<DownloadProgress>,
    /// Technicians only, remote models: the model's name at the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub upstream_model: Option<Option<String>>,
    /// Technicians only, remote models: whether an API key is stored (the
    /// key itself is never shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_set: Option<bool>,
    /// Technicians only, remote models: the fingerprint of the upstream's
    /// pinned certificate; `null`: public certificate authorities.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub tls_fingerprint: Option<Option<String>>,
    /// Technicians only: the models that answer instead, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallbacks: Option<Vec<String>>,
    /// Technicians only: the models that share this one's requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<String>>,
    /// Technicians only, remote models while they cool down (after a 429
    /// or failures in a row): no calls go to the upstream until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<CooldownView>,
    /// Technicians only: the worker node that runs the model; `null`:
    /// this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub node: Option<Option<String>>,
    /// Why the model cannot answer right now (its worker node is down),
    /// while that lasts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// A remote model cooling down.
#[derive(Debug, Serialize, ToSchema)]
pub struct CooldownView {
    /// Seconds left, rounded up.
    pub seconds_left: u64,
    /// Why: the 429's message, or the last of the failures.
    pub reason: String,
}

fn view(state: &AppState, caller: &Caller, model: ModelRecord) -> ModelView {
    let role = caller.user.role;
    let technician = role == Role::Technician;
    let progress = (technician && state.downloads.is_active(&model.id))
        .then(|| state.downloads.progress(&model));
    let usable = model.is_servable();
    let mut view = ModelView {
        id: model.id,
        name: model.name,
        backend: model.backend,
        kind: model.kind,
        description: model.description,
        status: model.status,
        usable,
        context_length: model.context_length,
        size_bytes: model.size_bytes,
        created_at: model.created_at,
        updated_at: model.updated_at,
        source: None,
        sha256: None,
        file_path: None,
        error: None,
        threads: None,
        slots: None,
        sampling: None,
        chat_template: None,
        access: (role != Role::User).then_some(model.access),
        progress,
        upstream_model: None,
        api_key_set: None,
        tls_fingerprint: None,
        fallbacks: None,
        replicas: None,
        cooldown: None,
        node: None,
        unavailable: None,
    };
    if let Some(node) = &model.node {
        let down = state.nodes.link(node).and_then(|l| l.down());
        view.unavailable = down.map(|reason| match technician {
            true => format!("its worker node `{node}` is unreachable: {reason}"),
            false => "its worker node is unreachable".to_owned(),
        });
    }
    if technician {
        view.source = Some(redact_source(&model.source));
        view.sha256 = Some(model.sha256);
        view.file_path = Some(model.file_path);
        view.error = Some(model.error);
        view.threads = Some(model.threads);
        view.slots = Some(model.slots);
        view.sampling = Some(model.sampling);
        view.chat_template = Some(model.chat_template);
        view.fallbacks = Some(model.fallbacks);
        view.replicas = Some(model.replicas);
        view.node = Some(model.node);
        if view.backend == crate::inference::upstream::BACKEND {
            view.upstream_model = Some(model.upstream_model);
            view.api_key_set = Some(model.api_key.is_some());
            view.tls_fingerprint = Some(model.tls_fingerprint);
            view.cooldown = state
                .inference
                .manager
                .cooling(&view.id)
                .map(|c| CooldownView {
                    seconds_left: c.left.as_secs_f64().ceil() as u64,
                    reason: c.reason,
                });
        }
    }
    view
}

/// `model` as the audit log may record it: no credentials in its source.
fn redacted(model: &ModelRecord) -> ModelRecord {
    ModelRecord {
        source: redact_source(&model.source),
        api_key: model.api_key.as_ref().map(|_| "***".to_owned()),
        ..model.clone()
    }
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
    let details = json!({
        "name": model.name,
        "backend": model.backend,
        "source": redact_source(&model.source),
    });
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
        let (old, new) = (json!(redacted(&before)), json!(redacted(&model)));
        if let (Some(old), Some(new)) = (old.as_object(), new.as_object()) {
            for (key, value) in new {
                if key != "updated_at" && old.get(key) != Some(value) {
                    changed.insert(key.clone(), value.clone());
                }
            }
        }
        if before.api_key != model.api_key {
            // Both show as `***`: say that it changed, never what it is.
            let what = if model.api_key.is_some() {
                "replaced"
            } else {
                "removed"
            };
            changed.insert("api_key".into(), json!(what));
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
    let details = json!({ "name": model.name, "source": redact_source(&model.source) });
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
/// saying how many it missed. When the server stops, the stream ends with
/// a `shutting_down` event. It also ends, without one, when the caller's
/// access does (the token expires or is revoked, the account is disabled or
/// no longer a technician's), checked every few seconds: reconnect with a
/// fresh token.
#[utoipa::path(get, path = "/api/events", tag = "models",
    responses((status = 200, description = "A stream of events until the server stops or the \
        caller's access ends",
        content_type = "text/event-stream", body = crate::openapi::SseEvent)))]
pub async fn events(State(state): State<AppState>, caller: Caller) -> impl IntoResponse {
    let lost = crate::policy::access_lost(
        state.store.clone(),
        caller,
        crate::policy::Access::Technician,
    );
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
    let last = crate::events::Event::ShuttingDown;
    let last = SseEvent::default()
        .event(last.name())
        .json_data(&last)
        .unwrap_or_else(|_| SseEvent::default().event(last.name()));
    // Lost access ends it all, `shutting_down` included.
    sse(state
        .shutdown
        .until_shutdown(stream, Ok(last))
        .take_until(Box::pin(lost)))
}

fn sse<S>(stream: S) -> impl IntoResponse
where
    S: Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
{
    crate::api::event_stream(
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
}
