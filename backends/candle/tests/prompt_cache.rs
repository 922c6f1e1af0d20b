//! The prompt cache against the real demo model (`CORRAL_DEMO_MODEL`): a
//! model that reuses its cache must answer exactly as one that reads every
//! prompt whole, and must say how many prompt tokens it took from the cache.

use corral_candle::CandleBackend;
use corral_sdk::backend::{
    Backend, CancelToken, ChatMessage, FinishReason, GenerateRequest, GenerateSummary, LoadRequest,
    Model, SamplingParams, TokenEvent, Truncation,
};

fn demo_path() -> String {
    match std::env::var("CORRAL_DEMO_MODEL") {
        Ok(p) if std::path::Path::new(&p).exists() => p,
        Ok(p) => panic!("CORRAL_DEMO_MODEL={p} does not exist"),
        Err(_) => panic!(
            "CORRAL_DEMO_MODEL is not set; run scripts/fetch-demo-model.sh and set it to \
             the .gguf it prints"
        ),
    }
}

fn load(slots: u32, prompt_cache: bool) -> Box<dyn Model> {
    let request = LoadRequest {
        path: demo_path(),
        context_length: 2048,
        threads: 1,
        slots,
        chat_template: None,
        prompt_cache,
    };
    CandleBackend
        .load(&request, &mut |_| true)
        .expect("the demo model loads")
}

fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        repeat_penalty: 1.0,
        max_tokens,
        ..SamplingParams::default()
    }
}

struct Answer {
    text: String,
    summary: GenerateSummary,
}

fn run_with(
    model: &dyn Model,
    request: &GenerateRequest,
    cancel: &CancelToken,
    mut on_text: impl FnMut(&str),
) -> Answer {
    let mut text = String::new();
    let summary = model
        .generate(
            request,
            &mut |e| {
                if let TokenEvent::Text { text: piece } = e {
                    on_text(&piece);
                    text.push_str(&piece);
                }
            },
            cancel,
        )
        .expect("generation succeeds");
    Answer { text, summary }
}

fn run(model: &dyn Model, request: &GenerateRequest) -> Answer {
    run_with(model, request, &CancelToken::new(), |_| {})
}

/// A plain-text request (BOS added) under `key`.
fn text_request(prompt: &str, key: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.into(),
        add_bos: true,
        sampling: greedy(max_tokens),
        truncation: Truncation::Error,
        cache_key: Some(key.into()),
    }
}

/// A chat rendered with the model's template, one request per turn.
struct Chat {
    key: &'static str,
    turns: Vec<ChatMessage>,
}

impl Chat {
    fn new(key: &'static str) -> Self {
        Chat {
            key,
            turns: Vec::new(),
        }
    }

    fn ask(&mut self, question: &str) {
        self.turns.push(ChatMessage {
            role: "user".into(),
            content: question.into(),
        });
    }

    fn answered(&mut self, answer: &str) {
        self.turns.push(ChatMessage {
            role: "assistant".into(),
            content: answer.into(),
        });
    }

    fn request(&self, model: &dyn Model) -> GenerateRequest {
        GenerateRequest {
            prompt: model.apply_chat_template(&self.turns, true).unwrap(),
            add_bos: false,
            sampling: greedy(24),
            truncation: Truncation::Error,
            cache_key: Some(self.key.into()),
        }
    }
}

/// Runs `request` on both models; the one with the cache must answer as
/// the one without, and the one without must report no cached tokens.
fn same_answer(cached: &dyn Model, fresh: &dyn Model, request: &GenerateRequest) -> Answer {
    let with_cache = run(cached, request);
    let without = run(fresh, request);
    assert_eq!(
        with_cache.text, without.text,
        "the cache changed the answer to {:?} ({} tokens from the cache)",
        request.prompt, with_cache.summary.cached_tokens
    );
    assert_eq!(
        with_cache.summary.completion_tokens,
        without.summary.completion_tokens
    );
    assert_eq!(
        with_cache.summary.prompt_tokens,
        without.summary.prompt_tokens
    );
    assert_eq!(
        with_cache.summary.finish_reason,
        without.summary.finish_reason
    );
    assert_eq!(without.summary.cached_tokens, 0, "the cache is off");
    assert!(with_cache.summary.cached_tokens < with_cache.summary.prompt_tokens);
    with_cache
}

