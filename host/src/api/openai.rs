//! The OpenAI-compatible API under `/v1`: models, chat completions (plain
//! and streamed), authenticated with a personal API key (or an access
//! token) as the Bearer token. Errors use OpenAI's shape.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use corral_sdk::backend::{
    CancelToken, ChatMessage, FinishReason, GenerateSummary, SamplingParams, Truncation,
};
use futures::stream::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::chat::SamplingOverrides;
use crate::config::Config;
use crate::error::{AppError, Json};
use crate::inference::manager::LoadSpec;
use crate::inference::{InferenceError, Job, JobEvent, Prompt};
use crate::model::{generation_source, ModelKind, ModelRecord, ModelStatus};
use crate::policy::Caller;
use crate::registry;
use crate::state::AppState;

/// An error in OpenAI's shape.
pub struct OpenAiError(pub AppError);

impl<E: Into<AppError>> From<E> for OpenAiError {
    fn from(err: E) -> Self {
        OpenAiError(err.into())
    }
}

/// The `type` OpenAI clients expect for a status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

/// An error as OpenAI's API sends it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

/// The inside of [`OpenAiErrorBody`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// e.g. `invalid_request_error`, `authentication_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// Corral's error code (as in `ErrorBody`).
    pub code: Option<String>,
}

impl OpenAiErrorBody {
    pub fn from_app(err: &AppError) -> Self {
        let body = err.body();
        OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: body.message,
                kind: error_type(err.status().as_u16()).to_owned(),
                param: body.details.first().map(|d| d.field.clone()),
                code: Some(body.code),
            },
        }
    }
}

/// `{"error": {"message", "type", "param", "code"}}` for an [`AppError`].
pub fn openai_error_response(err: AppError) -> Response {
    let payload = serde_json::to_vec(&OpenAiErrorBody::from_app(&err)).unwrap_or_default();
    let mut response = err.into_response();
    *response.body_mut() = axum::body::Body::from(payload);
    response
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        openai_error_response(self.0)
    }
}

/// Maps runtime errors to API errors.
pub fn inference_error(err: InferenceError) -> AppError {
    use corral_sdk::backend::BackendError as B;
    match err {
        InferenceError::Rejected(r) => AppError::Busy {
            retry_after: 2,
            message: r.to_string(),
        },
        InferenceError::Backend(B::ContextOverflow(m))
        | InferenceError::Backend(B::InvalidRequest(m)) => AppError::field("messages", m),
        InferenceError::Backend(B::Unsupported(m)) => AppError::BadRequest(m),
        InferenceError::BackendMissing(_)
        | InferenceError::Capacity(_)
        | InferenceError::Load { .. } => AppError::Unavailable(err.to_string()),
        other => AppError::Internal(anyhow::anyhow!(other.to_string())),
    }
}

/// A JSON body whose rejections are in OpenAI's error shape.
pub struct OaJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for OaJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = OpenAiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(value)| OaJson(value))
            .map_err(OpenAiError)
    }
}

/// What the runtime needs to load a registered model. Its file must still
/// lie where model files may (see [`crate::config::Config::loadable_model_paths`]):
/// a record written before the model folders were narrowed is not loaded.
pub async fn load_spec(config: &Config, record: &ModelRecord) -> Result<LoadSpec, AppError> {
    let path = record
        .file_path
        .as_deref()
        .ok_or_else(|| match &record.error {
            Some(error) if record.status == ModelStatus::Failed => {
                AppError::Unavailable(format!("model `{}` is unavailable: {error}", record.name))
            }
            _ => AppError::Unavailable(format!("model `{}` is not downloaded yet", record.name)),
        })?;
    let path = registry::resolve_local(&config.loadable_model_paths(), path)
        .await
        .map_err(|_| {
            AppError::Unavailable(format!(
                "model `{}` cannot be loaded: its file is missing or lies outside the model \
                 folders (setting `model_dirs`)",
                record.name
            ))
        })?
        .to_string_lossy()
        .into_owned();
    Ok(LoadSpec {
        key: record.id.clone(),
        name: record.name.clone(),
        backend: record.backend.clone(),
        request: corral_sdk::backend::LoadRequest {
            path,
            context_length: record.context_length,
            threads: record.threads,
            slots: record.slots.max(1),
            chat_template: record.chat_template.clone(),
            prompt_cache: true,
        },
        file_bytes: record.size_bytes.unwrap_or(0),
    })
}

