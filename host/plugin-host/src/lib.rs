//! Corral's plugin runtime: WebAssembly components of the `corral:plugin`
//! WIT, run with wasmtime behind the generation service's
//! [`corral_hooks::Hooks`].
//!
//! - **Install** ([`PluginHost::install`]): `plugin.toml` is parsed and
//!   checked; the component's WIT version must match the manifest and be
//!   one this runtime runs ([`SUPPORTED_APIS`]); every import must be
//!   something Corral offers and, for Corral's own interfaces, a
//!   capability the manifest asks for. The component is compiled once and
//!   cached on disk (keyed by its SHA-256 and the engine), and linked once.
//! - **Run**: every generation and every route request gets fresh
//!   instances (nothing carries over between them), in a WASI sandbox with
//!   no files, environment, arguments or sockets, a memory cap, and a time
//!   budget per call enforced by epoch interruption (time spent waiting in
//!   host calls does not count). Outbound HTTP (`wasi:http`) reaches only
//!   the hosts the manifest declares and a technician approved, and only
//!   public addresses unless the technician allowed the private network.
//! - **Fail**: a call that traps, runs out of time or memory, or answers
//!   with something invalid is stopped, logged and counted; the plugin's
//!   failure policy decides whether the generation goes on without it or
//!   stops. After [`RuntimeConfig::failure_threshold`] failures in a row
//!   the plugin is turned off and the host told.

#![deny(missing_docs)]

mod call;
mod calls;
mod engine;
mod error;
mod generation;
mod host;
mod imports;
mod manifest;
mod net;
mod sandbox;
mod schema;
mod stats;
mod wit;

pub use calls::{
    RouteRequest, RouteResponse, MAX_CONTEXT_PASSAGES, MAX_REASON_BYTES, MAX_ROUTE_BODY_BYTES,
    MAX_TEXT_BYTES,
};
pub use error::PluginError;
pub use host::{
    EffectiveLimits, Inspected, PluginHost, PluginSettings, PluginStatus, RuntimeConfig,
};
pub use imports::{EMBEDDING_MODEL_FIELD, MAX_KV_KEY_BYTES, MAX_KV_VALUE_BYTES};
pub use manifest::{
    Capability, FailurePolicy, Hook, Manifest, ManifestError, RequestedLimits, RoutePattern,
};
pub use net::{is_public, HostPattern, MAX_HOSTS};
pub use schema::ConfigSchema;
pub use stats::{Export, ExportStats};
pub use wit::SUPPORTED_APIS;
