//! `test-net`: tries to open a TCP connection with the standard library
//! (WASI sockets) and reports the result, so a test can check that the
//! sandbox refused it.
//!
//! `before-prompt` adds the passage `connect 127.0.0.1:80: error: …`;
//! `GET connect?addr=HOST:PORT` answers
//! `{"addr": "…", "ok": false, "result": "<the error>"}`.

use std::net::TcpStream;
use std::time::Duration;

use corral_plugin::prelude::*;

const DEFAULT_ADDR: &str = "127.0.0.1:80";

/// What connecting to `addr` gave: `Ok(the peer)` or the error.
pub fn connect(addr: &str) -> Result<String, String> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|e| format!("bad address: {e}"))?;
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    Ok(stream
        .peer_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string()))
}

struct Net;

impl Plugin for Net {
    fn before_prompt(_ctx: &Context, _prompt: &Prompt) -> Decision {
        let passage = match connect(DEFAULT_ADDR) {
            Ok(peer) => format!("connect {DEFAULT_ADDR}: ok: {peer}"),
            Err(e) => format!("connect {DEFAULT_ADDR}: error: {e}"),
        };
        Decision::modify(Modification::new().context(passage))
    }

    fn handle(request: &Request) -> Response {
        if request.route("GET", "connect").is_none() {
            return Response::not_found();
        }
        let addr = request
            .query_param("addr")
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let (ok, result) = match connect(&addr) {
            Ok(peer) => (true, peer),
            Err(e) => (false, e),
        };
        Response::json(
            200,
            &serde_json::json!({ "addr": addr, "ok": ok, "result": result }),
        )
    }
}

corral_plugin::export!(Net);