/// One model in `/v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OaModel {
    pub id: String,
    #[schema(example = "model")]
    pub object: String,
    pub created: i64,
    pub owned_by: String,
}

/// The list of `/v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OaModelList {
    #[schema(example = "list")]
    pub object: String,
    pub data: Vec<OaModel>,
}

/// The models the caller may use.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, description = "Models", body = OaModelList)))]
pub async fn models(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<OaModelList>, OpenAiError> {
    let models = registry::usable_models(&state, &caller.user).await?;
    Ok(Json(OaModelList {
        object: "list".into(),
        data: models
            .into_iter()
            .filter(|m| m.is_servable())
            .map(|m| OaModel {
                id: m.name,
                object: "model".into(),
                created: m.created_at.timestamp(),
                owned_by: "corral".into(),
            })
            .collect(),
    }))
}

/// Message content: a string or a list of text parts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OaContent {
    Text(String),
    Parts(Vec<OaPart>),
}

/// A content part; only text parts are understood.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OaPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// A chat message.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OaMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    pub content: Option<OaContent>,
}

/// One or several stop strings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OaStop {
    One(String),
    Many(Vec<String>),
}

/// Streaming options.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct OaStreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// A chat completion request (the fields Corral honours; others are
/// ignored as OpenAI's own API does with unknown ones).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<OaMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<OaStreamOptions>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Corral extension.
    pub top_k: Option<u32>,
    /// Corral extension.
    pub min_p: Option<f32>,
    /// Corral extension.
    pub repeat_penalty: Option<f32>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub stop: Option<OaStop>,
    pub seed: Option<u64>,
    /// Corral extension (as llama.cpp's server): keep generating past the
    /// end-of-generation token, up to `max_tokens`.
    pub ignore_eos: Option<bool>,
    /// Only 1 is supported.
    pub n: Option<u32>,
}

/// Token counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OaUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: OaPromptTokensDetails,
}

/// What the prompt's tokens were.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OaPromptTokensDetails {
    /// Prompt tokens taken from the model's cache of an earlier request
    /// that began the same way, instead of being read again (part of
    /// `prompt_tokens`).
    pub cached_tokens: u32,
}

/// The answer message.
#[derive(Debug, Serialize, ToSchema)]
pub struct OaAnswer {
    pub role: String,
    pub content: String,
}

/// One choice of a completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct OaChoice {
    pub index: u32,
    pub message: OaAnswer,
    pub finish_reason: String,
}

/// A chat completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    #[schema(example = "chat.completion")]
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<OaChoice>,
    pub usage: OaUsage,
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::StopSequence | FinishReason::Cancelled => "stop",
    }
}

impl ChatCompletionRequest {
    fn sampling_fields(&self) -> SamplingOverrides {
        SamplingOverrides {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            seed: self.seed,
            stop: match &self.stop {
                Some(OaStop::One(one)) => Some(vec![one.clone()]),
                Some(OaStop::Many(many)) => Some(many.clone()),
                None => None,
            },
            ignore_eos: self.ignore_eos,
        }
    }
}

fn chat_messages(messages: &[OaMessage]) -> Result<Vec<ChatMessage>, AppError> {
    if messages.is_empty() {
        return Err(AppError::field("messages", "must not be empty"));
    }
    messages
        .iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(AppError::field(
                        "messages",
                        format!("unsupported role `{other}`"),
                    ))
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(OaContent::Text(t)) => t.clone(),
                Some(OaContent::Parts(parts)) => parts
                    .iter()
                    .filter(|p| p.kind == "text")
                    .filter_map(|p| p.text.clone())
                    .collect::<Vec<_>>()
                    .join(""),
            };
            Ok(ChatMessage {
                role: role.into(),
                content,
            })
        })
        .collect()
}

