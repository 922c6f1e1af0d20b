//! The OpenAI-compatible API under `/v1`: models, chat completions (plain
//! and streamed), authenticated with a personal API key (or an access
//! token) as the Bearer token. Errors use OpenAI's shape.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use corral_hooks::Surface;
use corral_sdk::backend::{CancelToken, ChatMessage, FinishReason, GenerateSummary};
use futures::stream::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::chat::SamplingOverrides;
use crate::error::{AppError, Json};
use crate::generation::{self, Event as GenEvent};
use crate::inference::Prompt;
use crate::policy::Caller;
use crate::registry;
use crate::state::AppState;

pub use crate::error::openai::{openai_error_response, OpenAiErrorBody, OpenAiErrorDetail};

/// An error in OpenAI's shape.
pub struct OpenAiError(pub AppError);

impl<E: Into<AppError>> From<E> for OpenAiError {
    fn from(err: E) -> Self {
        OpenAiError(err.into())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        openai_error_response(self.0)
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

/// A content part; only text parts are understood, others are refused.
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
/// ignored as OpenAI's own API does with unknown ones, except those that
/// would change the answer's form, which are refused when set).
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
    /// Only `{"type": "text"}` is supported (no JSON mode or schema).
    #[schema(value_type = Option<Object>)]
    pub response_format: Option<serde_json::Value>,
    /// Not supported: a non-empty list is refused.
    #[schema(value_type = Option<Vec<Object>>)]
    pub tools: Option<serde_json::Value>,
    /// Not supported: a non-empty list is refused.
    #[schema(value_type = Option<Vec<Object>>)]
    pub functions: Option<serde_json::Value>,
    /// Not supported: a non-empty map is refused.
    #[schema(value_type = Option<Object>)]
    pub logit_bias: Option<serde_json::Value>,
    /// Not supported: `true` is refused.
    pub logprobs: Option<bool>,
}

impl ChatCompletionRequest {
    /// Refuses what Corral cannot honour but would change what a client
    /// gets: a client that asks for JSON, tools, banned tokens or log
    /// probabilities must not get plain text as if it had.
    fn refuse_unsupported(&self) -> Result<(), AppError> {
        let set = |v: &Option<serde_json::Value>| match v {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Array(a)) => !a.is_empty(),
            Some(serde_json::Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        if let Some(format) = &self.response_format {
            let kind = format.get("type").and_then(serde_json::Value::as_str);
            if !format.is_null() && kind != Some("text") {
                return Err(AppError::field(
                    "response_format",
                    "only {\"type\": \"text\"} is supported",
                ));
            }
        }
        for (field, value) in [("tools", &self.tools), ("functions", &self.functions)] {
            if set(value) {
                return Err(AppError::field(field, "tool calls are not supported"));
            }
        }
        if set(&self.logit_bias) {
            return Err(AppError::field("logit_bias", "is not supported"));
        }
        if self.logprobs == Some(true) {
            return Err(AppError::field("logprobs", "is not supported"));
        }
        Ok(())
    }
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
                Some(OaContent::Parts(parts)) => {
                    if let Some(other) = parts.iter().find(|p| p.kind != "text") {
                        return Err(AppError::field(
                            "messages",
                            format!(
                                "content parts of type `{}` are not supported; only `text`",
                                other.kind
                            ),
                        ));
                    }
                    parts
                        .iter()
                        .filter_map(|p| p.text.clone())
                        .collect::<Vec<_>>()
                        .join("")
                }
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
    req.refuse_unsupported()?;
    let request = generation::Request {
        model: req.model.clone(),
        surface: Surface::ChatCompletions,
        prompt: Prompt::Chat(chat_messages(&req.messages)?),
        sampling: req.sampling_fields(),
        chat_id: None,
        hooks: true,
        record_as: None,
    };
    let answer = Answer {
        stream: req.stream,
        include_usage: req.stream_options.as_ref().is_some_and(|o| o.include_usage),
        echo: None,
    };
    generate(&state, &caller, request, answer).await
}

/// Which OpenAI API a generation answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `/v1/chat/completions`: `chat.completion` and its chunks.
    Chat,
    /// `/v1/completions`: `text_completion`.
    Text,
}

/// How either completion endpoint answers.
struct Answer {
    stream: bool,
    include_usage: bool,
    /// Text sent ahead of the generated text (`echo` of the prompt).
    echo: Option<String>,
}

/// Runs a generation and answers it whole or, with `stream`, as
/// Server-Sent Events.
async fn generate(
    state: &AppState,
    caller: &Caller,
    request: generation::Request,
    g: Answer,
) -> Result<Response, OpenAiError> {
    let shape = match request.surface {
        Surface::Completions => Shape::Text,
        Surface::Chat | Surface::ChatCompletions => Shape::Chat,
    };
    let running = generation::start(state, &caller.user, request, CancelToken::new()).await?;
    let prefix = match shape {
        Shape::Chat => "chatcmpl",
        Shape::Text => "cmpl",
    };
    let meta = ChunkMeta {
        id: format!("{prefix}-{}", uuid::Uuid::now_v7().simple()),
        created: chrono::Utc::now().timestamp(),
        model: running.model.name,
        shape,
    };
    if g.stream {
        let stream = chunks(running.events, meta, g.include_usage, g.echo);
        return Ok(crate::api::event_stream(
            Sse::new(stream).keep_alive(KeepAlive::default()),
        ));
    }
    let mut events = running.events;
    let mut text = g.echo.unwrap_or_default();
    while let Some(event) = events.recv().await {
        match event {
            GenEvent::Text { text: t, .. } => text.push_str(&t),
            GenEvent::Done(finished) => {
                let summary = &finished.summary;
                let usage = usage_of(summary);
                let finish = finish_reason(summary.finish_reason).to_owned();
                // Nothing was streamed: an extension's replacement is the
                // answer.
                if let Some(replacement) = finished.replacement {
                    text = replacement;
                }
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
            GenEvent::Failed { error } => return Err(error.into()),
            GenEvent::Queued { .. } | GenEvent::Rerouted { .. } | GenEvent::Started { .. } => {}
        }
    }
    Err(AppError::Internal(anyhow::anyhow!("the generation ended without a result")).into())
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
    events: mpsc::UnboundedReceiver<GenEvent>,
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
            GenEvent::Text { text, .. } => {
                vec![Event::default().data(meta.chunk(json!({"content": text}), None).to_string())]
            }
            GenEvent::Done(finished) => {
                let summary = &finished.summary;
                let mut out = vec![Event::default().data(
                    meta.chunk(json!({}), Some(finish_reason(summary.finish_reason)))
                        .to_string(),
                )];
                if include_usage {
                    let mut usage = meta.chunk(json!({}), None);
                    usage["choices"] = json!([]);
                    usage["usage"] = json!(usage_of(summary));
                    out.push(Event::default().data(usage.to_string()));
                }
                out.push(Event::default().data("[DONE]"));
                out
            }
            GenEvent::Failed { error } => {
                let body = OpenAiErrorBody::from_app(&error);
                vec![Event::default().data(serde_json::to_string(&body).unwrap_or_default())]
            }
            GenEvent::Queued { .. } | GenEvent::Rerouted { .. } | GenEvent::Started { .. } => {
                Vec::new()
            }
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
    let answer = Answer {
        stream: req.stream,
        include_usage: req.stream_options.as_ref().is_some_and(|o| o.include_usage),
        echo: req.echo.then(|| prompt.clone()),
    };
    let request = generation::Request {
        model: req.model.clone(),
        surface: Surface::Completions,
        prompt: Prompt::Text(prompt),
        sampling: req.sampling_fields(),
        chat_id: None,
        hooks: true,
        record_as: None,
    };
    generate(&state, &caller, request, answer).await
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
    let (vectors, tokens) = generation::embed(&state, &caller.user, &record, inputs).await?;
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

/// A stream over an unbounded receiver.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
