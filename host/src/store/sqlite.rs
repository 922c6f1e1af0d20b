//! The embedded store: one SQLite file (WAL) under the data directory.

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::types::{Type, Value};
use rusqlite::{
    ffi, params_from_iter, Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;
use crate::time;

/// Settings applied to every connection, before anything else runs on it.
const CONNECTION_PRAGMAS: &str = "PRAGMA busy_timeout=5000;
PRAGMA journal_mode=WAL;
PRAGMA foreign_keys=ON;
PRAGMA synchronous=NORMAL;";

/// Schema migrations; after applying entry `i` the database is at
/// `user_version` `i + 1`. Never edit an entry once released: append.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    username TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL,
    disabled INTEGER NOT NULL,
    password_hash TEXT NOT NULL,
    token_version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_login_at TEXT
);
CREATE UNIQUE INDEX users_username ON users (username);
CREATE INDEX users_role ON users (role, disabled);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    family_id TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used INTEGER NOT NULL,
    revoked INTEGER NOT NULL
);
CREATE UNIQUE INDEX sessions_token_hash ON sessions (token_hash);
CREATE INDEX sessions_family ON sessions (family_id);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    expires_at TEXT
);
CREATE UNIQUE INDEX api_keys_hash ON api_keys (key_hash);
CREATE INDEX api_keys_user ON api_keys (user_id, created_at);

CREATE TABLE chats (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL,
    title TEXT NOT NULL,
    model TEXT NOT NULL,
    system_prompt TEXT,
    pinned INTEGER NOT NULL,
    temporary INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    expires_at TEXT
);
CREATE INDEX chats_owner ON chats (owner_id, pinned, updated_at, id);
CREATE INDEX chats_expires ON chats (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE messages (
    id TEXT PRIMARY KEY NOT NULL,
    chat_id TEXT NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX messages_chat ON messages (chat_id, created_at, id);

CREATE TABLE tickets (
    id TEXT PRIMARY KEY NOT NULL,
    number INTEGER NOT NULL,
    owner_id TEXT NOT NULL,
    owner_username TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    category TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    assignee_id TEXT,
    assignee_username TEXT,
    chat_id TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    resolved_at TEXT
);
CREATE UNIQUE INDEX tickets_number ON tickets (number);
CREATE INDEX tickets_updated ON tickets (updated_at, id);
CREATE INDEX tickets_owner ON tickets (owner_id, updated_at);
CREATE INDEX tickets_status ON tickets (status, updated_at);
CREATE INDEX tickets_assignee ON tickets (assignee_id, updated_at);

-- No foreign key to tickets: tickets are never deleted, so a cascade would
-- never fire, and the contract does not require the ticket to exist.
CREATE TABLE comments (
    id TEXT PRIMARY KEY NOT NULL,
    ticket_id TEXT NOT NULL,
    author_id TEXT NOT NULL,
    author_username TEXT NOT NULL,
    author_is_staff INTEGER NOT NULL,
    body TEXT NOT NULL,
    internal INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX comments_ticket ON comments (ticket_id, created_at, id);

CREATE TABLE usage_events (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX usage_at ON usage_events (at, kind);
CREATE INDEX usage_user ON usage_events (user_id, at);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY NOT NULL,
    at TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    actor_username TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_at ON audit_log (at, id);
CREATE INDEX audit_actor ON audit_log (actor_id, at);
CREATE INDEX audit_action ON audit_log (action, at);

CREATE TABLE settings (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
",
    r"
-- The model registry. `data` holds the whole record as JSON (its nested
-- access and sampling settings are only ever read as a whole); `name` is
-- repeated as a column for its unique index.
CREATE TABLE models (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE UNIQUE INDEX models_name ON models (name);
",
    r"
-- Answers remember their model and what generating them took (`usage` is
-- JSON); `generations` keeps every generation for statistics and quotas.
ALTER TABLE messages ADD COLUMN model TEXT;
ALTER TABLE messages ADD COLUMN usage TEXT;

CREATE TABLE generations (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    model TEXT NOT NULL,
    source TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    ttft_ms INTEGER,
    duration_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX generations_at ON generations (at);
CREATE INDEX generations_user_at ON generations (user_id, at);
",
    r"
-- A chat's own sampling settings, as JSON; NULL when it has none.
ALTER TABLE chats ADD COLUMN sampling TEXT;
",
    r"
-- Prompt tokens a generation took from the model's cache; generations
-- counted before this was measured took none.
ALTER TABLE generations ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
",
    r"
-- Notes plugins stored with an answer, as JSON; NULL when it has none.
ALTER TABLE messages ADD COLUMN annotations TEXT;

-- Installed plugins. `approved`, `models` and `config` are JSON; `models`
-- is NULL when the plugin runs for every model.
CREATE TABLE plugins (
    id TEXT PRIMARY KEY NOT NULL,
    manifest TEXT NOT NULL,
    component_sha256 TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    optional INTEGER NOT NULL,
    approved TEXT NOT NULL,
    models TEXT,
    config TEXT NOT NULL,
    disabled_reason TEXT,
    installed_by TEXT NOT NULL,
    installed_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Optional plugins users turned on for themselves.
CREATE TABLE user_plugins (
    user_id TEXT NOT NULL,
    plugin_id TEXT NOT NULL REFERENCES plugins (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, plugin_id)
) WITHOUT ROWID;
CREATE INDEX user_plugins_plugin ON user_plugins (plugin_id);

-- Plugins' key-value data: `scope` is '' for what a plugin shares among
-- its users, else a user id; `size` is what the entry counts against the
-- plugin's quota (bytes of key and value). No foreign key to plugins:
-- deleting a plugin removes its data itself, as the MongoDB store does.
CREATE TABLE plugin_kv (
    plugin_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (plugin_id, scope, key)
);
",
    r"
-- Hosts a technician approved for a plugin's outgoing HTTP (JSON), and
-- whether it may reach private addresses.
ALTER TABLE plugins ADD COLUMN approved_hosts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE plugins ADD COLUMN private_network INTEGER NOT NULL DEFAULT 0;
",
];

/// A table and its columns, in the order the row codecs below use.
struct Table {
    name: &'static str,
    cols: &'static [&'static str],
}

impl Table {
    fn columns(&self) -> String {
        self.cols.join(", ")
    }

    fn insert_sql(&self) -> String {
        let slots: Vec<String> = (1..=self.cols.len()).map(|i| format!("?{i}")).collect();
        format!(
            "INSERT INTO {} ({}) VALUES ({})",
            self.name,
            self.columns(),
            slots.join(", ")
        )
    }

    /// `INSERT` that replaces every other column of the row whose `keys`
    /// clash (an update in place: no delete, so no cascade fires).
    fn upsert_sql(&self, keys: &[&str]) -> String {
        let set: Vec<String> = self
            .cols
            .iter()
            .filter(|col| !keys.contains(col))
            .map(|col| format!("{col} = excluded.{col}"))
            .collect();
        format!(
            "{} ON CONFLICT ({}) DO UPDATE SET {}",
            self.insert_sql(),
            keys.join(", "),
            set.join(", ")
        )
    }

    /// `UPDATE` that matches on `keys`, leaves `frozen` alone and sets every
    /// other column; its numbered parameters are the full row, as for insert.
    fn update_sql(&self, keys: &[&str], frozen: &[&str]) -> String {
        let mut set = Vec::new();
        let mut matches = Vec::new();
        for (i, col) in self.cols.iter().enumerate() {
            let clause = format!("{col} = ?{}", i + 1);
            if keys.contains(col) {
                matches.push(clause);
            } else if !frozen.contains(col) {
                set.push(clause);
            }
        }
        format!(
            "UPDATE {} SET {} WHERE {}",
            self.name,
            set.join(", "),
            matches.join(" AND ")
        )
    }
}

const USERS: Table = Table {
    name: "users",
    cols: &[
        "id",
        "username",
        "display_name",
        "role",
        "disabled",
        "password_hash",
        "token_version",
        "created_at",
        "updated_at",
        "last_login_at",
    ],
};

const SESSIONS: Table = Table {
    name: "sessions",
    cols: &[
        "id",
        "user_id",
        "family_id",
        "token_hash",
        "created_at",
        "expires_at",
        "used",
        "revoked",
    ],
};

const API_KEYS: Table = Table {
    name: "api_keys",
    cols: &[
        "id",
        "user_id",
        "name",
        "prefix",
        "key_hash",
        "created_at",
        "last_used_at",
        "expires_at",
    ],
};

const CHATS: Table = Table {
    name: "chats",
    cols: &[
        "id",
        "owner_id",
        "title",
        "model",
        "system_prompt",
        "pinned",
        "temporary",
        "created_at",
        "updated_at",
        "expires_at",
        "sampling",
    ],
};

const MESSAGES: Table = Table {
    name: "messages",
    cols: &[
        "id",
        "chat_id",
        "role",
        "content",
        "status",
        "error",
        "created_at",
        "model",
        "usage",
        "annotations",
    ],
};

const TICKETS: Table = Table {
    name: "tickets",
    cols: &[
        "id",
        "number",
        "owner_id",
        "owner_username",
        "subject",
        "body",
        "category",
        "priority",
        "status",
        "assignee_id",
        "assignee_username",
        "chat_id",
        "created_at",
        "updated_at",
        "resolved_at",
    ],
};

const COMMENTS: Table = Table {
    name: "comments",
    cols: &[
        "id",
        "ticket_id",
        "author_id",
        "author_username",
        "author_is_staff",
        "body",
        "internal",
        "created_at",
    ],
};

const USAGE: Table = Table {
    name: "usage_events",
    cols: &["id", "user_id", "kind", "at"],
};

const GENERATIONS: Table = Table {
    name: "generations",
    cols: &[
        "id",
        "user_id",
        "model",
        "source",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "duration_ms",
        "status",
        "at",
        "cached_tokens",
    ],
};

const AUDIT: Table = Table {
    name: "audit_log",
    cols: &[
        "id",
        "at",
        "actor_id",
        "actor_username",
        "action",
        "target",
        "details",
    ],
};

const MODELS: Table = Table {
    name: "models",
    cols: &["id", "name", "data"],
};

const PLUGINS: Table = Table {
    name: "plugins",
    cols: &[
        "id",
        "manifest",
        "component_sha256",
        "enabled",
        "optional",
        "approved",
        "models",
        "config",
        "disabled_reason",
        "installed_by",
        "installed_at",
        "updated_at",
        "approved_hosts",
        "private_network",
    ],
};

/// SQLite-backed [`super::Store`].
pub struct SqliteStore {
    pool: Pool<SqliteConnectionManager>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        // Migrate on a lone connection first so the pool's connections do
        // not race each other switching a fresh file to WAL.
        {
            let mut conn = Connection::open(path)?;
            conn.execute_batch(CONNECTION_PRAGMAS)?;
            migrate(&mut conn)?;
        }
        let manager = SqliteConnectionManager::file(path).with_init(|c| {
            c.execute_batch(CONNECTION_PRAGMAS)?;
            register_fold(c)
        });
        let pool = Pool::builder().max_size(8).build(manager)?;
        Ok(Self { pool })
    }

    /// Runs `f` on a pooled connection on the blocking thread pool.
    async fn call<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool
                .get()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            f(&mut conn).map_err(store_error)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    async fn execute(&self, sql: String, params: Vec<Value>) -> StoreResult<usize> {
        self.call(move |c| c.prepare_cached(&sql)?.execute(params_from_iter(params)))
            .await
    }

    async fn query_one<T, M>(
        &self,
        sql: String,
        params: Vec<Value>,
        map: M,
    ) -> StoreResult<Option<T>>
    where
        T: Send + 'static,
        M: FnOnce(&Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.call(move |c| {
            c.prepare_cached(&sql)?
                .query_row(params_from_iter(params), map)
                .optional()
        })
        .await
    }

    async fn query_all<T, M>(&self, sql: String, params: Vec<Value>, map: M) -> StoreResult<Vec<T>>
    where
        T: Send + 'static,
        M: FnMut(&Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.call(move |c| {
            c.prepare_cached(&sql)?
                .query_map(params_from_iter(params), map)?
                .collect()
        })
        .await
    }

    async fn page<T, M>(
        &self,
        table: &'static Table,
        filter: Filter,
        order: &'static str,
        limit: u32,
        offset: u64,
        map: M,
    ) -> StoreResult<Page<T>>
    where
        T: Send + 'static,
        M: FnMut(&Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.call(move |c| {
            // One read transaction, so the total and the page agree.
            let tx = c.transaction()?;
            let where_sql = filter.where_sql();
            let total: i64 = tx.query_row(
                &format!("SELECT COUNT(*) FROM {}{where_sql}", table.name),
                params_from_iter(&filter.params),
                |r| r.get(0),
            )?;
            let mut params = filter.params;
            // LIMIT -1 is SQLite for "no limit".
            params.push(Value::Integer(if limit == 0 { -1 } else { limit.into() }));
            params.push(Value::Integer(i64::try_from(offset).unwrap_or(i64::MAX)));
            let sql = format!(
                "SELECT {} FROM {}{where_sql} ORDER BY {order} LIMIT ? OFFSET ?",
                table.columns(),
                table.name
            );
            let items = tx
                .prepare(&sql)?
                .query_map(params_from_iter(params), map)?
                .collect::<rusqlite::Result<Vec<T>>>()?;
            tx.commit()?;
            Ok(Page {
                items,
                total: count(total),
            })
        })
        .await
    }
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if let Some(why) = newer_schema(version) {
        anyhow::bail!("{why}");
    }
    let applied = usize::try_from(version)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i64::try_from(i + 1)?)?;
    }
    tx.commit()?;
    Ok(())
}

/// Why a database at schema `version` is refused, when it is newer than
/// this build's migrations.
fn newer_schema(version: i64) -> Option<String> {
    let known = MIGRATIONS.len();
    (usize::try_from(version).map_or(true, |v| v > known)).then(|| {
        format!(
            "the database has schema version {version}; this Corral ({}) knows versions up to \
             {known}. Run the Corral that last opened it, or a newer one",
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// Maps a driver error onto the store's error kinds.
fn store_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.code == ErrorCode::ConstraintViolation
                && (f.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY) =>
        {
            StoreError::Conflict(conflicting_column(msg.as_deref()))
        }
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// The column named by "UNIQUE constraint failed: users.username".
fn conflicting_column(msg: Option<&str>) -> String {
    msg.and_then(|m| m.split_once(": "))
        .and_then(|(_, cols)| cols.split(", ").next())
        .and_then(|col| col.rsplit('.').next())
        .filter(|col| !col.is_empty())
        .unwrap_or("key")
        .to_owned()
}

fn is_foreign_key_error(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.contains("FOREIGN KEY constraint failed"))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Name of the SQL function registered on every connection that lowercases
/// text with Unicode rules (SQLite's own `lower()` and `LIKE` fold ASCII
/// only, so "Äpfel" would not match "äpfel").
const FOLD: &str = "corral_fold";

fn register_fold(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        FOLD,
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let value: Option<String> = ctx.get(0)?;
            Ok(value.map(|v| v.to_lowercase()))
        },
    )
}

/// SQL that is true when `needle_param` (already folded) occurs in `col`,
/// taken literally: `instr` has no wildcards to escape.
fn contains_sql(col: &str) -> String {
    format!("instr({FOLD}({col}), ?) > 0")
}

/// `WHERE` clauses and their positional parameters, built up per query.
/// The `SET` list of a field-level update and its parameters.
#[derive(Default)]
struct Assignments {
    sets: Vec<String>,
    params: Vec<Value>,
}

impl Assignments {
    fn set(&mut self, col: &str, value: Value) {
        self.sets.push(format!("{col} = ?"));
        self.params.push(value);
    }

    fn raw(&mut self, sql: &str, params: impl IntoIterator<Item = Value>) {
        self.sets.push(sql.to_owned());
        self.params.extend(params);
    }
}

#[derive(Default)]
struct Filter {
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl Filter {
    fn eq(&mut self, col: &str, value: Value) {
        self.clauses.push(format!("{col} = ?"));
        self.params.push(value);
    }

    fn clause(&mut self, clause: &str, params: impl IntoIterator<Item = Value>) {
        self.clauses.push(clause.to_owned());
        self.params.extend(params);
    }

    /// Case-insensitive substring match of `needle` in any of `cols`.
    fn search(&mut self, cols: &[&str], needle: &str) {
        let folded = needle.to_lowercase();
        let any: Vec<String> = cols.iter().map(|col| contains_sql(col)).collect();
        self.clause(
            &format!("({})", any.join(" OR ")),
            cols.iter().map(|_| Value::Text(folded.clone())),
        );
    }

    fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, text)
}

fn at(t: &DateTime<Utc>) -> Value {
    Value::Text(time::format(t))
}

fn opt_at(t: Option<&DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, at)
}

/// The serde (snake_case) name of a unit enum variant.
fn enum_text<T: Serialize>(value: &T) -> StoreResult<Value> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(Value::Text(s)),
        _ => Err(StoreError::Corrupt(
            "enum value has no text form".to_owned(),
        )),
    }
}

fn conversion<E>(idx: usize, e: E) -> rusqlite::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e))
}

