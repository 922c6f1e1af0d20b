//! Corral's candle backend: quantized GGUF text models (Gemma 3 with its own
//! model code; llama, qwen2 and qwen3 through candle-transformers) and BERT
//! sentence embeddings, in pure Rust on the CPU.
//!
//! Concurrency: each loaded text model holds `slots` sequence states that
//! share one copy of the weights; concurrent `generate` calls each take a
//! free slot (waiting, cancellably, when none is free) and run side by side
//! on candle's thread pool. There is no batching across sequences.
//!
//! Prompt cache: a slot keeps its keys and values after a request, and a
//! later request under the same cache key that starts with the same tokens
//! (the next turn of a chat, a regenerated answer) reads only the rest.
//! Gemma 3 can go back to any point its sliding-window layers still hold;
//! llama reuses a cache only when the prompt starts with all of it; qwen2
//! and qwen3 always read the whole prompt (see `text::Engine::can_keep`).

use std::path::Path;
use std::sync::Once;

use corral_sdk::backend::{
    Backend, BackendError, BackendInfo, BackendResult, Capabilities, LoadRequest, Model,
};

mod embedding;
mod error;
mod gemma3;
mod gguf;
mod gguf_tokenizer;
mod sampling;
mod text;

use gguf::LoadError;

/// The candle backend. Stateless: every model it loads is independent.
#[derive(Debug, Default)]
pub struct CandleBackend;

corral_sdk::export_backend!(CandleBackend);

static THREADS: Once = Once::new();

/// candle reads its thread count and spin limit from the environment once,
/// at first use, for the whole process; so the first load decides them.
fn configure_threads(threads: u32) {
    THREADS.call_once(|| {
        let set_default = |key: &str, value: String| {
            if std::env::var_os(key).is_none() {
                std::env::set_var(key, value);
            }
        };
        if threads > 0 {
            set_default("CANDLE_NUM_THREADS", threads.to_string());
            set_default("RAYON_NUM_THREADS", threads.to_string());
        }
        // Spinning workers starve everything else on a busy machine (decode
        // fell from 13 to 3 tok/s with two threads next to another process).
        set_default("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0".into());
    });
}

/// Opens a model file or directory, mapping every failure (panics in the
/// loaders included) to a clear error.
fn load_model(
    request: &LoadRequest,
    progress: &mut dyn FnMut(f32) -> bool,
) -> BackendResult<Box<dyn Model>> {
    let path = Path::new(&request.path);
    if !path.exists() {
        return Err(BackendError::InvalidModel(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<Box<dyn Model>, LoadError> {
            if path.is_dir() {
                if embedding::is_model_dir(path) {
                    return Ok(Box::new(embedding::EmbeddingModel::load(path, progress)?));
                }
                return Err(LoadError::Invalid(format!(
                    "{} is a directory without config.json, model.safetensors and tokenizer.json",
                    path.display()
                )));
            }
            Ok(Box::new(text::TextModel::load(path, request, progress)?))
        },
    ));
    match result {
        Ok(Ok(model)) => Ok(model),
        Ok(Err(LoadError::Invalid(why))) => Err(BackendError::InvalidModel(why)),
        Ok(Err(LoadError::Cancelled)) => {
            Err(BackendError::Internal("the load was cancelled".into()))
        }
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the loader panicked");
            Err(BackendError::InvalidModel(format!(
                "the file is malformed ({})",
                error::one_line(why)
            )))
        }
    }
}

impl Backend for CandleBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "candle".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Pure-Rust CPU inference with candle: quantized GGUF text models \
                          (gemma3, llama, qwen2, qwen3) and BERT sentence embeddings"
                .into(),
            capabilities: Capabilities {
                chat: true,
                completion: true,
                embeddings: true,
            },
            formats: vec!["gguf".into(), "safetensors".into()],
        }
    }

    fn load(
        &self,
        request: &LoadRequest,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> BackendResult<Box<dyn Model>> {
        configure_threads(request.threads);
        if !progress(0.0) {
            return Err(BackendError::Internal("the load was cancelled".into()));
        }
        load_model(request, progress)
    }
}
