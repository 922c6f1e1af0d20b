//! What the host lends plugins (`log`, `kv`, `config`, `models`), for
//! every WIT version: each call checks the capability was asked for and
//! granted, caps sizes, runs as the calling user, and keeps the time it
//! waits off the plugin's CPU budget.

use corral_hooks::{ChatMessage, KvScope, SamplingChange};

use crate::calls::MAX_TEXT_BYTES;
use crate::manifest::Capability;
use crate::sandbox::PluginState;

/// The longest key-value key.
pub const MAX_KV_KEY_BYTES: usize = 256;
/// The largest key-value value.
pub const MAX_KV_VALUE_BYTES: usize = 1024 * 1024;
/// Most keys one `list` returns.
const MAX_KV_LIST: usize = 10_000;
/// Most texts in one `embed` call.
const MAX_EMBED_TEXTS: usize = 256;
/// Most messages in one `generate` call.
const MAX_GENERATE_MESSAGES: usize = 1000;
/// The configuration field naming the plugin's embedding model.
pub const EMBEDDING_MODEL_FIELD: &str = "embedding-model";

/// Whose key-value data a call reaches, as the plugin names it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    User,
    Shared,
}

impl PluginState {
    fn scope(&self, scope: Scope) -> KvScope {
        match scope {
            Scope::User => KvScope::User(self.caller.user_id.clone()),
            Scope::Shared => KvScope::Shared,
        }
    }

    fn check_key(key: &str) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KV_KEY_BYTES {
            return Err(format!("a key is 1-{MAX_KV_KEY_BYTES} bytes"));
        }
        Ok(())
    }

    /// Logs a failed host service call; the plugin sees only the message.
    fn service_failed(&mut self, what: &str, e: &str) {
        tracing::warn!(target: "corral::plugin", plugin = %self.env.id, "{what} failed: {e}");
    }

    pub(crate) async fn kv_get(&mut self, scope: Scope, key: String) -> Option<Vec<u8>> {
        self.check(Capability::Kv).ok()?;
        Self::check_key(&key).ok()?;
        let scope = self.scope(scope);
        let since = self.clock.enter_host();
        let r = self.services.kv_get(&self.env.id, &scope, &key).await;
        self.clock.host_time(since);
        r.unwrap_or_else(|e| {
            self.service_failed("kv get", &e);
            None
        })
    }

    pub(crate) async fn kv_set(
        &mut self,
        scope: Scope,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), String> {
        self.check(Capability::Kv)?;
        Self::check_key(&key)?;
        if value.len() > MAX_KV_VALUE_BYTES {
            return Err(format!("a value is at most {MAX_KV_VALUE_BYTES} bytes"));
        }
        let scope = self.scope(scope);
        let since = self.clock.enter_host();
        let r = self
            .services
            .kv_set(&self.env.id, &scope, &key, value, self.env.kv_quota_bytes)
            .await;
        self.clock.host_time(since);
        r
    }

    pub(crate) async fn kv_delete(&mut self, scope: Scope, key: String) -> bool {
        if self.check(Capability::Kv).is_err() || Self::check_key(&key).is_err() {
            return false;
        }
        let scope = self.scope(scope);
        let since = self.clock.enter_host();
        let r = self.services.kv_delete(&self.env.id, &scope, &key).await;
        self.clock.host_time(since);
        r.unwrap_or_else(|e| {
            self.service_failed("kv delete", &e);
            false
        })
    }

    pub(crate) async fn kv_list(&mut self, scope: Scope, prefix: String) -> Vec<String> {
        if self.check(Capability::Kv).is_err() || prefix.len() > MAX_KV_KEY_BYTES {
            return Vec::new();
        }
        let scope = self.scope(scope);
        let since = self.clock.enter_host();
        let r = self.services.kv_list(&self.env.id, &scope, &prefix).await;
        self.clock.host_time(since);
        match r {
            Ok(mut keys) => {
                keys.truncate(MAX_KV_LIST);
                keys
            }
            Err(e) => {
                self.service_failed("kv list", &e);
                Vec::new()
            }
        }
    }

    pub(crate) fn config_get(&mut self, key: &str) -> Option<String> {
        self.check(Capability::Config).ok()?;
        self.env.config.get(key).map(|v| v.to_string())
    }

    pub(crate) async fn models_generate(
        &mut self,
        model: Option<String>,
        messages: Vec<ChatMessage>,
        sampling: SamplingChange,
    ) -> Result<String, String> {
        self.check(Capability::Generate)?;
        let model = model
            .or_else(|| self.model.clone())
            .ok_or("no model named and none is in use here")?;
        if messages.len() > MAX_GENERATE_MESSAGES {
            return Err(format!("at most {MAX_GENERATE_MESSAGES} messages"));
        }
        if messages.iter().any(|m| m.content.len() > MAX_TEXT_BYTES) {
            return Err(format!("a message is at most {MAX_TEXT_BYTES} bytes"));
        }
        let since = self.clock.enter_host();
        let r = self
            .services
            .generate(&self.caller, &model, messages, sampling)
            .await;
        self.clock.host_time(since);
        r
    }

    pub(crate) async fn models_embed(
        &mut self,
        model: Option<String>,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, String> {
        self.check(Capability::Embed)?;
        if texts.len() > MAX_EMBED_TEXTS {
            return Err(format!("at most {MAX_EMBED_TEXTS} texts per call"));
        }
        if texts.iter().any(|t| t.len() > MAX_TEXT_BYTES) {
            return Err(format!("a text is at most {MAX_TEXT_BYTES} bytes"));
        }
        let model = model.or_else(|| {
            self.env
                .config
                .get(EMBEDDING_MODEL_FIELD)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        });
        let since = self.clock.enter_host();
        let r = self
            .services
            .embed(&self.caller, model.as_deref(), texts)
            .await;
        self.clock.host_time(since);
        r
    }
}
