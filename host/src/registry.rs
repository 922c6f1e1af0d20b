//! The model registry: which models exist, who may use them, and the rules
//! for adding, changing and removing them. Files are fetched by
//! [`crate::download::Downloads`]; the runtime asks this module which model
//! a user means ([`find_usable`]).

use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use corral_sdk::backend::SamplingParams;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::config::Config;
use crate::download::{is_url, redact_source};
use crate::error::{ApiResult, AppError, Validator};
use crate::events::Event;
use crate::inference::manager::LoadSpec;
use crate::inference::upstream;
use crate::model::{new_id, ModelAccess, ModelKind, ModelRecord, ModelStatus, User};
use crate::state::AppState;
use crate::store::StoreError;
use crate::time::now;

/// The backends a model can name on any host (others installed in the
/// backends directory can be named too).
pub const BACKENDS: &[&str] = &["llama", "candle"];
pub const MAX_CONTEXT_LENGTH: u32 = 1 << 20;
pub const MAX_THREADS: u32 = 1024;
pub const MAX_SLOTS: u32 = 64;
pub const DEFAULT_SLOTS: u32 = 4;
const MAX_DESCRIPTION: usize = 2000;
const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
const MAX_SOURCE_BYTES: usize = 2048;
const MAX_ACCESS_USERS: usize = 1000;
/// How deep a directory source is walked.
const MAX_WALK_DEPTH: usize = 8;
/// How many entries a directory source may hold.
const MAX_WALK_ENTRIES: usize = 10_000;

/// The models `user` may use, by name.
pub async fn usable_models(state: &AppState, user: &User) -> ApiResult<Vec<ModelRecord>> {
    let models = state.store.list_models().await?;
    Ok(models.into_iter().filter(|m| m.usable_by(user)).collect())
}

/// The model called `name`, if `user` may use it; "model not found"
/// otherwise, so a user cannot tell a hidden model from a missing one.
pub async fn find_usable(state: &AppState, user: &User, name: &str) -> ApiResult<ModelRecord> {
    state
        .store
        .get_model_by_name(name)
        .await?
        .filter(|m| m.usable_by(user))
        .ok_or(AppError::NotFound("model"))
}

/// The model with id `id`, if `user` may use it.
pub async fn get_usable(state: &AppState, user: &User, id: &str) -> ApiResult<ModelRecord> {
    state
        .store
        .get_model(id)
        .await?
        .filter(|m| m.usable_by(user))
        .ok_or(AppError::NotFound("model"))
}

/// A model to add.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewModel {
    #[schema(example = "gemma-3-270m", pattern = r"^[A-Za-z0-9._:-]{1,100}$")]
    pub name: String,
    /// `llama` or `candle` (or another installed backend) for a model
    /// file; `openai` for a model another server runs behind an
    /// OpenAI-compatible API (vLLM, llama-server, Ollama, a cloud API,
    /// another Corral).
    #[schema(example = "llama", pattern = "^[a-z0-9_]+$")]
    pub backend: String,
    /// Default `chat`.
    pub kind: Option<ModelKind>,
    /// An http(s) URL to download, or an absolute path on the server inside
    /// one of the model folders (setting `model_dirs`): a GGUF file, or a
    /// directory for models made of several files. Downloads may not reach
    /// loopback, link-local or (unless allowed) private addresses. For the
    /// `openai` backend: the upstream's base URL, the part before
    /// `/chat/completions` (e.g. `https://api.openai.com/v1`); loopback and
    /// private upstreams need the settings `upstream_allowed_origins` or
    /// `upstream_allow_private`.
    #[schema(
        example = "https://huggingface.co/unsloth/gemma-3-270m-it-GGUF/resolve/main/gemma-3-270m-it-Q4_K_M.gguf",
        max_length = 2048,
        pattern = "^(https?://|/)"
    )]
    pub source: String,
    /// Expected sha256 of the file (hex); the download fails on a mismatch.
    #[schema(pattern = "^[0-9A-Fa-f]{64}$")]
    pub sha256: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    /// Tokens; 0 or absent = the model's own.
    #[schema(maximum = 1048576)]
    pub context_length: Option<u32>,
    /// 0 or absent = automatic.
    #[schema(maximum = 1024)]
    pub threads: Option<u32>,
    /// Requests served at once, 1 to 64 (default 4).
    #[schema(minimum = 1, maximum = 64)]
    pub slots: Option<u32>,
    /// Default sampling; absent fields take the usual defaults.
    #[schema(value_type = Option<Object>)]
    pub sampling: Option<SamplingParams>,
    /// Overrides the model's own chat template (at most 64 KiB).
    #[schema(max_length = 16384)]
    pub chat_template: Option<String>,
    /// Default: everyone.
    pub access: Option<ModelAccess>,
    /// Remote models only: the model's name at the upstream (default: `name`).
    #[schema(max_length = 200, example = "gpt-4o-mini")]
    pub upstream_model: Option<String>,
    /// Remote models only: the upstream's API key, sent as a bearer
    /// token. It is never shown again.
    #[schema(max_length = 1024, example = "sk-...")]
    pub api_key: Option<String>,
    /// Remote models on `https` only: the SHA-256 fingerprint of the
    /// upstream's certificate (64 hex digits, colons allowed), trusted
    /// instead of the public certificate authorities; for a server with a
    /// self-signed certificate, such as another Corral.
    #[schema(max_length = 200, example = "AB:CD:...")]
    pub tls_fingerprint: Option<String>,
    /// Names of models that answer instead, in order, when this one is
    /// cooling down or fails before its first token (at most 8).
    #[schema(max_items = 8)]
    pub fallbacks: Option<Vec<String>>,
    /// Names of other models that serve the same model (copies on other
    /// nodes, or other servers of it): each request goes to whichever of
    /// this model and its replicas is least busy, and a chat keeps to the
    /// one that holds its cache while that one has a free slot (at most 8).
    #[schema(max_items = 8)]
    pub replicas: Option<Vec<String>>,
    /// The worker node that runs the model (a name from `/api/nodes`);
    /// absent: this host. The node needs a copy of the file, under the
    /// same name, in its models folder.
    #[schema(max_length = 100)]
    pub node: Option<String>,
}

