//! Remote OpenAI-compatible upstreams: models that another server runs
//! (vLLM, llama-server, Ollama, a cloud API, another Corral) behind
//! `/chat/completions` and `/completions` with streamed answers.
//!
//! An upstream model is an ordinary [`Model`] to the rest of the runtime,
//! so queues, quotas, statistics and extension hooks apply to it as to a
//! local model. It takes conversations as they are (the upstream applies
//! its own chat template) and cannot tokenize.
//!
//! Each upstream's health is kept per model: a 429 puts it in cooldown
//! for its `Retry-After`, and [`FAILURES_TO_COOL`] failures in a row
//! (refused connections, timeouts, 5xx answers) cool it down for a time
//! that doubles with each further failure. A model in cooldown is not
//! called; the router ([`super::Inference`]) goes on to its fallbacks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use corral_sdk::backend::{
    BackendError, BackendResult, CancelToken, Capabilities, ChatMessage, FinishReason,
    GenerateRequest, GenerateSummary, Model, ModelInfo, TokenEvent,
};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::runtime::Handle;

use crate::download::NetPolicy;

/// The backend name of upstream models.
pub const BACKEND: &str = "openai";
/// Error prefixes, which become the error codes clients see.
pub const RATE_LIMITED: &str = "upstream_rate_limited";
pub const UNAVAILABLE: &str = "upstream_unavailable";
pub const REFUSED: &str = "upstream_refused";
pub const COOLING_DOWN: &str = "upstream_cooling_down";

/// Failures in a row that cool an upstream down.
pub const FAILURES_TO_COOL: u32 = 3;
/// The first cooldown after failures; it doubles per further failure.
const FIRST_COOLDOWN: Duration = Duration::from_secs(10);
const MAX_FAILURE_COOLDOWN: Duration = Duration::from_secs(300);
/// The cooldown of a 429 without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an upstream may stay silent: before its answer starts (it may
/// be reading a long prompt), and between two parts of it.
const SILENCE: Duration = Duration::from_secs(120);
/// How often a silent stream looks at the cancel token.
const CANCEL_POLL: Duration = Duration::from_millis(50);
/// Bytes of an upstream's error answer read for its message.
const MAX_ERROR_BODY: usize = 16 * 1024;
/// Bytes one line of the event stream may grow to.
const MAX_LINE: usize = 1024 * 1024;

/// Where an upstream model lives.
#[derive(Clone, PartialEq)]
pub struct Target {
    /// The base URL, ending before `/chat/completions`, e.g.
    /// `https://api.openai.com/v1`.
    pub base_url: String,
    /// Sent as a bearer token.
    pub api_key: Option<String>,
    /// The one certificate the upstream may present, trusted instead of
    /// the public certificate authorities.
    pub pin: Option<crate::tls::Fingerprint>,
    /// The model's name at the upstream.
    pub model: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("pin", &self.pin.as_ref().map(crate::tls::show))
            .field("model", &self.model)
            .finish()
    }
}

/// One upstream's health.
#[derive(Debug, Clone, Default)]
struct Health {
    /// Failures since the last success.
    failures: u32,
    /// No calls until then.
    until: Option<Instant>,
    /// Why it cooled down.
    reason: String,
}

/// An upstream in cooldown, as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cooldown {
    pub left: Duration,
    pub reason: String,
}

/// The HTTP client and the health of every upstream, by model key.
pub struct Upstreams {
    policy: Arc<NetPolicy>,
    client: reqwest::Client,
    health: Mutex<HashMap<String, Health>>,
}

impl Upstreams {
    /// Calls go only where `policy` lets them (also after DNS), and never
    /// follow redirects: an API key must not travel to another origin.
    pub fn new(policy: Arc<NetPolicy>) -> anyhow::Result<Self> {
        let client = crate::download::net::guarded_client(&policy, CONNECT_TIMEOUT, None)?;
        Ok(Upstreams {
            policy,
            client,
            health: Mutex::default(),
        })
    }