#[test]
fn cached_prompts_give_the_same_greedy_answers_as_whole_prompts() {
    let cached = load(1, true);
    let fresh = load(1, false);
    let (cached, fresh) = (cached.as_ref(), fresh.as_ref());
    let mut a = Chat::new("a");
    let mut b = Chat::new("b");

    a.ask("Repeat these words exactly: amber, falcon, granite, harbor, juniper.");
    let first = same_answer(cached, fresh, &a.request(cached));
    assert_eq!(first.summary.cached_tokens, 0, "nothing was cached yet");
    a.answered(&first.text);

    // The next turn reads only what the previous prompt did not hold.
    a.ask("Repeat these words exactly: lantern, meadow, nickel, orchard, pepper.");
    let second = same_answer(cached, fresh, &a.request(cached));
    assert!(
        second.summary.cached_tokens + 1 >= first.summary.prompt_tokens,
        "turn 2 reused {} of the {} tokens of turn 1's prompt",
        second.summary.cached_tokens,
        first.summary.prompt_tokens
    );
    a.answered(&second.text);

    // The same prompt under another key never reads this chat's cache.
    let mut foreign = a.request(cached);
    foreign.cache_key = Some("someone-else".into());
    let foreign = same_answer(cached, fresh, &foreign);
    assert_eq!(foreign.summary.cached_tokens, 0);

    // Another chat takes the only slot and reads its prompt whole.
    b.ask("Repeat these numbers exactly: 314, 271, 161, 141, 173.");
    let other = same_answer(cached, fresh, &b.request(cached));
    assert_eq!(other.summary.cached_tokens, 0);
    b.answered(&other.text);

    // An unrelated prompt under the same key shares at most the opening.
    let unrelated = text_request("The tallest mountain in Africa is", "b", 12);
    let unrelated = same_answer(cached, fresh, &unrelated);
    assert!(
        unrelated.summary.cached_tokens <= 1,
        "an unrelated prompt reused {} tokens",
        unrelated.summary.cached_tokens
    );

    // Back to the first chat: its history is read again, correctly.
    a.ask("Repeat these words exactly: quartz, raven, saddle, thistle, umber.");
    let third = same_answer(cached, fresh, &a.request(cached));
    a.answered(&third.text);
    a.ask("Now say them in reverse order.");
    let fourth = same_answer(cached, fresh, &a.request(cached));
    assert!(fourth.summary.cached_tokens + 1 >= third.summary.prompt_tokens);

    // Regenerating reuses everything but the answer it replaces.
    let again = same_answer(cached, fresh, &a.request(cached));
    assert_eq!(again.text, fourth.text);
    assert_eq!(
        again.summary.cached_tokens + 1,
        again.summary.prompt_tokens,
        "a regenerate reads only the last prompt token again"
    );
    a.answered(&again.text);

    // An answer cancelled half way leaves a cache the next turn can use.
    a.ask("Repeat these words exactly: velvet, walnut, yarrow, zephyr, anchor.");
    let cancel = CancelToken::new();
    let mut pieces = 0;
    let stopped = run_with(cached, &a.request(cached), &cancel, |_| {
        pieces += 1;
        if pieces == 3 {
            cancel.cancel();
        }
    });
    assert_eq!(stopped.summary.finish_reason, FinishReason::Cancelled);
    let after_cancel = same_answer(cached, fresh, &a.request(cached));
    assert!(after_cancel.summary.cached_tokens + 1 >= again.summary.prompt_tokens);
    a.answered(&after_cancel.text);

    b.ask("Repeat these numbers exactly: 577, 662, 693, 707, 866.");
    same_answer(cached, fresh, &b.request(cached));
}

