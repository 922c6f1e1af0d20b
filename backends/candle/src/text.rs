//! Text generation over a GGUF model: a pool of sequence slots sharing one
//! copy of the weights, sampling, stop strings and UTF-8-safe streaming.

use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_qwen2, quantized_qwen3};
use corral_sdk::backend::{
    BackendError, BackendResult, CancelToken, Capabilities, ChatMessage, FinishReason,
    GenerateRequest, GenerateSummary, LoadRequest, Model, ModelInfo, TokenEvent,
};
use corral_sdk::chat_template;
use corral_sdk::text::{StopOutcome, TokenText};

use crate::error::describe;
use crate::gemma3::{self, Gemma3};
use crate::gguf::{Gguf, LoadError};
use crate::gguf_tokenizer::GgufTokenizer;
use crate::sampling::Sampler;

/// One sequence's model state. The stock candle-transformers models cannot
/// read several tokens at a non-zero position, so they are fed the whole
/// prompt in one pass from position 0.
enum Engine {
    Gemma3(Gemma3),
    Llama(quantized_llama::ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
}

impl Engine {
    fn reset(&mut self) {
        match self {
            Engine::Gemma3(m) => m.reset(),
            Engine::Llama(m) => m.clear_kv_cache(),
            Engine::Qwen2(m) => m.clear_kv_cache(),
            Engine::Qwen3(m) => m.clear_kv_cache(),
        }
    }

    /// How many prompt tokens one forward pass may take.
    fn chunk(&self) -> usize {
        match self {
            Engine::Gemma3(_) => 512,
            _ => usize::MAX,
        }
    }

