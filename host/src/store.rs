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
//! - a unique-key clash is [`StoreError::Conflict`]; so is a plugin's
//!   key-value write past its quota (`Conflict(KV_QUOTA)`);
//! - lists honour `limit`/`offset` and report the total count of matches;
//! - text search is a case-insensitive substring match (no `$text`);
//! - expired chats are invisible to every read from the instant they expire,
//!   whether or not a sweep has removed them yet.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

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
    /// A newer Corral changed the store's layout past what this build
    /// knows; the message says which layouts.
    #[error("the store was upgraded by a newer Corral: {0}")]
    Newer(String),
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// What [`StoreError::Conflict`] names when a plugin's key-value write
/// would take its data past its quota ([`PluginDataRepo::kv_set`]).
pub const KV_QUOTA: &str = "key-value quota";

impl StoreError {
    /// Whether this is a key-value write refused for the plugin's quota.
    pub fn is_kv_quota(&self) -> bool {
        matches!(self, StoreError::Conflict(what) if what == KV_QUOTA)
    }
}

/// Fields of an account to change; `None` keeps what is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserUpdate {
    pub display_name: Option<String>,
    pub role: Option<corral_sdk::Role>,
    pub disabled: Option<bool>,
    pub password_hash: Option<String>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// Adds one to the stored `token_version` in the same write, so every
    /// access token issued before stops working.
    pub bump_token_version: bool,
    /// Writes only while the stored `token_version` is this one, so a
    /// change decided on what the caller read cannot undo a reset or a
    /// disable that landed in between.
    pub expect_token_version: Option<i64>,
}

/// Fields of a chat to change; `None` keeps what is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatUpdate {
    pub title: Option<String>,
    /// `(expected, new)`: sets the title to `new` only while it is still
    /// `expected` (naming an untitled chat never undoes a rename).
    pub title_if: Option<(String, String)>,
    pub model: Option<String>,
    /// `Some(None)` removes the system prompt.
    pub system_prompt: Option<Option<String>>,
    pub pinned: Option<bool>,
    /// Replaces the chat's sampling settings as a whole (an empty value
    /// clears them).
    pub sampling: Option<SamplingOverrides>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Fields of a message to change; `None` keeps what is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageUpdate {
    pub content: Option<String>,
    pub status: Option<MessageStatus>,
    pub error: Option<Option<String>>,
    pub model: Option<Option<String>>,
    pub usage: Option<Option<MessageUsage>>,
    /// Replaces the message's annotations as a whole (an empty list
    /// removes them).
    pub annotations: Option<Vec<MessageAnnotation>>,
    /// When it was written (a regenerated answer is written anew).
    pub created_at: Option<DateTime<Utc>>,
}

