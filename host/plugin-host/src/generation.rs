//! The hooks of one generation: one instance per plugin, started on its
//! first call and dropped with the generation, so nothing a plugin keeps in
//! its globals outlives the answer it was made for.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use corral_hooks::{
    Annotation, AnswerChanges, AnswerInfo, GenerationHooks, HookContext, PromptRequest, Rejection,
};

use crate::call::{invoke, Failure, Live};
use crate::calls::{AnswerAction, Call, Decision, Reply};
use crate::host::{Inner, Installed};
use crate::manifest::{FailurePolicy, Hook};

struct Slot {
    plugin: Arc<Installed>,
    live: Option<Live>,
    /// The plugin failed (or was turned off) during this generation; the
    /// rest of it goes on without the plugin.
    out: bool,
    /// Stream text the plugin held back, put in front of the next chunk.
    held: String,
}

pub(crate) struct GenerationRun {
    host: Arc<Inner>,
    ctx: HookContext,
    // `GenerationHooks` must be `Sync`, a wasmtime store is not; every
    // use goes through `&mut self` and `Mutex::get_mut`, which never locks.
    slots: Mutex<Vec<Slot>>,
    streams: bool,
}

/// A generation's parts, borrowed apart for one hook call.
struct Run<'a> {
    host: &'a Inner,
    ctx: &'a HookContext,
    slots: &'a mut Vec<Slot>,
}

impl GenerationRun {
    pub(crate) fn new(host: Arc<Inner>, ctx: HookContext, plugins: Vec<Arc<Installed>>) -> Self {
        let streams = plugins.iter().any(|p| p.manifest.has_hook(Hook::Stream));
        GenerationRun {
            host,
            ctx,
            slots: Mutex::new(
                plugins
                    .into_iter()
                    .map(|plugin| Slot {
                        plugin,
                        live: None,
                        out: false,
                        held: String::new(),
                    })
                    .collect(),
            ),
            streams,
        }
    }

    fn run(&mut self) -> Run<'_> {
        Run {
            host: &self.host,
            ctx: &self.ctx,
            slots: self.slots.get_mut().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

impl Drop for GenerationRun {
    fn drop(&mut self) {
        for slot in self
            .slots
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            slot.plugin.spare.refill(&self.host, &slot.plugin);
        }
    }
}

/// A generation a plugin refuses without running: one kept without its
/// component that guards generations.
pub(crate) struct Refused(pub(crate) Rejection);

#[async_trait]
impl GenerationHooks for Refused {
    async fn before_prompt(&mut self, _prompt: &mut PromptRequest) -> Result<(), Rejection> {
        Err(self.0.clone())
    }

    fn filters_stream(&self) -> bool {
        false
    }

    async fn on_chunk(&mut self, _text: String) -> Result<String, Rejection> {
        Err(self.0.clone())
    }

    async fn finish(&mut self) -> Result<String, Rejection> {
        Err(self.0.clone())
    }

    async fn after_answer(&mut self, _answer: &AnswerInfo) -> AnswerChanges {
        AnswerChanges::default()
    }
}

/// Whether the slot takes part in calls of `hook` now. A `fail-closed`
/// plugin the host turned off refuses the generation instead.
fn takes(slot: &Slot, hook: Hook) -> Result<bool, Rejection> {
    if !slot.plugin.manifest.has_hook(hook) || slot.out {
        return Ok(false);
    }
    if !slot.plugin.health.is_disabled() {
        return Ok(true);
    }
    match slot.plugin.failure_policy() {
        FailurePolicy::Skip => Ok(false),
        FailurePolicy::FailClosed => Err(Rejection {
            plugin: slot.plugin.manifest.id.clone(),
            reason: "the plugin is turned off after repeated failures until a technician \
                     turns it on again"
                .into(),
        }),
    }
}

/// Applies the plugin's failure policy: `Err` stops the generation.
fn on_failure(slot: &mut Slot, failure: &Failure) -> Result<(), Rejection> {
    slot.out = true;
    match slot.plugin.failure_policy() {
        FailurePolicy::Skip => Ok(()),
        FailurePolicy::FailClosed => Err(Rejection {
            plugin: slot.plugin.manifest.id.clone(),
            reason: format!("the plugin failed: {}", failure.summary()),
        }),
    }
}

impl Run<'_> {
    async fn call(&mut self, i: usize, call: Call<'_>) -> Result<Reply, Failure> {
        let slot = &mut self.slots[i];
        invoke(
            self.host,
            &slot.plugin,
            &mut slot.live,
            &self.ctx.caller,
            Some(self.ctx),
            call,
        )
        .await
    }