    /// Reads `tokens` at position `pos` and returns the last logits.
    fn forward(&mut self, tokens: &[u32], pos: usize) -> candle_core::Result<Vec<f32>> {
        let logits = match self {
            Engine::Gemma3(m) => m.forward(tokens)?,
            other => {
                let x = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
                match other {
                    Engine::Llama(m) => m.forward(&x, pos)?,
                    Engine::Qwen2(m) => m.forward(&x, pos)?,
                    Engine::Qwen3(m) => m.forward(&x, pos)?,
                    Engine::Gemma3(_) => unreachable!(),
                }
            }
        };
        logits.flatten_all()?.to_vec1::<f32>()
    }
}

/// A free-slot list that waits without missing a cancellation.
struct Pool {
    free: Mutex<Vec<Engine>>,
    returned: Condvar,
}

struct Lease<'a> {
    pool: &'a Pool,
    engine: Option<Engine>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.engine.take() {
            lock(&self.pool.free).push(e);
            self.pool.returned.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    fn acquire(&self, cancel: &CancelToken) -> Option<Lease<'_>> {
        let mut free = lock(&self.free);
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            if let Some(engine) = free.pop() {
                return Some(Lease {
                    pool: self,
                    engine: Some(engine),
                });
            }
            free = self
                .returned
                .wait_timeout(free, Duration::from_millis(20))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

pub struct TextModel {
    pool: Pool,
    tokenizer: GgufTokenizer,
    info: ModelInfo,
    bos_text: String,
    eos_text: String,
}

/// An internal error naming the operation that failed, on one line.
fn internal(what: &str, e: &candle_core::Error) -> BackendError {
    BackendError::Internal(format!("{what}: {}", describe(e)))
}

impl TextModel {
    pub fn load(
        path: &Path,
        request: &LoadRequest,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> Result<Self, LoadError> {
        let mut g = Gguf::open(path)?;
        if !progress(0.02) {
            return Err(LoadError::Cancelled);
        }
        let tokenizer = GgufTokenizer::from_gguf(&g)?;
        if !progress(0.1) {
            return Err(LoadError::Cancelled);
        }
        let arch = g.architecture.clone();
        let trained = g.u32_opt(&format!("{arch}.context_length"))?;
        let context_length = match request.context_length {
            0 => trained.unwrap_or(4096) as usize,
            n => n as usize,
        };
        let slots = request.slots.clamp(1, 64) as usize;
        let file_template = g.string_opt("tokenizer.chat_template").map(str::to_string);

        let mut engines = Vec::with_capacity(slots);
        let memory_bytes = match arch.as_str() {
            "gemma3" => {
                let w = gemma3::load(&mut g, context_length, progress)?;
                if w.config().vocab_size != tokenizer.vocab_size() {
                    return Err(LoadError::Invalid(
                        "the vocabulary and the embedding table differ in size".into(),
                    ));
                }
                for _ in 0..slots {
                    engines.push(Engine::Gemma3(Gemma3::new(w.clone())));
                }
                w.memory_bytes()
            }
            "llama" | "qwen2" | "qwen3" => {
                drop(g);
                for _ in 0..slots {
                    let (content, mut reader) = Gguf::open(path)?.into_parts();
                    let reader = &mut reader;
                    let engine = match arch.as_str() {
                        "llama" => Engine::Llama(quantized_llama::ModelWeights::from_gguf(
                            content,
                            reader,
                            &Device::Cpu,
                        )?),
                        "qwen2" => Engine::Qwen2(quantized_qwen2::ModelWeights::from_gguf(
                            content,
                            reader,
                            &Device::Cpu,
                        )?),
                        _ => Engine::Qwen3(quantized_qwen3::ModelWeights::from_gguf(
                            content,
                            reader,
                            &Device::Cpu,
                        )?),
                    };
                    engines.push(engine);
                    if !progress(0.1 + 0.85 * engines.len() as f32 / slots as f32) {
                        return Err(LoadError::Cancelled);
                    }
                }
                std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) * slots as u64
            }
            other => {
                return Err(LoadError::Invalid(format!(
                    "architecture `{other}` is not supported by the candle backend \
                     (gemma3, llama, qwen2, qwen3 are)"
                )))
            }
        };

        let (chat_template, source) = match (&request.chat_template, file_template) {
            (Some(t), _) => (Some(t.clone()), Some("override")),
            (None, Some(t)) => (Some(t), Some("file")),
            (None, None) => match chat_template::default_template(&arch) {
                Some(t) => (Some(t.to_string()), Some("default")),
                None => (None, None),
            },
        };
        let token_text = |id: Option<u32>| {
            id.and_then(|i| tokenizer.inner().id_to_token(i))
                .unwrap_or_default()
        };
        let bos_text = token_text(tokenizer.bos);
        let eos_text = token_text(tokenizer.eos);
        let info = ModelInfo {
            architecture: arch,
            capabilities: Capabilities {
                chat: chat_template.is_some(),
                completion: true,
                embeddings: false,
            },
            context_length: context_length as u32,
            trained_context_length: trained,
            slots: slots as u32,
            vocab_size: tokenizer.vocab_size() as u32,
            embedding_length: None,
            chat_template,
            chat_template_source: source.map(str::to_string),
            memory_bytes,
        };
        progress(1.0);
        Ok(TextModel {
            pool: Pool {
                free: Mutex::new(engines),
                returned: Condvar::new(),
            },
            tokenizer,
            info,
            bos_text,
            eos_text,
        })
    }
}

impl Model for TextModel {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        let started = Instant::now();
        request
            .sampling
            .validate()
            .map_err(BackendError::InvalidRequest)?;
        let tokens = self
            .tokenizer
            .encode(&request.prompt, request.add_bos)
            .map_err(BackendError::InvalidRequest)?;
        if tokens.is_empty() {
            return Err(BackendError::InvalidRequest("the prompt is empty".into()));
        }
        let mut tokens = tokens;
        let truncated = request.truncation.apply(
            &mut tokens,
            request.add_bos && self.tokenizer.bos.is_some(),
            self.info.context_length,
            request.sampling.max_tokens,
        )?;
        let prompt_tokens = tokens.len() as u32;
        let ctx = self.info.context_length as usize;
        let summary = |finish_reason, completion_tokens, ttft: Option<f64>| GenerateSummary {
            finish_reason,
            prompt_tokens,
            completion_tokens,
            truncated_tokens: truncated,
            time_to_first_token: ttft.unwrap_or_else(|| started.elapsed().as_secs_f64()),
            total_time: started.elapsed().as_secs_f64(),
            cached_tokens: 0,
        };

        let Some(mut lease) = self.pool.acquire(cancel) else {
            return Ok(summary(FinishReason::Cancelled, 0, None));
        };
        let Some(engine) = lease.engine.as_mut() else {
            return Err(BackendError::Internal("no sequence slot".into()));
        };
        sink(TokenEvent::Started { prompt_tokens });
        engine.reset();

        let mut logits = Vec::new();
        let mut pos = 0;
        for chunk in tokens.chunks(engine.chunk()) {
            if cancel.is_cancelled() {
                return Ok(summary(FinishReason::Cancelled, 0, None));
            }
            logits = engine.forward(chunk, pos).map_err(|e| {
                internal(
                    &format!("reading prompt tokens {pos}..{} failed", pos + chunk.len()),
                    &e,
                )
            })?;
            pos += chunk.len();
        }

        let mut sampler = Sampler::new(&request.sampling);
        let mut history = tokens;
        let mut stream = TokenText::new(request.sampling.stop.clone());
        let mut ttft = None;
        let mut completion = 0u32;
        let finish = loop {
            if request.sampling.ignore_eos {
                for &t in &self.tokenizer.end_of_generation {
                    if let Some(l) = logits.get_mut(t as usize) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
            let next = sampler.sample(&mut logits, &history);
            if ttft.is_none() {
                ttft = Some(started.elapsed().as_secs_f64());
            }
            if self.tokenizer.end_of_generation.contains(&next) {
                break FinishReason::Stop;
            }
            completion += 1;
            history.push(next);
            match stream.push(self.tokenizer.piece(next)) {
                StopOutcome::Continue(text) => {
                    if !text.is_empty() {
                        sink(TokenEvent::Text { text });
                    }
                }
                StopOutcome::Stopped(text) => {
                    if !text.is_empty() {
                        sink(TokenEvent::Text { text });
                    }
                    break FinishReason::StopSequence;
                }
            }
            if completion >= request.sampling.max_tokens || pos >= ctx {
                break FinishReason::Length;
            }
            if cancel.is_cancelled() {
                break FinishReason::Cancelled;
            }
            logits = engine
                .forward(&[next], pos)
                .map_err(|e| internal(&format!("decoding at position {pos} failed"), &e))?;
            pos += 1;
        };
        let finish = match finish {
            FinishReason::StopSequence => finish,
            _ => match stream.finish() {
                StopOutcome::Continue(text) => {
                    if !text.is_empty() {
                        sink(TokenEvent::Text { text });
                    }
                    finish
                }
                StopOutcome::Stopped(text) => {
                    if !text.is_empty() {
                        sink(TokenEvent::Text { text });
                    }
                    FinishReason::StopSequence
                }
            },
        };
        Ok(summary(finish, completion, ttft))
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> BackendResult<Vec<u32>> {
        self.tokenizer
            .encode(text, add_bos)
            .map_err(BackendError::InvalidRequest)
    }

    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> BackendResult<String> {
        let Some(template) = &self.info.chat_template else {
            return Err(BackendError::Unsupported(
                "this model has no chat template".into(),
            ));
        };
        chat_template::render(
            template,
            messages,
            add_generation_prompt,
            &self.bos_text,
            &self.eos_text,
        )
        .map_err(BackendError::InvalidRequest)
    }
}
