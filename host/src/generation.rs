//! The generation service: the one path from a request to a model's answer
//! for chat answers, `/v1/chat/completions` and `/v1/completions`.
//!
//! It finds the model and checks the caller may use it, checks the quota,
//! runs the extensions' hooks (`before_prompt`, the stream filters,
//! `after_answer`), queues the job, and counts what the generation used
//! wherever it ends. Handlers only turn requests into a [`Request`] and
//! the [`Event`]s into their answers; what a chat stores is the chat's
//! business ([`crate::chat`]).

use std::time::Instant;

use corral_hooks::{
    Annotation, AnswerInfo, GenerationHooks, HookCaller, HookContext, PromptRequest, Rejection,
    Surface,
};
use corral_sdk::backend::{
    CancelToken, ChatMessage, FinishReason, GenerateSummary, SamplingParams, Truncation,
};
use tokio::sync::mpsc;

use crate::error::{ApiResult, AppError};
use crate::inference::{isolated, upstream, InferenceError, Job, JobEvent, Prompt};
use crate::model::{
    generation_source, Generation, ModelKind, ModelRecord, SamplingOverrides, User,
};
use crate::registry;
use crate::state::AppState;

/// A generation to run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The model's name.
    pub model: String,
    pub surface: Surface,
    pub prompt: Prompt,
    /// The caller's sampling settings; unset ones take the model's.
    pub sampling: SamplingOverrides,
    /// The chat it answers in; its turns keep to the slot holding its
    /// cache.
    pub chat_id: Option<String>,
    /// Whether extensions' hooks run on it (not on generations that
    /// extensions ask for themselves).
    pub hooks: bool,
    /// The id its generation is recorded under; `None` for a fresh one. A
    /// chat answer's names its run ([`crate::chat::run_id`]), so that the
    /// count a restart makes for an answer cut off by a crash is refused
    /// when this one was already recorded.
    pub record_as: Option<String>,
}

/// A generation under way.
pub struct Running {
    /// The model it runs on.
    pub model: ModelRecord,
    pub events: mpsc::UnboundedReceiver<Event>,
}

/// What a generation reports, in order: positions while queued,
/// `Started`, text, then exactly one of `Done` or `Failed`. Dropping the
/// receiver stops the generation (what it did is still counted).
#[derive(Debug)]
pub enum Event {
    Queued {
        position: usize,
    },
    /// A fallback answers instead of the model asked for (it is cooling
    /// down or failed before its first token). Comes before `Started`.
    Rerouted {
        /// The model that answers.
        model: String,
        /// Why the ones before it did not.
        reason: String,
    },
    Started {
        prompt_tokens: u32,
    },
    /// Answer text for the client, after the stream filters. `tokens` is
    /// how many generated tokens it covers, counting those a filter held
    /// back before.
    Text {
        text: String,
        tokens: u32,
    },
    Done(Box<Finished>),
    Failed {
        error: AppError,
    },
}

/// How a generation ended.
#[derive(Debug)]
pub struct Finished {
    pub summary: GenerateSummary,
    /// What extensions would store instead of the text sent.
    pub replacement: Option<String>,
    /// Notes extensions want stored with the answer.
    pub annotations: Vec<Annotation>,
}

/// Starts a generation for `caller`. Errors that come before the job is
/// queued (no such model, a spent quota, a full queue, an extension that
/// rejects the prompt) are returned here; later ones arrive as
/// [`Event::Failed`]. `cancel` stops it.
pub async fn start(
    state: &AppState,
    user: &User,
    request: Request,
    cancel: CancelToken,
) -> ApiResult<Running> {
    let record = registry::find_usable(state, user, &request.model).await?;
    start_on(state, user, record, request, cancel).await
}