    /// Whether an upstream may be at `url`, as far as the URL tells (a
    /// host name is checked once resolved, at each call).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("is not a valid URL: {e}"))?;
        self.policy.check_url(&url).map_err(|refused| refused.0)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Health>> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the model `key` is cooling down, and for how much longer.
    pub fn cooling(&self, key: &str) -> Option<Cooldown> {
        let health = self.lock();
        let h = health.get(key)?;
        let left = h.until?.checked_duration_since(Instant::now())?;
        (!left.is_zero()).then(|| Cooldown {
            left,
            reason: h.reason.clone(),
        })
    }

    /// Forgets the model's failures and cooldown: it answered, or it was
    /// changed or removed.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Cools the model down for `wait` (a 429).
    fn rate_limited(&self, key: &str, wait: Duration, reason: String) {
        let mut health = self.lock();
        let h = health.entry(key.to_owned()).or_default();
        h.until = Some(Instant::now() + wait);
        h.reason = reason;
    }

    /// Counts a failure; returns the cooldown it started, if any.
    fn failed(&self, key: &str, reason: &str) -> Option<Duration> {
        let mut health = self.lock();
        let h = health.entry(key.to_owned()).or_default();
        h.failures = h.failures.saturating_add(1);
        if h.failures < FAILURES_TO_COOL {
            return None;
        }
        let wait = failure_cooldown(h.failures);
        h.until = Some(Instant::now() + wait);
        h.reason = format!("{} failures in a row, the last: {reason}", h.failures);
        Some(wait)
    }

    /// A model of `target`, kept under `key` and named `name` in messages.
    /// A pinned target gets a client of its own, which trusts only that
    /// certificate and speaks only HTTPS (building it can fail).
    pub fn model(
        self: &Arc<Self>,
        key: &str,
        name: &str,
        target: Target,
        info: ModelInfo,
        handle: Handle,
    ) -> anyhow::Result<UpstreamModel> {
        let client = match target.pin {
            None => self.client.clone(),
            Some(pin) => {
                crate::download::net::guarded_client(&self.policy, CONNECT_TIMEOUT, Some(pin))?
            }
        };
        Ok(UpstreamModel {
            upstreams: self.clone(),
            client,
            key: key.to_owned(),
            name: name.to_owned(),
            target,
            info,
            handle,
        })
    }
}

/// The cooldown after `failures` failures in a row (at least
/// [`FAILURES_TO_COOL`]).
fn failure_cooldown(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(FAILURES_TO_COOL).min(16);
    (FIRST_COOLDOWN * 2u32.pow(doublings)).min(MAX_FAILURE_COOLDOWN)
}

/// What a model of the upstream backend says about itself.
pub fn model_info(context_length: u32, slots: u32) -> ModelInfo {
    ModelInfo {
        architecture: "remote".into(),
        capabilities: Capabilities {
            chat: true,
            completion: true,
            embeddings: false,
        },
        context_length,
        trained_context_length: None,
        slots,
        vocab_size: 0,
        embedding_length: None,
        chat_template: None,
        chat_template_source: None,
        memory_bytes: 0,
    }
}

/// A `Retry-After` value in seconds (the HTTP-date form counts as absent).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.max(1.0)))
}

/// The message of an OpenAI-style error body, or its text, shortened.
fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| text.trim().to_owned());
    let message: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    if message.is_empty() {
        "no message".into()
    } else {
        message
    }
}

/// A model served by an upstream.
pub struct UpstreamModel {
    upstreams: Arc<Upstreams>,
    /// The shared client, or the pinned one of this model's upstream.
    client: reqwest::Client,
    key: String,
    name: String,
    target: Target,
    info: ModelInfo,
    handle: Handle,
}

/// Which endpoint a request goes to.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Chat,
    Text,
}

impl UpstreamModel {
    fn body(&self, request: &GenerateRequest, shape: Shape, input: Value) -> Value {
        let s = &request.sampling;
        let mut body = json!({
            "model": self.target.model,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
        });
        match shape {
            Shape::Chat => body["messages"] = input,
            Shape::Text => body["prompt"] = input,
        }
        if !s.stop.is_empty() {
            body["stop"] = json!(s.stop);
        }
        if let Some(seed) = s.seed {
            body["seed"] = json!(seed);
        }
        // Not OpenAI's, but llama-server's and vLLM's; sent only when asked
        // for, so that a server without it never sees it.
        if s.ignore_eos {
            body["ignore_eos"] = json!(true);
        }
        body
    }