fn get_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let s: String = row.get(idx)?;
    time::parse(&s).map_err(|e| conversion(idx, e))
}

fn get_opt_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let s: Option<String> = row.get(idx)?;
    s.map(|s| time::parse(&s).map_err(|e| conversion(idx, e)))
        .transpose()
}

fn get_enum<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let s: String = row.get(idx)?;
    serde_json::from_value(serde_json::Value::String(s)).map_err(|e| conversion(idx, e))
}

fn get_json(row: &Row<'_>, idx: usize) -> rusqlite::Result<serde_json::Value> {
    let s: String = row.get(idx)?;
    serde_json::from_str(&s).map_err(|e| conversion(idx, e))
}

fn user_values(u: &User) -> StoreResult<Vec<Value>> {
    Ok(vec![
        text(&u.id),
        text(&u.username),
        text(&u.display_name),
        enum_text(&u.role)?,
        u.disabled.into(),
        text(&u.password_hash),
        u.token_version.into(),
        at(&u.created_at),
        at(&u.updated_at),
        opt_at(u.last_login_at.as_ref()),
    ])
}

fn user_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        username: r.get(1)?,
        display_name: r.get(2)?,
        role: get_enum(r, 3)?,
        disabled: r.get(4)?,
        password_hash: r.get(5)?,
        token_version: r.get(6)?,
        created_at: get_at(r, 7)?,
        updated_at: get_at(r, 8)?,
        last_login_at: get_opt_at(r, 9)?,
    })
}

