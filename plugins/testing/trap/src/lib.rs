//! `test-trap`: fails in every hook and route. `before-prompt`,
//! `after-answer` and `GET panic` panic (a Rust panic aborts, which traps);
//! `on-chunk`, `finish` and `GET unreachable` execute the `unreachable`
//! instruction directly.

use corral_plugin::prelude::*;

fn unreachable() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    panic!("`unreachable` is a WebAssembly instruction");
}

struct Trap;

impl Plugin for Trap {
    fn before_prompt(_ctx: &Context, _prompt: &Prompt) -> Decision {
        panic!("test-trap: panic in before-prompt")
    }

    fn on_chunk(_ctx: &Context, _text: String) -> ChunkResult {
        unreachable()
    }

    fn finish(_ctx: &Context, _held: String) -> String {
        unreachable()
    }

    fn after_answer(_ctx: &Context, _answer: &Answer) -> AnswerAction {
        panic!("test-trap: panic in after-answer")
    }

    fn handle(request: &Request) -> Response {
        if request.route("GET", "unreachable").is_some() {
            unreachable()
        }
        panic!("test-trap: panic in a route")
    }
}

corral_plugin::export!(Trap);
