//! Domain records shared by the stores and the API.
//!
//! Records that hold no secrets derive `ToSchema` and are sent as they are;
//! users, sessions and API keys have separate views in the API layer.

use chrono::{DateTime, NaiveDate, Utc};
use corral_sdk::backend::{FinishReason, GenerateSummary};
use corral_sdk::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::time::{serde_millis, serde_millis_opt};

/// A new random, time-ordered identifier.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// An account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    /// Lowercase; unique.
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub disabled: bool,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Bumped whenever every outstanding access token must stop working
    /// (password reset or change).
    pub token_version: i64,
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_millis")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, with = "serde_millis_opt")]
    pub last_login_at: Option<DateTime<Utc>>,
}

impl User {
    /// Admins and technicians.
    pub fn is_staff(&self) -> bool {
        self.role.is_staff()
    }
}

/// Filters for listing users.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Case-insensitive substring of the username or display name.
    pub search: Option<String>,
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    pub limit: u32,
    pub offset: u64,
}

/// One refresh token. Tokens of one login form a family; each refresh
/// replaces the presented token with a new one in the same family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub family_id: String,
    /// sha256 of the token, hex.
    pub token_hash: String,
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_millis")]
    pub expires_at: DateTime<Utc>,
    /// Set once the token has been exchanged for its successor.
    pub used: bool,
    pub revoked: bool,
}

/// A personal API key. Only its hash is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The first characters of the key, shown so a user can tell keys apart.
    pub prefix: String,
    pub key_hash: String,
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(default, with = "serde_millis_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(default, with = "serde_millis_opt")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// A conversation owned by one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Chat {
    #[schema(example = "01936a6e-7f0c-7c8e-9a51-3f1d2a0b9c11")]
    pub id: String,
    pub owner_id: String,
    #[schema(example = "Trip ideas")]
    pub title: String,
    /// The model the chat talks to.
    #[schema(example = "gemma-3-270m")]
    pub model: String,
    pub system_prompt: Option<String>,
    pub pinned: bool,
    /// Temporary chats disappear at `expires_at`.
    pub temporary: bool,
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_millis")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, with = "serde_millis_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The chat's own sampling settings, over the model's defaults; a
    /// message's own settings go over these. `{}` when it has none.
    #[serde(default)]
    #[schema(required = true)]
    pub sampling: SamplingOverrides,
}

/// Sampling settings that change the model's defaults, field by field: a
/// chat's own, and those sent with one message. An absent field keeps
/// what lies under it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingOverrides {
    /// 0 is greedy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 5.0, example = 0.7)]
    pub temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub min_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 10.0)]
    pub repeat_penalty: Option<f32>,
    /// Most tokens in the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, example = 256)]
    pub max_tokens: Option<u32>,
    /// Same seed, same history, same answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The answer ends before any of these strings (at most 16, each 1 to
    /// 256 bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 16)]
    pub stop: Option<Vec<String>>,
    /// Keep generating past the model's end-of-generation token, up to
    /// `max_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
}

impl SamplingOverrides {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == SamplingOverrides::default()
    }

    /// These settings laid over `base`: each field set here wins, the
    /// others come from `base`.
    pub fn over(&self, base: &SamplingOverrides) -> SamplingOverrides {
        SamplingOverrides {
            temperature: self.temperature.or(base.temperature),
            top_p: self.top_p.or(base.top_p),
            top_k: self.top_k.or(base.top_k),
            min_p: self.min_p.or(base.min_p),
            repeat_penalty: self.repeat_penalty.or(base.repeat_penalty),
            max_tokens: self.max_tokens.or(base.max_tokens),
            seed: self.seed.or(base.seed),
            stop: self.stop.clone().or_else(|| base.stop.clone()),
            ignore_eos: self.ignore_eos.or(base.ignore_eos),
        }
    }
}

/// Filters for listing one user's chats.
#[derive(Debug, Clone, Default)]
pub struct ChatQuery {
    /// Case-insensitive substring of the title or of any message.
    pub search: Option<String>,
    pub pinned: Option<bool>,
    pub limit: u32,
    pub offset: u64,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    System,
    User,
    Assistant,
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Written in full.
    Complete,
    /// An answer that is still being generated.
    Pending,
    /// An answer stopped before it finished.
    Cancelled,
    /// An answer that failed; `error` says why.
    Failed,
    /// An answer cut off because the server stopped while writing it; it
    /// keeps the text saved until then.
    Interrupted,
}

