//! The inference runtime: backend libraries, loaded models, admission
//! queues, and the generation jobs that tie them together.
//!
//! A job waits in its model's queue (reporting its position), gets the
//! model (loading it on first use), renders the chat template, and streams
//! the backend's events to the caller. A caller that goes away cancels its
//! job: the backend stops within a decode step and frees the slot.

pub mod backends;
pub mod history;
pub mod isolated;
pub mod manager;
pub mod node;
pub mod nodes;
pub mod scheduler;
pub mod upstream;
pub mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use corral_sdk::backend::{
    BackendError, CancelToken, ChatMessage, GenerateRequest, GenerateSummary, SamplingParams,
    TokenEvent, Truncation,
};
use tokio::sync::mpsc;

use self::manager::{LoadSpec, LoadedModel, ModelManager};
use self::scheduler::{Rejected, Scheduler, Update};

/// Errors of the runtime.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferenceError {
    #[error("no `{0}` backend is installed on this host")]
    BackendMissing(String),
    /// `bad_file` when the backend found the file itself unusable (not a
    /// passing shortage such as memory).
    #[error("model `{model}` could not be loaded: {reason}")]
    Load {
        model: String,
        reason: String,
        bad_file: bool,
    },
    #[error("{0}")]
    Capacity(String),
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("inference failed: {0}")]
    Internal(String),
    /// Every model that could answer is a remote upstream cooling down.
    #[error("{message}")]
    CoolingDown { retry_after: u64, message: String },
}

/// `text` with the model `hidden`, where it is named (in backquotes), named
/// `shown` instead.
fn shown_name(text: String, hidden: &str, shown: &str) -> String {
    text.replace(&format!("`{hidden}`"), &format!("`{shown}`"))
}

impl InferenceError {
    /// The error as the caller may see it when a replica (`hidden`) of
    /// the model it asked for (`shown`) failed: the replica's own name
    /// (perhaps one of a model the caller cannot see) becomes the model's.
    fn shown_as(self, hidden: &str, shown: &str) -> InferenceError {
        let rename = |text: String| shown_name(text, hidden, shown);
        match self {
            InferenceError::Load {
                model,
                reason,
                bad_file,
            } => InferenceError::Load {
                model: if model == hidden {
                    shown.to_owned()
                } else {
                    model
                },
                reason: rename(reason),
                bad_file,
            },
            InferenceError::Capacity(m) => InferenceError::Capacity(rename(m)),
            InferenceError::Internal(m) => InferenceError::Internal(rename(m)),
            InferenceError::CoolingDown {
                retry_after,
                message,
            } => InferenceError::CoolingDown {
                retry_after,
                message: rename(message),
            },
            // Upstreams and nodes name the model in their failures.
            InferenceError::Backend(err) => InferenceError::Backend(match err {
                BackendError::InvalidModel(m) => BackendError::InvalidModel(rename(m)),
                BackendError::InvalidRequest(m) => BackendError::InvalidRequest(rename(m)),
                BackendError::ContextOverflow(m) => BackendError::ContextOverflow(rename(m)),
                BackendError::Unsupported(m) => BackendError::Unsupported(rename(m)),
                BackendError::Internal(m) => BackendError::Internal(rename(m)),
            }),
            other => other,
        }
    }

    /// Whether another model may answer instead: the model or its server
    /// failed, not the request.
    fn falls_back(&self) -> bool {
        use corral_sdk::backend::BackendError as B;
        match self {
            InferenceError::Rejected(_)
            | InferenceError::Backend(B::InvalidRequest(_))
            | InferenceError::Backend(B::ContextOverflow(_))
            | InferenceError::Backend(B::Unsupported(_)) => false,
            InferenceError::BackendMissing(_)
            | InferenceError::Load { .. }
            | InferenceError::Capacity(_)
            | InferenceError::Backend(_)
            | InferenceError::Internal(_)
            | InferenceError::CoolingDown { .. } => true,
        }
    }
}

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text, with the model's BOS token in front.
    Text(String),
    /// A stored conversation, rendered with the chat template (system
    /// messages first) after dropping its oldest turns (never a system
    /// message, never the last message) until prompt and `max_tokens` fit
    /// the context. Turns go in blocks, so that the prompt's start stays
    /// the same for many turns and the backend can reuse its cache (see
    /// [`history::fit_history`]).
    History(Vec<ChatMessage>),
}

