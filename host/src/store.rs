//! The storage boundary: one repository trait per kind of record, and the
//! [`Store`] that bundles them. Two implementations exist — SQLite
//! ([`sqlite::SqliteStore`], embedded, the default) and MongoDB
//! ([`mongo::MongoStore`]) — and both pass the suite in [`conformance`].
//!
//! Conventions every implementation keeps:
//! - ids are the strings in the records (see [`crate::model::new_id`]);
//! - a lookup that finds nothing is `Ok(None)` (or `Ok(false)` for deletes),
//!   not an error;
//! - an `update_*` of a record that does not exist is [`StoreError::NotFound`];
//! - a unique-key clash is [`StoreError::Conflict`];
//! - lists honour `limit`/`offset` and report the total count of matches;
//! - text search is a case-insensitive substring match (no `$text`);
//! - expired chats are invisible to every read from the instant they expire,
//!   whether or not a sweep has removed them yet.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::model::*;

pub mod conformance;
pub mod mongo;
pub mod sqlite;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is already taken; the message names it.
    #[error("{0} already exists")]
    Conflict(String),
    /// The record to update does not exist.
    #[error("not found")]
    NotFound,
    /// The store could not be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Accounts.
#[async_trait]
pub trait UserRepo: Send + Sync {
    /// Inserts a user; `Conflict("username")` when the username is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>>;
    /// `username` is compared exactly; callers pass it lowercased.
    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>>;
    /// Replaces every field of the user with that id.
    async fn update_user(&self, user: &User) -> StoreResult<()>;
    /// Matches ordered by username.
    async fn list_users(&self, query: &UserQuery) -> StoreResult<Page<User>>;
    /// Admins and technicians who are not disabled.
    async fn count_active_staff(&self) -> StoreResult<u64>;
    async fn count_users(&self) -> StoreResult<u64>;
}

/// Refresh-token sessions.
#[async_trait]
pub trait SessionRepo: Send + Sync {
    async fn create_session(&self, session: &Session) -> StoreResult<()>;
    async fn get_session_by_hash(&self, token_hash: &str) -> StoreResult<Option<Session>>;
    /// Marks the session used, atomically: returns `false` if it was already
    /// used or revoked (so two concurrent refreshes cannot both win).
    async fn mark_session_used(&self, id: &str) -> StoreResult<bool>;
    /// Revokes every session of the family.
    async fn revoke_family(&self, family_id: &str) -> StoreResult<()>;
    /// Revokes every session of the user.
    async fn revoke_user_sessions(&self, user_id: &str) -> StoreResult<()>;
    /// Deletes sessions that expired before `now`; returns how many.
    async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64>;
}

