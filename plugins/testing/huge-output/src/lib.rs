//! `test-huge-output`: returns 64 MiB where Corral expects a little text:
//! as the text to emit from `on-chunk`, and as the body of `GET huge`.
//! Corral must refuse or cut it rather than pass it on or store it.

use corral_plugin::prelude::*;

/// 64 MiB of `x`.
pub fn huge() -> String {
    "x".repeat(64 << 20)
}

struct HugeOutput;

impl Plugin for HugeOutput {
    fn on_chunk(_ctx: &Context, _text: String) -> ChunkResult {
        ChunkResult::pass(huge())
    }

    fn handle(request: &Request) -> Response {
        if request.route("GET", "huge").is_none() {
            return Response::not_found();
        }
        Response::text(200, huge())
    }
}

corral_plugin::export!(HugeOutput);
