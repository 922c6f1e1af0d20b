//! The decode thread: it owns the llama.cpp context and serves every active
//! sequence of a model together (continuous batching).
//!
//! Callers send a [`Job`] and receive [`Event`]s. Each step builds one batch
//! with one token for every sequence that is generating plus as much prompt
//! of newer sequences as fits in `n_batch`, decodes it once and samples each
//! sequence with its own sampler. Two things abort the whole process in
//! llama.cpp and are guarded here: a batch larger than `n_batch`, and
//! sampling at a position whose logits were not requested.
//!
//! A slot keeps its sequence's cache after the request ends, together with
//! the tokens it holds. The next request goes to the free slot whose cached
//! tokens share the longest prefix with its prompt and reads only the rest,
//! so a chat's next turn costs its new tokens, not its whole history.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use corral_sdk::backend::{
    BackendError, BackendResult, CancelToken, FinishReason, SamplingParams, MAX_REPEAT_LAST_N,
};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend as RawBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel as RawModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use crate::log;
use corral_sdk::text::{StopOutcome, TokenText};

/// Largest number of tokens decoded in one step. Bigger batches read long
/// prompts a little faster but stall the streams of other sequences longer.
const MAX_BATCH: u32 = 512;

/// How the context is set up.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    /// Tokens per sequence.
    pub context_length: u32,
    pub slots: u32,
    pub threads: i32,
    /// Keep each slot's cache between requests.
    pub prompt_cache: bool,
    /// The model's attention window on sliding-window layers (0: none).
    pub sliding_window: u32,
}

/// What the context really got (llama.cpp rounds sizes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EngineLimits {
    /// Tokens per sequence.
    pub context_length: u32,
    /// Tokens in the whole KV cache.
    pub total_context: u32,
}

/// A generation request, tokenized and checked by the caller.
pub(crate) struct Job {
    pub tokens: Vec<LlamaToken>,
    /// Whose cache the request may use (see `GenerateRequest::cache_key`).
    pub cache_key: Option<String>,
    pub sampling: SamplingParams,
    pub cancel: CancelToken,
    /// Raised when the caller stopped listening (it unwound).
    pub abandoned: CancelToken,
    pub events: Sender<Event>,
}

impl Job {
    fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled() || self.abandoned.is_cancelled()
    }
}

/// What the decode thread tells a caller.
#[derive(Debug)]
pub(crate) enum Event {
    /// The request got a slot; its prompt is being read.
    Started,
    Text(String),
    Done(BackendResult<Finish>),
}

#[derive(Debug)]
pub(crate) struct Finish {
    pub reason: FinishReason,
    pub completion_tokens: u32,
    /// Prompt tokens that were already in the slot's cache.
    pub cached_tokens: u32,
    pub first_token_at: Option<Instant>,
}

/// The handle on a decode thread; dropping it stops the thread.
pub(crate) struct Engine {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    pub limits: EngineLimits,
}

impl Engine {
    pub fn start(
        backend: &'static RawBackend,
        model: Arc<RawModel>,
        config: EngineConfig,
    ) -> BackendResult<Engine> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<BackendResult<EngineLimits>>(1);
        let thread = std::thread::Builder::new()
            .name("corral-llama-decode".into())
            .spawn(move || run(backend, &model, &config, &jobs_rx, &ready_tx))
            .map_err(|e| BackendError::Internal(format!("cannot start the decode thread: {e}")))?;
        let limits = match ready_rx.recv() {
            Ok(Ok(limits)) => limits,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(BackendError::Internal(
                    "the decode thread stopped while creating the context".into(),
                ));
            }
        };
        Ok(Engine {
            jobs: Some(jobs_tx),
            thread: Some(thread),
            limits,
        })
    }

    pub fn submit(&self, job: Job) -> BackendResult<()> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| BackendError::Internal("the decode thread has stopped".into()))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    backend: &RawBackend,
    model: &RawModel,
    config: &EngineConfig,
    jobs: &Receiver<Job>,
    ready: &mpsc::SyncSender<BackendResult<EngineLimits>>,
) {
    let (ctx, lines) = log::capture(|| new_context(backend, model, config));
    let mut ctx = match ctx {
        Ok(ctx) => ctx,
        Err(e) => {
            let reason = log::failure_reason(&lines).unwrap_or_else(|| e.to_string());
            let _ = ready.send(Err(BackendError::Internal(format!(
                "llama.cpp cannot create a context of {} tokens × {} slots: {reason}",
                config.context_length, config.slots
            ))));
            return;
        }
    };
    let total_context = ctx.n_ctx();
    let limits = EngineLimits {
        context_length: total_context / config.slots.max(1),
        total_context,
    };
    if ready.send(Ok(limits)).is_err() {
        return;
    }
    let mut state = Scheduler::new(model, config, limits.context_length, &ctx);
    while state.step(&mut ctx, jobs) {}
}