/// Fields of an installed plugin to change; `None` keeps what is stored.
/// `id`, `installed_by` and `installed_at` never change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginUpdate {
    /// A new version, `(manifest, component_sha256)`: the manifest and
    /// the component change together.
    pub manifest: Option<(String, String)>,
    pub enabled: Option<bool>,
    pub optional: Option<bool>,
    pub approved: Option<Vec<String>>,
    pub approved_hosts: Option<Vec<String>>,
    pub private_network: Option<bool>,
    /// `Some(None)`: every model.
    pub models: Option<Option<Vec<String>>>,
    pub config: Option<serde_json::Value>,
    /// `Some(None)` clears it.
    pub disabled_reason: Option<Option<String>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Fields of a ticket to change; `None` keeps what is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TicketUpdate {
    pub status: Option<TicketStatus>,
    /// The update applies only while the stored status is this one, so two
    /// racing transitions cannot both apply.
    pub expected_status: Option<TicketStatus>,
    pub priority: Option<TicketPriority>,
    pub category: Option<TicketCategory>,
    /// `Some(None)` unassigns; otherwise `(assignee_id, assignee_username)`.
    pub assignee: Option<Option<(String, String)>>,
    pub resolved_at: Option<Option<DateTime<Utc>>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Accounts.
#[async_trait]
pub trait UserRepo: Send + Sync {
    /// Inserts a user; `Conflict("username")` when the username is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>>;
    /// `username` is compared exactly; callers pass it lowercased.
    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>>;
    /// Changes the named fields of the user, in one atomic write, and
    /// returns the user as stored after it. With `expect_token_version`
    /// set and the stored version another, nothing is written and the
    /// answer is `Conflict("token_version")`.
    async fn update_user(&self, id: &str, changes: &UserUpdate) -> StoreResult<User>;
    /// Matches ordered by username.
    async fn list_users(&self, query: &UserQuery) -> StoreResult<Page<User>>;
    /// Admins and technicians who are not disabled.
    async fn count_active_staff(&self) -> StoreResult<u64>;
    /// Accounts of `role` that are not disabled.
    async fn count_active_in_role(&self, role: corral_sdk::Role) -> StoreResult<u64>;
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
    /// Changes the named fields of the owner's chat and returns it as
    /// stored after the write; `NotFound` if the owner has no such chat.
    async fn update_chat(
        &self,
        owner_id: &str,
        id: &str,
        changes: &ChatUpdate,
    ) -> StoreResult<Chat>;
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
    /// `NotFound` when the message's chat does not exist (or is deleted
    /// while it is stored): no message outlives its chat.
    async fn add_message(&self, message: &Message) -> StoreResult<()>;
    /// Changes the named fields of a message (an answer that restarts,
    /// completes, stops or fails).
    async fn update_message(&self, id: &str, changes: &MessageUpdate) -> StoreResult<()>;
    /// Saves the text and usage so far of an answer while it is still
    /// `pending`; `false` (and nothing written) once it is not.
    async fn save_answer_progress(
        &self,
        id: &str,
        content: &str,
        usage: &MessageUsage,
    ) -> StoreResult<bool>;
    /// Marks every `pending` answer `interrupted`, keeping its text, and
    /// returns them as stored with the id of their chat's owner.
    async fn interrupt_pending_answers(&self) -> StoreResult<Vec<(Message, String)>>;
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
    /// Changes the named fields of the ticket and returns it as stored after
    /// the write. With `expected_status`, nothing is written and the result
    /// is `None` unless the stored status is still that one.
    async fn update_ticket(&self, id: &str, changes: &TicketUpdate) -> StoreResult<Option<Ticket>>;
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
    /// Writes `value` only if the setting still holds `expected` (`None`:
    /// it does not exist), atomically. False, and nothing written, when it
    /// holds something else: another host changed it since it was read.
    async fn swap_setting(
        &self,
        key: &str,
        expected: Option<&serde_json::Value>,
        value: &serde_json::Value,
    ) -> StoreResult<bool>;
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

/// Installed plugins and the optional ones users turned on.
#[async_trait]
pub trait PluginRepo: Send + Sync {
    /// Inserts the plugin, or replaces every field of the one with its id
    /// (users' opt-ins and its key-value data stay).
    async fn put_plugin(&self, plugin: &PluginRecord) -> StoreResult<()>;
    async fn get_plugin(&self, id: &str) -> StoreResult<Option<PluginRecord>>;
    /// Every plugin, ordered by id.
    async fn list_plugins(&self) -> StoreResult<Vec<PluginRecord>>;
    /// Changes the named fields of the plugin and returns it as stored
    /// after the write; `NotFound` if there is no such plugin.
    async fn update_plugin(&self, id: &str, changes: &PluginUpdate) -> StoreResult<PluginRecord>;
    /// Deletes the plugin with its key-value data and every user's opt-in;
    /// `false` if there was no such plugin (its data, if any, still goes).
    async fn delete_plugin(&self, id: &str) -> StoreResult<bool>;
    /// The plugins the user turned on, by id, in order.
    async fn list_user_plugins(&self, user_id: &str) -> StoreResult<Vec<String>>;
    /// Turns a plugin on or off for the user; doing it twice changes
    /// nothing. Turning on a plugin that is not installed is `NotFound`.
    async fn set_user_plugin(&self, user_id: &str, plugin_id: &str, on: bool) -> StoreResult<()>;
}

/// Plugins' key-value data. Every call names the plugin and a scope: `""`
/// for the data the plugin shares among all its users, or a user id for
/// that user's. One plugin never reaches another's keys, nor one scope
/// another's. Values are bytes; keys compare as bytes (UTF-8).
#[async_trait]
pub trait PluginDataRepo: Send + Sync {
    async fn kv_get(&self, plugin: &str, scope: &str, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Stores `value` under `key`, replacing what was there. The plugin's
    /// usage ([`Self::kv_usage`]) counts the bytes of every key and value
    /// it holds, in all scopes; a write that would take it past
    /// `quota_bytes` (the replaced value counted as gone) stores nothing
    /// and fails with `Conflict(KV_QUOTA)`, also under concurrent writes.
    async fn kv_set(
        &self,
        plugin: &str,
        scope: &str,
        key: &str,
        value: &[u8],
        quota_bytes: u64,
    ) -> StoreResult<()>;
    /// `false` if there was no such key.
    async fn kv_delete(&self, plugin: &str, scope: &str, key: &str) -> StoreResult<bool>;
    /// At most `limit` keys of the scope that start with `prefix` (taken
    /// literally), in byte order.
    async fn kv_list(
        &self,
        plugin: &str,
        scope: &str,
        prefix: &str,
        limit: u32,
    ) -> StoreResult<Vec<String>>;
    /// Bytes of keys and values the plugin holds, all scopes together.
    async fn kv_usage(&self, plugin: &str) -> StoreResult<u64>;
}

/// The bytes a key-value entry counts against its plugin's quota.
fn kv_size(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// The least string above every string that starts with `prefix`, for a
/// range query `prefix <= key < end`; `None` when no string is (then
/// `key >= prefix` alone selects exactly the keys with the prefix).
/// UTF-8 byte order is code point order, so this works on characters.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
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
    + PluginRepo
    + PluginDataRepo
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
            secure_data_dir(data_dir)?;
            let path = data_dir.join("corral.db");
            // Created owner-only before SQLite opens it: SQLite gives its
            // `-wal` and `-shm` files the database file's permissions.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(PRIVATE_FILE)
                .open(&path)?;
            let store = sqlite::SqliteStore::open(&path)?;
            Ok(std::sync::Arc::new(store))
        }
    }
}

/// Permissions of the data dir and every folder in it: the owner only.
const PRIVATE_DIR: u32 = 0o700;
/// Permissions of every file in the data dir: the owner only. The store
/// holds password hashes and the token signing key.
const PRIVATE_FILE: u32 = 0o600;

/// Makes every file and folder this process creates from now on readable
/// by its user only (umask 077), whoever creates it: the store, downloads,
/// backends.
pub fn restrict_new_files() {
    // SAFETY: umask only swaps the process's file-creation mask; it cannot
    // fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates the data dir owner-only, or tightens an existing one: every
/// folder in it becomes 0700 and every file 0600. Symbolic links are left
/// alone (what they point to is not the data dir's).
pub fn secure_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)?;
    tighten(dir, PRIVATE_DIR)?;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                tighten(&entry.path(), PRIVATE_DIR)?;
                pending.push(entry.path());
            } else if kind.is_file() {
                tighten(&entry.path(), PRIVATE_FILE)?;
            }
        }
    }
    Ok(())
}