fn session_values(s: &Session) -> Vec<Value> {
    vec![
        text(&s.id),
        text(&s.user_id),
        text(&s.family_id),
        text(&s.token_hash),
        at(&s.created_at),
        at(&s.expires_at),
        s.used.into(),
        s.revoked.into(),
    ]
}

fn session_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: r.get(0)?,
        user_id: r.get(1)?,
        family_id: r.get(2)?,
        token_hash: r.get(3)?,
        created_at: get_at(r, 4)?,
        expires_at: get_at(r, 5)?,
        used: r.get(6)?,
        revoked: r.get(7)?,
    })
}

fn api_key_values(k: &ApiKey) -> Vec<Value> {
    vec![
        text(&k.id),
        text(&k.user_id),
        text(&k.name),
        text(&k.prefix),
        text(&k.key_hash),
        at(&k.created_at),
        opt_at(k.last_used_at.as_ref()),
        opt_at(k.expires_at.as_ref()),
    ]
}

fn api_key_row(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        key_hash: r.get(4)?,
        created_at: get_at(r, 5)?,
        last_used_at: get_opt_at(r, 6)?,
        expires_at: get_opt_at(r, 7)?,
    })
}

fn chat_values(c: &Chat) -> StoreResult<Vec<Value>> {
    Ok(vec![
        text(&c.id),
        text(&c.owner_id),
        text(&c.title),
        text(&c.model),
        opt_text(c.system_prompt.as_deref()),
        c.pinned.into(),
        c.temporary.into(),
        at(&c.created_at),
        at(&c.updated_at),
        opt_at(c.expires_at.as_ref()),
        sampling_value(&c.sampling)?,
    ])
}

fn sampling_value(sampling: &SamplingOverrides) -> StoreResult<Value> {
    if sampling.is_empty() {
        return Ok(Value::Null);
    }
    Ok(Value::Text(
        serde_json::to_string(sampling).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    ))
}

fn chat_row(r: &Row<'_>) -> rusqlite::Result<Chat> {
    Ok(Chat {
        id: r.get(0)?,
        owner_id: r.get(1)?,
        title: r.get(2)?,
        model: r.get(3)?,
        system_prompt: r.get(4)?,
        pinned: r.get(5)?,
        temporary: r.get(6)?,
        created_at: get_at(r, 7)?,
        updated_at: get_at(r, 8)?,
        expires_at: get_opt_at(r, 9)?,
        sampling: {
            let sampling: Option<String> = r.get(10)?;
            sampling
                .map(|s| serde_json::from_str(&s).map_err(|e| conversion(10, e)))
                .transpose()?
                .unwrap_or_default()
        },
    })
}

fn message_values(m: &Message) -> StoreResult<Vec<Value>> {
    Ok(vec![
        text(&m.id),
        text(&m.chat_id),
        enum_text(&m.role)?,
        text(&m.content),
        enum_text(&m.status)?,
        opt_text(m.error.as_deref()),
        at(&m.created_at),
        opt_text(m.model.as_deref()),
        usage_value(m.usage.as_ref())?,
        annotations_value(&m.annotations)?,
    ])
}

fn annotations_value(annotations: &[MessageAnnotation]) -> StoreResult<Value> {
    if annotations.is_empty() {
        return Ok(Value::Null);
    }
    json_text(&annotations)
}

/// `value` as JSON text.
fn json_text<T: Serialize + ?Sized>(value: &T) -> StoreResult<Value> {
    serde_json::to_string(value)
        .map(Value::Text)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

fn usage_value(usage: Option<&MessageUsage>) -> StoreResult<Value> {
    match usage {
        Some(usage) => Ok(Value::Text(
            serde_json::to_string(usage).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        )),
        None => Ok(Value::Null),
    }
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: r.get(0)?,
        chat_id: r.get(1)?,
        role: get_enum(r, 2)?,
        content: r.get(3)?,
        status: get_enum(r, 4)?,
        error: r.get(5)?,
        created_at: get_at(r, 6)?,
        model: r.get(7)?,
        usage: {
            let usage: Option<String> = r.get(8)?;
            usage
                .map(|u| serde_json::from_str(&u).map_err(|e| conversion(8, e)))
                .transpose()?
        },
        annotations: {
            let annotations: Option<String> = r.get(9)?;
            annotations
                .map(|a| serde_json::from_str(&a).map_err(|e| conversion(9, e)))
                .transpose()?
                .unwrap_or_default()
        },
    })
}

fn ticket_values(t: &Ticket) -> StoreResult<Vec<Value>> {
    Ok(vec![
        text(&t.id),
        t.number.into(),
        text(&t.owner_id),
        text(&t.owner_username),
        text(&t.subject),
        text(&t.body),
        enum_text(&t.category)?,
        enum_text(&t.priority)?,
        enum_text(&t.status)?,
        opt_text(t.assignee_id.as_deref()),
        opt_text(t.assignee_username.as_deref()),
        opt_text(t.chat_id.as_deref()),
        at(&t.created_at),
        at(&t.updated_at),
        opt_at(t.resolved_at.as_ref()),
    ])
}

fn ticket_row(r: &Row<'_>) -> rusqlite::Result<Ticket> {
    Ok(Ticket {
        id: r.get(0)?,
        number: r.get(1)?,
        owner_id: r.get(2)?,
        owner_username: r.get(3)?,
        subject: r.get(4)?,
        body: r.get(5)?,
        category: get_enum(r, 6)?,
        priority: get_enum(r, 7)?,
        status: get_enum(r, 8)?,
        assignee_id: r.get(9)?,
        assignee_username: r.get(10)?,
        chat_id: r.get(11)?,
        created_at: get_at(r, 12)?,
        updated_at: get_at(r, 13)?,
        resolved_at: get_opt_at(r, 14)?,
    })
}

fn comment_values(c: &Comment) -> Vec<Value> {
    vec![
        text(&c.id),
        text(&c.ticket_id),
        text(&c.author_id),
        text(&c.author_username),
        c.author_is_staff.into(),
        text(&c.body),
        c.internal.into(),
        at(&c.created_at),
    ]
}

fn comment_row(r: &Row<'_>) -> rusqlite::Result<Comment> {
    Ok(Comment {
        id: r.get(0)?,
        ticket_id: r.get(1)?,
        author_id: r.get(2)?,
        author_username: r.get(3)?,
        author_is_staff: r.get(4)?,
        body: r.get(5)?,
        internal: r.get(6)?,
        created_at: get_at(r, 7)?,
    })
}

fn audit_values(a: &AuditEntry) -> StoreResult<Vec<Value>> {
    let details = serde_json::to_string(&a.details)
        .map_err(|e| StoreError::Unavailable(format!("cannot encode audit details: {e}")))?;
    Ok(vec![
        text(&a.id),
        at(&a.at),
        text(&a.actor_id),
        text(&a.actor_username),
        text(&a.action),
        text(&a.target),
        Value::Text(details),
    ])
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        at: get_at(r, 1)?,
        actor_id: r.get(2)?,
        actor_username: r.get(3)?,
        action: r.get(4)?,
        target: r.get(5)?,
        details: get_json(r, 6)?,
    })
}

impl SqliteStore {
    /// Applies `changes` to the row `filter` matches, in one statement, and
    /// returns the row as stored after it (`None` when nothing matched).
    /// Without changes it only reads the row.
    async fn update_returning<T, M>(
        &self,
        table: &'static Table,
        changes: Assignments,
        filter: Filter,
        map: M,
    ) -> StoreResult<Option<T>>
    where
        T: Send + 'static,
        M: FnOnce(&Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let where_sql = filter.where_sql();
        let sql = if changes.sets.is_empty() {
            format!("SELECT {} FROM {}{where_sql}", table.columns(), table.name)
        } else {
            format!(
                "UPDATE {} SET {}{where_sql} RETURNING {}",
                table.name,
                changes.sets.join(", "),
                table.columns()
            )
        };
        let mut params = changes.params;
        params.extend(filter.params);
        self.query_one(sql, params, map).await
    }
}

/// `NotFound` when an update touched no row.
fn updated(rows: usize) -> StoreResult<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// Visible chats: not expired at `now`.
const LIVE_CHAT: &str = "(expires_at IS NULL OR expires_at > ?)";

