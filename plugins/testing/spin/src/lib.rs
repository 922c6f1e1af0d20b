//! `test-spin`: never returns from `before-prompt` or from `GET spin`;
//! Corral's per-call time limit must stop it. `GET sleep` waits an hour
//! on the WASI clock, outside its own code, where only the limit on the
//! whole call by the clock can stop it.

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

    fn handle(request: &Request) -> Response {
        if request.route("GET", "sleep").is_some() {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        spin()
    }
}

corral_plugin::export!(Spin);