fn new_context<'m>(
    backend: &RawBackend,
    model: &'m RawModel,
    config: &EngineConfig,
) -> Result<LlamaContext<'m>, String> {
    let total = config
        .context_length
        .checked_mul(config.slots)
        .and_then(NonZeroU32::new)
        .ok_or("the context is too large")?;
    let n_batch = MAX_BATCH.min(total.get()).max(config.slots);
    let params = LlamaContextParams::default()
        .with_n_ctx(Some(total))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch)
        .with_n_seq_max(config.slots)
        // Each sequence gets its own `context_length` cells, so one long
        // chat cannot starve the others of cache mid-generation.
        .with_kv_unified(false)
        // Sliding-window layers keep only their window (plus a batch): far
        // less memory. A cached prefix whose window was pushed out is then
        // read again (see `reuse_prefix`).
        .with_swa_full(false)
        .with_n_threads(config.threads)
        .with_n_threads_batch(config.threads);
    model
        .new_context(backend, params)
        .map_err(|e| e.to_string())
}

struct Seq {
    seq_id: i32,
    admitted: u64,
    job: Job,
    /// Prompt tokens already in the batch or the cache.
    prompt_fed: usize,
    /// Next position of this sequence in the cache.
    n_past: u32,
    /// A sampled token that still has to be decoded.
    pending: Option<LlamaToken>,
    /// Whether this step's batch holds tokens of this sequence.
    in_batch: bool,
    /// The tokens in this sequence's cache, at positions `0..n_past`.
    history: Vec<LlamaToken>,
    /// Prompt tokens found in the cache at admission.
    cached_tokens: u32,
    /// The index in this step's batch whose logits belong to this sequence.
    logits_at: Option<i32>,
    sampler: LlamaSampler,
    text: TokenText,
    completion_tokens: u32,
    first_token_at: Option<Instant>,
}

/// What a slot's cache holds while no request uses it.
#[derive(Default)]
struct SlotCache {
    /// The tokens at positions `0..tokens.len()` of the slot's sequence.
    tokens: Vec<LlamaToken>,
    /// The key of the request that left them: only a request with the
    /// same key may read them.
    key: Option<String>,
    /// When the slot was last given to a request (admission count).
    last_used: u64,
}

struct Scheduler<'m> {
    model: &'m RawModel,
    prompt_cache: bool,
    sliding_window: u32,
    caches: Vec<SlotCache>,
    n_vocab: i32,
    /// End-of-generation tokens, banned for `ignore_eos` requests.
    eog: Vec<LlamaToken>,
    n_ctx_seq: u32,
    n_batch: usize,
    slots: Vec<Option<Seq>>,
    queue: VecDeque<Job>,
    admitted: u64,
    batch: LlamaBatch<'static>,
    piece: Vec<u8>,
}