#[async_trait]
impl UserRepo for SqliteStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.execute(USERS.insert_sql(), user_values(user)?).await?;
        Ok(())
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {} FROM users WHERE id = ?", USERS.columns());
        self.query_one(sql, vec![text(id)], user_row).await
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {} FROM users WHERE username = ?", USERS.columns());
        self.query_one(sql, vec![text(username)], user_row).await
    }

    async fn update_user(&self, id: &str, changes: &UserUpdate) -> StoreResult<User> {
        let mut set = Assignments::default();
        if let Some(name) = &changes.display_name {
            set.set("display_name", text(name));
        }
        if let Some(role) = &changes.role {
            set.set("role", enum_text(role)?);
        }
        if let Some(disabled) = changes.disabled {
            set.set("disabled", disabled.into());
        }
        if let Some(hash) = &changes.password_hash {
            set.set("password_hash", text(hash));
        }
        if let Some(t) = &changes.last_login_at {
            set.set("last_login_at", at(t));
        }
        if let Some(t) = &changes.updated_at {
            set.set("updated_at", at(t));
        }
        if changes.bump_token_version {
            set.raw("token_version = token_version + 1", []);
        }
        let mut filter = Filter::default();
        filter.eq("id", text(id));
        if let Some(version) = changes.expect_token_version {
            filter.eq("token_version", version.into());
        }
        match self.update_returning(&USERS, set, filter, user_row).await? {
            Some(user) => Ok(user),
            None if changes.expect_token_version.is_some()
                && self.get_user(id).await?.is_some() =>
            {
                Err(StoreError::Conflict("token_version".into()))
            }
            None => Err(StoreError::NotFound),
        }
    }

    async fn list_users(&self, query: &UserQuery) -> StoreResult<Page<User>> {
        let mut filter = Filter::default();
        if let Some(search) = &query.search {
            filter.search(&["username", "display_name"], search);
        }
        if let Some(role) = &query.role {
            filter.eq("role", enum_text(role)?);
        }
        if let Some(disabled) = query.disabled {
            filter.eq("disabled", disabled.into());
        }
        self.page(
            &USERS,
            filter,
            "username",
            query.limit,
            query.offset,
            user_row,
        )
        .await
    }

    async fn count_active_staff(&self) -> StoreResult<u64> {
        let sql = "SELECT COUNT(*) FROM users WHERE role IN (?, ?) AND disabled = 0".to_owned();
        let params = vec![
            enum_text(&corral_sdk::Role::Admin)?,
            enum_text(&corral_sdk::Role::Technician)?,
        ];
        let n = self.query_one(sql, params, |r| r.get::<_, i64>(0)).await?;
        Ok(count(n.unwrap_or(0)))
    }

    async fn count_active_in_role(&self, role: corral_sdk::Role) -> StoreResult<u64> {
        let sql = "SELECT COUNT(*) FROM users WHERE role = ? AND disabled = 0".to_owned();
        let n = self
            .query_one(sql, vec![enum_text(&role)?], |r| r.get::<_, i64>(0))
            .await?;
        Ok(count(n.unwrap_or(0)))
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let sql = "SELECT COUNT(*) FROM users".to_owned();
        let n = self.query_one(sql, vec![], |r| r.get::<_, i64>(0)).await?;
        Ok(count(n.unwrap_or(0)))
    }
}

#[async_trait]
impl SessionRepo for SqliteStore {
    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        self.execute(SESSIONS.insert_sql(), session_values(session))
            .await?;
        Ok(())
    }

    async fn get_session_by_hash(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE token_hash = ?",
            SESSIONS.columns()
        );
        self.query_one(sql, vec![text(token_hash)], session_row)
            .await
    }

    async fn mark_session_used(&self, id: &str) -> StoreResult<bool> {
        let sql =
            "UPDATE sessions SET used = 1 WHERE id = ? AND used = 0 AND revoked = 0".to_owned();
        Ok(self.execute(sql, vec![text(id)]).await? > 0)
    }

    async fn revoke_family(&self, family_id: &str) -> StoreResult<()> {
        let sql = "UPDATE sessions SET revoked = 1 WHERE family_id = ?".to_owned();
        self.execute(sql, vec![text(family_id)]).await?;
        Ok(())
    }

    async fn revoke_user_sessions(&self, user_id: &str) -> StoreResult<()> {
        let sql = "UPDATE sessions SET revoked = 1 WHERE user_id = ?".to_owned();
        self.execute(sql, vec![text(user_id)]).await?;
        Ok(())
    }

    async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let sql = "DELETE FROM sessions WHERE expires_at <= ?".to_owned();
        let rows = self.execute(sql, vec![at(&now)]).await?;
        Ok(rows as u64)
    }
}

#[async_trait]
impl ApiKeyRepo for SqliteStore {
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        self.execute(API_KEYS.insert_sql(), api_key_values(key))
            .await?;
        Ok(())
    }

    async fn get_api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE key_hash = ?",
            API_KEYS.columns()
        );
        self.query_one(sql, vec![text(key_hash)], api_key_row).await
    }

    async fn list_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        let sql = format!(
            "SELECT {} FROM api_keys WHERE user_id = ? ORDER BY created_at DESC, id DESC",
            API_KEYS.columns()
        );
        self.query_all(sql, vec![text(user_id)], api_key_row).await
    }

    async fn delete_api_key(&self, user_id: &str, id: &str) -> StoreResult<bool> {
        let sql = "DELETE FROM api_keys WHERE id = ? AND user_id = ?".to_owned();
        Ok(self.execute(sql, vec![text(id), text(user_id)]).await? > 0)
    }

    async fn delete_user_api_keys(&self, user_id: &str) -> StoreResult<u64> {
        let sql = "DELETE FROM api_keys WHERE user_id = ?".to_owned();
        Ok(self.execute(sql, vec![text(user_id)]).await? as u64)
    }

    async fn touch_api_key(&self, id: &str, when: DateTime<Utc>) -> StoreResult<()> {
        let sql = "UPDATE api_keys SET last_used_at = ? WHERE id = ?".to_owned();
        self.execute(sql, vec![at(&when), text(id)]).await?;
        Ok(())
    }
}

#[async_trait]
impl ChatRepo for SqliteStore {
    async fn create_chat(&self, chat: &Chat) -> StoreResult<()> {
        self.execute(CHATS.insert_sql(), chat_values(chat)?).await?;
        Ok(())
    }

