//! The C ABI carries every call, error and panic of a backend intact. The
//! backend here is a small word echoer exported with `export_backend!` from
//! this test binary and reached only through its vtable.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use corral_sdk::abi::host::{DynBackend, LibraryError};
use corral_sdk::abi::{BackendVTable, ABI_VERSION};
use corral_sdk::backend::*;

#[derive(Default)]
pub struct Echo;

struct EchoModel {
    slots: u32,
}

impl Backend for Echo {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "echo".into(),
            version: "1".into(),
            description: "repeats the prompt word by word".into(),
            capabilities: Capabilities {
                chat: true,
                completion: true,
                embeddings: true,
            },
            formats: vec!["txt".into()],
        }
    }

    fn load(
        &self,
        request: &LoadRequest,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> BackendResult<Box<dyn Model>> {
        if request.path == "panic" {
            panic!("load exploded");
        }
        if !request.path.ends_with(".txt") {
            return Err(BackendError::InvalidModel(format!(
                "{}: not a .txt file",
                request.path
            )));
        }
        for step in 1..=4 {
            if !progress(step as f32 / 4.0) {
                return Err(BackendError::Internal("load abandoned".into()));
            }
        }
        Ok(Box::new(EchoModel {
            slots: request.slots,
        }))
    }
}

impl Model for EchoModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            architecture: "echo".into(),
            capabilities: Capabilities::default(),
            context_length: 64,
            trained_context_length: None,
            slots: self.slots,
            vocab_size: 0,
            embedding_length: Some(2),
            chat_template: Some(corral_sdk::chat_template::CHATML.into()),
            chat_template_source: Some("default".into()),
            memory_bytes: 1,
        }
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        if request.prompt == "boom" {
            panic!("generate exploded");
        }
        let words: Vec<&str> = request.prompt.split_whitespace().collect();
        if words.len() > 64 {
            return Err(BackendError::ContextOverflow(format!(
                "{} tokens do not fit 64",
                words.len()
            )));
        }
        sink(TokenEvent::Started {
            prompt_tokens: words.len() as u32,
        });
        // A decode thread of the backend keeps a clone of the token, as
        // batching backends do, and may look at it after we return.
        let watcher = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            watcher.is_cancelled()
        });
        let mut completion = 0;
        for word in words
            .iter()
            .cycle()
            .take(request.sampling.max_tokens as usize)
        {
            if cancel.is_cancelled() {
                return Ok(summary(FinishReason::Cancelled, words.len(), completion));
            }
            sink(TokenEvent::Text {
                text: format!("{word} "),
            });
            completion += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(summary(FinishReason::Length, words.len(), completion))
    }

    fn embed(&self, inputs: &[String]) -> BackendResult<Vec<Vec<f32>>> {
        Ok(inputs.iter().map(|s| vec![s.len() as f32, 1.0]).collect())
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> BackendResult<Vec<u32>> {
        let mut ids: Vec<u32> = text.split_whitespace().map(|w| w.len() as u32).collect();
        if add_bos {
            ids.insert(0, 0);
        }
        Ok(ids)
    }

    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> BackendResult<String> {
        corral_sdk::chat_template::render(
            corral_sdk::chat_template::CHATML,
            messages,
            add_generation_prompt,
            "",
            "",
        )
        .map_err(BackendError::InvalidRequest)
    }
}

fn summary(reason: FinishReason, prompt: usize, completion: u32) -> GenerateSummary {
    GenerateSummary {
        finish_reason: reason,
        prompt_tokens: prompt as u32,
        completion_tokens: completion,
        truncated_tokens: 0,
        time_to_first_token: 0.0,
        total_time: 0.0,
        cached_tokens: 0,
    }
}

corral_sdk::export_backend!(Echo);

fn backend() -> DynBackend {
    // SAFETY: the vtable comes from `export_backend!` above.
    unsafe { DynBackend::from_vtable(corral_backend_entry_v1(), Path::new("echo")) }.unwrap()
}

fn load(backend: &DynBackend, path: &str) -> BackendResult<Box<dyn Model>> {
    let request = LoadRequest {
        path: path.into(),
        context_length: 0,
        threads: 1,
        slots: 2,
        chat_template: None,
        prompt_cache: true,
    };
    backend.load(&request, &mut |_| true)
}

fn generate(prompt: &str, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        prompt: prompt.into(),
        add_bos: false,
        sampling: SamplingParams {
            max_tokens,
            ..SamplingParams::default()
        },
        truncation: Truncation::Error,
        cache_key: None,
    }
}

#[test]
fn version_and_info_cross() {
    assert_eq!(corral_backend_abi_version(), ABI_VERSION);
    let info = backend().info();
    assert_eq!(info.name, "echo");
    assert!(info.capabilities.embeddings);
}