impl<'m> Scheduler<'m> {
    fn new(
        model: &'m RawModel,
        config: &EngineConfig,
        n_ctx_seq: u32,
        ctx: &LlamaContext<'_>,
    ) -> Self {
        let n_batch = ctx.n_batch() as usize;
        let slots = config.slots as usize;
        Scheduler {
            model,
            prompt_cache: config.prompt_cache,
            sliding_window: config.sliding_window,
            caches: (0..slots).map(|_| SlotCache::default()).collect(),
            n_vocab: model.n_vocab(),
            eog: {
                let vocab = model.vocab();
                (0..model.n_vocab())
                    .map(LlamaToken)
                    .filter(|t| vocab.is_eog(*t))
                    .collect()
            },
            n_ctx_seq,
            n_batch,
            slots: (0..slots).map(|_| None).collect(),
            queue: VecDeque::new(),
            admitted: 0,
            batch: LlamaBatch::new(n_batch, 1),
            piece: Vec::new(),
        }
    }

    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.slots.iter().all(Option::is_none)
    }

    /// One decode step. Returns false when the thread should end.
    fn step(&mut self, ctx: &mut LlamaContext<'_>, jobs: &Receiver<Job>) -> bool {
        if self.is_idle() {
            match jobs.recv() {
                Ok(job) => self.queue.push_back(job),
                Err(_) => return false,
            }
        }
        while let Ok(job) = jobs.try_recv() {
            self.queue.push_back(job);
        }
        self.drop_cancelled_waiting();
        self.admit(ctx);
        self.drop_cancelled_active(ctx);
        if self.build_batch().is_err() {
            // Cannot happen (every add is within the batch's size); fail the
            // sequences rather than the thread if it ever does.
            self.fail_batched(ctx, "cannot build the batch");
            return true;
        }
        if self.batch.n_tokens() == 0 {
            return true;
        }
        if let Err(e) = ctx.decode(&mut self.batch) {
            self.fail_batched(ctx, &format!("llama.cpp could not decode: {e}"));
            return true;
        }
        self.sample_all(ctx);
        true
    }

    fn drop_cancelled_waiting(&mut self) {
        self.queue.retain(|job| {
            if job.is_cancelled() {
                let _ = job.events.send(Event::Done(Ok(Finish {
                    reason: FinishReason::Cancelled,
                    completion_tokens: 0,
                    cached_tokens: 0,
                    first_token_at: None,
                })));
                false
            } else {
                true
            }
        });
    }

    fn admit(&mut self, ctx: &mut LlamaContext<'_>) {
        while self.slots.iter().any(Option::is_none) {
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            if job.events.send(Event::Started).is_err() {
                continue;
            }
            let (index, shared) = self.pick_slot(&job);
            let reused = self.reuse_prefix(ctx, index, shared);
            let sampler = build_sampler(&job.sampling, self.n_vocab, &self.eog, &job.tokens);
            self.admitted += 1;
            let cache = &mut self.caches[index];
            cache.last_used = self.admitted;
            cache.key.clone_from(&job.cache_key);
            let mut history = std::mem::take(&mut cache.tokens);
            history.truncate(reused);
            self.slots[index] = Some(Seq {
                seq_id: index as i32,
                admitted: self.admitted,
                text: TokenText::new(job.sampling.stop.clone()),
                job,
                prompt_fed: reused,
                n_past: reused as u32,
                pending: None,
                in_batch: false,
                history,
                cached_tokens: reused as u32,
                logits_at: None,
                sampler,
                completion_tokens: 0,
                first_token_at: None,
            });
        }
    }

    /// The free slot for `job`: the one whose cache (under the same key)
    /// shares the longest useful prefix with its prompt; when none does,
    /// one that the same key left, else the least recently used. Also
    /// returns how much of that slot's cache `job` may keep.
    fn pick_slot(&self, job: &Job) -> (usize, usize) {
        let free = (0..self.slots.len()).filter(|&i| self.slots[i].is_none());
        free.map(|i| (i, self.usable_prefix(&self.caches[i], job)))
            .max_by_key(|&(i, shared)| {
                let cache = &self.caches[i];
                // A prefix counts when taking it keeps at least half of what
                // the slot holds; a short shared start (BOS, a system prompt)
                // is not worth evicting another conversation for.
                let useful = if shared * 2 >= cache.tokens.len() {
                    shared
                } else {
                    0
                };
                let same_key = cache.key == job.cache_key;
                (useful, same_key, std::cmp::Reverse(cache.last_used))
            })
            .expect("admit runs only while a slot is free")
    }

    /// How much of `cache` `job` may keep: nothing unless the cache was left
    /// under `job`'s key, else the shared prefix, less the last prompt
    /// token, which must be read for its logits.
    fn usable_prefix(&self, cache: &SlotCache, job: &Job) -> usize {
        if !self.prompt_cache || cache.key != job.cache_key {
            return 0;
        }
        common_prefix(&cache.tokens, &job.tokens).min(job.tokens.len().saturating_sub(1))
    }

    /// Keeps the first `shared` tokens of slot `index`'s cache (what
    /// `usable_prefix` allows) if they can be continued, drops the rest of
    /// the slot's cells, and returns how many it kept.
    fn reuse_prefix(&mut self, ctx: &mut LlamaContext<'_>, index: usize, shared: usize) -> usize {
        let seq_id = index as u32;
        let cached = self.caches[index].tokens.len();
        let mut keep = shared;
        if keep > 0 && self.sliding_window > 0 {
            // Sliding-window layers keep only their last window (plus a
            // batch) of cells; reading on from `keep` needs the window
            // before it, which a long answer after it may have pushed out.
            let oldest = ctx.kv_cache_seq_pos_min(seq_id as i32);
            let needed = keep.saturating_sub(self.sliding_window as usize);
            if oldest < 0 || oldest as usize > needed {
                keep = 0;
            }
        }
        if keep < cached || keep == 0 {
            let from = (keep > 0).then_some(keep as u32);
            let removed = ctx.clear_kv_cache_seq(Some(seq_id), from, None);
            if keep > 0 && !matches!(removed, Ok(true)) {
                let _ = ctx.clear_kv_cache_seq(Some(seq_id), None, None);
                keep = 0;
            }
        }
        keep
    }

    fn drop_cancelled_active(&mut self, ctx: &mut LlamaContext<'_>) {
        for index in 0..self.slots.len() {
            if self.slots[index]
                .as_ref()
                .is_some_and(|s| s.job.is_cancelled())
            {
                if let Some(seq) = self.slots[index].take() {
                    self.finish(ctx, seq, Ok(FinishReason::Cancelled));
                }
            }
        }
    }

    fn build_batch(&mut self) -> Result<(), llama_cpp_2::llama_batch::BatchAddError> {
        self.batch.clear();
        for seq in self.slots.iter_mut().flatten() {
            seq.logits_at = None;
            seq.in_batch = false;
            if let Some(token) = seq.pending {
                if self.batch.n_tokens() as usize >= self.n_batch {
                    break;
                }
                self.batch
                    .add(token, seq.n_past as i32, &[seq.seq_id], true)?;
                seq.in_batch = true;
                seq.logits_at = Some(self.batch.n_tokens() - 1);
            }
        }
        let mut prefilling: Vec<&mut Seq> = self
            .slots
            .iter_mut()
            .flatten()
            .filter(|s| s.pending.is_none() && s.prompt_fed < s.job.tokens.len())
            .collect();
        prefilling.sort_by_key(|s| s.admitted);
        for seq in prefilling {
            let room = self.n_batch.saturating_sub(self.batch.n_tokens() as usize);
            if room == 0 {
                break;
            }
            let end = seq.job.tokens.len().min(seq.prompt_fed + room);
            seq.in_batch = true;
            for i in seq.prompt_fed..end {
                let last = i + 1 == seq.job.tokens.len();
                self.batch
                    .add(seq.job.tokens[i], i as i32, &[seq.seq_id], last)?;
                if last {
                    seq.logits_at = Some(self.batch.n_tokens() - 1);
                }
            }
            seq.prompt_fed = end;
        }
        Ok(())
    }

    /// Fails every sequence with a token in the current batch.
    fn fail_batched(&mut self, ctx: &mut LlamaContext<'_>, why: &str) {
        for index in 0..self.slots.len() {
            if self.slots[index].as_ref().is_some_and(|s| s.in_batch) {
                if let Some(seq) = self.slots[index].take() {
                    self.finish(ctx, seq, Err(BackendError::Internal(why.to_string())));
                }
            }
        }
    }

    fn sample_all(&mut self, ctx: &mut LlamaContext<'_>) {
        for index in 0..self.slots.len() {
            let Some(seq) = self.slots[index].as_mut() else {
                continue;
            };
            if !seq.in_batch {
                continue;
            }
            seq.in_batch = false;
            if let Some(token) = seq.pending.take() {
                seq.history.push(token);
                seq.n_past += 1;
            } else {
                let fed = &seq.job.tokens[seq.n_past as usize..seq.prompt_fed];
                seq.history.extend_from_slice(fed);
                seq.n_past = seq.prompt_fed as u32;
            }
            let Some(at) = seq.logits_at.take() else {
                continue;
            };
            let token = seq.sampler.sample(ctx, at);
            let outcome = self.on_token(index, token);
            if let Some(result) = outcome {
                if let Some(seq) = self.slots[index].take() {
                    self.finish(ctx, seq, result);
                }
            }
        }
    }

    /// Handles a sampled token; `Some` when the sequence is done.
    fn on_token(&mut self, index: usize, token: LlamaToken) -> Option<BackendResult<FinishReason>> {
        let n_ctx_seq = self.n_ctx_seq;
        let n_vocab = self.n_vocab;
        let vocab = self.model.vocab();
        let seq = self.slots[index].as_mut()?;
        seq.first_token_at.get_or_insert_with(Instant::now);
        if token.0 < 0 || token.0 >= n_vocab {
            return Some(Err(BackendError::Internal(format!(
                "the sampler returned token {} outside the vocabulary",
                token.0
            ))));
        }
        if vocab.is_eog(token) {
            return Some(Ok(flush(seq, FinishReason::Stop)));
        }
        seq.completion_tokens += 1;
        self.piece.clear();
        vocab.token_to_piece_into(token, &mut self.piece, false, None);
        match seq.text.push(&self.piece) {
            StopOutcome::Continue(text) => send_text(seq, text),
            StopOutcome::Stopped(text) => {
                send_text(seq, text);
                return Some(Ok(FinishReason::StopSequence));
            }
        }
        if seq.completion_tokens >= seq.job.sampling.max_tokens || seq.n_past >= n_ctx_seq {
            return Some(Ok(flush(seq, FinishReason::Length)));
        }
        seq.pending = Some(token);
        None
    }
}

