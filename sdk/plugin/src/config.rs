//! Capability `config`: the settings a technician saved for the plugin,
//! checked by Corral against the manifest's `[config]` schema.
//!
//! ```no_run
//! use corral_plugin::config;
//! let top_k: u32 = config::get_or("top-k", 4);
//! let model: Option<String> = config::get("model")?;
//! # Ok::<(), corral_plugin::Error>(())
//! ```
//!
//! Defaults written in the manifest's schema are not filled in by the host
//! call: pass the same default to [`get_or`].

use serde::de::DeserializeOwned;

use crate::Error;

/// The setting `key` as JSON text, or `None` when it is not set.
pub fn raw(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return crate::__private::wit::corral::plugin::config::get(key);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::config_get(key);
}

/// The setting `key` read as `T`; `Ok(None)` when it is not set, an error
/// when it does not read as `T`.
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    match raw(key) {
        None => Ok(None),
        Some(json) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| Error::new(format!("setting `{key}` is not valid: {e}"))),
    }
}

/// The setting `key`, or `default` when it is not set or does not read as
/// `T`.
pub fn get_or<T: DeserializeOwned>(key: &str, default: T) -> T {
    get(key).ok().flatten().unwrap_or(default)
}
