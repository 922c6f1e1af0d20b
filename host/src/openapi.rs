//! The OpenAPI document. Handlers describe themselves with
//! `#[utoipa::path]`; [`Conventions`] then adds what follows from each
//! route's access rule (security, 401/403) and the error responses every
//! route can give, so those stay consistent.

use axum::http::Method;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::api::{
    self, admin, auth, chat_stream, chats, health, models, nodes, openai, plugins, runtime, stats,
    tickets, users,
};
use crate::policy::Access;
use crate::quota;

/// One event of a `text/event-stream` answer as a client reads it (the
/// document describes each event of a stream this way): its name and its
/// data, JSON text whose shape each operation names.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SseEvent {
    /// The event's name; absent for unnamed events.
    #[schema(example = "delta")]
    pub event: Option<String>,
    /// The event's data.
    #[schema(example = r#"{"type":"delta","text":"Paris"}"#)]
    pub data: String,
    pub id: Option<String>,
    pub retry: Option<u64>,
}

/// Corral's REST API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Corral",
        description = "Self-hosted LLM studio: accounts, chats, support tickets and statistics.\n\n\
            Sign in at `/api/auth/login` and send the access token (or a personal API key) as \
            `Authorization: Bearer <token>`. Every error has the body `ErrorBody`.",
        license(name = "Apache-2.0")
    ),
    paths(
        health::healthz, health::readyz,
        auth::register, auth::login, auth::refresh, auth::logout, auth::options,
        auth::me, auth::update_me, auth::change_password,
        auth::list_keys, auth::create_key, auth::delete_key,
        stats::mine, stats::platform,
        users::list, users::create, users::get_one, users::update, users::reset_password,
        admin::audit, admin::get_settings, admin::update_settings,
        chats::list, chats::create, chats::get_one, chats::update, chats::remove,
        chats::export, chats::add_message,
        chat_stream::stream, chat_stream::regenerate, chat_stream::stop, chat_stream::websocket,
        quota::get_quotas, quota::put_quotas, quota::my_quota,
        openai::models, openai::chat_completions, openai::completions, openai::embeddings,
        tickets::list, tickets::create, tickets::get_one, tickets::update, tickets::comment,
        models::list, models::create, models::get_one, models::update, models::remove,
        models::progress, models::events,
        runtime::status, runtime::load, runtime::unload, runtime::metrics,
        nodes::list, nodes::create, nodes::update, nodes::remove,
        plugins::list, plugins::install, plugins::get_one, plugins::update, plugins::remove,
        plugins::upgrade, plugins::configure, plugins::mine, plugins::choose,
        plugins::route_get, plugins::route_post, plugins::route_put, plugins::route_patch,
        plugins::route_delete,
    ),
    components(schemas(
        corral_sdk::ErrorBody,
        corral_sdk::FieldError,
        chats::ExportFormat,
        crate::chat::ChatEvent,
        crate::events::Event,
        chat_stream::ClientFrame,
        openai::OpenAiErrorBody
    )),
    modifiers(&Conventions),
    tags(
        (name = "auth", description = "Accounts and sessions"),
        (name = "me", description = "The signed-in account"),
        (name = "users", description = "User management (admin, technician)"),
        (name = "admin", description = "Settings, token quotas and audit log (admin, technician)"),
        (name = "chats", description = "The caller's chats"),
        (name = "tickets", description = "Support tickets"),
        (name = "stats", description = "Usage statistics (admin, technician)"),
        (name = "models", description = "The model registry: everyone lists the models they may use; technicians manage them"),
        (name = "runtime", description = "The inference runtime: backends, loaded models, queues, load and unload (technicians), metrics (admin, technician)"),
        (name = "nodes", description = "Worker nodes: other machines running `corral node` that run the models placed on them (technicians)"),
        (name = "plugins", description = "WebAssembly extension plugins: technicians install, approve, configure and watch them; users turn on optional ones; everyone signed in reaches their routes"),
        (name = "health", description = "Probes"),
        (name = "openai", description = "OpenAI-compatible API; send a personal API key as the Bearer token"),
    )
)]
pub struct ApiDoc;

