//! The production store: MongoDB through the `mongodb` driver.
//!
//! Each record is stored as its serde form with `_id` set to the record's
//! id. Timestamps are therefore fixed-width RFC 3339 strings, which sort and
//! compare like the instants they stand for. Sessions, temporary chats and
//! their messages also carry a BSON date `expire_at` for the TTL indexes;
//! reads never rely on the TTL sweep.
//!
//! Plugins' key-value entries are `{plugin, scope, key, value, size}` with
//! `value` as BSON binary; each plugin's usage is also kept as a counter
//! (`plugin_kv_usage`) that every write changes with a conditional `$inc`,
//! which enforces the quota under concurrent writers without transactions
//! (a standalone server has none).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, FindOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, IndexModel};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;
use crate::time;

const DEFAULT_DATABASE: &str = "corral";
const DUPLICATE_KEY: i32 = 11000;
/// Name of the TTL field (a BSON date) on sessions, chats and messages.
const EXPIRE_AT: &str = "expire_at";
const TICKET_COUNTER: &str = "tickets";
/// Tries of a key-value write that raced another write of the same key.
const KV_WRITE_ATTEMPTS: usize = 8;

/// The layout of the documents this build reads and writes. It goes up when
/// a change would be misread or silently dropped by an older Corral (a field
/// whose loss weakens a check, a moved collection): every host sharing the
/// database must then know the new layout. A host finds the database's
/// layout in `meta` at start, raises it to its own, and refuses to start on
/// a newer one; a running host whose database moves past it stops being
/// ready (`/readyz`).
pub const SCHEMA: i64 = 1;
/// The `meta` document that records the layout.
const SCHEMA_ID: &str = "schema";

/// MongoDB-backed [`super::Store`].
pub struct MongoStore {
    /// For tests, which drop their database when done.
    #[cfg(test)]
    db: mongodb::Database,
    users: Collection<Document>,
    sessions: Collection<Document>,
    api_keys: Collection<Document>,
    chats: Collection<Document>,
    messages: Collection<Document>,
    tickets: Collection<Document>,
    comments: Collection<Document>,
    counters: Collection<Document>,
    usage: Collection<Document>,
    generations: Collection<Document>,
    audit: Collection<Document>,
    settings: Collection<Document>,
    models: Collection<Document>,
    plugins: Collection<Document>,
    user_plugins: Collection<Document>,
    plugin_kv: Collection<Document>,
    plugin_kv_usage: Collection<Document>,
    meta: Collection<Document>,
}

impl MongoStore {
    /// Connects, picks the database named in the URL path (default
    /// `corral`) and creates the indexes.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let options = ClientOptions::parse(url).await?;
        let database = options
            .default_database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
        Self::open(options, &database).await
    }

    /// Like [`Self::connect`], but in the named database whatever the URL
    /// says (tests use a fresh one each).
    pub async fn connect_database(url: &str, database: &str) -> anyhow::Result<Self> {
        let options = ClientOptions::parse(url).await?;
        Self::open(options, database).await
    }

    async fn open(options: ClientOptions, database: &str) -> anyhow::Result<Self> {
        let client = Client::with_options(options)?;
        let db = client.database(database);
        db.run_command(doc! { "ping": 1 }).await?;
        let store = Self {
            users: db.collection("users"),
            sessions: db.collection("sessions"),
            api_keys: db.collection("api_keys"),
            chats: db.collection("chats"),
            messages: db.collection("messages"),
            tickets: db.collection("tickets"),
            comments: db.collection("comments"),
            counters: db.collection("counters"),
            usage: db.collection("usage_events"),
            generations: db.collection("generations"),
            audit: db.collection("audit"),
            settings: db.collection("settings"),
            models: db.collection("models"),
            plugins: db.collection("plugins"),
            user_plugins: db.collection("user_plugins"),
            plugin_kv: db.collection("plugin_kv"),
            plugin_kv_usage: db.collection("plugin_kv_usage"),
            meta: db.collection("meta"),
            #[cfg(test)]
            db,
        };
        // Before anything is written: a newer layout is left untouched.
        store.claim_schema().await?;
        store.create_indexes().await?;
        // Creating the ticket counter up front keeps concurrent first
        // tickets from racing to create it.
        store
            .counters
            .update_one(
                doc! { "_id": TICKET_COUNTER },
                doc! { "$setOnInsert": { "seq": 0_i64 } },
            )
            .upsert(true)
            .await?;
        Ok(store)
    }

    /// Records this build's layout in the database, raising an older one
    /// (nothing has to be rewritten for it yet), or fails on a newer one.
    /// Conditional writes make concurrent starts of several hosts agree.
    async fn claim_schema(&self) -> anyhow::Result<()> {
        let by = concat!("corral ", env!("CARGO_PKG_VERSION"));
        for _ in 0..4 {
            let found = self.meta.find_one(doc! { "_id": SCHEMA_ID }).await?;
            let stamp =
                doc! { "version": SCHEMA, "written_by": by, "at": time::format(&Utc::now()) };
            let Some(found) = found else {
                let mut record = stamp;
                record.insert("_id", SCHEMA_ID);
                // Another host may have created it in the meantime.
                match self.meta.insert_one(record).await.map_err(db_err) {
                    Ok(_) => return Ok(()),
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            let version = schema_version(&found)?;
            if version > SCHEMA {
                anyhow::bail!("{}", newer_schema(&found, version));
            }
            if version == SCHEMA {
                return Ok(());
            }
            let raised = self
                .meta
                .update_one(
                    doc! { "_id": SCHEMA_ID, "version": version },
                    doc! { "$set": stamp },
                )
                .await?;
            if raised.matched_count == 1 {
                tracing::info!(from = version, to = SCHEMA, "store layout raised");
                return Ok(());
            }
        }
        anyhow::bail!("the store's layout record kept changing while this host started; try again")
    }

    /// Fails with [`StoreError::Newer`] once another host has raised the
    /// layout past this build's; also proves the database answers.
    async fn check_schema(&self) -> StoreResult<()> {
        let found = self
            .meta
            .find_one(doc! { "_id": SCHEMA_ID })
            .await
            .map_err(db_err)?;
        if let Some(found) = found {
            let version = schema_version(&found).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if version > SCHEMA {
                return Err(StoreError::Newer(newer_schema(&found, version)));
            }
        }
        Ok(())
    }

    async fn create_indexes(&self) -> anyhow::Result<()> {
        self.users
            .create_indexes([unique(doc! { "username": 1 })])
            .await?;
        self.sessions
            .create_indexes([
                unique(doc! { "token_hash": 1 }),
                plain(doc! { "family_id": 1 }),
                plain(doc! { "user_id": 1 }),
                ttl(),
            ])
            .await?;
        self.api_keys
            .create_indexes([unique(doc! { "key_hash": 1 }), plain(doc! { "user_id": 1 })])
            .await?;
        self.chats
            .create_indexes([
                plain(doc! { "owner_id": 1, "pinned": 1, "updated_at": 1 }),
                ttl(),
            ])
            .await?;
        self.messages
            .create_indexes([plain(doc! { "chat_id": 1, "created_at": 1 }), ttl()])
            .await?;
        self.generations
            .create_indexes([
                plain(doc! { "at": 1 }),
                plain(doc! { "user_id": 1, "at": 1 }),
            ])
            .await?;
        self.tickets
            .create_indexes([
                unique(doc! { "number": 1 }),
                plain(doc! { "updated_at": 1 }),
                plain(doc! { "owner_id": 1 }),
            ])
            .await?;
        self.comments
            .create_indexes([plain(doc! { "ticket_id": 1, "created_at": 1 })])
            .await?;
        self.usage
            .create_indexes([
                plain(doc! { "at": 1 }),
                plain(doc! { "user_id": 1, "at": 1 }),
            ])
            .await?;
        self.audit.create_indexes([plain(doc! { "at": 1 })]).await?;
        self.models
            .create_indexes([unique(doc! { "name": 1 })])
            .await?;
        self.user_plugins
            .create_indexes([
                unique(doc! { "user_id": 1, "plugin_id": 1 }),
                plain(doc! { "plugin_id": 1 }),
            ])
            .await?;
        self.plugin_kv
            .create_indexes([unique(doc! { "plugin": 1, "scope": 1, "key": 1 })])
            .await?;
        Ok(())
    }
}

fn schema_version(found: &Document) -> anyhow::Result<i64> {
    match found.get("version") {
        Some(Bson::Int64(v)) => Ok(*v),
        Some(Bson::Int32(v)) => Ok(i64::from(*v)),
        other => anyhow::bail!("the store's layout record has no readable version ({other:?})"),
    }
}

/// Why a database with layout `version` is refused, and what to do.
fn newer_schema(found: &Document, version: i64) -> String {
    let by = found
        .get_str("written_by")
        .map(|by| format!(", raised by {by}"))
        .unwrap_or_default();
    format!(
        "the database has store layout {version}{by}; this Corral ({}) knows layouts up to \
         {SCHEMA}. Upgrade this host: every host that shares a database must run a version \
         that knows its layout",
        env!("CARGO_PKG_VERSION")
    )
}

fn plain(keys: Document) -> IndexModel {
    IndexModel::builder().keys(keys).build()
}

fn unique(keys: Document) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().unique(true).build())
        .build()
}

