//! Shared helpers of the HTTP-level tests: a fresh SQLite store in a
//! temporary directory behind the real application router, accounts, and
//! small request helpers. Requests go through `tower::ServiceExt::oneshot`;
//! no socket is opened.
//!
//! Included by each test file with `#[path = "support.rs"] mod support;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use corral_host::accounts::create_account;
use corral_host::config::Config;
use corral_host::inference::backends::BackendSet;
use corral_host::inference::manager::{ManagerLimits, ModelManager};
use corral_host::inference::scheduler::{QueueLimits, Scheduler};
use corral_host::inference::Inference;
use corral_host::model::{ModelAccess, ModelKind, ModelRecord, ModelStatus, User};
use corral_host::state::AppState;
use corral_host::store::sqlite::SqliteStore;
use corral_host::store::Store;
use corral_sdk::Role;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt;

/// The password of every account the helpers create.
pub const PASSWORD: &str = "correct horse battery";

/// A signed-in account.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub access: String,
    pub refresh: String,
}

/// A whole response.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The body as JSON: `Null` when empty, a JSON string when not JSON.
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: header::HeaderName) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// The application over a fresh store.
pub struct TestApp {
    pub state: AppState,
    pub app: Router,
    pub store: Arc<dyn Store>,
    _dir: TempDir,
}