/// Changes to a model; absent fields stay as they are. A new `source` or
/// `sha256` fetches the file again; the current file stays in use until
/// the new one is ready.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelChanges {
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,100}$")]
    pub name: Option<String>,
    /// A file backend cannot become `openai` or the other way round.
    #[schema(pattern = "^[a-z0-9_]+$")]
    pub backend: Option<String>,
    pub kind: Option<ModelKind>,
    /// A new source; the same source again retries a failed download.
    #[schema(max_length = 2048, pattern = "^(https?://|/)")]
    pub source: Option<String>,
    /// `""` removes the expected hash.
    #[schema(pattern = "^([0-9A-Fa-f]{64})?$")]
    pub sha256: Option<String>,
    #[schema(max_length = 2000)]
    pub description: Option<String>,
    #[schema(maximum = 1048576)]
    pub context_length: Option<u32>,
    #[schema(maximum = 1024)]
    pub threads: Option<u32>,
    #[schema(minimum = 1, maximum = 64)]
    pub slots: Option<u32>,
    #[schema(value_type = Option<Object>)]
    pub sampling: Option<SamplingParams>,
    /// `""` goes back to the model's own template (at most 64 KiB).
    #[schema(max_length = 16384)]
    pub chat_template: Option<String>,
    pub access: Option<ModelAccess>,
    /// `""` goes back to the model's own name.
    #[schema(max_length = 200)]
    pub upstream_model: Option<String>,
    /// A new key; `""` removes it. A new base URL on another origin, or a
    /// new `tls_fingerprint`, needs the key given again, so that a key
    /// never travels to a server it was not meant for.
    #[schema(max_length = 1024)]
    pub api_key: Option<String>,
    /// A new pinned certificate fingerprint; `""` trusts the public
    /// certificate authorities again.
    #[schema(max_length = 200)]
    pub tls_fingerprint: Option<String>,
    pub fallbacks: Option<Vec<String>>,
    /// `[]` removes every replica.
    #[schema(max_items = 8)]
    pub replicas: Option<Vec<String>>,
    /// A worker node's name; `""` brings the model back to this host.
    #[schema(max_length = 100)]
    pub node: Option<String>,
}

pub fn valid_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

/// What a local source turned out to be.
struct LocalSource {
    /// With symbolic links resolved.
    path: PathBuf,
    size: u64,
    is_dir: bool,
}

const OUTSIDE_MODEL_DIRS: &str =
    "must be a file or directory inside one of the model folders (setting `model_dirs`)";

/// The model folders that exist, with symbolic links resolved.
async fn canonical_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut roots = Vec::with_capacity(dirs.len());
    for dir in dirs {
        if let Ok(root) = tokio::fs::canonicalize(dir).await {
            roots.push(root);
        }
    }
    roots
}

/// `source` with symbolic links resolved, when it lies inside one of the
/// model folders `dirs` (also resolved). The error says what is wrong
/// without naming a path, and tells a missing file from one outside the
/// folders only inside them: elsewhere it would say which server files
/// exist.
pub(crate) async fn resolve_local(dirs: &[PathBuf], source: &str) -> Result<PathBuf, String> {
    let roots = canonical_dirs(dirs).await;
    let inside = |p: &Path| roots.iter().any(|root| p.starts_with(root));
    match tokio::fs::canonicalize(source).await {
        Ok(path) if inside(&path) => Ok(path),
        Ok(_) => Err(OUTSIDE_MODEL_DIRS.into()),
        Err(_) => {
            let lexical = Path::new(source);
            let named_inside = dirs.iter().any(|d| lexical.starts_with(d)) || inside(lexical);
            if named_inside && !lexical.components().any(|c| c == Component::ParentDir) {
                Err("names no readable file or directory in the model folders".into())
            } else {
                Err(OUTSIDE_MODEL_DIRS.into())
            }
        }
    }
}

