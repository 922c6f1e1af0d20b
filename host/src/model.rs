//! Domain records shared by the stores and the API.
//!
//! Records that hold no secrets derive `ToSchema` and are sent as they are;
//! users, sessions and API keys have separate views in the API layer.

use chrono::{DateTime, NaiveDate, Utc};
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
    #[serde(with = "serde_millis")]
    pub created_at: DateTime<Utc>,
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