    /// Calls the upstream and streams its answer into `sink`.
    async fn call(
        &self,
        shape: Shape,
        body: Value,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        let ups = &self.upstreams;
        if let Some(cooling) = ups.cooling(&self.key) {
            return Err(BackendError::Internal(format!(
                "{COOLING_DOWN}: `{}` is cooling down for {} s more ({})",
                self.name,
                cooling.left.as_secs().max(1),
                cooling.reason
            )));
        }
        let budget = Budget {
            max_tokens: body["max_tokens"]
                .as_u64()
                .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            input_bytes: body
                .get("messages")
                .or_else(|| body.get("prompt"))
                .map_or(0, |input| input.to_string().len()),
        };
        let begun = Instant::now();
        let path = match shape {
            Shape::Chat => "chat/completions",
            Shape::Text => "completions",
        };
        let url = format!("{}/{path}", self.target.base_url.trim_end_matches('/'));
        let mut request = self.client.post(url).json(&body);
        if let Some(key) = &self.target.api_key {
            request = request.bearer_auth(key);
        }
        let send = tokio::time::timeout(SILENCE, request.send());
        let response = tokio::select! {
            response = send => response,
            () = cancelled(cancel) => return Ok(cancelled_summary(begun, &budget)),
        };
        let response = match response {
            Err(_) => return Err(self.failure("did not answer in time".into())),
            Ok(Err(err)) => return Err(self.failure(describe(&err))),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = read_capped(response).await;
            let message = error_message(&body);
            return Err(self.refusal(status, &headers, message));
        }
        // The upstream reads the whole prompt whether or not its answer
        // ends with counts: an answer stopped or broken early is charged
        // this estimate.
        sink(TokenEvent::Started {
            prompt_tokens: budget.estimated_prompt(),
        });
        self.read_stream(shape, response, begun, budget, sink, cancel)
            .await
    }

    /// The error for a failure of the upstream itself, counted against it.
    fn failure(&self, reason: String) -> BackendError {
        let cooled = self.upstreams.failed(&self.key, &reason);
        let tail = match cooled {
            Some(wait) => format!("; cooling down for {} s", wait.as_secs()),
            None => String::new(),
        };
        tracing::warn!(model = %self.name, %reason, "upstream failed");
        BackendError::Internal(format!("{UNAVAILABLE}: `{}` {reason}{tail}", self.name))
    }

    /// The error for a non-success status.
    fn refusal(
        &self,
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
        message: String,
    ) -> BackendError {
        match status.as_u16() {
            429 => {
                let wait = retry_after(headers)
                    .unwrap_or(DEFAULT_RETRY_AFTER)
                    .min(MAX_RETRY_AFTER);
                let reason = format!("429 from the upstream: {message}");
                tracing::info!(model = %self.name, secs = wait.as_secs(), "upstream rate-limited; cooling down");
                self.upstreams.rate_limited(&self.key, wait, reason.clone());
                BackendError::Internal(format!(
                    "{RATE_LIMITED}: `{}` answered 429 ({message}); cooling down for {} s",
                    self.name,
                    wait.as_secs()
                ))
            }
            401 | 403 => {
                let reason = format!("refused the API key ({status}): {message}");
                self.upstreams.failed(&self.key, &reason);
                BackendError::Internal(format!("{REFUSED}: `{}` {reason}", self.name))
            }
            // The request itself (a prompt too long for the upstream's
            // context, say): the upstream is well.
            400 | 413 | 422 => BackendError::InvalidRequest(format!(
                "`{}` refused the request ({status}): {message}",
                self.name
            )),
            _ => self.failure(format!("answered {status}: {message}")),
        }
    }