/// Sets `mode` on `path` when it allows more, and says so.
fn tighten(path: &std::path::Path, mode: u32) -> std::io::Result<()> {
    let current = std::fs::symlink_metadata(path)?.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        tracing::info!(
            path = %path.display(),
            from = format!("{current:o}"),
            to = format!("{mode:o}"),
            "tightened permissions in the data dir"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_existing_data_dir_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let models = data.join("models");
        std::fs::create_dir_all(&models).unwrap();
        let db = data.join("corral.db");
        let partial = models.join("m.gguf.partial");
        std::fs::write(&db, b"").unwrap();
        std::fs::write(&partial, b"").unwrap();
        for (path, m) in [
            (&data, 0o755),
            (&models, 0o775),
            (&db, 0o644),
            (&partial, 0o666),
        ] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).unwrap();
        }
        // Already tighter than needed: left as it is.
        let secret = data.join("owner-read-only");
        std::fs::write(&secret, b"").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).unwrap();

        secure_data_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&models), 0o700);
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(&partial), 0o600);
        assert_eq!(mode(&secret), 0o400);
    }

    #[test]
    fn prefix_end_bounds_exactly_the_keys_with_the_prefix() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a%").as_deref(), Some("a&"));
        // The character after U+D7FF is U+E000 (no surrogates in strings).
        assert_eq!(prefix_end("a\u{d7ff}").as_deref(), Some("a\u{e000}"));
        // The highest character has no successor: the one before it moves.
        assert_eq!(prefix_end("a\u{10ffff}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10ffff}\u{10ffff}"), None);

        let keys = [
            "a",
            "ab",
            "ab\u{0}",
            "abc",
            "ab\u{10ffff}x",
            "ac",
            "b",
            "é",
            "\u{10ffff}",
        ];
        for prefix in ["", "a", "ab", "ab\u{10ffff}", "é", "\u{10ffff}", "zz"] {
            let end = prefix_end(prefix);
            for key in keys {
                let in_range = key >= prefix && end.as_deref().is_none_or(|end| key < end);
                assert_eq!(
                    in_range,
                    key.starts_with(prefix),
                    "{key:?} under {prefix:?}"
                );
            }
        }
    }

    #[test]
    fn a_new_data_dir_is_private() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("a").join("data");
        secure_data_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
    }
}
