//! `corral worker`: one backend library and one model in a process of
//! their own, served over HTTP on a Unix socket, so that a crash in a
//! model's engine (a `GGML_ASSERT` aborts the whole process) ends only
//! that process.
//!
//! The wire format is the backend interface's own serde types:
//!
//! - `POST /load` ([`LoadRequest`]) → [`ModelInfo`]: loads the worker's
//!   one model (a second load is refused).
//! - `POST /generate` ([`GenerateRequest`], header `x-corral-sequence`: an
//!   id for `/cancel`) → a stream of JSON lines, one [`Frame`] each:
//!   `started`, `delta`s (batched: the first at once, then every 16
//!   tokens or 20 ms), a `heartbeat` every second, then `done` with the
//!   summary or `error`. A stream that ends without `done` or `error` is
//!   a crash. Closing the stream cancels the sequence.
//! - `POST /cancel/{sequence}`: stops a sequence; its stream still ends
//!   with `done` (finish reason `cancelled`).
//! - `POST /embed`, `/tokenize`, `/template`: the other model calls.
//! - `GET /health`: the backend, and the model once loaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use corral_sdk::abi::host::DynBackend;
use corral_sdk::backend::{
    Backend, BackendError, CancelToken, ChatMessage, GenerateRequest, GenerateSummary, LoadRequest,
    Model, ModelInfo, TokenEvent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Deltas are sent once this many tokens are waiting…
pub const FLUSH_TOKENS: usize = 16;
/// …or once the oldest has waited this long.
pub const FLUSH_AFTER: Duration = Duration::from_millis(20);
/// A frame at least this often, so both sides notice a dead peer.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// The header naming a sequence for `/cancel`.
pub const SEQUENCE_HEADER: &str = "x-corral-sequence";

/// One line of a `/generate` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame {
    Started {
        prompt_tokens: u32,
    },
    /// Text of `tokens` tokens, always whole UTF-8.
    Delta {
        text: String,
        tokens: u32,
    },
    /// Sent in gaps. `polls` counts how often the engine has checked
    /// whether the sequence was cancelled, as it must at every decode step:
    /// when it stops growing, the engine is stuck, however long the
    /// heartbeats go on.
    Heartbeat {
        #[serde(default)]
        polls: u64,
    },
    Done {
        summary: GenerateSummary,
    },
    Error {
        code: String,
        error: BackendError,
    },
}

/// A backend call that failed, as the worker answers it.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerError {
    pub code: String,
    pub error: BackendError,
}

/// The cancel tokens of running sequences, by the id their client gave.
pub type Sequences = Arc<Mutex<HashMap<String, CancelToken>>>;

struct Worker {
    backend: DynBackend,
    model: tokio::sync::RwLock<Option<Arc<dyn Model>>>,
    sequences: Sequences,
}

type Shared = Arc<Worker>;

pub(super) fn failure(status: StatusCode, code: &str, error: BackendError) -> Response {
    let body = WorkerError {
        code: code.to_owned(),
        error,
    };
    (status, Json(body)).into_response()
}

pub(super) fn backend_failure(error: BackendError) -> Response {
    let code = match &error {
        BackendError::InvalidModel(_) => "invalid_model",
        BackendError::InvalidRequest(_) => "invalid_request",
        BackendError::ContextOverflow(_) => "context_overflow",
        BackendError::Unsupported(_) => "unsupported",
        BackendError::Internal(_) => "internal",
    };
    failure(StatusCode::UNPROCESSABLE_ENTITY, code, error)
}

async fn the_model(worker: &Worker) -> Result<Arc<dyn Model>, Response> {
    worker.model.read().await.clone().ok_or_else(|| {
        failure(
            StatusCode::CONFLICT,
            "not_loaded",
            BackendError::InvalidRequest("no model is loaded in this worker".into()),
        )
    })
}