/// One message in a chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: String,
    pub chat_id: String,
    pub role: MessageRole,
    #[schema(example = "What is the capital of France?")]
    pub content: String,
    pub status: MessageStatus,
    pub error: Option<String>,
    /// The model that wrote an answer, by name (kept after the model is
    /// removed).
    #[serde(default)]
    #[schema(example = "gemma-3-270m")]
    pub model: Option<String>,
    /// What generating an answer took; absent for a user's message and
    /// for an answer that failed before it started.
    #[serde(default)]
    pub usage: Option<MessageUsage>,
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
    /// Notes plugins stored with an answer (its sources, a warning), in
    /// the order they were added; empty for most messages.
    #[serde(default)]
    #[schema(required = true)]
    pub annotations: Vec<MessageAnnotation>,
}

/// A note a plugin stored with an answer, shown beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageAnnotation {
    /// The plugin that wrote it, by id.
    #[schema(example = "web-sources")]
    pub plugin: String,
    #[schema(example = "Source: https://en.wikipedia.org/wiki/Paris")]
    pub text: String,
}

/// What one generated answer cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MessageUsage {
    /// Tokens of the prompt the answer was generated from (the template,
    /// the system prompt and the history that fitted the context).
    pub prompt_tokens: u32,
    /// Prompt tokens the model took from its cache of the conversation's
    /// earlier turns instead of reading them again (part of
    /// `prompt_tokens`; 0 for answers stored before it was counted).
    #[serde(default)]
    #[schema(required = true)]
    pub cached_tokens: u32,
    pub completion_tokens: u32,
    /// From the start of the generation to its first token.
    pub time_to_first_token_ms: u64,
    /// Completion tokens per second of decoding (after the first token).
    pub tokens_per_second: f64,
}

/// Where a generation came from.
pub mod generation_source {
    /// An answer in a chat.
    pub const CHAT: &str = "chat";
    /// The OpenAI-compatible API.
    pub const OPENAI: &str = "openai";
}

/// One finished, stopped or failed generation, for statistics and quotas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub id: String,
    pub user_id: String,
    /// The model's name at the time.
    pub model: String,
    /// See [`generation_source`].
    pub source: String,
    pub prompt_tokens: u32,
    /// Prompt tokens taken from the cache (part of `prompt_tokens`).
    #[serde(default)]
    pub cached_tokens: u32,
    pub completion_tokens: u32,
    /// Milliseconds to the first token; absent when none came.
    pub time_to_first_token_ms: Option<u64>,
    /// Milliseconds the whole generation took.
    pub duration_ms: u64,
    /// `complete`, `cancelled`, `failed` or `interrupted`.
    pub status: MessageStatus,
    #[serde(with = "serde_millis")]
    pub at: DateTime<Utc>,
}

impl Generation {
    /// A generation that ran to its end (or was stopped: `cancelled`).
    pub fn finished(user_id: &str, model: &str, source: &str, summary: &GenerateSummary) -> Self {
        let ms = |seconds: f64| (seconds.max(0.0) * 1000.0).round() as u64;
        Generation {
            id: new_id(),
            user_id: user_id.to_owned(),
            model: model.to_owned(),
            source: source.to_owned(),
            prompt_tokens: summary.prompt_tokens,
            cached_tokens: summary.cached_tokens.min(summary.prompt_tokens),
            completion_tokens: summary.completion_tokens,
            time_to_first_token_ms: (summary.completion_tokens > 0)
                .then(|| ms(summary.time_to_first_token)),
            duration_ms: ms(summary.total_time),
            status: if summary.finish_reason == FinishReason::Cancelled {
                MessageStatus::Cancelled
            } else {
                MessageStatus::Complete
            },
            at: crate::time::now(),
        }
    }

    /// A generation that failed after `duration_ms`.
    pub fn failed(user_id: &str, model: &str, source: &str, duration_ms: u64) -> Self {
        Generation {
            id: new_id(),
            user_id: user_id.to_owned(),
            model: model.to_owned(),
            source: source.to_owned(),
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            time_to_first_token_ms: None,
            duration_ms,
            status: MessageStatus::Failed,
            at: crate::time::now(),
        }
    }
}

/// Generations of one model on one day, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerationTotals {
    pub day: NaiveDate,
    pub model: String,
    pub generations: u64,
    pub failed: u64,
    pub prompt_tokens: u64,
    /// Prompt tokens taken from the cache (part of `prompt_tokens`).
    pub cached_prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Sum and count of the times to first token that were measured.
    pub ttft_sum_ms: u64,
    pub ttft_count: u64,
    pub duration_ms: u64,
}

/// Ticket category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketCategory {
    Question,
    Bug,
    Account,
    Model,
    FeatureRequest,
    Other,
}