/// [`start`] on a model already looked up (one `user` may use).
pub async fn start_on(
    state: &AppState,
    user: &User,
    record: ModelRecord,
    request: Request,
    cancel: CancelToken,
) -> ApiResult<Running> {
    // Bad settings are named before a model that cannot serve them.
    let mut sampling = request.sampling.apply(&record.sampling)?;
    if record.kind == ModelKind::Embedding {
        return Err(AppError::BadRequest(format!(
            "model `{}` is an embedding model; use /v1/embeddings",
            record.name
        )));
    }
    let spec = registry::load_spec(&state.config, &record).await?;
    let prompt_bytes = match &request.prompt {
        Prompt::Text(text) => text.len(),
        Prompt::Chat(messages) | Prompt::History(messages) => {
            messages.iter().map(|m| m.content.len()).sum()
        }
    };
    let mut prompt_tokens = crate::quota::estimate_tokens(prompt_bytes);
    if record.context_length > 0 {
        // A long chat is cut to fit the context.
        prompt_tokens = prompt_tokens.min(u64::from(record.context_length));
    }
    // What the prompt surely holds: a chat's history may be cut to fit the
    // context, never its system prompt and the message answered.
    let kept_bytes = match &request.prompt {
        Prompt::Text(text) => text.len(),
        Prompt::Chat(messages) => messages.iter().map(|m| m.content.len()).sum(),
        Prompt::History(messages) => {
            let system: usize = messages
                .iter()
                .filter(|m| m.role == "system")
                .map(|m| m.content.len())
                .sum();
            system + messages.last().map_or(0, |m| m.content.len())
        }
    };
    let at_least = crate::quota::surely_at_least(kept_bytes);
    let reservation =
        crate::quota::admit(state, user, &mut sampling, prompt_tokens, at_least).await?;
    let admitted_max_tokens = sampling.max_tokens;

    let mut prompt = request.prompt;
    let context = HookContext {
        caller: hook_caller(user),
        model: record.name.clone(),
        surface: request.surface,
        chat_id: request.chat_id.clone(),
        opted_in: if state.hooks.uses_opt_ins() {
            state.store.list_user_plugins(&user.id).await?
        } else {
            Vec::new()
        },
    };
    let mut hooks = if request.hooks {
        state.hooks.begin(&context).await
    } else {
        None
    };
    if let Some(hooks) = hooks.as_mut() {
        let mut hooked = to_hooks(&prompt, sampling);
        hooks.before_prompt(&mut hooked).await.map_err(rejected)?;
        hooked
            .sampling
            .validate()
            .map_err(|m| AppError::BadRequest(format!("an extension set bad sampling: {m}")))?;
        // Extensions may lower the allowance, never raise it.
        hooked.sampling.max_tokens = hooked.sampling.max_tokens.min(admitted_max_tokens);
        (prompt, sampling) = from_hooks(&prompt, hooked);
    }

    let fallbacks = route_specs(state, &record.fallbacks, Some(user)).await;
    let replicas = route_specs(state, &record.replicas, None).await;
    let job = Job {
        spec,
        user_id: user.id.clone(),
        prompt,
        sampling,
        truncation: Truncation::Error,
        cache_key: request.chat_id,
        fallbacks,
        replicas,
    };
    let jobs = state
        .inference
        .submit_with_cancel(job, cancel.clone())
        .map_err(inference_error)?;
    let (out, events) = mpsc::unbounded_channel();
    let follower = Follower {
        state: state.clone(),
        user_id: user.id.clone(),
        model: record.name.clone(),
        source: match request.surface {
            Surface::Chat => generation_source::CHAT,
            Surface::ChatCompletions | Surface::Completions => generation_source::OPENAI,
        },
        begun: Instant::now(),
        cancel,
        hooks,
        out,
        record_as: request.record_as,
        _reservation: reservation,
    };
    tokio::spawn(follower.run(jobs));
    Ok(Running {
        model: record,
        events,
    })
}

/// What the runtime needs to run the models `names` (a model's fallbacks
/// or replicas), in order: those that exist, generate and are ready to
/// serve. Others are passed over, as a gateway passes over a route it
/// cannot take. With `user`, only models that user may use: a fallback
/// answers as itself. A replica answers on behalf of the model that lists
/// it (its access rules, its usage), so its own access is not asked.
async fn route_specs(
    state: &AppState,
    names: &[String],
    user: Option<&User>,
) -> Vec<crate::inference::manager::LoadSpec> {
    let mut specs = Vec::new();
    for name in names {
        let found = match user {
            Some(user) => registry::find_usable(state, user, name).await.ok(),
            None => state
                .store
                .get_model_by_name(name)
                .await
                .ok()
                .flatten()
                .filter(ModelRecord::is_servable),
        };
        let Some(model) = found.filter(|m| m.kind != ModelKind::Embedding) else {
            continue;
        };
        match registry::load_spec(&state.config, &model).await {
            Ok(spec) => specs.push(spec),
            Err(err) => {
                tracing::debug!(model = %name, error = %err.body().message, "route passed over")
            }
        }
    }
    specs
}