/// Checks every field of `m` and, when `check_source`, what a local source
/// is. (An edit that keeps the source does not look at it again: a missing
/// local file must not stop a technician from fixing a description.)
async fn validate(
    state: &AppState,
    m: &mut ModelRecord,
    check_source: bool,
) -> ApiResult<Option<LocalSource>> {
    let mut v = Validator::new();
    v.check(
        valid_name(&m.name),
        "name",
        "must be 1 to 100 characters: letters, digits, `.`, `_`, `:`, `-`",
    );
    // The two Corral ships, and any other library installed in the
    // backends directory.
    let mut known: Vec<String> = BACKENDS.iter().map(|b| (*b).to_owned()).collect();
    known.push(upstream::BACKEND.to_owned());
    known.extend(state.inference.manager.backends().names());
    // A model placed on a worker node may use the node's backends.
    if let Some(report) = m
        .node
        .as_deref()
        .and_then(|node| state.nodes.link(node))
        .and_then(|link| link.health().report)
    {
        known.extend(report.backends);
    }
    known.sort();
    known.dedup();
    v.check(
        known.contains(&m.backend),
        "backend",
        format!("must be one of: {}", known.join(", ")),
    );
    if let Some(sha) = &mut m.sha256 {
        *sha = sha.trim().to_ascii_lowercase();
        v.check(
            sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
            "sha256",
            "must be 64 hexadecimal characters",
        );
    }
    v.check(
        m.description.chars().count() <= MAX_DESCRIPTION,
        "description",
        format!("must be at most {MAX_DESCRIPTION} characters"),
    );
    v.check(
        m.context_length <= MAX_CONTEXT_LENGTH,
        "context_length",
        format!("must be 0 (the model's own) to {MAX_CONTEXT_LENGTH}"),
    );
    v.check(
        m.threads <= MAX_THREADS,
        "threads",
        format!("must be 0 (automatic) to {MAX_THREADS}"),
    );
    v.check(
        (1..=MAX_SLOTS).contains(&m.slots),
        "slots",
        format!("must be 1 to {MAX_SLOTS}"),
    );
    if let Err(message) = m.sampling.validate() {
        v.check(false, "sampling", message);
    }
    if let Some(template) = &m.chat_template {
        v.check(
            template.len() <= MAX_TEMPLATE_BYTES,
            "chat_template",
            format!("must be at most {MAX_TEMPLATE_BYTES} bytes"),
        );
    }
    m.access.roles.sort_by_key(|r| *r as u8);
    m.access.roles.dedup();
    m.access.users.sort();
    m.access.users.dedup();
    v.check(
        m.access.users.len() <= MAX_ACCESS_USERS,
        "access.users",
        format!("may list at most {MAX_ACCESS_USERS} users"),
    );
    m.source = m.source.trim().to_owned();
    check_routes(&mut v, m);
    if m.is_remote() {
        check_remote(&mut v, m);
    } else {
        let source_ok = check_source_syntax(&m.source);
        if let Err(message) = &source_ok {
            v.check(false, "source", message.clone());
        }
        for (field, set) in [
            ("upstream_model", m.upstream_model.is_some()),
            ("api_key", m.api_key.is_some()),
            ("tls_fingerprint", m.tls_fingerprint.is_some()),
        ] {
            v.check(!set, field, "applies only to the `openai` backend");
        }
    }
    if m.node.is_some() {
        v.check(
            !m.is_remote(),
            "node",
            "a remote model runs at its upstream, not on a node",
        );
    }
    v.finish()?;

    for (field, names) in [("fallbacks", &m.fallbacks), ("replicas", &m.replicas)] {
        for name in names {
            if state.store.get_model_by_name(name).await?.is_none() {
                return Err(AppError::field(
                    field,
                    format!("no model is called `{name}`"),
                ));
            }
        }
    }

    for user_id in &m.access.users {
        if state.store.get_user(user_id).await?.is_none() {
            return Err(AppError::field(
                "access.users",
                format!("no account has the id `{user_id}`"),
            ));
        }
    }
    if !check_source {
        return Ok(None);
    }
    if m.is_remote() {
        state
            .inference
            .manager
            .check_upstream_url(&m.source)
            .map_err(|message| AppError::field("source", message))?;
        return Ok(None);
    }
    if is_url(&m.source) {
        state
            .downloads
            .check_source_url(&m.source)
            .map_err(|message| AppError::field("source", message))?;
        return Ok(None);
    }
    let dirs = state.config.model_dirs();
    let path = resolve_local(&dirs, &m.source)
        .await
        .map_err(|message| AppError::field("source", message))?;
    let meta = tokio::fs::metadata(&path).await.map_err(|e| {
        AppError::field(
            "source",
            format!("the file or directory cannot be read: {e}"),
        )
    })?;
    if meta.is_dir() {
        if m.sha256.is_some() {
            return Err(AppError::field(
                "sha256",
                "applies to a single file, not to a directory",
            ));
        }
        let size = dir_size(&path, &canonical_dirs(&dirs).await)
            .await
            .map_err(|message| AppError::field("source", message))?;
        return Ok(Some(LocalSource {
            path,
            size,
            is_dir: true,
        }));
    }
    // Both backends load a single file only as GGUF (a model made of
    // several files is a directory).
    if !meta.is_file() || !crate::download::is_gguf(&path).await {
        return Err(AppError::field(
            "source",
            "is not a GGUF file (it does not start with `GGUF`)",
        ));
    }
    Ok(Some(LocalSource {
        path,
        size: meta.len(),
        is_dir: false,
    }))
}

/// Fallbacks, and replicas, a model may list.
pub const MAX_FALLBACKS: usize = 8;
const MAX_UPSTREAM_MODEL: usize = 200;
const MAX_API_KEY: usize = 1024;

/// Checks the lists of fallbacks and replicas (their existence is looked
/// up later).
fn check_routes(v: &mut Validator, m: &mut ModelRecord) {
    for (field, names) in [
        ("fallbacks", &mut m.fallbacks),
        ("replicas", &mut m.replicas),
    ] {
        for name in names.iter_mut() {
            *name = name.trim().to_owned();
        }
        let mut seen = std::collections::HashSet::new();
        let unique = names.iter().all(|n| seen.insert(n.as_str()));
        v.check(
            names.len() <= MAX_FALLBACKS,
            field,
            format!("may list at most {MAX_FALLBACKS} models"),
        );
        v.check(
            names.iter().all(|n| valid_name(n)),
            field,
            "must be names of models",
        );
        v.check(unique, field, "must not name a model twice");
        v.check(
            !names.contains(&m.name),
            field,
            "must not name the model itself",
        );
    }
    v.check(
        !m.replicas.iter().any(|r| m.fallbacks.contains(r)),
        "replicas",
        "a model is either a replica or a fallback, not both",
    );
}

