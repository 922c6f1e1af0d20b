//! `test-spin`: never returns from `before-prompt` or from `GET spin`;
//! Corral's per-call time limit must stop it.

use corral_plugin::prelude::*;

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        // Work the optimizer cannot remove.
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

struct Spin;

impl Plugin for Spin {
    fn before_prompt(_ctx: &Context, _prompt: &Prompt) -> Decision {
        spin()
    }

    fn handle(_request: &Request) -> Response {
        spin()
    }
}

corral_plugin::export!(Spin);