impl Scheduler<'_> {
    /// Frees the slot and reports the end. The sequence's cells stay for
    /// the next request unless the prompt cache is off or the request
    /// failed (a failed decode leaves the cells in doubt).
    fn finish(
        &mut self,
        ctx: &mut LlamaContext<'_>,
        seq: Seq,
        result: BackendResult<FinishReason>,
    ) {
        let cache = &mut self.caches[seq.seq_id as usize];
        if self.prompt_cache && result.is_ok() {
            cache.tokens = seq.history;
        } else {
            cache.tokens = Vec::new();
            cache.key = None;
            let _ = ctx.clear_kv_cache_seq(Some(seq.seq_id as u32), None, None);
        }
        let done = result.map(|reason| Finish {
            reason,
            completion_tokens: seq.completion_tokens,
            cached_tokens: seq.cached_tokens,
            first_token_at: seq.first_token_at,
        });
        let _ = seq.job.events.send(Event::Done(done));
    }
}

/// How many tokens `a` and `b` share from the start.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn send_text(seq: &Seq, text: String) {
    if !text.is_empty() {
        let _ = seq.job.events.send(Event::Text(text));
    }
}

/// Emits what was held back, when generation ends other than by a stop string.
fn flush(seq: &mut Seq, reason: FinishReason) -> FinishReason {
    match seq.text.finish() {
        StopOutcome::Stopped(text) => {
            send_text(seq, text);
            FinishReason::StopSequence
        }
        StopOutcome::Continue(text) => {
            send_text(seq, text);
            reason
        }
    }
}