/// Checks the fields of a remote model (the URL's address is checked
/// later, against the upstream settings).
fn check_remote(v: &mut Validator, m: &mut ModelRecord) {
    let url = reqwest::Url::parse(&m.source);
    let url_ok = match &url {
        Ok(url) => {
            matches!(url.scheme(), "http" | "https")
                && url.host_str().is_some_and(|h| !h.is_empty())
                && url.username().is_empty()
                && url.password().is_none()
                && url.query().is_none()
                && url.fragment().is_none()
                && m.source.len() <= MAX_SOURCE_BYTES
        }
        Err(_) => false,
    };
    v.check(
        url_ok,
        "source",
        "must be the upstream's base URL, like https://api.openai.com/v1 \
         (http or https, no credentials, query or fragment: the key goes in `api_key`)",
    );
    if let Some(name) = &mut m.upstream_model {
        *name = name.trim().to_owned();
        v.check(
            name.chars().count() <= MAX_UPSTREAM_MODEL && !name.chars().any(char::is_control),
            "upstream_model",
            format!(
                "must be at most {MAX_UPSTREAM_MODEL} characters, none of them control characters"
            ),
        );
    }
    if let Some(key) = &m.api_key {
        v.check(
            key.len() <= MAX_API_KEY && key.bytes().all(|b| b.is_ascii_graphic()),
            "api_key",
            format!("must be at most {MAX_API_KEY} visible ASCII characters (no spaces)"),
        );
    }
    if let Some(text) = m.tls_fingerprint.take() {
        match crate::tls::normalize(&text) {
            Ok(pin) => m.tls_fingerprint = pin,
            Err(message) => {
                v.check(false, "tls_fingerprint", message);
                m.tls_fingerprint = Some(text);
            }
        }
        // A pinned certificate is only checked over TLS: a pin on `http`
        // would send the key in the clear.
        v.check(
            m.tls_fingerprint.is_none() || url.as_ref().is_ok_and(|u| u.scheme() == "https"),
            "tls_fingerprint",
            "needs an https base URL: a pinned certificate is only checked over TLS",
        );
    }
    v.check(
        m.kind == ModelKind::Chat,
        "kind",
        "a remote model is a chat model (embeddings run on local models)",
    );
    v.check(
        m.sha256.is_none(),
        "sha256",
        "applies to model files, not to remote models",
    );
    v.check(
        m.chat_template.is_none(),
        "chat_template",
        "a remote model's server applies its own chat template",
    );
}

fn check_source_syntax(source: &str) -> Result<(), String> {
    if source.is_empty() || source.len() > MAX_SOURCE_BYTES {
        return Err(format!(
            "must be an http(s) URL or an absolute path of at most {MAX_SOURCE_BYTES} bytes"
        ));
    }
    if is_url(source) {
        let url = reqwest::Url::parse(source).map_err(|e| format!("is not a valid URL: {e}"))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        return Ok(());
    }
    if source.contains("://") {
        return Err("only http:// and https:// URLs can be downloaded".into());
    }
    let path = Path::new(source);
    if !path.is_absolute() {
        return Err("must be an http(s) URL or an absolute path on the server".into());
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("must not contain `..`".into());
    }
    Ok(())
}

/// Total size of the files under `dir`, walked at most [`MAX_WALK_DEPTH`]
/// levels deep and [`MAX_WALK_ENTRIES`] entries wide. A symbolic link
/// inside must lead into the model folders `roots` (the backend would
/// follow it); linked directories are walked too, within the same bounds.
async fn dir_size(dir: &Path, roots: &[PathBuf]) -> Result<u64, String> {
    let unreadable = |e: std::io::Error| format!("the directory cannot be read: {e}");
    let mut total = 0u64;
    let mut seen = 0usize;
    let mut pending = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = pending.pop() {
        let mut entries = tokio::fs::read_dir(&d).await.map_err(unreadable)?;
        while let Some(entry) = entries.next_entry().await.map_err(unreadable)? {
            seen += 1;
            if seen > MAX_WALK_ENTRIES {
                return Err(format!(
                    "the directory holds more than {MAX_WALK_ENTRIES} entries"
                ));
            }
            let mut path = entry.path();
            let mut kind = entry.file_type().await.map_err(unreadable)?;
            if kind.is_symlink() {
                let target = tokio::fs::canonicalize(&path)
                    .await
                    .map_err(|_| "the directory holds a link that leads nowhere".to_owned())?;
                if !roots.iter().any(|root| target.starts_with(root)) {
                    return Err(
                        "the directory holds a link that leads outside the model folders".into(),
                    );
                }
                kind = tokio::fs::metadata(&target)
                    .await
                    .map_err(unreadable)?
                    .file_type();
                path = target;
            }
            if kind.is_dir() {
                if depth + 1 > MAX_WALK_DEPTH {
                    return Err(format!(
                        "the directory is nested deeper than {MAX_WALK_DEPTH} levels"
                    ));
                }
                pending.push((path, depth + 1));
            } else if kind.is_file() {
                let len = tokio::fs::metadata(&path).await.map_err(unreadable)?.len();
                total = total.saturating_add(len);
            }
        }
    }
    Ok(total)
}

/// Points the record at a local source, or marks it for download. Returns
/// whether a background job must run.
fn prepare_source(m: &mut ModelRecord, local: Option<&LocalSource>) -> bool {
    m.error = None;
    if m.is_remote() {
        m.status = ModelStatus::Ready;
        m.file_path = None;
        m.size_bytes = None;
        return false;
    }
    match local {
        Some(local) if local.is_dir || m.sha256.is_none() => {
            m.status = ModelStatus::Ready;
            m.file_path = Some(local.path.to_string_lossy().into_owned());
            m.size_bytes = Some(local.size);
            false
        }
        _ => {
            m.status = ModelStatus::Downloading;
            true
        }
    }
}