/// One generation.
#[derive(Debug, Clone)]
pub struct Job {
    pub spec: LoadSpec,
    pub user_id: String,
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    pub truncation: Truncation,
    /// Names the conversation (a chat's id): its turns keep to the slot
    /// that holds its cache, and only its own requests read that cache.
    /// Without one, the user's requests share theirs. Another user's
    /// cache is never read, whatever the key.
    pub cache_key: Option<String>,
    /// Models tried in order when `spec`'s model is cooling down or fails
    /// before its first token.
    pub fallbacks: Vec<LoadSpec>,
    /// Models that serve the same weights as `spec`'s: the job goes to
    /// the least busy of them and `spec`, and is not rerouted in the
    /// caller's eyes when it lands on one.
    pub replicas: Vec<LoadSpec>,
}

/// What a job reports, in order: positions while queued, `Started`, text,
/// then exactly one of `Done` or `Failed`.
#[derive(Debug, Clone)]
pub enum JobEvent {
    Queued {
        position: usize,
    },
    /// Another model answers: the one named failed or is cooling down.
    /// Comes before that model's `Started`.
    Rerouted {
        name: String,
        reason: String,
    },
    Started {
        prompt_tokens: u32,
    },
    Text(String),
    Done(GenerateSummary),
    Failed(InferenceError),
}

/// The runtime.
#[derive(Clone)]
pub struct Inference {
    pub manager: ModelManager,
    pub scheduler: Scheduler,
    /// Which of a model's replicas last served each conversation.
    affinity: Arc<Mutex<Affinity>>,
}

/// Conversations remembered per host, at most; past that the older half
/// is forgotten (those chats then go wherever is least busy).
const AFFINITY_LIMIT: usize = 4096;

/// The replica that last served a conversation (keyed like the caches: the
/// user, and the chat when there is one), so that its next turn goes where
/// its history is cached.
#[derive(Default)]
struct Affinity {
    served: HashMap<String, (String, u64)>,
    clock: u64,
}

impl Affinity {
    fn get(&self, conversation: &str) -> Option<&str> {
        self.served.get(conversation).map(|(key, _)| key.as_str())
    }

    fn remember(&mut self, conversation: String, model_key: &str) {
        self.clock += 1;
        self.served
            .insert(conversation, (model_key.to_owned(), self.clock));
        if self.served.len() > AFFINITY_LIMIT {
            let mut stamps: Vec<u64> = self.served.values().map(|(_, at)| *at).collect();
            stamps.sort_unstable();
            let keep_from = stamps[stamps.len() / 2];
            self.served.retain(|_, (_, at)| *at >= keep_from);
        }
    }
}

/// The order in which a model and its replicas are offered one request,
/// as indexes into `loads`: each one's generations running or waiting and
/// its slots. The one that served the conversation last (`last`) comes
/// first while it has a free slot, since its cache holds the history; the
/// others by how busy each slot is, the model asked for first among
/// equals.
fn spread_order(loads: &[(usize, usize)], last: Option<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..loads.len()).collect();
    let busy = |i: usize| (loads[i].0, loads[i].1.max(1));
    order.sort_by(|&a, &b| {
        let ((la, ca), (lb, cb)) = (busy(a), busy(b));
        (la * cb).cmp(&(lb * ca)).then(a.cmp(&b))
    });
    if let Some(last) = last.filter(|&i| i < loads.len() && busy(i).0 < busy(i).1) {
        order.retain(|&i| i != last);
        order.insert(0, last);
    }
    order
}

impl Inference {
    pub fn new(manager: ModelManager, scheduler: Scheduler) -> Self {
        Inference {
            manager,
            scheduler,
            affinity: Arc::default(),
        }
    }

    /// `job`'s model and its replicas, in the order to offer them the job
    /// ([`spread_order`]); the conversation's key for [`Affinity`].
    fn spread(&self, job: &Job) -> (Vec<LoadSpec>, String) {
        let conversation = match &job.cache_key {
            Some(key) => format!("{}/{key}", job.user_id),
            None => job.user_id.clone(),
        };
        let group: Vec<&LoadSpec> = std::iter::once(&job.spec).chain(&job.replicas).collect();
        if group.len() == 1 {
            return (vec![job.spec.clone()], conversation);
        }
        let loads: Vec<(usize, usize)> = group
            .iter()
            .map(|spec| {
                let (running, waiting) = self.scheduler.load(&spec.key);
                (running + waiting, spec.request.slots.max(1) as usize)
            })
            .collect();
        let last = {
            let affinity = self.affinity.lock().unwrap_or_else(|e| e.into_inner());
            affinity
                .get(&conversation)
                .and_then(|key| group.iter().position(|spec| spec.key == key))
        };
        let order = spread_order(&loads, last);
        (
            order.into_iter().map(|i| group[i].clone()).collect(),
            conversation,
        )
    }