/// An account as extensions see it.
pub fn hook_caller(user: &User) -> HookCaller {
    HookCaller {
        user_id: user.id.clone(),
        username: user.username.clone(),
        role: user.role,
    }
}

/// An extension's rejection as the client sees it.
fn rejected(rejection: Rejection) -> AppError {
    AppError::Rejected(rejection.to_string())
}

/// The prompt as extensions see it: the system prompt apart from the
/// turns; a text prompt is the only `user` message.
fn to_hooks(prompt: &Prompt, sampling: SamplingParams) -> PromptRequest {
    let (messages, system_prompt) = match prompt {
        Prompt::Chat(messages) | Prompt::History(messages) => {
            let system: Vec<&str> = messages
                .iter()
                .filter(|m| m.role == "system")
                .map(|m| m.content.as_str())
                .collect();
            let turns = messages
                .iter()
                .filter(|m| m.role != "system")
                .cloned()
                .collect();
            (turns, (!system.is_empty()).then(|| system.join("\n\n")))
        }
        Prompt::Text(text) => (
            vec![ChatMessage {
                role: "user".into(),
                content: text.clone(),
            }],
            None,
        ),
    };
    PromptRequest {
        messages,
        system_prompt,
        sampling,
        context: Vec::new(),
    }
}

/// The prompt again after the extensions: the context they added goes
/// into the system prompt (in front of a text prompt).
fn from_hooks(original: &Prompt, hooked: PromptRequest) -> (Prompt, SamplingParams) {
    let mut system = hooked.system_prompt.filter(|s| !s.trim().is_empty());
    if !hooked.context.is_empty() {
        let passages = hooked.context.join("\n\n");
        let block = format!("Context:\n\n{passages}");
        system = Some(match system {
            Some(s) => format!("{s}\n\n{block}"),
            None => block,
        });
    }
    let prompt = match original {
        Prompt::Text(_) => {
            let body: Vec<String> = hooked.messages.into_iter().map(|m| m.content).collect();
            let body = body.join("\n\n");
            Prompt::Text(match system {
                Some(s) => format!("{s}\n\n{body}"),
                None => body,
            })
        }
        Prompt::Chat(_) | Prompt::History(_) => {
            let mut messages = Vec::with_capacity(hooked.messages.len() + 1);
            if let Some(s) = system {
                messages.push(ChatMessage {
                    role: "system".into(),
                    content: s,
                });
            }
            messages.extend(hooked.messages);
            if matches!(original, Prompt::Chat(_)) {
                Prompt::Chat(messages)
            } else {
                Prompt::History(messages)
            }
        }
    };
    (prompt, hooked.sampling)
}

/// Maps runtime errors to API errors.
pub fn inference_error(err: InferenceError) -> AppError {
    use corral_sdk::backend::BackendError as B;
    match err {
        InferenceError::Rejected(r) => AppError::Busy {
            retry_after: 2,
            message: r.to_string(),
        },
        InferenceError::Backend(B::ContextOverflow(m))
        | InferenceError::Backend(B::InvalidRequest(m)) => AppError::field("messages", m),
        InferenceError::Backend(B::Unsupported(m)) => AppError::BadRequest(m),
        InferenceError::Backend(B::Internal(m)) if m.starts_with(isolated::WORKER_CRASHED) => {
            AppError::ModelWorker {
                code: "worker_crashed",
                message: m,
            }
        }
        InferenceError::Backend(B::Internal(m)) if m.starts_with(isolated::MODEL_FAILED) => {
            AppError::ModelWorker {
                code: "model_failed",
                message: m,
            }
        }
        InferenceError::Backend(B::Internal(m)) => match upstream_code(&m) {
            Some(code) => AppError::ModelWorker { code, message: m },
            None => AppError::Internal(anyhow::anyhow!(m)),
        },
        InferenceError::CoolingDown {
            retry_after,
            message,
        } => AppError::CoolingDown {
            retry_after,
            message,
        },
        // Its workers kept dying while it loaded.
        InferenceError::Load { ref reason, .. } if reason.contains(isolated::MODEL_FAILED) => {
            AppError::ModelWorker {
                code: "model_failed",
                message: err.to_string(),
            }
        }
        InferenceError::BackendMissing(_)
        | InferenceError::Capacity(_)
        | InferenceError::Load { .. } => AppError::Unavailable(err.to_string()),
        other => AppError::Internal(anyhow::anyhow!(other.to_string())),
    }
}

