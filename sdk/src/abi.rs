//! The C ABI that carries the [`Backend`] trait across a shared-library
//! boundary.
//!
//! A backend library exports two symbols (the [`export_backend!`] macro
//! writes them): [`VERSION_SYMBOL`], returning [`ABI_VERSION`], and
//! [`ENTRY_SYMBOL`], returning a [`BackendVTable`]. Requests and answers
//! cross as JSON bytes; every buffer is freed by the side that allocated it
//! (through [`BackendVTable::free_buffer`]); every exported function catches
//! panics, which never unwind into the host. The library and the host each
//! have their own copy of std and of every crate, so nothing but plain C
//! data crosses: no Rust allocations, trait objects or thread-locals.
//!
//! [`Backend`]: crate::backend::Backend
//! [`export_backend!`]: crate::export_backend

use std::ffi::c_void;

/// Version of this ABI. The host refuses a library that reports another.
pub const ABI_VERSION: u32 = 1;
/// `extern "C" fn() -> u32`: the library's ABI version.
pub const VERSION_SYMBOL: &str = "corral_backend_abi_version";
/// `extern "C" fn() -> *const BackendVTable`.
pub const ENTRY_SYMBOL: &str = "corral_backend_entry_v1";

/// Call succeeded; the out buffer holds the JSON answer.
pub const OK: i32 = 0;
/// Call failed; the out buffer holds a JSON [`crate::backend::BackendError`].
pub const ERR: i32 = 1;
/// The backend panicked; the out buffer holds the panic message as text.
pub const PANIC: i32 = 2;

/// Bytes owned by the library that allocated them.
#[repr(C)]
#[derive(Debug)]
pub struct Buffer {
    pub ptr: *mut u8,
    pub len: usize,
    pub cap: usize,
}

impl Buffer {
    /// An empty buffer to pass as an out parameter.
    pub const fn empty() -> Self {
        Buffer {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
        }
    }

    /// Hands over a vector's allocation.
    pub fn from_vec(v: Vec<u8>) -> Self {
        let mut v = std::mem::ManuallyDrop::new(v);
        Buffer {
            ptr: v.as_mut_ptr(),
            len: v.len(),
            cap: v.capacity(),
        }
    }

    /// The bytes, for reading.
    ///
    /// # Safety
    /// `ptr`/`len` must describe live memory (or `ptr` be null).
    pub unsafe fn as_slice(&self) -> &[u8] {
        if self.ptr.is_null() {
            &[]
        } else {
            std::slice::from_raw_parts(self.ptr, self.len)
        }
    }
}

/// Reports load progress (0–1); returning `false` asks to abandon the load.
pub type ProgressFn = unsafe extern "C" fn(ctx: *mut c_void, progress: f32) -> bool;
/// Receives one JSON [`crate::backend::TokenEvent`], valid during the call.
pub type EventFn = unsafe extern "C" fn(ctx: *mut c_void, json: *const u8, len: usize);
/// Tells whether the generation was cancelled.
pub type CancelFn = unsafe extern "C" fn(ctx: *mut c_void) -> bool;
/// Receives a log line: level (1 error … 5 trace) and UTF-8 text.
pub type LogFn = unsafe extern "C" fn(level: u32, text: *const u8, len: usize);

/// The functions of a backend library. `backend` is the library's own
/// instance, passed back to each call.
#[repr(C)]
pub struct BackendVTable {
    pub abi_version: u32,
    pub backend: *const c_void,
    /// Frees a buffer this library allocated.
    pub free_buffer: unsafe extern "C" fn(buffer: Buffer),
    /// Installs the host's log sink.
    pub set_logger: unsafe extern "C" fn(log: LogFn),
    /// `out`: JSON `BackendInfo`.
    pub info: unsafe extern "C" fn(backend: *const c_void, out: *mut Buffer) -> i32,
    /// `request`: JSON `LoadRequest`. On success `model` is set to a handle
    /// and `out` is empty.
    pub load: unsafe extern "C" fn(
        backend: *const c_void,
        request: *const u8,
        request_len: usize,
        progress: ProgressFn,
        progress_ctx: *mut c_void,
        model: *mut *mut c_void,
        out: *mut Buffer,
    ) -> i32,
    /// Frees a model handle.
    pub release_model: unsafe extern "C" fn(model: *mut c_void),
    /// `request`: JSON `GenerateRequest`; `out`: JSON `GenerateSummary`.
    pub generate: unsafe extern "C" fn(
        model: *const c_void,
        request: *const u8,
        request_len: usize,
        on_event: EventFn,
        event_ctx: *mut c_void,
        is_cancelled: CancelFn,
        cancel_ctx: *mut c_void,
        out: *mut Buffer,
    ) -> i32,
    /// Any other model call: `method` names it (see [`ModelCall`]),
    /// `request` and `out` are its JSON.
    pub call: unsafe extern "C" fn(
        model: *const c_void,
        method: u32,
        request: *const u8,
        request_len: usize,
        out: *mut Buffer,
    ) -> i32,
}

/// The model calls that go through [`BackendVTable::call`].
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelCall {
    /// `()` → `ModelInfo`
    Info = 1,
    /// `Vec<String>` → `Vec<Vec<f32>>`
    Embed = 2,
    /// `TokenizeRequest` → `Vec<u32>`
    Tokenize = 3,
    /// `ChatTemplateRequest` → `String`
    ApplyChatTemplate = 4,
}

impl ModelCall {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(ModelCall::Info),
            2 => Some(ModelCall::Embed),
            3 => Some(ModelCall::Tokenize),
            4 => Some(ModelCall::ApplyChatTemplate),
            _ => None,
        }
    }
}

/// Arguments of [`ModelCall::Tokenize`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TokenizeRequest {
    pub text: String,
    pub add_bos: bool,
}

/// Arguments of [`ModelCall::ApplyChatTemplate`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ChatTemplateRequest {
    pub messages: Vec<crate::backend::ChatMessage>,
    pub add_generation_prompt: bool,
}

pub mod guest;
#[cfg(feature = "loader")]
pub mod host;

/// Exports a [`Backend`](crate::backend::Backend) type (which must also be
/// `Default`) from a `cdylib` as a Corral backend library.
///
/// ```text
/// #[derive(Default)]
/// pub struct MyBackend;
/// impl corral_sdk::backend::Backend for MyBackend { /* … */ }
/// corral_sdk::export_backend!(MyBackend);
/// ```
#[macro_export]
macro_rules! export_backend {
    ($backend:ty) => {
        #[no_mangle]
        pub extern "C" fn corral_backend_abi_version() -> u32 {
            $crate::abi::ABI_VERSION
        }

        #[no_mangle]
        pub extern "C" fn corral_backend_entry_v1() -> *const $crate::abi::BackendVTable {
            $crate::abi::guest::vtable::<$backend>()
        }
    };
}