fn build_sampler(
    params: &SamplingParams,
    n_vocab: i32,
    eog: &[LlamaToken],
    prompt: &[LlamaToken],
) -> LlamaSampler {
    let mut chain = Vec::new();
    if params.ignore_eos && !eog.is_empty() {
        let bans: Vec<LlamaLogitBias> = eog
            .iter()
            .map(|t| LlamaLogitBias::new(*t, f32::NEG_INFINITY))
            .collect();
        chain.push(LlamaSampler::logit_bias(n_vocab, &bans));
    }
    let penalize = params.repeat_penalty != 1.0 && params.repeat_last_n > 0;
    if penalize {
        // llama.cpp keeps a buffer of this many tokens per sampler: no
        // more than a context holds.
        let last_n = params.repeat_last_n.min(MAX_REPEAT_LAST_N) as i32;
        chain.push(LlamaSampler::penalties(
            n_vocab,
            last_n,
            params.repeat_penalty,
            0.0,
            0.0,
        ));
    }
    if params.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if params.top_k > 0 {
            chain.push(LlamaSampler::top_k(params.top_k.min(i32::MAX as u32) as i32));
        }
        if params.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(params.top_p, 1));
        }
        if params.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(params.min_p, 1));
        }
        chain.push(LlamaSampler::temp(params.temperature));
        chain.push(LlamaSampler::dist(seed32(params.seed)));
    }
    let mut sampler = LlamaSampler::chain_simple(chain);
    if penalize {
        // The penalty also looks back into the prompt, as llama.cpp's server does.
        let from = prompt.len().saturating_sub(params.repeat_last_n as usize);
        sampler.accept_many(&prompt[from..]);
    }
    sampler
}

/// llama.cpp seeds are u32, and u32::MAX means "random".
fn seed32(seed: Option<u64>) -> u32 {
    match seed {
        None => u32::MAX,
        Some(s) => ((s as u32) ^ ((s >> 32) as u32)).min(u32::MAX - 1),
    }
}