#[test]
fn load_reports_progress_and_errors() {
    let backend = backend();
    let mut seen = Vec::new();
    let request = LoadRequest {
        path: "m.txt".into(),
        context_length: 0,
        threads: 1,
        slots: 3,
        chat_template: None,
        prompt_cache: true,
    };
    let model = backend
        .load(&request, &mut |p| {
            seen.push(p);
            true
        })
        .unwrap();
    assert_eq!(seen, [0.25, 0.5, 0.75, 1.0]);
    assert_eq!(model.info().slots, 3);
    assert_eq!(
        load(&backend, "m.bin").err(),
        Some(BackendError::InvalidModel("m.bin: not a .txt file".into()))
    );
    let abandoned = backend.load(&request, &mut |p| p < 0.5).err();
    assert_eq!(
        abandoned,
        Some(BackendError::Internal("load abandoned".into()))
    );
}

#[test]
fn generation_streams_events_and_summary() {
    let model = load(&backend(), "m.txt").unwrap();
    let mut events = Vec::new();
    let summary = model
        .generate(
            &generate("a bb", 3),
            &mut |e| events.push(e),
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(
        events,
        vec![
            TokenEvent::Started { prompt_tokens: 2 },
            TokenEvent::Text { text: "a ".into() },
            TokenEvent::Text { text: "bb ".into() },
            TokenEvent::Text { text: "a ".into() },
        ]
    );
    assert_eq!(summary.finish_reason, FinishReason::Length);
    assert_eq!(summary.completion_tokens, 3);
    let long = vec!["w"; 65].join(" ");
    assert!(matches!(
        model.generate(&generate(&long, 1), &mut |_| {}, &CancelToken::new()),
        Err(BackendError::ContextOverflow(_))
    ));
}

#[test]
fn cancellation_reaches_the_backend_from_another_thread() {
    let model = load(&backend(), "m.txt").unwrap();
    let cancel = CancelToken::new();
    let seen = AtomicU32::new(0);
    let summary = std::thread::scope(|scope| {
        let canceller = cancel.clone();
        scope.spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            canceller.cancel();
        });
        model
            .generate(
                &generate("x", 100_000),
                &mut |_| {
                    seen.fetch_add(1, Ordering::Relaxed);
                },
                &cancel,
            )
            .unwrap()
    });
    assert_eq!(summary.finish_reason, FinishReason::Cancelled);
    assert!(summary.completion_tokens < 100_000);
    // The backend's watcher thread outlives the call; it must not reach
    // back into this (finished) call's context.
    std::thread::sleep(Duration::from_millis(80));
}

#[test]
fn panics_stay_inside_the_library() {
    let backend = backend();
    match load(&backend, "panic") {
        Err(BackendError::Internal(msg)) => assert!(msg.contains("load exploded"), "{msg}"),
        other => panic!("expected a contained panic, got {:?}", other.map(|_| ())),
    }
    let model = load(&backend, "m.txt").unwrap();
    match model.generate(&generate("boom", 1), &mut |_| {}, &CancelToken::new()) {
        Err(BackendError::Internal(msg)) => assert!(msg.contains("generate exploded"), "{msg}"),
        other => panic!("expected a contained panic, got {other:?}"),
    }
    // The model still works afterwards.
    assert!(model
        .generate(&generate("ok", 1), &mut |_| {}, &CancelToken::new())
        .is_ok());
}

#[test]
fn model_calls_cross() {
    let model = load(&backend(), "m.txt").unwrap();
    assert_eq!(model.tokenize("ab cde", true).unwrap(), vec![0, 2, 3]);
    assert_eq!(model.embed(&["abc".into()]).unwrap(), vec![vec![3.0, 1.0]]);
    let prompt = model
        .apply_chat_template(
            &[ChatMessage {
                role: "user".into(),
                content: "Hi".into(),
            }],
            true,
        )
        .unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(model.info().architecture, "echo");
}

#[test]
fn foreign_and_mismatched_libraries_are_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("corral-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("libfake.so");
    std::fs::write(&fake, b"not a library").unwrap();
    let err = DynBackend::open(&fake).unwrap_err();
    assert!(matches!(err, LibraryError::Open { .. }), "{err}");
    assert!(err.to_string().contains("libfake.so"), "{err}");

    let missing = DynBackend::open(&dir.join("nope.so")).unwrap_err();
    assert!(missing.to_string().contains("nope.so"), "{missing}");

    // A real shared library that is not a backend.
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists());
    if let Some(libm) = libm {
        let err = DynBackend::open(libm).unwrap_err();
        assert!(matches!(err, LibraryError::NotABackend { .. }), "{err}");
    }

    // SAFETY: the vtable comes from `export_backend!`; it is only read.
    let real = unsafe { &*corral_backend_entry_v1() };
    let old = Box::leak(Box::new(BackendVTable {
        abi_version: ABI_VERSION + 1,
        ..*real
    }));
    // SAFETY: a leaked vtable.
    let err = unsafe { DynBackend::from_vtable(old, Path::new("old.so")) }.unwrap_err();
    assert!(matches!(err, LibraryError::AbiMismatch { found, .. } if found == ABI_VERSION + 1));
    // SAFETY: null is allowed.
    let err =
        unsafe { DynBackend::from_vtable(std::ptr::null(), Path::new("null.so")) }.unwrap_err();
    assert!(matches!(err, LibraryError::StartFailed { .. }));
    std::fs::remove_dir_all(&dir).ok();
}
