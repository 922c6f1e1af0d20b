//! The role matrix: every operation of the committed OpenAPI document,
//! called as anonymous, user, admin and technician, with the status each
//! must get. An operation of the spec without a row here fails the test, as
//! does a row for an operation the spec does not have.

#[path = "support.rs"]
mod support;

use std::collections::BTreeSet;

use axum::http::Method;
use corral_host::model::{ModelAccess, ModelRecord};
use corral_sdk::Role;
use serde_json::{json, Value};
use support::{Account, TestApp, PASSWORD};

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");

/// Who makes the calls, in the order of [`Row::expect`].
const CALLERS: [&str; 4] = ["anonymous", "user", "admin", "technician"];
const ROLES: [Option<Role>; 4] = [
    None,
    Some(Role::User),
    Some(Role::Admin),
    Some(Role::Technician),
];

/// What fills `{id}`. "Own" is the caller's (for anonymous: another
/// user's); "other" belongs to another user. Each call gets a fresh one.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Id {
    None,
    OwnKey,
    OtherKey,
    /// Another user's account id (not changed by the call).
    SomeUser,
    /// A throwaway account (the call may change it).
    FreshUser,
    OwnChat,
    OtherChat,
    OwnTicket,
    OtherTicket,
    /// Another user's ticket, by its number.
    OtherTicketNumber,
    /// A ready model everyone may use (the call may change it).
    Model,
    /// A ready model no one but technicians may use.
    TechnicianModel,
    /// A plugin id that is not installed.
    NoSuchPlugin,
}

/// The request body.
#[derive(Debug, Clone, Copy)]
enum Body {
    None,
    Json(&'static str),
    /// Registration with a fresh username.
    Register,
    /// Valid credentials of an existing account.
    Login,
    /// A fresh, valid refresh token.
    RefreshToken,
    /// A new account with a fresh username.
    NewUser,
    /// The caller's current password and a new one.
    ChangePassword,
}

/// Whose token is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    /// The caller's long-lived account.
    Main,
    /// A throwaway account of the caller's role (for calls that would
    /// spoil the main account's tokens).
    Fresh,
}

struct Row {
    method: &'static str,
    path: &'static str,
    case: &'static str,
    /// Anonymous, user, admin, technician.
    expect: [u16; 4],
    id: Id,
    body: Body,
    who: Who,
    /// A success answer is an endless stream: only its head is read.
    stream: bool,
}

const ALL_200: [u16; 4] = [200, 200, 200, 200];
const SIGNED_200: [u16; 4] = [401, 200, 200, 200];
const SIGNED_201: [u16; 4] = [401, 201, 201, 201];
const SIGNED_204: [u16; 4] = [401, 204, 204, 204];
const SIGNED_404: [u16; 4] = [401, 404, 404, 404];
const STAFF_200: [u16; 4] = [401, 403, 200, 200];
const STAFF_201: [u16; 4] = [401, 403, 201, 201];
const STAFF_204: [u16; 4] = [401, 403, 204, 204];
const TECH_200: [u16; 4] = [401, 403, 403, 200];
const TECH_202: [u16; 4] = [401, 403, 403, 202];
const TECH_204: [u16; 4] = [401, 403, 403, 204];
/// A model only technicians may use: hidden from everyone else.
const TECH_200_NOT_FOUND: [u16; 4] = [401, 404, 404, 200];
/// Adds the crate's directory as a local model (a directory is ready at once).
const LOCAL_MODEL: &str = concat!(
    r#"{"name":"matrix-local","backend":"candle","kind":"embedding","source":""#,
    env!("CARGO_MANIFEST_DIR"),
    r#""}"#
);
/// Another user's ticket: hidden from users, visible to staff.
const STAFF_200_NOT_FOUND: [u16; 4] = [401, 404, 200, 200];

