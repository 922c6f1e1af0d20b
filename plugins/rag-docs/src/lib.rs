//! Corral plugin `rag-docs`: each user keeps collections of text and
//! Markdown documents; before a generation the passages most similar to
//! the user's last message are given to the model, and the answer ends
//! with the sources it was given.
//!
//! Routes (under `/api/plugins/rag-docs/`), all on the caller's own data:
//! - `GET collections`: the collections and how many documents each has;
//! - `GET collections/{c}/documents`: the documents of one;
//! - `POST collections/{c}/documents` with `{"name": "...", "text": "..."}`:
//!   chunks, embeds and stores a document (a name given again replaces
//!   the document);
//! - `DELETE collections/{c}/documents/{id}` and `DELETE collections/{c}`;
//! - `GET settings`, `PUT settings` with `{"collection": "c"}` or
//!   `{"collection": null}`: which collection to search (else the
//!   configured one, else all).

use std::cell::RefCell;

use corral_plugin::prelude::*;
use serde::{Deserialize, Serialize};

pub mod chunk;
pub mod retrieve;
pub mod store;

use store::{Chunk, DocumentMeta, UserSettings};

/// The plugin's settings, with the defaults of plugin.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub top_k: usize,
    pub min_score: f32,
    /// The collection searched when a user has not chosen one (`None`:
    /// all).
    pub collection: Option<String>,
    pub embedding_model: Option<String>,
    pub chunk_size: usize,
    pub chunk_overlap: usize,
    pub max_document_chars: usize,
}

impl Settings {
    pub fn read() -> Settings {
        let text = |key: &str| {
            config::get::<String>(key)
                .ok()
                .flatten()
                .filter(|s| !s.trim().is_empty())
        };
        Settings {
            top_k: config::get_or("top-k", 4usize).clamp(1, 20),
            min_score: config::get_or("min-score", 0.3f32),
            collection: text("collection"),
            embedding_model: text("embedding-model"),
            chunk_size: config::get_or("chunk-size", 500usize).clamp(100, 4000),
            chunk_overlap: config::get_or("chunk-overlap", 100usize),
            max_document_chars: config::get_or("max-document-chars", 200_000usize),
        }
    }
}

/// How many texts go to the embedding model in one call.
const EMBED_BATCH: usize = 16;

fn embed(settings: &Settings, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
    let mut vectors = Vec::with_capacity(texts.len());
    for batch in texts.chunks(EMBED_BATCH) {
        vectors.extend(models::embed_with(
            settings.embedding_model.as_deref(),
            batch,
        )?);
    }
    Ok(vectors)
}

// ------------------------------------------------------------ retrieval

thread_local! {
    // The sources given to the model in this generation (the instance
    // lives from `before_prompt` to the end of the stream).
    static SOURCES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// The collection to search for the caller: their own choice, else the
/// configured one, else all (`None`).
fn search_collection(settings: &Settings) -> Option<String> {
    let chosen = kv::user()
        .get_json::<UserSettings>(store::SETTINGS_KEY)
        .ok()
        .flatten()
        .and_then(|s| s.collection);
    chosen.or_else(|| settings.collection.clone())
}

/// The passages to give the model for `question`, and their sources.
fn retrieve(settings: &Settings, question: &str) -> Result<(Vec<String>, Vec<String>), Error> {
    let collection = search_collection(settings);
    let keys = kv::user().list(&store::data_prefix(collection.as_deref()));
    if keys.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let query = embed(settings, &[question.to_owned()])?
        .pop()
        .ok_or_else(|| Error::new("no vector for the question"))?;
    let mut documents: Vec<(String, Vec<Chunk>)> = Vec::new();
    for key in &keys {
        let Some((collection, id)) = store::split_key(key) else {
            continue;
        };
        let Some(meta) = kv::user().get_json::<DocumentMeta>(&store::meta_key(collection, id))?
        else {
            continue;
        };
        let Some(bytes) = kv::user().get(key) else {
            continue;
        };
        let chunks = store::decode_chunks(&bytes).map_err(Error::new)?;
        documents.push((meta.name, chunks));
    }
    let passages = documents.iter().flat_map(|(name, chunks)| {
        chunks
            .iter()
            .map(move |c| (name.as_str(), c.text.as_str(), c.vector.as_slice()))
    });
    let chosen = retrieve::top_k(&query, passages, settings.top_k, settings.min_score);
    let sources = chosen.iter().map(|c| c.source.to_owned()).collect();
    if chosen.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    Ok((retrieve::context_entries(&chosen), sources))
}

// --------------------------------------------------------------- routes

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    name: String,
    text: String,
}