fn ttl() -> IndexModel {
    IndexModel::builder()
        .keys(doc! { EXPIRE_AT: 1 })
        .options(
            IndexOptions::builder()
                .expire_after(Duration::from_secs(0))
                .build(),
        )
        .build()
}

/// Maps a driver error; duplicate keys become `Conflict` naming the field.
fn db_err(err: mongodb::error::Error) -> StoreError {
    let duplicate = match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == DUPLICATE_KEY => {
            Some((e.details.as_ref(), e.message.as_str()))
        }
        ErrorKind::Command(e) if e.code == DUPLICATE_KEY => Some((None, e.message.as_str())),
        _ => None,
    };
    match duplicate {
        Some((details, message)) => StoreError::Conflict(duplicate_field(details, message)),
        None => StoreError::Unavailable(err.to_string()),
    }
}

/// The field behind a duplicate-key error: the first key of the index's
/// `keyPattern` when the server reports it, else read from the index name in
/// the message (`... index: username_1 dup key: ...`).
fn duplicate_field(details: Option<&Document>, message: &str) -> String {
    let from_pattern = details
        .and_then(|d| d.get_document("keyPattern").ok())
        .and_then(|p| p.keys().next().cloned());
    let from_message = || {
        let index = message.split("index: ").nth(1)?.split_whitespace().next()?;
        let field = match index.rsplit_once('_') {
            Some((field, _)) if !field.is_empty() => field,
            _ => index,
        };
        Some(field.to_string())
    };
    let field = from_pattern
        .or_else(from_message)
        .unwrap_or_else(|| "record".to_string());
    match field.as_str() {
        "_id" | "_id_" => "id".to_string(),
        _ => field,
    }
}

fn to_doc<T: Serialize>(record: &T, id: &str) -> StoreResult<Document> {
    let mut document = bson::to_document(record)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode record: {e}")))?;
    document.insert("_id", id);
    Ok(document)
}

fn from_doc<T: DeserializeOwned>(document: Document) -> StoreResult<T> {
    bson::from_document(document).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn to_bson<T: Serialize>(value: &T) -> StoreResult<Bson> {
    bson::to_bson(value).map_err(|e| StoreError::Corrupt(format!("cannot encode value: {e}")))
}

fn bson_date(t: &DateTime<Utc>) -> Bson {
    Bson::DateTime(bson::DateTime::from_millis(t.timestamp_millis()))
}

/// Case-insensitive literal substring match.
fn contains(text: &str) -> Document {
    doc! { "$regex": escape_regex(text), "$options": "i" }
}

fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // MongoDB refuses a pattern holding a NUL byte; its escape matches it.
        if c == '\0' {
            out.push_str("\\x00");
            continue;
        }
        if matches!(
            c,
            '\\' | '^' | '$' | '.' | '|' | '?' | '*' | '+' | '(' | ')' | '[' | ']' | '{' | '}'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn search_term(search: &Option<String>) -> Option<&str> {
    search.as_deref().filter(|s| !s.is_empty())
}

/// Chats that have not expired at `now`.
fn live(now: &DateTime<Utc>) -> Document {
    doc! { "$or": [
        { "expires_at": Bson::Null },
        { "expires_at": { "$gt": time::format(now) } },
    ] }
}

fn and(conditions: Vec<Document>) -> Document {
    if conditions.is_empty() {
        Document::new()
    } else {
        doc! { "$and": conditions }
    }
}

fn as_u64(value: Option<&Bson>) -> StoreResult<u64> {
    let n = match value {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) if n.fract() == 0.0 => *n as i64,
        other => {
            return Err(StoreError::Corrupt(format!(
                "expected a count, got {other:?}"
            )))
        }
    };
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
}

/// Documents whose `at` falls on the days `from..=to` (UTC), optionally of
/// one user.
fn days_match(from: NaiveDate, to: NaiveDate, user_id: Option<&str>) -> Document {
    let mut at = doc! { "$gte": time::format(&time::start_of(from)) };
    if let Some(end) = time::start_of(to).checked_add_signed(chrono::TimeDelta::days(1)) {
        at.insert("$lt", time::format(&end));
    }
    let mut matched = doc! { "at": at };
    if let Some(user_id) = user_id {
        matched.insert("user_id", user_id);
    }
    matched
}

async fn aggregate_all(
    collection: &Collection<Document>,
    pipeline: impl IntoIterator<Item = Document>,
) -> StoreResult<Vec<Document>> {
    collection
        .aggregate(pipeline)
        .await
        .map_err(db_err)?
        .try_collect()
        .await
        .map_err(db_err)
}

/// A text field of a `$group` result's `_id`.
fn group_key<'a>(group: &'a Document, field: &str) -> StoreResult<&'a str> {
    group
        .get_document("_id")
        .and_then(|key| key.get_str(field))
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_day(text: &str) -> StoreResult<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|e| StoreError::Corrupt(format!("bad day `{text}`: {e}")))
}

async fn find_one<T: DeserializeOwned>(
    coll: &Collection<Document>,
    filter: Document,
) -> StoreResult<Option<T>> {
    coll.find_one(filter)
        .await
        .map_err(db_err)?
        .map(from_doc)
        .transpose()
}

async fn find_all<T: DeserializeOwned>(
    coll: &Collection<Document>,
    filter: Document,
    options: FindOptions,
) -> StoreResult<Vec<T>> {
    let docs: Vec<Document> = coll
        .find(filter)
        .with_options(options)
        .await
        .map_err(db_err)?
        .try_collect()
        .await
        .map_err(db_err)?;
    docs.into_iter().map(from_doc).collect()
}

async fn find_page<T: DeserializeOwned>(
    coll: &Collection<Document>,
    filter: Document,
    sort: Document,
    limit: u32,
    offset: u64,
) -> StoreResult<Page<T>> {
    let total = coll.count_documents(filter.clone()).await.map_err(db_err)?;
    // The driver reads a zero limit as "no limit".
    if limit == 0 {
        return Ok(Page {
            items: Vec::new(),
            total,
        });
    }
    let options = FindOptions::builder()
        .sort(sort)
        .skip(offset)
        .limit(i64::from(limit))
        .build();
    let items = find_all(coll, filter, options).await?;
    Ok(Page { items, total })
}

async fn insert(coll: &Collection<Document>, document: Document) -> StoreResult<()> {
    coll.insert_one(document).await.map_err(db_err)?;
    Ok(())
}

/// Replaces the matching document; `NotFound` when there is none.
async fn replace(
    coll: &Collection<Document>,
    filter: Document,
    document: Document,
) -> StoreResult<()> {
    let result = coll.replace_one(filter, document).await.map_err(db_err)?;
    if result.matched_count == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// Applies `$set` (and `$inc`) to the document `filter` matches and returns
/// it as stored after the write; `None` when nothing matched. Without
/// changes it only reads the document.
async fn update_returning<T: DeserializeOwned>(
    coll: &Collection<Document>,
    filter: Document,
    set: Document,
    inc: Document,
) -> StoreResult<Option<T>> {
    let mut update = Document::new();
    if !set.is_empty() {
        update.insert("$set", set);
    }
    if !inc.is_empty() {
        update.insert("$inc", inc);
    }
    if update.is_empty() {
        return find_one(coll, filter).await;
    }
    coll.find_one_and_update(filter, update)
        .return_document(ReturnDocument::After)
        .await
        .map_err(db_err)?
        .map(from_doc)
        .transpose()
}

fn sorted(sort: Document) -> FindOptions {
    FindOptions::builder().sort(sort).build()
}

#[async_trait]
impl UserRepo for MongoStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        insert(&self.users, to_doc(user, &user.id)?).await
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        find_one(&self.users, doc! { "_id": id }).await
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        find_one(&self.users, doc! { "username": username }).await
    }

    async fn update_user(&self, id: &str, changes: &UserUpdate) -> StoreResult<User> {
        let mut set = Document::new();
        if let Some(name) = &changes.display_name {
            set.insert("display_name", name);
        }
        if let Some(role) = &changes.role {
            set.insert("role", to_bson(role)?);
        }
        if let Some(disabled) = changes.disabled {
            set.insert("disabled", disabled);
        }
        if let Some(hash) = &changes.password_hash {
            set.insert("password_hash", hash);
        }
        if let Some(t) = &changes.last_login_at {
            set.insert("last_login_at", time::format(t));
        }
        if let Some(t) = &changes.updated_at {
            set.insert("updated_at", time::format(t));
        }
        let mut inc = Document::new();
        if changes.bump_token_version {
            inc.insert("token_version", 1_i64);
        }
        let mut filter = doc! { "_id": id };
        if let Some(version) = changes.expect_token_version {
            filter.insert("token_version", version);
        }
        match update_returning(&self.users, filter, set, inc).await? {
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
        let mut conditions = Vec::new();
        if let Some(search) = search_term(&query.search) {
            conditions.push(doc! { "$or": [
                { "username": contains(search) },
                { "display_name": contains(search) },
            ] });
        }
        if let Some(role) = query.role {
            conditions.push(doc! { "role": to_bson(&role)? });
        }
        if let Some(disabled) = query.disabled {
            conditions.push(doc! { "disabled": disabled });
        }
        find_page(
            &self.users,
            and(conditions),
            doc! { "username": 1, "_id": 1 },
            query.limit,
            query.offset,
        )
        .await
    }

    async fn count_active_staff(&self) -> StoreResult<u64> {
        let staff = corral_sdk::Role::ALL
            .into_iter()
            .filter(|r| r.is_staff())
            .map(|r| to_bson(&r))
            .collect::<StoreResult<Vec<_>>>()?;
        self.users
            .count_documents(doc! { "role": { "$in": staff }, "disabled": false })
            .await
            .map_err(db_err)
    }

    async fn count_active_in_role(&self, role: corral_sdk::Role) -> StoreResult<u64> {
        self.users
            .count_documents(doc! { "role": to_bson(&role)?, "disabled": false })
            .await
            .map_err(db_err)
    }

    async fn count_users(&self) -> StoreResult<u64> {
        self.users
            .count_documents(Document::new())
            .await
            .map_err(db_err)
    }
}