/// Personal API keys.
#[async_trait]
pub trait ApiKeyRepo: Send + Sync {
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    async fn get_api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKey>>;
    /// The user's keys, newest first.
    async fn list_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>>;
    /// Deletes one of the user's keys; `false` if the user has no such key.
    async fn delete_api_key(&self, user_id: &str, id: &str) -> StoreResult<bool>;
    /// Deletes every key of the user; returns how many.
    async fn delete_user_api_keys(&self, user_id: &str) -> StoreResult<u64>;
    async fn touch_api_key(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()>;
}

/// Chats. Every read is scoped to the owner.
#[async_trait]
pub trait ChatRepo: Send + Sync {
    async fn create_chat(&self, chat: &Chat) -> StoreResult<()>;
    /// `None` if the chat does not exist, belongs to someone else or expired.
    async fn get_chat(
        &self,
        owner_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Chat>>;
    /// Replaces the chat with that id and owner.
    async fn update_chat(&self, chat: &Chat) -> StoreResult<()>;
    /// Deletes the chat and its messages; `false` if the owner has no such chat.
    async fn delete_chat(&self, owner_id: &str, id: &str) -> StoreResult<bool>;
    /// The owner's live chats: pinned first, then most recently updated.
    async fn list_chats(
        &self,
        owner_id: &str,
        query: &ChatQuery,
        now: DateTime<Utc>,
    ) -> StoreResult<Page<Chat>>;
    /// Deletes chats (and their messages) that expired before `now`.
    async fn purge_expired_chats(&self, now: DateTime<Utc>) -> StoreResult<u64>;
}

/// Messages of chats.
#[async_trait]
pub trait MessageRepo: Send + Sync {
    async fn add_message(&self, message: &Message) -> StoreResult<()>;
    /// Replaces a message (used when an answer completes, stops or fails).
    async fn update_message(&self, message: &Message) -> StoreResult<()>;
    /// The chat's messages, oldest first.
    async fn list_messages(&self, chat_id: &str) -> StoreResult<Vec<Message>>;
}

/// Support tickets.
#[async_trait]
pub trait TicketRepo: Send + Sync {
    /// Inserts the ticket with the next free number (1, 2, …) and returns it
    /// as stored. The `number` passed in is ignored.
    async fn create_ticket(&self, ticket: &Ticket) -> StoreResult<Ticket>;
    async fn get_ticket(&self, id: &str) -> StoreResult<Option<Ticket>>;
    async fn get_ticket_by_number(&self, number: i64) -> StoreResult<Option<Ticket>>;
    async fn update_ticket(&self, ticket: &Ticket) -> StoreResult<()>;
    /// Matches, most recently updated first.
    async fn list_tickets(&self, query: &TicketQuery) -> StoreResult<Page<Ticket>>;
}

/// Ticket threads.
#[async_trait]
pub trait CommentRepo: Send + Sync {
    async fn add_comment(&self, comment: &Comment) -> StoreResult<()>;
    /// Oldest first; internal notes only when `include_internal`.
    async fn list_comments(
        &self,
        ticket_id: &str,
        include_internal: bool,
    ) -> StoreResult<Vec<Comment>>;
}

/// Usage events behind the statistics.
#[async_trait]
pub trait UsageRepo: Send + Sync {
    async fn record_usage(&self, event: &UsageEvent) -> StoreResult<()>;
    /// Per-day counts for days `from..=to` (UTC), only days that have
    /// events, optionally for one user. Ordered by day, then kind.
    async fn usage_daily(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        user_id: Option<&str>,
    ) -> StoreResult<UsageDaily>;
    async fn record_generation(&self, generation: &Generation) -> StoreResult<()>;
    /// Generations summed per day and model for days `from..=to` (UTC),
    /// optionally for one user. Ordered by day, then model.
    async fn generation_totals(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        user_id: Option<&str>,
    ) -> StoreResult<Vec<GenerationTotals>>;
}

/// The audit log (append only).
#[async_trait]
pub trait AuditRepo: Send + Sync {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Newest first.
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Page<AuditEntry>>;
}

/// Platform settings as JSON values under string keys.
#[async_trait]
pub trait SettingsRepo: Send + Sync {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<serde_json::Value>>;
    async fn put_setting(&self, key: &str, value: &serde_json::Value) -> StoreResult<()>;
}

/// The model registry.
#[async_trait]
pub trait ModelRepo: Send + Sync {
    /// Inserts a model; `Conflict("name")` when the name is taken.
    async fn create_model(&self, model: &ModelRecord) -> StoreResult<()>;
    async fn get_model(&self, id: &str) -> StoreResult<Option<ModelRecord>>;
    /// `name` is compared exactly.
    async fn get_model_by_name(&self, name: &str) -> StoreResult<Option<ModelRecord>>;
    /// Replaces every field of the model with that id; `Conflict("name")`
    /// when renamed onto another model's name.
    async fn update_model(&self, model: &ModelRecord) -> StoreResult<()>;
    /// `false` if there was no such model.
    async fn delete_model(&self, id: &str) -> StoreResult<bool>;
    /// Every model, ordered by name.
    async fn list_models(&self) -> StoreResult<Vec<ModelRecord>>;
}

/// Everything the host stores.
#[async_trait]
pub trait Store:
    UserRepo
    + SessionRepo
    + ApiKeyRepo
    + ChatRepo
    + MessageRepo
    + TicketRepo
    + CommentRepo
    + UsageRepo
    + AuditRepo
    + SettingsRepo
    + ModelRepo
{
    /// `sqlite` or `mongodb`.
    fn kind(&self) -> &'static str;
    /// Succeeds when the store answers.
    async fn ping(&self) -> StoreResult<()>;
}

/// Opens the store named by `database` (a `mongodb://` or `mongodb+srv://`
/// URL), or the embedded SQLite store in `data_dir` when `database` is `None`.
pub async fn open(
    database: Option<&str>,
    data_dir: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    match database {
        Some(url) if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") => {
            Ok(std::sync::Arc::new(mongo::MongoStore::connect(url).await?))
        }
        Some(other) => anyhow::bail!(
            "unsupported --database `{other}`: give a mongodb:// URL, or leave it out for the embedded store"
        ),
        None => {
            std::fs::create_dir_all(data_dir)?;
            let store = sqlite::SqliteStore::open(&data_dir.join("corral.db"))?;
            Ok(std::sync::Arc::new(store))
        }
    }
}
