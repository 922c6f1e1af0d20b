//! The llama.cpp backend: checks a GGUF file, loads it with progress and
//! starts its decode thread.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use corral_sdk::backend::{
    Backend, BackendError, BackendInfo, BackendResult, Capabilities, LoadRequest, Model,
};
use corral_sdk::chat_template;
use llama_cpp_2::llama_backend::LlamaBackend as RawBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel as RawModel;
use llama_cpp_2::LlamaModelLoadError;

use crate::engine::{Engine, EngineConfig};
use crate::log;
use crate::model::{LlamaModel, LoadedParts, TemplateSource};

/// Context used when the request says 0 and the model was trained longer.
const DEFAULT_CONTEXT_CAP: u32 = 8192;
/// llama.cpp allows up to 256 sequences; more slots than this is a mistake.
const MAX_SLOTS: u32 = 64;

/// Corral's llama.cpp backend.
#[derive(Debug, Default)]
pub struct LlamaBackend;

/// llama.cpp's global state: initialised once, kept for the process's life
/// (a second `init` fails, and freeing it under loaded models is unsound).
fn raw_backend() -> BackendResult<&'static RawBackend> {
    static RAW: OnceLock<Result<RawBackend, String>> = OnceLock::new();
    RAW.get_or_init(|| {
        log::install();
        RawBackend::init().map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| BackendError::Internal(format!("cannot initialise llama.cpp: {e}")))
}

impl Backend for LlamaBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "llama".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "llama.cpp: GGUF text models on the CPU, with continuous batching".into(),
            capabilities: Capabilities {
                chat: true,
                completion: true,
                embeddings: false,
            },
            formats: vec!["gguf".into()],
        }
    }

    fn load(
        &self,
        request: &LoadRequest,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> BackendResult<Box<dyn Model>> {
        let slots = match request.slots {
            0 => 1,
            n if n <= MAX_SLOTS => n,
            n => {
                return Err(BackendError::InvalidRequest(format!(
                    "`slots` must be between 1 and {MAX_SLOTS}, not {n}"
                )))
            }
        };
        let threads = match request.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get() as i32),
            n => i32::try_from(n.min(1024)).unwrap_or(1024),
        };
        let path = Path::new(&request.path);
        let file_size = check_gguf_file(path)?;
        let backend = raw_backend()?;
        let raw = Arc::new(load_weights(backend, path, progress)?);

        let trained = raw.n_ctx_train();
        let context_length = match request.context_length {
            0 => trained.clamp(1, DEFAULT_CONTEXT_CAP),
            n if trained > 0 && n > trained => {
                return Err(BackendError::InvalidRequest(format!(
                    "`context_length` {n} is above the {trained} tokens this model was trained with"
                )))
            }
            n => n,
        };
        let architecture = raw
            .meta_val_str("general.architecture")
            .unwrap_or_else(|_| "unknown".into());
        let template = resolve_template(&raw, &architecture, request.chat_template.as_deref())?;
        let engine = Engine::start(
            backend,
            Arc::clone(&raw),
            EngineConfig {
                context_length,
                slots,
                threads,
                prompt_cache: request.prompt_cache,
                sliding_window: sliding_window(&raw, &architecture),
            },
        )?;
        let memory_bytes =
            file_size + kv_cache_bytes(&raw, &architecture, engine.limits.total_context);
        Ok(Box::new(LlamaModel::new(LoadedParts {
            engine,
            raw,
            architecture,
            slots,
            template,
            memory_bytes,
        })))
    }
}

/// Checks that `path` is a readable file that starts like a GGUF file;
/// returns its size.
fn check_gguf_file(path: &Path) -> BackendResult<u64> {
    let shown = path.display();
    let invalid = |why: String| BackendError::InvalidModel(why);
    let meta = std::fs::metadata(path).map_err(|e| invalid(format!("{shown}: {e}")))?;
    if meta.is_dir() {
        return Err(invalid(format!("{shown} is a directory, not a GGUF file")));
    }
    if meta.len() == 0 {
        return Err(invalid(format!("{shown} is empty")));
    }
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| invalid(format!("{shown} cannot be read: {e}")))?;
    if &magic != b"GGUF" {
        return Err(invalid(format!(
            "{shown} is not a GGUF file (it does not start with the `GGUF` magic)"
        )));
    }
    Ok(meta.len())
}