/// Create a chat completion (streamed as Server-Sent Events with
/// `stream: true`).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion, or with `stream` a stream of `chat.completion.chunk` events",
            content((ChatCompletion = "application/json"), (crate::openapi::SseEvent = "text/event-stream"))),
        (status = 404, description = "No such model for the caller", body = OpenAiErrorBody),
        (status = 429, description = "The queue or the caller's allowance is full", body = OpenAiErrorBody),
    ))]
pub async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    OaJson(req): OaJson<ChatCompletionRequest>,
) -> Result<Response, OpenAiError> {
    if req.n.is_some_and(|n| n != 1) {
        return Err(AppError::field("n", "only n = 1 is supported").into());
    }
    let record = registry::find_usable(&state, &caller.user, &req.model).await?;
    let generation = Generation {
        shape: Shape::Chat,
        prompt: Prompt::Chat(chat_messages(&req.messages)?),
        sampling: req.sampling_fields().apply(&record.sampling)?,
        stream: req.stream,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        echo: None,
    };
    generate(&state, &caller, record, generation).await
}

/// Which OpenAI API a generation answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `/v1/chat/completions`: `chat.completion` and its chunks.
    Chat,
    /// `/v1/completions`: `text_completion`.
    Text,
}

/// A generation as either completion endpoint asks for it.
struct Generation {
    shape: Shape,
    prompt: Prompt,
    sampling: SamplingParams,
    stream: bool,
    include_usage: bool,
    /// Text sent ahead of the generated text (`echo` of the prompt).
    echo: Option<String>,
}

/// Queues a generation on `record` and answers it whole or, with
/// `stream`, as Server-Sent Events; counts it in the metrics when done.
async fn generate(
    state: &AppState,
    caller: &Caller,
    record: ModelRecord,
    g: Generation,
) -> Result<Response, OpenAiError> {
    if record.kind == ModelKind::Embedding {
        return Err(AppError::BadRequest(format!(
            "model `{}` is an embedding model; use /v1/embeddings",
            record.name
        ))
        .into());
    }
    let spec = load_spec(&state.config, &record).await?;
    let mut sampling = g.sampling;
    crate::quota::admit(state, &caller.user, &mut sampling).await?;
    let job = Job {
        spec,
        user_id: caller.id().to_owned(),
        prompt: g.prompt,
        sampling,
        truncation: Truncation::Error,
        cache_key: None,
    };
    let cancel = CancelToken::new();
    let events = state
        .inference
        .submit_with_cancel(job, cancel.clone())
        .map_err(inference_error)?;
    let recorder = Recorder {
        state: state.clone(),
        user_id: caller.id().to_owned(),
        model: record.name.clone(),
        begun: std::time::Instant::now(),
    };
    let events = follow(events, cancel, recorder);
    let prefix = match g.shape {
        Shape::Chat => "chatcmpl",
        Shape::Text => "cmpl",
    };
    let meta = ChunkMeta {
        id: format!("{prefix}-{}", uuid::Uuid::now_v7().simple()),
        created: chrono::Utc::now().timestamp(),
        model: record.name,
        shape: g.shape,
    };
    if g.stream {
        let stream = chunks(events, meta, g.include_usage, g.echo);
        return Ok(crate::api::event_stream(
            Sse::new(stream).keep_alive(KeepAlive::default()),
        ));
    }
    let mut events = events;
    let mut text = g.echo.unwrap_or_default();
    while let Some(event) = events.recv().await {
        match event {
            JobEvent::Text(t) => text.push_str(&t),
            JobEvent::Done(summary) => {
                let usage = usage_of(&summary);
                let finish = finish_reason(summary.finish_reason).to_owned();
                let response = match meta.shape {
                    Shape::Chat => Json(ChatCompletion {
                        id: meta.id,
                        object: "chat.completion".into(),
                        created: meta.created,
                        model: meta.model,
                        choices: vec![OaChoice {
                            index: 0,
                            message: OaAnswer {
                                role: "assistant".into(),
                                content: text,
                            },
                            finish_reason: finish,
                        }],
                        usage,
                    })
                    .into_response(),
                    Shape::Text => Json(TextCompletion {
                        id: meta.id,
                        object: "text_completion".into(),
                        created: meta.created,
                        model: meta.model,
                        choices: vec![OaTextChoice {
                            index: 0,
                            text,
                            logprobs: None,
                            finish_reason: finish,
                        }],
                        usage,
                    })
                    .into_response(),
                };
                return Ok(response);
            }
            JobEvent::Failed(err) => {
                return Err(inference_error(err).into());
            }
            JobEvent::Queued { .. } | JobEvent::Started { .. } => {}
        }
    }
    Err(AppError::Internal(anyhow::anyhow!("the generation ended without a result")).into())
}

