//! The seam between Corral's generation service and whatever extends it.
//!
//! The generation service (chat answers, `/v1/chat/completions`,
//! `/v1/completions`) calls [`Hooks`] at fixed points of every generation;
//! [`NoHooks`] does nothing. The plugin runtime implements [`Hooks`] and is
//! handed [`HostServices`] for what plugins may borrow from the host (their
//! key-value data, models). Neither side names the other's internals.

use std::sync::Arc;

use async_trait::async_trait;
pub use corral_sdk::backend::{ChatMessage, SamplingParams};
pub use corral_sdk::Role;
use serde::{Deserialize, Serialize};

/// Who a generation or a plugin route runs for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookCaller {
    pub user_id: String,
    pub username: String,
    pub role: Role,
}

/// Where a generation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Surface {
    /// An answer in one of Corral's chats.
    Chat,
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/completions`: one prompt text, no chat template.
    Completions,
}

/// What the hooks of one generation are told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookContext {
    pub caller: HookCaller,
    /// The model's name.
    pub model: String,
    pub surface: Surface,
    /// Set for chat answers.
    pub chat_id: Option<String>,
    /// Optional plugins this caller turned on for themselves.
    pub opted_in: Vec<String>,
}

/// A request as it will reach the model. For [`Surface::Completions`] the
/// prompt text is the content of the only message (role `user`).
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRequest {
    /// The conversation, oldest first, without the system prompt.
    pub messages: Vec<ChatMessage>,
    pub system_prompt: Option<String>,
    pub sampling: SamplingParams,
    /// Passages plugins added for the model to know, in the order added.
    pub context: Vec<String>,
}

/// A hook stopped a generation: the user sees `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The plugin that stopped it.
    pub plugin: String,
    pub reason: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin `{}`: {}", self.plugin, self.reason)
    }
}

/// The end of an answer, as `after_answer` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerInfo {
    /// The whole text as the client received it.
    pub text: String,
    /// `stop`, `length`, `cancelled` or `error`.
    pub finish_reason: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// A note a plugin stored with an answer (sources, a warning).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    pub plugin: String,
    pub text: String,
}

/// What `after_answer` decided, all plugins together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerChanges {
    /// Text to store instead of what was streamed (the last replacement
    /// wins).
    pub replacement: Option<String>,
    pub annotations: Vec<Annotation>,
}

/// Hooks into every generation. The service calls [`Hooks::begin`] once
/// per generation and then the returned [`GenerationHooks`] in order:
/// `before_prompt`, `on_chunk` for stretches of answer text, `finish`,
/// `after_answer`.
#[async_trait]
pub trait Hooks: Send + Sync {
    /// The hooks of one generation, or `None` when nothing applies to it
    /// (the service then skips every hook at no cost).
    async fn begin(&self, ctx: &HookContext) -> Option<Box<dyn GenerationHooks>>;

    /// Whether [`HookContext::opted_in`] matters (some extension is one
    /// users turn on for themselves); when `false` the service leaves it
    /// empty and saves looking it up.
    fn uses_opt_ins(&self) -> bool {
        false
    }
}

/// The hooks of one generation, kept from its start to its end.
#[async_trait]
pub trait GenerationHooks: Send + Sync {
    /// May change the request in place, or stop it.
    async fn before_prompt(&mut self, prompt: &mut PromptRequest) -> Result<(), Rejection>;

    /// Whether `on_chunk` and `finish` do anything; when `false` the
    /// service passes text straight on.
    fn filters_stream(&self) -> bool;

    /// A stretch of answer text in; what may go to the client now out.
    /// Text a filter holds back comes out of a later call or `finish`.
    /// An error ends the answer.
    async fn on_chunk(&mut self, text: String) -> Result<String, Rejection>;

    /// The end of the stream: whatever was still held back, filtered.
    async fn finish(&mut self) -> Result<String, Rejection>;

    /// After the answer ended, before it is stored.
    async fn after_answer(&mut self, answer: &AnswerInfo) -> AnswerChanges;
}

/// No extensions: every generation goes straight through.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

#[async_trait]
impl Hooks for NoHooks {
    async fn begin(&self, _ctx: &HookContext) -> Option<Box<dyn GenerationHooks>> {
        None
    }
}

/// Whose key-value data a call reaches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvScope {
    /// One user's data of the plugin.
    User(String),
    /// The plugin's data shared by all its users.
    Shared,
}

/// A failed host call, as the plugin sees it.
pub type ServiceResult<T> = Result<T, String>;

/// What the host lends plugins. Every call names the plugin it is made
/// for; the plugin runtime decides whether the plugin was granted it.
#[async_trait]
pub trait HostServices: Send + Sync {
    async fn kv_get(
        &self,
        plugin: &str,
        scope: &KvScope,
        key: &str,
    ) -> ServiceResult<Option<Vec<u8>>>;
    /// Fails when the plugin's data would grow past `quota_bytes`.
    async fn kv_set(
        &self,
        plugin: &str,
        scope: &KvScope,
        key: &str,
        value: Vec<u8>,
        quota_bytes: u64,
    ) -> ServiceResult<()>;
    async fn kv_delete(&self, plugin: &str, scope: &KvScope, key: &str) -> ServiceResult<bool>;
    async fn kv_list(
        &self,
        plugin: &str,
        scope: &KvScope,
        prefix: &str,
    ) -> ServiceResult<Vec<String>>;

    /// A whole answer from `model` for `caller`, through the scheduler and
    /// counted against the caller's allowance; plugins' hooks do not run
    /// on it.
    async fn generate(
        &self,
        caller: &HookCaller,
        model: &str,
        messages: Vec<ChatMessage>,
        sampling: SamplingChange,
    ) -> ServiceResult<String>;

    /// Embeddings of `texts` by `model` (`None`: the first embedding model
    /// the caller may use), counted against the caller's allowance.
    async fn embed(
        &self,
        caller: &HookCaller,
        model: Option<&str>,
        texts: Vec<String>,
    ) -> ServiceResult<Vec<Vec<f32>>>;

    /// The runtime turned a plugin off by itself (it failed too often in a
    /// row); the host keeps it off across restarts and shows `reason`.
    async fn plugin_disabled(&self, plugin: &str, reason: &str);
}

/// Sampling fields to change; `None` keeps a field as it was.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplingChange {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub max_tokens: Option<u32>,
    pub seed: Option<u64>,
    pub stop: Option<Vec<String>>,
}

impl SamplingChange {
    /// `base` with these changes.
    pub fn apply(&self, base: &SamplingParams) -> SamplingParams {
        let mut out = base.clone();
        if let Some(v) = self.temperature {
            out.temperature = v;
        }
        if let Some(v) = self.top_p {
            out.top_p = v;
        }
        if let Some(v) = self.top_k {
            out.top_k = v;
        }
        if let Some(v) = self.min_p {
            out.min_p = v;
        }
        if let Some(v) = self.repeat_penalty {
            out.repeat_penalty = v;
        }
        if let Some(v) = self.max_tokens {
            out.max_tokens = v;
        }
        if self.seed.is_some() {
            out.seed = self.seed;
        }
        if let Some(v) = &self.stop {
            out.stop = v.clone();
        }
        out
    }
}

/// A shared handle to hooks.
pub type SharedHooks = Arc<dyn Hooks>;
