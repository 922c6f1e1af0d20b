//! `test-memory-bomb`: allocates (and writes) memory a MiB at a time
//! until allocation fails, in `before-prompt` and in `GET grow`; Corral's
//! memory limit must stop it.

use corral_plugin::prelude::*;

fn grow() -> ! {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        // `vec![1; n]` writes every byte, so the pages are really used.
        held.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
}

struct MemoryBomb;

impl Plugin for MemoryBomb {
    fn before_prompt(_ctx: &Context, _prompt: &Prompt) -> Decision {
        grow()
    }

    fn handle(_request: &Request) -> Response {
        grow()
    }
}

corral_plugin::export!(MemoryBomb);