/// Takes a job's events to their end in a task of its own and passes them
/// on while the client listens. A client that goes away (a stream it stops
/// reading, a request it abandons) stops the job, and whatever was
/// generated until then still counts: usage is recorded however the
/// generation ends, before the client is told it ended.
fn follow(
    mut events: mpsc::UnboundedReceiver<JobEvent>,
    cancel: CancelToken,
    recorder: Recorder,
) -> mpsc::UnboundedReceiver<JobEvent> {
    let (out, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut so_far = SoFar::default();
        let mut client_gone = false;
        loop {
            // The job's events are taken to their end even when the client
            // has left: the job may have started (its prompt read) before
            // its `Started` arrives here, and what it did must be counted.
            // A job still queued starts and stops at once when cancelled.
            let event = tokio::select! {
                biased;
                event = events.recv() => event,
                () = out.closed(), if !client_gone => {
                    client_gone = true;
                    cancel.cancel();
                    continue;
                }
            };
            match event {
                Some(JobEvent::Done(summary)) => {
                    recorder.store(recorder.finished(&summary)).await;
                    let _ = out.send(JobEvent::Done(summary));
                    return;
                }
                Some(JobEvent::Failed(err)) => {
                    recorder.store(recorder.failed(&so_far)).await;
                    let _ = out.send(JobEvent::Failed(err));
                    return;
                }
                Some(event) => {
                    so_far.see(&event);
                    let _ = out.send(event);
                }
                None => {
                    recorder.store(recorder.failed(&so_far)).await;
                    return;
                }
            }
        }
    });
    rx
}

/// What a generation reported before it ended.
#[derive(Default)]
struct SoFar {
    prompt_tokens: u32,
    /// Pieces of text; a piece is about one token.
    pieces: u32,
}

impl SoFar {
    fn see(&mut self, event: &JobEvent) {
        match event {
            JobEvent::Started { prompt_tokens } => self.prompt_tokens = *prompt_tokens,
            JobEvent::Text(_) => self.pieces = self.pieces.saturating_add(1),
            _ => {}
        }
    }
}

/// Counts what a generation of the API used: in the metrics, and in the
/// store for the statistics and the quotas.
struct Recorder {
    state: AppState,
    user_id: String,
    model: String,
    begun: std::time::Instant,
}

impl Recorder {
    fn finished(&self, summary: &GenerateSummary) -> crate::model::Generation {
        self.state
            .metrics
            .record_generation(&self.model, summary.into());
        crate::model::Generation::finished(
            &self.user_id,
            &self.model,
            generation_source::OPENAI,
            summary,
        )
    }

