//! Fitting a stored conversation into a model's context.
//!
//! Once a chat is longer than the context, its oldest turns must go.
//! Dropping the fewest turns that make it fit would move the prompt's start
//! on every new turn, and the backend's prompt cache (which reuses the
//! longest common token prefix with the slot's previous request) would find
//! nothing to reuse. So turns go in blocks: the chat is cut, from its
//! first turn on, into blocks of at least a quarter of the context, and
//! only whole leading blocks are dropped. Earlier turns never change, so
//! the cuts never move; after a drop the prompt keeps the same start until
//! the chat has grown by about another block.

use corral_sdk::backend::{BackendError, ChatMessage, Model, SamplingParams};

/// Tokens a chat template adds around one message, roughly. Only block
/// sizes and the first guess use it; whether a prompt fits is always
/// decided on the real rendered prompt.
const MARKUP_TOKENS: usize = 4;

/// Renders `messages` with the chat template (system messages first),
/// dropping the oldest turns when the prompt and `max_tokens` of answer do
/// not fit the context. Turns are dropped in whole blocks (see the module
/// documentation), and the kept turns never start with an answer. System
/// messages and the last message always stay; if even they do not fit, the
/// backend's own context check reports it.
pub fn fit_history(
    model: &dyn Model,
    messages: Vec<ChatMessage>,
    sampling: &SamplingParams,
) -> Result<String, BackendError> {
    let context = model.info().context_length as usize;
    let answer = answer_room(context, sampling);
    let (system, turns): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| m.role == "system");
    // The prompt that keeps the turns from `start` on, and whether it fits.
    let render = |start: usize| -> Result<(String, bool), BackendError> {
        let kept: Vec<ChatMessage> = system.iter().chain(&turns[start..]).cloned().collect();
        let prompt = model.apply_chat_template(&kept, true)?;
        let fits = model.tokenize(&prompt, false)?.len() + answer <= context;
        Ok((prompt, fits))
    };
    if turns.len() <= 1 {
        return Ok(render(0)?.0);
    }

    // Each message's content is tokenized once; the whole prompt is
    // rendered and tokenized only for the few cuts tried below.
    let size = |m: &ChatMessage| -> Result<usize, BackendError> {
        Ok(model.tokenize(&m.content, false)?.len() + MARKUP_TOKENS)
    };
    let sizes = turns.iter().map(size).collect::<Result<Vec<_>, _>>()?;
    let fixed = system.iter().map(size).sum::<Result<usize, _>>()? + MARKUP_TOKENS;
    let room = context.saturating_sub(answer);
    // A quarter of the context, but at most half of the room for the
    // prompt, so that a long answer still leaves blocks to choose from.
    // Both stay the same from turn to turn while the model's context and
    // the chat's answer length do.
    let block = (context / 4).min(room / 2).max(1);
    let cuts = cuts(&turns, &sizes, block);

    // The earliest cut that fits is wanted. The estimate from the content
    // sizes is usually right or one cut off, so the search starts there.
    let mut after = vec![0; turns.len() + 1];
    for i in (0..turns.len()).rev() {
        after[i] = after[i + 1] + sizes[i];
    }
    let guess = cuts
        .iter()
        .position(|&cut| fixed + after[cut] <= room)
        .unwrap_or(cuts.len() - 1);
    let mut best = None;
    let mut fallback = None;
    let found = first_fit(cuts.len(), guess, |i| {
        let (prompt, fits) = render(cuts[i])?;
        if fits {
            best = Some(prompt);
        } else if i == cuts.len() - 1 {
            fallback = Some(prompt);
        }
        Ok(fits)
    })?;
    // Not even the last message fits: the backend will say so.
    match if found < cuts.len() { best } else { fallback } {
        Some(prompt) => Ok(prompt),
        None => Ok(render(turns.len() - 1)?.0),
    }
}

/// The part of a `context` kept free for the answer: `max_tokens`, but at
/// most half, so that asking for long answers (even longer than the
/// context) still leaves the history room. An answer that needs more ends
/// when the context is full.
fn answer_room(context: usize, sampling: &SamplingParams) -> usize {
    (sampling.max_tokens as usize).min(context / 2)
}

