//! The inference runtime over HTTP: what is installed, loaded and queued
//! (`/api/status`), loading and unloading a model by hand, and the
//! Prometheus metrics (`/metrics`).

use corral_plugin_host::ExportStats;
use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::api::audit;
use crate::error::{ApiResult, AppError, Json, Path};
use crate::generation::inference_error;
use crate::inference::manager::LoadedModel;
use crate::metrics::Page;
use crate::model::{ModelRecord, ModelStatus};
use crate::policy::Caller;
use crate::registry::load_spec;
use crate::state::AppState;
use crate::time::serde_millis;

/// What a backend or a loaded model can do.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct CapabilitiesView {
    pub chat: bool,
    pub completion: bool,
    pub embeddings: bool,
}

impl From<corral_sdk::backend::Capabilities> for CapabilitiesView {
    fn from(c: corral_sdk::backend::Capabilities) -> Self {
        CapabilitiesView {
            chat: c.chat,
            completion: c.completion,
            embeddings: c.embeddings,
        }
    }
}

/// An installed backend library.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackendView {
    #[schema(example = "llama")]
    pub name: String,
    pub version: String,
    pub description: String,
    pub capabilities: CapabilitiesView,
    /// File formats it loads, e.g. `gguf`.
    pub formats: Vec<String>,
    /// The library file.
    pub path: String,
}

/// A model in memory.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoadedModelView {
    pub model_id: String,
    pub name: String,
    pub backend: String,
    /// e.g. `gemma3`, `bert`.
    pub architecture: String,
    pub capabilities: CapabilitiesView,
    /// Bytes of memory it holds, as the backend reports them (on its
    /// node, for a model placed on one).
    pub memory_bytes: u64,
    /// The worker node it is loaded on; `null`: this host (or, for a
    /// remote model, its upstream).
    pub node: Option<String>,
    /// The context window in use, in tokens.
    pub context_length: u32,
    /// Generations it serves at once.
    pub slots: u32,
    /// Generations running on it now.
    pub in_flight: usize,
    /// Seconds the load took.
    pub load_secs: f64,
    #[serde(with = "serde_millis")]
    pub loaded_at: DateTime<Utc>,
    #[serde(with = "serde_millis")]
    pub last_used_at: DateTime<Utc>,
}

/// The queue of one model.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub model_id: String,
    /// The model's name, when it is still registered.
    pub name: Option<String>,
    pub running: usize,
    pub waiting: usize,
}

/// The runtime's limits, from the configuration.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeLimits {
    /// Bytes all loaded models may hold together; 0 = no limit.
    pub memory_budget_bytes: u64,
    /// Bytes the loaded models hold now.
    pub memory_used_bytes: u64,
    /// Models loaded at once; 0 = no limit.
    pub max_loaded_models: usize,
    /// A model unused this long is unloaded.
    pub idle_unload_secs: u64,
    /// Requests that may wait per model.
    pub queue_max_waiting: usize,
    /// Generations one user may have running or waiting.
    pub per_user_generations: usize,
}

/// The state of the inference runtime.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeStatus {
    pub backends: Vec<BackendView>,
    /// Libraries in the backends directory that could not be loaded, and
    /// why.
    pub backend_problems: Vec<String>,
    /// The directory searched for backend libraries.
    pub backends_dir: String,
    /// Most recently used first.
    pub loaded: Vec<LoadedModelView>,
    /// The queue of every registered model that has had a request, and of
    /// removed ones while requests still run or wait.
    pub queues: Vec<QueueView>,
    pub limits: RuntimeLimits,
}

fn loaded_view(m: &LoadedModel, in_flight: usize) -> LoadedModelView {
    LoadedModelView {
        model_id: m.spec.key.clone(),
        name: m.spec.name.clone(),
        backend: m.spec.backend.clone(),
        architecture: m.info.architecture.clone(),
        capabilities: m.info.capabilities.into(),
        memory_bytes: m.memory_bytes(),
        node: m.spec.node.clone(),
        context_length: m.info.context_length,
        slots: m.info.slots,
        in_flight,
        load_secs: m.load_time.as_secs_f64(),
        loaded_at: m.loaded_at,
        last_used_at: m.last_used_at(),
    }
}

/// Running generations per model id.
fn running(state: &AppState) -> HashMap<String, usize> {
    state
        .inference
        .scheduler
        .depths()
        .into_iter()
        .map(|(key, running, _)| (key, running))
        .collect()
}

/// Installed backends, loaded models, queues and limits.
#[utoipa::path(get, path = "/api/status", tag = "runtime",
    responses((status = 200, description = "The runtime now", body = RuntimeStatus)))]
