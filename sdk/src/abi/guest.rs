//! The library side of the ABI: the functions [`crate::export_backend!`]
//! puts in the vtable.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;
use crate::backend::{
    Backend, BackendError, BackendResult, CancelToken, GenerateRequest, LoadRequest, Model,
    TokenEvent,
};

/// Builds this library's vtable once, with one instance of `B`. Both are
/// leaked on purpose: a backend library stays loaded for the life of the
/// process. Null if `B::default()` panics.
pub fn vtable<B: Backend + Default>() -> *const BackendVTable {
    static VTABLE: OnceLock<usize> = OnceLock::new();
    let address = *VTABLE.get_or_init(|| {
        let Ok(backend) = catch_unwind(B::default) else {
            return 0;
        };
        let backend = Box::leak(Box::new(backend)) as *const B as *const c_void;
        let table = BackendVTable {
            abi_version: ABI_VERSION,
            backend,
            free_buffer,
            set_logger,
            info: info::<B>,
            load: load::<B>,
            release_model,
            generate,
            call,
        };
        Box::leak(Box::new(table)) as *const BackendVTable as usize
    });
    address as *const BackendVTable
}

static LOGGER: AtomicUsize = AtomicUsize::new(0);

/// Log levels of [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

/// Sends a line to the host's log (dropped until the host installs its
/// logger).
pub fn log(level: Level, text: &str) {
    let address = LOGGER.load(Ordering::Acquire);
    if address != 0 {
        // SAFETY: only `set_logger` stores here, and it stores a `LogFn`.
        let f: LogFn = unsafe { std::mem::transmute::<usize, LogFn>(address) };
        // SAFETY: the pointer and length describe `text`, alive for the call.
        unsafe { f(level as u32, text.as_ptr(), text.len()) };
    }
}

unsafe extern "C" fn set_logger(log: LogFn) {
    LOGGER.store(log as usize, Ordering::Release);
}

unsafe extern "C" fn free_buffer(buffer: Buffer) {
    if !buffer.ptr.is_null() {
        // SAFETY: every buffer this library hands out comes from
        // `Buffer::from_vec` here, with this allocator.
        drop(unsafe { Vec::from_raw_parts(buffer.ptr, buffer.len, buffer.cap) });
    }
}

/// Runs `f`, writes its answer (or error, or panic message) to `out`, and
/// returns the status code.
fn guarded(out: *mut Buffer, f: impl FnOnce() -> BackendResult<Vec<u8>>) -> i32 {
    let (code, bytes) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(bytes)) => (OK, bytes),
        Ok(Err(err)) => (ERR, serde_json::to_vec(&err).unwrap_or_default()),
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".to_owned());
            (PANIC, text.into_bytes())
        }
    };
    if !out.is_null() {
        // SAFETY: the host passes a valid, writable out parameter.
        unsafe { out.write(Buffer::from_vec(bytes)) };
    }
    code
}

/// # Safety
/// `ptr`/`len` must describe live memory for the duration of the call.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> BackendResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| BackendError::InvalidRequest(format!("malformed request: {e}")))
}

fn json<T: Serialize>(value: &T) -> BackendResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| BackendError::Internal(e.to_string()))
}

unsafe extern "C" fn info<B: Backend>(backend: *const c_void, out: *mut Buffer) -> i32 {
    guarded(out, || {
        // SAFETY: `backend` is the instance `vtable` leaked.
        let backend = unsafe { &*(backend as *const B) };
        json(&backend.info())
    })
}

