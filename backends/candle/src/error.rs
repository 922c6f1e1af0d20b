//! Error text that leaves the backend: one line, no backtrace.
//!
//! candle's errors carry a captured backtrace when `RUST_BACKTRACE` is set
//! (`bail!` and `Error::msg` attach one), and their `Display` prints it,
//! build paths and all, on the lines after the message.

use candle_core::Error;

/// The message of a candle error on one line, contexts chained with `: `.
pub fn describe(e: &Error) -> String {
    match e {
        Error::WithBacktrace { inner, .. } => describe(inner),
        Error::Context { inner, context } => one_line(&format!("{context}: {}", describe(inner))),
        Error::WrappedContext { wrapped, context } => one_line(&format!("{context}: {wrapped}")),
        Error::WithPath { inner, path } => {
            one_line(&format!("{}: {}", path.display(), describe(inner)))
        }
        other => one_line(&other.to_string()),
    }
}

/// Joins the non-blank lines of `text` with `; `.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtraces_and_line_breaks_are_dropped() {
        let bt = Error::WithBacktrace {
            inner: Box::new(Error::Msg("cannot slice".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert_eq!(describe(&bt), "cannot slice");
        let ctx = bt.context("attention");
        assert_eq!(describe(&ctx), "attention: cannot slice");
        assert_eq!(one_line("a\n  b\n\nc "), "a; b; c");
    }
}
