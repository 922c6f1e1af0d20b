//! Turning token bytes into streamed text: whole UTF-8 characters only, and
//! nothing that could turn out to be the start of a stop string. Backends
//! feed each token's bytes to a [`TokenText`] and send what it lets out.

/// Whether `c` is unseen in a name: a control character, or a format
/// character that shows nothing or reorders the text around it (zero-width
/// spaces and joiners, bidirectional marks and overrides, the soft hyphen,
/// the byte-order mark). Names that hold one can pass for another name;
/// see [`hides`] for the ones written languages need.
pub fn is_unseen(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// Whether a name holds an unseen character (see [`is_unseen`]) it does
/// not need. Written languages and emoji need a few: the zero-width
/// non-joiner and joiner between two visible characters other than ASCII
/// (Persian words, emoji sequences), and the left-to-right and
/// right-to-left marks in text that has right-to-left letters.
pub fn hides(name: &str) -> bool {
    let chars: Vec<char> = name.chars().collect();
    (0..chars.len()).any(|i| !needed(&chars, i))
}

/// `text` without the unseen characters it does not need (see [`hides`]).
pub fn without_hidden(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    (0..chars.len())
        .filter(|&i| needed(&chars, i))
        .map(|i| chars[i])
        .collect()
}

/// Whether `chars[i]` is seen, or an unseen character the text needs.
fn needed(chars: &[char], i: usize) -> bool {
    let c = chars[i];
    if !is_unseen(c) {
        return true;
    }
    let visible_wide = |j: Option<usize>| {
        j.and_then(|j| chars.get(j))
            .is_some_and(|&n| !n.is_ascii() && !is_unseen(n))
    };
    match c {
        '\u{200C}' | '\u{200D}' => visible_wide(i.checked_sub(1)) && visible_wide(Some(i + 1)),
        '\u{200E}' | '\u{200F}' => chars.iter().any(|&n| is_right_to_left(n)),
        _ => false,
    }
}

/// Letters of the right-to-left scripts (Hebrew, Arabic, Syriac, Thaana,
/// N'Ko and their presentation forms).
fn is_right_to_left(c: char) -> bool {
    matches!(c, '\u{0590}'..='\u{08FF}' | '\u{FB1D}'..='\u{FDFF}' | '\u{FE70}'..='\u{FEFE}')
}

/// Collects token bytes and hands out the longest complete UTF-8 prefix.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes; returns the text that is now complete. Invalid bytes
    /// become U+FFFD; an incomplete character at the end waits.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[start..valid]));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + bad;
                        }
                        None => {
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Whatever is left, with an incomplete character as U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Holds back text that may be the beginning of a stop string.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What [`StopMatcher::push`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text safe to emit now.
    Continue(String),
    /// A stop string was found: emit this text (everything before it) and end.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopOutcome::Continue(std::mem::take(&mut self.held));
        }
        let first_match = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min();
        if let Some(at) = first_match {
            let mut before = std::mem::take(&mut self.held);
            before.truncate(at);
            return StopOutcome::Stopped(before);
        }
        let keep = self.longest_stop_prefix_suffix();
        let emit_len = self.held.len() - keep;
        let rest = self.held.split_off(emit_len);
        StopOutcome::Continue(std::mem::replace(&mut self.held, rest))
    }

    /// Text still held back, for when generation ends another way.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest end of `held` that begins a stop string.
    fn longest_stop_prefix_suffix(&self) -> usize {
        let held = self.held.as_str();
        held.char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &held[i..];
                self.stops.iter().any(|stop| stop.starts_with(tail))
            })
            .map_or(0, |i| held.len() - i)
    }
}

/// Token bytes in, text to stream out: [`Utf8Stream`] then [`StopMatcher`].
#[derive(Debug, Default)]
pub struct TokenText {
    utf8: Utf8Stream,
    stop: StopMatcher,
}

