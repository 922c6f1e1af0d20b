//! Error messages leave the backend as one line of text, without the
//! backtrace candle captures when `RUST_BACKTRACE` is set. A test binary of
//! its own: the variable must be set before anything captures a backtrace.

use corral_candle::CandleBackend;
use corral_sdk::backend::{Backend, BackendError, LoadRequest};

fn load(path: &str) -> BackendError {
    let request = LoadRequest {
        path: path.into(),
        context_length: 256,
        threads: 1,
        slots: 1,
        chat_template: None,
        prompt_cache: true,
    };
    match CandleBackend.load(&request, &mut |_| true) {
        Ok(_) => panic!("{path} loaded"),
        Err(e) => e,
    }
}

#[test]
fn load_errors_are_one_line_without_backtraces() {
    std::env::set_var("RUST_BACKTRACE", "1");
    let dir = std::env::temp_dir().join(format!("corral-candle-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // candle `bail!`s on these, which captures a backtrace.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad-magic", b"NOPE\x03\x00\x00\x00".repeat(8)),
        ("bad-version", b"GGUF\x63\x00\x00\x00".repeat(8)),
    ];
    for (name, bytes) in cases {
        let path = dir.join(format!("{name}.gguf"));
        std::fs::write(&path, bytes).unwrap();
        let err = load(path.to_str().unwrap());
        let BackendError::InvalidModel(text) = &err else {
            panic!("{name}: {err:?}");
        };
        assert!(!text.is_empty(), "{name}");
        assert!(!text.contains('\n'), "{name}: {text:?}");
        assert!(
            !text.contains("backtrace") && !text.contains(".rs:"),
            "{name}: {text:?}"
        );
        assert!(
            text.contains("GGUF") || text.contains("magic"),
            "{name}: {text:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