/// An argon2 hash of [`PASSWORD`], computed once per test binary, for
/// accounts inserted straight into the store.
fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| corral_host::auth::hash_password(PASSWORD).expect("hashing"))
        .clone()
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_config(Config::default()).await
    }

    pub async fn with_config(mut config: Config) -> Self {
        // These tests register local models from wherever the machine
        // keeps them; a test of the model folders sets its own.
        config
            .model_dirs
            .get_or_insert_with(|| vec![PathBuf::from("/")]);
        // A test executable cannot be started as `corral worker`, so these
        // tests run their models inside the process; the end-to-end tests
        // run the real binary with its workers.
        config.model_workers = false;
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("corral.db");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&path)
                .unwrap_or_else(|e| panic!("opening {}: {e:#}", path.display())),
        );
        let state = AppState::new(store.clone(), config)
            .await
            .expect("application state");
        let app = corral_host::server::app(state.clone());
        TestApp {
            state,
            app,
            store,
            _dir: dir,
        }
    }

    /// The same application with `backends` in place of the backend
    /// libraries (tests link fake backends in), under the configured
    /// limits. Call before anything is loaded.
    pub fn with_backends(mut self, backends: BackendSet) -> Self {
        let config = self.state.config.clone();
        self.state.inference = Inference::new(
            ModelManager::new(
                Arc::new(backends),
                ManagerLimits {
                    idle_unload: std::time::Duration::from_secs(config.idle_unload_secs),
                    memory_budget: config.memory_budget_mb * 1024 * 1024,
                    max_loaded: config.max_loaded_models,
                },
            ),
            Scheduler::new(QueueLimits {
                max_waiting: config.queue_max_waiting,
                per_user: config.per_user_generations,
            }),
        );
        self.app = corral_host::server::app(self.state.clone());
        self
    }

    /// Creates an account with [`PASSWORD`] the way `corral admin create`
    /// does (argon2: slow-ish, so once per account and test).
    pub async fn create(&self, username: &str, role: Role) -> User {
        create_account(
            self.store.as_ref(),
            username,
            None,
            role,
            PASSWORD.to_owned(),
        )
        .await
        .unwrap_or_else(|e| panic!("creating {username}: {e:?}"))
    }

    /// Inserts an account straight into the store, reusing one password
    /// hash (fast; for throwaway fixtures).
    pub async fn insert_user(&self, username: &str, role: Role) -> User {
        let at = corral_host::time::now();
        let user = User {
            id: corral_host::model::new_id(),
            username: username.to_owned(),
            display_name: username.to_owned(),
            role,
            disabled: false,
            password_hash: password_hash(),
            token_version: 0,
            created_at: at,
            updated_at: at,
            last_login_at: None,
        };
        self.store.create_user(&user).await.expect("inserting user");
        user
    }

    /// Tokens for `user` issued directly (no API call, no argon2).
    pub async fn issue(&self, user: &User) -> Account {
        let tokens = corral_host::api::auth::issue_tokens(&self.state, user, None)
            .await
            .expect("issuing tokens");
        Account {
            id: user.id.clone(),
            username: user.username.clone(),
            role: user.role,
            access: tokens.access_token,
            refresh: tokens.refresh_token.expect("a refresh token"),
        }
    }

    /// Signs in through the API; panics unless it answers 200.
    pub async fn login(&self, username: &str, password: &str) -> Account {
        let (status, body) = self
            .post(
                "/api/auth/login",
                None,
                &json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login of {username}: {body}");
        account_from_tokens(&body)
    }

    /// Creates an account and signs in through the API.
    pub async fn signed_in(&self, username: &str, role: Role) -> Account {
        self.create(username, role).await;
        self.login(username, PASSWORD).await
    }

    /// Sends a request as it is.
    pub async fn send(&self, request: Request<Body>) -> Resp {
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("reading the body")
            .to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Sends a request whose success answer is an endless stream: the body
    /// is read only when the status is not a success (then it is an error).
    pub async fn call_stream(&self, method: Method, path: &str, token: Option<&str>) -> Resp {
        let response = self
            .app
            .clone()
            .oneshot(request(method, path, token, None))
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = if status.is_success() {
            Bytes::new()
        } else {
            response
                .into_body()
                .collect()
                .await
                .expect("reading the body")
                .to_bytes()
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    /// A request with an optional bearer token and optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        self.send(request(method, path, token, body)).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let r = self.call(Method::GET, path, token, None).await;
        (r.status, r.json())
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let r = self.call(Method::POST, path, token, Some(body)).await;
        (r.status, r.json())
    }

    pub async fn patch(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Value) {
        let r = self.call(Method::PATCH, path, token, Some(body)).await;
        (r.status, r.json())
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let r = self.call(Method::DELETE, path, token, None).await;
        (r.status, r.json())
    }

    /// Stores a ready `gemma-3-270m` (the model [`Self::chat`] names) whose
    /// file is missing: enough for everything checked before a model runs.
    pub async fn missing_chat_model(&self) {
        let model = model_record("gemma-3-270m", "llama", "/nonexistent/fixture.gguf");
        self.store.create_model(&model).await.expect("model");
    }

    /// Creates a chat of the token's owner; returns it.
    pub async fn chat(&self, token: &str, title: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/chats",
                Some(token),
                &json!({"model": "gemma-3-270m", "title": title}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "creating chat: {body}");
        body
    }

    /// Opens a ticket of the token's owner; returns it.
    pub async fn ticket(&self, token: &str, subject: &str, category: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/tickets",
                Some(token),
                &json!({"subject": subject, "body": "Details of the problem.", "category": category}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "opening ticket: {body}");
        body
    }
}

/// Builds a request; a body is sent as `application/json`.
pub fn request(
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .expect("valid request")
}

/// The account in a `TokenResponse`.
pub fn account_from_tokens(body: &Value) -> Account {
    let s = |v: &Value| {
        v.as_str()
            .unwrap_or_else(|| panic!("not a token response: {body}"))
            .to_owned()
    };
    Account {
        id: s(&body["user"]["id"]),
        username: s(&body["user"]["username"]),
        role: serde_json::from_value(body["user"]["role"].clone()).expect("a role"),
        access: s(&body["access_token"]),
        refresh: s(&body["refresh_token"]),
    }
}

/// Asserts the shape of an error answer: `{code, message}` with `code`.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "unexpected status; body: {body}");
    assert_eq!(
        body["code"], want_code,
        "unexpected error code; body: {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
}

/// The `items` of a page.
pub fn items(body: &Value) -> &Vec<Value> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {body}"))
}

/// One field of each item of a page.
pub fn field_of_items(body: &Value, field: &str) -> Vec<Value> {
    items(body).iter().map(|i| i[field].clone()).collect()
}

/// The file name of backend library `name` (`libcorral_llama.so` on Linux).
pub fn backend_file(name: &str) -> String {
    format!(
        "{}corral_{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The directory with the freshest build of every backend library in
/// `names`: `cargo test` leaves them in `target/<profile>/deps` (next to
/// the test executable), `cargo build` in `target/<profile>` (its parent).
/// Panics with what to build when none has them all.
pub fn backends_dir(names: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(Path::to_path_buf)
        .collect();
    if let Some(dir) = std::env::var_os("CORRAL_BACKENDS_DIR") {
        candidates.insert(0, PathBuf::from(dir));
    }
    let newest = |dir: &Path| {
        names
            .iter()
            .map(|n| std::fs::metadata(dir.join(backend_file(n))).and_then(|m| m.modified()))
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .and_then(|times| times.into_iter().min())
    };
    candidates
        .iter()
        .filter_map(|dir| newest(dir).map(|t| (t, dir.clone())))
        .max_by_key(|(t, _)| *t)
        .map(|(_, dir)| dir)
        .unwrap_or_else(|| {
            panic!(
                "no directory among {candidates:?} holds the backend libraries {names:?}: \
                 build them with `cargo build -p corral-llama -p corral-candle` (or run \
                 `cargo test --workspace`), or set CORRAL_BACKENDS_DIR"
            )
        })
}

/// The path in environment variable `var`, which names a model or tool a
/// test needs (`how` says how to get it).
///
/// Missing, the test fails saying how to get it, unless
/// `CORRAL_ALLOW_SKIP=1`: then it returns `None` and writes
/// `SKIPPED <test>: <reason>` to stderr, past the test harness's output
/// capture, so that `scripts/test.sh` counts and lists the skipped tests
/// (cargo itself would count the test as passed).
pub fn model_from_env(var: &str, how: &str) -> Option<PathBuf> {
    match std::env::var(var) {
        Ok(path) if !path.is_empty() => {
            assert!(
                Path::new(&path).exists(),
                "{var} names {path}, which does not exist; {how}"
            );
            Some(PathBuf::from(path))
        }
        _ => {
            skip_or_fail(&format!("{var} is not set; {how}"));
            None
        }
    }
}

/// Fails the running test with `reason`, or with `CORRAL_ALLOW_SKIP=1`
/// reports it skipped (see [`model_from_env`]); the caller returns then.
#[track_caller]
pub fn skip_or_fail(reason: &str) {
    if std::env::var("CORRAL_ALLOW_SKIP").is_ok_and(|v| v == "1") {
        use std::io::Write;
        // libtest names each test's thread after the test.
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("a test");
        let _ = writeln!(std::io::stderr(), "\nSKIPPED {test}: {reason}");
    } else {
        panic!("{reason} (set CORRAL_ALLOW_SKIP=1 to report this test skipped instead)");
    }
}

/// How to get the demo model, for [`model_from_env`].
pub const DEMO_MODEL_HOW: &str = "set it to the .gguf that `scripts/fetch-demo-model.sh` \
     prints last: export CORRAL_DEMO_MODEL=\"$(scripts/fetch-demo-model.sh | tail -1)\"";

/// How to get the embedding model, for [`model_from_env`].
pub const EMBED_MODEL_HOW: &str = "set it to the directory that \
     `scripts/fetch-embed-model.sh` prints last: \
     export CORRAL_EMBED_MODEL_DIR=\"$(scripts/fetch-embed-model.sh | tail -1)\"";

/// A chat model's record, ready, with its file at `file`, usable by
/// everyone and with one slot; a test changes what it needs with `..`.
pub fn model_record(name: &str, backend: &str, file: &str) -> ModelRecord {
    let at = corral_host::time::now();
    ModelRecord {
        id: corral_host::model::new_id(),
        name: name.to_owned(),
        backend: backend.to_owned(),
        kind: ModelKind::Chat,
        source: file.to_owned(),
        sha256: None,
        file_path: Some(file.to_owned()),
        size_bytes: Some(1),
        status: ModelStatus::Ready,
        error: None,
        description: String::new(),
        context_length: 0,
        threads: 0,
        slots: 1,
        sampling: Default::default(),
        chat_template: None,
        access: ModelAccess::default(),
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