    /// A failed generation counts what it had read and written.
    fn failed(&self, so_far: &SoFar) -> crate::model::Generation {
        let ms = u64::try_from(self.begun.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut generation = crate::model::Generation::failed(
            &self.user_id,
            &self.model,
            generation_source::OPENAI,
            ms,
        );
        generation.prompt_tokens = so_far.prompt_tokens;
        generation.completion_tokens = so_far.pieces;
        generation
    }

    async fn store(&self, generation: crate::model::Generation) {
        if let Err(err) = self.state.store.record_generation(&generation).await {
            tracing::warn!(%err, "could not record a generation");
        }
    }
}

fn usage_of(summary: &GenerateSummary) -> OaUsage {
    OaUsage {
        prompt_tokens: summary.prompt_tokens,
        completion_tokens: summary.completion_tokens,
        total_tokens: summary.prompt_tokens + summary.completion_tokens,
        prompt_tokens_details: OaPromptTokensDetails {
            cached_tokens: summary.cached_tokens.min(summary.prompt_tokens),
        },
    }
}

/// What every chunk of one streamed completion repeats.
struct ChunkMeta {
    id: String,
    created: i64,
    model: String,
    shape: Shape,
}

impl ChunkMeta {
    /// A chunk carrying `text` (chat: as `delta`) and a finish reason.
    fn chunk(&self, delta: serde_json::Value, finish: Option<&str>) -> serde_json::Value {
        let choice = match self.shape {
            Shape::Chat => json!({"index": 0, "delta": delta, "finish_reason": finish}),
            Shape::Text => json!({
                "index": 0,
                "text": delta.get("content").cloned().unwrap_or_else(|| json!("")),
                "logprobs": null,
                "finish_reason": finish,
            }),
        };
        json!({
            "id": self.id,
            "object": match self.shape {
                Shape::Chat => "chat.completion.chunk",
                Shape::Text => "text_completion",
            },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }
}

/// The SSE chunks of a streamed completion.
fn chunks(
    events: mpsc::UnboundedReceiver<JobEvent>,
    meta: ChunkMeta,
    include_usage: bool,
    echo: Option<String>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let first = match (meta.shape, echo) {
        (Shape::Chat, _) => Some(meta.chunk(json!({"role": "assistant", "content": ""}), None)),
        (Shape::Text, Some(echo)) => Some(meta.chunk(json!({"content": echo}), None)),
        (Shape::Text, None) => None,
    };
    let head = futures::stream::iter(first.map(|c| Ok(Event::default().data(c.to_string()))));
    let body = tokio_stream_from(events).flat_map(move |event| {
        let items: Vec<Event> = match event {
            JobEvent::Text(text) => {
                vec![Event::default().data(meta.chunk(json!({"content": text}), None).to_string())]
            }
            JobEvent::Done(summary) => {
                let mut out = vec![Event::default().data(
                    meta.chunk(json!({}), Some(finish_reason(summary.finish_reason)))
                        .to_string(),
                )];
                if include_usage {
                    let mut usage = meta.chunk(json!({}), None);
                    usage["choices"] = json!([]);
                    usage["usage"] = json!(usage_of(&summary));
                    out.push(Event::default().data(usage.to_string()));
                }
                out.push(Event::default().data("[DONE]"));
                out
            }
            JobEvent::Failed(err) => {
                let body = OpenAiErrorBody::from_app(&inference_error(err));
                vec![Event::default().data(serde_json::to_string(&body).unwrap_or_default())]
            }
            JobEvent::Queued { .. } | JobEvent::Started { .. } => Vec::new(),
        };
        futures::stream::iter(items.into_iter().map(Ok))
    });
    head.chain(body)
}

/// A prompt: one string, or a list holding one string.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OaPrompt {
    One(String),
    /// Exactly one string: Corral answers one prompt per request.
    Many(Vec<String>),
}

/// A (legacy) text completion request: the prompt is continued as it is,
/// without a chat template. The sampling fields are those of
/// [`ChatCompletionRequest`]; absent ones take the model's defaults.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletionRequest {
    pub model: String,
    #[schema(example = "Once upon a time")]
    pub prompt: OaPrompt,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<OaStreamOptions>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Corral extension.
    pub top_k: Option<u32>,
    /// Corral extension.
    pub min_p: Option<f32>,
    /// Corral extension.
    pub repeat_penalty: Option<f32>,
    /// Default: the model's (not OpenAI's 16).
    pub max_tokens: Option<u32>,
    pub stop: Option<OaStop>,
    pub seed: Option<u64>,
    /// Corral extension (as llama.cpp's server): keep generating past the
    /// end-of-generation token, up to `max_tokens`.
    pub ignore_eos: Option<bool>,
    /// Send the prompt back in front of the completion.
    #[serde(default)]
    pub echo: bool,
    /// Only 1 is supported.
    pub n: Option<u32>,
    /// Only 1 is supported.
    pub best_of: Option<u32>,
}

impl CompletionRequest {
    fn sampling_fields(&self) -> SamplingOverrides {
        SamplingOverrides {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            max_tokens: self.max_tokens,
            seed: self.seed,
            stop: match &self.stop {
                Some(OaStop::One(one)) => Some(vec![one.clone()]),
                Some(OaStop::Many(many)) => Some(many.clone()),
                None => None,
            },
            ignore_eos: self.ignore_eos,
        }
    }

