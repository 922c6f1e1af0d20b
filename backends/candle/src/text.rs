//! Text generation over a GGUF model: a pool of sequence slots sharing one
//! copy of the weights, sampling, stop strings and UTF-8-safe streaming.
//!
//! A slot keeps its cache after a request, with the tokens it holds. The
//! next request takes the free slot whose cache shares the longest prefix
//! with its prompt (under the same cache key) and reads only the rest, so a
//! chat's next turn costs its new tokens rather than its whole history.

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

/// One sequence's model state. The stock candle-transformers models take
/// the whole prompt in one pass; Gemma 3 (Corral's own code) reads it in
/// chunks.
enum Engine {
    Gemma3(Gemma3),
    Llama(Box<Stock<quantized_llama::ModelWeights>>),
    Qwen2(quantized_qwen2::ModelWeights),
    Qwen3(quantized_qwen3::ModelWeights),
}

/// A stock llama model, with a copy of it as loaded to start over
/// from (the copy shares the weights).
struct Stock<M> {
    model: M,
    loaded: M,
    /// Bytes of attention masks the model may be holding. It keeps one for
    /// every prompt length and position it has read and never frees them,
    /// so a long run of requests that each read on from the cache must end
    /// in a fresh copy.
    mask_bytes: usize,
}

/// How many bytes of masks a stock model may gather before its cache is
/// given up (and the masks with it).
const MASK_BUDGET: usize = 64 << 20;

/// Context used when the request says 0 and the model was trained longer.
const DEFAULT_CONTEXT_CAP: u32 = 8192;

/// The largest trained context a file may claim (a million tokens).
const MAX_TRAINED_CONTEXT: u32 = 1 << 20;

impl<M: Clone> Stock<M> {
    fn new(model: M) -> Self {
        Stock {
            loaded: model.clone(),
            model,
            mask_bytes: 0,
        }
    }

    fn reset(&mut self) {
        self.model = self.loaded.clone();
        self.mask_bytes = 0;
    }

    /// Counts the mask a read of `n` tokens at `pos` builds.
    fn reading(&mut self, n: usize, pos: usize) {
        if n > 1 {
            self.mask_bytes = self.mask_bytes.saturating_add(n * (pos + n));
        }
    }
}

impl Engine {
    fn reset(&mut self) {
        match self {
            Engine::Gemma3(m) => m.reset(),
            Engine::Llama(m) => m.reset(),
            Engine::Qwen2(m) => m.clear_kv_cache(),
            Engine::Qwen3(m) => m.clear_kv_cache(),
        }
    }

    /// Whether a cache holding `cached` tokens can be cut back to its first
    /// `keep` (at least one) and read on from there.
    ///
    /// The stock llama model can only append to its cache: a prompt may
    /// reuse it only when it starts with everything in it. The stock qwen2
    /// model could too, but it keeps every attention mask it builds and
    /// cannot be copied to start afresh, so reading on from its cache would
    /// grow its memory without bound: it reads every prompt whole. The stock
    /// qwen3 model's CPU path reads prompts into one cache and answers into
    /// another, so a prompt read after an answer would miss the answer's
    /// keys: it reads every prompt whole too.
    fn can_keep(&self, keep: usize, cached: usize) -> bool {
        match self {
            Engine::Gemma3(m) => m.pos() == cached && m.can_rewind(keep),
            Engine::Llama(m) => keep == cached && m.mask_bytes < MASK_BUDGET,
            Engine::Qwen2(_) | Engine::Qwen3(_) => false,
        }
    }

    /// Cuts the cache back to its first `keep` tokens when `can_keep` allows,
    /// else empties it. Returns the tokens kept.
    fn keep(&mut self, keep: usize, cached: usize) -> usize {
        if keep == 0 || !self.can_keep(keep, cached) {
            self.reset();
            return 0;
        }
        match self {
            Engine::Gemma3(m) => m.rewind(keep),
            _ => keep,
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
            Engine::Gemma3(m) => {
                if m.pos() != pos {
                    candle_core::bail!("the cache holds {} tokens, not {pos}", m.pos());
                }
                m.forward(tokens)?
            }
            other => {
                let x = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
                match other {
                    Engine::Llama(m) => {
                        m.reading(tokens.len(), pos);
                        m.model.forward(&x, pos)?
                    }
                    Engine::Qwen2(m) => m.forward(&x, pos)?,
                    Engine::Qwen3(m) => m.forward(&x, pos)?,
                    Engine::Gemma3(_) => unreachable!(),
                }
            }
        };
        logits.flatten_all()?.to_vec1::<f32>()
    }
}

