//! The host side of the ABI: opens a backend library with libloading and
//! wraps it back into the [`Backend`] and [`Model`] traits.

use std::ffi::c_void;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;
use crate::backend::{
    Backend, BackendError, BackendInfo, BackendResult, CancelToken, ChatMessage, GenerateRequest,
    GenerateSummary, LoadRequest, Model, ModelInfo, TokenEvent,
};

/// Why a library could not be used as a backend. Every message names the
/// file.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("{path}: cannot open the library: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: not a Corral backend (no `{symbol}` symbol)")]
    NotABackend { path: PathBuf, symbol: &'static str },
    #[error("{path}: built for backend ABI {found}, this host speaks {expected}; rebuild it against this corral-sdk")]
    AbiMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("{path}: the backend failed to start")]
    StartFailed { path: PathBuf },
}

/// A backend in a shared library (or any vtable).
pub struct DynBackend {
    vtable: &'static BackendVTable,
    path: PathBuf,
}

// SAFETY: the vtable is immutable and its functions are thread-safe by the
// ABI's contract (the backend behind them is `Send + Sync`).
unsafe impl Send for DynBackend {}
unsafe impl Sync for DynBackend {}

impl std::fmt::Debug for DynBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynBackend")
            .field("path", &self.path)
            .finish()
    }
}

impl DynBackend {
    /// Opens a backend library. The library is never unloaded: unloading
    /// code that may have left threads or thread-locals behind is unsound.
    pub fn open(path: &Path) -> Result<Self, LibraryError> {
        // SAFETY: loading a library runs its initialisers; backend
        // libraries are trusted code the technician installed.
        let library =
            unsafe { libloading::Library::new(path) }.map_err(|e| LibraryError::Open {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let missing = |symbol| LibraryError::NotABackend {
            path: path.to_owned(),
            symbol,
        };
        // SAFETY: the symbol's type is fixed by the ABI.
        let version =
            unsafe { library.get::<unsafe extern "C" fn() -> u32>(VERSION_SYMBOL.as_bytes()) }
                .map_err(|_| missing(VERSION_SYMBOL))?;
        // SAFETY: as above.
        let found = unsafe { version() };
        if found != ABI_VERSION {
            return Err(LibraryError::AbiMismatch {
                path: path.to_owned(),
                found,
                expected: ABI_VERSION,
            });
        }
        // SAFETY: as above; checked to be the same ABI version.
        let entry = unsafe {
            library.get::<unsafe extern "C" fn() -> *const BackendVTable>(ENTRY_SYMBOL.as_bytes())
        }
        .map_err(|_| missing(ENTRY_SYMBOL))?;
        // SAFETY: as above.
        let vtable = unsafe { entry() };
        std::mem::forget(library);
        // SAFETY: the vtable comes from a library of this ABI version.
        unsafe { Self::from_vtable(vtable, path) }
    }

    /// Wraps a vtable directly (for a backend linked into the same binary).
    ///
    /// # Safety
    /// `vtable` must be null or point to a vtable of [`ABI_VERSION`] that
    /// lives for the rest of the process.
    pub unsafe fn from_vtable(
        vtable: *const BackendVTable,
        path: &Path,
    ) -> Result<Self, LibraryError> {
        // SAFETY: guaranteed by the caller.
        let Some(vtable) = (unsafe { vtable.as_ref() }) else {
            return Err(LibraryError::StartFailed {
                path: path.to_owned(),
            });
        };
        if vtable.abi_version != ABI_VERSION {
            return Err(LibraryError::AbiMismatch {
                path: path.to_owned(),
                found: vtable.abi_version,
                expected: ABI_VERSION,
            });
        }
        // SAFETY: `log_line` has the `LogFn` signature.
        unsafe { (vtable.set_logger)(log_line) };
        Ok(DynBackend {
            vtable,
            path: path.to_owned(),
        })
    }

    /// The library file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

unsafe extern "C" fn log_line(level: u32, text: *const u8, len: usize) {
    if text.is_null() {
        return;
    }
    // SAFETY: the library passes a pointer and length valid for the call.
    let bytes = unsafe { std::slice::from_raw_parts(text, len) };
    let text = String::from_utf8_lossy(bytes);
    match level {
        1 => tracing::error!(target: "corral::backend", "{text}"),
        2 => tracing::warn!(target: "corral::backend", "{text}"),
        3 => tracing::info!(target: "corral::backend", "{text}"),
        4 => tracing::debug!(target: "corral::backend", "{text}"),
        _ => tracing::trace!(target: "corral::backend", "{text}"),
    }
}

/// Reads an answer buffer, frees it, and decodes it by status code.
fn answer<T: DeserializeOwned>(vtable: &BackendVTable, code: i32, out: Buffer) -> BackendResult<T> {
    // SAFETY: the library filled `out` (or left it empty).
    let bytes = unsafe { out.as_slice() }.to_vec();
    // SAFETY: `out` came from this library and is freed once.
    unsafe { (vtable.free_buffer)(out) };
    let text = || String::from_utf8_lossy(&bytes).into_owned();
    match code {
        OK => serde_json::from_slice(&bytes)
            .map_err(|e| BackendError::Internal(format!("malformed answer from the backend: {e}"))),
        ERR => {
            Err(serde_json::from_slice(&bytes).unwrap_or_else(|_| BackendError::Internal(text())))
        }
        PANIC => Err(BackendError::Internal(format!(
            "the backend panicked: {}",
            text()
        ))),
        other => Err(BackendError::Internal(format!(
            "the backend answered with unknown status {other}"
        ))),
    }
}

fn request_bytes<T: Serialize>(value: &T) -> BackendResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| BackendError::Internal(e.to_string()))
}

unsafe extern "C" fn progress_trampoline(ctx: *mut c_void, progress: f32) -> bool {
    // SAFETY: `ctx` is the `&mut dyn FnMut` that `load` passes, alive for
    // the call.
    let f = unsafe { &mut *(ctx as *mut &mut dyn FnMut(f32) -> bool) };
    f(progress)
}

impl Backend for DynBackend {
    fn info(&self) -> BackendInfo {
        let mut out = Buffer::empty();
        // SAFETY: a valid vtable and out parameter.
        let code = unsafe { (self.vtable.info)(self.vtable.backend, &mut out) };
        answer(self.vtable, code, out).unwrap_or_else(|e| BackendInfo {
            name: self.path.display().to_string(),
            version: "unknown".into(),
            description: format!("info failed: {e}"),
            capabilities: Default::default(),
            formats: Vec::new(),
        })
    }