    /// The one prompt of the request.
    fn prompt_text(&self) -> Result<String, AppError> {
        match &self.prompt {
            OaPrompt::One(text) => Ok(text.clone()),
            OaPrompt::Many(list) if list.len() == 1 => Ok(list[0].clone()),
            OaPrompt::Many(_) => Err(AppError::field(
                "prompt",
                "must be a string or a list of exactly one string",
            )),
        }
    }
}

/// One choice of a text completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct OaTextChoice {
    pub index: u32,
    pub text: String,
    /// Always `null`: log probabilities are not reported.
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<serde_json::Value>,
    pub finish_reason: String,
}

/// A text completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct TextCompletion {
    pub id: String,
    #[schema(example = "text_completion")]
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<OaTextChoice>,
    pub usage: OaUsage,
}

/// Continue a prompt as it is (no chat template; the model's BOS token
/// goes in front), whole or streamed as Server-Sent Events with
/// `stream: true`.
#[utoipa::path(post, path = "/v1/completions", tag = "openai",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The completion, or with `stream` a stream of `text_completion` events ending with `[DONE]`",
            content((TextCompletion = "application/json"), (crate::openapi::SseEvent = "text/event-stream"))),
        (status = 404, description = "No such model for the caller", body = OpenAiErrorBody),
        (status = 429, description = "The queue or the caller's allowance is full", body = OpenAiErrorBody),
    ))]
pub async fn completions(
    State(state): State<AppState>,
    caller: Caller,
    OaJson(req): OaJson<CompletionRequest>,
) -> Result<Response, OpenAiError> {
    if req.n.is_some_and(|n| n != 1) {
        return Err(AppError::field("n", "only n = 1 is supported").into());
    }
    if req.best_of.is_some_and(|n| n != 1) {
        return Err(AppError::field("best_of", "only best_of = 1 is supported").into());
    }
    let prompt = req.prompt_text()?;
    let record = registry::find_usable(&state, &caller.user, &req.model).await?;
    let generation = Generation {
        shape: Shape::Text,
        sampling: req.sampling_fields().apply(&record.sampling)?,
        stream: req.stream,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        echo: req.echo.then(|| prompt.clone()),
        prompt: Prompt::Text(prompt),
    };
    generate(&state, &caller, record, generation).await
}

/// The most inputs one embeddings request may carry (OpenAI's limit too).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// Text to embed: one string or a list of strings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OaInput {
    One(String),
    Many(Vec<String>),
}

/// An embeddings request.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    #[schema(example = "all-minilm-l6-v2")]
    pub model: String,
    /// 1 to 2048 non-empty strings.
    pub input: OaInput,
    /// `float` (default) or `base64` (little-endian 32-bit floats).
    #[schema(example = "float")]
    pub encoding_format: Option<String>,
}

/// A vector: numbers, or base64 of little-endian `f32`s.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum OaVector {
    Float(Vec<f32>),
    Base64(String),
}