    async fn get_chat(
        &self,
        owner_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Chat>> {
        let sql = format!(
            "SELECT {} FROM chats WHERE id = ? AND owner_id = ? AND {LIVE_CHAT}",
            CHATS.columns()
        );
        self.query_one(sql, vec![text(id), text(owner_id), at(&now)], chat_row)
            .await
    }

    async fn update_chat(
        &self,
        owner_id: &str,
        id: &str,
        changes: &ChatUpdate,
    ) -> StoreResult<Chat> {
        let mut set = Assignments::default();
        if let Some(title) = &changes.title {
            set.set("title", text(title));
        } else if let Some((expected, new)) = &changes.title_if {
            set.raw(
                "title = CASE WHEN title = ? THEN ? ELSE title END",
                [text(expected), text(new)],
            );
        }
        if let Some(model) = &changes.model {
            set.set("model", text(model));
        }
        if let Some(prompt) = &changes.system_prompt {
            set.set("system_prompt", opt_text(prompt.as_deref()));
        }
        if let Some(pinned) = changes.pinned {
            set.set("pinned", pinned.into());
        }
        if let Some(sampling) = &changes.sampling {
            set.set("sampling", sampling_value(sampling)?);
        }
        if let Some(t) = &changes.updated_at {
            set.set("updated_at", at(t));
        }
        let mut filter = Filter::default();
        filter.eq("id", text(id));
        filter.eq("owner_id", text(owner_id));
        self.update_returning(&CHATS, set, filter, chat_row)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn delete_chat(&self, owner_id: &str, id: &str) -> StoreResult<bool> {
        let sql = "DELETE FROM chats WHERE id = ? AND owner_id = ?".to_owned();
        Ok(self.execute(sql, vec![text(id), text(owner_id)]).await? > 0)
    }

    async fn list_chats(
        &self,
        owner_id: &str,
        query: &ChatQuery,
        now: DateTime<Utc>,
    ) -> StoreResult<Page<Chat>> {
        let mut filter = Filter::default();
        filter.eq("owner_id", text(owner_id));
        filter.clause(LIVE_CHAT, [at(&now)]);
        if let Some(pinned) = query.pinned {
            filter.eq("pinned", pinned.into());
        }
        if let Some(search) = &query.search {
            let folded = search.to_lowercase();
            let sql = format!(
                "({} OR EXISTS (SELECT 1 FROM messages m WHERE m.chat_id = chats.id AND {}))",
                contains_sql("title"),
                contains_sql("m.content")
            );
            filter.clause(&sql, [Value::Text(folded.clone()), Value::Text(folded)]);
        }
        self.page(
            &CHATS,
            filter,
            "pinned DESC, updated_at DESC, id DESC",
            query.limit,
            query.offset,
            chat_row,
        )
        .await
    }

    async fn purge_expired_chats(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let sql = "DELETE FROM chats WHERE expires_at IS NOT NULL AND expires_at <= ?".to_owned();
        let rows = self.execute(sql, vec![at(&now)]).await?;
        Ok(rows as u64)
    }
}

#[async_trait]
impl MessageRepo for SqliteStore {
    async fn add_message(&self, message: &Message) -> StoreResult<()> {
        match self
            .execute(MESSAGES.insert_sql(), message_values(message)?)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_foreign_key_error(&e) => Err(StoreError::NotFound),
            Err(e) => Err(e),
        }
    }

    async fn update_message(&self, id: &str, changes: &MessageUpdate) -> StoreResult<()> {
        let mut set = Assignments::default();
        if let Some(content) = &changes.content {
            set.set("content", text(content));
        }
        if let Some(status) = &changes.status {
            set.set("status", enum_text(status)?);
        }
        if let Some(error) = &changes.error {
            set.set("error", opt_text(error.as_deref()));
        }
        if let Some(model) = &changes.model {
            set.set("model", opt_text(model.as_deref()));
        }
        if let Some(usage) = &changes.usage {
            set.set("usage", usage_value(usage.as_ref())?);
        }
        if let Some(annotations) = &changes.annotations {
            set.set("annotations", annotations_value(annotations)?);
        }
        if let Some(created_at) = &changes.created_at {
            set.set("created_at", at(created_at));
        }
        let mut filter = Filter::default();
        filter.eq("id", text(id));
        self.update_returning(&MESSAGES, set, filter, |_| Ok(()))
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn save_answer_progress(
        &self,
        id: &str,
        content: &str,
        usage: &MessageUsage,
    ) -> StoreResult<bool> {
        let sql =
            "UPDATE messages SET content = ?, usage = ? WHERE id = ? AND status = ?".to_owned();
        let params = vec![
            text(content),
            usage_value(Some(usage))?,
            text(id),
            enum_text(&MessageStatus::Pending)?,
        ];
        Ok(self.execute(sql, params).await? > 0)
    }

    async fn interrupt_pending_answers(&self) -> StoreResult<Vec<(Message, String)>> {
        let pending = enum_text(&MessageStatus::Pending)?;
        let interrupted = enum_text(&MessageStatus::Interrupted)?;
        let columns: Vec<String> = MESSAGES.cols.iter().map(|c| format!("m.{c}")).collect();
        let select = format!(
            "SELECT {}, c.owner_id FROM messages m JOIN chats c ON c.id = m.chat_id \
             WHERE m.status = ?1",
            columns.join(", ")
        );
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found = tx
                .prepare(&select)?
                .query_map([&pending], |r| {
                    Ok((message_row(r)?, r.get::<_, String>(MESSAGES.cols.len())?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tx.execute(
                "UPDATE messages SET status = ?1 WHERE status = ?2",
                [&interrupted, &pending],
            )?;
            tx.commit()?;
            Ok(found
                .into_iter()
                .map(|(mut m, owner)| {
                    m.status = MessageStatus::Interrupted;
                    (m, owner)
                })
                .collect())
        })
        .await
    }

    async fn list_messages(&self, chat_id: &str) -> StoreResult<Vec<Message>> {
        let sql = format!(
            "SELECT {} FROM messages WHERE chat_id = ? ORDER BY created_at, id",
            MESSAGES.columns()
        );
        self.query_all(sql, vec![text(chat_id)], message_row).await
    }
}

#[async_trait]
impl TicketRepo for SqliteStore {
    async fn create_ticket(&self, ticket: &Ticket) -> StoreResult<Ticket> {
        let mut values = ticket_values(ticket)?;
        let sql = TICKETS.insert_sql();
        let number = self
            .call(move |c| {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let number: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(number), 0) + 1 FROM tickets",
                    [],
                    |r| r.get(0),
                )?;
                values[1] = Value::Integer(number);
                tx.execute(&sql, params_from_iter(values))?;
                tx.commit()?;
                Ok(number)
            })
            .await?;
        Ok(Ticket {
            number,
            ..ticket.clone()
        })
    }

    async fn get_ticket(&self, id: &str) -> StoreResult<Option<Ticket>> {
        let sql = format!("SELECT {} FROM tickets WHERE id = ?", TICKETS.columns());
        self.query_one(sql, vec![text(id)], ticket_row).await
    }

    async fn get_ticket_by_number(&self, number: i64) -> StoreResult<Option<Ticket>> {
        let sql = format!("SELECT {} FROM tickets WHERE number = ?", TICKETS.columns());
        self.query_one(sql, vec![number.into()], ticket_row).await
    }

    async fn update_ticket(&self, id: &str, changes: &TicketUpdate) -> StoreResult<Option<Ticket>> {
        let mut set = Assignments::default();
        if let Some(status) = &changes.status {
            set.set("status", enum_text(status)?);
        }
        if let Some(priority) = &changes.priority {
            set.set("priority", enum_text(priority)?);
        }
        if let Some(category) = &changes.category {
            set.set("category", enum_text(category)?);
        }
        if let Some(assignee) = &changes.assignee {
            let (id, username) = match assignee {
                Some((id, username)) => (text(id), text(username)),
                None => (Value::Null, Value::Null),
            };
            set.set("assignee_id", id);
            set.set("assignee_username", username);
        }
        if let Some(resolved_at) = &changes.resolved_at {
            set.set("resolved_at", opt_at(resolved_at.as_ref()));
        }
        if let Some(t) = &changes.updated_at {
            set.set("updated_at", at(t));
        }
        let mut filter = Filter::default();
        filter.eq("id", text(id));
        if let Some(expected) = &changes.expected_status {
            filter.eq("status", enum_text(expected)?);
        }
        let stored = self
            .update_returning(&TICKETS, set, filter, ticket_row)
            .await?;
        if stored.is_none() && self.get_ticket(id).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        Ok(stored)
    }

    async fn list_tickets(&self, query: &TicketQuery) -> StoreResult<Page<Ticket>> {
        let mut filter = Filter::default();
        if let Some(owner_id) = &query.owner_id {
            filter.eq("owner_id", text(owner_id));
        }
        if let Some(status) = &query.status {
            filter.eq("status", enum_text(status)?);
        }
        if let Some(category) = &query.category {
            filter.eq("category", enum_text(category)?);
        }
        match &query.assignee_id {
            Some(Some(assignee)) => filter.eq("assignee_id", text(assignee)),
            Some(None) => filter.clause("assignee_id IS NULL", []),
            None => {}
        }
        if let Some(search) = &query.search {
            filter.search(&["subject", "body"], search);
        }
        self.page(
            &TICKETS,
            filter,
            "updated_at DESC, id DESC",
            query.limit,
            query.offset,
            ticket_row,
        )
        .await
    }
}

#[async_trait]
impl CommentRepo for SqliteStore {
    async fn add_comment(&self, comment: &Comment) -> StoreResult<()> {
        self.execute(COMMENTS.insert_sql(), comment_values(comment))
            .await?;
        Ok(())
    }

    async fn list_comments(
        &self,
        ticket_id: &str,
        include_internal: bool,
    ) -> StoreResult<Vec<Comment>> {
        let internal = if include_internal {
            ""
        } else {
            " AND internal = 0"
        };
        let sql = format!(
            "SELECT {} FROM comments WHERE ticket_id = ?{internal} ORDER BY created_at, id",
            COMMENTS.columns()
        );
        self.query_all(sql, vec![text(ticket_id)], comment_row)
            .await
    }
}

#[async_trait]
impl UsageRepo for SqliteStore {
    async fn record_usage(&self, event: &UsageEvent) -> StoreResult<()> {
        let values = vec![
            text(&event.id),
            text(&event.user_id),
            text(&event.kind),
            at(&event.at),
        ];
        self.execute(USAGE.insert_sql(), values).await?;
        Ok(())
    }

    async fn usage_daily(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        user_id: Option<&str>,
    ) -> StoreResult<UsageDaily> {
        if from > to {
            return Ok(UsageDaily::default());
        }
        let mut filter = day_range(from, to);
        if let Some(user_id) = user_id {
            filter.eq("user_id", text(user_id));
        }
        self.call(move |c| {
            let where_sql = filter.where_sql();
            let tx = c.transaction()?;
            let counts = tx
                .prepare(&format!(
                    "SELECT substr(at, 1, 10) AS day, kind, COUNT(*) FROM usage_events{where_sql} \
                     GROUP BY day, kind ORDER BY day, kind"
                ))?
                .query_map(params_from_iter(&filter.params), |r| {
                    Ok(DailyCount {
                        day: get_day(r, 0)?,
                        kind: r.get(1)?,
                        count: count(r.get(2)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let active_users = tx
                .prepare(&format!(
                    "SELECT substr(at, 1, 10) AS day, COUNT(DISTINCT user_id) FROM usage_events\
                     {where_sql} GROUP BY day ORDER BY day"
                ))?
                .query_map(params_from_iter(&filter.params), |r| {
                    Ok((get_day(r, 0)?, count(r.get(1)?)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tx.commit()?;
            Ok(UsageDaily {
                counts,
                active_users,
            })
        })
        .await
    }

    async fn record_generation(&self, g: &Generation) -> StoreResult<()> {
        let values = vec![
            text(&g.id),
            text(&g.user_id),
            text(&g.model),
            text(&g.source),
            g.prompt_tokens.into(),
            g.completion_tokens.into(),
            g.time_to_first_token_ms.map_or(Value::Null, |ms| {
                i64::try_from(ms).unwrap_or(i64::MAX).into()
            }),
            i64::try_from(g.duration_ms).unwrap_or(i64::MAX).into(),
            enum_text(&g.status)?,
            at(&g.at),
            g.cached_tokens.into(),
        ];
        self.execute(GENERATIONS.insert_sql(), values).await?;
        Ok(())
    }

    async fn generation_totals(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        user_id: Option<&str>,
    ) -> StoreResult<Vec<GenerationTotals>> {
        if from > to {
            return Ok(Vec::new());
        }
        let mut filter = day_range(from, to);
        if let Some(user_id) = user_id {
            filter.eq("user_id", text(user_id));
        }
        let sql = format!(
            "SELECT substr(at, 1, 10) AS day, model, COUNT(*), \
             COALESCE(SUM(status = 'failed'), 0), COALESCE(SUM(prompt_tokens), 0), \
             COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(ttft_ms), 0), COUNT(ttft_ms), \
             COALESCE(SUM(duration_ms), 0), COALESCE(SUM(cached_tokens), 0) FROM generations{} \
             GROUP BY day, model ORDER BY day, model",
            filter.where_sql()
        );
        self.query_all(sql, filter.params, |r| {
            Ok(GenerationTotals {
                day: get_day(r, 0)?,
                model: r.get(1)?,
                generations: count(r.get(2)?),
                failed: count(r.get(3)?),
                prompt_tokens: count(r.get(4)?),
                completion_tokens: count(r.get(5)?),
                ttft_sum_ms: count(r.get(6)?),
                ttft_count: count(r.get(7)?),
                duration_ms: count(r.get(8)?),
                cached_prompt_tokens: count(r.get(9)?),
            })
        })
        .await
    }
}

/// A range of days as a filter on the `at` column.
fn day_range(from: NaiveDate, to: NaiveDate) -> Filter {
    let mut filter = Filter::default();
    filter.clause("at >= ?", [at(&time::start_of(from))]);
    if let Some(next) = to.succ_opt() {
        filter.clause("at < ?", [at(&time::start_of(next))]);
    }
    filter
}

fn get_day(row: &Row<'_>, idx: usize) -> rusqlite::Result<NaiveDate> {
    let s: String = row.get(idx)?;
    NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|e| conversion(idx, e))
}

#[async_trait]
impl AuditRepo for SqliteStore {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        self.execute(AUDIT.insert_sql(), audit_values(entry)?)
            .await?;
        Ok(())
    }

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Page<AuditEntry>> {
        let mut filter = Filter::default();
        if let Some(actor_id) = &query.actor_id {
            filter.eq("actor_id", text(actor_id));
        }
        if let Some(action) = &query.action {
            filter.eq("action", text(action));
        }
        self.page(
            &AUDIT,
            filter,
            "at DESC, id DESC",
            query.limit,
            query.offset,
            audit_row,
        )
        .await
    }
}

#[async_trait]
impl SettingsRepo for SqliteStore {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<serde_json::Value>> {
        let sql = "SELECT value FROM settings WHERE key = ?".to_owned();
        self.query_one(sql, vec![text(key)], |r| get_json(r, 0))
            .await
    }

    async fn put_setting(&self, key: &str, value: &serde_json::Value) -> StoreResult<()> {
        let json = serde_json::to_string(value)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode setting: {e}")))?;
        let sql = "INSERT INTO settings (key, value) VALUES (?, ?) \
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            .to_owned();
        self.execute(sql, vec![text(key), Value::Text(json)])
            .await?;
        Ok(())
    }

    async fn swap_setting(
        &self,
        key: &str,
        expected: Option<&serde_json::Value>,
        value: &serde_json::Value,
    ) -> StoreResult<bool> {
        let json = serde_json::to_string(value)
            .map_err(|e| StoreError::Unavailable(format!("cannot encode setting: {e}")))?;
        let key = key.to_owned();
        let expected = expected.cloned();
        self.call(move |c| {
            // Compared as JSON values, not as text: the stored text need not
            // be what encoding `expected` gives.
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let stored = tx
                .query_row("SELECT value FROM settings WHERE key = ?1", [&key], |r| {
                    get_json(r, 0)
                })
                .optional()?;
            if stored != expected {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [&key, &json],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}

fn model_values(m: &ModelRecord) -> StoreResult<Vec<Value>> {
    let data = serde_json::to_string(m)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode model: {e}")))?;
    Ok(vec![text(&m.id), text(&m.name), Value::Text(data)])
}

fn model_row(r: &Row<'_>) -> rusqlite::Result<ModelRecord> {
    let data: String = r.get(2)?;
    serde_json::from_str(&data).map_err(|e| conversion(2, e))
}

#[async_trait]
impl ModelRepo for SqliteStore {
    async fn create_model(&self, model: &ModelRecord) -> StoreResult<()> {
        self.execute(MODELS.insert_sql(), model_values(model)?)
            .await?;
        Ok(())
    }

    async fn get_model(&self, id: &str) -> StoreResult<Option<ModelRecord>> {
        let sql = format!("SELECT {} FROM models WHERE id = ?", MODELS.columns());
        self.query_one(sql, vec![text(id)], model_row).await
    }

    async fn get_model_by_name(&self, name: &str) -> StoreResult<Option<ModelRecord>> {
        let sql = format!("SELECT {} FROM models WHERE name = ?", MODELS.columns());
        self.query_one(sql, vec![text(name)], model_row).await
    }

    async fn update_model(&self, model: &ModelRecord) -> StoreResult<()> {
        let rows = self
            .execute(MODELS.update_sql(&["id"], &[]), model_values(model)?)
            .await?;
        updated(rows)
    }

    async fn delete_model(&self, id: &str) -> StoreResult<bool> {
        let rows = self
            .execute("DELETE FROM models WHERE id = ?".to_owned(), vec![text(id)])
            .await?;
        Ok(rows > 0)
    }

    async fn list_models(&self) -> StoreResult<Vec<ModelRecord>> {
        let sql = format!("SELECT {} FROM models ORDER BY name, id", MODELS.columns());
        self.query_all(sql, vec![], model_row).await
    }
}

fn plugin_values(p: &PluginRecord) -> StoreResult<Vec<Value>> {
    Ok(vec![
        text(&p.id),
        text(&p.manifest),
        text(&p.component_sha256),
        p.enabled.into(),
        p.optional.into(),
        json_text(&p.approved)?,
        match &p.models {
            Some(models) => json_text(models)?,
            None => Value::Null,
        },
        json_text(&p.config)?,
        opt_text(p.disabled_reason.as_deref()),
        text(&p.installed_by),
        at(&p.installed_at),
        at(&p.updated_at),
        json_text(&p.approved_hosts)?,
        p.private_network.into(),
    ])
}

fn plugin_row(r: &Row<'_>) -> rusqlite::Result<PluginRecord> {
    let approved: String = r.get(5)?;
    let models: Option<String> = r.get(6)?;
    let approved_hosts: String = r.get(12)?;
    Ok(PluginRecord {
        id: r.get(0)?,
        manifest: r.get(1)?,
        component_sha256: r.get(2)?,
        enabled: r.get(3)?,
        optional: r.get(4)?,
        approved: serde_json::from_str(&approved).map_err(|e| conversion(5, e))?,
        models: models
            .map(|m| serde_json::from_str(&m).map_err(|e| conversion(6, e)))
            .transpose()?,
        config: get_json(r, 7)?,
        disabled_reason: r.get(8)?,
        installed_by: r.get(9)?,
        installed_at: get_at(r, 10)?,
        updated_at: get_at(r, 11)?,
        approved_hosts: serde_json::from_str(&approved_hosts).map_err(|e| conversion(12, e))?,
        private_network: r.get(13)?,
    })
}

#[async_trait]
impl PluginRepo for SqliteStore {
    async fn put_plugin(&self, plugin: &PluginRecord) -> StoreResult<()> {
        self.execute(PLUGINS.upsert_sql(&["id"]), plugin_values(plugin)?)
            .await?;
        Ok(())
    }

    async fn get_plugin(&self, id: &str) -> StoreResult<Option<PluginRecord>> {
        let sql = format!("SELECT {} FROM plugins WHERE id = ?", PLUGINS.columns());
        self.query_one(sql, vec![text(id)], plugin_row).await
    }

    async fn list_plugins(&self) -> StoreResult<Vec<PluginRecord>> {
        let sql = format!("SELECT {} FROM plugins ORDER BY id", PLUGINS.columns());
        self.query_all(sql, vec![], plugin_row).await
    }

    async fn update_plugin(&self, id: &str, changes: &PluginUpdate) -> StoreResult<PluginRecord> {
        let mut set = Assignments::default();
        if let Some((manifest, sha256)) = &changes.manifest {
            set.set("manifest", text(manifest));
            set.set("component_sha256", text(sha256));
        }
        if let Some(enabled) = changes.enabled {
            set.set("enabled", enabled.into());
        }
        if let Some(optional) = changes.optional {
            set.set("optional", optional.into());
        }
        if let Some(approved) = &changes.approved {
            set.set("approved", json_text(approved)?);
        }
        if let Some(hosts) = &changes.approved_hosts {
            set.set("approved_hosts", json_text(hosts)?);
        }
        if let Some(private) = changes.private_network {
            set.set("private_network", private.into());
        }
        if let Some(models) = &changes.models {
            let value = match models {
                Some(models) => json_text(models)?,
                None => Value::Null,
            };
            set.set("models", value);
        }
        if let Some(config) = &changes.config {
            set.set("config", json_text(config)?);
        }
        if let Some(reason) = &changes.disabled_reason {
            set.set("disabled_reason", opt_text(reason.as_deref()));
        }
        if let Some(t) = &changes.updated_at {
            set.set("updated_at", at(t));
        }
        let mut filter = Filter::default();
        filter.eq("id", text(id));
        self.update_returning(&PLUGINS, set, filter, plugin_row)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn delete_plugin(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM plugin_kv WHERE plugin_id = ?1", [&id])?;
            tx.execute("DELETE FROM user_plugins WHERE plugin_id = ?1", [&id])?;
            let rows = tx.execute("DELETE FROM plugins WHERE id = ?1", [&id])?;
            tx.commit()?;
            Ok(rows > 0)
        })
        .await
    }

    async fn list_user_plugins(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let sql =
            "SELECT plugin_id FROM user_plugins WHERE user_id = ? ORDER BY plugin_id".to_owned();
        self.query_all(sql, vec![text(user_id)], |r| r.get(0)).await
    }

    async fn set_user_plugin(&self, user_id: &str, plugin_id: &str, on: bool) -> StoreResult<()> {
        let params = vec![text(user_id), text(plugin_id)];
        if !on {
            let sql = "DELETE FROM user_plugins WHERE user_id = ? AND plugin_id = ?".to_owned();
            self.execute(sql, params).await?;
            return Ok(());
        }
        let sql = "INSERT INTO user_plugins (user_id, plugin_id) VALUES (?, ?) \
                   ON CONFLICT DO NOTHING"
            .to_owned();
        match self.execute(sql, params).await {
            Ok(_) => Ok(()),
            Err(e) if is_foreign_key_error(&e) => Err(StoreError::NotFound),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl PluginDataRepo for SqliteStore {
    async fn kv_get(&self, plugin: &str, scope: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let sql =
            "SELECT value FROM plugin_kv WHERE plugin_id = ? AND scope = ? AND key = ?".to_owned();
        self.query_one(sql, vec![text(plugin), text(scope), text(key)], |r| {
            r.get(0)
        })
        .await
    }

    async fn kv_set(
        &self,
        plugin: &str,
        scope: &str,
        key: &str,
        value: &[u8],
        quota_bytes: u64,
    ) -> StoreResult<()> {
        let size = kv_size(key, value);
        let entry = [text(plugin), text(scope), text(key)];
        let row = [
            entry.to_vec(),
            vec![
                Value::Blob(value.to_vec()),
                i64::try_from(size).unwrap_or(i64::MAX).into(),
            ],
        ]
        .concat();
        let written = self
            .call(move |c| {
                // Immediate: the sum read below stays true until the write.
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let used: i64 = tx.query_row(
                    "SELECT COALESCE(SUM(size), 0) FROM plugin_kv WHERE plugin_id = ?1",
                    [&entry[0]],
                    |r| r.get(0),
                )?;
                let replaced: i64 = tx
                    .query_row(
                        "SELECT size FROM plugin_kv \
                         WHERE plugin_id = ?1 AND scope = ?2 AND key = ?3",
                        params_from_iter(&entry),
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or(0);
                let after = count(used).saturating_sub(count(replaced)) + size;
                if after > quota_bytes {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT INTO plugin_kv (plugin_id, scope, key, value, size) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (plugin_id, scope, key) \
                     DO UPDATE SET value = excluded.value, size = excluded.size",
                    params_from_iter(row),
                )?;
                tx.commit()?;
                Ok(true)
            })
            .await?;
        if written {
            Ok(())
        } else {
            Err(StoreError::Conflict(KV_QUOTA.to_owned()))
        }
    }

    async fn kv_delete(&self, plugin: &str, scope: &str, key: &str) -> StoreResult<bool> {
        let sql = "DELETE FROM plugin_kv WHERE plugin_id = ? AND scope = ? AND key = ?".to_owned();
        let rows = self
            .execute(sql, vec![text(plugin), text(scope), text(key)])
            .await?;
        Ok(rows > 0)
    }

    async fn kv_list(
        &self,
        plugin: &str,
        scope: &str,
        prefix: &str,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        // A range on the key, not LIKE: nothing in the prefix is a wildcard.
        let mut filter = Filter::default();
        filter.eq("plugin_id", text(plugin));
        filter.eq("scope", text(scope));
        filter.clause("key >= ?", [text(prefix)]);
        if let Some(end) = prefix_end(prefix) {
            filter.clause("key < ?", [Value::Text(end)]);
        }
        let sql = format!(
            "SELECT key FROM plugin_kv{} ORDER BY key LIMIT ?",
            filter.where_sql()
        );
        let mut params = filter.params;
        params.push(limit.into());
        self.query_all(sql, params, |r| r.get(0)).await
    }

    async fn kv_usage(&self, plugin: &str) -> StoreResult<u64> {
        let sql = "SELECT COALESCE(SUM(size), 0) FROM plugin_kv WHERE plugin_id = ?".to_owned();
        let used = self
            .query_one(sql, vec![text(plugin)], |r| r.get::<_, i64>(0))
            .await?;
        Ok(count(used.unwrap_or(0)))
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        // The schema version is the ping: a newer Corral that opened this
        // file since has migrated it past what this build knows.
        let version = self
            .query_one("PRAGMA user_version".to_owned(), vec![], |r| {
                r.get::<_, i64>(0)
            })
            .await?;
        match newer_schema(version.unwrap_or_default()) {
            Some(why) => Err(StoreError::Newer(why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::new_id;

    fn t(s: &str) -> DateTime<Utc> {
        time::parse(s).unwrap()
    }

    fn user(username: &str) -> User {
        User {
            id: new_id(),
            username: username.to_owned(),
            display_name: username.to_uppercase(),
            role: corral_sdk::Role::User,
            disabled: false,
            password_hash: "hash".to_owned(),
            token_version: 0,
            created_at: t("2026-01-01T00:00:00Z"),
            updated_at: t("2026-01-01T00:00:00Z"),
            last_login_at: None,
        }
    }

    fn chat(owner_id: &str, title: &str) -> Chat {
        Chat {
            id: new_id(),
            owner_id: owner_id.to_owned(),
            title: title.to_owned(),
            model: "m".to_owned(),
            system_prompt: None,
            pinned: false,
            temporary: false,
            created_at: t("2026-01-01T00:00:00Z"),
            updated_at: t("2026-01-01T00:00:00Z"),
            expires_at: None,
            sampling: Default::default(),
        }
    }

    fn ticket(subject: &str) -> Ticket {
        Ticket {
            id: new_id(),
            number: 0,
            owner_id: "o".to_owned(),
            owner_username: "owner".to_owned(),
            subject: subject.to_owned(),
            body: "body".to_owned(),
            category: TicketCategory::FeatureRequest,
            priority: TicketPriority::Normal,
            status: TicketStatus::InProgress,
            assignee_id: None,
            assignee_username: None,
            chat_id: None,
            created_at: t("2026-01-01T00:00:00Z"),
            updated_at: t("2026-01-01T00:00:00Z"),
            resolved_at: None,
        }
    }

    fn all<T: Default>() -> T {
        T::default()
    }

    #[tokio::test]
    async fn chats_stored_before_sampling_settings_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corral.db");
        let old = chat("u", "Before");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..3] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 3).unwrap();
            tx.commit().unwrap();
            let mut values = chat_values(&old).unwrap();
            values.pop();
            conn.execute(
                "INSERT INTO chats (id, owner_id, title, model, system_prompt, pinned, \
                 temporary, created_at, updated_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                rusqlite::params_from_iter(values),
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let now = t("2026-01-02T00:00:00Z");
        let read = store.get_chat("u", &old.id, now).await.unwrap().unwrap();
        assert_eq!(read, old);
        assert!(read.sampling.is_empty());
    }

    #[tokio::test]
    async fn usage_stored_before_cached_tokens_reads_as_none_cached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corral.db");
        let old_chat = chat("u", "Before");
        let answer_id = new_id();
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..4] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 4).unwrap();
            tx.commit().unwrap();
            conn.execute(
                &CHATS.insert_sql(),
                params_from_iter(chat_values(&old_chat).unwrap()),
            )
            .unwrap();
            // An answer's usage as JSON and a generation row, both written
            // before cached tokens were counted.
            conn.execute(
                "INSERT INTO messages (id, chat_id, role, content, status, error, created_at, \
                 model, usage) VALUES (?1, ?2, 'assistant', 'Hi', 'complete', NULL, \
                 '2026-01-01T00:00:01.000Z', 'm', ?3)",
                rusqlite::params![
                    answer_id,
                    old_chat.id,
                    r#"{"prompt_tokens":12,"completion_tokens":3,"time_to_first_token_ms":40,"tokens_per_second":20.0}"#
                ],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO generations (id, user_id, model, source, prompt_tokens, \
                 completion_tokens, ttft_ms, duration_ms, status, at) \
                 VALUES ('g1', 'u', 'm', 'chat', 12, 3, 40, 140, 'complete', \
                 '2026-01-01T00:00:01.000Z')",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let messages = store.list_messages(&old_chat.id).await.unwrap();
        let usage = messages[0].usage.clone().expect("the old usage");
        assert_eq!((usage.prompt_tokens, usage.cached_tokens), (12, 0));

        let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let mut new = Generation::failed("u", "m", "chat", 10);
        new.prompt_tokens = 30;
        new.cached_tokens = 25;
        new.at = t("2026-01-01T12:00:00Z");
        store.record_generation(&new).await.unwrap();
        let totals = store.generation_totals(day, day, None).await.unwrap();
        assert_eq!(totals.len(), 1);
        assert_eq!(
            (totals[0].prompt_tokens, totals[0].cached_prompt_tokens),
            (42, 25)
        );
    }

    #[tokio::test]
    async fn messages_stored_before_annotations_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corral.db");
        let old_chat = chat("u", "Before");
        let answer_id = new_id();
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..5] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 5).unwrap();
            tx.commit().unwrap();
            conn.execute(
                &CHATS.insert_sql(),
                params_from_iter(chat_values(&old_chat).unwrap()),
            )
            .unwrap();
            conn.execute(
                "INSERT INTO messages (id, chat_id, role, content, status, error, created_at, \
                 model, usage) VALUES (?1, ?2, 'assistant', 'Hi', 'complete', NULL, \
                 '2026-01-01T00:00:01.000Z', 'm', NULL)",
                rusqlite::params![answer_id, old_chat.id],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let messages = store.list_messages(&old_chat.id).await.unwrap();
        assert_eq!(messages.len(), 1);
        assert!(messages[0].annotations.is_empty());

        // Annotations written after the migration read back.
        let notes = vec![MessageAnnotation {
            plugin: "web-sources".to_owned(),
            text: "Source: https://example.com/a".to_owned(),
        }];
        let changes = MessageUpdate {
            annotations: Some(notes.clone()),
            ..Default::default()
        };
        store.update_message(&answer_id, &changes).await.unwrap();
        let messages = store.list_messages(&old_chat.id).await.unwrap();
        assert_eq!(messages[0].annotations, notes);
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corral.db");
        let alice = user("alice");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.create_user(&alice).await.unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get_user(&alice.id).await.unwrap(), Some(alice));
        let version = store
            .call(|c| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)))
            .await
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert_eq!(store.kind(), "sqlite");
        store.ping().await.unwrap();
    }

    /// A file migrated by a newer Corral is refused at open and by `ping`,
    /// and is left as it is.
    #[tokio::test]
    async fn a_newer_schema_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corral.db");
        let alice = user("alice");
        let store = SqliteStore::open(&path).unwrap();
        store.create_user(&alice).await.unwrap();
        let newer = MIGRATIONS.len() as i64 + 1;
        store
            .call(move |c| c.pragma_update(None, "user_version", newer))
            .await
            .unwrap();
        let Err(StoreError::Newer(why)) = store.ping().await else {
            panic!("ping on a newer schema did not say so");
        };
        assert!(why.contains(&format!("schema version {newer};")), "{why}");
        drop(store);
        let err = SqliteStore::open(&path)
            .err()
            .expect("a newer schema must not open");
        let err = format!("{err:#}");
        assert!(
            err.contains(&format!("knows versions up to {}", MIGRATIONS.len())),
            "{err}"
        );
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, newer);
        let kept: String = conn
            .query_row("SELECT username FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, "alice");
    }

    #[tokio::test]
    async fn username_clash_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        store.create_user(&user("bob")).await.unwrap();
        let err = store.create_user(&user("bob")).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(ref k) if k == "username"),
            "{err:?}"
        );
        let changes = UserUpdate {
            display_name: Some("Nobody".to_owned()),
            ..Default::default()
        };
        let err = store
            .update_user(&user("nobody").id, &changes)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }

    #[tokio::test]
    async fn search_takes_wildcards_literally() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        for name in ["a%b", "axb", "a_c", "a\\d", "plain"] {
            store.create_user(&user(name)).await.unwrap();
        }
        let names = |page: Page<User>| -> Vec<String> {
            page.items.into_iter().map(|u| u.username).collect()
        };
        for (needle, expected) in [("%", "a%b"), ("_", "a_c"), ("\\", "a\\d"), ("A%B", "a%b")] {
            let query = UserQuery {
                search: Some(needle.to_owned()),
                ..all()
            };
            let page = store.list_users(&query).await.unwrap();
            assert_eq!(page.total, 1, "{needle}");
            assert_eq!(names(page), [expected], "{needle}");
        }
        // Display names are upper case: the search ignores case.
        let query = UserQuery {
            search: Some("lai".to_owned()),
            ..all()
        };
        assert_eq!(names(store.list_users(&query).await.unwrap()), ["plain"]);
        let query = UserQuery {
            limit: 2,
            offset: 1,
            ..all()
        };
        let page = store.list_users(&query).await.unwrap();
        assert_eq!(page.total, 5);
        assert_eq!(names(page), ["a\\d", "a_c"]);
    }

    #[tokio::test]
    async fn chats_expire_search_messages_and_cascade() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        let now = t("2026-02-01T00:00:00Z");
        let kept = chat("u", "Trip ideas");
        let mut gone = chat("u", "Temporary");
        gone.temporary = true;
        gone.expires_at = Some(now);
        store.create_chat(&kept).await.unwrap();
        store.create_chat(&gone).await.unwrap();
        let message = Message {
            id: new_id(),
            chat_id: kept.id.clone(),
            role: MessageRole::Assistant,
            content: "Try 100% LISBON".to_owned(),
            status: MessageStatus::Complete,
            error: None,
            model: None,
            usage: None,
            created_at: now,
            annotations: Vec::new(),
        };
        store.add_message(&message).await.unwrap();

        assert!(store.get_chat("u", &gone.id, now).await.unwrap().is_none());
        assert!(store
            .get_chat("other", &kept.id, now)
            .await
            .unwrap()
            .is_none());
        let page = store.list_chats("u", &all(), now).await.unwrap();
        assert_eq!(page.total, 1);

        let query = ChatQuery {
            search: Some("lisbon".to_owned()),
            ..all()
        };
        let page = store.list_chats("u", &query, now).await.unwrap();
        assert_eq!(page.items, std::slice::from_ref(&kept));

        assert_eq!(store.purge_expired_chats(now).await.unwrap(), 1);
        assert!(store.delete_chat("u", &kept.id).await.unwrap());
        assert!(!store.delete_chat("u", &kept.id).await.unwrap());
        assert!(store.list_messages(&kept.id).await.unwrap().is_empty());
        let err = store.add_message(&message).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
    }

    #[tokio::test]
    async fn tickets_number_up_under_concurrency() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("c.db")).unwrap());
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.create_ticket(&ticket(&format!("t{i}"))).await })
            })
            .collect();
        let mut numbers = Vec::new();
        for task in tasks {
            numbers.push(task.await.unwrap().unwrap().number);
        }
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=10).collect::<Vec<i64>>());
        let stored = store.get_ticket_by_number(3).await.unwrap().unwrap();
        assert_eq!(stored.category, TicketCategory::FeatureRequest);
        let query = TicketQuery {
            assignee_id: Some(None),
            status: Some(TicketStatus::InProgress),
            ..all()
        };
        assert_eq!(store.list_tickets(&query).await.unwrap().total, 10);
        let query = TicketQuery {
            assignee_id: Some(Some("x".to_owned())),
            ..all()
        };
        assert_eq!(store.list_tickets(&query).await.unwrap().total, 0);
    }

    #[tokio::test]
    async fn a_session_is_used_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        let session = Session {
            id: new_id(),
            user_id: "u".to_owned(),
            family_id: "f".to_owned(),
            token_hash: "h".to_owned(),
            created_at: t("2026-01-01T00:00:00Z"),
            expires_at: t("2026-01-02T00:00:00Z"),
            used: false,
            revoked: false,
        };
        store.create_session(&session).await.unwrap();
        assert!(store.mark_session_used(&session.id).await.unwrap());
        assert!(!store.mark_session_used(&session.id).await.unwrap());
        let stored = store.get_session_by_hash("h").await.unwrap().unwrap();
        assert!(stored.used);
    }

    #[tokio::test]
    async fn usage_days_are_inclusive() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        for (user_id, kind, when) in [
            ("a", "chat.created", "2026-03-01T23:59:59.999Z"),
            ("a", "auth.login", "2026-03-02T00:00:00Z"),
            ("b", "auth.login", "2026-03-02T12:00:00Z"),
            ("a", "auth.login", "2026-03-03T23:59:59.999Z"),
            ("a", "auth.login", "2026-03-04T00:00:00Z"),
        ] {
            let event = UsageEvent {
                id: new_id(),
                user_id: user_id.to_owned(),
                kind: kind.to_owned(),
                at: t(when),
            };
            store.record_usage(&event).await.unwrap();
        }
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let daily = store
            .usage_daily(day("2026-03-02"), day("2026-03-03"), None)
            .await
            .unwrap();
        let counts: Vec<_> = daily
            .counts
            .iter()
            .map(|c| (c.day.to_string(), c.kind.as_str(), c.count))
            .collect();
        assert_eq!(
            counts,
            [
                ("2026-03-02".to_owned(), "auth.login", 2),
                ("2026-03-03".to_owned(), "auth.login", 1)
            ]
        );
        assert_eq!(
            daily.active_users,
            [(day("2026-03-02"), 2), (day("2026-03-03"), 1)]
        );
        let daily = store
            .usage_daily(day("2026-03-01"), day("2026-03-04"), Some("b"))
            .await
            .unwrap();
        assert_eq!(daily.active_users, [(day("2026-03-02"), 1)]);
    }

    #[tokio::test]
    async fn settings_and_audit_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        assert_eq!(store.get_setting("k").await.unwrap(), None);
        store
            .put_setting("k", &serde_json::json!({"a": 1}))
            .await
            .unwrap();
        store
            .put_setting("k", &serde_json::json!([2]))
            .await
            .unwrap();
        assert_eq!(
            store.get_setting("k").await.unwrap(),
            Some(serde_json::json!([2]))
        );
        let entry = AuditEntry {
            id: new_id(),
            at: t("2026-01-01T00:00:00.123Z"),
            actor_id: "a".to_owned(),
            actor_username: "admin".to_owned(),
            action: "user.role".to_owned(),
            target: "u".to_owned(),
            details: serde_json::json!({"role": "admin"}),
        };
        store.append_audit(&entry).await.unwrap();
        let page = store.list_audit(&all()).await.unwrap();
        assert_eq!(page.items, [entry]);
    }
}
