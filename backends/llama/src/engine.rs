//! The decode thread: it owns the llama.cpp context and serves every active
//! sequence of a model together (continuous batching).
//!
//! Callers send a [`Job`] and receive [`Event`]s. Each step builds one batch
//! with one token for every sequence that is generating plus as much prompt
//! of newer sequences as fits in `n_batch`, decodes it once and samples each
//! sequence with its own sampler. Two things abort the whole process in
//! llama.cpp and are guarded here: a batch larger than `n_batch`, and
//! sampling at a position whose logits were not requested.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use corral_sdk::backend::{BackendError, BackendResult, CancelToken, FinishReason, SamplingParams};
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
    let mut state = Scheduler::new(model, config.slots as usize, limits.context_length, &ctx);
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
        // Sliding-window layers keep only their window: far less memory, and
        // sequences are only ever removed whole.
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
    /// The index in this step's batch whose logits belong to this sequence.
    logits_at: Option<i32>,
    sampler: LlamaSampler,
    text: TokenText,
    completion_tokens: u32,
    first_token_at: Option<Instant>,
}

struct Scheduler<'m> {
    model: &'m RawModel,
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
    fn new(model: &'m RawModel, slots: usize, n_ctx_seq: u32, ctx: &LlamaContext<'_>) -> Self {
        let n_batch = ctx.n_batch() as usize;
        Scheduler {
            model,
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
        self.admit();
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
                    first_token_at: None,
                })));
                false
            } else {
                true
            }
        });
    }

    fn admit(&mut self) {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            if job.events.send(Event::Started).is_err() {
                continue;
            }
            let sampler = build_sampler(&job.sampling, self.n_vocab, &self.eog, &job.tokens);
            self.admitted += 1;
            *slot = Some(Seq {
                seq_id: index as i32,
                admitted: self.admitted,
                text: TokenText::new(job.sampling.stop.clone()),
                job,
                prompt_fed: 0,
                n_past: 0,
                pending: None,
                in_batch: false,
                logits_at: None,
                sampler,
                completion_tokens: 0,
                first_token_at: None,
            });
        }
    }

    fn drop_cancelled_active(&mut self, ctx: &mut LlamaContext<'_>) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|s| s.job.is_cancelled()) {
                if let Some(seq) = slot.take() {
                    finish(ctx, seq, Ok(FinishReason::Cancelled));
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
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|s| s.in_batch) {
                if let Some(seq) = slot.take() {
                    finish(ctx, seq, Err(BackendError::Internal(why.to_string())));
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
            if seq.pending.take().is_some() {
                seq.n_past += 1;
            } else {
                seq.n_past = seq.prompt_fed as u32;
            }
            let Some(at) = seq.logits_at.take() else {
                continue;
            };
            let token = seq.sampler.sample(ctx, at);
            let outcome = self.on_token(index, token);
            if let Some(result) = outcome {
                if let Some(seq) = self.slots[index].take() {
                    finish(ctx, seq, result);
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

/// Frees the sequence's cache cells and slot, and reports the end.
fn finish(ctx: &mut LlamaContext<'_>, seq: Seq, result: BackendResult<FinishReason>) {
    let _ = ctx.clear_kv_cache_seq(Some(seq.seq_id as u32), None, None);
    let done = result.map(|reason| Finish {
        reason,
        completion_tokens: seq.completion_tokens,
        first_token_at: seq.first_token_at,
    });
    let _ = seq.job.events.send(Event::Done(done));
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
        let last_n = params.repeat_last_n.min(i32::MAX as u32) as i32;
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