/// The error code of a remote model's (or worker node's) failure, from
/// its message.
fn upstream_code(message: &str) -> Option<&'static str> {
    [
        upstream::RATE_LIMITED,
        upstream::UNAVAILABLE,
        upstream::REFUSED,
        upstream::COOLING_DOWN,
        crate::inference::nodes::UNREACHABLE,
    ]
    .into_iter()
    .find(|code| message.starts_with(code))
}

/// Embeds `inputs` with `record` (an embedding model the caller may use)
/// for `user`: through the model's queue like a generation, counted in the
/// statistics and against the user's allowance. Returns the vectors, in
/// order, and the tokens read.
pub async fn embed(
    state: &AppState,
    user: &User,
    record: &ModelRecord,
    inputs: Vec<String>,
) -> ApiResult<(Vec<Vec<f32>>, u32)> {
    let not_embedding =
        || AppError::BadRequest(format!("model `{}` does not make embeddings", record.name));
    if record.kind != ModelKind::Embedding {
        return Err(not_embedding());
    }
    let input_bytes = inputs.iter().map(String::len).sum();
    let hold = crate::quota::hold_input(state, user, input_bytes).await?;
    // Embeddings wait in the model's queue like generations: the same
    // slots, the same per-user allowance. Leaving (a client that goes
    // away) drops the ticket or the permit.
    let spec = registry::load_spec(&state.config, record).await?;
    let mut ticket = state
        .inference
        .scheduler
        .enqueue(
            &spec.key,
            spec.request.slots.max(1) as usize,
            user.id.as_str(),
        )
        .map_err(|r| inference_error(r.into()))?;
    let permit = ticket.admitted().await;
    let loaded = state
        .inference
        .manager
        .get(&spec)
        .await
        .map_err(inference_error)?;
    if !loaded.info.capabilities.embeddings {
        return Err(not_embedding());
    }
    // The work and its count go on in a task of their own: a client that
    // leaves once the model is at work is counted all the same.
    let store = state.store.clone();
    let (user_id, model) = (user.id.clone(), record.name.clone());
    let work = tokio::spawn(async move {
        let begun = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let mut tokens = 0usize;
            for input in &inputs {
                tokens += loaded.model.tokenize(input, true)?.len();
            }
            let vectors = loaded.model.embed(&inputs)?;
            Ok::<_, corral_sdk::backend::BackendError>((vectors, tokens))
        })
        .await;
        drop(permit);
        if let Ok(Ok((_, tokens))) = &result {
            let generation = embedding_generation(&user_id, &model, *tokens, begun.elapsed());
            if let Err(err) = store.record_generation(&generation).await {
                tracing::warn!(%err, "could not record an embedding run");
            }
        }
        // Counted now: the hold can go.
        drop(hold);
        result
    });
    let (vectors, tokens) = work
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("the embedding task failed: {e}")))?
        .map_err(|e| AppError::Internal(anyhow::anyhow!("the embedding task failed: {e}")))?
        .map_err(|e| embedding_error(e.into()))?;
    let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
    state
        .metrics
        .record_embedding(&record.name, vectors.len(), tokens);
    Ok((vectors, tokens))
}

/// Maps errors of an embedding run: a bad input names `input`.
fn embedding_error(err: InferenceError) -> AppError {
    use corral_sdk::backend::BackendError as B;
    match err {
        InferenceError::Backend(B::InvalidRequest(m))
        | InferenceError::Backend(B::ContextOverflow(m)) => AppError::field("input", m),
        other => inference_error(other),
    }
}

/// An embedding run as a generation: its input tokens count against the
/// caller's allowance and in the statistics.
fn embedding_generation(
    user_id: &str,
    model: &str,
    tokens: usize,
    took: std::time::Duration,
) -> crate::model::Generation {
    crate::model::Generation {
        id: crate::model::new_id(),
        user_id: user_id.to_owned(),
        model: model.to_owned(),
        source: generation_source::OPENAI.to_owned(),
        prompt_tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
        cached_tokens: 0,
        completion_tokens: 0,
        time_to_first_token_ms: None,
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        status: crate::model::MessageStatus::Complete,
        at: crate::time::now(),
    }
}