/// Runs the worker until its socket fails or the process is killed.
pub async fn run(library: &Path, socket: &Path) -> anyhow::Result<()> {
    let backend = DynBackend::open(library)
        .map_err(|e| anyhow::anyhow!("cannot open backend {}: {e}", library.display()))?;
    let worker = Arc::new(Worker {
        backend,
        model: tokio::sync::RwLock::new(None),
        sequences: Sequences::default(),
    });
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", socket.display()))?;
    tracing::info!(backend = %worker.backend.info().name, socket = %socket.display(), "worker listening");
    axum::serve(listener, router(worker)).await?;
    Ok(())
}

fn router(worker: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/load", post(load))
        .route("/generate", post(generate))
        .route("/cancel/{sequence}", post(cancel))
        .route("/embed", post(embed))
        .route("/tokenize", post(tokenize))
        .route("/template", post(template))
        .with_state(worker)
}

#[derive(Serialize, Deserialize)]
pub struct Health {
    pub backend: String,
    pub pid: u32,
    pub model: Option<ModelInfo>,
}

async fn health(State(worker): State<Shared>) -> Json<Health> {
    let model = worker.model.read().await.as_ref().map(|m| m.info());
    Json(Health {
        backend: worker.backend.info().name,
        pid: std::process::id(),
        model,
    })
}

async fn load(State(worker): State<Shared>, Json(request): Json<LoadRequest>) -> Response {
    let mut slot = worker.model.write().await;
    if slot.is_some() {
        return failure(
            StatusCode::CONFLICT,
            "already_loaded",
            BackendError::InvalidRequest("this worker already holds a model".into()),
        );
    }
    let w = worker.clone();
    let loaded = tokio::task::spawn_blocking(move || w.backend.load(&request, &mut |_| true)).await;
    match loaded {
        Ok(Ok(model)) => {
            let model: Arc<dyn Model> = Arc::from(model);
            let info = model.info();
            *slot = Some(model);
            Json(info).into_response()
        }
        Ok(Err(e)) => backend_failure(e),
        Err(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            BackendError::Internal(format!("the load task failed: {e}")),
        ),
    }
}

async fn cancel(State(worker): State<Shared>, UrlPath(sequence): UrlPath<String>) -> StatusCode {
    cancel_sequence(&worker.sequences, &sequence)
}