    /// Runs `text` through stream plugin `i`: its held text first, then
    /// the new text; what it emits comes back. A plugin out of the
    /// generation passes text through unchanged.
    async fn chunk_through(&mut self, i: usize, text: String) -> Result<String, Rejection> {
        let held = std::mem::take(&mut self.slots[i].held);
        let input = held + &text;
        if input.is_empty() || !takes(&self.slots[i], Hook::Stream)? {
            return Ok(input);
        }
        match self.call(i, Call::OnChunk(&input)).await {
            Ok(Reply::Chunk(c)) => {
                self.slots[i].held = c.hold;
                Ok(c.emit)
            }
            Ok(_) => unreachable!("answers are checked against the call"),
            Err(f) => {
                on_failure(&mut self.slots[i], &f)?;
                Ok(input)
            }
        }
    }

    async fn before_prompt(&mut self, prompt: &mut PromptRequest) -> Result<(), Rejection> {
        for i in 0..self.slots.len() {
            if !takes(&self.slots[i], Hook::BeforePrompt)? {
                continue;
            }
            match self.call(i, Call::BeforePrompt(prompt)).await {
                Ok(Reply::Decision(Decision::Continue)) => {}
                Ok(Reply::Decision(Decision::Modify(m))) => m.apply(prompt),
                Ok(Reply::Decision(Decision::Reject(reason))) => {
                    return Err(Rejection {
                        plugin: self.slots[i].plugin.manifest.id.clone(),
                        reason,
                    })
                }
                Ok(_) => unreachable!("answers are checked against the call"),
                Err(f) => on_failure(&mut self.slots[i], &f)?,
            }
        }
        Ok(())
    }

    async fn on_chunk(&mut self, text: String) -> Result<String, Rejection> {
        let mut text = text;
        for i in 0..self.slots.len() {
            if self.slots[i].plugin.manifest.has_hook(Hook::Stream) {
                text = self.chunk_through(i, text).await?;
            }
        }
        Ok(text)
    }

    async fn finish(&mut self) -> Result<String, Rejection> {
        // What earlier filters emit at the end is still a chunk for the
        // later ones; each then gives up what it held.
        let mut text = String::new();
        for i in 0..self.slots.len() {
            if !self.slots[i].plugin.manifest.has_hook(Hook::Stream) {
                continue;
            }
            let mut out = if text.is_empty() {
                String::new()
            } else {
                self.chunk_through(i, std::mem::take(&mut text)).await?
            };
            let held = std::mem::take(&mut self.slots[i].held);
            if !takes(&self.slots[i], Hook::Stream)? {
                out.push_str(&held);
            } else {
                match self.call(i, Call::Finish(&held)).await {
                    Ok(Reply::Text(t)) => out.push_str(&t),
                    Ok(_) => unreachable!("answers are checked against the call"),
                    Err(f) => {
                        on_failure(&mut self.slots[i], &f)?;
                        out.push_str(&held);
                    }
                }
            }
            text = out;
        }
        Ok(text)
    }

    async fn after_answer(&mut self, answer: &AnswerInfo) -> AnswerChanges {
        let mut changes = AnswerChanges::default();
        for i in 0..self.slots.len() {
            // The answer is already out: nothing is left to refuse.
            if !takes(&self.slots[i], Hook::AfterAnswer).unwrap_or(false) {
                continue;
            }
            match self.call(i, Call::AfterAnswer(answer)).await {
                Ok(Reply::Answer(AnswerAction::Keep)) => {}
                Ok(Reply::Answer(AnswerAction::Annotate(text))) => {
                    changes.annotations.push(Annotation {
                        plugin: self.slots[i].plugin.manifest.id.clone(),
                        text,
                    })
                }
                Ok(Reply::Answer(AnswerAction::Replace(text))) => changes.replacement = Some(text),
                Ok(_) => unreachable!("answers are checked against the call"),
                // The answer is already out; a failing plugin can only
                // lose its change, whatever its policy.
                Err(_) => self.slots[i].out = true,
            }
        }
        changes
    }
}

#[async_trait]
impl GenerationHooks for GenerationRun {
    async fn before_prompt(&mut self, prompt: &mut PromptRequest) -> Result<(), Rejection> {
        self.run().before_prompt(prompt).await
    }

    fn filters_stream(&self) -> bool {
        self.streams
    }

    async fn on_chunk(&mut self, text: String) -> Result<String, Rejection> {
        self.run().on_chunk(text).await
    }

    async fn finish(&mut self) -> Result<String, Rejection> {
        self.run().finish().await
    }

    async fn after_answer(&mut self, answer: &AnswerInfo) -> AnswerChanges {
        self.run().after_answer(answer).await
    }
}