/// Takes a job's events to their end in a task of its own: runs the
/// stream filters and `after_answer`, passes events on while the client
/// listens, and records the generation however it ends. A client that
/// goes away stops the job; what ran until then still counts.
struct Follower {
    state: AppState,
    user_id: String,
    model: String,
    source: &'static str,
    begun: Instant,
    cancel: CancelToken,
    hooks: Option<Box<dyn GenerationHooks>>,
    out: mpsc::UnboundedSender<Event>,
    /// See [`Request::record_as`].
    record_as: Option<String>,
    /// Held until the follower ends, after it has recorded the generation.
    _reservation: crate::quota::Reservation,
}

/// What a generation did before it ended.
#[derive(Default)]
struct SoFar {
    started: bool,
    prompt_tokens: u32,
    /// Pieces of text; a piece is about one token.
    pieces: u32,
    /// Pieces not yet passed on (a filter holds their text).
    unsent: u32,
    /// The text the client received.
    text: String,
}

impl Follower {
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<JobEvent>) {
        let mut so_far = SoFar::default();
        let mut client_gone = false;
        // A stream filter that failed closed: the job is stopped and the
        // client told why.
        let mut aborted: Option<AppError> = None;
        let mut next: Option<JobEvent> = None;
        let filters = self.hooks.as_ref().is_some_and(|h| h.filters_stream());
        loop {
            // The job's events are taken to their end even when the client
            // has left: the job may have started (its prompt read) before
            // its `Started` arrives here, and what it did must be counted.
            let event = match next.take() {
                Some(event) => Some(event),
                None => tokio::select! {
                    biased;
                    event = jobs.recv() => event,
                    () = self.out.closed(), if !client_gone => {
                        client_gone = true;
                        self.cancel.cancel();
                        continue;
                    }
                },
            };
            match event {
                Some(JobEvent::Queued { position }) => self.send(Event::Queued { position }),
                Some(JobEvent::Rerouted { name, reason }) => {
                    // What follows is the fallback's work, counted as such.
                    self.model = name.clone();
                    self.send(Event::Rerouted {
                        model: name,
                        reason,
                    });
                }
                Some(JobEvent::Started { prompt_tokens }) => {
                    so_far.started = true;
                    so_far.prompt_tokens = prompt_tokens;
                    self.send(Event::Started { prompt_tokens });
                }
                Some(JobEvent::Text(mut text)) => {
                    so_far.pieces = so_far.pieces.saturating_add(1);
                    so_far.unsent += 1;
                    if aborted.is_some() {
                        continue;
                    }
                    if filters {
                        // Pieces that are already waiting go to the filter
                        // together: fewer calls, no added delay.
                        loop {
                            match jobs.try_recv() {
                                Ok(JobEvent::Text(more)) => {
                                    text.push_str(&more);
                                    so_far.pieces = so_far.pieces.saturating_add(1);
                                    so_far.unsent += 1;
                                }
                                Ok(other) => {
                                    next = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        if text.is_empty() {
                            // Counted above; nothing for the filters.
                            continue;
                        }
                        match self.filter(text).await {
                            Ok(text) => self.emit(&mut so_far, text),
                            Err(err) => {
                                self.cancel.cancel();
                                aborted = Some(err);
                            }
                        }
                    } else {
                        self.emit(&mut so_far, text);
                    }
                }
                Some(JobEvent::Done(summary)) => {
                    if let Some(err) = aborted {
                        self.record(Generation::finished(
                            &self.user_id,
                            &self.model,
                            self.source,
                            &summary,
                        ))
                        .await;
                        self.send(Event::Failed { error: err });
                        return;
                    }
                    if filters {
                        match self.finish_filters().await {
                            Ok(rest) => self.emit(&mut so_far, rest),
                            Err(err) => {
                                self.record_finished(&summary, &so_far).await;
                                self.send(Event::Failed { error: err });
                                return;
                            }
                        }
                    }
                    let (replacement, annotations) = self.after_answer(&summary, &so_far).await;
                    self.record_finished(&summary, &so_far).await;
                    self.send(Event::Done(Box::new(Finished {
                        summary,
                        replacement,
                        annotations,
                    })));
                    return;
                }
                Some(JobEvent::Failed(err)) => {
                    self.record_failed(&so_far).await;
                    self.send(Event::Failed {
                        error: inference_error(err),
                    });
                    return;
                }
                None => {
                    self.record_failed(&so_far).await;
                    self.send(Event::Failed {
                        error: AppError::Internal(anyhow::anyhow!(
                            "the generation ended without a result"
                        )),
                    });
                    return;
                }
            }
        }
    }

    fn send(&self, event: Event) {
        let _ = self.out.send(event);
    }

    /// Passes text on with the pieces it covers; empty text waits.
    fn emit(&self, so_far: &mut SoFar, text: String) {
        if text.is_empty() {
            return;
        }
        so_far.text.push_str(&text);
        let tokens = std::mem::take(&mut so_far.unsent);
        self.send(Event::Text { text, tokens });
    }

    async fn filter(&mut self, text: String) -> Result<String, AppError> {
        match self.hooks.as_mut() {
            Some(hooks) => hooks.on_chunk(text).await.map_err(rejected),
            None => Ok(text),
        }
    }

    async fn finish_filters(&mut self) -> Result<String, AppError> {
        match self.hooks.as_mut() {
            Some(hooks) => hooks.finish().await.map_err(rejected),
            None => Ok(String::new()),
        }
    }

    async fn after_answer(
        &mut self,
        summary: &GenerateSummary,
        so_far: &SoFar,
    ) -> (Option<String>, Vec<Annotation>) {
        let Some(hooks) = self.hooks.as_mut() else {
            return (None, Vec::new());
        };
        let info = AnswerInfo {
            text: so_far.text.clone(),
            finish_reason: finish_reason(summary.finish_reason).to_owned(),
            prompt_tokens: summary.prompt_tokens,
            completion_tokens: summary.completion_tokens,
        };
        let changes = hooks.after_answer(&info).await;
        (changes.replacement, changes.annotations)
    }

    /// Counts a generation that ended; one stopped before it started did
    /// nothing and is not counted.
    async fn record_finished(&self, summary: &GenerateSummary, so_far: &SoFar) {
        if !so_far.started && summary.finish_reason == FinishReason::Cancelled {
            return;
        }
        self.state
            .metrics
            .record_generation(&self.model, summary.into());
        self.record(Generation::finished(
            &self.user_id,
            &self.model,
            self.source,
            summary,
        ))
        .await;
    }

    /// A failed generation counts what it had read and written.
    async fn record_failed(&self, so_far: &SoFar) {
        let ms = u64::try_from(self.begun.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut generation = Generation::failed(&self.user_id, &self.model, self.source, ms);
        generation.prompt_tokens = so_far.prompt_tokens;
        generation.completion_tokens = so_far.pieces;
        self.record(generation).await;
    }

    async fn record(&self, mut generation: Generation) {
        if let Some(id) = &self.record_as {
            generation.id.clone_from(id);
        }
        if let Err(err) = self.state.store.record_generation(&generation).await {
            tracing::warn!(%err, "could not record a generation");
        }
    }
}

/// How an answer ended, as `after_answer` is told.
fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::StopSequence => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn a_history_goes_to_the_hooks_without_its_system_prompt_and_comes_back_whole() {
        let prompt = Prompt::History(vec![
            msg("system", "Be brief."),
            msg("user", "Hi"),
            msg("assistant", "Hello"),
            msg("user", "Bye"),
        ]);
        let mut hooked = to_hooks(&prompt, SamplingParams::default());
        assert_eq!(hooked.system_prompt.as_deref(), Some("Be brief."));
        assert_eq!(hooked.messages.len(), 3);
        hooked.context.push("Paris is in France.".into());
        let (back, _) = from_hooks(&prompt, hooked);
        let Prompt::History(messages) = back else {
            panic!("a history stays a history");
        };
        assert_eq!(messages[0].role, "system");
        assert_eq!(
            messages[0].content,
            "Be brief.\n\nContext:\n\nParis is in France."
        );
        assert_eq!(
            messages[1..],
            [
                msg("user", "Hi"),
                msg("assistant", "Hello"),
                msg("user", "Bye")
            ]
        );
    }

    #[test]
    fn a_text_prompt_is_one_user_message_and_context_goes_in_front() {
        let prompt = Prompt::Text("Once upon a time".into());
        let mut hooked = to_hooks(&prompt, SamplingParams::default());
        assert_eq!(hooked.messages, [msg("user", "Once upon a time")]);
        assert_eq!(hooked.system_prompt, None);
        hooked.context.push("A dragon.".into());
        let (back, _) = from_hooks(&prompt, hooked);
        let Prompt::Text(text) = back else {
            panic!("a text prompt stays text");
        };
        assert_eq!(text, "Context:\n\nA dragon.\n\nOnce upon a time");
    }
}