fn name_conflict(e: StoreError) -> AppError {
    match e {
        StoreError::Conflict(_) => {
            AppError::Conflict("a model with this name already exists".into())
        }
        other => other.into(),
    }
}

/// Adds a model and starts fetching its file.
pub async fn create(state: &AppState, req: NewModel) -> ApiResult<ModelRecord> {
    let at = now();
    let mut model = ModelRecord {
        id: new_id(),
        name: req.name.trim().to_owned(),
        backend: req.backend.trim().to_owned(),
        kind: req.kind.unwrap_or_default(),
        source: req.source,
        sha256: req.sha256.filter(|s| !s.trim().is_empty()),
        file_path: None,
        size_bytes: None,
        status: ModelStatus::Downloading,
        error: None,
        description: req.description.unwrap_or_default().trim().to_owned(),
        context_length: req.context_length.unwrap_or(0),
        threads: req.threads.unwrap_or(0),
        slots: req.slots.unwrap_or(DEFAULT_SLOTS),
        sampling: req.sampling.unwrap_or_default(),
        chat_template: req.chat_template.filter(|t| !t.trim().is_empty()),
        access: req.access.unwrap_or_default(),
        created_at: at,
        updated_at: at,
        upstream_model: req.upstream_model.filter(|m| !m.trim().is_empty()),
        api_key: req.api_key.filter(|k| !k.is_empty()),
        tls_fingerprint: req.tls_fingerprint.filter(|f| !f.is_empty()),
        fallbacks: req.fallbacks.unwrap_or_default(),
        replicas: req.replicas.unwrap_or_default(),
        node: req
            .node
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty()),
    };
    let local = validate(state, &mut model, true).await?;
    let fetch = prepare_source(&mut model, local.as_ref());
    {
        let _guard = state.downloads.records.lock().await;
        if let Some(node) = &model.node {
            check_node(state, node).await?;
        }
        state
            .store
            .create_model(&model)
            .await
            .map_err(name_conflict)?;
        if let Some(node) = &model.node {
            if let Err(gone) = check_node(state, node).await {
                // Removed through another host meanwhile (see `check_node`).
                if let Err(e) = state.store.delete_model(&model.id).await {
                    tracing::error!(model = %model.name, error = %e, "could not take back a model placed on a removed node");
                }
                return Err(gone);
            }
        }
    }
    if fetch {
        state.downloads.start(&model).await;
    }
    publish_status(state, &model);
    Ok(model)
}

/// Name the demo model is registered under.
pub const DEMO_MODEL_NAME: &str = "gemma-3-270m";

/// Settings key recording that the demo model was registered once.
const DEMO_REGISTERED: &str = "internal.demo_model_registered";

