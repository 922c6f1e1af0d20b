//! `fault`: a backend that misbehaves on command, for tests of how Corral
//! contains a crashing engine.
//!
//! A model is a file that starts with `GGUF` (as Corral's registry wants)
//! followed by text; `fail-load` anywhere in it makes the load fail, and
//! `abort-load` makes it `abort()` the process while loading.
//! Generation writes `tick ` once per token, every 20 ms, until
//! `max_tokens` or a cancel (a line `word: tock` in the file makes it
//! write `tock ` instead, so that tests can tell models apart, and a line
//! `pace: 1` one every millisecond), except when the prompt says:
//!
//! - `ABORT`: three ticks, then `abort()` — the process dies on the spot,
//!   as llama.cpp does on a failed `GGML_ASSERT`;
//! - `PANIC`: three ticks, then a panic (caught at the library boundary);
//! - `EXIT`: three ticks, then `exit(3)`;
//! - `HANG`: three ticks, then it sleeps for ever without looking at the
//!   cancel token, as an engine stuck in native code does.

use std::time::{Duration, Instant};

use corral_sdk::backend::{
    Backend, BackendError, BackendInfo, BackendResult, CancelToken, Capabilities, ChatMessage,
    FinishReason, GenerateRequest, GenerateSummary, LoadRequest, Model, ModelInfo, TokenEvent,
};

/// The time between two tokens, unless the file says `pace: <ms>`.
const TICK: Duration = Duration::from_millis(20);

#[derive(Default)]
pub struct Fault;

impl Backend for Fault {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "fault".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "misbehaves on command, for tests".into(),
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
        let text = std::fs::read(&request.path)
            .map_err(|e| BackendError::InvalidModel(format!("cannot read the file: {e}")))?;
        if !text.starts_with(b"GGUF") {
            return Err(BackendError::InvalidModel("not a fault model".into()));
        }
        let text = String::from_utf8_lossy(&text);
        if text.contains("abort-load") {
            eprintln!("fault: told to abort while loading");
            std::process::abort();
        }
        if text.contains("fail-load") {
            eprintln!("fault: told to fail to load");
            return Err(BackendError::Internal("told to fail to load".into()));
        }
        let word = text
            .lines()
            .find_map(|line| line.strip_prefix("word:"))
            .map_or("tick", str::trim);
        let tick = text
            .lines()
            .find_map(|line| line.strip_prefix("pace:"))
            .and_then(|ms| ms.trim().parse().ok())
            .map_or(TICK, Duration::from_millis);
        progress(1.0);
        Ok(Box::new(FaultModel {
            slots: request.slots.max(1),
            word: format!("{word} "),
            tick,
        }))
    }
}

struct FaultModel {
    slots: u32,
    /// Written once per token.
    word: String,
    /// The time between two tokens.
    tick: Duration,
}

impl Model for FaultModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            architecture: "fault".into(),
            capabilities: Capabilities {
                chat: true,
                completion: true,
                embeddings: false,
            },
            context_length: 4096,
            trained_context_length: None,
            slots: self.slots,
            vocab_size: 1,
            embedding_length: None,
            chat_template: None,
            chat_template_source: None,
            memory_bytes: 1 << 20,
        }
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        let begun = Instant::now();
        let prompt_tokens = request.prompt.split_whitespace().count() as u32;
        sink(TokenEvent::Started { prompt_tokens });
        let mut completion = 0;
        let mut first = None;
        let finish = loop {
            if cancel.is_cancelled() {
                break FinishReason::Cancelled;
            }
            if completion >= request.sampling.max_tokens {
                break FinishReason::Length;
            }
            if completion == 3 {
                if request.prompt.contains("ABORT") {
                    eprintln!("fault: GGML_ASSERT(told to abort) failed");
                    std::process::abort();
                }
                if request.prompt.contains("PANIC") {
                    panic!("told to panic");
                }
                if request.prompt.contains("EXIT") {
                    eprintln!("fault: exiting");
                    std::process::exit(3);
                }
                if request.prompt.contains("HANG") {
                    eprintln!("fault: hanging");
                    loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                }
            }
            std::thread::sleep(self.tick);
            sink(TokenEvent::Text {
                text: self.word.clone(),
            });
            first.get_or_insert_with(|| begun.elapsed());
            completion += 1;
        };
        Ok(GenerateSummary {
            finish_reason: finish,
            prompt_tokens,
            completion_tokens: completion,
            truncated_tokens: 0,
            cached_tokens: 0,
            time_to_first_token: first.unwrap_or_default().as_secs_f64(),
            total_time: begun.elapsed().as_secs_f64(),
        })
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> BackendResult<Vec<u32>> {
        let n = text.split_whitespace().count() + usize::from(add_bos);
        Ok(vec![0; n])
    }

    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> BackendResult<String> {
        let mut out: String = messages
            .iter()
            .map(|m| format!("{}: {}\n", m.role, m.content))
            .collect();
        if add_generation_prompt {
            out.push_str("assistant: ");
        }
        Ok(out)
    }
}

corral_sdk::export_backend!(Fault);
