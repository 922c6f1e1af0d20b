//! llama.cpp's log: a model load records the lines it causes, because a
//! failed load reports its reason only there; otherwise warnings and errors
//! go to the host's log and the rest (~150 lines per load) is dropped.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Once;

use corral_sdk::abi::guest::{self, Level};
use llama_cpp_sys_2::{
    ggml_log_level, GGML_LOG_LEVEL_CONT, GGML_LOG_LEVEL_ERROR, GGML_LOG_LEVEL_WARN,
};

/// One line of llama.cpp's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLine {
    pub error: bool,
    pub text: String,
}

#[derive(Default)]
struct Capture {
    lines: Vec<LogLine>,
    /// A line llama.cpp has not finished yet (it logs in pieces).
    partial: Option<LogLine>,
}

thread_local! {
    // A load runs on one thread and llama.cpp logs on the thread that does
    // the work, so a per-thread capture keeps concurrent loads apart.
    static CAPTURE: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

/// Routes llama.cpp's and ggml's logs into [`capture`] or the host's log.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: `on_log` has the signature ggml expects and lives for the
        // program; the user data is unused.
        unsafe {
            llama_cpp_sys_2::llama_log_set(Some(on_log), std::ptr::null_mut());
            llama_cpp_sys_2::ggml_log_set(Some(on_log), std::ptr::null_mut());
        }
    });
}

/// Runs `f`, returning its result and the log lines it caused on this thread.
pub(crate) fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<LogLine>) {
    install();
    CAPTURE.with(|c| *c.borrow_mut() = Some(Capture::default()));
    let out = f();
    let captured = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    let mut lines = captured.lines;
    lines.extend(captured.partial);
    (out, lines)
}

unsafe extern "C" fn on_log(level: ggml_log_level, text: *const c_char, _user: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: ggml passes a NUL-terminated string valid for this call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    // A log callback must never unwind into C; `try_with` also copes with
    // calls during thread teardown.
    let captured = CAPTURE.try_with(|c| match c.try_borrow_mut() {
        Ok(mut slot) => slot
            .as_mut()
            .map(|capture| record(capture, level, &text))
            .is_some(),
        Err(_) => false,
    });
    if !matches!(captured, Ok(true)) {
        let line = text.trim();
        match level {
            GGML_LOG_LEVEL_ERROR if !line.is_empty() => guest::log(Level::Error, line),
            GGML_LOG_LEVEL_WARN if !line.is_empty() => guest::log(Level::Warn, line),
            _ => {}
        }
    }
}

fn record(capture: &mut Capture, level: ggml_log_level, text: &str) {
    let mut line = match capture.partial.take() {
        Some(line) if level == GGML_LOG_LEVEL_CONT => line,
        Some(line) => {
            capture.lines.push(line);
            new_line(level)
        }
        None => new_line(level),
    };
    let mut rest = text;
    while let Some(end) = rest.find('\n') {
        line.text.push_str(&rest[..end]);
        capture.lines.push(line);
        line = new_line(level);
        rest = &rest[end + 1..];
    }
    line.text.push_str(rest);
    if !line.text.is_empty() {
        capture.partial = Some(line);
    }
    // Bounded: a load logs a few hundred lines; keep the start and the end.
    if capture.lines.len() > 2000 {
        capture.lines.drain(100..capture.lines.len() - 1000);
    }
}

fn new_line(level: ggml_log_level) -> LogLine {
    LogLine {
        error: level == GGML_LOG_LEVEL_ERROR,
        text: String::new(),
    }
}

/// The reason a load failed, from its log: the error lines without
/// llama.cpp's function-name prefixes and generic wrappers.
pub(crate) fn failure_reason(lines: &[LogLine]) -> Option<String> {
    let mut reasons: Vec<String> = Vec::new();
    for line in lines.iter().filter(|l| l.error) {
        let mut text = line.text.trim();
        // "llama_model_load: error loading model: tensor …" → "tensor …"
        while let Some((head, tail)) = text.split_once(": ") {
            let is_prefix = head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                || head == "error loading model"
                || head.starts_with("failed to load model");
            if !is_prefix || tail.is_empty() {
                break;
            }
            text = tail.trim();
        }
        let generic = text.is_empty()
            || text == "failed to load model"
            || text.starts_with("failed to load model from");
        if !generic && !reasons.iter().any(|r| r == text) {
            reasons.push(text.to_string());
        }
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> LogLine {
        LogLine {
            error: true,
            text: text.into(),
        }
    }

    #[test]
    fn failure_reason_strips_prefixes_and_generic_lines() {
        let lines = [
            LogLine {
                error: false,
                text: "llama_model_loader: loaded meta data".into(),
            },
            err("llama_model_load: error loading model: tensor 'blk.0.ffn_up.weight' data is not within the file bounds, model is corrupted or incomplete"),
            err("llama_model_load_from_file_impl: failed to load model"),
        ];
        assert_eq!(
            failure_reason(&lines).as_deref(),
            Some("tensor 'blk.0.ffn_up.weight' data is not within the file bounds, model is corrupted or incomplete")
        );
        assert_eq!(failure_reason(&lines[..1]), None);
    }

    #[test]
    fn pieces_of_a_line_are_joined() {
        let mut c = Capture::default();
        record(&mut c, GGML_LOG_LEVEL_ERROR, "gguf_init: invalid ");
        record(&mut c, GGML_LOG_LEVEL_CONT, "magic\nnext");
        record(&mut c, llama_cpp_sys_2::GGML_LOG_LEVEL_INFO, "info line\n");
        assert_eq!(c.lines.len(), 3);
        assert_eq!(c.lines[0].text, "gguf_init: invalid magic");
        assert!(c.lines[0].error);
        assert_eq!(c.lines[1].text, "next");
        assert_eq!(c.lines[2].text, "info line");
        assert!(!c.lines[2].error);
    }
}