/// Registers `config.demo_model` as [`DEMO_MODEL_NAME`] (llama backend, for
/// everyone) on the first start that names one, so that a new install can
/// chat at once. Later starts leave the registry alone, also when a
/// technician has removed the model.
pub async fn register_demo_model(state: &AppState) -> anyhow::Result<Option<ModelRecord>> {
    let Some(path) = state.config.demo_model.clone() else {
        return Ok(None);
    };
    if state.store.get_setting(DEMO_REGISTERED).await?.is_some() {
        return Ok(None);
    }
    let path = std::fs::canonicalize(&path)
        .with_context(|| format!("the demo model {} is not readable", path.display()))?;
    let model = match state.store.get_model_by_name(DEMO_MODEL_NAME).await? {
        Some(_) => None,
        None => {
            let sampling = SamplingParams {
                temperature: 0.7,
                max_tokens: 256,
                ..SamplingParams::default()
            };
            let model = create(
                state,
                NewModel {
                    name: DEMO_MODEL_NAME.into(),
                    backend: "llama".into(),
                    kind: None,
                    source: path.to_string_lossy().into_owned(),
                    sha256: None,
                    description: Some(
                        "Demo model: Gemma 3 270M (Q4_K_M), a small base model to try Corral with"
                            .into(),
                    ),
                    context_length: Some(4096),
                    threads: None,
                    slots: None,
                    sampling: Some(sampling),
                    chat_template: None,
                    access: None,
                    upstream_model: None,
                    api_key: None,
                    tls_fingerprint: None,
                    fallbacks: None,
                    replicas: None,
                    node: None,
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("registering the demo model: {}", e.body().message))?;
            Some(model)
        }
    };
    state
        .store
        .put_setting(DEMO_REGISTERED, &serde_json::Value::Bool(true))
        .await?;
    Ok(model)
}

/// Refuses a worker node that is not registered. Checked under the records
/// lock, which is also held while a node is removed through this host, right
/// before a placement is written, and again right after it: a node removed
/// through another host sharing the store checks the models after its own
/// write, so that of two such writes at least one sees the other and is
/// undone (both may be), and no model is left on a node that is gone.
async fn check_node(state: &AppState, node: &str) -> ApiResult<()> {
    let known = crate::inference::nodes::load_records(state.store.as_ref())
        .await?
        .iter()
        .any(|n| n.name == node);
    if known {
        Ok(())
    } else {
        Err(AppError::field(
            "node",
            format!("no worker node is called `{node}`"),
        ))
    }
}

/// Times an edit is checked again when the record changed meanwhile.
const UPDATE_TRIES: usize = 3;

/// Applies `changes`; returns the record before and after. The edit is
/// checked (which may walk a directory source) without holding the
/// records lock, then written only if the record is still as it was read.
pub async fn update(
    state: &AppState,
    id: &str,
    changes: ModelChanges,
) -> ApiResult<(ModelRecord, ModelRecord)> {
    for _ in 0..UPDATE_TRIES {
        let before = state
            .store
            .get_model(id)
            .await?
            .ok_or(AppError::NotFound("model"))?;
        let (model, refetch, local) = apply_changes(state, &before, changes.clone()).await?;
        let guard = state.downloads.records.lock().await;
        let current = state
            .store
            .get_model(id)
            .await?
            .ok_or(AppError::NotFound("model"))?;
        if current != before {
            continue;
        }
        return write_update(state, before, model, refetch, local, guard).await;
    }
    Err(AppError::Conflict(
        "the model kept changing while the edit was checked; try again".into(),
    ))
}

/// `before` with `changes` applied and checked; whether the file must be
/// fetched again, and what a new local source is.
async fn apply_changes(
    state: &AppState,
    before: &ModelRecord,
    changes: ModelChanges,
) -> ApiResult<(ModelRecord, bool, Option<LocalSource>)> {
    let mut model = before.clone();
    let mut refetch = false;
    if let Some(name) = changes.name {
        model.name = name.trim().to_owned();
    }
    if let Some(backend) = changes.backend {
        model.backend = backend.trim().to_owned();
        if model.is_remote() != before.is_remote() {
            return Err(AppError::field(
                "backend",
                "a model file cannot become a remote model or the other way round; add a new model",
            ));
        }
    }
    if let Some(kind) = changes.kind {
        model.kind = kind;
    }
    if let Some(mut source) = changes.source {
        // The source as the API shows it (credentials redacted) means the
        // stored one.
        if source.trim() == redact_source(&before.source) {
            source = before.source.clone();
        }
        refetch = source.trim() != before.source || before.status == ModelStatus::Failed;
        model.source = source;
    }
    if let Some(sha) = changes.sha256 {
        let sha = Some(sha.trim().to_ascii_lowercase()).filter(|s| !s.is_empty());
        refetch |= sha != before.sha256;
        model.sha256 = sha;
    }
    if let Some(description) = changes.description {
        model.description = description.trim().to_owned();
    }
    if let Some(n) = changes.context_length {
        model.context_length = n;
    }
    if let Some(n) = changes.threads {
        model.threads = n;
    }
    if let Some(n) = changes.slots {
        model.slots = n;
    }
    if let Some(sampling) = changes.sampling {
        model.sampling = sampling;
    }
    if let Some(template) = changes.chat_template {
        model.chat_template = Some(template).filter(|t| !t.trim().is_empty());
    }
    if let Some(access) = changes.access {
        model.access = access;
    }
    if let Some(name) = changes.upstream_model {
        model.upstream_model = Some(name).filter(|m| !m.trim().is_empty());
    }
    if let Some(fallbacks) = changes.fallbacks {
        model.fallbacks = fallbacks;
    }
    if let Some(replicas) = changes.replicas {
        model.replicas = replicas;
    }
    if let Some(node) = changes.node {
        model.node = Some(node.trim().to_owned()).filter(|n| !n.is_empty());
    }
    let new_key = changes.api_key.is_some();
    if let Some(key) = changes.api_key {
        model.api_key = Some(key).filter(|k| !k.is_empty());
    }
    if let Some(pin) = changes.tls_fingerprint {
        model.tls_fingerprint = Some(pin).filter(|f| !f.is_empty());
    }
    if model.is_remote() && !new_key && model.api_key.is_some() {
        let origin = |s: &str| reqwest::Url::parse(s.trim()).ok().map(|u| u.origin());
        if origin(&model.source) != origin(&before.source) {
            return Err(AppError::field(
                "api_key",
                "must be given again when the base URL moves to another server",
            ));
        }
        // A malformed new fingerprint is left for `validate` to name; a
        // stored one that cannot be read (written behind the API) counts
        // as changed.
        let pin = |p: &Option<String>| {
            p.as_deref()
                .map(crate::tls::normalize)
                .transpose()
                .map(Option::flatten)
        };
        let changed = match (pin(&model.tls_fingerprint), pin(&before.tls_fingerprint)) {
            (Err(_), _) => false,
            (Ok(new), Ok(old)) => new != old,
            (Ok(_), Err(_)) => true,
        };
        if changed {
            return Err(AppError::field(
                "api_key",
                "must be given again when the pinned certificate changes",
            ));
        }
    }
    let local = validate(state, &mut model, refetch).await?;
    // Trimming or lowercasing may have turned a "change" into none; a
    // remote model has nothing to fetch.
    refetch = refetch
        && !model.is_remote()
        && (model.source != before.source
            || model.sha256 != before.sha256
            || before.status == ModelStatus::Failed);
    Ok((model, refetch, local))
}

/// Takes back an edit that placed a model on a node removed meanwhile
/// through another host (see `check_node`): the record goes back to
/// `before`, unless another host changed it since `written` was stored (or
/// `before` cannot be written again); then only its node goes back. Should
/// that node be gone by now too, the model comes back to this host.
async fn undo_placement(state: &AppState, before: &ModelRecord, written: &ModelRecord) {
    let undo = async {
        let Some(stored) = state.store.get_model(&written.id).await? else {
            return Ok(());
        };
        if stored.node != written.node {
            // Moved on by another edit: that one stands.
            return Ok(());
        }
        let mut back = before.clone();
        if stored != *written || state.store.update_model(before).await.is_err() {
            back = ModelRecord {
                node: before.node.clone(),
                ..stored
            };
            state.store.update_model(&back).await?;
        }
        if let Some(old) = &back.node {
            if check_node(state, old).await.is_err() {
                back.node = None;
                state.store.update_model(&back).await?;
            }
        }
        Ok::<(), AppError>(())
    };
    if let Err(e) = undo.await {
        tracing::error!(model = %written.name, error = %e.body().message, "could not take back a model placed on a removed node");
    }
}

/// Writes a checked edit; `guard` is the records lock, held since the
/// record was last read.
async fn write_update(
    state: &AppState,
    before: ModelRecord,
    mut model: ModelRecord,
    refetch: bool,
    local: Option<LocalSource>,
    guard: tokio::sync::MutexGuard<'_, ()>,
) -> ApiResult<(ModelRecord, ModelRecord)> {
    // A source that needs no fetch stops the download of the old one, once
    // the edit stands. (One that does keeps `file_path` and `size_bytes`:
    // the old file serves until the new one is ready.)
    let stop_download = refetch && !prepare_source(&mut model, local.as_ref());
    if model == before {
        if stop_download {
            state.downloads.cancel(&model.id).await;
        }
        return Ok((before, model));
    }
    let new_node = model.node.clone().filter(|_| model.node != before.node);
    if let Some(node) = &new_node {
        check_node(state, node).await?;
    }
    model.updated_at = now();
    state
        .store
        .update_model(&model)
        .await
        .map_err(name_conflict)?;
    if let Some(node) = &new_node {
        if let Err(gone) = check_node(state, node).await {
            undo_placement(state, &before, &model).await;
            return Err(gone);
        }
    }
    if stop_download {
        state.downloads.cancel(&model.id).await;
    }
    drop(guard);
    if before.name != model.name {
        rename_fallback(state, &before.name, Some(&model.name)).await;
    }
    if load_changed(&before, &model) {
        state.inference.manager.forget_health(&model.id);
        if state.inference.manager.unload(&model.id) {
            tracing::info!(model = %model.name, "unloaded: its file or load parameters changed");
        }
    }
    if refetch {
        if model.status == ModelStatus::Downloading {
            state.downloads.start(&model).await;
        } else {
            state.downloads.remove_files(&model.id).await;
        }
        publish_status(state, &model);
    }
    Ok((before, model))
}

/// Removes a model: stops its download and deletes the files the host
/// downloaded for it (a local source is left alone). Chats that used it
/// keep its name.
pub async fn delete(state: &AppState, id: &str) -> ApiResult<ModelRecord> {
    let model = state
        .store
        .get_model(id)
        .await?
        .ok_or(AppError::NotFound("model"))?;
    {
        // No job can start between the cancel and the removal.
        let _starting = state.downloads.starting.lock().await;
        state.downloads.cancel(id).await;
        let _guard = state.downloads.records.lock().await;
        if !state.store.delete_model(id).await? {
            return Err(AppError::NotFound("model"));
        }
    }
    state.inference.manager.unload(id);
    state.inference.manager.forget_health(id);
    state.downloads.remove_files(id).await;
    rename_fallback(state, &model.name, None).await;
    state.events.publish(Event::ModelDeleted {
        model_id: id.to_owned(),
    });
    Ok(model)
}

/// Follows a model's new name (or its removal, with `None`) in the
/// fallbacks and replicas of every other model, so that they keep naming
/// the same model (or none). Each record is read again under the records
/// lock, so that an edit made meanwhile is kept.
async fn rename_fallback(state: &AppState, old: &str, new: Option<&str>) {
    let names = |m: &ModelRecord| m.fallbacks.iter().chain(&m.replicas).any(|f| f == old);
    let naming: Vec<String> = match state.store.list_models().await {
        Ok(models) => models
            .into_iter()
            .filter(|m| names(m))
            .map(|m| m.id)
            .collect(),
        Err(err) => {
            tracing::warn!(%err, "could not update the fallbacks and replicas that name `{old}`");
            return;
        }
    };
    let follow = |list: &[String], own: &str| -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        list.iter()
            .filter_map(|f| if f == old { new } else { Some(f.as_str()) })
            .filter(|f| *f != own && seen.insert(*f))
            .map(str::to_owned)
            .collect()
    };
    for id in naming {
        let _guard = state.downloads.records.lock().await;
        let Ok(Some(mut model)) = state.store.get_model(&id).await else {
            continue;
        };
        let fallbacks = follow(&model.fallbacks, &model.name);
        let replicas = follow(&model.replicas, &model.name);
        if fallbacks == model.fallbacks && replicas == model.replicas {
            continue;
        }
        model.fallbacks = fallbacks;
        model.replicas = replicas;
        model.updated_at = now();
        if let Err(err) = state.store.update_model(&model).await {
            tracing::warn!(%err, model = %model.name, "could not update its fallbacks and replicas");
        }
    }
}

