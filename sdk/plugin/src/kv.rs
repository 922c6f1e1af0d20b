//! Capability `kv`: key-value data private to the plugin, kept in Corral's
//! store within the plugin's quota (`[limits] kv-kb`, all users together).
//!
//! [`user()`] reaches the calling user's own data, [`shared()`] the data
//! the plugin shares between all its users. No plugin sees another's data,
//! and no user's [`user()`] data is visible to another user.
//!
//! ```no_run
//! use corral_plugin::kv;
//! kv::user().set("level", "beginner")?;
//! let level = kv::user().get_string("level");
//! # Ok::<(), corral_plugin::Error>(())
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Error;

/// Whose data a [`Store`] reaches.
pub type Scope = crate::__private::wit::corral::plugin::kv::Scope;

/// The calling user's own data.
pub fn user() -> Store {
    Store { scope: Scope::User }
}

/// The plugin's data shared by all its users.
pub fn shared() -> Store {
    Store {
        scope: Scope::Shared,
    }
}

/// One scope of the plugin's key-value data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Store {
    scope: Scope,
}

impl Store {
    /// Which data this reaches.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        host::get(self.scope, key)
    }

    /// The value under `key` as text; `None` when missing or not UTF-8.
    pub fn get_string(&self, key: &str) -> Option<String> {
        self.get(key)
            .and_then(|bytes| String::from_utf8(bytes).ok())
    }

    /// The value under `key` read as JSON; `Ok(None)` when missing.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::new(format!("the value under `{key}` is not valid: {e}"))),
        }
    }

    /// Stores `value` under `key`. Fails when the plugin's quota would be
    /// exceeded or the key is not valid.
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
        host::set(self.scope, key, value.as_ref()).map_err(Error::from)
    }

    /// Stores `value` as JSON under `key`.
    pub fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::new(format!("cannot write the value for `{key}`: {e}")))?;
        self.set(key, bytes)
    }

    /// Removes `key`; whether it existed.
    pub fn delete(&self, key: &str) -> bool {
        host::delete(self.scope, key)
    }

    /// The keys that start with `prefix`, in order.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        host::list(self.scope, prefix)
    }
}

#[cfg(target_arch = "wasm32")]
mod host {
    pub use crate::__private::wit::corral::plugin::kv::{delete, get, list, set};
}

#[cfg(not(target_arch = "wasm32"))]
mod host {
    pub use crate::testing::{kv_delete as delete, kv_get as get, kv_list as list, kv_set as set};
}