pub async fn status(State(state): State<AppState>) -> ApiResult<Json<RuntimeStatus>> {
    let manager = &state.inference.manager;
    let names: HashMap<String, String> = state
        .store
        .list_models()
        .await?
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect();
    let running = running(&state);
    let loaded: Vec<Arc<LoadedModel>> = manager.loaded();
    // Memory of this machine: models on nodes and upstreams hold theirs
    // elsewhere.
    let memory_used_bytes = loaded
        .iter()
        .filter(|m| m.spec.is_local())
        .map(|m| m.memory_bytes())
        .sum();
    let limits = manager.limits();
    Ok(Json(RuntimeStatus {
        backends: manager
            .backends()
            .all()
            .map(|b| BackendView {
                name: b.info.name.clone(),
                version: b.info.version.clone(),
                description: b.info.description.clone(),
                capabilities: b.info.capabilities.into(),
                formats: b.info.formats.clone(),
                path: b.path.display().to_string(),
            })
            .collect(),
        backend_problems: manager.backends().problems().to_vec(),
        backends_dir: state.config.backends_dir().display().to_string(),
        loaded: loaded
            .iter()
            .map(|m| loaded_view(m, running.get(&m.spec.key).copied().unwrap_or(0)))
            .collect(),
        queues: state
            .inference
            .scheduler
            .depths()
            .into_iter()
            .filter(|(key, running, waiting)| names.contains_key(key) || running + waiting > 0)
            .map(|(key, running, waiting)| QueueView {
                name: names.get(&key).cloned(),
                model_id: key,
                running,
                waiting,
            })
            .collect(),
        limits: RuntimeLimits {
            memory_budget_bytes: limits.memory_budget,
            memory_used_bytes,
            max_loaded_models: limits.max_loaded,
            idle_unload_secs: limits.idle_unload.as_secs(),
            queue_max_waiting: state.config.queue_max_waiting,
            per_user_generations: state.config.per_user_generations,
        },
    }))
}

/// The model with id `id`, which must have its file in place.
async fn ready_model(state: &AppState, id: &str) -> ApiResult<ModelRecord> {
    let model = state
        .store
        .get_model(id)
        .await?
        .ok_or(AppError::NotFound("model"))?;
    if !model.is_servable() {
        let why = match model.status {
            ModelStatus::Failed => "its download failed",
            _ => "its file is still being fetched",
        };
        return Err(AppError::Conflict(format!(
            "model `{}` is not ready: {why}",
            model.name
        )));
    }
    Ok(model)
}

/// Load a model now (rather than on its first request); answers once it
/// is in memory. A model already loaded answers at once.
#[utoipa::path(post, path = "/api/models/{id}/load", tag = "runtime",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 200, description = "Loaded", body = LoadedModelView),
        (status = 404, description = "No such model", body = corral_sdk::ErrorBody),
        (status = 409, description = "The model's file is not ready yet", body = corral_sdk::ErrorBody),
        (status = 503, description = "No backend for it, no room, or the load failed", body = corral_sdk::ErrorBody),
    ))]
pub async fn load(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<LoadedModelView>> {
    let model = ready_model(&state, &id).await?;
    let loaded = state
        .inference
        .manager
        .get(&load_spec(&state.config, &model).await?)
        .await
        .map_err(inference_error)?;
    audit(
        &state,
        &caller,
        "model.load",
        &model.id,
        json!({ "name": model.name }),
    )
    .await?;
    let in_flight = running(&state).get(&model.id).copied().unwrap_or(0);
    Ok(Json(loaded_view(&loaded, in_flight)))
}

/// Unload a model. Generations running on it finish first; the memory is
/// freed after them. Unloading a model that is not loaded does nothing.
#[utoipa::path(post, path = "/api/models/{id}/unload", tag = "runtime",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 204, description = "Unloaded (or was not loaded)"),
        (status = 404, description = "No such model", body = corral_sdk::ErrorBody),
        (status = 409, description = "The model's file is not ready yet", body = corral_sdk::ErrorBody),
    ))]
