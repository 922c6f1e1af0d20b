//! Masking whole texts and streamed answers.

use crate::scan::{scan, Found, Kind, Kinds};

/// The longest stretch a stream filter holds back. Every match is shorter
/// (an e-mail address is at most 64 + 1 + 253 bytes), so the cap only
/// bounds memory on text that cannot match.
const MAX_HOLD: usize = 512;

/// How many bytes of already emitted text the stream keeps as context
/// (the scanner looks one byte back).
const CONTEXT: usize = 8;

/// The settings: which kinds to mask, and with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redactor {
    pub kinds: Kinds,
    /// The text put in place of a match; `{kind}` becomes the kind's name.
    pub mask: String,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor {
            kinds: Kinds::ALL,
            mask: DEFAULT_MASK.to_owned(),
        }
    }
}

/// The mask when none is configured: `[email]`, `[phone]`, ...
pub const DEFAULT_MASK: &str = "[{kind}]";

impl Redactor {
    /// `text` with every match masked.
    pub fn redact(&self, text: &str) -> String {
        let found = scan(text.as_bytes(), 0, 0, self.kinds, true).found;
        self.apply(text, 0, &found)
    }

    fn mask(&self, kind: Kind) -> String {
        self.mask.replace("{kind}", kind.name())
    }

    /// `text` with `found` masked; positions in `found` are `offset`
    /// bytes ahead of positions in `text`.
    fn apply(&self, text: &str, offset: usize, found: &[Found]) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in found {
            let (start, end) = (f.start - offset, f.end - offset);
            out.push_str(&text[at..start]);
            out.push_str(&self.mask(f.kind));
            at = end;
        }
        out.push_str(&text[at..]);
        out
    }
}

/// The state of one streamed answer: the end of what was emitted, which
/// the scanner needs to see where a word starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    context: Vec<u8>,
    /// Where in `context` the last match ended (0: before it).
    after_match: usize,
}

impl Stream {
    /// Masks `text` (what was held last time followed by the new stretch):
    /// the part that is decided, to emit now, and the part to hold back
    /// because a match could still start there.
    pub fn chunk(&mut self, redactor: &Redactor, text: &str) -> (String, String) {
        let base = self.context.len();
        let buffer = [self.context.as_slice(), text.as_bytes()].concat();
        let scanned = scan(&buffer, base, self.after_match, redactor.kinds, false);
        let mut cut = scanned.pending.map_or(text.len(), |p| p - base);
        if text.len() - cut > MAX_HOLD {
            cut = text.len() - MAX_HOLD;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
        }
        // A match is emitted whole or held whole.
        for f in scanned.found.iter().rev() {
            if f.start - base < cut && f.end - base > cut {
                cut = f.start - base;
            }
        }
        let decided: Vec<Found> = scanned
            .found
            .into_iter()
            .filter(|f| f.end - base <= cut)
            .collect();
        let emit = redactor.apply(&text[..cut], base, &decided);
        self.remember(&buffer[..base + cut], decided.last());
        (emit, text[cut..].to_owned())
    }

    /// Masks what was still held at the end of the answer.
    pub fn finish(&mut self, redactor: &Redactor, held: &str) -> String {
        let base = self.context.len();
        let buffer = [self.context.as_slice(), held.as_bytes()].concat();
        let found = scan(&buffer, base, self.after_match, redactor.kinds, true).found;
        self.remember(&buffer, found.last());
        redactor.apply(held, base, &found)
    }

    /// Keeps the end of `buffer` (the context followed by what was just
    /// emitted) as the context of the next call.
    fn remember(&mut self, buffer: &[u8], last: Option<&Found>) {
        let keep_from = buffer.len().saturating_sub(CONTEXT);
        if let Some(found) = last {
            self.after_match = found.end;
        }
        self.after_match = self.after_match.saturating_sub(keep_from);
        self.context = buffer[keep_from..].to_vec();
    }
}
