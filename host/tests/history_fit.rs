//! Fitting a long chat into the context with the demo model's own chat
//! template and tokenizer (the llama.cpp backend library): every prompt
//! fits with room for the answer, starts with a question, and most turns
//! begin with the previous turn's whole prompt, which is what the backend's
//! prompt cache reuses.
//!
//! Needs `CORRAL_DEMO_MODEL` (the demo GGUF) and the backend libraries that
//! `cargo test --workspace` builds; without the model the test fails, or
//! with `CORRAL_ALLOW_SKIP=1` reports itself skipped.

#[path = "support.rs"]
mod support;

use corral_host::inference::backends::BackendSet;
use corral_host::inference::history::fit_history;
use corral_sdk::backend::{ChatMessage, LoadRequest, Model, SamplingParams};

const CONTEXT: u32 = 1024;
const MAX_TOKENS: u32 = 128;

fn message(role: &str, content: String) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content,
    }
}

fn question(i: usize) -> ChatMessage {
    message(
        "user",
        format!(
            "Basket {i} holds {} apples. How many are there after I add {} more?",
            i * 3,
            i % 7 + 1
        ),
    )
}

fn answer(i: usize) -> ChatMessage {
    message(
        "assistant",
        format!(
            "After adding {} apples, basket {i} holds {} apples in all.",
            i % 7 + 1,
            i * 3 + i % 7 + 1
        ),
    )
}

fn load_demo_model() -> Option<Box<dyn Model>> {
    let path = support::model_from_env("CORRAL_DEMO_MODEL", support::DEMO_MODEL_HOW)?;
    let backends = BackendSet::discover(&support::backends_dir(&["llama"]));
    let llama = backends
        .get("llama")
        .unwrap_or_else(|| panic!("no llama backend: {:?}", backends.problems()));
    let request = LoadRequest {
        path: path.to_string_lossy().into_owned(),
        context_length: CONTEXT,
        threads: 2,
        slots: 1,
        chat_template: None,
        prompt_cache: false,
    };
    Some(
        llama
            .backend
            .load(&request, &mut |_| true)
            .expect("the demo model loads"),
    )
}

#[test]
fn a_growing_chat_keeps_its_prompt_start_for_several_turns() {
    let Some(model) = load_demo_model() else {
        return;
    };
    let sampling = SamplingParams {
        max_tokens: MAX_TOKENS,
        ..SamplingParams::default()
    };
    let system = message("system", "You count apples carefully.".into());

    let mut messages = vec![system.clone(), question(0)];
    let mut previous: Option<String> = None;
    // Turns since the last time the start moved, one entry per move.
    let mut runs = vec![0usize];
    let mut outgrown = false;
    for i in 1..120 {
        messages.push(answer(i - 1));
        messages.push(question(i));
        let prompt = fit_history(model.as_ref(), messages.clone(), &sampling).expect("fit");

        let tokens = model.tokenize(&prompt, false).expect("tokens").len();
        assert!(
            tokens + MAX_TOKENS as usize <= CONTEXT as usize,
            "turn {i}: {tokens} prompt tokens"
        );
        assert!(prompt.contains("You count apples carefully."), "{prompt}");
        let last = &messages.last().expect("a question").content;
        assert!(prompt.contains(last.as_str()), "turn {i}: {prompt}");
        let whole = model.apply_chat_template(&messages, true).expect("render");
        if prompt != whole {
            outgrown = true;
            // The earliest question kept is a whole exchange's start.
            let first_kept = (0..=i)
                .find(|&q| prompt.contains(&question(q).content))
                .expect("a question kept");
            assert!(
                !prompt.contains(&answer(first_kept.saturating_sub(1)).content) || first_kept == 0,
                "turn {i}: an answer is kept without its question"
            );
        }

        if let Some(previous) = &previous {
            if prompt.starts_with(previous.as_str()) {
                *runs.last_mut().expect("a run") += 1;
            } else {
                runs.push(0);
            }
        }
        previous = Some(prompt);
    }
    assert!(outgrown, "the chat never outgrew the context");
    // Between two moves of the start, several turns reuse the whole
    // previous prompt (a block of 256 tokens holds about five exchanges);
    // dropping the fewest turns each time would move the start on every
    // turn once the chat is longer than the context.
    let full = &runs[1..runs.len() - 1];
    assert!(full.len() >= 3, "too few drops to judge: {runs:?}");
    assert!(full.iter().all(|&run| run >= 4), "{runs:?}");
}
