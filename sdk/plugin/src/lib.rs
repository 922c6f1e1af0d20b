//! Write Corral extension plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2` against
//! Corral's `corral:plugin@0.1.0` interface. This crate hides the bindings:
//! implement [`Plugin`] (every method has a harmless default) and call
//! [`export!`] once.
//!
//! ```no_run
//! use corral_plugin::prelude::*;
//!
//! struct Shout;
//!
//! impl Plugin for Shout {
//!     fn before_prompt(_ctx: &Context, prompt: &Prompt) -> Decision {
//!         let line = config::get_or("line", String::from("Answer in capitals."));
//!         Decision::modify(Modification::new().system_prompt(prompt.system_prompt_with(&line)))
//!     }
//! }
//!
//! corral_plugin::export!(Shout);
//! ```
//!
//! The host functions a plugin may call are grouped by the capability
//! that grants them: [`log`], [`kv`], [`config`], [`models`] (`generate`,
//! `embed`). A component imports only the host functions it calls (the
//! linker drops the rest), so the manifest's `capabilities` list only
//! what the code really uses.
//!
//! Built for the host (`cargo test`), the host functions reach an
//! in-process stand-in, [`testing`], so plugin logic is tested natively.

#![deny(missing_docs)]

extern crate self as corral_plugin;

pub mod config;
mod error;
pub mod fetch;
pub mod http;
pub mod kv;
pub mod log;
pub mod models;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;

pub use error::Error;
pub use http::{Request, Response};
pub use types::{
    Answer, AnswerAction, Caller, ChunkResult, Context, Decision, Message, Modification, Prompt,
    Role, Sampling, Surface,
};

/// What a plugin does at each point of a generation and for its routes.
///
/// Implement the methods the manifest's `hooks` (and `routes`) name; the
/// host calls only those, and every other method keeps its default, which
/// changes nothing. Methods take no `self`: each generation and each route
/// request runs in a fresh instance of the component, so state that one
/// generation needs from `before_prompt` to `after_answer` lives in
/// statics (`thread_local!`), and is gone after it.
pub trait Plugin {
    /// Before the request reaches the model (hook `before-prompt`).
    /// Default: [`Decision::Continue`].
    fn before_prompt(ctx: &Context, prompt: &Prompt) -> Decision {
        let _ = (ctx, prompt);
        Decision::Continue
    }

    /// A stretch of answer text (hook `stream`). What is held back comes
    /// back in front of the next stretch, or to [`Plugin::finish`].
    /// Default: emit everything.
    fn on_chunk(ctx: &Context, text: String) -> ChunkResult {
        let _ = ctx;
        ChunkResult::pass(text)
    }

    /// The end of the answer (hook `stream`): gets what was still held
    /// back and returns the last text to emit. Default: emit what was held.
    fn finish(ctx: &Context, held: String) -> String {
        let _ = ctx;
        held
    }

    /// After the answer ended, before it is stored (hook `after-answer`).
    /// Default: [`AnswerAction::Keep`].
    fn after_answer(ctx: &Context, answer: &Answer) -> AnswerAction {
        let _ = (ctx, answer);
        AnswerAction::Keep
    }

    /// A request to one of the manifest's `routes`. Default: 404 with
    /// Corral's JSON error body.
    fn handle(request: &Request) -> Response {
        let _ = request;
        Response::not_found()
    }
}

/// The names most plugins need: `use corral_plugin::prelude::*;`.
pub mod prelude {
    pub use crate::http::{Request, Response};
    pub use crate::types::{
        Answer, AnswerAction, Caller, ChunkResult, Context, Decision, Message, Modification,
        Prompt, Role, Sampling, Surface,
    };
    pub use crate::{config, fetch, kv, log, models, Error, Plugin};
}

/// Makes a type that implements [`Plugin`] the plugin's exports.
///
/// Call it once, at the crate's top level: `corral_plugin::export!(Mine);`.
/// Built for the host it only checks that the type implements [`Plugin`].
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type CorralPluginExports = $crate::__private::Exports<$plugin>;
            $crate::__private::wit::__export_world_plugin!(
                CorralPluginExports with_types_in $crate::__private::wit
            );
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn implements_plugin<P: $crate::Plugin>() {}
            let _ = implements_plugin::<$plugin>;
        };
    };
}

#[doc(hidden)]
pub mod __private {
    use std::marker::PhantomData;

    pub use wit_bindgen;

    /// The generated bindings. The WIT comes from `sdk/wit/0.1.0` through
    /// the build script (see `build.rs`).
    #[allow(missing_docs)]
    pub mod wit {
        wit_bindgen::generate!({
            path: "../wit/0.1.0",
            world: "corral:plugin/plugin",
            runtime_path: "::corral_plugin::__private::wit_bindgen::rt",
            pub_export_macro: true,
            export_macro_name: "__export_world_plugin",
            additional_derives: [PartialEq, Clone],
        });
    }

    use crate::types::{Answer, AnswerAction, ChunkResult, Context, Decision, Prompt};
    use crate::{Plugin, Request, Response};
    use wit::exports::corral::plugin::{hooks, routes};

    /// Turns a [`Plugin`] into the generated export traits.
    pub struct Exports<P>(PhantomData<P>);

    impl<P: Plugin> hooks::Guest for Exports<P> {
        fn before_prompt(ctx: Context, prompt: Prompt) -> Decision {
            P::before_prompt(&ctx, &prompt)
        }

        fn on_chunk(ctx: Context, text: String) -> ChunkResult {
            P::on_chunk(&ctx, text)
        }

        fn finish(ctx: Context, held: String) -> String {
            P::finish(&ctx, held)
        }

        fn after_answer(ctx: Context, answer: Answer) -> AnswerAction {
            P::after_answer(&ctx, &answer)
        }
    }

    impl<P: Plugin> routes::Guest for Exports<P> {
        fn handle(request: Request) -> Response {
            P::handle(&request)
        }
    }
}
