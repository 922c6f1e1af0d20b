//! Picking passages for a question, and the text that cites them.

/// Cosine similarity; 0 when a vector is zero or the lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 || !(dot.is_finite() && na.is_finite() && nb.is_finite()) {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

/// A passage that may be given to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    /// The document's name, as shown in sources.
    pub source: &'a str,
    pub text: &'a str,
    pub score: f32,
}

/// The `k` passages most similar to `query` with at least `min_score`,
/// best first (ties keep their order).
pub fn top_k<'a>(
    query: &[f32],
    passages: impl IntoIterator<Item = (&'a str, &'a str, &'a [f32])>,
    k: usize,
    min_score: f32,
) -> Vec<Candidate<'a>> {
    let mut scored: Vec<Candidate<'a>> = passages
        .into_iter()
        .map(|(source, text, vector)| Candidate {
            source,
            text,
            score: cosine(query, vector),
        })
        .filter(|c| c.score >= min_score)
        .collect();
    scored.sort_by(|a, b| b.score.total_cmp(&a.score));
    scored.truncate(k);
    scored
}

/// What the model is told before the passages.
pub const INSTRUCTIONS: &str = "Passages from the user's documents follow, each labelled [n] with \
its source. Use them when they answer the question, and cite them by label, like [1].";

/// The context entries for `chosen`: the instructions, then each passage
/// labelled `[n] source`.
pub fn context_entries(chosen: &[Candidate<'_>]) -> Vec<String> {
    let mut entries = Vec::with_capacity(chosen.len() + 1);
    entries.push(INSTRUCTIONS.to_owned());
    for (i, c) in chosen.iter().enumerate() {
        entries.push(format!("[{}] {}\n{}", i + 1, c.source, c.text));
    }
    entries
}

/// The line that ends the answer: `Sources: [1, 3] guide.md; [2] faq.md`,
/// documents in the order first cited; `None` without sources.
pub fn sources_line(sources: &[String]) -> Option<String> {
    if sources.is_empty() {
        return None;
    }
    let mut grouped: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        match grouped.iter_mut().find(|(s, _)| s == source) {
            Some((_, labels)) => labels.push(i + 1),
            None => grouped.push((source, vec![i + 1])),
        }
    }
    let parts: Vec<String> = grouped
        .iter()
        .map(|(source, labels)| {
            let labels: Vec<String> = labels.iter().map(usize::to_string).collect();
            format!("[{}] {source}", labels.join(", "))
        })
        .collect();
    Some(format!("Sources: {}", parts.join("; ")))
}

/// The answer's last words: what was held back, then the sources on a
/// paragraph of their own.
pub fn with_sources(held: &str, sources: &[String]) -> String {
    match sources_line(sources) {
        Some(line) => format!("{held}\n\n{line}"),
        None => held.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 1.0], &[-1.0, -1.0]) + 1.0).abs() < 1e-6);
        assert!((cosine(&[3.0, 4.0], &[6.0, 8.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 2.0]), 0.0);
        assert_eq!(cosine(&[], &[]), 0.0);
        // Accumulated in f64: the largest floats do not overflow, infinities
        // and NaN give 0.
        assert!((cosine(&[f32::MAX, f32::MAX], &[f32::MAX, f32::MAX]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[f32::INFINITY, 1.0], &[1.0, 1.0]), 0.0);
        assert_eq!(cosine(&[f32::NAN, 1.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn top_k_keeps_the_best_above_the_threshold() {
        let q = [1.0, 0.0];
        let passages: Vec<(&str, &str, &[f32])> = vec![
            ("a.md", "orthogonal", &[0.0, 1.0]),
            ("b.md", "close", &[0.9, 0.1]),
            ("c.md", "exact", &[2.0, 0.0]),
            ("d.md", "opposite", &[-1.0, 0.0]),
            ("e.md", "fair", &[0.6, 0.8]),
        ];
        let best = top_k(&q, passages.clone(), 2, 0.3);
        let texts: Vec<&str> = best.iter().map(|c| c.text).collect();
        assert_eq!(texts, ["exact", "close"]);
        let all = top_k(&q, passages.clone(), 10, 0.3);
        let texts: Vec<&str> = all.iter().map(|c| c.text).collect();
        assert_eq!(texts, ["exact", "close", "fair"]);
        assert!(top_k(&q, passages, 10, 0.999_9).len() == 1);
    }

    #[test]
    fn context_labels_passages_in_order() {
        let chosen = vec![
            Candidate {
                source: "guide.md",
                text: "Run cargo build.",
                score: 0.9,
            },
            Candidate {
                source: "faq.md",
                text: "Yes.",
                score: 0.5,
            },
        ];
        assert_eq!(
            context_entries(&chosen),
            [
                INSTRUCTIONS.to_owned(),
                "[1] guide.md\nRun cargo build.".to_owned(),
                "[2] faq.md\nYes.".to_owned()
            ]
        );
    }

    #[test]
    fn sources_group_labels_by_document() {
        let sources: Vec<String> = ["guide.md", "faq.md", "guide.md"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            sources_line(&sources).unwrap(),
            "Sources: [1, 3] guide.md; [2] faq.md"
        );
        assert_eq!(sources_line(&[]), None);
        assert_eq!(
            with_sources("the end.", &sources[..1]),
            "the end.\n\nSources: [1] guide.md"
        );
        assert_eq!(with_sources("the end.", &[]), "the end.");
    }
}