    async fn read_stream(
        &self,
        shape: Shape,
        response: reqwest::Response,
        begun: Instant,
        budget: Budget,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        let mut stream = response.bytes_stream();
        let mut parser = Parser::new(shape, budget);
        let mut first_token: Option<f64> = None;
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(SILENCE, stream.next()) => next,
                () = cancelled(cancel) => {
                    return Ok(parser.summary(begun, first_token, Some(FinishReason::Cancelled)));
                }
            };
            let chunk = match next {
                Err(_) => return Err(self.broken(&parser, "stopped answering")),
                // Some servers end with the last choice, without `[DONE]`.
                Ok(None) if parser.finish.is_some() => {
                    self.upstreams.forget(&self.key);
                    return Ok(parser.summary(begun, first_token, None));
                }
                Ok(None) => return Err(self.broken(&parser, "ended its answer early")),
                Ok(Some(Err(err))) => return Err(self.broken(&parser, &describe(&err))),
                Ok(Some(Ok(chunk))) => chunk,
            };
            let step = parser.feed(&chunk).map_err(|m| match &parser.refused {
                // The request itself, refused once the stream had begun (a
                // prompt over the upstream's context, say): the upstream
                // is well.
                Some(why) if parser.pieces == 0 => BackendError::InvalidRequest(format!(
                    "`{}` refused the request: {why}",
                    self.name
                )),
                _ => self.broken(&parser, &m),
            })?;
            for text in step.texts {
                first_token.get_or_insert_with(|| begun.elapsed().as_secs_f64());
                sink(TokenEvent::Text { text });
            }
            if step.done {
                self.upstreams.forget(&self.key);
                return Ok(parser.summary(begun, first_token, None));
            }
            if step.cut {
                // An upstream that ignores `max_tokens` is cut off, not
                // followed for ever (nor charged to the user).
                tracing::warn!(model = %self.name, parts = parser.pieces, "upstream sent far more than asked; cut off");
                return Ok(parser.summary(begun, first_token, Some(FinishReason::Length)));
            }
        }
    }

    /// The error of a stream that broke. Before any text it is the
    /// upstream's failure; after, the answer keeps what it had.
    fn broken(&self, parser: &Parser, reason: &str) -> BackendError {
        if parser.pieces == 0 {
            return self.failure(reason.to_owned());
        }
        self.upstreams.failed(&self.key, reason);
        BackendError::Internal(format!(
            "{UNAVAILABLE}: `{}` {reason} after {} tokens",
            self.name, parser.pieces
        ))
    }
}