#[derive(Serialize)]
struct CollectionInfo {
    name: String,
    documents: usize,
}

fn bad(message: &str) -> Response {
    Response::bad_request(message)
}

fn collection_from(captures: &[String]) -> Result<&str, Response> {
    let name = captures[0].as_str();
    store::check_collection(name).map_err(|m| bad(&format!("`collection`: {m}")))?;
    Ok(name)
}

fn list_collections() -> Response {
    let mut collections: Vec<CollectionInfo> = Vec::new();
    for key in kv::user().list(&store::meta_prefix(None)) {
        let Some((collection, _)) = store::split_key(&key) else {
            continue;
        };
        match collections.last_mut() {
            Some(last) if last.name == collection => last.documents += 1,
            _ => collections.push(CollectionInfo {
                name: collection.to_owned(),
                documents: 1,
            }),
        }
    }
    Response::json(200, &serde_json::json!({ "collections": collections }))
}

fn documents_of(collection: &str) -> Vec<DocumentMeta> {
    kv::user()
        .list(&store::meta_prefix(Some(collection)))
        .iter()
        .filter_map(|key| kv::user().get_json::<DocumentMeta>(key).ok().flatten())
        .collect()
}

fn list_documents(collection: &str) -> Response {
    let documents = documents_of(collection);
    if documents.is_empty() {
        return Response::error(
            404,
            "not_found",
            &format!("collection `{collection}` has no documents"),
        );
    }
    Response::json(
        200,
        &serde_json::json!({ "collection": collection, "documents": documents }),
    )
}

fn upload(request: &Request, collection: &str) -> Response {
    let upload: Upload = match request.json() {
        Ok(upload) => upload,
        Err(response) => return response,
    };
    let settings = Settings::read();
    let name = upload.name.trim();
    if name.is_empty()
        || name.chars().count() > store::MAX_NAME
        || name.chars().any(char::is_control)
    {
        return bad(&format!(
            "`name` must be 1 to {} characters without control characters",
            store::MAX_NAME
        ));
    }
    let chars = upload.text.chars().count();
    if chars > settings.max_document_chars {
        return Response::error(
            413,
            "payload_too_large",
            &format!(
                "`text` has {chars} characters; at most {} are accepted",
                settings.max_document_chars
            ),
        );
    }
    let texts = chunk::chunk(&upload.text, settings.chunk_size, settings.chunk_overlap);
    if texts.is_empty() {
        return bad("`text` is empty");
    }
    let vectors = match embed(&settings, &texts) {
        Ok(vectors) => vectors,
        Err(e) => {
            return Response::error(
                503,
                "unavailable",
                &format!("the embedding model failed: {e}"),
            )
        }
    };
    let chunks: Vec<Chunk> = texts
        .into_iter()
        .zip(vectors)
        .map(|(text, vector)| Chunk { text, vector })
        .collect();
    let id = store::document_id(name);
    let meta = DocumentMeta {
        id: id.clone(),
        name: name.to_owned(),
        collection: collection.to_owned(),
        chars,
        chunks: chunks.len(),
    };
    let meta_key = store::meta_key(collection, &id);
    let data_key = store::data_key(collection, &id);
    let replaced = kv::user().get(&meta_key).is_some();
    let stored = kv::user()
        .set(&data_key, store::encode_chunks(&chunks))
        .and_then(|()| kv::user().set_json(&meta_key, &meta));
    if let Err(e) = stored {
        // Leave no half-stored document behind.
        kv::user().delete(&meta_key);
        kv::user().delete(&data_key);
        return Response::error(
            409,
            "limit_reached",
            &format!("the document was not stored: {e}"),
        );
    }
    Response::json(if replaced { 200 } else { 201 }, &meta)
}

