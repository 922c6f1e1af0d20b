//! Splitting documents into passages for retrieval.
//!
//! Paragraphs (text between blank lines; a Markdown heading starts one;
//! a fenced code block is one) stay whole when they fit. Longer ones are
//! cut between sentences, then between words. Pieces are packed into
//! chunks of at most `size` characters, and each chunk after the first
//! starts with the end of the previous one (up to `overlap` characters,
//! from a word boundary), so a passage cut in two is still found whole.

/// How a piece joins the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    Paragraph,
    Sentence,
}

impl Join {
    fn separator(self) -> &'static str {
        match self {
            Join::Paragraph => "\n\n",
            Join::Sentence => " ",
        }
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// `text` in chunks of at most `size` characters with up to `overlap`
/// characters repeated from the previous chunk. `size` is at least 20,
/// `overlap` at most half of `size`.
pub fn chunk(text: &str, size: usize, overlap: usize) -> Vec<String> {
    let size = size.max(20);
    let overlap = overlap.min(size / 2);
    let mut chunks: Vec<String> = Vec::new();
    let mut current = String::new();
    for (join, piece) in pieces(text, size) {
        if current.is_empty() {
            current = piece;
            continue;
        }
        let sep = join.separator();
        if chars(&current) + chars(sep) + chars(&piece) <= size {
            current.push_str(sep);
            current.push_str(&piece);
            continue;
        }
        let room = size.saturating_sub(chars(sep) + chars(&piece));
        let tail = overlap_tail(&current, overlap, room);
        chunks.push(std::mem::take(&mut current));
        if !tail.is_empty() {
            current = tail;
            current.push_str(sep);
        }
        current.push_str(&piece);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The end of `chunk` to repeat at the start of the next one: at most
/// `overlap` characters (and at most `room`), starting at a word.
fn overlap_tail(chunk: &str, overlap: usize, room: usize) -> String {
    let want = overlap.min(room);
    if want == 0 {
        return String::new();
    }
    let total = chars(chunk);
    if total <= want {
        return chunk.to_owned();
    }
    let start = chunk
        .char_indices()
        .nth(total - want)
        .map_or(chunk.len(), |(i, _)| i);
    let tail = &chunk[start..];
    // Start after the first whitespace unless the cut already fell on one.
    let cut_on_boundary = chunk[..start].ends_with(char::is_whitespace);
    let tail = if cut_on_boundary {
        tail
    } else {
        tail.find(char::is_whitespace).map_or("", |i| &tail[i..])
    };
    tail.trim().to_owned()
}

/// The document as pieces of at most `size` characters, each with how it
/// joins the piece before it.
fn pieces(text: &str, size: usize) -> Vec<(Join, String)> {
    let mut out = Vec::new();
    for block in blocks(text) {
        if chars(&block) <= size {
            out.push((Join::Paragraph, block));
            continue;
        }
        let mut join = Join::Paragraph;
        for sentence in sentences(&block) {
            for part in split_long(sentence, size) {
                out.push((join, part));
                join = Join::Sentence;
            }
        }
    }
    out
}

/// Paragraphs: text between blank lines; a Markdown heading starts a new
/// one; a fenced code block (```) is never split at its blank lines.
fn blocks(text: &str) -> Vec<String> {
    let text = text.replace("\r\n", "\n");
    let mut blocks = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut in_code = false;
    let mut flush = |current: &mut Vec<&str>| {
        let block = current.join("\n").trim().to_owned();
        if !block.is_empty() {
            blocks.push(block);
        }
        current.clear();
    };
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            if !in_code {
                flush(&mut current);
            }
            in_code = !in_code;
            current.push(line);
            if !in_code {
                flush(&mut current);
            }
            continue;
        }
        if in_code {
            current.push(line);
        } else if trimmed.is_empty() {
            flush(&mut current);
        } else {
            if trimmed.starts_with('#') {
                flush(&mut current);
            }
            current.push(line);
        }
    }
    flush(&mut current);
    blocks
}

/// Sentences: cut after `.`, `!` or `?` followed by whitespace, and at
/// line breaks.
fn sentences(block: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = block.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next_is_space = chars.peek().is_some_and(|&(_, n)| n.is_whitespace());
        let end = if c == '\n' {
            Some(i)
        } else if matches!(c, '.' | '!' | '?') && next_is_space {
            Some(i + c.len_utf8())
        } else {
            None
        };
        if let Some(end) = end {
            let sentence = block[start..end].trim();
            if !sentence.is_empty() {
                out.push(sentence);
            }
            start = end;
        }
    }
    let rest = block[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// `text` in parts of at most `size` characters, cut between words, and
/// inside a word only when the word alone is longer.
fn split_long(text: &str, size: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        let mut word = word;
        while chars(word) > size {
            if !current.is_empty() {
                parts.push(std::mem::take(&mut current));
            }
            let cut = word.char_indices().nth(size).map_or(word.len(), |(i, _)| i);
            parts.push(word[..cut].to_owned());
            word = &word[cut..];
        }
        if word.is_empty() {
            continue;
        }
        if !current.is_empty() && chars(&current) + 1 + chars(word) > size {
            parts.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        text.split_whitespace().collect()
    }

    /// Every word of `text`, in order, is in the chunks, reading each
    /// chunk from where its overlap with the previous one ends.
    fn assert_covers(text: &str, chunks: &[String]) {
        let all = words(text);
        let mut at = 0;
        for chunk in chunks {
            let chunk_words = words(chunk);
            // Skip the repeated start: find where the chunk continues.
            let skip = (0..=chunk_words.len())
                .find(|&k| chunk_words[k..].iter().zip(&all[at..]).all(|(a, b)| a == b))
                .expect("the chunk continues the text");
            let new = &chunk_words[skip..];
            assert_eq!(new, &all[at..at + new.len()], "chunk {chunk:?}");
            at += new.len();
        }
        assert_eq!(at, all.len(), "all words covered");
    }

    #[test]
    fn short_paragraphs_share_a_chunk() {
        let text = "First paragraph.\n\nSecond one.\n\n\n  Third.  ";
        assert_eq!(
            chunk(text, 500, 100),
            ["First paragraph.\n\nSecond one.\n\nThird."]
        );
    }

    #[test]
    fn paragraphs_that_fit_are_never_split() {
        let para = |n: usize| format!("Paragraph {n} {}", "word ".repeat(30).trim_end());
        let text = (0..10).map(para).collect::<Vec<_>>().join("\n\n");
        let chunks = chunk(&text, 500, 100);
        assert!(chunks.len() > 1);
        for n in 0..10 {
            assert!(
                chunks.iter().any(|c| c.contains(&para(n))),
                "paragraph {n} whole"
            );
        }
        for c in &chunks {
            assert!(chars(c) <= 500, "{} chars", chars(c));
        }
        assert_covers(&text, &chunks);
    }

    #[test]
    fn long_paragraphs_are_cut_between_sentences() {
        let sentence =
            |n: usize| format!("Sentence number {n} says something useful about the topic.");
        let text = (0..40).map(sentence).collect::<Vec<_>>().join(" ");
        let chunks = chunk(&text, 300, 80);
        for c in &chunks {
            assert!(chars(c) <= 300);
            assert!(c.ends_with('.'), "ends at a sentence: {c:?}");
        }
        assert_covers(&text, &chunks);
    }

    #[test]
    fn consecutive_chunks_overlap() {
        let text = (0..60)
            .map(|n| format!("Fact {n} is here."))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = chunk(&text, 200, 60);
        assert!(chunks.len() >= 3);
        for pair in chunks.windows(2) {
            let tail_of_first: Vec<&str> = words(&pair[0]).into_iter().rev().take(3).collect();
            let head = words(&pair[1]);
            assert!(
                tail_of_first.iter().all(|w| head.contains(w)),
                "{:?} then {:?}",
                pair[0],
                pair[1]
            );
            assert!(chars(&pair[1]) <= 200);
        }
        assert_covers(&text, &chunks);
        let plain = chunk(&text, 200, 0);
        let count: usize = plain.iter().map(|c| words(c).len()).sum();
        assert_eq!(count, words(&text).len(), "no overlap: every word once");
    }

    #[test]
    fn headings_and_code_blocks_start_paragraphs() {
        let text =
            "# Title\nIntro line.\n## Install\n```sh\ncargo build\n\ncargo test\n```\nAfter.";
        assert_eq!(
            blocks(text),
            [
                "# Title\nIntro line.",
                "## Install",
                "```sh\ncargo build\n\ncargo test\n```",
                "After."
            ]
        );
    }

    #[test]
    fn words_longer_than_a_chunk_are_cut() {
        let text = format!("short {} end", "x".repeat(130));
        let chunks = chunk(&text, 50, 10);
        assert!(chunks.iter().all(|c| chars(c) <= 50));
        assert!(chunks.concat().matches('x').count() >= 130);
    }

    #[test]
    fn multibyte_text_is_counted_in_characters() {
        let text = "Überprüfung größerer Dateien läuft schnell. ".repeat(30);
        let chunks = chunk(&text, 120, 30);
        assert!(chunks.iter().all(|c| chars(c) <= 120));
        assert_covers(&text, &chunks);
    }

    #[test]
    fn empty_text_has_no_chunks() {
        assert!(chunk("", 500, 100).is_empty());
        assert!(chunk(" \n\n \t", 500, 100).is_empty());
    }
}