#[async_trait]
impl SessionRepo for MongoStore {
    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        let mut document = to_doc(session, &session.id)?;
        document.insert(EXPIRE_AT, bson_date(&session.expires_at));
        insert(&self.sessions, document).await
    }

    async fn get_session_by_hash(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        find_one(&self.sessions, doc! { "token_hash": token_hash }).await
    }

    async fn mark_session_used(&self, id: &str) -> StoreResult<bool> {
        let result = self
            .sessions
            .update_one(
                doc! { "_id": id, "used": false, "revoked": false },
                doc! { "$set": { "used": true } },
            )
            .await
            .map_err(db_err)?;
        Ok(result.modified_count == 1)
    }

    async fn revoke_family(&self, family_id: &str) -> StoreResult<()> {
        self.sessions
            .update_many(
                doc! { "family_id": family_id },
                doc! { "$set": { "revoked": true } },
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn revoke_user_sessions(&self, user_id: &str) -> StoreResult<()> {
        self.sessions
            .update_many(
                doc! { "user_id": user_id },
                doc! { "$set": { "revoked": true } },
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn purge_expired_sessions(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let result = self
            .sessions
            .delete_many(doc! { "expires_at": { "$lte": time::format(&now) } })
            .await
            .map_err(db_err)?;
        Ok(result.deleted_count)
    }
}

#[async_trait]
impl ApiKeyRepo for MongoStore {
    async fn create_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        insert(&self.api_keys, to_doc(key, &key.id)?).await
    }

    async fn get_api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKey>> {
        find_one(&self.api_keys, doc! { "key_hash": key_hash }).await
    }

    async fn list_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
        find_all(
            &self.api_keys,
            doc! { "user_id": user_id },
            sorted(doc! { "created_at": -1, "_id": -1 }),
        )
        .await
    }

    async fn delete_api_key(&self, user_id: &str, id: &str) -> StoreResult<bool> {
        let result = self
            .api_keys
            .delete_one(doc! { "_id": id, "user_id": user_id })
            .await
            .map_err(db_err)?;
        Ok(result.deleted_count == 1)
    }

    async fn delete_user_api_keys(&self, user_id: &str) -> StoreResult<u64> {
        let result = self
            .api_keys
            .delete_many(doc! { "user_id": user_id })
            .await
            .map_err(db_err)?;
        Ok(result.deleted_count)
    }

    async fn touch_api_key(&self, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        // A key deleted while in use is not an error worth reporting.
        self.api_keys
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "last_used_at": time::format(&at) } },
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

/// A chat's sampling settings as stored: a sub-document. BSON has no
/// unsigned 64-bit integer, so `seed` is kept as the `Int64` of the same
/// bits (a seed above `i64::MAX` reads as negative in the shell).
fn sampling_doc(sampling: &SamplingOverrides) -> StoreResult<Document> {
    let mut rest = sampling.clone();
    let seed = rest.seed.take();
    let mut document = bson::to_document(&rest)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode sampling settings: {e}")))?;
    if let Some(seed) = seed {
        document.insert("seed", seed as i64);
    }
    Ok(document)
}

/// A chat from its document; one stored before chats had sampling
/// settings has none.
fn chat_from_doc(mut document: Document) -> StoreResult<Chat> {
    let sampling = match document.remove("sampling") {
        None | Some(Bson::Null) => SamplingOverrides::default(),
        Some(Bson::Document(mut stored)) => {
            let seed = match stored.remove("seed") {
                None | Some(Bson::Null) => None,
                Some(Bson::Int64(n)) => Some(n as u64),
                Some(Bson::Int32(n)) => Some(i64::from(n) as u64),
                Some(other) => {
                    return Err(StoreError::Corrupt(format!(
                        "a chat's sampling seed is {other:?}"
                    )))
                }
            };
            let mut sampling: SamplingOverrides = from_doc(stored)?;
            sampling.seed = seed;
            sampling
        }
        Some(other) => {
            return Err(StoreError::Corrupt(format!(
                "a chat's sampling settings are {other:?}"
            )))
        }
    };
    let mut chat: Chat = from_doc(document)?;
    chat.sampling = sampling;
    Ok(chat)
}

impl MongoStore {
    fn chat_doc(chat: &Chat) -> StoreResult<Document> {
        let bare = Chat {
            sampling: SamplingOverrides::default(),
            ..chat.clone()
        };
        let mut document = to_doc(&bare, &chat.id)?;
        document.insert("sampling", sampling_doc(&chat.sampling)?);
        if let Some(expires_at) = &chat.expires_at {
            document.insert(EXPIRE_AT, bson_date(expires_at));
        }
        Ok(document)
    }

    async fn delete_chats(&self, ids: Vec<String>) -> StoreResult<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.messages
            .delete_many(doc! { "chat_id": { "$in": &ids } })
            .await
            .map_err(db_err)?;
        let result = self
            .chats
            .delete_many(doc! { "_id": { "$in": &ids } })
            .await
            .map_err(db_err)?;
        Ok(result.deleted_count)
    }
}

#[async_trait]
impl ChatRepo for MongoStore {
    async fn create_chat(&self, chat: &Chat) -> StoreResult<()> {
        insert(&self.chats, Self::chat_doc(chat)?).await
    }

    async fn get_chat(
        &self,
        owner_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Chat>> {
        let filter = and(vec![doc! { "_id": id, "owner_id": owner_id }, live(&now)]);
        find_one(&self.chats, filter)
            .await?
            .map(chat_from_doc)
            .transpose()
    }

    async fn update_chat(
        &self,
        owner_id: &str,
        id: &str,
        changes: &ChatUpdate,
    ) -> StoreResult<Chat> {
        let mut set = Document::new();
        if let Some(title) = &changes.title {
            set.insert("title", title);
        } else if let Some((expected, new)) = &changes.title_if {
            self.chats
                .update_one(
                    doc! { "_id": id, "owner_id": owner_id, "title": expected },
                    doc! { "$set": { "title": new } },
                )
                .await
                .map_err(db_err)?;
        }
        if let Some(model) = &changes.model {
            set.insert("model", model);
        }
        if let Some(prompt) = &changes.system_prompt {
            set.insert("system_prompt", to_bson(prompt)?);
        }
        if let Some(pinned) = changes.pinned {
            set.insert("pinned", pinned);
        }
        if let Some(sampling) = &changes.sampling {
            set.insert("sampling", sampling_doc(sampling)?);
        }
        if let Some(t) = &changes.updated_at {
            set.insert("updated_at", time::format(t));
        }
        let filter = doc! { "_id": id, "owner_id": owner_id };
        update_returning(&self.chats, filter, set, Document::new())
            .await?
            .map(chat_from_doc)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    async fn delete_chat(&self, owner_id: &str, id: &str) -> StoreResult<bool> {
        let result = self
            .chats
            .delete_one(doc! { "_id": id, "owner_id": owner_id })
            .await
            .map_err(db_err)?;
        if result.deleted_count == 0 {
            return Ok(false);
        }
        self.messages
            .delete_many(doc! { "chat_id": id })
            .await
            .map_err(db_err)?;
        Ok(true)
    }

    async fn list_chats(
        &self,
        owner_id: &str,
        query: &ChatQuery,
        now: DateTime<Utc>,
    ) -> StoreResult<Page<Chat>> {
        let mut conditions = vec![doc! { "owner_id": owner_id }, live(&now)];
        if let Some(pinned) = query.pinned {
            conditions.push(doc! { "pinned": pinned });
        }
        if let Some(search) = search_term(&query.search) {
            let owned = self
                .chats
                .distinct("_id", doc! { "owner_id": owner_id })
                .await
                .map_err(db_err)?;
            let matching = self
                .messages
                .distinct(
                    "chat_id",
                    doc! { "chat_id": { "$in": owned }, "content": contains(search) },
                )
                .await
                .map_err(db_err)?;
            conditions.push(doc! { "$or": [
                { "title": contains(search) },
                { "_id": { "$in": matching } },
            ] });
        }
        let page: Page<Document> = find_page(
            &self.chats,
            and(conditions),
            doc! { "pinned": -1, "updated_at": -1, "_id": -1 },
            query.limit,
            query.offset,
        )
        .await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(chat_from_doc)
                .collect::<StoreResult<_>>()?,
            total: page.total,
        })
    }