fn delete_document(collection: &str, id: &str) -> Response {
    let well_formed = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let existed = well_formed && kv::user().delete(&store::meta_key(collection, id));
    if existed {
        kv::user().delete(&store::data_key(collection, id));
        Response::no_content()
    } else {
        Response::error(
            404,
            "not_found",
            &format!("no document `{id}` in collection `{collection}`"),
        )
    }
}

fn delete_collection(collection: &str) -> Response {
    let metas = kv::user().list(&store::meta_prefix(Some(collection)));
    for key in kv::user().list(&store::data_prefix(Some(collection))) {
        kv::user().delete(&key);
    }
    for key in &metas {
        kv::user().delete(key);
    }
    if metas.is_empty() {
        Response::error(
            404,
            "not_found",
            &format!("collection `{collection}` has no documents"),
        )
    } else {
        Response::no_content()
    }
}

fn settings_response(user: &UserSettings) -> Response {
    let settings = Settings::read();
    let searched = user.collection.clone().or(settings.collection);
    Response::json(
        200,
        &serde_json::json!({ "collection": user.collection, "searched": searched }),
    )
}

fn put_settings(request: &Request) -> Response {
    let user: UserSettings = match request.json() {
        Ok(user) => user,
        Err(response) => return response,
    };
    if let Some(collection) = &user.collection {
        if let Err(m) = store::check_collection(collection) {
            return bad(&format!("`collection`: {m}"));
        }
    }
    if let Err(e) = kv::user().set_json(store::SETTINGS_KEY, &user) {
        return Response::error(409, "limit_reached", e.message());
    }
    settings_response(&user)
}

fn route(request: &Request) -> Response {
    if request.route("GET", "collections").is_some() {
        return list_collections();
    }
    if let Some(c) = request.route("GET", "collections/*/documents") {
        return collection_from(&c).map_or_else(|r| r, list_documents);
    }
    if let Some(c) = request.route("POST", "collections/*/documents") {
        return collection_from(&c).map_or_else(|r| r, |name| upload(request, name));
    }
    if let Some(c) = request.route("DELETE", "collections/*/documents/*") {
        return collection_from(&c).map_or_else(|r| r, |name| delete_document(name, &c[1]));
    }
    if let Some(c) = request.route("DELETE", "collections/*") {
        return collection_from(&c).map_or_else(|r| r, delete_collection);
    }
    if request.route("GET", "settings").is_some() {
        let user = kv::user()
            .get_json::<UserSettings>(store::SETTINGS_KEY)
            .ok()
            .flatten()
            .unwrap_or_default();
        return settings_response(&user);
    }
    if request.route("PUT", "settings").is_some() {
        return put_settings(request);
    }
    Response::not_found()
}

// ---------------------------------------------------------------- hooks

struct RagDocs;

impl Plugin for RagDocs {
    fn before_prompt(_ctx: &Context, prompt: &Prompt) -> Decision {
        let Some(question) = prompt.last_user_message().filter(|q| !q.trim().is_empty()) else {
            return Decision::Continue;
        };
        // Without its passages the answer is still worth having: a failed
        // retrieval lets the generation go on unchanged.
        let Ok((context, sources)) = retrieve(&Settings::read(), question) else {
            return Decision::Continue;
        };
        if context.is_empty() {
            return Decision::Continue;
        }
        SOURCES.with(|s| *s.borrow_mut() = sources);
        let mut change = Modification::new();
        change.context = context;
        Decision::modify(change)
    }

    fn finish(_ctx: &Context, held: String) -> String {
        SOURCES.with(|s| retrieve::with_sources(&held, &s.borrow_mut().split_off(0)))
    }

    fn handle(request: &Request) -> Response {
        route(request)
    }
}

corral_plugin::export!(RagDocs);

#[cfg(test)]
mod tests;
