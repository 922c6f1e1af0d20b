//! The backend boundary: what an inference engine offers Corral.
//!
//! A backend is a [`Backend`] that loads models; a loaded [`Model`]
//! generates text, embeds and tokenizes. Every request and answer is a plain
//! serde type, so the same interface works in process (through the C ABI of
//! [`crate::abi`]) or across a process or machine boundary later.
//!
//! Calls are blocking. The host calls them from its own threads, several at
//! once: a backend that batches (llama.cpp) should serve concurrent
//! [`Model::generate`] calls together in one decode loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// What a backend is and can do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Short unique name, e.g. `llama` or `candle`.
    pub name: String,
    /// The backend's own version.
    pub version: String,
    /// One line for people.
    pub description: String,
    pub capabilities: Capabilities,
    /// File formats it loads, e.g. `["gguf"]`.
    pub formats: Vec<String>,
}

/// Which kinds of work a backend (or a loaded model) supports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Chat: generation from a conversation rendered with a chat template.
    pub chat: bool,
    /// Plain text completion.
    pub completion: bool,
    /// Sentence embeddings.
    pub embeddings: bool,
}

/// How to load a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadRequest {
    /// A file or directory on the host.
    pub path: String,
    /// Context window in tokens; `0` means the model's trained length.
    pub context_length: u32,
    /// CPU threads for compute; `0` lets the backend choose.
    pub threads: u32,
    /// How many sequences may be generated at once (continuous batching).
    pub slots: u32,
    /// A Jinja chat template that replaces the model's own.
    pub chat_template: Option<String>,
    /// Keep each slot's cache after a request, so that a later prompt that
    /// starts the same way (the next turn of a chat) reads only what is
    /// new. On by default; off makes every request read its whole prompt.
    #[serde(default = "default_true")]
    pub prompt_cache: bool,
}

fn default_true() -> bool {
    true
}

/// A loaded model, as the backend describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// e.g. `gemma3`, `llama`, `bert`.
    pub architecture: String,
    pub capabilities: Capabilities,
    /// The context window in use, in tokens.
    pub context_length: u32,
    /// The length the model was trained with, when known.
    pub trained_context_length: Option<u32>,
    /// Concurrent sequences.
    pub slots: u32,
    pub vocab_size: u32,
    /// Dimension of embeddings, for embedding models.
    pub embedding_length: Option<u32>,
    /// The chat template in use (an override, the file's own, or the
    /// architecture's default), if any.
    pub chat_template: Option<String>,
    /// Where `chat_template` came from: `override`, `file`, `default`.
    pub chat_template_source: Option<String>,
    /// Bytes of memory the model holds (weights and caches), approximately.
    pub memory_bytes: u64,
}

/// Sampling settings. Defaults give greedy-free, balanced sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass, in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// Keep the k most likely tokens; 0 disables it.
    pub top_k: u32,
    /// Drop tokens below `min_p` × the top probability; 0 disables it.
    pub min_p: f32,
    /// Penalty for repeating recent tokens; 1 disables it.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: u32,
    /// Random seed; the same seed and input give the same output.
    pub seed: Option<u64>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Generation stops before any of these strings.
    pub stop: Vec<String>,
    /// Never end by the model's end-of-generation tokens (they are not
    /// sampled), only by `max_tokens` or a stop string; for benchmarks.
    pub ignore_eos: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: None,
            max_tokens: 512,
            stop: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// The most recent tokens a repeat penalty may look back on.
pub const MAX_REPEAT_LAST_N: u32 = 8192;

impl SamplingParams {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |v: f32| v.is_finite();
        if !(finite(self.temperature) && (0.0..=5.0).contains(&self.temperature)) {
            return Err("`temperature` must be between 0 and 5".into());
        }
        if !(finite(self.top_p) && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err("`top_p` must be > 0 and <= 1".into());
        }
        if !(finite(self.min_p) && (0.0..=1.0).contains(&self.min_p)) {
            return Err("`min_p` must be between 0 and 1".into());
        }
        if !(finite(self.repeat_penalty)
            && self.repeat_penalty > 0.0
            && self.repeat_penalty <= 10.0)
        {
            return Err("`repeat_penalty` must be > 0 and <= 10".into());
        }
        if self.max_tokens == 0 {
            return Err("`max_tokens` must be at least 1".into());
        }
        if self.repeat_last_n > MAX_REPEAT_LAST_N {
            return Err(format!(
                "`repeat_last_n` must be at most {MAX_REPEAT_LAST_N}"
            ));
        }
        if self.stop.len() > 16 || self.stop.iter().any(|s| s.is_empty() || s.len() > 256) {
            return Err("`stop` takes at most 16 non-empty strings of up to 256 bytes".into());
        }
        Ok(())
    }
}

