//! The OpenAI-compatible API under `/v1`: models, chat completions (plain
//! and streamed), authenticated with a personal API key (or an access
//! token) as the Bearer token. Errors use OpenAI's shape.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use corral_sdk::backend::{ChatMessage, FinishReason, SamplingParams, Truncation};
use futures::stream::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::error::{AppError, Json};
use crate::inference::manager::LoadSpec;
use crate::inference::{InferenceError, Job, JobEvent, Prompt};
use crate::model::ModelRecord;
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

/// What the runtime needs to load a registered model.
pub fn load_spec(record: &ModelRecord) -> Result<LoadSpec, AppError> {
    let path = record.file_path.clone().ok_or_else(|| {
        AppError::Unavailable(format!("model `{}` is not downloaded yet", record.name))
    })?;
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
    /// Only 1 is supported.
    pub n: Option<u32>,
}

/// Token counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OaUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
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

/// Sampling from the model's defaults overridden by the request.
fn sampling(
    defaults: &SamplingParams,
    req: &ChatCompletionRequest,
) -> Result<SamplingParams, AppError> {
    let mut s = defaults.clone();
    if let Some(v) = req.temperature {
        s.temperature = v;
    }
    if let Some(v) = req.top_p {
        s.top_p = v;
    }
    if let Some(v) = req.top_k {
        s.top_k = v;
    }
    if let Some(v) = req.min_p {
        s.min_p = v;
    }
    if let Some(v) = req.repeat_penalty {
        s.repeat_penalty = v;
    }
    if let Some(v) = req.max_completion_tokens.or(req.max_tokens) {
        s.max_tokens = v;
    }
    if req.seed.is_some() {
        s.seed = req.seed;
    }
    match &req.stop {
        Some(OaStop::One(one)) => s.stop = vec![one.clone()],
        Some(OaStop::Many(many)) => s.stop = many.clone(),
        None => {}
    }
    s.validate().map_err(|m| AppError::field("sampling", m))?;
    Ok(s)
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
            content((ChatCompletion = "application/json"), (String = "text/event-stream"))),
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
    let job = Job {
        spec: load_spec(&record)?,
        user_id: caller.id().to_owned(),
        prompt: Prompt::Chat(chat_messages(&req.messages)?),
        sampling: sampling(&record.sampling, &req)?,
        truncation: Truncation::Error,
    };
    let events = state.inference.submit(job).map_err(inference_error)?;
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
    let created = chrono::Utc::now().timestamp();
    if req.stream {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        let stream = chunks(events, id, created, record.name, include_usage);
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let mut events = events;
    let mut text = String::new();
    while let Some(event) = events.recv().await {
        match event {
            JobEvent::Text(t) => text.push_str(&t),
            JobEvent::Done(summary) => {
                return Ok(Json(ChatCompletion {
                    id,
                    object: "chat.completion".into(),
                    created,
                    model: record.name,
                    choices: vec![OaChoice {
                        index: 0,
                        message: OaAnswer {
                            role: "assistant".into(),
                            content: text,
                        },
                        finish_reason: finish_reason(summary.finish_reason).into(),
                    }],
                    usage: OaUsage {
                        prompt_tokens: summary.prompt_tokens,
                        completion_tokens: summary.completion_tokens,
                        total_tokens: summary.prompt_tokens + summary.completion_tokens,
                    },
                })
                .into_response());
            }
            JobEvent::Failed(err) => return Err(inference_error(err).into()),
            JobEvent::Queued { .. } | JobEvent::Started { .. } => {}
        }
    }
    Err(AppError::Internal(anyhow::anyhow!("the generation ended without a result")).into())
}

/// The SSE chunks of a streamed completion.
fn chunks(
    events: tokio::sync::mpsc::UnboundedReceiver<JobEvent>,
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let chunk = move |delta: serde_json::Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    let head = futures::stream::once(async move { Ok(Event::default().data(first.to_string())) });
    let body = tokio_stream_from(events).flat_map(move |event| {
        let items: Vec<Event> = match event {
            JobEvent::Text(text) => {
                vec![Event::default().data(chunk(json!({"content": text}), None).to_string())]
            }
            JobEvent::Done(summary) => {
                let mut out = vec![Event::default().data(
                    chunk(json!({}), Some(finish_reason(summary.finish_reason))).to_string(),
                )];
                if include_usage {
                    let mut usage = chunk(json!({}), None);
                    usage["choices"] = json!([]);
                    usage["usage"] = json!({
                        "prompt_tokens": summary.prompt_tokens,
                        "completion_tokens": summary.completion_tokens,
                        "total_tokens": summary.prompt_tokens + summary.completion_tokens,
                    });
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

/// A stream over an unbounded receiver.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
