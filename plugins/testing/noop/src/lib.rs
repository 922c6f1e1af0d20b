//! `test-noop`: every hook with its default, which changes nothing, and
//! a route that answers at once (`GET ping`). What Corral spends on a
//! plugin that does no work, for benchmarks to compare against. `GET
//! headers` answers the names of the request headers it was given, for
//! tests of what Corral passes on.

use corral_plugin::prelude::*;

struct Noop;

impl Plugin for Noop {
    fn handle(request: &Request) -> Response {
        if request.route("GET", "ping").is_some() {
            return Response::no_content();
        }
        if request.route("GET", "headers").is_some() {
            let names: Vec<String> = request
                .headers
                .iter()
                .map(|(name, _)| name.to_ascii_lowercase())
                .collect();
            return Response::json(200, &serde_json::json!({ "headers": names }));
        }
        Response::not_found()
    }
}

corral_plugin::export!(Noop);