/// Ticket priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketPriority {
    Low,
    Normal,
    High,
    Urgent,
}

/// Ticket life cycle: open → in_progress → resolved → closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    Open,
    InProgress,
    Resolved,
    Closed,
}

/// A support request from a user to staff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Ticket {
    pub id: String,
    /// Short human number, shown as `#42`.
    #[schema(example = 42)]
    pub number: i64,
    pub owner_id: String,
    pub owner_username: String,
    #[schema(example = "The model stops mid-sentence")]
    pub subject: String,
    pub body: String,
    pub category: TicketCategory,
    pub priority: TicketPriority,
    pub status: TicketStatus,
    pub assignee_id: Option<String>,
    pub assignee_username: Option<String>,
    /// One of the owner's chats the ticket is about.
    pub chat_id: Option<String>,
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_millis")]
    pub updated_at: DateTime<Utc>,
    #[serde(default, with = "serde_millis_opt")]
    pub resolved_at: Option<DateTime<Utc>>,
}

/// Filters for listing tickets.
#[derive(Debug, Clone, Default)]
pub struct TicketQuery {
    /// Only this owner's tickets (always set for non-staff callers).
    pub owner_id: Option<String>,
    pub status: Option<TicketStatus>,
    pub category: Option<TicketCategory>,
    /// `Some(None)` means unassigned.
    pub assignee_id: Option<Option<String>>,
    /// Case-insensitive substring of subject or body.
    pub search: Option<String>,
    pub limit: u32,
    pub offset: u64,
}

/// A message in a ticket's thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Comment {
    pub id: String,
    pub ticket_id: String,
    pub author_id: String,
    pub author_username: String,
    /// Whether the author was staff when writing.
    pub author_is_staff: bool,
    pub body: String,
    /// Staff-only note; never shown to the ticket's owner.
    pub internal: bool,
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
}

/// Something a user did, counted by the statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub id: String,
    pub user_id: String,
    /// e.g. `user.registered`, `chat.created`, `message.created`.
    pub kind: String,
    #[serde(with = "serde_millis")]
    pub at: DateTime<Utc>,
}

/// Event kinds recorded by the host.
pub mod usage_kind {
    pub const USER_REGISTERED: &str = "user.registered";
    pub const LOGIN: &str = "auth.login";
    pub const REFRESH: &str = "auth.refresh";
    pub const API_KEY_USED: &str = "auth.api_key";
    pub const CHAT_CREATED: &str = "chat.created";
    pub const MESSAGE_CREATED: &str = "message.created";
    pub const TICKET_OPENED: &str = "ticket.opened";
    pub const TICKET_RESOLVED: &str = "ticket.resolved";
}

/// Counts of one event kind on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyCount {
    pub day: NaiveDate,
    pub kind: String,
    pub count: u64,
}

/// Per-day usage over a range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageDaily {
    pub counts: Vec<DailyCount>,
    /// Distinct users with any event, per day.
    pub active_users: Vec<(NaiveDate, u64)>,
}

/// One administrative action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    #[serde(with = "serde_millis")]
    pub at: DateTime<Utc>,
    pub actor_id: String,
    pub actor_username: String,
    /// e.g. `user.create`, `user.role`, `user.disable`, `settings.update`.
    #[schema(example = "user.role")]
    pub action: String,
    /// What the action applied to (a user id, a setting name).
    pub target: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// Filters for the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor_id: Option<String>,
    pub action: Option<String>,
    pub limit: u32,
    pub offset: u64,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// All matches, not only this page.
    pub total: u64,
}

/// What a model is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Generates text in chats and completions.
    #[default]
    Chat,
    /// Turns text into vectors.
    Embedding,
}

/// Where a model's file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// The file for `source` is being fetched or checked.
    Downloading,
    /// `file_path` holds the file for `source`.
    Ready,
    /// Fetching or checking `source` failed; `error` says why.
    Failed,
}

/// Who may use a model (technicians always may).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModelAccess {
    /// Every signed-in account.
    pub everyone: bool,
    /// Accounts with one of these roles.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// These accounts, by user id.
    #[serde(default)]
    pub users: Vec<String>,
}

impl Default for ModelAccess {
    fn default() -> Self {
        ModelAccess {
            everyone: true,
            roles: Vec::new(),
            users: Vec::new(),
        }
    }
}

impl ModelAccess {
    pub fn allows(&self, user: &User) -> bool {
        self.everyone || self.roles.contains(&user.role) || self.users.contains(&user.id)
    }
}