/// The document as served at `/openapi.json`.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as committed in `openapi/openapi.json`.
pub fn spec_json() -> String {
    let mut text = spec().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// Shared error responses, referenced from operations.
const ERRORS: &[(&str, &str)] = &[
    ("BadRequest", "Malformed JSON, query or path"),
    (
        "Unauthorized",
        "Not signed in, or the token is invalid or expired",
    ),
    (
        "Forbidden",
        "The account is disabled or its role may not do this",
    ),
    ("PayloadTooLarge", "The request body is over the size limit"),
    ("UnsupportedMediaType", "The body is not `application/json`"),
    ("ValidationFailed", "A field is invalid; `details` names it"),
    ("RateLimited", "Too many attempts; see `Retry-After`"),
    ("Unavailable", "The store is unavailable"),
];

struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or API key")
                    .description(Some(
                        "An access token from /api/auth/login, or a personal API key",
                    ))
                    .build(),
            ),
        );
        // The same responses twice: in Corral's error shape, and in
        // OpenAI's for the `/v1` API (named `OpenAi…`).
        for (prefix, schema) in [("", "ErrorBody"), ("OpenAi", "OpenAiErrorBody")] {
            for (name, description) in ERRORS {
                let response = ResponseBuilder::new()
                    .description(*description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(schema)))
                            .build(),
                    )
                    .build();
                components
                    .responses
                    .insert(format!("{prefix}{name}"), RefOr::T(response));
            }
        }
        for route in api::routes() {
            let Some(item) = openapi.paths.paths.get_mut(route.path) else {
                continue;
            };
            let Some(op) = operation_mut(item, &route.method) else {
                continue;
            };
            let prefix = if route.path.starts_with("/v1/") {
                "OpenAi"
            } else {
                ""
            };
            let mut add = |status: &str, name: &str| {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| {
                        RefOr::Ref(Ref::from_response_name(format!("{prefix}{name}")))
                    });
            };
            add("400", "BadRequest");
            add("422", "ValidationFailed");
            add("503", "Unavailable");
            if route.path == "/api/auth/login" || route.path == "/api/auth/register" {
                add("429", "RateLimited");
            }
            if op.request_body.is_some() {
                add("413", "PayloadTooLarge");
                add("415", "UnsupportedMediaType");
            }
            if route.access.needs_sign_in() {
                add("401", "Unauthorized");
                add("403", "Forbidden");
                op.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
            }
            if route.path == "/healthz" || route.path == "/readyz" {
                op.responses
                    .responses
                    .retain(|s, _| s == "200" || s == "503");
                if route.path == "/healthz" {
                    op.responses.responses.remove("503");
                }
            }
            if route.access == Access::Public {
                op.security = Some(vec![SecurityRequirement::default()]);
            }
        }
        unique_operation_ids(openapi);
    }
}

/// Handlers of different resources share names (`create`, `list`), but
/// operation ids must be unique: generated clients key their types by
/// them. A shared id gets its resource in front (`chats_create`).
fn unique_operation_ids(openapi: &mut utoipa::openapi::OpenApi) {
    let operations = documented_operations(openapi);
    let mut uses = std::collections::HashMap::<String, usize>::new();
    for (method, path) in &operations {
        let id = openapi
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| operation_mut(item, method))
            .and_then(|op| op.operation_id.clone());
        if let Some(id) = id {
            *uses.entry(id).or_default() += 1;
        }
    }
    for (method, path) in &operations {
        let Some(op) = openapi
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| operation_mut(item, method))
        else {
            continue;
        };
        let Some(id) = &op.operation_id else { continue };
        if uses.get(id).is_some_and(|n| *n > 1) {
            let resource = path
                .split('/')
                .find(|s| !s.is_empty() && *s != "api" && *s != "v1")
                .unwrap_or("api");
            op.operation_id = Some(format!("{resource}_{id}"));
        }
    }
}

fn operation_mut<'a>(item: &'a mut PathItem, method: &Method) -> Option<&'a mut Operation> {
    match *method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        _ => None,
    }
}

/// The `(METHOD, path)` pairs the document describes.
pub fn documented_operations(doc: &utoipa::openapi::OpenApi) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, present) in [
            (Method::GET, item.get.is_some()),
            (Method::POST, item.post.is_some()),
            (Method::PUT, item.put.is_some()),
            (Method::PATCH, item.patch.is_some()),
            (Method::DELETE, item.delete.is_some()),
        ] {
            if present {
                out.push((method, path.clone()));
            }
        }
    }
    out
}

/// Checks that the routes and the document list the same operations, so
/// no route goes undocumented and no documented route is missing.
pub fn check_routes() -> Result<(), String> {
    let documented = documented_operations(&spec());
    // axum writes a catch-all segment `{*path}`, OpenAPI `{path}`.
    let routed: Vec<(Method, String)> = api::routes()
        .into_iter()
        .map(|r| (r.method, r.path.replace("{*", "{")))
        .collect();
    let mut problems = Vec::new();
    for op in &routed {
        if !documented.contains(op) {
            problems.push(format!(
                "route {} {} is not in the OpenAPI document",
                op.0, op.1
            ));
        }
    }
    for op in &documented {
        if !routed.contains(op) {
            problems.push(format!("documented {} {} has no route", op.0, op.1));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_unique() {
        let doc = spec();
        let mut seen = std::collections::HashSet::new();
        for (method, path) in documented_operations(&doc) {
            let item = &doc.paths.paths[&path];
            let op = match method {
                Method::GET => item.get.as_ref(),
                Method::POST => item.post.as_ref(),
                Method::PUT => item.put.as_ref(),
                Method::PATCH => item.patch.as_ref(),
                _ => item.delete.as_ref(),
            };
            let id = op
                .and_then(|op| op.operation_id.clone())
                .unwrap_or_default();
            assert!(seen.insert(id.clone()), "{method} {path}: `{id}` is taken");
        }
    }

    #[test]
    fn every_route_is_documented_and_vice_versa() {
        check_routes().unwrap();
    }

    #[test]
    fn committed_spec_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == spec_json(),
            "openapi/openapi.json is out of date: run `cargo run -p corral-host -- openapi > openapi/openapi.json`"
        );
    }
}
