//! `test-noop`: every hook with its default, which changes nothing, and
//! one route that answers at once. What Corral spends on a plugin that
//! does no work, for benchmarks to compare against.

use corral_plugin::prelude::*;

struct Noop;

impl Plugin for Noop {
    fn handle(request: &Request) -> Response {
        if request.route("GET", "ping").is_some() {
            return Response::no_content();
        }
        Response::not_found()
    }
}

corral_plugin::export!(Noop);