/// Bytes per token in the estimate of [`fit_conversation`]: most text
/// takes more (English about four), so the estimate errs on the safe side.
const BYTES_PER_TOKEN: usize = 3;

/// The messages to send a model that reads conversations itself (a remote
/// one, which cannot tokenize here) whose context is `context` tokens (0:
/// unknown, everything is sent): as [`fit_history`] does, the oldest turns
/// go in whole blocks until the estimated prompt and `max_tokens` of answer
/// fit. System messages and the last message always stay.
pub fn fit_conversation(
    messages: Vec<ChatMessage>,
    context: u32,
    sampling: &SamplingParams,
) -> Vec<ChatMessage> {
    let context = context as usize;
    let (system, turns): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| m.role == "system");
    if context == 0 || turns.len() <= 1 {
        return system.into_iter().chain(turns).collect();
    }
    let size = |m: &ChatMessage| m.content.len().div_ceil(BYTES_PER_TOKEN) + MARKUP_TOKENS;
    let sizes: Vec<usize> = turns.iter().map(size).collect();
    let fixed = system.iter().map(size).sum::<usize>() + MARKUP_TOKENS;
    // A remote server refuses a prompt whose `max_tokens` of answer would
    // not fit beside it, so the whole of `max_tokens` stays free.
    let room = context.saturating_sub(sampling.max_tokens as usize);
    let block = (context / 4).min(room / 2).max(1);
    let cuts = cuts(&turns, &sizes, block);
    let start = cuts
        .iter()
        .copied()
        .find(|&cut| fixed + sizes[cut..].iter().sum::<usize>() <= room)
        .unwrap_or(turns.len() - 1);
    system
        .into_iter()
        .chain(turns.into_iter().skip(start))
        .collect()
}