/// Loads the weights on a helper thread so that llama.cpp's progress
/// callback (which must be `'static`) can reach the caller's `progress`
/// through channels, and so that the load's log lines can be captured.
fn load_weights(
    backend: &'static RawBackend,
    path: &Path,
    progress: &mut dyn FnMut(f32) -> bool,
) -> BackendResult<RawModel> {
    let shown = path.display().to_string();
    let (progress_tx, progress_rx) = mpsc::channel::<f32>();
    let (answer_tx, answer_rx) = mpsc::channel::<bool>();
    let mut cancelled = false;
    let (loaded, lines) = std::thread::scope(|scope| {
        // Owned by this closure so that a panicking `progress` drops it and
        // the loader, waiting for an answer, gives up instead of hanging.
        let answer_tx = answer_tx;
        let loader = scope.spawn(move || {
            let params = LlamaModelParams::default().with_progress_callback(move |p| {
                progress_tx.send(p).is_ok() && answer_rx.recv().unwrap_or(false)
            });
            log::capture(|| RawModel::load_from_file(backend, path, &params))
        });
        for p in progress_rx {
            let go_on = !cancelled && progress(p.clamp(0.0, 1.0));
            cancelled |= !go_on;
            let _ = answer_tx.send(go_on);
        }
        loader.join()
    })
    .map_err(|_| BackendError::Internal(format!("loading {shown} panicked")))?;
    match loaded {
        Ok(model) => Ok(model),
        Err(_) if cancelled => Err(BackendError::Internal(format!(
            "loading {shown} was cancelled"
        ))),
        Err(LlamaModelLoadError::NullResult) => {
            let reason = log::failure_reason(&lines)
                .unwrap_or_else(|| "llama.cpp refused it without saying why".into());
            Err(BackendError::InvalidModel(format!("{shown}: {reason}")))
        }
        Err(e) => Err(BackendError::InvalidModel(format!("{shown}: {e}"))),
    }
}

/// The chat template: the request's override, else the file's own, else the
/// architecture's default. The file's is used only if it parses.
fn resolve_template(
    raw: &RawModel,
    architecture: &str,
    overridden: Option<&str>,
) -> BackendResult<Option<(String, TemplateSource)>> {
    let parses = |t: &str| {
        let probe = [corral_sdk::backend::ChatMessage {
            role: "user".into(),
            content: "Hello".into(),
        }];
        match chat_template::render(t, &probe, true, "", "") {
            Err(e) if e.contains("does not parse") => Err(e),
            _ => Ok(()),
        }
    };
    if let Some(t) = overridden.filter(|t| !t.trim().is_empty()) {
        parses(t).map_err(|e| BackendError::InvalidRequest(format!("`chat_template`: {e}")))?;
        return Ok(Some((t.to_string(), TemplateSource::Override)));
    }
    if let Ok(t) = raw.meta_val_str("tokenizer.chat_template") {
        if !t.trim().is_empty() && parses(&t).is_ok() {
            return Ok(Some((t, TemplateSource::File)));
        }
    }
    Ok(chat_template::default_template(architecture)
        .map(|t| (t.to_string(), TemplateSource::Default)))
}

/// The attention window of the model's sliding-window layers, from the
/// file's metadata; 0 when it has none.
fn sliding_window(raw: &RawModel, architecture: &str) -> u32 {
    raw.meta_val_str(&format!("{architecture}.attention.sliding_window"))
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0)
}

/// Bytes of an f16 KV cache of `cells` cells (an upper bound: layers with a
/// sliding window keep less).
fn kv_cache_bytes(raw: &RawModel, architecture: &str, cells: u32) -> u64 {
    let meta_u64 = |key: &str| {
        raw.meta_val_str(&format!("{architecture}.{key}"))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let n_head = u64::from(raw.n_head().max(1));
    let head_dim = (raw.n_embd().max(0) as u64) / n_head;
    let key_len = meta_u64("attention.key_length").unwrap_or(head_dim);
    let value_len = meta_u64("attention.value_length").unwrap_or(head_dim);
    u64::from(cells)
        * u64::from(raw.n_layer())
        * u64::from(raw.n_head_kv())
        * (key_len + value_len)
        * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma_ends_its_turn_on_eos_and_end_of_turn() {
        let Ok(path) = std::env::var("CORRAL_DEMO_MODEL") else {
            panic!(
                "CORRAL_DEMO_MODEL is not set: fetch the demo model with \
                 `export CORRAL_DEMO_MODEL=\"$(scripts/fetch-demo-model.sh | tail -1)\"`"
            );
        };
        let backend = raw_backend().unwrap();
        let params = LlamaModelParams::default().with_vocab_only(true);
        let raw = RawModel::load_from_file(backend, path, &params).unwrap();
        let vocab = raw.vocab();
        use llama_cpp_2::token::LlamaToken;
        assert!(vocab.is_eog(LlamaToken(1)), "<eos>");
        assert!(vocab.is_eog(LlamaToken(106)), "<end_of_turn>");
        assert!(!vocab.is_eog(LlamaToken(105)), "<start_of_turn>");
    }

    #[test]
    fn files_that_are_not_gguf_are_refused_before_llama_cpp() {
        let dir = std::env::temp_dir().join(format!("corral-llama-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = check_gguf_file(&dir).unwrap_err();
        assert!(
            matches!(&err, BackendError::InvalidModel(m) if m.contains("directory")),
            "{err:?}"
        );
        let file = dir.join("model.bin");
        std::fs::write(&file, b"PK\x03\x04 not a gguf").unwrap();
        let err = check_gguf_file(&file).unwrap_err();
        assert!(
            matches!(&err, BackendError::InvalidModel(m) if m.contains("model.bin") && m.contains("GGUF")),
            "{err:?}"
        );
        std::fs::write(&file, b"GGUF").unwrap();
        assert_eq!(check_gguf_file(&file).unwrap(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
