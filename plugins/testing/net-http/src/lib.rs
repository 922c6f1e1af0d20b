//! `test-net-http`: sends GET requests through `wasi:http/outgoing-handler`
//! and reports what happened, so tests can check where a plugin's requests
//! may go: only to declared hosts a technician approved, and never to a
//! private address unless the technician allowed that.
//!
//! `before-prompt` adds the passage `GET http://example.com/: ok: status N`
//! or `…: error: <the error>`; `GET fetch?authority=HOST[:PORT]` answers
//! `{"url": "…", "ok": true|false, "result": "status N" | "<the error>"}`.
//!
//! Kept apart from `test-net` (plain TCP through `wasi:sockets`, which
//! Corral never offers).

use corral_plugin::prelude::*;

const DEFAULT_AUTHORITY: &str = "example.com";

/// What a GET to `http://{authority}/` gave: `Ok(the status)` or the
/// error.
pub fn fetch(authority: &str) -> Result<String, String> {
    corral_plugin::fetch::get(&format!("http://{authority}/"))
        .map(|r| format!("status {}", r.status))
        .map_err(|e| e.to_string())
}

struct NetHttp;

impl Plugin for NetHttp {
    fn before_prompt(_ctx: &Context, _prompt: &Prompt) -> Decision {
        let passage = match fetch(DEFAULT_AUTHORITY) {
            Ok(status) => format!("GET http://{DEFAULT_AUTHORITY}/: ok: {status}"),
            Err(e) => format!("GET http://{DEFAULT_AUTHORITY}/: error: {e}"),
        };
        Decision::modify(Modification::new().context(passage))
    }

    fn handle(request: &Request) -> Response {
        if request.route("GET", "fetch").is_none() {
            return Response::not_found();
        }
        let authority = request
            .query_param("authority")
            .unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned());
        let (ok, result) = match fetch(&authority) {
            Ok(status) => (true, status),
            Err(e) => (false, e),
        };
        Response::json(
            200,
            &serde_json::json!({ "url": format!("http://{authority}/"), "ok": ok, "result": result }),
        )
    }
}

corral_plugin::export!(NetHttp);