unsafe extern "C" fn load<B: Backend>(
    backend: *const c_void,
    request: *const u8,
    request_len: usize,
    progress: ProgressFn,
    progress_ctx: *mut c_void,
    model: *mut *mut c_void,
    out: *mut Buffer,
) -> i32 {
    guarded(out, || {
        // SAFETY: `backend` is the instance `vtable` leaked; the request
        // bytes live for the call.
        let backend = unsafe { &*(backend as *const B) };
        let request: LoadRequest = parse(unsafe { bytes(request, request_len) })?;
        // SAFETY: the host keeps `progress_ctx` valid for the call.
        let mut report = |p: f32| unsafe { progress(progress_ctx, p) };
        let loaded: Box<dyn Model> = backend.load(&request, &mut report)?;
        // SAFETY: the host passes a valid out parameter for the handle.
        unsafe { model.write(Box::into_raw(Box::new(loaded)) as *mut c_void) };
        Ok(Vec::new())
    })
}

unsafe extern "C" fn release_model(model: *mut c_void) {
    if !model.is_null() {
        // A panic while dropping is contained; the model is then leaked.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: handles come from `load` and are released once.
            drop(unsafe { Box::from_raw(model as *mut Box<dyn Model>) });
        }));
    }
}

/// # Safety
/// `model` must be a live handle from `load`.
unsafe fn model_ref<'a>(model: *const c_void) -> &'a dyn Model {
    // SAFETY: guaranteed by the caller.
    unsafe { &**(model as *const Box<dyn Model>) }
}

/// The host's cancel callback and context, callable from any thread.
struct HostCancel {
    check: CancelFn,
    ctx: *mut c_void,
}

// SAFETY: the host's cancel callback only reads an atomic flag through
// `ctx`, which is safe from any thread; `CancelToken::disarm` stops all use
// before `generate` returns and the context goes away.
unsafe impl Send for HostCancel {}
unsafe impl Sync for HostCancel {}

impl HostCancel {
    fn cancelled(&self) -> bool {
        // SAFETY: see the `Send`/`Sync` note above.
        unsafe { (self.check)(self.ctx) }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn generate(
    model: *const c_void,
    request: *const u8,
    request_len: usize,
    on_event: EventFn,
    event_ctx: *mut c_void,
    is_cancelled: CancelFn,
    cancel_ctx: *mut c_void,
    out: *mut Buffer,
) -> i32 {
    let host = HostCancel {
        check: is_cancelled,
        ctx: cancel_ctx,
    };
    let cancel = CancelToken::with_check(move || host.cancelled());
    let code = guarded(out, || {
        // SAFETY: a live handle; the request bytes live for the call.
        let model = unsafe { model_ref(model) };
        let request: GenerateRequest = parse(unsafe { bytes(request, request_len) })?;
        let mut sink = |event: TokenEvent| {
            if let Ok(bytes) = serde_json::to_vec(&event) {
                // SAFETY: the host keeps `event_ctx` valid for the call.
                unsafe { on_event(event_ctx, bytes.as_ptr(), bytes.len()) };
            }
        };
        json(&model.generate(&request, &mut sink, &cancel)?)
    });
    // The backend may still hold clones of the token (a decode thread
    // finishing up): from now on they read "cancelled" without calling back
    // into the host, whose context is about to go away.
    cancel.disarm();
    code
}

unsafe extern "C" fn call(
    model: *const c_void,
    method: u32,
    request: *const u8,
    request_len: usize,
    out: *mut Buffer,
) -> i32 {
    guarded(out, || {
        // SAFETY: a live handle; the request bytes live for the call.
        let model = unsafe { model_ref(model) };
        let request = unsafe { bytes(request, request_len) };
        match ModelCall::from_u32(method) {
            Some(ModelCall::Info) => json(&model.info()),
            Some(ModelCall::Embed) => {
                let inputs: Vec<String> = parse(request)?;
                json(&model.embed(&inputs)?)
            }
            Some(ModelCall::Tokenize) => {
                let req: TokenizeRequest = parse(request)?;
                json(&model.tokenize(&req.text, req.add_bos)?)
            }
            Some(ModelCall::ApplyChatTemplate) => {
                let req: ChatTemplateRequest = parse(request)?;
                json(&model.apply_chat_template(&req.messages, req.add_generation_prompt)?)
            }
            None => Err(BackendError::Unsupported(format!(
                "this backend does not know model call {method}"
            ))),
        }
    })
}