pub async fn unload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let model = ready_model(&state, &id).await?;
    if state.inference.manager.unload(&model.id) {
        audit(
            &state,
            &caller,
            "model.unload",
            &model.id,
            json!({ "name": model.name }),
        )
        .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metrics in the Prometheus text format: HTTP requests, generations
/// (tokens, time to first token, duration, speed), queues, loaded models
/// and downloads.
#[utoipa::path(get, path = "/metrics", tag = "runtime",
    responses((status = 200, description = "The metrics", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let models = state.store.list_models().await?;
    let names: HashMap<&str, &str> = models
        .iter()
        .map(|m| (m.id.as_str(), m.name.as_str()))
        .collect();
    let name_of = |id: &str| names.get(id).copied().unwrap_or(id).to_owned();
    let mut page = Page::new();
    state.metrics.render_counters(&mut page);

    let depths = state.inference.scheduler.depths();
    for (family, help, pick) in [
        (
            "corral_queue_waiting",
            "Generations waiting for a slot, per model.",
            2,
        ),
        ("corral_queue_running", "Generations running, per model.", 1),
    ] {
        page.family(family, "gauge", help);
        for (key, running, waiting) in &depths {
            let value = if pick == 1 { *running } else { *waiting };
            page.sample(
                family,
                &[("model", &name_of(key)), ("model_id", key)],
                value as f64,
            );
        }
    }

    let loaded = state.inference.manager.loaded();
    page.family(
        "corral_model_loaded",
        "gauge",
        "1 for each model in memory.",
    );
    for m in &loaded {
        page.sample(
            "corral_model_loaded",
            &[
                ("model", &m.spec.name),
                ("model_id", &m.spec.key),
                ("backend", &m.spec.backend),
                ("architecture", &m.info.architecture),
            ],
            1.0,
        );
    }
    page.family(
        "corral_model_memory_bytes",
        "gauge",
        "Bytes of memory each loaded model holds.",
    );
    for m in &loaded {
        page.sample(
            "corral_model_memory_bytes",
            &[
                ("model", &m.spec.name),
                ("model_id", &m.spec.key),
                ("backend", &m.spec.backend),
            ],
            m.memory_bytes() as f64,
        );
    }
    page.family("corral_models_loaded", "gauge", "Models in memory.");
    page.sample("corral_models_loaded", &[], loaded.len() as f64);

    plugin_metrics(&state, &mut page);

    let downloads: Vec<_> = models
        .iter()
        .filter(|m| state.downloads.is_active(&m.id))
        .map(|m| (m, state.downloads.progress(m)))
        .collect();
    page.family(
        "corral_download_bytes",
        "gauge",
        "Bytes fetched so far, per running model download.",
    );
    for (m, p) in &downloads {
        page.sample(
            "corral_download_bytes",
            &[("model", &m.name), ("model_id", &m.id)],
            p.bytes as f64,
        );
    }
    page.family(
        "corral_download_total_bytes",
        "gauge",
        "Size of each running model download, when known.",
    );
    for (m, p) in &downloads {
        if let Some(total) = p.total {
            page.sample(
                "corral_download_total_bytes",
                &[("model", &m.name), ("model_id", &m.id)],
                total as f64,
            );
        }
    }

    page.family(
        "corral_backend_info",
        "gauge",
        "1 for each installed backend library.",
    );
    for b in state.inference.manager.backends().all() {
        page.sample(
            "corral_backend_info",
            &[("backend", &b.info.name), ("version", &b.info.version)],
            1.0,
        );
    }
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], page.finish()).into_response())
}

/// Reads one counter of a plugin's export.
type StatOf = fn(&ExportStats) -> u64;

/// Per plugin and hook: calls, failures and call times (a summary with
/// the median and the 99th percentile); per plugin, whether it runs.
fn plugin_metrics(state: &AppState, page: &mut Page) {
    let plugins = state.plugins.list();
    page.family(
        "corral_plugin_active",
        "gauge",
        "1 for each plugin that runs now (enabled and not turned off).",
    );
    for p in &plugins {
        let active = if p.active { 1.0 } else { 0.0 };
        page.sample(
            "corral_plugin_active",
            &[("plugin", &p.manifest.id)],
            active,
        );
    }
    let counters: [(&str, &str, StatOf); 2] = [
        (
            "corral_plugin_calls_total",
            "Calls of a plugin's hook or route handler.",
            |e| e.calls,
        ),
        (
            "corral_plugin_errors_total",
            "Calls that failed: a trap, out of time or memory, invalid output.",
            |e| e.errors,
        ),
    ];
    for (family, help, value) in counters {
        page.family(family, "counter", help);
        for p in &plugins {
            for e in &p.stats {
                let labels = [
                    ("plugin", p.manifest.id.as_str()),
                    ("hook", e.export.as_str()),
                ];
                page.sample(family, &labels, value(e) as f64);
            }
        }
    }
    page.family(
        "corral_plugin_call_seconds",
        "summary",
        "Time of a plugin call, including starting its instance on a generation's first call.",
    );
    for p in &plugins {
        for e in &p.stats {
            for (quantile, us) in [("0.5", e.p50_us), ("0.99", e.p99_us)] {
                let labels = [
                    ("plugin", p.manifest.id.as_str()),
                    ("hook", e.export.as_str()),
                    ("quantile", quantile),
                ];
                page.sample("corral_plugin_call_seconds", &labels, us as f64 / 1e6);
            }
            let labels = [
                ("plugin", p.manifest.id.as_str()),
                ("hook", e.export.as_str()),
            ];
            page.sample("corral_plugin_call_seconds_count", &labels, e.calls as f64);
        }
    }
}