/// A sequence slot: its model state and what its cache holds.
struct Slot {
    engine: Engine,
    /// The tokens in the engine's cache, from position 0.
    tokens: Vec<u32>,
    /// The cache key of the request that left them.
    key: Option<String>,
    /// When a request last took this slot (the pool's clock).
    last_used: u64,
}

impl Slot {
    fn new(engine: Engine) -> Self {
        Slot {
            engine,
            tokens: Vec::new(),
            key: None,
            last_used: 0,
        }
    }

    /// Reads `tokens` after those cached. A failed read may leave some
    /// layers ahead of others, so the cache is emptied.
    fn feed(&mut self, tokens: &[u32]) -> candle_core::Result<Vec<f32>> {
        match self.engine.forward(tokens, self.tokens.len()) {
            Ok(logits) => {
                self.tokens.extend_from_slice(tokens);
                Ok(logits)
            }
            Err(e) => {
                self.clear();
                Err(e)
            }
        }
    }

    fn clear(&mut self) {
        self.engine.reset();
        self.tokens.clear();
    }
}

struct Free {
    slots: Vec<Slot>,
    clock: u64,
}

/// A free-slot list that waits without missing a cancellation.
struct Pool {
    free: Mutex<Free>,
    returned: Condvar,
}

struct Lease<'a> {
    pool: &'a Pool,
    slot: Option<Slot>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(mut slot) = self.slot.take() {
            // A panic may have stopped a read half way.
            if std::thread::panicking() {
                slot.clear();
            }
            lock(&self.pool.free).slots.push(slot);
            self.pool.returned.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// Takes the free slot that `rank` ranks highest, waiting for one.
    fn acquire<K: Ord>(
        &self,
        cancel: &CancelToken,
        rank: impl Fn(&Slot) -> K,
    ) -> Option<Lease<'_>> {
        let mut free = lock(&self.free);
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            let best = (0..free.slots.len()).max_by_key(|&i| rank(&free.slots[i]));
            if let Some(best) = best {
                free.clock += 1;
                let mut slot = free.slots.swap_remove(best);
                slot.last_used = free.clock;
                return Some(Lease {
                    pool: self,
                    slot: Some(slot),
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
    /// Broken in messages before their template renders them.
    controls: chat_template::ControlTexts,
    /// Whether slots keep their caches for later requests.
    prompt_cache: bool,
}

/// How many tokens `a` and `b` share from the start.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
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
        // The stock models size their position tables from the file's
        // figure: one no model has would abort on allocating them.
        if trained.is_some_and(|t| t > MAX_TRAINED_CONTEXT) {
            return Err(LoadError::Invalid(format!(
                "the file says the model was trained on {} tokens of context; more than {} \
                 is not believable",
                trained.unwrap_or_default(),
                MAX_TRAINED_CONTEXT
            )));
        }
        // candle's stock llama has a fixed position table.
        let most = if arch == "llama" {
            quantized_llama::MAX_SEQ_LEN as u32
        } else {
            trained.filter(|&t| t > 0).unwrap_or(u32::MAX)
        };
        let context_length = match request.context_length {
            0 => trained
                .unwrap_or(4096)
                .clamp(1, DEFAULT_CONTEXT_CAP.min(most)) as usize,
            n if n > most => {
                return Err(LoadError::Invalid(format!(
                    "`context_length` {n} is above the {most} tokens this model can hold here"
                )))
            }
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
            "llama" | "qwen3" => {
                // Read once: the slots' copies share the weights and keep
                // their own caches.
                drop(g);
                let (content, mut reader) = Gguf::open(path)?.into_parts();
                if arch == "llama" {
                    let w = quantized_llama::ModelWeights::from_gguf(
                        content,
                        &mut reader,
                        &Device::Cpu,
                    )?;
                    engines
                        .extend((0..slots).map(|_| Engine::Llama(Box::new(Stock::new(w.clone())))));
                } else {
                    let w = quantized_qwen3::ModelWeights::from_gguf(
                        content,
                        &mut reader,
                        &Device::Cpu,
                    )?;
                    engines.extend((0..slots).map(|_| Engine::Qwen3(w.clone())));
                }
                if !progress(0.95) {
                    return Err(LoadError::Cancelled);
                }
                std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
            }
            "qwen2" => {
                // candle's qwen2 cannot be copied: each slot reads its own.
                drop(g);
                for _ in 0..slots {
                    let (content, mut reader) = Gguf::open(path)?.into_parts();
                    engines.push(Engine::Qwen2(quantized_qwen2::ModelWeights::from_gguf(
                        content,
                        &mut reader,
                        &Device::Cpu,
                    )?));
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
        let controls = chat_template::ControlTexts::new(tokenizer.control_texts.clone());
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
                free: Mutex::new(Free {
                    slots: engines.into_iter().map(Slot::new).collect(),
                    clock: 0,
                }),
                returned: Condvar::new(),
            },
            tokenizer,
            info,
            bos_text,
            eos_text,
            controls,
            prompt_cache: request.prompt_cache,
        })
    }

    /// How much of `slot`'s cache a request with `prompt` and `key` may
    /// keep: the prefix they share, less the last prompt token (its logits
    /// give the first answer token), when the slot was left under the same
    /// key and its cache can be cut there.
    fn reusable(&self, slot: &Slot, prompt: &[u32], key: &Option<String>) -> usize {
        if !self.prompt_cache || slot.key != *key {
            return 0;
        }
        let shared = common_prefix(&slot.tokens, prompt).min(prompt.len().saturating_sub(1));
        if shared > 0 && slot.engine.can_keep(shared, slot.tokens.len()) {
            shared
        } else {
            0
        }
    }

    /// Ranks a free slot for a request: the longest useful prefix first,
    /// then a slot the same key left, then the least recently used.
    fn rank(
        &self,
        slot: &Slot,
        prompt: &[u32],
        key: &Option<String>,
    ) -> (usize, bool, std::cmp::Reverse<u64>) {
        let shared = self.reusable(slot, prompt, key);
        // A prefix counts when taking it keeps at least half of what the
        // slot holds: a short shared start (BOS, a system prompt) is not
        // worth evicting another conversation for.
        let useful = if shared * 2 >= slot.tokens.len() {
            shared
        } else {
            0
        };
        (useful, slot.key == *key, std::cmp::Reverse(slot.last_used))
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
        let summary =
            |finish_reason, completion_tokens, cached: usize, ttft: Option<f64>| GenerateSummary {
                finish_reason,
                prompt_tokens,
                completion_tokens,
                truncated_tokens: truncated,
                time_to_first_token: ttft.unwrap_or_else(|| started.elapsed().as_secs_f64()),
                total_time: started.elapsed().as_secs_f64(),
                cached_tokens: cached as u32,
            };

        let key = &request.cache_key;
        let Some(mut lease) = self
            .pool
            .acquire(cancel, |slot| self.rank(slot, &tokens, key))
        else {
            return Ok(summary(FinishReason::Cancelled, 0, 0, None));
        };
        let Some(slot) = lease.slot.as_mut() else {
            return Err(BackendError::Internal("no sequence slot".into()));
        };
        sink(TokenEvent::Started { prompt_tokens });
        let reusable = self.reusable(slot, &tokens, key);
        let cached = slot.engine.keep(reusable, slot.tokens.len());
        slot.tokens.truncate(cached);
        slot.key.clone_from(key);

        let mut logits = Vec::new();
        let mut pos = cached;
        for chunk in tokens[cached..].chunks(slot.engine.chunk()) {
            if cancel.is_cancelled() {
                return Ok(summary(FinishReason::Cancelled, 0, cached, None));
            }
            logits = slot.feed(chunk).map_err(|e| {
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
            logits = slot
                .feed(&[next])
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
        Ok(summary(finish, completion, cached, ttft))
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
            &self.controls.neutral_messages(messages),
            add_generation_prompt,
            &self.bos_text,
            &self.eos_text,
        )
        .map_err(BackendError::InvalidRequest)
    }
}