/// Cancels the running sequence `sequence`: 204, or 404 when none runs.
pub(super) fn cancel_sequence(sequences: &Sequences, sequence: &str) -> StatusCode {
    let token = sequences
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(sequence)
        .cloned();
    match token {
        Some(token) => {
            token.cancel();
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

/// Forgets a sequence's cancel token when its stream ends.
struct Registered {
    sequences: Sequences,
    sequence: Option<String>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(sequence) = &self.sequence {
            self.sequences
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(sequence);
        }
    }
}

async fn generate(
    State(worker): State<Shared>,
    headers: HeaderMap,
    Json(request): Json<GenerateRequest>,
) -> Response {
    let model = match the_model(&worker).await {
        Ok(model) => model,
        Err(response) => return response,
    };
    let sequence = headers
        .get(SEQUENCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    stream_generation(model, worker.sequences.clone(), sequence, request)
}

/// Runs `request` on `model` and answers with its stream of frames; the
/// sequence, when named, can be cancelled through `sequences` meanwhile.
pub(super) fn stream_generation(
    model: Arc<dyn Model>,
    sequences: Sequences,
    sequence: Option<String>,
    request: GenerateRequest,
) -> Response {
    let polls = Arc::new(AtomicU64::new(0));
    let cancel = {
        let polls = polls.clone();
        CancelToken::with_check(move || {
            polls.fetch_add(1, Ordering::Relaxed);
            false
        })
    };
    // A name in use stays with the stream that has it: this one can only
    // be stopped by hanging up.
    let sequence = sequence.filter(|sequence| {
        match sequences
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(sequence.clone())
        {
            std::collections::hash_map::Entry::Vacant(free) => {
                free.insert(cancel.clone());
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => false,
        }
    });
    let registered = Registered {
        sequences,
        sequence,
    };

    let (events_tx, events_rx) = mpsc::unbounded_channel::<Result<TokenEvent, Frame>>();
    let generation = {
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || {
            let tx = events_tx.clone();
            let mut sink = |event: TokenEvent| {
                if tx.send(Ok(event)).is_err() {
                    cancel.cancel();
                }
            };
            let end = match model.generate(&request, &mut sink, &cancel) {
                Ok(summary) => Frame::Done { summary },
                Err(error) => Frame::Error {
                    code: "backend".into(),
                    error,
                },
            };
            let _ = events_tx.send(Err(end));
        })
    };
    let (lines_tx, lines_rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::spawn(async move {
        let _registered = registered;
        frames(events_rx, lines_tx, cancel, polls).await;
        let _ = generation.await;
    });
    let stream = futures::stream::unfold(lines_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn line(frame: &Frame) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(frame).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Turns the model's events into frames: deltas batched, heartbeats in
/// the gaps. Stops (cancelling the sequence) when the client is gone.
async fn frames(
    mut events: mpsc::UnboundedReceiver<Result<TokenEvent, Frame>>,
    out: mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    cancel: CancelToken,
    polls: Arc<AtomicU64>,
) {
    let mut text = String::new();
    let mut tokens = 0usize;
    let mut sent_first = false;
    let mut oldest: Option<tokio::time::Instant> = None;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        let flush_at = oldest.map(|t| t + FLUSH_AFTER);
        let next = tokio::select! {
            event = events.recv() => Some(event),
            () = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => None,
            _ = heartbeat.tick() => {
                let beat = Frame::Heartbeat {
                    polls: polls.load(Ordering::Relaxed),
                };
                if text.is_empty() && out.send(Ok(line(&beat))).await.is_err() {
                    cancel.cancel();
                    return;
                }
                continue;
            }
        };
        let mut end = None;
        match next {
            // The flush timer.
            None => {}
            Some(Some(Ok(TokenEvent::Started { prompt_tokens }))) => {
                if out
                    .send(Ok(line(&Frame::Started { prompt_tokens })))
                    .await
                    .is_err()
                {
                    cancel.cancel();
                    return;
                }
                continue;
            }
            Some(Some(Ok(TokenEvent::Text { text: piece }))) => {
                text.push_str(&piece);
                tokens += 1;
                oldest.get_or_insert_with(tokio::time::Instant::now);
                let due = !sent_first || tokens >= FLUSH_TOKENS;
                if !due {
                    continue;
                }
            }
            Some(Some(Err(frame))) => end = Some(frame),
            // The generation task ended without a last frame (it panicked).
            Some(None) => {
                end = Some(Frame::Error {
                    code: "internal".into(),
                    error: BackendError::Internal("the generation stopped unexpectedly".into()),
                })
            }
        }
        if !text.is_empty() {
            let delta = Frame::Delta {
                text: std::mem::take(&mut text),
                tokens: tokens as u32,
            };
            tokens = 0;
            oldest = None;
            sent_first = true;
            heartbeat.reset();
            if out.send(Ok(line(&delta))).await.is_err() {
                cancel.cancel();
                return;
            }
        }
        if let Some(frame) = end {
            let _ = out.send(Ok(line(&frame))).await;
            return;
        }
    }
}

async fn embed(State(worker): State<Shared>, Json(inputs): Json<Vec<String>>) -> Response {
    let model = match the_model(&worker).await {
        Ok(model) => model,
        Err(response) => return response,
    };
    blocking(move || model.embed(&inputs)).await
}

#[derive(Serialize, Deserialize)]
pub struct TokenizeRequest {
    pub text: String,
    pub add_bos: bool,
}

async fn tokenize(State(worker): State<Shared>, Json(req): Json<TokenizeRequest>) -> Response {
    let model = match the_model(&worker).await {
        Ok(model) => model,
        Err(response) => return response,
    };
    blocking(move || model.tokenize(&req.text, req.add_bos)).await
}

#[derive(Serialize, Deserialize)]
pub struct TemplateRequest {
    pub messages: Vec<ChatMessage>,
    pub add_generation_prompt: bool,
}

async fn template(State(worker): State<Shared>, Json(req): Json<TemplateRequest>) -> Response {
    let model = match the_model(&worker).await {
        Ok(model) => model,
        Err(response) => return response,
    };
    blocking(move || model.apply_chat_template(&req.messages, req.add_generation_prompt)).await
}

pub(super) async fn blocking<T: Serialize + Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(e)) => backend_failure(e),
        Err(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            BackendError::Internal(format!("the task failed: {e}")),
        ),
    }
}

/// Where a worker's socket goes: a private folder under the data dir.
pub fn socket_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("workers")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Result<TokenEvent, Frame> {
        Ok(TokenEvent::Text { text: t.into() })
    }

    async fn collect(
        feed: impl FnOnce(mpsc::UnboundedSender<Result<TokenEvent, Frame>>) + Send + 'static,
    ) -> Vec<Frame> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (out_tx, mut out_rx) = mpsc::channel(1024);
        let task = tokio::spawn(frames(
            events_rx,
            out_tx,
            CancelToken::new(),
            Arc::default(),
        ));
        feed(events_tx);
        task.await.unwrap();
        let mut frames = Vec::new();
        while let Ok(Ok(line)) = out_rx.try_recv() {
            frames.push(serde_json::from_slice(&line).unwrap());
        }
        frames
    }

    fn summary() -> GenerateSummary {
        GenerateSummary {
            finish_reason: corral_sdk::backend::FinishReason::Length,
            prompt_tokens: 3,
            completion_tokens: 40,
            truncated_tokens: 0,
            cached_tokens: 0,
            time_to_first_token: 0.0,
            total_time: 0.0,
        }
    }

    #[tokio::test]
    async fn the_first_token_goes_at_once_then_batches_of_sixteen() {
        let frames = collect(|tx| {
            tx.send(Ok(TokenEvent::Started { prompt_tokens: 3 }))
                .unwrap();
            for i in 0..40 {
                tx.send(text(&format!("{i} "))).unwrap();
            }
            tx.send(Err(Frame::Done { summary: summary() })).unwrap();
        })
        .await;
        let tokens: Vec<u32> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Delta { tokens, .. } => Some(*tokens),
                _ => None,
            })
            .collect();
        assert_eq!(frames[0], Frame::Started { prompt_tokens: 3 });
        assert_eq!(tokens, [1, 16, 16, 7]);
        let all: String = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Delta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(all, (0..40).map(|i| format!("{i} ")).collect::<String>());
        assert_eq!(frames.last(), Some(&Frame::Done { summary: summary() }));
    }

    #[tokio::test]
    async fn a_slow_token_is_flushed_after_twenty_ms_and_silence_gets_heartbeats() {
        let frames = collect(|tx| {
            tokio::spawn(async move {
                tx.send(text("a")).unwrap();
                tx.send(text("b")).unwrap();
                tokio::time::sleep(FLUSH_AFTER * 3).await;
                tx.send(text("c")).unwrap();
                tokio::time::sleep(HEARTBEAT * 2 + Duration::from_millis(200)).await;
                tx.send(Err(Frame::Done { summary: summary() })).unwrap();
            });
        })
        .await;
        let deltas: Vec<&str> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Delta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(deltas, ["a", "b", "c"], "{frames:?}");
        let beats = frames
            .iter()
            .filter(|f| matches!(f, Frame::Heartbeat { .. }))
            .count();
        assert!(beats >= 2, "{frames:?}");
    }
}
