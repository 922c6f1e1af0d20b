//! Corral's llama.cpp backend: GGUF text models through `llama-cpp-2`, with
//! continuous batching on one decode thread per model.
//!
//! Built as a `cdylib`, it exports [`LlamaBackend`] through Corral's backend
//! C ABI; as an `rlib` it can be used directly.

mod backend;
mod engine;
mod log;
mod model;

pub use backend::LlamaBackend;
pub use model::LlamaModel;

corral_sdk::export_backend!(LlamaBackend);