/// What to do with a prompt longer than the context allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Refuse with [`BackendError::ContextOverflow`].
    #[default]
    Error,
    /// Drop tokens from the start of the prompt (keeping the first token,
    /// usually BOS) until prompt plus `max_tokens` fits.
    KeepEnd,
}

impl Truncation {
    /// Applies the policy to the prompt `tokens` of a sequence that holds
    /// `context` tokens. `KeepEnd` leaves room for `max_tokens` of answer,
    /// but never more than half the context (the answer then ends at the
    /// context's end), and keeps the first token when `keep_first` (a BOS).
    /// Returns how many tokens were dropped.
    pub fn apply<T>(
        self,
        tokens: &mut Vec<T>,
        keep_first: bool,
        context: u32,
        max_tokens: u32,
    ) -> Result<u32, BackendError> {
        let n_ctx = context as usize;
        match self {
            Truncation::Error => {
                if tokens.len() >= n_ctx {
                    return Err(BackendError::ContextOverflow(format!(
                        "the prompt has {} tokens but the context holds {n_ctx}: \
                         at most {} prompt tokens leave room for an answer",
                        tokens.len(),
                        n_ctx.saturating_sub(1)
                    )));
                }
                Ok(0)
            }
            Truncation::KeepEnd => {
                let answer = (max_tokens as usize).min(n_ctx / 2);
                let keep = n_ctx
                    .saturating_sub(answer)
                    .clamp(1, n_ctx.saturating_sub(1).max(1));
                if tokens.len() <= keep {
                    return Ok(0);
                }
                let drop = tokens.len() - keep;
                let first = usize::from(keep_first && !tokens.is_empty());
                tokens.drain(first..first + drop);
                Ok(drop as u32)
            }
        }
    }
}

/// A generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// The full prompt text, chat template already applied; special tokens
    /// in it (such as `<start_of_turn>`) are parsed as such.
    pub prompt: String,
    /// Whether to add the model's BOS token in front.
    pub add_bos: bool,
    pub sampling: SamplingParams,
    pub truncation: Truncation,
    /// Whose cache the request may use. A slot's cached prefix is reused
    /// only by a request with the same key (`None` matches only `None`),
    /// and requests with the same key prefer the slot they left. The host
    /// names the user (and the chat, for chat answers), so that no one can
    /// learn from response times what another user's prompts began with.
    /// It never changes the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn (an end-of-generation token).
    Stop,
    /// A stop string was reached (it is not part of the text).
    StopSequence,
    /// `max_tokens` or the context was reached.
    Length,
    /// The caller cancelled.
    Cancelled,
}

/// One event of a generation stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TokenEvent {
    /// The request has started (its prompt is being read).
    Started { prompt_tokens: u32 },
    /// New text. Always whole UTF-8; may hold more than one token, or none
    /// of a token that completes a multi-byte character later.
    Text { text: String },
}

/// The end of a generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateSummary {
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens dropped by [`Truncation::KeepEnd`].
    pub truncated_tokens: u32,
    /// Prompt tokens taken from the cache of an earlier request instead of
    /// being read again (part of `prompt_tokens`).
    #[serde(default)]
    pub cached_tokens: u32,
    /// Seconds from the call to the first token.
    pub time_to_first_token: f64,
    /// Seconds from the call to the end.
    pub total_time: f64,
}

/// One message of a conversation, for chat templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// Errors a backend reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum BackendError {
    /// The file cannot be loaded; the message says why.
    #[error("cannot load the model: {0}")]
    InvalidModel(String),
    /// The request is not valid for this model.
    #[error("{0}")]
    InvalidRequest(String),
    /// The prompt does not fit the context.
    #[error("{0}")]
    ContextOverflow(String),
    /// The model does not do this (e.g. embeddings on a text model).
    #[error("{0}")]
    Unsupported(String),
    /// Something inside the backend failed.
    #[error("backend failure: {0}")]
    Internal(String),
}

/// Result of backend calls.
pub type BackendResult<T> = Result<T, BackendError>;

/// Type of an extra cancellation check.
type Check = Box<dyn Fn() -> bool + Send + Sync>;

