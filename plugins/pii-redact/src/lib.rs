//! Corral plugin `pii-redact`: masks e-mail addresses, phone numbers,
//! payment card numbers and IBANs in prompts (every message and the
//! system prompt) and in streamed answers.
//!
//! Settings: `email`, `phone`, `card`, `iban` (each on by default) and
//! `mask`, the text put in place of a match, where `{kind}` becomes the
//! kind's name (default `[{kind}]`: `[email]`, `[phone]`, ...).

use std::cell::RefCell;

use corral_plugin::prelude::*;

pub mod redact;
pub mod scan;

use redact::{Redactor, Stream, DEFAULT_MASK};
use scan::Kinds;

/// The settings as the technician saved them.
pub fn settings() -> Redactor {
    let on = |key: &str| config::get_or(key, true);
    Redactor {
        kinds: Kinds {
            email: on("email"),
            phone: on("phone"),
            card: on("card"),
            iban: on("iban"),
        },
        mask: config::get_or("mask", DEFAULT_MASK.to_owned()),
    }
}

/// The prompt with personal data masked, or `None` when it has none.
pub fn redact_prompt(redactor: &Redactor, prompt: &Prompt) -> Option<Modification> {
    let mut changed = false;
    let messages: Vec<Message> = prompt
        .messages
        .iter()
        .map(|m| {
            let content = redactor.redact(&m.content);
            changed |= content != m.content;
            Message::new(m.role.clone(), content)
        })
        .collect();
    let system_prompt = prompt.system_prompt.as_deref().and_then(|s| {
        let masked = redactor.redact(s);
        (masked != s).then_some(masked)
    });
    if !changed && system_prompt.is_none() {
        return None;
    }
    let mut change = Modification::new();
    if changed {
        change = change.messages(messages);
    }
    if let Some(system_prompt) = system_prompt {
        change = change.system_prompt(system_prompt);
    }
    Some(change)
}

thread_local! {
    // One instance serves one generation, so these last exactly as long
    // as one answer.
    static SETTINGS: RefCell<Option<Redactor>> = const { RefCell::new(None) };
    static STREAM: RefCell<Stream> = RefCell::new(Stream::default());
}

fn with_settings<T>(f: impl FnOnce(&Redactor) -> T) -> T {
    SETTINGS.with(|cell| f(cell.borrow_mut().get_or_insert_with(settings)))
}

/// Forgets the instance's state, as a fresh instance starts (for tests,
/// which run many generations in one thread).
#[cfg(test)]
fn fresh_instance() {
    SETTINGS.with(|cell| cell.borrow_mut().take());
    STREAM.with(|s| *s.borrow_mut() = Stream::default());
}

struct PiiRedact;

impl Plugin for PiiRedact {
    fn before_prompt(_ctx: &Context, prompt: &Prompt) -> Decision {
        with_settings(|redactor| match redact_prompt(redactor, prompt) {
            Some(change) => Decision::modify(change),
            None => Decision::Continue,
        })
    }

    fn on_chunk(_ctx: &Context, text: String) -> ChunkResult {
        let (emit, hold) =
            with_settings(|redactor| STREAM.with(|s| s.borrow_mut().chunk(redactor, &text)));
        ChunkResult::split(emit, hold)
    }

    fn finish(_ctx: &Context, held: String) -> String {
        with_settings(|redactor| STREAM.with(|s| s.borrow_mut().finish(redactor, &held)))
    }
}

corral_plugin::export!(PiiRedact);

#[cfg(test)]
mod tests;