    async fn purge_expired_chats(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let expired = self
            .chats
            .distinct("_id", doc! { "expires_at": { "$lte": time::format(&now) } })
            .await
            .map_err(db_err)?;
        let ids = expired
            .into_iter()
            .map(|id| match id {
                Bson::String(id) => Ok(id),
                other => Err(StoreError::Corrupt(format!("chat id {other}"))),
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.delete_chats(ids).await
    }
}

#[async_trait]
impl MessageRepo for MongoStore {
    async fn add_message(&self, message: &Message) -> StoreResult<()> {
        let mut document = to_doc(message, &message.id)?;
        let chat = self
            .chats
            .find_one(doc! { "_id": &message.chat_id })
            .projection(doc! { EXPIRE_AT: 1 })
            .await
            .map_err(db_err)?
            .ok_or(StoreError::NotFound)?;
        if let Some(expire_at) = chat.get(EXPIRE_AT) {
            document.insert(EXPIRE_AT, expire_at.clone());
        }
        insert(&self.messages, document).await?;
        // A chat deleted meanwhile deleted its messages before this one was
        // stored: take it back, as SQLite's foreign key refuses it.
        let still_there = self
            .chats
            .find_one(doc! { "_id": &message.chat_id })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(db_err)?
            .is_some();
        if !still_there {
            self.messages
                .delete_one(doc! { "_id": &message.id })
                .await
                .map_err(db_err)?;
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn update_message(&self, id: &str, changes: &MessageUpdate) -> StoreResult<()> {
        let mut set = Document::new();
        if let Some(content) = &changes.content {
            set.insert("content", content);
        }
        if let Some(status) = &changes.status {
            set.insert("status", to_bson(status)?);
        }
        if let Some(error) = &changes.error {
            set.insert("error", to_bson(error)?);
        }
        if let Some(model) = &changes.model {
            set.insert("model", to_bson(model)?);
        }
        if let Some(usage) = &changes.usage {
            set.insert("usage", to_bson(usage)?);
        }
        if let Some(annotations) = &changes.annotations {
            set.insert("annotations", to_bson(annotations)?);
        }
        if let Some(created_at) = &changes.created_at {
            set.insert("created_at", time::format(created_at));
        }
        let found: Option<Document> =
            update_returning(&self.messages, doc! { "_id": id }, set, Document::new()).await?;
        found.map(|_| ()).ok_or(StoreError::NotFound)
    }

    async fn save_answer_progress(
        &self,
        id: &str,
        content: &str,
        usage: &MessageUsage,
    ) -> StoreResult<bool> {
        let result = self
            .messages
            .update_one(
                doc! { "_id": id, "status": to_bson(&MessageStatus::Pending)? },
                doc! { "$set": { "content": content, "usage": to_bson(usage)? } },
            )
            .await
            .map_err(db_err)?;
        Ok(result.matched_count > 0)
    }

    async fn interrupt_pending_answers(&self) -> StoreResult<Vec<(Message, String)>> {
        let pending = to_bson(&MessageStatus::Pending)?;
        let interrupted = to_bson(&MessageStatus::Interrupted)?;
        let found: Vec<Message> = find_all(
            &self.messages,
            doc! { "status": pending.clone() },
            FindOptions::default(),
        )
        .await?;
        let mut out = Vec::with_capacity(found.len());
        for mut message in found {
            // One at a time, each only while still pending, so an answer
            // that ended meanwhile keeps its status.
            let result = self
                .messages
                .update_one(
                    doc! { "_id": &message.id, "status": pending.clone() },
                    doc! { "$set": { "status": interrupted.clone() } },
                )
                .await
                .map_err(db_err)?;
            if result.modified_count == 0 {
                continue;
            }
            let chat = self
                .chats
                .find_one(doc! { "_id": &message.chat_id })
                .projection(doc! { "owner_id": 1 })
                .await
                .map_err(db_err)?;
            let Some(owner) = chat.and_then(|c| c.get_str("owner_id").ok().map(str::to_owned))
            else {
                continue;
            };
            message.status = MessageStatus::Interrupted;
            out.push((message, owner));
        }
        Ok(out)
    }

    async fn list_messages(&self, chat_id: &str) -> StoreResult<Vec<Message>> {
        let now = time::format(&time::now());
        let chat = self
            .chats
            .find_one(doc! { "_id": chat_id })
            .projection(doc! { "expires_at": 1 })
            .await
            .map_err(db_err)?;
        let expired = chat
            .as_ref()
            .and_then(|c| c.get_str("expires_at").ok())
            .is_some_and(|expires_at| expires_at <= now.as_str());
        if expired {
            return Ok(Vec::new());
        }
        find_all(
            &self.messages,
            doc! { "chat_id": chat_id },
            sorted(doc! { "created_at": 1, "_id": 1 }),
        )
        .await
    }
}

impl MongoStore {
    async fn next_ticket_number(&self) -> StoreResult<i64> {
        let mut attempt = 0;
        let counter = loop {
            let result = self
                .counters
                .find_one_and_update(
                    doc! { "_id": TICKET_COUNTER },
                    doc! { "$inc": { "seq": 1_i64 } },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await
                .map_err(db_err);
            match result {
                // Concurrent first-ever upserts can race on the counter's
                // `_id`: the loser sees a duplicate key, or (on some servers)
                // no document. Either way the counter exists now; go again.
                Err(StoreError::Conflict(_)) | Ok(None) if attempt < 5 => attempt += 1,
                other => break other?,
            }
        };
        let counter =
            counter.ok_or_else(|| StoreError::Unavailable("ticket counter missing".to_string()))?;
        let seq = as_u64(counter.get("seq"))?;
        i64::try_from(seq).map_err(|_| StoreError::Corrupt(format!("ticket counter {seq}")))
    }
}

#[async_trait]
impl TicketRepo for MongoStore {
    async fn create_ticket(&self, ticket: &Ticket) -> StoreResult<Ticket> {
        let stored = Ticket {
            number: self.next_ticket_number().await?,
            ..ticket.clone()
        };
        insert(&self.tickets, to_doc(&stored, &stored.id)?).await?;
        Ok(stored)
    }

    async fn get_ticket(&self, id: &str) -> StoreResult<Option<Ticket>> {
        find_one(&self.tickets, doc! { "_id": id }).await
    }

    async fn get_ticket_by_number(&self, number: i64) -> StoreResult<Option<Ticket>> {
        find_one(&self.tickets, doc! { "number": number }).await
    }

    async fn update_ticket(&self, id: &str, changes: &TicketUpdate) -> StoreResult<Option<Ticket>> {
        let mut set = Document::new();
        if let Some(status) = &changes.status {
            set.insert("status", to_bson(status)?);
        }
        if let Some(priority) = &changes.priority {
            set.insert("priority", to_bson(priority)?);
        }
        if let Some(category) = &changes.category {
            set.insert("category", to_bson(category)?);
        }
        if let Some(assignee) = &changes.assignee {
            let (id, username) = match assignee {
                Some((id, username)) => (Bson::from(id.as_str()), Bson::from(username.as_str())),
                None => (Bson::Null, Bson::Null),
            };
            set.insert("assignee_id", id);
            set.insert("assignee_username", username);
        }
        if let Some(resolved_at) = &changes.resolved_at {
            set.insert(
                "resolved_at",
                resolved_at
                    .as_ref()
                    .map_or(Bson::Null, |t| time::format(t).into()),
            );
        }
        if let Some(t) = &changes.updated_at {
            set.insert("updated_at", time::format(t));
        }
        let mut filter = doc! { "_id": id };
        if let Some(expected) = &changes.expected_status {
            filter.insert("status", to_bson(expected)?);
        }
        let stored = update_returning(&self.tickets, filter, set, Document::new()).await?;
        if stored.is_none() && self.get_ticket(id).await?.is_none() {
            return Err(StoreError::NotFound);
        }
        Ok(stored)
    }

    async fn list_tickets(&self, query: &TicketQuery) -> StoreResult<Page<Ticket>> {
        let mut conditions = Vec::new();
        if let Some(owner_id) = &query.owner_id {
            conditions.push(doc! { "owner_id": owner_id });
        }
        if let Some(status) = query.status {
            conditions.push(doc! { "status": to_bson(&status)? });
        }
        if let Some(category) = query.category {
            conditions.push(doc! { "category": to_bson(&category)? });
        }
        if let Some(assignee_id) = &query.assignee_id {
            let value = match assignee_id {
                Some(id) => Bson::String(id.clone()),
                None => Bson::Null,
            };
            conditions.push(doc! { "assignee_id": value });
        }
        if let Some(search) = search_term(&query.search) {
            conditions.push(doc! { "$or": [
                { "subject": contains(search) },
                { "body": contains(search) },
            ] });
        }
        find_page(
            &self.tickets,
            and(conditions),
            doc! { "updated_at": -1, "_id": -1 },
            query.limit,
            query.offset,
        )
        .await
    }
}

#[async_trait]
impl CommentRepo for MongoStore {
    async fn add_comment(&self, comment: &Comment) -> StoreResult<()> {
        insert(&self.comments, to_doc(comment, &comment.id)?).await
    }

    async fn list_comments(
        &self,
        ticket_id: &str,
        include_internal: bool,
    ) -> StoreResult<Vec<Comment>> {
        let mut filter = doc! { "ticket_id": ticket_id };
        if !include_internal {
            filter.insert("internal", false);
        }
        find_all(
            &self.comments,
            filter,
            sorted(doc! { "created_at": 1, "_id": 1 }),
        )
        .await
    }
}

#[async_trait]
impl UsageRepo for MongoStore {
    async fn record_usage(&self, event: &UsageEvent) -> StoreResult<()> {
        insert(&self.usage, to_doc(event, &event.id)?).await
    }

    async fn usage_daily(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        user_id: Option<&str>,
    ) -> StoreResult<UsageDaily> {
        let matched = days_match(from, to, user_id);
        let day = doc! { "$substrBytes": ["$at", 0, 10] };

        let counts_pipeline = [
            doc! { "$match": matched.clone() },
            doc! { "$group": {
                "_id": { "day": day.clone(), "kind": "$kind" },
                "count": { "$sum": 1 },
            } },
            doc! { "$sort": { "_id.day": 1, "_id.kind": 1 } },
        ];
        let groups: Vec<Document> = aggregate_all(&self.usage, counts_pipeline).await?;
        let counts = groups
            .iter()
            .map(|group| {
                let text = |field: &str| group_key(group, field);
                Ok(DailyCount {
                    day: parse_day(text("day")?)?,
                    kind: text("kind")?.to_string(),
                    count: as_u64(group.get("count"))?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;

        let users_pipeline = [
            doc! { "$match": matched },
            doc! { "$group": { "_id": day, "users": { "$addToSet": "$user_id" } } },
            doc! { "$project": { "users": { "$size": "$users" } } },
            doc! { "$sort": { "_id": 1 } },
        ];
        let days: Vec<Document> = aggregate_all(&self.usage, users_pipeline).await?;
        let active_users = days
            .iter()
            .map(|group| {
                let day = group
                    .get_str("_id")
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((parse_day(day)?, as_u64(group.get("users"))?))
            })
            .collect::<StoreResult<Vec<_>>>()?;

        Ok(UsageDaily {
            counts,
            active_users,
        })
    }

    async fn record_generation(&self, g: &Generation) -> StoreResult<()> {
        let mut document = to_doc(g, &g.id)?;
        // Counters for the `$group` in `generation_totals`, which then needs
        // no conditional expressions.
        document.insert("n_failed", i64::from(g.status == MessageStatus::Failed));
        document.insert("n_ttft", i64::from(g.time_to_first_token_ms.is_some()));
        insert(&self.generations, document).await
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
        let matched = days_match(from, to, user_id);
        let pipeline = [
            doc! { "$match": matched },
            doc! { "$group": {
                "_id": { "day": { "$substrBytes": ["$at", 0, 10] }, "model": "$model" },
                "generations": { "$sum": 1 },
                "failed": { "$sum": "$n_failed" },
                "prompt_tokens": { "$sum": "$prompt_tokens" },
                // Generations recorded before this was counted have no
                // such field, and `$sum` takes a missing one as 0.
                "cached_prompt_tokens": { "$sum": "$cached_tokens" },
                "completion_tokens": { "$sum": "$completion_tokens" },
                "ttft_sum_ms": { "$sum": "$time_to_first_token_ms" },
                "ttft_count": { "$sum": "$n_ttft" },
                "duration_ms": { "$sum": "$duration_ms" },
            } },
            doc! { "$sort": { "_id.day": 1, "_id.model": 1 } },
        ];
        let groups: Vec<Document> = aggregate_all(&self.generations, pipeline).await?;
        groups
            .iter()
            .map(|group| {
                let text = |field: &str| group_key(group, field);
                Ok(GenerationTotals {
                    day: parse_day(text("day")?)?,
                    model: text("model")?.to_string(),
                    generations: as_u64(group.get("generations"))?,
                    failed: as_u64(group.get("failed"))?,
                    prompt_tokens: as_u64(group.get("prompt_tokens"))?,
                    cached_prompt_tokens: as_u64(group.get("cached_prompt_tokens"))?,
                    completion_tokens: as_u64(group.get("completion_tokens"))?,
                    ttft_sum_ms: as_u64(group.get("ttft_sum_ms"))?,
                    ttft_count: as_u64(group.get("ttft_count"))?,
                    duration_ms: as_u64(group.get("duration_ms"))?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl AuditRepo for MongoStore {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        insert(&self.audit, to_doc(entry, &entry.id)?).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Page<AuditEntry>> {
        let mut filter = Document::new();
        if let Some(actor_id) = &query.actor_id {
            filter.insert("actor_id", actor_id);
        }
        if let Some(action) = &query.action {
            filter.insert("action", action);
        }
        find_page(
            &self.audit,
            filter,
            doc! { "at": -1, "_id": -1 },
            query.limit,
            query.offset,
        )
        .await
    }
}

#[async_trait]
impl SettingsRepo for MongoStore {
    async fn get_setting(&self, key: &str) -> StoreResult<Option<serde_json::Value>> {
        let Some(document) = self
            .settings
            .find_one(doc! { "_id": key })
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let value = document.get("value").cloned().unwrap_or(Bson::Null);
        bson::from_bson(value)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    async fn put_setting(&self, key: &str, value: &serde_json::Value) -> StoreResult<()> {
        self.settings
            .replace_one(
                doc! { "_id": key },
                doc! { "_id": key, "value": to_bson(value)? },
            )
            .upsert(true)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn swap_setting(
        &self,
        key: &str,
        expected: Option<&serde_json::Value>,
        value: &serde_json::Value,
    ) -> StoreResult<bool> {
        let document = doc! { "_id": key, "value": to_bson(value)? };
        let Some(expected) = expected else {
            // Only the first writer of a missing setting creates it.
            return match self.settings.insert_one(document).await.map_err(db_err) {
                Ok(_) => Ok(true),
                Err(StoreError::Conflict(_)) => Ok(false),
                Err(e) => Err(e),
            };
        };
        // An embedded document matches only with its fields in the same
        // order. `expected` comes from `get_setting` and every value here
        // from serde_json, so the orders agree; a value rewritten by hand
        // with its fields in another order never matches, and its swaps
        // fail until it is written whole again.
        let replaced = self
            .settings
            .replace_one(doc! { "_id": key, "value": to_bson(expected)? }, document)
            .await
            .map_err(db_err)?;
        Ok(replaced.matched_count == 1)
    }
}

#[async_trait]
impl ModelRepo for MongoStore {
    async fn create_model(&self, model: &ModelRecord) -> StoreResult<()> {
        insert(&self.models, to_doc(model, &model.id)?).await
    }

    async fn get_model(&self, id: &str) -> StoreResult<Option<ModelRecord>> {
        find_one(&self.models, doc! { "_id": id }).await
    }

    async fn get_model_by_name(&self, name: &str) -> StoreResult<Option<ModelRecord>> {
        find_one(&self.models, doc! { "name": name }).await
    }

    async fn update_model(&self, model: &ModelRecord) -> StoreResult<()> {
        replace(
            &self.models,
            doc! { "_id": &model.id },
            to_doc(model, &model.id)?,
        )
        .await
    }

    async fn delete_model(&self, id: &str) -> StoreResult<bool> {
        let result = self
            .models
            .delete_one(doc! { "_id": id })
            .await
            .map_err(db_err)?;
        Ok(result.deleted_count > 0)
    }

    async fn list_models(&self) -> StoreResult<Vec<ModelRecord>> {
        find_all(
            &self.models,
            Document::new(),
            sorted(doc! { "name": 1, "_id": 1 }),
        )
        .await
    }
}

#[async_trait]
impl PluginRepo for MongoStore {
    async fn put_plugin(&self, plugin: &PluginRecord) -> StoreResult<()> {
        self.plugins
            .replace_one(doc! { "_id": &plugin.id }, to_doc(plugin, &plugin.id)?)
            .upsert(true)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn get_plugin(&self, id: &str) -> StoreResult<Option<PluginRecord>> {
        find_one(&self.plugins, doc! { "_id": id }).await
    }

    async fn list_plugins(&self) -> StoreResult<Vec<PluginRecord>> {
        find_all(&self.plugins, Document::new(), sorted(doc! { "_id": 1 })).await
    }

    async fn update_plugin(&self, id: &str, changes: &PluginUpdate) -> StoreResult<PluginRecord> {
        let mut set = Document::new();
        if let Some((manifest, sha256)) = &changes.manifest {
            set.insert("manifest", manifest);
            set.insert("component_sha256", sha256);
        }
        if let Some(enabled) = changes.enabled {
            set.insert("enabled", enabled);
        }
        if let Some(optional) = changes.optional {
            set.insert("optional", optional);
        }
        if let Some(approved) = &changes.approved {
            set.insert("approved", to_bson(approved)?);
        }
        if let Some(hosts) = &changes.approved_hosts {
            set.insert("approved_hosts", to_bson(hosts)?);
        }
        if let Some(private) = changes.private_network {
            set.insert("private_network", private);
        }
        if let Some(models) = &changes.models {
            set.insert("models", to_bson(models)?);
        }
        if let Some(config) = &changes.config {
            set.insert("config", to_bson(config)?);
        }
        if let Some(reason) = &changes.disabled_reason {
            set.insert("disabled_reason", to_bson(reason)?);
        }
        if let Some(t) = &changes.updated_at {
            set.insert("updated_at", time::format(t));
        }
        update_returning(&self.plugins, doc! { "_id": id }, set, Document::new())
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn delete_plugin(&self, id: &str) -> StoreResult<bool> {
        let result = self
            .plugins
            .delete_one(doc! { "_id": id })
            .await
            .map_err(db_err)?;
        self.user_plugins
            .delete_many(doc! { "plugin_id": id })
            .await
            .map_err(db_err)?;
        self.plugin_kv
            .delete_many(doc! { "plugin": id })
            .await
            .map_err(db_err)?;
        self.plugin_kv_usage
            .delete_one(doc! { "_id": id })
            .await
            .map_err(db_err)?;
        Ok(result.deleted_count > 0)
    }

    async fn list_user_plugins(&self, user_id: &str) -> StoreResult<Vec<String>> {
        let found: Vec<Document> = self
            .user_plugins
            .find(doc! { "user_id": user_id })
            .sort(doc! { "plugin_id": 1 })
            .await
            .map_err(db_err)?
            .try_collect()
            .await
            .map_err(db_err)?;
        found
            .iter()
            .map(|d| {
                d.get_str("plugin_id")
                    .map(str::to_owned)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    async fn set_user_plugin(&self, user_id: &str, plugin_id: &str, on: bool) -> StoreResult<()> {
        let opt_in = doc! { "user_id": user_id, "plugin_id": plugin_id };
        if !on {
            self.user_plugins.delete_one(opt_in).await.map_err(db_err)?;
            return Ok(());
        }
        let installed = self
            .plugins
            .find_one(doc! { "_id": plugin_id })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(db_err)?;
        if installed.is_none() {
            return Err(StoreError::NotFound);
        }
        match self
            .user_plugins
            .replace_one(opt_in.clone(), opt_in)
            .upsert(true)
            .await
            .map_err(db_err)
        {
            // Two concurrent upserts: the other one inserted it.
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn kv_entry(plugin: &str, scope: &str, key: &str) -> Document {
    doc! { "plugin": plugin, "scope": scope, "key": key }
}

/// A byte count as BSON stores it.
fn bson_bytes(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn kv_entry_size(entry: &Document) -> StoreResult<i64> {
    let size = as_u64(entry.get("size"))?;
    Ok(bson_bytes(size))
}

impl MongoStore {
    /// Moves the plugin's usage counter by `delta` if the result stays
    /// within `quota`; for `delta <= 0` it only checks that it does (the
    /// caller lowers the counter once its write landed, so that concurrent
    /// writers never count on room that is not there yet). `false` when
    /// the quota does not allow it.
    async fn kv_take_room(&self, plugin: &str, quota: i64, delta: i64) -> StoreResult<bool> {
        let room = doc! { "_id": plugin, "bytes": { "$lte": quota.saturating_sub(delta) } };
        for attempt in 0..2 {
            let fits = if delta > 0 {
                self.plugin_kv_usage
                    .update_one(room.clone(), doc! { "$inc": { "bytes": delta } })
                    .await
                    .map_err(db_err)?
                    .matched_count
                    > 0
            } else {
                self.plugin_kv_usage
                    .find_one(room.clone())
                    .await
                    .map_err(db_err)?
                    .is_some()
            };
            if fits || attempt == 1 {
                return Ok(fits);
            }
            // No room, or no counter yet (the plugin's first write, maybe
            // racing others): make sure the counter exists and ask again.
            match self
                .plugin_kv_usage
                .update_one(
                    doc! { "_id": plugin },
                    doc! { "$setOnInsert": { "bytes": 0_i64 } },
                )
                .upsert(true)
                .await
                .map_err(db_err)
            {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    async fn kv_count(&self, plugin: &str, delta: i64) -> StoreResult<()> {
        if delta != 0 {
            self.plugin_kv_usage
                .update_one(doc! { "_id": plugin }, doc! { "$inc": { "bytes": delta } })
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }

    /// Writes the entry if it still has the size it had when read (`None`:
    /// if it still does not exist); `false` when another write got there
    /// first. A same-size entry written meanwhile is replaced, which keeps
    /// the count right.
    async fn kv_write(
        &self,
        entry: &Document,
        replaced: Option<i64>,
        value: &[u8],
        size: i64,
    ) -> StoreResult<bool> {
        let value = Bson::Binary(bson::Binary {
            subtype: bson::spec::BinarySubtype::Generic,
            bytes: value.to_vec(),
        });
        match replaced {
            None => {
                let mut document = entry.clone();
                document.insert("value", value);
                document.insert("size", size);
                match insert(&self.plugin_kv, document).await {
                    Ok(()) => Ok(true),
                    Err(StoreError::Conflict(_)) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(old) => {
                let mut filter = entry.clone();
                filter.insert("size", old);
                let result = self
                    .plugin_kv
                    .update_one(filter, doc! { "$set": { "value": value, "size": size } })
                    .await
                    .map_err(db_err)?;
                Ok(result.matched_count > 0)
            }
        }
    }
}

#[async_trait]
impl PluginDataRepo for MongoStore {
    async fn kv_get(&self, plugin: &str, scope: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let Some(found) = self
            .plugin_kv
            .find_one(kv_entry(plugin, scope, key))
            .projection(doc! { "value": 1 })
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        match found.get("value") {
            Some(Bson::Binary(binary)) => Ok(Some(binary.bytes.clone())),
            other => Err(StoreError::Corrupt(format!(
                "a key-value entry holds {other:?}"
            ))),
        }
    }

    async fn kv_set(
        &self,
        plugin: &str,
        scope: &str,
        key: &str,
        value: &[u8],
        quota_bytes: u64,
    ) -> StoreResult<()> {
        let size = bson_bytes(kv_size(key, value));
        let quota = bson_bytes(quota_bytes);
        let entry = kv_entry(plugin, scope, key);
        for _ in 0..KV_WRITE_ATTEMPTS {
            let replaced = self
                .plugin_kv
                .find_one(entry.clone())
                .projection(doc! { "size": 1 })
                .await
                .map_err(db_err)?
                .map(|found| kv_entry_size(&found))
                .transpose()?;
            let delta = size - replaced.unwrap_or(0);
            if !self.kv_take_room(plugin, quota, delta).await? {
                return Err(StoreError::Conflict(KV_QUOTA.to_owned()));
            }
            let written = self.kv_write(&entry, replaced, value, size).await;
            match written {
                Ok(true) => {
                    if delta < 0 {
                        self.kv_count(plugin, delta).await?;
                    }
                    return Ok(());
                }
                // Raced another write of the key: give the room back, and
                // read the entry again.
                Ok(false) if delta > 0 => self.kv_count(plugin, -delta).await?,
                Ok(false) => {}
                Err(e) => {
                    if delta > 0 {
                        self.kv_count(plugin, -delta).await?;
                    }
                    return Err(e);
                }
            }
        }
        Err(StoreError::Unavailable(
            "a key-value entry kept changing while it was written".to_owned(),
        ))
    }

    async fn kv_delete(&self, plugin: &str, scope: &str, key: &str) -> StoreResult<bool> {
        let deleted = self
            .plugin_kv
            .find_one_and_delete(kv_entry(plugin, scope, key))
            .projection(doc! { "size": 1 })
            .await
            .map_err(db_err)?;
        let Some(deleted) = deleted else {
            return Ok(false);
        };
        self.kv_count(plugin, -kv_entry_size(&deleted)?).await?;
        Ok(true)
    }

    async fn kv_list(
        &self,
        plugin: &str,
        scope: &str,
        prefix: &str,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // A range on the key, not a regular expression: nothing in the
        // prefix is special.
        let mut range = doc! { "$gte": prefix };
        if let Some(end) = prefix_end(prefix) {
            range.insert("$lt", end);
        }
        let found: Vec<Document> = self
            .plugin_kv
            .find(doc! { "plugin": plugin, "scope": scope, "key": range })
            .projection(doc! { "key": 1 })
            .sort(doc! { "key": 1 })
            .limit(i64::from(limit))
            .await
            .map_err(db_err)?
            .try_collect()
            .await
            .map_err(db_err)?;
        found
            .iter()
            .map(|d| {
                d.get_str("key")
                    .map(str::to_owned)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    async fn kv_usage(&self, plugin: &str) -> StoreResult<u64> {
        let counter = self
            .plugin_kv_usage
            .find_one(doc! { "_id": plugin })
            .await
            .map_err(db_err)?;
        match counter {
            // Never below zero, whatever a crash between writes left.
            Some(counter) => match counter.get("bytes") {
                Some(Bson::Int64(n)) if *n < 0 => Ok(0),
                Some(Bson::Int32(n)) if *n < 0 => Ok(0),
                bytes => as_u64(bytes),
            },
            None => Ok(0),
        }
    }
}

#[async_trait]
impl Store for MongoStore {
    fn kind(&self) -> &'static str {
        "mongodb"
    }

    async fn ping(&self) -> StoreResult<()> {
        // The driver waits up to 30 s to select a server; a readiness probe
        // must answer well within a load balancer's check interval.
        // Reading the layout record is the ping: it also tells a host that
        // a newer Corral has taken the database over.
        match tokio::time::timeout(std::time::Duration::from_secs(3), self.check_schema()).await {
            Ok(answer) => answer,
            Err(_) => Err(StoreError::Unavailable(
                "the database did not answer within 3 s".into(),
            )),
        }
    }
}

/// The SecantusDB server the tests start (MongoDB wire protocol).
#[cfg(test)]
#[path = "../../tests/shared/secantus.rs"]
mod test_server;

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use corral_sdk::Role;
    use serde_json::json;

    use super::test_server::Server;
    use super::*;

    /// A store in a fresh database on a SecantusDB server started for the
    /// test; the server stops when the returned guard drops.
    async fn store() -> (Server, MongoStore) {
        let server = Server::start();
        let database = format!("corral_smoke_{}", new_id().replace('-', ""));
        let store = MongoStore::connect_database(&server.url(), &database)
            .await
            .expect("connect");
        (server, store)
    }

    fn user(name: &str, role: Role, at: DateTime<Utc>) -> User {
        User {
            id: new_id(),
            username: name.to_string(),
            display_name: format!("{name} display"),
            role,
            disabled: false,
            password_hash: "hash".to_string(),
            token_version: 0,
            created_at: at,
            updated_at: at,
            last_login_at: None,
        }
    }

    fn chat(owner_id: &str, title: &str, at: DateTime<Utc>) -> Chat {
        Chat {
            id: new_id(),
            owner_id: owner_id.to_string(),
            title: title.to_string(),
            model: "m".to_string(),
            system_prompt: None,
            pinned: false,
            temporary: false,
            created_at: at,
            updated_at: at,
            expires_at: None,
            sampling: Default::default(),
        }
    }

    fn message(chat_id: &str, content: &str, at: DateTime<Utc>) -> Message {
        Message {
            id: new_id(),
            chat_id: chat_id.to_string(),
            role: MessageRole::User,
            content: content.to_string(),
            status: MessageStatus::Complete,
            error: None,
            model: None,
            usage: None,
            created_at: at,
            annotations: Vec::new(),
        }
    }

    #[test]
    fn regex_input_is_escaped() {
        assert_eq!(escape_regex("a.b(c)*"), r"a\.b\(c\)\*");
    }

    #[test]
    fn duplicate_field_from_message() {
        let message = "E11000 duplicate key error collection: c.users index: username_1 dup key";
        assert_eq!(duplicate_field(None, message), "username");
        assert_eq!(duplicate_field(None, "index: _id_ dup key"), "id");
    }

    #[test]
    fn chat_documents_keep_sampling_settings() {
        let at = time::now();
        let bare = chat("alice", "Old", at);
        // Written before chats had sampling settings.
        let mut old = to_doc(&bare, &bare.id).unwrap();
        old.remove("sampling");
        assert_eq!(chat_from_doc(old).unwrap(), bare);

        let tuned = Chat {
            sampling: SamplingOverrides {
                temperature: Some(0.7),
                seed: Some(u64::MAX),
                stop: Some(vec!["###".to_string()]),
                ..Default::default()
            },
            ..bare
        };
        let stored = MongoStore::chat_doc(&tuned).unwrap();
        assert_eq!(
            stored.get_document("sampling").unwrap().get("seed"),
            Some(&Bson::Int64(-1)),
            "a seed above i64::MAX keeps its bits"
        );
        assert_eq!(chat_from_doc(stored).unwrap(), tuned);
    }

    #[tokio::test]
    async fn documents_from_before_cached_tokens_count_none() {
        let (_server, store) = store().await;
        let at = time::parse("2031-03-01T10:00:00Z").unwrap();
        let day = at.date_naive();
        let a = chat("alice", "Old", at);
        store.create_chat(&a).await.unwrap();
        let mut answer = message(&a.id, "Hi", at);
        answer.role = MessageRole::Assistant;
        answer.usage = Some(MessageUsage {
            prompt_tokens: 12,
            cached_tokens: 5,
            completion_tokens: 3,
            time_to_first_token_ms: 40,
            tokens_per_second: 20.0,
        });
        store.add_message(&answer).await.unwrap();
        let mut old = Generation::failed("alice", "m", "chat", 10);
        old.prompt_tokens = 12;
        old.cached_tokens = 5;
        old.at = at;
        store.record_generation(&old).await.unwrap();
        // Documents written before cached tokens were counted lack them.
        store
            .messages
            .update_one(
                doc! { "_id": &answer.id },
                doc! { "$unset": { "usage.cached_tokens": "" } },
            )
            .await
            .unwrap();
        store
            .generations
            .update_one(
                doc! { "_id": &old.id },
                doc! { "$unset": { "cached_tokens": "" } },
            )
            .await
            .unwrap();
        let raw = store
            .generations
            .find_one(doc! { "_id": &old.id })
            .await
            .unwrap()
            .unwrap();
        assert!(!raw.contains_key("cached_tokens"), "{raw:?}");

        let read = store.list_messages(&a.id).await.unwrap();
        let usage = read[0].usage.clone().unwrap();
        assert_eq!((usage.prompt_tokens, usage.cached_tokens), (12, 0));

        let mut new = old.clone();
        new.id = new_id();
        new.prompt_tokens = 30;
        new.cached_tokens = 25;
        store.record_generation(&new).await.unwrap();
        let totals = store.generation_totals(day, day, None).await.unwrap();
        assert_eq!(totals.len(), 1);
        assert_eq!(
            (totals[0].prompt_tokens, totals[0].cached_prompt_tokens),
            (42, 25)
        );
    }

    #[tokio::test]
    async fn messages_before_annotations_and_binary_values() {
        let (_server, store) = store().await;
        let at = time::parse("2031-03-01T10:00:00Z").unwrap();
        let a = chat("alice", "Old", at);
        store.create_chat(&a).await.unwrap();
        let mut answer = message(&a.id, "Hi", at);
        answer.annotations = vec![MessageAnnotation {
            plugin: "web-sources".to_string(),
            text: "Source: https://example.com".to_string(),
        }];
        store.add_message(&answer).await.unwrap();
        // Written before messages had annotations.
        store
            .messages
            .update_one(
                doc! { "_id": &answer.id },
                doc! { "$unset": { "annotations": "" } },
            )
            .await
            .unwrap();
        let read = store.list_messages(&a.id).await.unwrap();
        assert!(read[0].annotations.is_empty());

        let value = [0_u8, 255, 1, 0];
        store.kv_set("p", "u1", "k", &value, 100).await.unwrap();
        let raw = store
            .plugin_kv
            .find_one(doc! { "plugin": "p", "scope": "u1", "key": "k" })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(raw.get_binary_generic("value").unwrap(), &value.to_vec());
        assert_eq!(raw.get_i64("size").unwrap(), 5);
        store.db.drop().await.unwrap();
    }

    /// The layout record is made once by hosts starting together, an older
    /// one is raised, and a newer one is refused, at start and by `ping`,
    /// without being touched.
    #[tokio::test]
    async fn store_layout_is_claimed_raised_and_a_newer_one_refused() {
        let server = Server::start();
        let database = format!("corral_layout_{}", new_id().replace('-', ""));
        let url = server.url();
        let opens = (0..4).map(|_| MongoStore::connect_database(&url, &database));
        let stores = futures::future::try_join_all(opens)
            .await
            .expect("concurrent opens");
        let store = &stores[0];
        let layout = || async {
            let mut all: Vec<Document> = store
                .meta
                .find(doc! {})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            assert_eq!(all.len(), 1, "{all:?}");
            all.remove(0)
        };
        let record = layout().await;
        assert_eq!(record.get_i64("version").unwrap(), SCHEMA);
        let now = time::now();
        store
            .create_user(&user("kept", Role::User, now))
            .await
            .unwrap();

        let set = |version: i64, by: &'static str| async move {
            store
                .meta
                .update_one(
                    doc! { "_id": SCHEMA_ID },
                    doc! { "$set": { "version": version, "written_by": by } },
                )
                .await
                .unwrap();
        };
        set(SCHEMA - 1, "corral 0.0.1").await;
        MongoStore::connect_database(&url, &database)
            .await
            .expect("an older layout opens");
        let record = layout().await;
        assert_eq!(record.get_i64("version").unwrap(), SCHEMA);
        assert_eq!(
            record.get_str("written_by").unwrap(),
            concat!("corral ", env!("CARGO_PKG_VERSION"))
        );

        set(SCHEMA + 1, "corral 99.0.0").await;
        let Err(StoreError::Newer(why)) = store.ping().await else {
            panic!("ping on a newer layout did not say so");
        };
        assert!(
            why.contains(&format!("layout {}, raised by corral 99.0.0", SCHEMA + 1)),
            "{why}"
        );
        let err = MongoStore::connect_database(&url, &database)
            .await
            .err()
            .expect("a newer layout must not open");
        let err = err.to_string();
        assert!(
            err.contains(&format!("knows layouts up to {SCHEMA}")),
            "{err}"
        );
        let record = layout().await;
        assert_eq!(record.get_i64("version").unwrap(), SCHEMA + 1);
        assert_eq!(record.get_str("written_by").unwrap(), "corral 99.0.0");
        assert!(store.get_user_by_username("kept").await.unwrap().is_some());
        store.db.drop().await.unwrap();
    }

    #[tokio::test]
    async fn smoke() {
        let (_server, store) = store().await;
        let now = time::now();
        store.ping().await.unwrap();
        assert_eq!(store.kind(), "mongodb");

        // Users.
        let alice = user("alice", Role::Admin, now);
        store.create_user(&alice).await.unwrap();
        let clash = user("alice", Role::User, now);
        assert!(matches!(
            store.create_user(&clash).await,
            Err(StoreError::Conflict(f)) if f == "username"
        ));
        store
            .create_user(&user("a.b", Role::User, now))
            .await
            .unwrap();
        store
            .create_user(&user("axb", Role::Technician, now))
            .await
            .unwrap();
        assert_eq!(
            store.get_user(&alice.id).await.unwrap(),
            Some(alice.clone())
        );
        assert_eq!(
            store.get_user_by_username("alice").await.unwrap(),
            Some(alice.clone())
        );
        let page = store
            .list_users(&UserQuery {
                search: Some("A.B".to_string()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.total, 1);
        assert_eq!(page.items[0].username, "a.b");
        let page = store
            .list_users(&UserQuery {
                limit: 2,
                offset: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.total, 3);
        let names: Vec<_> = page.items.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names, ["alice", "axb"]);
        assert_eq!(store.count_active_staff().await.unwrap(), 2);
        assert_eq!(store.count_users().await.unwrap(), 3);
        let mut ghost = alice.clone();
        ghost.id = new_id();
        ghost.username = "ghost".to_string();
        let rename = UserUpdate {
            display_name: Some("Alice".to_string()),
            last_login_at: Some(now),
            ..Default::default()
        };
        assert!(matches!(
            store.update_user(&ghost.id, &rename).await,
            Err(StoreError::NotFound)
        ));
        let mut renamed = alice.clone();
        renamed.display_name = "Alice".to_string();
        renamed.last_login_at = Some(now);
        assert_eq!(
            store.update_user(&alice.id, &rename).await.unwrap(),
            renamed
        );
        assert_eq!(store.get_user(&alice.id).await.unwrap(), Some(renamed));

        // Sessions.
        let session = Session {
            id: new_id(),
            user_id: alice.id.clone(),
            family_id: new_id(),
            token_hash: "h1".to_string(),
            created_at: now,
            expires_at: now + TimeDelta::days(1),
            used: false,
            revoked: false,
        };
        store.create_session(&session).await.unwrap();
        assert!(store.mark_session_used(&session.id).await.unwrap());
        assert!(!store.mark_session_used(&session.id).await.unwrap());
        store.revoke_family(&session.family_id).await.unwrap();
        let stored = store.get_session_by_hash("h1").await.unwrap().unwrap();
        assert!(stored.used && stored.revoked);
        assert_eq!(
            store
                .purge_expired_sessions(now + TimeDelta::days(2))
                .await
                .unwrap(),
            1
        );

        // Chats and messages.
        let older = chat(&alice.id, "Older", now - TimeDelta::minutes(5));
        let mut pinned = chat(&alice.id, "Pinned", now - TimeDelta::minutes(10));
        pinned.pinned = true;
        let mut temp = chat(&alice.id, "Temp", now);
        temp.temporary = true;
        temp.expires_at = Some(now + TimeDelta::hours(1));
        let mut gone = chat(&alice.id, "Gone", now);
        gone.expires_at = Some(now - TimeDelta::seconds(1));
        for c in [&older, &pinned, &temp, &gone] {
            store.create_chat(c).await.unwrap();
        }
        store
            .add_message(&message(&older.id, "About Rust.lang", now))
            .await
            .unwrap();
        let mut answer = message(&temp.id, "pending", now);
        store.add_message(&answer).await.unwrap();
        answer.content = "done".to_string();
        answer.status = MessageStatus::Complete;
        let end = MessageUpdate {
            content: Some(answer.content.clone()),
            status: Some(answer.status),
            ..Default::default()
        };
        store.update_message(&answer.id, &end).await.unwrap();
        assert_eq!(store.list_messages(&temp.id).await.unwrap(), [answer]);
        let raw = store
            .messages
            .find_one(doc! { "chat_id": &temp.id })
            .await
            .unwrap()
            .unwrap();
        assert!(raw.get_datetime(EXPIRE_AT).is_ok());

        let page = store
            .list_chats(
                &alice.id,
                &ChatQuery {
                    limit: 10,
                    ..Default::default()
                },
                now,
            )
            .await
            .unwrap();
        let titles: Vec<_> = page.items.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, ["Pinned", "Temp", "Older"]);
        assert_eq!(page.total, 3);
        let page = store
            .list_chats(
                &alice.id,
                &ChatQuery {
                    search: Some("RUST.L".to_string()),
                    limit: 10,
                    ..Default::default()
                },
                now,
            )
            .await
            .unwrap();
        assert_eq!(page.items, std::slice::from_ref(&older));
        let page = store
            .list_chats(
                &alice.id,
                &ChatQuery {
                    search: Some("rust.x".to_string()),
                    limit: 10,
                    ..Default::default()
                },
                now,
            )
            .await
            .unwrap();
        assert_eq!(page.total, 0);
        assert!(store
            .get_chat(&alice.id, &gone.id, now)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .get_chat("someone", &older.id, now)
            .await
            .unwrap()
            .is_none());
        let rename = ChatUpdate {
            title: Some("Kept".to_string()),
            ..Default::default()
        };
        let kept = store
            .update_chat(&alice.id, &temp.id, &rename)
            .await
            .unwrap();
        assert_eq!(kept.title, "Kept");
        let raw = store
            .chats
            .find_one(doc! { "_id": &temp.id })
            .await
            .unwrap()
            .unwrap();
        assert!(
            raw.get_datetime(EXPIRE_AT).is_ok(),
            "an update keeps the TTL date"
        );
        assert_eq!(store.purge_expired_chats(now).await.unwrap(), 1);
        assert!(store.delete_chat(&alice.id, &older.id).await.unwrap());
        assert!(!store.delete_chat(&alice.id, &older.id).await.unwrap());
        assert!(store.list_messages(&older.id).await.unwrap().is_empty());

        // Tickets and comments.
        let ticket = Ticket {
            id: new_id(),
            number: 0,
            owner_id: alice.id.clone(),
            owner_username: "alice".to_string(),
            subject: "It (broke)".to_string(),
            body: "body".to_string(),
            category: TicketCategory::Bug,
            priority: TicketPriority::High,
            status: TicketStatus::Open,
            assignee_id: None,
            assignee_username: None,
            chat_id: None,
            created_at: now,
            updated_at: now,
            resolved_at: None,
        };
        let first = store.create_ticket(&ticket).await.unwrap();
        let second = store
            .create_ticket(&Ticket {
                id: new_id(),
                assignee_id: Some("tech".to_string()),
                updated_at: now + TimeDelta::seconds(1),
                ..ticket.clone()
            })
            .await
            .unwrap();
        assert_eq!((first.number, second.number), (1, 2));
        assert_eq!(
            store.get_ticket_by_number(2).await.unwrap(),
            Some(second.clone())
        );
        let unassigned = store
            .list_tickets(&TicketQuery {
                assignee_id: Some(None),
                search: Some("(BROKE)".to_string()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(unassigned.items, std::slice::from_ref(&first));
        let all = store
            .list_tickets(&TicketQuery {
                status: Some(TicketStatus::Open),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.items, [second, first.clone()]);
        let comment = Comment {
            id: new_id(),
            ticket_id: first.id.clone(),
            author_id: alice.id.clone(),
            author_username: "alice".to_string(),
            author_is_staff: true,
            body: "note".to_string(),
            internal: true,
            created_at: now,
        };
        store.add_comment(&comment).await.unwrap();
        assert!(store
            .list_comments(&first.id, false)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.list_comments(&first.id, true).await.unwrap(),
            [comment]
        );

        // Usage.
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
        let at = |d: u32, h: u32| time::start_of(day(d)) + TimeDelta::hours(i64::from(h));
        for (user_id, kind, when) in [
            ("u1", "chat.created", at(1, 1)),
            ("u2", "chat.created", at(1, 23)),
            ("u1", "auth.login", at(1, 2)),
            ("u1", "auth.login", at(2, 0)),
            ("u1", "auth.login", at(3, 0)),
        ] {
            store
                .record_usage(&UsageEvent {
                    id: new_id(),
                    user_id: user_id.to_string(),
                    kind: kind.to_string(),
                    at: when,
                })
                .await
                .unwrap();
        }
        let daily = store.usage_daily(day(1), day(2), None).await.unwrap();
        let counts: Vec<_> = daily
            .counts
            .iter()
            .map(|c| (c.day, c.kind.as_str(), c.count))
            .collect();
        assert_eq!(
            counts,
            [
                (day(1), "auth.login", 1),
                (day(1), "chat.created", 2),
                (day(2), "auth.login", 1),
            ]
        );
        assert_eq!(daily.active_users, [(day(1), 2), (day(2), 1)]);
        let daily = store.usage_daily(day(1), day(3), Some("u2")).await.unwrap();
        assert_eq!(daily.active_users, [(day(1), 1)]);

        // Audit.
        for (i, action) in ["user.create", "user.role"].into_iter().enumerate() {
            store
                .append_audit(&AuditEntry {
                    id: new_id(),
                    at: now + TimeDelta::seconds(i as i64),
                    actor_id: alice.id.clone(),
                    actor_username: "alice".to_string(),
                    action: action.to_string(),
                    target: "x".to_string(),
                    details: json!({ "n": 1, "list": [true, "s"] }),
                })
                .await
                .unwrap();
        }
        let audit = store
            .list_audit(&AuditQuery {
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(audit.total, 2);
        assert_eq!(audit.items[0].action, "user.role");
        assert_eq!(
            audit.items[0].details,
            json!({ "n": 1, "list": [true, "s"] })
        );

        // Settings.
        assert_eq!(store.get_setting("k").await.unwrap(), None);
        for value in [
            json!(42),
            json!(-7),
            json!(1.5),
            json!(true),
            json!("text"),
            json!(null),
            json!({ "a": { "b": [1, "two", false] }, "big": 9_007_199_254_740_993_i64 }),
        ] {
            store.put_setting("k", &value).await.unwrap();
            assert_eq!(store.get_setting("k").await.unwrap(), Some(value));
        }

        store.db.drop().await.unwrap();
    }
}