impl TokenText {
    /// Text that ends before any of `stops` (empty ones are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        TokenText {
            utf8: Utf8Stream::default(),
            stop: StopMatcher::new(stops),
        }
    }

    /// The bytes of one more token.
    pub fn push(&mut self, bytes: &[u8]) -> StopOutcome {
        let text = self.utf8.push(bytes);
        self.stop.push(&text)
    }

    /// Everything held back, for when generation ends other than by a
    /// stop string (a stop string can still complete in the last bytes).
    pub fn finish(&mut self) -> StopOutcome {
        let tail = self.utf8.finish();
        match self.stop.push(&tail) {
            StopOutcome::Continue(mut text) => {
                text.push_str(&self.stop.finish());
                StopOutcome::Continue(text)
            }
            stopped => stopped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibyte_characters_wait_until_complete() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes();
        assert_eq!(s.push(&[b'a', euro[0]]), "a");
        assert_eq!(s.push(&euro[1..2]), "");
        assert_eq!(s.push(&euro[2..]), "€");
        assert_eq!(s.push(&[0xff, b'b']), "\u{fffd}b");
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_strings_are_cut_and_prefixes_held() {
        let mut m = StopMatcher::new(vec!["END".into(), "\n\n".into()]);
        assert_eq!(m.push("Hello E"), StopOutcome::Continue("Hello ".into()));
        assert_eq!(m.push("N"), StopOutcome::Continue(String::new()));
        assert_eq!(m.push("x world"), StopOutcome::Continue("ENx world".into()));
        assert_eq!(m.push("!\n"), StopOutcome::Continue("!".into()));
        assert_eq!(m.push("\nmore"), StopOutcome::Stopped(String::new()));

        let mut m = StopMatcher::new(vec!["stop".into()]);
        assert_eq!(m.push("a stop b"), StopOutcome::Stopped("a ".into()));

        let mut m = StopMatcher::new(vec!["ab".into()]);
        assert_eq!(m.push("xa"), StopOutcome::Continue("x".into()));
        assert_eq!(m.finish(), "a");
    }

    #[test]
    fn without_stops_everything_passes() {
        let mut m = StopMatcher::new(Vec::new());
        assert_eq!(m.push("abc"), StopOutcome::Continue("abc".into()));
    }

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (String, bool) {
        let mut t = TokenText::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match t.push(p) {
                StopOutcome::Continue(s) => out.push_str(&s),
                StopOutcome::Stopped(s) => {
                    out.push_str(&s);
                    return (out, true);
                }
            }
        }
        match t.finish() {
            StopOutcome::Continue(s) => (out + &s, false),
            StopOutcome::Stopped(s) => (out + &s, true),
        }
    }

    #[test]
    fn token_text_joins_bytes_and_cuts_stops() {
        let euro = "€".as_bytes();
        assert_eq!(
            run(&[], &[b"a", &euro[..1], &euro[1..], b"b"]),
            ("a€b".into(), false)
        );
        assert_eq!(
            run(&["END"], &[b"hello E", b"N", b"D more"]),
            ("hello ".into(), true)
        );
        assert_eq!(run(&["END"], &[b"E", b"N", b"x"]), ("ENx".into(), false));
        // Held back to the end, then released.
        assert_eq!(run(&["END"], &[b"x E", b"N"]), ("x EN".into(), false));
    }

    #[test]
    fn unseen_characters_are_told_apart_from_visible_ones() {
        for c in [
            '\u{0}', '\n', '\u{7F}', '\u{85}', '\u{200B}', '\u{200D}', '\u{202E}', '\u{2066}',
            '\u{FEFF}', '\u{AD}',
        ] {
            assert!(is_unseen(c), "{:?}", c);
        }
        for c in ['a', ' ', 'é', 'ț', '中', '\u{1F98A}', '-', '\u{2010}'] {
            assert!(!is_unseen(c), "{:?}", c);
        }
    }

    #[test]
    fn names_keep_the_joiners_and_marks_languages_need() {
        // Persian with a non-joiner, emoji sequences, Hebrew with a mark.
        for name in [
            "\u{062D}\u{0633}\u{0646}\u{200C}\u{0632}\u{0627}\u{062F}\u{0647}",
            "\u{1F469}\u{200D}\u{1F4BB}",
            "\u{1F3F3}\u{FE0F}\u{200D}\u{1F308}",
            "\u{05E9}\u{05DC}\u{05D5}\u{05DD} 1\u{200F}",
        ] {
            assert!(!hides(name), "{name:?}");
            assert_eq!(without_hidden(name), name);
        }
        // A joiner beside ASCII or at an end, a mark without right-to-left
        // text, and the other unseen characters, hide something.
        for name in [
            "Support\u{200D}",
            "Sup\u{200C}port",
            "\u{200D}\u{1F469}",
            "Support\u{200E}",
            "Sup\u{200B}port",
            "\u{202E}troppuS",
            "a\u{2066}b",
        ] {
            assert!(hides(name), "{name:?}");
        }
        assert_eq!(
            without_hidden("Trip\u{200B} to \u{202E}Rome\u{200D}"),
            "Trip to Rome"
        );
    }
}