/// One embedding, in the order of the inputs.
#[derive(Debug, Serialize, ToSchema)]
pub struct OaEmbedding {
    #[schema(example = "embedding")]
    pub object: String,
    pub index: u32,
    pub embedding: OaVector,
}

/// Tokens read by an embeddings request.
#[derive(Debug, Serialize, ToSchema)]
pub struct OaEmbeddingUsage {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
}

/// The answer of `/v1/embeddings`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingList {
    #[schema(example = "list")]
    pub object: String,
    pub data: Vec<OaEmbedding>,
    pub model: String,
    pub usage: OaEmbeddingUsage,
}

/// Maps errors of an embedding run: a bad input names `input`.
fn embedding_error(err: InferenceError) -> AppError {
    use corral_sdk::backend::BackendError as B;
    match err {
        InferenceError::Backend(B::InvalidRequest(m))
        | InferenceError::Backend(B::ContextOverflow(m)) => AppError::field("input", m),
        other => inference_error(other),
    }
}

/// Turn text into vectors with an embedding model (loaded on first use).
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai",
    request_body = EmbeddingRequest,
    responses(
        (status = 200, description = "One vector per input, in order", body = EmbeddingList),
        (status = 400, description = "Empty input, or the model does not make embeddings", body = OpenAiErrorBody),
        (status = 404, description = "No such model for the caller", body = OpenAiErrorBody),
        (status = 429, description = "The queue or the caller's allowance is full", body = OpenAiErrorBody),
    ))]
pub async fn embeddings(
    State(state): State<AppState>,
    caller: Caller,
    OaJson(req): OaJson<EmbeddingRequest>,
) -> Result<Json<EmbeddingList>, OpenAiError> {
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(AppError::field("encoding_format", "must be `float` or `base64`").into())
        }
    };
    let inputs = match req.input {
        OaInput::One(text) => vec![text],
        OaInput::Many(list) => list,
    };
    if inputs.is_empty() {
        return Err(AppError::BadRequest("`input` must not be empty".into()).into());
    }
    if inputs.len() > MAX_EMBEDDING_INPUTS {
        return Err(AppError::BadRequest(format!(
            "`input` may hold at most {MAX_EMBEDDING_INPUTS} strings"
        ))
        .into());
    }
    if inputs.iter().any(String::is_empty) {
        return Err(AppError::BadRequest("`input` must not hold empty strings".into()).into());
    }
    let record = registry::find_usable(&state, &caller.user, &req.model).await?;
    let not_embedding =
        || AppError::BadRequest(format!("model `{}` does not make embeddings", record.name));
    if record.kind != ModelKind::Embedding {
        return Err(not_embedding().into());
    }
    crate::quota::check(&state, &caller.user).await?;
    // Embeddings wait in the model's queue like generations: the same
    // slots, the same per-user allowance. Leaving (a client that goes
    // away) drops the ticket or the permit.
    let spec = load_spec(&state.config, &record).await?;
    let mut ticket = state
        .inference
        .scheduler
        .enqueue(&spec.key, spec.request.slots.max(1) as usize, caller.id())
        .map_err(|r| inference_error(r.into()))?;
    let permit = ticket.admitted().await;
    let loaded = state
        .inference
        .manager
        .get(&spec)
        .await
        .map_err(inference_error)?;
    if !loaded.info.capabilities.embeddings {
        return Err(not_embedding().into());
    }
    // The work and its count go on in a task of their own: a client that
    // leaves once the model is at work is counted all the same.
    let store = state.store.clone();
    let (user_id, model) = (caller.id().to_owned(), record.name.clone());
    let work = tokio::spawn(async move {
        let begun = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let mut tokens = 0usize;
            for input in &inputs {
                tokens += loaded.model.tokenize(input, true)?.len();
            }
            let vectors = loaded.model.embed(&inputs)?;
            Ok::<_, corral_sdk::backend::BackendError>((vectors, tokens))
        })
        .await;
        drop(permit);
        if let Ok(Ok((_, tokens))) = &result {
            let generation = embedding_generation(&user_id, &model, *tokens, begun.elapsed());
            if let Err(err) = store.record_generation(&generation).await {
                tracing::warn!(%err, "could not record an embedding run");
            }
        }
        result
    });
    let (vectors, tokens) = work
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("the embedding task failed: {e}")))?
        .map_err(|e| AppError::Internal(anyhow::anyhow!("the embedding task failed: {e}")))?
        .map_err(|e| embedding_error(e.into()))?;
    let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
    state
        .metrics
        .record_embedding(&record.name, vectors.len(), tokens);
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| OaEmbedding {
            object: "embedding".into(),
            index: u32::try_from(index).unwrap_or(u32::MAX),
            embedding: if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                OaVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                OaVector::Float(vector)
            },
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list".into(),
        data,
        model: record.name,
        usage: OaEmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