    fn load(
        &self,
        request: &LoadRequest,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> BackendResult<Box<dyn Model>> {
        let bytes = request_bytes(request)?;
        let mut progress: &mut dyn FnMut(f32) -> bool = progress;
        let mut handle: *mut c_void = std::ptr::null_mut();
        let mut out = Buffer::empty();
        // SAFETY: every pointer is valid for the call; the progress context
        // is the fat pointer above, read back by `progress_trampoline`.
        let code = unsafe {
            (self.vtable.load)(
                self.vtable.backend,
                bytes.as_ptr(),
                bytes.len(),
                progress_trampoline,
                &mut progress as *mut &mut dyn FnMut(f32) -> bool as *mut c_void,
                &mut handle,
                &mut out,
            )
        };
        if code == OK {
            // SAFETY: `out` is empty or this library's buffer.
            unsafe { (self.vtable.free_buffer)(out) };
            if handle.is_null() {
                return Err(BackendError::Internal(
                    "the backend returned no model".into(),
                ));
            }
            return Ok(Box::new(DynModel {
                vtable: self.vtable,
                handle,
            }));
        }
        answer::<()>(self.vtable, code, out)?;
        Err(BackendError::Internal(
            "the load failed without a reason".into(),
        ))
    }
}

/// A model loaded through the ABI.
struct DynModel {
    vtable: &'static BackendVTable,
    handle: *mut c_void,
}

// SAFETY: models are `Send + Sync` on the library side (the `Model` trait
// requires it); the handle is only an address.
unsafe impl Send for DynModel {}
unsafe impl Sync for DynModel {}

impl Drop for DynModel {
    fn drop(&mut self) {
        // SAFETY: the handle came from this library's `load`, released once.
        unsafe { (self.vtable.release_model)(self.handle) };
    }
}

impl DynModel {
    fn call<Req: Serialize, Res: DeserializeOwned>(
        &self,
        method: ModelCall,
        request: &Req,
    ) -> BackendResult<Res> {
        let bytes = request_bytes(request)?;
        let mut out = Buffer::empty();
        // SAFETY: a live handle and valid buffers.
        let code = unsafe {
            (self.vtable.call)(
                self.handle,
                method as u32,
                bytes.as_ptr(),
                bytes.len(),
                &mut out,
            )
        };
        answer(self.vtable, code, out)
    }
}

/// What `generate` hands the library as its event context.
struct EventContext<'a> {
    sink: &'a mut dyn FnMut(TokenEvent),
}

unsafe extern "C" fn event_trampoline(ctx: *mut c_void, json: *const u8, len: usize) {
    // SAFETY: `ctx` is the `EventContext` of the running `generate`; the
    // bytes are valid for the call.
    let ctx = unsafe { &mut *(ctx as *mut EventContext<'_>) };
    let bytes = unsafe { std::slice::from_raw_parts(json, len) };
    if let Ok(event) = serde_json::from_slice::<TokenEvent>(bytes) {
        (ctx.sink)(event);
    }
}

unsafe extern "C" fn cancel_trampoline(ctx: *mut c_void) -> bool {
    // SAFETY: `ctx` is the `CancelToken` of the running `generate`.
    let token = unsafe { &*(ctx as *const CancelToken) };
    token.is_cancelled()
}

impl Model for DynModel {
    fn info(&self) -> ModelInfo {
        self.call(ModelCall::Info, &())
            .unwrap_or_else(|e| ModelInfo {
                architecture: format!("unknown ({e})"),
                capabilities: Default::default(),
                context_length: 0,
                trained_context_length: None,
                slots: 0,
                vocab_size: 0,
                embedding_length: None,
                chat_template: None,
                chat_template_source: None,
                memory_bytes: 0,
            })
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        let bytes = request_bytes(request)?;
        let mut ctx = EventContext { sink };
        let mut out = Buffer::empty();
        // SAFETY: all pointers outlive the call; the library stops using the
        // contexts before it returns (it disarms its cancel token).
        let code = unsafe {
            (self.vtable.generate)(
                self.handle,
                bytes.as_ptr(),
                bytes.len(),
                event_trampoline,
                &mut ctx as *mut EventContext<'_> as *mut c_void,
                cancel_trampoline,
                cancel as *const CancelToken as *mut c_void,
                &mut out,
            )
        };
        answer(self.vtable, code, out)
    }

    fn embed(&self, inputs: &[String]) -> BackendResult<Vec<Vec<f32>>> {
        self.call(ModelCall::Embed, &inputs)
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> BackendResult<Vec<u32>> {
        self.call(
            ModelCall::Tokenize,
            &TokenizeRequest {
                text: text.to_owned(),
                add_bos,
            },
        )
    }

    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> BackendResult<String> {
        self.call(
            ModelCall::ApplyChatTemplate,
            &ChatTemplateRequest {
                messages: messages.to_vec(),
                add_generation_prompt,
            },
        )
    }
}