/// An error of the HTTP client, without the URL (which is the server's
/// business).
fn describe(err: &reqwest::Error) -> String {
    if let Some(refused) = crate::download::net::refusal(err) {
        // Which address and which setting is for technicians: the log.
        tracing::warn!(reason = %refused.0, "an upstream may not be reached");
        return "may not be reached from this server (see its log)".to_owned();
    }
    if let Some(tls) = crate::tls::failure(err) {
        return format!("cannot be reached ({tls})");
    }
    let what = if err.is_connect() {
        "cannot be reached"
    } else if err.is_timeout() {
        "did not answer in time"
    } else {
        "failed"
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(err);
    let mut last = None;
    while let Some(c) = cause {
        last = Some(c.to_string());
        cause = c.source();
    }
    match last {
        Some(detail) => format!("{what} ({detail})"),
        None => what.to_owned(),
    }
}

/// An error answer's body, up to [`MAX_ERROR_BODY`] bytes and what
/// arrives within [`CONNECT_TIMEOUT`] in all: an upstream that trickles
/// its error cannot hold the request.
async fn read_capped(response: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    let read = async {
        while let Some(Ok(chunk)) = stream.next().await {
            out.extend_from_slice(&chunk);
            if out.len() >= MAX_ERROR_BODY {
                out.truncate(MAX_ERROR_BODY);
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, read).await;
    out
}

/// Resolves once `cancel` is raised.
pub(crate) async fn cancelled(cancel: &CancelToken) {
    while !cancel.is_cancelled() {
        tokio::time::sleep(CANCEL_POLL).await;
    }
}

/// A request cancelled before the upstream answered: it may have read the
/// prompt already, so that is charged as estimated.
fn cancelled_summary(begun: Instant, budget: &Budget) -> GenerateSummary {
    let total = begun.elapsed().as_secs_f64();
    GenerateSummary {
        finish_reason: FinishReason::Cancelled,
        prompt_tokens: budget.estimated_prompt(),
        completion_tokens: 0,
        truncated_tokens: 0,
        cached_tokens: 0,
        time_to_first_token: total,
        total_time: total,
    }
}

/// What one piece of the event stream brought.
#[derive(Debug, Default)]
struct Step {
    texts: Vec<String>,
    /// `[DONE]` arrived.
    done: bool,
    /// The upstream sent more than the request allows; the rest is
    /// dropped.
    cut: bool,
}

/// What a request may cost, to check the upstream's account against.
#[derive(Debug, Clone, Copy)]
struct Budget {
    max_tokens: u32,
    /// Bytes of the prompt or messages sent.
    input_bytes: usize,
}

impl Budget {
    /// The prompt's tokens when the upstream does not say: four bytes of
    /// the request's messages a token.
    fn estimated_prompt(&self) -> u32 {
        u32::try_from(self.input_bytes.div_ceil(4)).unwrap_or(u32::MAX)
    }
}

/// Reads `data:` lines of an OpenAI-style event stream.
struct Parser {
    shape: Shape,
    budget: Budget,
    line: Vec<u8>,
    /// Text parts received.
    pieces: u32,
    /// Bytes of text received.
    text_bytes: usize,
    finish: Option<FinishReason>,
    usage: Option<Value>,
    /// Why the upstream refused the request, when it said so in the stream.
    refused: Option<String>,
}

impl Parser {
    fn new(shape: Shape, budget: Budget) -> Self {
        Parser {
            shape,
            budget,
            line: Vec::new(),
            pieces: 0,
            text_bytes: 0,
            finish: None,
            usage: None,
            refused: None,
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<Step, String> {
        let mut step = Step::default();
        for &b in bytes {
            if b != b'\n' {
                if self.line.len() >= MAX_LINE {
                    return Err("sent an event line over 1 MiB".into());
                }
                self.line.push(b);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\r');
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let data = data.trim();
            if data == "[DONE]" {
                step.done = true;
                return Ok(step);
            }
            let event: Value = serde_json::from_str(data)
                .map_err(|_| "sent an event that is not JSON".to_owned())?;
            if let Some(error) = event.get("error") {
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("an error");
                let kind = error.get("type").and_then(Value::as_str);
                if kind == Some("invalid_request_error") {
                    self.refused = Some(error_message(
                        json!({"message": message}).to_string().as_bytes(),
                    ));
                }
                return Err(format!(
                    "reported an error mid-answer: {}",
                    error_message(json!({"message": message}).to_string().as_bytes())
                ));
            }
            if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
                self.usage = Some(usage.clone());
            }
            let Some(choice) = event.pointer("/choices/0") else {
                continue;
            };
            let text = match self.shape {
                Shape::Chat => choice.pointer("/delta/content"),
                Shape::Text => choice.get("text"),
            };
            if let Some(text) = text.and_then(Value::as_str).filter(|t| !t.is_empty()) {
                if self.full() {
                    step.cut = true;
                    return Ok(step);
                }
                self.pieces = self.pieces.saturating_add(1);
                self.text_bytes = self.text_bytes.saturating_add(text.len());
                step.texts.push(text.to_owned());
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish = Some(match reason {
                    "length" => FinishReason::Length,
                    _ => FinishReason::Stop,
                });
            }
        }
        Ok(step)
    }

    /// Whether as many parts came as the request allows (a part is a
    /// token or more; 16 spare for split ones), or as much text as that
    /// many tokens can be.
    fn full(&self) -> bool {
        self.pieces >= self.budget.max_tokens.saturating_add(16)
            || self.text_bytes >= super::nodes::most_text(self.budget.max_tokens)
    }

    fn summary(
        &self,
        begun: Instant,
        first_token: Option<f64>,
        finish: Option<FinishReason>,
    ) -> GenerateSummary {
        let count = |pointer: &str| {
            self.usage
                .as_ref()
                .and_then(|u| u.pointer(pointer))
                .and_then(Value::as_u64)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        let total = begun.elapsed().as_secs_f64();
        let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        // The upstream's own counts, never more than the request allowed
        // or the text could hold (a token is at least a byte, give or take
        // a few special ones): a user is charged for what was delivered,
        // whatever an upstream claims. Without counts, the parts that came.
        let delivered = as_u32(self.text_bytes).saturating_add(self.pieces);
        let completion = count("/completion_tokens")
            .unwrap_or(self.pieces)
            .min(self.budget.max_tokens.max(self.pieces))
            .min(delivered.max(self.pieces));
        let prompt = count("/prompt_tokens")
            .unwrap_or_else(|| self.budget.estimated_prompt())
            .min(as_u32(self.budget.input_bytes).saturating_add(256));
        GenerateSummary {
            finish_reason: finish.or(self.finish).unwrap_or(FinishReason::Stop),
            prompt_tokens: prompt,
            completion_tokens: completion,
            truncated_tokens: 0,
            // An upstream's prompt cache is shared by every user of its
            // key: how much of a prompt it held would tell one user what
            // another sent. Never passed on.
            cached_tokens: 0,
            time_to_first_token: first_token.unwrap_or(total),
            total_time: total,
        }
    }
}

impl Model for UpstreamModel {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        let body = self.body(request, Shape::Text, json!(request.prompt));
        self.handle
            .block_on(self.call(Shape::Text, body, sink, cancel))
    }

    fn takes_conversations(&self) -> bool {
        true
    }

    fn generate_chat(
        &self,
        messages: &[ChatMessage],
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        let body = self.body(request, Shape::Chat, json!(messages));
        self.handle
            .block_on(self.call(Shape::Chat, body, sink, cancel))
    }

    fn tokenize(&self, _text: &str, _add_bos: bool) -> BackendResult<Vec<u32>> {
        Err(BackendError::Unsupported(format!(
            "`{}` is a remote model, which Corral cannot tokenize",
            self.name
        )))
    }

    fn apply_chat_template(
        &self,
        _messages: &[ChatMessage],
        _add_generation_prompt: bool,
    ) -> BackendResult<String> {
        Err(BackendError::Unsupported(format!(
            "`{}` is a remote model: its server applies the chat template",
            self.name
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDE: Budget = Budget {
        max_tokens: 1000,
        input_bytes: 1000,
    };

    #[test]
    fn an_upstream_cannot_charge_more_than_it_delivered_or_was_allowed() {
        let budget = Budget {
            max_tokens: 8,
            input_bytes: 10,
        };
        let mut p = Parser::new(Shape::Chat, budget);
        p.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n")
            .unwrap();
        p.feed(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":999999,\"completion_tokens\":999999,\"prompt_tokens_details\":{\"cached_tokens\":999999}}}\n")
            .unwrap();
        let s = p.summary(Instant::now(), None, None);
        // Two bytes in one part: at most 3 tokens; the prompt at most
        // its bytes and some.
        assert_eq!(s.completion_tokens, 3);
        assert_eq!((s.prompt_tokens, s.cached_tokens), (266, 0));

        let mut p = Parser::new(Shape::Text, budget);
        let part = "data: {\"choices\":[{\"text\":\"word \"}]}\n";
        let step = p.feed(part.repeat(20).as_bytes()).unwrap();
        assert_eq!((step.texts.len(), step.cut), (20, false));
        // More than max_tokens and 16 spare: the rest is dropped.
        let step = p.feed(part.repeat(1000).as_bytes()).unwrap();
        assert_eq!((step.texts.len(), step.cut), (4, true));
        // What came is what is counted: no more than that.
        assert_eq!(p.summary(Instant::now(), None, None).completion_tokens, 24);

        // Few parts, but each huge: cut once the text passes what that
        // many tokens can be.
        let mut p = Parser::new(Shape::Text, budget);
        let huge = format!(
            "data: {{\"choices\":[{{\"text\":\"{}\"}}]}}\n",
            "x".repeat(60_000)
        );
        let step = p.feed(huge.repeat(3).as_bytes()).unwrap();
        assert_eq!((step.texts.len(), step.cut), (2, true));
    }

    #[test]
    fn the_stream_parser_reads_text_usage_and_the_end_across_chunk_borders() {
        let mut p = Parser::new(Shape::Chat, WIDE);
        let a = br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}

data: {"choices":[{"delta":{"content":"Hel"#;
        let b = br#"lo"}}]}
data: {"choices":[{"delta":{"content":" w\u00f6rld"},"finish_reason":"length"}]}
: a comment
data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":4}}}
data: [DONE]
"#;
        let step = p.feed(a).unwrap();
        assert!(step.texts.is_empty() && !step.done);
        let step = p.feed(b).unwrap();
        assert_eq!(step.texts, ["Hello", " wörld"]);
        assert!(step.done);
        let s = p.summary(Instant::now(), Some(0.1), None);
        assert_eq!(s.finish_reason, FinishReason::Length);
        // What the upstream's cache held is not passed on: its cache is
        // shared by every user of the key.
        assert_eq!(
            (s.prompt_tokens, s.completion_tokens, s.cached_tokens),
            (7, 3, 0)
        );
    }

    #[test]
    fn without_usage_the_parts_received_are_counted() {
        let mut p = Parser::new(Shape::Text, WIDE);
        let step = p
            .feed(b"data: {\"choices\":[{\"text\":\"a\"}]}\r\ndata: {\"choices\":[{\"text\":\"b\",\"finish_reason\":\"stop\"}]}\r\n")
            .unwrap();
        assert_eq!(step.texts, ["a", "b"]);
        let s = p.summary(Instant::now(), None, None);
        assert_eq!(
            (s.completion_tokens, s.finish_reason),
            (2, FinishReason::Stop)
        );
        // The prompt is charged as estimated: four bytes a token.
        assert_eq!(s.prompt_tokens, 250);
        // So is one cancelled before the upstream answered.
        let s = cancelled_summary(Instant::now(), &WIDE);
        assert_eq!((s.prompt_tokens, s.completion_tokens), (250, 0));
    }

    #[test]
    fn an_error_event_or_junk_ends_the_stream() {
        let mut p = Parser::new(Shape::Chat, WIDE);
        let err = p
            .feed(b"data: {\"error\":{\"message\":\"overloaded\",\"code\":\"busy\"}}\n")
            .unwrap_err();
        assert!(err.contains("overloaded"), "{err}");
        assert_eq!(p.refused, None, "an upstream's trouble, not the request's");
        let mut p = Parser::new(Shape::Chat, WIDE);
        p.feed(
            b"data: {\"error\":{\"message\":\"too long\",\"type\":\"invalid_request_error\"}}\n",
        )
        .unwrap_err();
        assert_eq!(p.refused.as_deref(), Some("too long"));
        let mut p = Parser::new(Shape::Chat, WIDE);
        assert!(p.feed(b"data: <html>\n").is_err());
    }

    #[test]
    fn failures_cool_an_upstream_down_for_longer_each_time() {
        assert_eq!(failure_cooldown(FAILURES_TO_COOL), FIRST_COOLDOWN);
        assert_eq!(failure_cooldown(FAILURES_TO_COOL + 1), FIRST_COOLDOWN * 2);
        assert_eq!(failure_cooldown(1000), MAX_FAILURE_COOLDOWN);
        let ups = Upstreams::new(Arc::new(NetPolicy::new(
            crate::download::Scope::Upstreams,
            false,
            &[],
        )))
        .unwrap();
        assert_eq!(ups.failed("m", "refused"), None);
        assert_eq!(ups.failed("m", "refused"), None);
        assert!(ups.cooling("m").is_none());
        assert_eq!(ups.failed("m", "refused"), Some(FIRST_COOLDOWN));
        let cooling = ups.cooling("m").expect("cooling");
        assert!(
            cooling.reason.contains("3 failures in a row"),
            "{cooling:?}"
        );
        ups.forget("m");
        assert!(ups.cooling("m").is_none());
        ups.rate_limited("m", Duration::from_secs(2), "429".into());
        assert!(ups
            .cooling("m")
            .is_some_and(|c| c.left <= Duration::from_secs(2)));
        assert!(ups.cooling("other").is_none());
    }

    #[test]
    fn retry_after_takes_seconds_and_ignores_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after", "0".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let t = Target {
            base_url: "https://api.example.com/v1".into(),
            api_key: Some("sk-secret".into()),
            pin: None,
            model: "m".into(),
        };
        assert!(!format!("{t:?}").contains("sk-secret"));
    }
}