/// An embedding run as a generation: its input tokens count against the
/// caller's allowance and in the statistics.
fn embedding_generation(
    user_id: &str,
    model: &str,
    tokens: usize,
    took: std::time::Duration,
) -> crate::model::Generation {
    crate::model::Generation {
        id: crate::model::new_id(),
        user_id: user_id.to_owned(),
        model: model.to_owned(),
        source: generation_source::OPENAI.to_owned(),
        prompt_tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
        cached_tokens: 0,
        completion_tokens: 0,
        time_to_first_token_ms: None,
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        status: crate::model::MessageStatus::Complete,
        at: crate::time::now(),
    }
}

/// A stream over an unbounded receiver.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn record(path: &Path) -> ModelRecord {
        let at = chrono::Utc::now();
        ModelRecord {
            id: "m1".into(),
            name: "tiny".into(),
            backend: "llama".into(),
            kind: ModelKind::default(),
            source: "https://example.com/tiny.gguf".into(),
            sha256: None,
            file_path: Some(path.to_string_lossy().into_owned()),
            size_bytes: Some(4),
            status: ModelStatus::Ready,
            error: None,
            description: String::new(),
            context_length: 0,
            threads: 0,
            slots: 1,
            sampling: Default::default(),
            chat_template: None,
            access: Default::default(),
            created_at: at,
            updated_at: at,
        }
    }

    #[tokio::test]
    async fn a_model_file_outside_the_model_folders_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (allowed, elsewhere, downloads) = (
            root.join("allowed"),
            root.join("elsewhere"),
            root.join("data").join("models").join("m1"),
        );
        for folder in [&allowed, &elsewhere, &downloads] {
            std::fs::create_dir_all(folder).unwrap();
            std::fs::write(folder.join("tiny.gguf"), b"GGUF").unwrap();
        }
        let config = |dirs: Vec<PathBuf>| Config {
            data_dir: root.join("data"),
            model_dirs: Some(dirs),
            ..Config::default()
        };
        let wide = config(vec![allowed.clone()]);
        for ok in [allowed.join("tiny.gguf"), downloads.join("tiny.gguf")] {
            let spec = load_spec(&wide, &record(&ok)).await.expect("loadable");
            assert_eq!(spec.request.path, ok.to_string_lossy());
        }
        let linked = allowed.join("link.gguf");
        std::os::unix::fs::symlink(elsewhere.join("tiny.gguf"), &linked).unwrap();
        let narrowed = config(vec![elsewhere.join("none")]);
        for (config, path) in [
            (&wide, elsewhere.join("tiny.gguf")),
            (&wide, linked),
            (
                &wide,
                allowed.join("..").join("elsewhere").join("tiny.gguf"),
            ),
            (&narrowed, allowed.join("tiny.gguf")),
        ] {
            let err = load_spec(config, &record(&path)).await.unwrap_err();
            assert_eq!(err.status().as_u16(), 503, "{path:?}");
            assert!(!err.body().message.contains(root.to_str().unwrap()));
        }
    }
}