/// A flag the host raises to stop a generation. Cheap to clone; clones
/// share the flag.
#[derive(Clone, Default)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
    /// A check asked as well (the host's flag across the C ABI), until
    /// disarmed.
    check: Option<Arc<Mutex<Option<Check>>>>,
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// A token that is also cancelled when `check` says so.
    pub fn with_check(check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        CancelToken {
            flag: Arc::default(),
            check: Some(Arc::new(Mutex::new(Some(Box::new(check))))),
        }
    }

    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        if self.flag.load(Ordering::Acquire) {
            return true;
        }
        let Some(check) = &self.check else {
            return false;
        };
        let guard = check.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(check) if check() => {
                self.cancel();
                true
            }
            _ => false,
        }
    }

    /// Cancels the token and drops its extra check: nothing calls it after
    /// this returns.
    pub fn disarm(&self) {
        self.cancel();
        if let Some(check) = &self.check {
            *check.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

/// An inference engine.
pub trait Backend: Send + Sync + 'static {
    fn info(&self) -> BackendInfo;

    /// Loads a model, calling `progress` with values from 0 to 1. A
    /// `progress` that returns `false` asks to abandon the load.
    fn load(
        &self,
        request: &LoadRequest,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> BackendResult<Box<dyn Model>>;
}

/// A loaded model. Dropping it frees it.
pub trait Model: Send + Sync {
    fn info(&self) -> ModelInfo;

    /// Generates, handing each event to `sink` as it happens, until the
    /// model stops, a limit is reached or `cancel` is raised (which must be
    /// noticed within one decode step, also while the request waits for a
    /// slot or reads its prompt).
    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary>;

    /// Whether the model reads a conversation itself (a remote chat API)
    /// rather than a prompt rendered with [`Model::apply_chat_template`].
    /// The host then hands it conversations through
    /// [`Model::generate_chat`] and text prompts through
    /// [`Model::generate`].
    fn takes_conversations(&self) -> bool {
        false
    }

    /// Generates an answer to `messages`, for a model that
    /// [takes conversations](Model::takes_conversations); `request.prompt`
    /// is empty and the rest applies as for [`Model::generate`].
    fn generate_chat(
        &self,
        messages: &[ChatMessage],
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        let _ = (messages, request, sink, cancel);
        Err(BackendError::Unsupported(
            "this model takes a rendered prompt, not a conversation".into(),
        ))
    }

    /// One vector per input.
    fn embed(&self, inputs: &[String]) -> BackendResult<Vec<Vec<f32>>> {
        let _ = inputs;
        Err(BackendError::Unsupported(
            "this model does not make embeddings".into(),
        ))
    }

    /// Token ids of `text`.
    fn tokenize(&self, text: &str, add_bos: bool) -> BackendResult<Vec<u32>>;

    /// Renders a conversation with the model's chat template, ending with
    /// the opening of the assistant's turn when `add_generation_prompt`.
    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> BackendResult<String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_penalty_looks_back_a_bounded_way() {
        let mut params = SamplingParams {
            repeat_last_n: MAX_REPEAT_LAST_N,
            ..SamplingParams::default()
        };
        assert_eq!(params.validate(), Ok(()));
        params.repeat_last_n = u32::MAX;
        let err = params.validate().unwrap_err();
        assert!(err.contains("repeat_last_n"), "{err}");
    }

    #[test]
    fn truncation_keeps_the_end_and_the_first_token() {
        let mut tokens: Vec<u32> = (0..100).collect();
        let err = Truncation::Error
            .apply(&mut tokens, true, 64, 8)
            .unwrap_err();
        assert!(matches!(err, BackendError::ContextOverflow(m) if m.contains("64")));
        assert_eq!(Truncation::Error.apply(&mut tokens, true, 128, 8), Ok(0));

        // Room for 8 answer tokens in 64: 56 stay, the first among them.
        let dropped = Truncation::KeepEnd.apply(&mut tokens, true, 64, 8).unwrap();
        assert_eq!(dropped, 44);
        assert_eq!(tokens.len(), 56);
        assert_eq!(tokens[..2], [0, 45]);
        assert_eq!(tokens.last(), Some(&99));

        // A long answer gets at most half the context.
        let mut tokens: Vec<u32> = (0..100).collect();
        Truncation::KeepEnd
            .apply(&mut tokens, false, 64, 1000)
            .unwrap();
        assert_eq!(tokens.len(), 32);
        assert_eq!(tokens[0], 68);
        assert_eq!(Truncation::KeepEnd.apply(&mut tokens, false, 64, 8), Ok(0));
    }
}