fn row(
    method: &'static str,
    path: &'static str,
    case: &'static str,
    expect: [u16; 4],
    id: Id,
    body: Body,
) -> Row {
    Row {
        method,
        path,
        case,
        expect,
        id,
        body,
        who: Who::Main,
        stream: false,
    }
}

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use Body::Json;
    let none = Body::None;
    vec![
        row("GET", "/healthz", "probe", ALL_200, Id::None, none),
        row("GET", "/readyz", "probe", ALL_200, Id::None, none),
        // Accounts and sessions: public.
        row("POST", "/api/auth/register", "fresh username", [201; 4], Id::None, Body::Register),
        row("POST", "/api/auth/login", "valid credentials", ALL_200, Id::None, Body::Login),
        row("POST", "/api/auth/refresh", "fresh token", ALL_200, Id::None, Body::RefreshToken),
        row("POST", "/api/auth/logout", "fresh token", [204; 4], Id::None, Body::RefreshToken),
        row("GET", "/api/auth/options", "sign-in options", ALL_200, Id::None, none),
        // The caller's own account.
        row("GET", "/api/me", "own account", SIGNED_200, Id::None, none),
        row("PATCH", "/api/me", "display name", SIGNED_200, Id::None, Json(r#"{"display_name":"Someone"}"#)),
        Row {
            who: Who::Fresh,
            ..row("POST", "/api/me/password", "own password", SIGNED_200, Id::None, Body::ChangePassword)
        },
        row("GET", "/api/me/keys", "own keys", SIGNED_200, Id::None, none),
        row("POST", "/api/me/keys", "new key", SIGNED_201, Id::None, Json(r#"{"name":"scripts"}"#)),
        row("DELETE", "/api/me/keys/{id}", "own key", SIGNED_204, Id::OwnKey, none),
        row("DELETE", "/api/me/keys/{id}", "another user's key", SIGNED_404, Id::OtherKey, none),
        row("GET", "/api/me/stats", "own statistics", SIGNED_200, Id::None, none),
        row("GET", "/api/me/quota", "own allowance", SIGNED_200, Id::None, none),
        // User management: staff.
        row("GET", "/api/users", "list", STAFF_200, Id::None, none),
        row("POST", "/api/users", "new account", STAFF_201, Id::None, Body::NewUser),
        row("GET", "/api/users/{id}", "another account", STAFF_200, Id::SomeUser, none),
        row("PATCH", "/api/users/{id}", "display name", STAFF_200, Id::FreshUser, Json(r#"{"display_name":"Renamed"}"#)),
        row("PATCH", "/api/users/{id}", "disable", STAFF_200, Id::FreshUser, Json(r#"{"disabled":true}"#)),
        row("PATCH", "/api/users/{id}", "promote", STAFF_200, Id::FreshUser, Json(r#"{"role":"admin"}"#)),
        row("POST", "/api/users/{id}/password", "reset", STAFF_204, Id::FreshUser, Json(r#"{"new_password":"another password 1"}"#)),
        row("GET", "/api/audit", "log", STAFF_200, Id::None, none),
        row("GET", "/api/settings", "read", STAFF_200, Id::None, none),
        row("PATCH", "/api/settings", "change", STAFF_200, Id::None, Json(r#"{"registration_open":true}"#)),
        row("GET", "/api/stats", "platform", STAFF_200, Id::None, none),
        row("GET", "/api/quotas", "read", STAFF_200, Id::None, none),
        row("PUT", "/api/quotas", "replace", STAFF_200, Id::None, Json(r#"{"roles":{"user":1000000}}"#)),
        // Chats: private to their owner, admins included.
        row("GET", "/api/chats", "own list", SIGNED_200, Id::None, none),
        row("POST", "/api/chats", "new chat", SIGNED_201, Id::None, Json(r#"{"model":"gemma-3-270m"}"#)),
        row("GET", "/api/chats/{id}", "own chat", SIGNED_200, Id::OwnChat, none),
        row("GET", "/api/chats/{id}", "another user's chat", SIGNED_404, Id::OtherChat, none),
        row("PATCH", "/api/chats/{id}", "own chat", SIGNED_200, Id::OwnChat, Json(r#"{"title":"Renamed","pinned":true}"#)),
        row("PATCH", "/api/chats/{id}", "another user's chat", SIGNED_404, Id::OtherChat, Json(r#"{"title":"Renamed"}"#)),
        row("DELETE", "/api/chats/{id}", "own chat", SIGNED_204, Id::OwnChat, none),
        row("DELETE", "/api/chats/{id}", "another user's chat", SIGNED_404, Id::OtherChat, none),
        row("GET", "/api/chats/{id}/export", "own chat", SIGNED_200, Id::OwnChat, none),
        row("GET", "/api/chats/{id}/export", "another user's chat", SIGNED_404, Id::OtherChat, none),
        row("POST", "/api/chats/{id}/messages", "own chat", SIGNED_201, Id::OwnChat, Json(r#"{"content":"Hello"}"#)),
        row("POST", "/api/chats/{id}/messages", "another user's chat", SIGNED_404, Id::OtherChat, Json(r#"{"content":"Hello"}"#)),
        // Streamed answers: the fixtures' chats name a model that is not
        // installed, so an allowed caller gets as far as "model not found".
        row("POST", "/api/chats/{id}/stream", "own chat, model not installed", SIGNED_404, Id::OwnChat, Json(r#"{"content":"Hello"}"#)),
        row("POST", "/api/chats/{id}/stream", "another user's chat", SIGNED_404, Id::OtherChat, Json(r#"{"content":"Hello"}"#)),
        row("POST", "/api/chats/{id}/regenerate", "own chat, model not installed", SIGNED_404, Id::OwnChat, Json("{}")),
        row("POST", "/api/chats/{id}/regenerate", "another user's chat", SIGNED_404, Id::OtherChat, Json("{}")),
        row("POST", "/api/chats/{id}/stop", "own chat, nothing running", SIGNED_200, Id::OwnChat, none),
        row("POST", "/api/chats/{id}/stop", "another user's chat", SIGNED_404, Id::OtherChat, none),
        row("GET", "/api/chats/ws", "not a WebSocket handshake", [401, 400, 400, 400], Id::None, none),
        // Tickets: a user sees their own; staff see all.
        row("GET", "/api/tickets", "list", SIGNED_200, Id::None, none),
        row("POST", "/api/tickets", "new ticket", SIGNED_201, Id::None, Json(r#"{"subject":"It broke","body":"Details.","category":"bug"}"#)),
        row("GET", "/api/tickets/{id}", "own ticket", SIGNED_200, Id::OwnTicket, none),
        row("GET", "/api/tickets/{id}", "another user's ticket", STAFF_200_NOT_FOUND, Id::OtherTicket, none),
        row("GET", "/api/tickets/{id}", "another user's ticket by number", STAFF_200_NOT_FOUND, Id::OtherTicketNumber, none),
        row("PATCH", "/api/tickets/{id}", "own ticket, same status", SIGNED_200, Id::OwnTicket, Json(r#"{"status":"open"}"#)),
        row("PATCH", "/api/tickets/{id}", "own ticket, staff-only field", STAFF_200, Id::OwnTicket, Json(r#"{"priority":"high"}"#)),
        row("PATCH", "/api/tickets/{id}", "own open ticket to in_progress", [401, 403, 200, 200], Id::OwnTicket, Json(r#"{"status":"in_progress"}"#)),
        row("PATCH", "/api/tickets/{id}", "another user's ticket", STAFF_200_NOT_FOUND, Id::OtherTicket, Json(r#"{"status":"in_progress"}"#)),
        row("POST", "/api/tickets/{id}/comments", "own ticket", SIGNED_201, Id::OwnTicket, Json(r#"{"body":"More details."}"#)),
        row("POST", "/api/tickets/{id}/comments", "own ticket, internal note", STAFF_201, Id::OwnTicket, Json(r#"{"body":"Note.","internal":true}"#)),
        row("POST", "/api/tickets/{id}/comments", "another user's ticket", [401, 404, 201, 201], Id::OtherTicket, Json(r#"{"body":"Hello."}"#)),
        // OpenAI-compatible API (errors in OpenAI's shape).
        row("GET", "/v1/models", "usable models", SIGNED_200, Id::None, none),
        row("POST", "/v1/chat/completions", "an unknown model", [401, 404, 404, 404], Id::None, Json(r#"{"model":"no-such-model","messages":[{"role":"user","content":"Hi"}]}"#)),
        row("POST", "/v1/completions", "an unknown model", [401, 404, 404, 404], Id::None, Json(r#"{"model":"no-such-model","prompt":"Hi"}"#)),
        row("POST", "/v1/embeddings", "an unknown model", [401, 404, 404, 404], Id::None, Json(r#"{"model":"no-such-model","input":"Hi"}"#)),
        // Models: everyone lists what they may use; technicians manage.
        row("GET", "/api/models", "usable models", SIGNED_200, Id::None, none),
        row("POST", "/api/models", "local directory", TECH_202, Id::None, Json(LOCAL_MODEL)),
        row("GET", "/api/models/{id}", "model for everyone", SIGNED_200, Id::Model, none),
        row("GET", "/api/models/{id}", "technicians-only model", TECH_200_NOT_FOUND, Id::TechnicianModel, none),
        row("PATCH", "/api/models/{id}", "description", TECH_200, Id::Model, Json(r#"{"description":"Changed"}"#)),
        row("DELETE", "/api/models/{id}", "a model", TECH_204, Id::Model, none),
        row("GET", "/api/models/{id}/progress", "a model", TECH_200, Id::Model, none),
        Row {
            stream: true,
            ..row("GET", "/api/events", "event stream", TECH_200, Id::None, none)
        },
        // The inference runtime: technicians; metrics for staff.
        row("GET", "/api/status", "runtime status", TECH_200, Id::None, none),
        row("POST", "/api/models/{id}/load", "a model whose file is missing", [401, 403, 403, 503], Id::Model, none),
        row("POST", "/api/models/{id}/unload", "a model not loaded", TECH_204, Id::Model, none),
        row("GET", "/metrics", "Prometheus text", STAFF_200, Id::None, none),
        // Worker nodes: technicians.
        row("GET", "/api/nodes", "nodes", TECH_200, Id::None, none),
        row("POST", "/api/nodes", "a node on the LAN", [401, 403, 403, 201], Id::None, Json(r#"{"name":"lan-node","url":"http://10.255.255.1:7000","token":"0123456789abcdef0123"}"#)),
        row("PATCH", "/api/nodes/{name}", "a node not registered", [401, 403, 403, 404], Id::None, Json(r#"{"token":"0123456789abcdef0123"}"#)),
        row("DELETE", "/api/nodes/{name}", "a node not registered", [401, 403, 403, 404], Id::None, none),
        // Plugins: technicians manage; everyone signed in reaches their
        // routes and turns on optional ones.
        row("GET", "/api/plugins", "installed plugins", TECH_200, Id::None, none),
        row("POST", "/api/plugins", "JSON instead of a multipart upload", [401, 403, 403, 415], Id::None, Json("{}")),
        row("GET", "/api/plugins/{id}", "a plugin not installed", [401, 403, 403, 404], Id::NoSuchPlugin, none),
        row("PATCH", "/api/plugins/{id}", "a plugin not installed", [401, 403, 403, 404], Id::NoSuchPlugin, Json(r#"{"enabled":true}"#)),
        row("DELETE", "/api/plugins/{id}", "a plugin not installed", [401, 403, 403, 404], Id::NoSuchPlugin, none),
        row("PUT", "/api/plugins/{id}/component", "a plugin not installed", [401, 403, 403, 404], Id::NoSuchPlugin, Json("{}")),
        row("PUT", "/api/plugins/{id}/config", "a plugin not installed", [401, 403, 403, 404], Id::NoSuchPlugin, Json("{}")),
        row("GET", "/api/plugins/{id}/{path}", "a plugin not installed", SIGNED_404, Id::NoSuchPlugin, none),
        row("POST", "/api/plugins/{id}/{path}", "a plugin not installed", SIGNED_404, Id::NoSuchPlugin, Json("{}")),
        row("PUT", "/api/plugins/{id}/{path}", "a plugin not installed", SIGNED_404, Id::NoSuchPlugin, Json("{}")),
        row("PATCH", "/api/plugins/{id}/{path}", "a plugin not installed", SIGNED_404, Id::NoSuchPlugin, Json("{}")),
        row("DELETE", "/api/plugins/{id}/{path}", "a plugin not installed", SIGNED_404, Id::NoSuchPlugin, none),
        row("GET", "/api/me/plugins", "optional plugins", SIGNED_200, Id::None, none),
        row("PUT", "/api/me/plugins/{id}", "a plugin not installed", SIGNED_404, Id::NoSuchPlugin, Json(r#"{"enabled":true}"#)),
    ]
}

/// Every `(METHOD, path)` of the committed spec.
fn spec_operations() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("reading {SPEC}: {e}"));
    let spec: Value = serde_json::from_str(&text).expect("the spec is JSON");
    let paths = spec["paths"].as_object().expect("the spec has paths");
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        for (key, _) in item.as_object().expect("a path item") {
            if methods.contains(&key.as_str()) {
                ops.insert((key.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// The fixtures the calls share.
struct Ctx {
    t: TestApp,
    /// Index 0 (anonymous) is `None`.
    callers: [Option<Account>; 4],
    /// A second user: owner of "another user's" things.
    other: Account,
    /// Username of an account the login row signs in to.
    loginee: String,
    counter: usize,
}

impl Ctx {
    fn unique(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}", self.counter)
    }

    async fn key_of(&self, owner: &Account) -> String {
        let (status, body) = self
            .t
            .post(
                "/api/me/keys",
                Some(&owner.access),
                &json!({"name": "fixture"}),
            )
            .await;
        assert_eq!(status, 201, "creating a key fixture: {body}");
        body["id"].as_str().expect("key id").to_owned()
    }

    async fn fill(&mut self, id: Id, own: &Account) -> Option<String> {
        let other = self.other.clone();
        Some(match id {
            Id::None => return None,
            Id::OwnKey => self.key_of(own).await,
            Id::OtherKey => self.key_of(&other).await,
            Id::SomeUser => other.id,
            Id::FreshUser => {
                let name = self.unique("target");
                self.t.insert_user(&name, Role::User).await.id
            }
            Id::OwnChat => str_field(&self.t.chat(&own.access, "Fixture").await, "id"),
            Id::OtherChat => str_field(&self.t.chat(&other.access, "Fixture").await, "id"),
            Id::OwnTicket => str_field(&self.t.ticket(&own.access, "Fixture", "bug").await, "id"),
            Id::OtherTicket => {
                str_field(&self.t.ticket(&other.access, "Fixture", "bug").await, "id")
            }
            Id::OtherTicketNumber => self.t.ticket(&other.access, "Fixture", "bug").await["number"]
                .as_i64()
                .expect("ticket number")
                .to_string(),
            Id::Model => self.model(true).await,
            Id::TechnicianModel => self.model(false).await,
            Id::NoSuchPlugin => "no-such-plugin".to_owned(),
        })
    }

    /// A ready model straight in the store; returns its id.
    async fn model(&mut self, everyone: bool) -> String {
        let model = ModelRecord {
            slots: 4,
            access: ModelAccess {
                everyone,
                roles: Vec::new(),
                users: Vec::new(),
            },
            ..support::model_record(
                &self.unique("fixture-model-"),
                "llama",
                "/nonexistent/fixture.gguf",
            )
        };
        self.t
            .store
            .create_model(&model)
            .await
            .expect("model fixture");
        model.id
    }

    async fn body(&mut self, body: Body) -> Option<Value> {
        Some(match body {
            Body::None => return None,
            Body::Json(text) => serde_json::from_str(text).expect("row body is JSON"),
            Body::Register => json!({"username": self.unique("newcomer"), "password": PASSWORD}),
            Body::Login => json!({"username": self.loginee, "password": PASSWORD}),
            Body::RefreshToken => {
                let user = self
                    .t
                    .store
                    .get_user(&self.other.id)
                    .await
                    .expect("store")
                    .expect("other user");
                json!({"refresh_token": self.t.issue(&user).await.refresh})
            }
            Body::NewUser => json!({
                "username": self.unique("created"),
                "password": PASSWORD,
                "role": "user",
            }),
            Body::ChangePassword => {
                json!({"current_password": PASSWORD, "new_password": "a brand new password"})
            }
        })
    }
}

fn str_field(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no `{field}` in {v}"))
        .to_owned()
}

/// The error code a status must come with.
fn code_for(status: u16) -> Option<&'static [&'static str]> {
    match status {
        401 => Some(&["unauthorized"]),
        403 => Some(&["forbidden", "account_disabled"]),
        404 => Some(&["not_found"]),
        _ => None,
    }
}

#[tokio::test]
async fn every_operation_answers_each_role_as_specified() {
    let rows = rows();
    let mut problems = Vec::new();

    // Coverage: the table and the spec name the same operations.
    let spec = spec_operations();
    let table: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    for (method, path) in spec.difference(&table) {
        problems.push(format!(
            "{method} {path}: in the spec but has no row in the role matrix"
        ));
    }
    for (method, path) in table.difference(&spec) {
        problems.push(format!("{method} {path}: has a row but is not in the spec"));
    }

    let t = TestApp::new().await;
    let user = t.signed_in("user1", Role::User).await;
    let admin = t.signed_in("admin1", Role::Admin).await;
    let tech = t.signed_in("tech1", Role::Technician).await;
    let other = t.signed_in("other1", Role::User).await;
    t.create("loginee", Role::User).await;
    let mut ctx = Ctx {
        t,
        callers: [None, Some(user), Some(admin), Some(tech)],
        other,
        loginee: "loginee".to_owned(),
        counter: 0,
    };

    for row in &rows {
        for (i, caller) in CALLERS.iter().enumerate() {
            // The account whose token is sent (none for anonymous) and the
            // owner of "own" fixtures (another user for anonymous).
            let account = match (row.who, ROLES[i]) {
                (_, None) => None,
                (Who::Main, Some(_)) => ctx.callers[i].clone(),
                (Who::Fresh, Some(role)) => {
                    let name = ctx.unique("fresh");
                    let fresh = ctx.t.insert_user(&name, role).await;
                    Some(ctx.t.issue(&fresh).await)
                }
            };
            let owner = account.clone().unwrap_or_else(|| ctx.other.clone());
            let path = match ctx.fill(row.id, &owner).await {
                Some(id) => row.path.replace("{id}", &id),
                None => row.path.to_owned(),
            }
            .replace("{path}", "documents")
            .replace("{name}", "no-such-node");
            let body = ctx.body(row.body).await;
            let method = Method::from_bytes(row.method.as_bytes()).expect("a method");
            let token = account.as_ref().map(|a| a.access.as_str());
            let resp = if row.stream {
                ctx.t.call_stream(method, &path, token).await
            } else {
                ctx.t.call(method, &path, token, body.as_ref()).await
            };
            let got = resp.status.as_u16();
            let want = row.expect[i];
            let json = resp.json();
            let what = format!("{} {} [{}] as {caller}", row.method, row.path, row.case);
            if got != want {
                problems.push(format!("{what}: expected {want}, got {got}: {json}"));
                continue;
            }
            if let Some(codes) = code_for(got) {
                // The OpenAI-compatible API nests its error body.
                let json = if row.path.starts_with("/v1/") {
                    &json["error"]
                } else {
                    &json
                };
                let code = json["code"].as_str().unwrap_or("");
                if !codes.contains(&code) || !json["message"].is_string() {
                    problems.push(format!("{what}: {got} without a proper error body: {json}"));
                }
            }
        }
    }

    // The main accounts still work: nothing in the matrix spoiled them.
    for (i, account) in ctx.callers.iter().enumerate() {
        if let Some(account) = account {
            let (status, _) = ctx.t.get("/api/me", Some(&account.access)).await;
            if status != 200 {
                problems.push(format!("{}'s token stopped working: {status}", CALLERS[i]));
            }
        }
    }

    assert!(
        problems.is_empty(),
        "{} role-matrix problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[tokio::test]
async fn bad_tokens_are_unauthorized() {
    let t = TestApp::new().await;
    let user = t.signed_in("someone", Role::User).await;
    for token in [
        "garbage",
        "crl_not-a-real-key",
        user.refresh.as_str(),
        &format!("{}x", user.access),
    ] {
        let (status, body) = t.get("/api/me", Some(token)).await;
        support::assert_error(
            status,
            &body,
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
    }
    // Another scheme is not a bearer token.
    let mut request = support::request(Method::GET, "/api/me", None, None);
    request.headers_mut().insert(
        axum::http::header::AUTHORIZATION,
        format!("Basic {}", user.access).parse().expect("header"),
    );
    let resp = t.send(request).await;
    support::assert_error(
        resp.status,
        &resp.json(),
        axum::http::StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
}