/// A prompt counting up to `last`.
fn counting_prompt(last: u32) -> String {
    let numbers: String = (1..=last).map(|i| format!("{i}, ")).collect();
    format!("Count from 1 to 1000, separated by commas: {numbers}")
}

/// Gemma 3's sliding-window layers (a 512-token window in the demo model)
/// drop their oldest keys once a prompt is long; going back into the cache
/// works only while the window before the cut is still there.
#[test]
fn a_long_cache_is_reused_only_where_the_window_is_still_held() {
    let cached = load(1, true);
    let fresh = load(1, false);
    let (cached, fresh) = (cached.as_ref(), fresh.as_ref());

    let long = text_request(&counting_prompt(260), "k", 12);
    let first = same_answer(cached, fresh, &long);
    assert!(first.summary.prompt_tokens > 1100, "{:?}", first.summary);
    assert!(first.text.starts_with("261, 262"), "{:?}", first.text);

    // The same prompt again: the window before its last token is held.
    let again = same_answer(cached, fresh, &long);
    assert_eq!(again.summary.cached_tokens + 1, again.summary.prompt_tokens);

    // A prompt that continues it: everything cached is reused.
    let longer = text_request(&format!("{}{}", counting_prompt(260), "261, 262, "), "k", 8);
    let longer = same_answer(cached, fresh, &longer);
    assert!(
        longer.summary.cached_tokens + 12 >= again.summary.prompt_tokens,
        "{:?}",
        longer.summary
    );

    // A prompt that shares its first ~600 tokens. The sliding layers have
    // dropped their oldest keys (those before ~250) to stay bounded, so the
    // window before the cut is incomplete: it is read whole.
    let mid = text_request(&counting_prompt(150), "k", 8);
    let mid = same_answer(cached, fresh, &mid);
    assert!(
        (300..760).contains(&mid.summary.prompt_tokens),
        "{:?}",
        mid.summary
    );
    assert_eq!(mid.summary.cached_tokens, 0);
    assert!(mid.text.starts_with("151, 152"), "{:?}", mid.text);

    // That cache is short enough to be whole: going back into it works.
    let short = text_request(&counting_prompt(30), "k", 8);
    let short = same_answer(cached, fresh, &short);
    assert!(short.summary.cached_tokens > 30, "{:?}", short.summary);
    assert!(short.text.starts_with("31, 32"), "{:?}", short.text);
}

#[test]
fn each_chat_keeps_to_the_slot_that_holds_its_history() {
    let model = load(2, true);
    let model = model.as_ref();
    let mut chats = [Chat::new("a"), Chat::new("b")];
    let questions = [
        [
            "What is the capital of France?",
            "What is the capital of Peru?",
        ],
        ["How big is it?", "How high is it?"],
        ["What is it famous for?", "Who founded it?"],
    ];
    let mut last_prompt = [0u32; 2];
    for (turn, pair) in questions.iter().enumerate() {
        // b goes first on the second turn, so that the least recently used
        // slot is a's: picking by age alone would swap the chats' slots.
        let mut order = [0, 1];
        if turn == 1 {
            order.reverse();
        }
        for i in order {
            let chat = &mut chats[i];
            chat.ask(pair[i]);
            let answer = run(model, &chat.request(model));
            if turn > 0 {
                assert!(
                    answer.summary.cached_tokens + 1 >= last_prompt[i],
                    "chat {} turn {}: {} tokens from the cache, the previous prompt had {}",
                    chat.key,
                    turn + 1,
                    answer.summary.cached_tokens,
                    last_prompt[i]
                );
            } else {
                assert_eq!(answer.summary.cached_tokens, 0);
            }
            last_prompt[i] = answer.summary.prompt_tokens;
            chat.answered(&answer.text);
        }
    }
}