    /// Queues a job and returns its events. Fails at once when the queue
    /// or the user's allowance is full. Dropping the receiver cancels.
    pub fn submit(&self, job: Job) -> Result<mpsc::UnboundedReceiver<JobEvent>, InferenceError> {
        self.submit_with_cancel(job, CancelToken::new())
    }

    /// Like [`Self::submit`], with a token that stops the generation while
    /// its events keep coming: a cancelled job still ends with `Done`,
    /// whose finish reason says it was cancelled. (A job cancelled while
    /// it waits in the queue leaves it at once, and its `Done` says that
    /// nothing was read or generated.)
    pub fn submit_with_cancel(
        &self,
        job: Job,
        cancel: CancelToken,
    ) -> Result<mpsc::UnboundedReceiver<JobEvent>, InferenceError> {
        let (group, conversation) = self.spread(&job);
        // Landing on a replica is no reroute: it is the same model.
        let replica_keys: Vec<String> = group.iter().map(|s| s.key.clone()).collect();
        let rerouted = move |spec: &LoadSpec| !replica_keys.contains(&spec.key);
        let spread = group.len() > 1;
        // Replicas are the model to the caller, whose errors and reasons
        // name the model asked for instead (a replica may be a model the
        // caller cannot see).
        let masked: Vec<String> = job.replicas.iter().map(|s| s.name.clone()).collect();
        let shown = job.spec.name.clone();
        let mask_text = {
            let (masked, shown) = (masked.clone(), shown.clone());
            move |text: String| {
                masked
                    .iter()
                    .fold(text, |text, hidden| shown_name(text, hidden, &shown))
            }
        };
        let mask = move |err: InferenceError| {
            masked
                .iter()
                .fold(err, |err, hidden| err.shown_as(hidden, &shown))
        };
        let mut candidates: VecDeque<LoadSpec> = group
            .into_iter()
            .chain(job.fallbacks.iter().cloned())
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let (spec, ticket, reason) = self
            .next_candidate(&mut candidates, &job.user_id, None)
            .map_err(&mask)?;
        if rerouted(&spec) {
            let _ = tx.send(JobEvent::Rerouted {
                name: spec.name.clone(),
                reason: mask_text(reason),
            });
        }
        let this = self.clone();
        tokio::spawn(async move {
            let (mut spec, mut ticket) = (spec, ticket);
            loop {
                if spread && !rerouted(&spec) {
                    this.affinity
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remember(conversation.clone(), &spec.key);
                }
                let texted = Arc::new(AtomicBool::new(false));
                let Some(result) = this
                    .attempt(&spec, ticket, &job, &cancel, &tx, &texted)
                    .await
                else {
                    return;
                };
                let err = match result {
                    Ok(summary) => {
                        let _ = tx.send(JobEvent::Done(summary));
                        return;
                    }
                    Err(err) => err,
                };
                // Only a model that has not said anything yet is replaced.
                if texted.load(Ordering::Acquire) || cancel.is_cancelled() || !err.falls_back() {
                    let _ = tx.send(JobEvent::Failed(mask(err)));
                    return;
                }
                match this.next_candidate(&mut candidates, &job.user_id, Some(err.clone())) {
                    Ok((next, next_ticket, reason)) => {
                        tracing::info!(from = %spec.name, to = %next.name, %reason, "falling back");
                        if rerouted(&next) {
                            let _ = tx.send(JobEvent::Rerouted {
                                name: next.name.clone(),
                                reason: mask_text(reason),
                            });
                        }
                        (spec, ticket) = (next, next_ticket);
                    }
                    Err(last) => {
                        let _ = tx.send(JobEvent::Failed(mask(last)));
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// The next model of `candidates` that is not cooling down and whose
    /// queue takes the job, with the reasons the ones before it were
    /// passed over; the last error when none is left.
    fn next_candidate(
        &self,
        candidates: &mut VecDeque<LoadSpec>,
        user_id: &str,
        failed: Option<InferenceError>,
    ) -> Result<(LoadSpec, scheduler::Ticket, String), InferenceError> {
        let mut reasons: Vec<String> = failed.iter().map(ToString::to_string).collect();
        let mut last = failed;
        let mut soonest: Option<std::time::Duration> = None;
        while let Some(spec) = candidates.pop_front() {
            if let Some(cooling) = self.manager.cooling(&spec.key) {
                let message = format!(
                    "`{}` is cooling down for {} s more ({})",
                    spec.name,
                    cooling.left.as_secs().max(1),
                    cooling.reason
                );
                let wait = soonest.map_or(cooling.left, |s| s.min(cooling.left));
                soonest = Some(wait);
                reasons.push(message.clone());
                last = Some(InferenceError::CoolingDown {
                    retry_after: wait.as_secs().max(1),
                    message: format!("{}: {message}", upstream::COOLING_DOWN),
                });
                continue;
            }
            let capacity = spec.request.slots.max(1) as usize;
            match self.scheduler.enqueue(&spec.key, capacity, user_id) {
                Ok(ticket) => return Ok((spec, ticket, reasons.join("; "))),
                Err(rejected) => {
                    reasons.push(rejected.to_string());
                    last = Some(rejected.into());
                }
            }
        }
        Err(last.unwrap_or_else(|| InferenceError::Internal("no model to run on".into())))
    }

    /// Runs the job on `spec`'s model once admitted; `None` when the
    /// caller went away while it waited. A job cancelled before it runs
    /// gives up its place (or its slot) without loading anything.
    async fn attempt(
        &self,
        spec: &LoadSpec,
        mut ticket: scheduler::Ticket,
        job: &Job,
        cancel: &CancelToken,
        tx: &mpsc::UnboundedSender<JobEvent>,
        texted: &Arc<AtomicBool>,
    ) -> Option<Result<GenerateSummary, InferenceError>> {
        let mut position = ticket.position();
        let permit = loop {
            if position > 0 && tx.send(JobEvent::Queued { position }).is_err() {
                return None;
            }
            tokio::select! {
                update = ticket.next_update() => match update {
                    Update::Admitted(permit) => break permit,
                    Update::Position(p) => position = p,
                },
                () = tx.closed() => return None,
                () = upstream::cancelled(cancel) => return Some(Ok(not_started())),
            }
        };
        if cancel.is_cancelled() {
            return Some(Ok(not_started()));
        }
        let result = match self.manager.get(spec).await {
            Ok(loaded) => {
                run(
                    loaded,
                    job.clone(),
                    cancel.clone(),
                    tx.clone(),
                    texted.clone(),
                )
                .await
            }
            Err(err) => Err(err),
        };
        drop(permit);
        Some(result)
    }
}

/// The summary of a job cancelled before it read its prompt.
fn not_started() -> GenerateSummary {
    GenerateSummary {
        finish_reason: corral_sdk::backend::FinishReason::Cancelled,
        prompt_tokens: 0,
        completion_tokens: 0,
        truncated_tokens: 0,
        cached_tokens: 0,
        time_to_first_token: 0.0,
        total_time: 0.0,
    }
}

/// Renders the prompt and generates on the blocking pool, forwarding events.
async fn run(
    loaded: Arc<LoadedModel>,
    job: Job,
    cancel: CancelToken,
    tx: mpsc::UnboundedSender<JobEvent>,
    texted: Arc<AtomicBool>,
) -> Result<GenerateSummary, InferenceError> {
    let watcher = {
        let cancel = cancel.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            tx.closed().await;
            cancel.cancel();
        })
    };
    let result = tokio::task::spawn_blocking(move || {
        let model = &loaded.model;
        // Caches are never shared between users: the user's id is always
        // part of the key.
        let cache_key = Some(match &job.cache_key {
            Some(key) => format!("{}/{key}", job.user_id),
            None => job.user_id.clone(),
        });
        let mut sink = |event: TokenEvent| {
            let event = match event {
                TokenEvent::Started { prompt_tokens } => JobEvent::Started { prompt_tokens },
                TokenEvent::Text { text } => {
                    texted.store(true, Ordering::Release);
                    JobEvent::Text(text)
                }
            };
            if tx.send(event).is_err() {
                cancel.cancel();
            }
        };
        if model.takes_conversations() {
            // A remote model renders (and fits) the conversation itself.
            let mut request = GenerateRequest {
                prompt: String::new(),
                add_bos: false,
                sampling: job.sampling,
                truncation: job.truncation,
                cache_key,
            };
            return match job.prompt {
                Prompt::Chat(messages) => {
                    model.generate_chat(&messages, &request, &mut sink, &cancel)
                }
                Prompt::History(messages) => {
                    let context = loaded.info.context_length;
                    let messages = history::fit_conversation(messages, context, &request.sampling);
                    model.generate_chat(&messages, &request, &mut sink, &cancel)
                }
                Prompt::Text(text) => {
                    request.prompt = text;
                    model.generate(&request, &mut sink, &cancel)
                }
            };
        }
        let (prompt, add_bos) = match job.prompt {
            Prompt::Chat(messages) => (model.apply_chat_template(&messages, true)?, false),
            Prompt::Text(text) => (text, true),
            Prompt::History(messages) => {
                let prompt = history::fit_history(model.as_ref(), messages, &job.sampling)?;
                (prompt, false)
            }
        };
        let request = GenerateRequest {
            prompt,
            add_bos,
            sampling: job.sampling,
            truncation: job.truncation,
            cache_key,
        };
        model.generate(&request, &mut sink, &cancel)
    })
    .await;
    watcher.abort();
    match result {
        Ok(Ok(summary)) => Ok(summary),
        Ok(Err(err)) => Err(err.into()),
        Err(err) => Err(InferenceError::Internal(format!(
            "the generation task failed: {err}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_offered_least_busy_first_and_a_warm_one_keeps_its_chat() {
        // Idle: the model asked for first, then its replicas in order.
        assert_eq!(spread_order(&[(0, 1), (0, 1), (0, 2)], None), [0, 1, 2]);
        // Busy per slot: 1 of 1 is busier than 1 of 2.
        assert_eq!(spread_order(&[(1, 1), (1, 2), (0, 1)], None), [2, 1, 0]);
        assert_eq!(spread_order(&[(2, 4), (1, 2), (3, 4)], None), [0, 1, 2]);
        // The replica that served the chat comes first while it has room…
        assert_eq!(spread_order(&[(0, 1), (1, 2), (0, 1)], Some(1)), [1, 0, 2]);
        // …and takes its place by load once it is full.
        assert_eq!(spread_order(&[(0, 1), (2, 2), (1, 1)], Some(1)), [0, 1, 2]);
        // A replica no longer listed is ignored.
        assert_eq!(spread_order(&[(1, 1), (0, 1)], Some(5)), [1, 0]);
    }

    #[test]
    fn a_replicas_failure_names_the_model_asked_for() {
        let cooling = InferenceError::CoolingDown {
            retry_after: 3,
            message: "upstream_cooling_down: `hidden-b` is cooling down (429); `other` too".into(),
        };
        let InferenceError::CoolingDown { message, .. } = cooling.shown_as("hidden-b", "public")
        else {
            panic!("not cooling down");
        };
        assert_eq!(
            message,
            "upstream_cooling_down: `public` is cooling down (429); `other` too"
        );
        let load = InferenceError::Load {
            model: "hidden-b".into(),
            reason: "no room to load `hidden-b`".into(),
            bad_file: false,
        };
        assert_eq!(
            load.shown_as("hidden-b", "public").to_string(),
            "model `public` could not be loaded: no room to load `public`"
        );
        let upstream = InferenceError::Backend(BackendError::Internal(
            "upstream_unavailable: `hidden-b` cannot be reached".into(),
        ));
        assert_eq!(
            upstream.shown_as("hidden-b", "public").to_string(),
            "backend failure: upstream_unavailable: `public` cannot be reached"
        );
        // A name that only contains the replica's is left alone.
        let other = InferenceError::Capacity("no room for `hidden-bb`".into());
        assert_eq!(
            other.shown_as("hidden-b", "public").to_string(),
            "no room for `hidden-bb`"
        );
    }

    #[test]
    fn affinity_forgets_the_older_half_past_its_limit() {
        let mut affinity = Affinity::default();
        for i in 0..=AFFINITY_LIMIT {
            affinity.remember(format!("u/{i}"), "a");
        }
        assert!(affinity.served.len() <= AFFINITY_LIMIT / 2 + 1);
        assert_eq!(affinity.get(&format!("u/{AFFINITY_LIMIT}")), Some("a"));
        assert_eq!(affinity.get("u/0"), None);
        affinity.remember("u/1".into(), "b");
        assert_eq!(affinity.get("u/1"), Some("b"));
    }
}