/// The first index in `0..n` where `fits` holds, or `n` if none, for a
/// `fits` that holds from some index on. The search starts at `guess` and
/// steps away from it in doubling steps until the answer is bracketed, then
/// bisects. Each index where `fits` holds is below every one tried before
/// where it held, so the last of them is the answer.
fn first_fit<E>(
    n: usize,
    guess: usize,
    mut fits: impl FnMut(usize) -> Result<bool, E>,
) -> Result<usize, E> {
    if n == 0 {
        return Ok(0);
    }
    let start = guess.min(n - 1);
    // The answer lies in lo..=hi.
    let (mut lo, mut hi) = (0, n);
    let mut step = 1;
    if fits(start)? {
        hi = start;
        while hi > 0 {
            let probe = hi.saturating_sub(step);
            if !fits(probe)? {
                lo = probe + 1;
                break;
            }
            hi = probe;
            step *= 2;
        }
    } else {
        lo = start + 1;
        while lo < hi {
            let probe = (lo - 1 + step).min(n - 1);
            if fits(probe)? {
                hi = probe;
                break;
            }
            lo = probe + 1;
            step *= 2;
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(mid)? {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

/// Where the kept turns may start, earliest first. The first block starts
/// at the first turn that is not an answer; each next one at the first such
/// turn once the block before holds `block` tokens. So an answer is never
/// kept without its question, every dropped block frees at least `block`
/// tokens, and a cut depends only on the turns before it. After the last
/// block's start come every later turn that is not an answer and the last
/// turn, for when even the last block is too long.
fn cuts(turns: &[ChatMessage], sizes: &[usize], block: usize) -> Vec<usize> {
    let last = turns.len() - 1;
    let opens = |i: usize| turns[i].role != "assistant";
    let mut cuts = Vec::new();
    // Tokens in the current block so far; none before the first cut.
    let mut held: Option<usize> = None;
    for (i, &size) in sizes.iter().enumerate() {
        if opens(i) && held.is_none_or(|held| held >= block) {
            cuts.push(i);
            held = Some(0);
        }
        held = held.map(|held| held + size);
    }
    let tail = cuts.last().map_or(0, |&cut| cut + 1);
    cuts.extend((tail..=last).filter(|&i| opens(i)));
    if cuts.last() != Some(&last) {
        cuts.push(last);
    }
    cuts
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use corral_sdk::backend::{
        BackendResult, CancelToken, Capabilities, GenerateRequest, GenerateSummary, ModelInfo,
        TokenEvent,
    };

    use super::*;

    /// A model whose tokens are words and whose template writes each
    /// message as `<role> words… ;` and then `<assistant>`: every message
    /// costs its words plus two tokens. It counts whole-prompt renders.
    struct Words {
        context: u32,
        renders: AtomicUsize,
    }

    impl Words {
        fn new(context: u32) -> Self {
            Words {
                context,
                renders: AtomicUsize::new(0),
            }
        }
    }

    impl Model for Words {
        fn info(&self) -> ModelInfo {
            ModelInfo {
                architecture: "words".into(),
                capabilities: Capabilities {
                    chat: true,
                    ..Capabilities::default()
                },
                context_length: self.context,
                trained_context_length: None,
                slots: 1,
                vocab_size: 0,
                embedding_length: None,
                chat_template: None,
                chat_template_source: None,
                memory_bytes: 0,
            }
        }

        fn generate(
            &self,
            _: &GenerateRequest,
            _: &mut dyn FnMut(TokenEvent),
            _: &CancelToken,
        ) -> BackendResult<GenerateSummary> {
            Err(BackendError::Unsupported("no generation here".into()))
        }

        fn tokenize(&self, text: &str, _: bool) -> BackendResult<Vec<u32>> {
            Ok(text.split_whitespace().map(|_| 0).collect())
        }

        fn apply_chat_template(
            &self,
            messages: &[ChatMessage],
            add_generation_prompt: bool,
        ) -> BackendResult<String> {
            self.renders.fetch_add(1, Ordering::Relaxed);
            let mut out = String::new();
            for m in messages {
                out.push_str(&format!("<{}> {} ; ", m.role, m.content));
            }
            if add_generation_prompt {
                out.push_str("<assistant>");
            }
            Ok(out)
        }
    }

    fn message(role: &str, content: String) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content,
        }
    }

    /// `n` words of text, different for every `seed`.
    fn words(seed: usize, n: usize) -> String {
        (0..n)
            .map(|i| format!("w{seed}x{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn sampling(max_tokens: u32) -> SamplingParams {
        SamplingParams {
            max_tokens,
            ..SamplingParams::default()
        }
    }

    /// A system message, then `exchanges` questions and answers of varied
    /// lengths, then one more question: the same chat at each length.
    fn chat(exchanges: usize) -> Vec<ChatMessage> {
        let mut messages = vec![message("system", "be brief and kind".into())];
        for i in 0..exchanges {
            messages.push(message("user", words(2 * i, 5 + i % 7)));
            messages.push(message("assistant", words(2 * i + 1, 12 + (i * 5) % 23)));
        }
        messages.push(message("user", words(2 * exchanges, 5 + exchanges % 7)));
        messages
    }

    fn token_count(model: &Words, prompt: &str) -> usize {
        model.tokenize(prompt, false).expect("tokens").len()
    }

    /// The first turn kept after the system message.
    fn first_turn(prompt: &str) -> &str {
        let rest = prompt
            .split_once(" ; ")
            .map(|(_, rest)| rest)
            .expect("a system message first");
        rest.split(" ; ").next().expect("a turn")
    }

    #[test]
    fn a_history_that_fits_is_rendered_whole() {
        let model = Words::new(4096);
        let messages = chat(6);
        let whole = model.apply_chat_template(&messages, true).expect("render");
        let fitted = fit_history(&model, messages, &sampling(256)).expect("fits");
        assert_eq!(fitted, whole);
    }

    #[test]
    fn asking_for_answers_longer_than_the_context_keeps_the_history() {
        // max_tokens past the whole context: half of it stays for the
        // prompt, so the chat's earlier turns are still read.
        let model = Words::new(2048);
        let messages = chat(6);
        let whole = model.apply_chat_template(&messages, true).expect("render");
        for max_tokens in [1024, 4096, u32::MAX] {
            let fitted =
                fit_history(&model, messages.clone(), &sampling(max_tokens)).expect("fits");
            assert_eq!(fitted, whole, "max_tokens {max_tokens}");
        }
        // A long chat still loses its oldest turns, to half the context.
        let long = chat(120);
        let fitted = fit_history(&model, long.clone(), &sampling(4096)).expect("fits");
        assert!(
            token_count(&model, &fitted) <= 1024,
            "{}",
            token_count(&model, &fitted)
        );
        assert!(fitted.starts_with("<system> be brief and kind ; <user> "));
    }

    #[test]
    fn a_growing_chat_keeps_its_start_for_several_turns() {
        // Blocks of 512 tokens; an exchange is about 40.
        let model = Words::new(2048);
        let max_tokens = 256;
        let mut previous: Option<String> = None;
        let mut first_turns = Vec::new();
        let mut kept_runs = vec![0usize];
        let mut dropped_any = false;
        for exchanges in 1..200 {
            let messages = chat(exchanges);
            let last = messages.last().cloned().expect("a question");
            let prompt = fit_history(&model, messages.clone(), &sampling(max_tokens)).expect("fit");

            // It fits with room for the answer, keeps the system message
            // and the question, and starts with a question.
            assert!(
                token_count(&model, &prompt) + max_tokens as usize <= 2048,
                "{exchanges} exchanges: {} tokens",
                token_count(&model, &prompt)
            );
            assert!(prompt.starts_with("<system> be brief and kind ; "));
            assert!(prompt.ends_with(&format!("<user> {} ; <assistant>", last.content)));
            let first = first_turn(&prompt).to_owned();
            assert!(first.starts_with("<user> "), "{first}");
            let whole = model.apply_chat_template(&messages, true).expect("render");
            dropped_any |= prompt != whole;

            // The previous prompt (up to its generation prompt) is a prefix
            // of this one, or a block was dropped and the start moved on.
            if let Some(previous) = &previous {
                let stem = previous.strip_suffix("<assistant>").expect("stem");
                if prompt.starts_with(stem) {
                    *kept_runs.last_mut().expect("a run") += 1;
                } else {
                    assert_ne!(first_turns.last(), Some(&first), "same start, new prefix");
                    kept_runs.push(0);
                }
            }
            first_turns.push(first);
            previous = Some(prompt);
        }
        assert!(dropped_any, "the test chat never outgrew the context");
        // Every start change is followed by several turns that reuse the
        // prompt (a block holds about 13 exchanges and the turn that
        // overflows takes one); dropping turns one by one would give runs
        // of zero.
        let full_runs = &kept_runs[1..kept_runs.len() - 1];
        assert!(full_runs.len() >= 5, "too few drops: {kept_runs:?}");
        assert!(
            full_runs.iter().all(|&run| run >= 8),
            "the start moved too often: {kept_runs:?}"
        );
        // Later blocks start later in the chat.
        let mut order = first_turns.clone();
        order.dedup();
        assert!(order.len() > full_runs.len(), "{order:?}");
    }

    #[test]
    fn the_cuts_do_not_depend_on_later_turns() {
        let long = chat(80);
        let turns: Vec<ChatMessage> = long[1..].to_vec();
        let sizes: Vec<usize> = turns
            .iter()
            .map(|m| m.content.split_whitespace().count() + MARKUP_TOKENS)
            .collect();
        let all = cuts(&turns, &sizes, 100);
        let blocks: Vec<usize> = all.iter().copied().take_while(|&c| c < 120).collect();
        let short = cuts(&turns[..140], &sizes[..140], 100);
        assert_eq!(&short[..blocks.len()], &blocks[..]);
        for &cut in &blocks {
            assert_eq!(turns[cut].role, "user");
        }
        // Blocks hold at least `block` tokens, and at most one exchange
        // (at most 53 tokens) more.
        for pair in blocks.windows(2) {
            let tokens: usize = sizes[pair[0]..pair[1]].iter().sum();
            assert!((100..153).contains(&tokens), "{pair:?}: {tokens}");
        }
    }

    #[test]
    fn system_messages_stay_wherever_they_are() {
        let model = Words::new(300);
        let mut messages = chat(40);
        messages.insert(7, message("system", "answer in French".into()));
        let prompt = fit_history(&model, messages, &sampling(40)).expect("fit");
        assert!(
            prompt.starts_with("<system> be brief and kind ; <system> answer in French ; <user> "),
            "{prompt}"
        );
        assert!(token_count(&model, &prompt) + 40 <= 300);
    }

    #[test]
    fn an_opening_answer_is_dropped_even_when_all_fits() {
        let model = Words::new(4096);
        let messages = vec![
            message("assistant", "hello, how can I help".into()),
            message("user", "tell me a joke".into()),
        ];
        let prompt = fit_history(&model, messages, &sampling(64)).expect("fit");
        assert_eq!(prompt, "<user> tell me a joke ; <assistant>");
    }

    #[test]
    fn a_last_question_too_long_for_the_context_is_left_to_the_backend() {
        let model = Words::new(64);
        let mut messages = chat(3);
        messages.push(message("assistant", words(900, 3)));
        messages.push(message("user", words(901, 100)));
        let prompt = fit_history(&model, messages, &sampling(16)).expect("rendered");
        assert_eq!(
            prompt,
            format!(
                "<system> be brief and kind ; <user> {} ; <assistant>",
                words(901, 100)
            )
        );
    }

    #[test]
    fn a_last_block_too_long_is_cut_between_its_turns() {
        // Room for 100 prompt tokens (so blocks of 50 estimated tokens, a
        // little over three exchanges); exchanges of 10 tokens, then an
        // 82-token question that leaves room for one more exchange. The
        // last block starts at exchange 16 and does not fit, so its
        // exchanges are tried one by one.
        let model = Words::new(200);
        let mut messages = vec![message("system", "be brief and kind".into())];
        for i in 0..19 {
            messages.push(message("user", words(2 * i, 3)));
            messages.push(message("assistant", words(2 * i + 1, 3)));
        }
        messages.push(message("user", words(99, 80)));
        let prompt = fit_history(&model, messages.clone(), &sampling(100)).expect("fit");
        let mut kept = vec![messages[0].clone()];
        kept.extend_from_slice(&messages[messages.len() - 3..]);
        assert_eq!(
            prompt,
            model.apply_chat_template(&kept, true).expect("render")
        );
        assert_eq!(token_count(&model, &prompt) + 100, 199);
    }

    #[test]
    fn the_search_finds_the_first_fit_from_any_guess() {
        for n in 0..12 {
            for answer in 0..=n {
                for guess in 0..n + 2 {
                    let mut tried = Vec::new();
                    let mut last_fit = None;
                    let found = first_fit::<()>(n, guess, |i| {
                        tried.push(i);
                        if i >= answer {
                            last_fit = Some(i);
                        }
                        Ok(i >= answer)
                    })
                    .expect("no error");
                    assert_eq!(found, answer, "n {n}, guess {guess}: {tried:?}");
                    if answer < n {
                        assert_eq!(last_fit, Some(answer), "n {n}, guess {guess}: {tried:?}");
                    }
                    let mut unique = tried.clone();
                    unique.sort_unstable();
                    unique.dedup();
                    assert_eq!(unique.len(), tried.len(), "tried twice: {tried:?}");
                }
            }
        }
    }

    #[test]
    fn a_long_chat_renders_only_a_few_prompts() {
        let model = Words::new(512);
        let messages = chat(400);
        fit_history(&model, messages, &sampling(64)).expect("fit");
        let renders = model.renders.load(Ordering::Relaxed);
        assert!(renders <= 4, "{renders} renders");
    }

    #[test]
    fn a_remote_conversation_keeps_its_system_message_its_last_turns_and_its_cuts() {
        // Unknown context: everything goes.
        assert_eq!(fit_conversation(chat(50), 0, &sampling(64)).len(), 102);
        let mut starts = Vec::new();
        for exchanges in 10..200 {
            let kept = fit_conversation(chat(exchanges), 2048, &sampling(64));
            assert_eq!(kept[0].role, "system");
            assert_eq!(kept.last(), chat(exchanges).last());
            assert_eq!(kept[1].role, "user", "the kept turns start with a question");
            let estimate: usize = kept
                .iter()
                .map(|m| m.content.len().div_ceil(BYTES_PER_TOKEN) + MARKUP_TOKENS)
                .sum::<usize>()
                + MARKUP_TOKENS;
            assert!(
                estimate + 64 <= 2048,
                "{exchanges} exchanges: {estimate} estimated"
            );
            starts.push(kept[1].content.clone());
        }
        // Whole blocks go: the first kept turn stays put for many turns.
        let mut distinct = starts.clone();
        distinct.dedup();
        assert!(
            distinct.len() * 4 < starts.len(),
            "{} starts in {} turns",
            distinct.len(),
            starts.len()
        );
    }
}