/// Whether an edit changes how the model loads (its file, backend or load
/// parameters): a loaded copy is then stale.
fn load_changed(before: &ModelRecord, after: &ModelRecord) -> bool {
    before.file_path != after.file_path
        || before.source != after.source
        || before.backend != after.backend
        || before.kind != after.kind
        || before.context_length != after.context_length
        || before.threads != after.threads
        || before.slots != after.slots
        || before.chat_template != after.chat_template
        || before.upstream_model != after.upstream_model
        || before.api_key != after.api_key
        || before.tls_fingerprint != after.tls_fingerprint
        || before.node != after.node
}

fn publish_status(state: &AppState, model: &ModelRecord) {
    state.events.publish(Event::ModelStatus {
        model_id: model.id.clone(),
        status: model.status,
        error: model.error.clone(),
    });
}

/// What the runtime needs to load a registered model. Its file must still
/// lie where model files may (see [`crate::config::Config::loadable_model_paths`]):
/// a record written before the model folders were narrowed is not loaded.
pub async fn load_spec(config: &Config, record: &ModelRecord) -> Result<LoadSpec, AppError> {
    if record.is_remote() {
        return Ok(LoadSpec {
            key: record.id.clone(),
            name: record.name.clone(),
            backend: record.backend.clone(),
            request: corral_sdk::backend::LoadRequest {
                path: String::new(),
                context_length: record.context_length,
                threads: 0,
                slots: record.slots.max(1),
                chat_template: None,
                prompt_cache: false,
            },
            file_bytes: 0,
            upstream: Some(upstream::Target {
                base_url: record.source.clone(),
                api_key: record.api_key.clone(),
                pin: record
                    .tls_fingerprint
                    .as_deref()
                    .map(crate::tls::parse)
                    .transpose()
                    .map_err(|e| {
                        AppError::Unavailable(format!(
                            "model `{}` is unavailable: its pinned certificate fingerprint {e}",
                            record.name
                        ))
                    })?,
                model: record
                    .upstream_model
                    .clone()
                    .unwrap_or_else(|| record.name.clone()),
            }),
            node: None,
        });
    }
    let path = record
        .file_path
        .as_deref()
        .ok_or_else(|| match &record.error {
            Some(error) if record.status == ModelStatus::Failed => {
                AppError::Unavailable(format!("model `{}` is unavailable: {error}", record.name))
            }
            _ => AppError::Unavailable(format!("model `{}` is not downloaded yet", record.name)),
        })?;
    if let Some(node) = &record.node {
        // The node finds the file of this name in its own models folder.
        let file = std::path::Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(LoadSpec {
            key: record.id.clone(),
            name: record.name.clone(),
            backend: record.backend.clone(),
            request: corral_sdk::backend::LoadRequest {
                path: file,
                context_length: record.context_length,
                threads: record.threads,
                slots: record.slots.max(1),
                chat_template: record.chat_template.clone(),
                prompt_cache: true,
            },
            file_bytes: record.size_bytes.unwrap_or(0),
            upstream: None,
            node: Some(node.clone()),
        });
    }
    let path = resolve_local(&config.loadable_model_paths(), path)
        .await
        .map_err(|_| {
            AppError::Unavailable(format!(
                "model `{}` cannot be loaded: its file is missing or lies outside the model \
                 folders (setting `model_dirs`)",
                record.name
            ))
        })?
        .to_string_lossy()
        .into_owned();
    Ok(LoadSpec {
        key: record.id.clone(),
        name: record.name.clone(),
        backend: record.backend.clone(),
        request: corral_sdk::backend::LoadRequest {
            path,
            context_length: record.context_length,
            threads: record.threads,
            slots: record.slots.max(1),
            chat_template: record.chat_template.clone(),
            prompt_cache: true,
        },
        file_bytes: record.size_bytes.unwrap_or(0),
        upstream: None,
        node: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sources() {
        assert!(valid_name("gemma-3-270m:Q4_K_M.v1"));
        assert!(!valid_name(""));
        assert!(!valid_name("has space"));
        assert!(!valid_name(&"x".repeat(101)));
        assert!(check_source_syntax("https://huggingface.co/a/b/resolve/main/c.gguf").is_ok());
        assert!(check_source_syntax("http://127.0.0.1:9/x").is_ok());
        assert!(check_source_syntax("ftp://x/y").is_err());
        assert!(check_source_syntax("relative/path.gguf").is_err());
        assert!(check_source_syntax("https://").is_err());
        assert!(check_source_syntax("/abs/path.gguf").is_ok());
    }
}

#[cfg(test)]
mod load_spec_tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn record(path: &Path) -> ModelRecord {
        let at = chrono::Utc::now();
        ModelRecord {
            id: "m1".into(),
            name: "tiny".into(),
            backend: "llama".into(),
            kind: ModelKind::default(),
            source: "https://example.com/tiny.gguf".into(),
            sha256: None,
            file_path: Some(path.to_string_lossy().into_owned()),
            size_bytes: Some(4),
            status: ModelStatus::Ready,
            error: None,
            description: String::new(),
            context_length: 0,
            threads: 0,
            slots: 1,
            sampling: Default::default(),
            chat_template: None,
            access: Default::default(),
            created_at: at,
            updated_at: at,
            upstream_model: None,
            api_key: None,
            tls_fingerprint: None,
            fallbacks: Vec::new(),
            replicas: Vec::new(),
            node: None,
        }
    }

    #[tokio::test]
    async fn a_model_file_outside_the_model_folders_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (allowed, elsewhere, downloads) = (
            root.join("allowed"),
            root.join("elsewhere"),
            root.join("data").join("models").join("m1"),
        );
        for folder in [&allowed, &elsewhere, &downloads] {
            std::fs::create_dir_all(folder).unwrap();
            std::fs::write(folder.join("tiny.gguf"), b"GGUF").unwrap();
        }
        let config = |dirs: Vec<PathBuf>| Config {
            data_dir: root.join("data"),
            model_dirs: Some(dirs),
            ..Config::default()
        };
        let wide = config(vec![allowed.clone()]);
        for ok in [allowed.join("tiny.gguf"), downloads.join("tiny.gguf")] {
            let spec = load_spec(&wide, &record(&ok)).await.expect("loadable");
            assert_eq!(spec.request.path, ok.to_string_lossy());
        }
        let linked = allowed.join("link.gguf");
        std::os::unix::fs::symlink(elsewhere.join("tiny.gguf"), &linked).unwrap();
        let narrowed = config(vec![elsewhere.join("none")]);
        for (config, path) in [
            (&wide, elsewhere.join("tiny.gguf")),
            (&wide, linked),
            (
                &wide,
                allowed.join("..").join("elsewhere").join("tiny.gguf"),
            ),
            (&narrowed, allowed.join("tiny.gguf")),
        ] {
            let err = load_spec(config, &record(&path)).await.unwrap_err();
            assert_eq!(err.status().as_u16(), 503, "{path:?}");
            assert!(!err.body().message.contains(root.to_str().unwrap()));
        }
    }
}