/// A model in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelRecord {
    pub id: String,
    /// Unique; what chats and API clients name.
    #[schema(example = "gemma-3-270m", pattern = r"^[A-Za-z0-9._:-]{1,100}$")]
    pub name: String,
    /// The backend that runs it.
    #[schema(example = "llama")]
    pub backend: String,
    pub kind: ModelKind,
    /// An http(s) URL or an absolute path on the server.
    #[schema(
        example = "https://huggingface.co/unsloth/gemma-3-270m-it-GGUF/resolve/main/gemma-3-270m-it-Q4_K_M.gguf"
    )]
    pub source: String,
    /// Expected sha256 of the file, lowercase hex.
    pub sha256: Option<String>,
    /// The file (or directory) in use. During a re-download after `source`
    /// changed, this still names the previous file until the new one is ready.
    pub file_path: Option<String>,
    pub size_bytes: Option<u64>,
    /// The state of the file for `source`.
    pub status: ModelStatus,
    /// Why the last download or check failed.
    pub error: Option<String>,
    pub description: String,
    /// Context window in tokens; 0 = the model's own.
    pub context_length: u32,
    /// CPU threads; 0 = automatic.
    pub threads: u32,
    /// Requests served at once.
    #[schema(minimum = 1, maximum = 64)]
    pub slots: u32,
    /// Default sampling for requests that do not set it.
    #[schema(value_type = Object)]
    pub sampling: corral_sdk::backend::SamplingParams,
    /// Overrides the chat template that comes with the model.
    pub chat_template: Option<String>,
    pub access: ModelAccess,
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "serde_millis")]
    pub updated_at: DateTime<Utc>,
    /// Remote models (backend `openai`, whose `source` is the upstream's
    /// base URL): the model's name at the upstream; `None` means `name`.
    #[serde(default)]
    pub upstream_model: Option<String>,
    /// Remote models: the key sent to the upstream as a bearer token. A
    /// secret: no API answer, event or audit entry shows it.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Remote models on `https`: the SHA-256 fingerprint of the upstream's
    /// own certificate (as [`crate::tls::show`] writes it), trusted instead
    /// of the public certificate authorities, e.g. another Corral serving a
    /// self-signed certificate.
    #[serde(default)]
    pub tls_fingerprint: Option<String>,
    /// Names of the models that answer instead, in order, when this one
    /// is cooling down or fails before its first token.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Names of other models that serve the same weights: each request
    /// goes to the least busy of this model and its replicas, on this
    /// model's access rules, settings and usage.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// The worker node that runs the model (see `/api/nodes`); `None`:
    /// this host. The node loads the file of the same name from its own
    /// models folder.
    #[serde(default)]
    pub node: Option<String>,
}

impl ModelRecord {
    /// Whether `user` may see and use the model: technicians always; others
    /// when access allows them and a file is ready to serve (which, during a
    /// re-download, is the previous one).
    pub fn usable_by(&self, user: &User) -> bool {
        if user.role == Role::Technician {
            return true;
        }
        self.is_servable() && self.access.allows(user)
    }

    /// Whether a file is in place to load, or the model is remote.
    pub fn is_servable(&self) -> bool {
        self.is_remote() || self.file_path.is_some()
    }

    /// Whether another server runs the model (an OpenAI-compatible
    /// upstream at `source`), so that there is no file.
    pub fn is_remote(&self) -> bool {
        self.backend == crate::inference::upstream::BACKEND
    }
}

/// An installed extension plugin. Holds its configuration with secrets in
/// it, so the API shows it through a view of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// From the manifest; unique.
    pub id: String,
    /// The `plugin.toml` text, as installed.
    pub manifest: String,
    /// sha256 of the component (lowercase hex); the `.wasm` itself lives
    /// in the data dir, not in the store.
    pub component_sha256: String,
    pub enabled: bool,
    /// Runs only for users who turned it on for themselves.
    pub optional: bool,
    /// Capabilities a technician approved, of those the manifest asks for.
    pub approved: Vec<String>,
    /// Hosts approved for `http`, of those the manifest declares.
    #[serde(default)]
    pub approved_hosts: Vec<String>,
    /// Whether `http` may reach loopback, link-local and private addresses.
    #[serde(default)]
    pub private_network: bool,
    /// The models it runs for, by name; `None`: every model.
    pub models: Option<Vec<String>>,
    /// The configuration a technician set, secrets included.
    pub config: serde_json::Value,
    /// Why the host turned it off by itself (it failed too often), if it did.
    pub disabled_reason: Option<String>,
    /// The technician who installed it, by user id.
    pub installed_by: String,
    #[serde(with = "serde_millis")]
    pub installed_at: DateTime<Utc>,
    #[serde(with = "serde_millis")]
    pub updated_at: DateTime<Utc>,
}
