//! An in-process stand-in for Corral's host functions, for testing plugin
//! logic natively (`cargo test`); only in builds for the host, never in a
//! component.
//!
//! Every thread has its own state (Rust's test runner gives each test a
//! thread); [`reset`] clears it. The runners ([`before_prompt`],
//! [`stream`], [`handle`], ...) call a [`Plugin`] the way Corral does and
//! make the caller they are given the owner of [`kv::user`](crate::kv::user)
//! data, so tests can check that one user never sees another's.
//!
//! ```
//! use corral_plugin::prelude::*;
//! use corral_plugin::testing;
//!
//! struct Echo;
//! impl Plugin for Echo {
//!     fn handle(request: &Request) -> Response {
//!         let _ = kv::user().set("last", &request.body);
//!         Response::text(200, String::from_utf8_lossy(&request.body))
//!     }
//! }
//!
//! testing::reset();
//! let response = testing::handle::<Echo>(&testing::request("POST", "echo", "ann", "hi"));
//! assert_eq!(response.body, b"hi");
//! assert_eq!(testing::user_kv("ann")["last"], b"hi");
//! assert!(testing::user_kv("bob").is_empty());
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::fetch::{Fetch, Fetched};
use crate::kv::Scope;
use crate::log::Level;
use crate::models::GenerateRequest;
use crate::types::{Answer, AnswerAction, Caller, Context, Decision, Message, Prompt, Role};
use crate::types::{Sampling, Surface};
use crate::{Plugin, Request, Response};

type Embedder = Box<dyn Fn(Option<&str>, &[String]) -> Result<Vec<Vec<f32>>, String>>;
type Generator = Box<dyn Fn(&GenerateRequest) -> Result<String, String>>;
type Fetcher = Box<dyn Fn(&Fetch) -> Result<Fetched, String>>;

/// The key-value quota [`reset`] sets: Corral's default `kv-kb`, 1024 KiB.
pub const DEFAULT_KV_QUOTA: u64 = 1024 * 1024;

struct Host {
    caller: Caller,
    granted: Option<Vec<String>>,
    config: BTreeMap<String, String>,
    user_kv: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    shared_kv: BTreeMap<String, Vec<u8>>,
    kv_quota: u64,
    logs: Vec<(Level, String)>,
    embedder: Option<Embedder>,
    generator: Option<Generator>,
    fetcher: Option<Fetcher>,
}

impl Host {
    fn new() -> Self {
        Host {
            caller: caller("user-1"),
            granted: None,
            config: BTreeMap::new(),
            user_kv: BTreeMap::new(),
            shared_kv: BTreeMap::new(),
            kv_quota: DEFAULT_KV_QUOTA,
            logs: Vec::new(),
            embedder: None,
            generator: None,
            fetcher: None,
        }
    }

    fn require(&self, capability: &str) {
        if let Some(granted) = &self.granted {
            if !granted.iter().any(|c| c == capability) {
                panic!("capability `{capability}` is not granted");
            }
        }
    }

    fn kv_bytes(&self) -> u64 {
        let users = self.user_kv.values().flat_map(|m| m.iter());
        users
            .chain(self.shared_kv.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }

    fn data(&mut self, scope: Scope) -> &mut BTreeMap<String, Vec<u8>> {
        match scope {
            Scope::User => self.user_kv.entry(self.caller.user_id.clone()).or_default(),
            Scope::Shared => &mut self.shared_kv,
        }
    }
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::new());
}

fn with_host<T>(f: impl FnOnce(&mut Host) -> T) -> T {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

/// Clears this thread's stand-in: no settings, no data, no log lines,
/// every capability granted, caller `user-1`.
pub fn reset() {
    with_host(|host| *host = Host::new());
}

/// Grants only these capabilities (`log`, `kv`, `config`, `generate`,
/// `embed`, `http`); a call needing another one panics with the host's message,
/// "capability `kv` is not granted".
pub fn grant(capabilities: &[&str]) {
    let granted = capabilities.iter().map(|c| (*c).to_owned()).collect();
    with_host(|host| host.granted = Some(granted));
}

/// A caller with role `user` whose username is its id.
pub fn caller(user_id: &str) -> Caller {
    Caller {
        user_id: user_id.to_owned(),
        username: user_id.to_owned(),
        role: Role::User,
    }
}

/// Makes `caller` the one host calls run for (the runners below do this
/// themselves).
pub fn set_caller(caller: Caller) {
    with_host(|host| host.caller = caller);
}

/// A chat generation's context for `user_id` on model `test-model`.
pub fn context(user_id: &str) -> Context {
    Context {
        caller: caller(user_id),
        model: "test-model".to_owned(),
        surface: Surface::Chat,
        chat_id: Some("chat-1".to_owned()),
    }
}

/// A prompt of `messages` without a system prompt.
pub fn prompt(messages: Vec<Message>) -> Prompt {
    Prompt {
        messages,
        system_prompt: None,
        sampling: Sampling::default(),
    }
}

/// A route request from `user_id`.
pub fn request(method: &str, path: &str, user_id: &str, body: impl Into<Vec<u8>>) -> Request {
    Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: String::new(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: body.into(),
        caller: caller(user_id),
    }
}

/// Saves the setting `key` (what a technician does in Corral).
pub fn set_config(key: &str, value: serde_json::Value) {
    with_host(|host| host.config.insert(key.to_owned(), value.to_string()));
}

/// Sets the plugin's key-value quota in bytes (keys and values of all
/// users together).
pub fn set_kv_quota(bytes: u64) {
    with_host(|host| host.kv_quota = bytes);
}

/// Answers `models::embed` calls with `embedder`; without one they fail
/// with "no embedding model".
pub fn set_embedder(
    embedder: impl Fn(Option<&str>, &[String]) -> Result<Vec<Vec<f32>>, String> + 'static,
) {
    with_host(|host| host.embedder = Some(Box::new(embedder)));
}

/// Answers `models::generate` calls with `generator`; without one they
/// fail with "no model".
pub fn set_generator(generator: impl Fn(&GenerateRequest) -> Result<String, String> + 'static) {
    with_host(|host| host.generator = Some(Box::new(generator)));
}

/// Answers the plugin's outgoing requests ([`crate::fetch`]) with
/// `fetcher`; without one they fail with "no fetcher is set".
pub fn set_fetcher(fetcher: impl Fn(&Fetch) -> Result<Fetched, String> + 'static) {
    with_host(|host| host.fetcher = Some(Box::new(fetcher)));
}

/// The lines the plugin logged, oldest first.
pub fn logs() -> Vec<(Level, String)> {
    with_host(|host| host.logs.clone())
}

/// One user's key-value data of the plugin.
pub fn user_kv(user_id: &str) -> BTreeMap<String, Vec<u8>> {
    with_host(|host| host.user_kv.get(user_id).cloned().unwrap_or_default())
}

/// The plugin's shared key-value data.
pub fn shared_kv() -> BTreeMap<String, Vec<u8>> {
    with_host(|host| host.shared_kv.clone())
}

/// Calls `P::before_prompt` for `ctx.caller`.
pub fn before_prompt<P: Plugin>(ctx: &Context, prompt: &Prompt) -> Decision {
    set_caller(ctx.caller.clone());
    P::before_prompt(ctx, prompt)
}

/// What a stream filter made of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRun {
    /// What each `on_chunk` emitted, then what `finish` returned.
    pub emitted: Vec<String>,
    /// All of it joined: the text the client received.
    pub text: String,
}

/// Streams `chunks` through `P::on_chunk` and `P::finish` as Corral does:
/// text held back goes in front of the next chunk, and what is held at
/// the end goes to `finish`.
pub fn stream<P: Plugin>(ctx: &Context, chunks: &[&str]) -> StreamRun {
    set_caller(ctx.caller.clone());
    let mut held = String::new();
    let mut emitted = Vec::with_capacity(chunks.len() + 1);
    for chunk in chunks {
        held.push_str(chunk);
        let result = P::on_chunk(ctx, std::mem::take(&mut held));
        emitted.push(result.emit);
        held = result.hold;
    }
    emitted.push(P::finish(ctx, held));
    let text = emitted.concat();
    StreamRun { emitted, text }
}

/// Calls `P::after_answer` for `ctx.caller`.
pub fn after_answer<P: Plugin>(ctx: &Context, answer: &Answer) -> AnswerAction {
    set_caller(ctx.caller.clone());
    P::after_answer(ctx, answer)
}

/// Calls `P::handle` for `request.caller`.
pub fn handle<P: Plugin>(request: &Request) -> Response {
    set_caller(request.caller.clone());
    P::handle(request)
}

#[doc(hidden)]
pub fn host_log(level: Level, message: &str) {
    with_host(|host| {
        host.require("log");
        host.logs.push((level, message.to_owned()));
    });
}

#[doc(hidden)]
pub fn kv_get(scope: Scope, key: &str) -> Option<Vec<u8>> {
    with_host(|host| {
        host.require("kv");
        host.data(scope).get(key).cloned()
    })
}

#[doc(hidden)]
pub fn kv_set(scope: Scope, key: &str, value: &[u8]) -> Result<(), String> {
    with_host(|host| {
        host.require("kv");
        if key.is_empty() {
            return Err("the key is empty".to_owned());
        }
        let old = host
            .data(scope)
            .get(key)
            .map_or(0, |v| (key.len() + v.len()) as u64);
        let total = host.kv_bytes() - old + (key.len() + value.len()) as u64;
        if total > host.kv_quota {
            return Err(format!(
                "the plugin's data would grow to {total} bytes, over its quota of {} bytes",
                host.kv_quota
            ));
        }
        host.data(scope).insert(key.to_owned(), value.to_vec());
        Ok(())
    })
}

#[doc(hidden)]
pub fn kv_delete(scope: Scope, key: &str) -> bool {
    with_host(|host| {
        host.require("kv");
        host.data(scope).remove(key).is_some()
    })
}

#[doc(hidden)]
pub fn kv_list(scope: Scope, prefix: &str) -> Vec<String> {
    with_host(|host| {
        host.require("kv");
        host.data(scope)
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    })
}

#[doc(hidden)]
pub fn config_get(key: &str) -> Option<String> {
    with_host(|host| {
        host.require("config");
        host.config.get(key).cloned()
    })
}

#[doc(hidden)]
pub fn models_generate(request: &GenerateRequest) -> Result<String, String> {
    // The closure runs outside the borrow so it may call host functions.
    let generator = with_host(|host| {
        host.require("generate");
        host.generator.take()
    });
    let Some(generator) = generator else {
        return Err("no model".to_owned());
    };
    let answer = generator(request);
    with_host(|host| host.generator = Some(generator));
    answer
}

#[doc(hidden)]
pub fn models_embed(model: Option<&str>, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
    let embedder = with_host(|host| {
        host.require("embed");
        host.embedder.take()
    });
    let Some(embedder) = embedder else {
        return Err("no embedding model".to_owned());
    };
    let vectors = embedder(model, texts);
    with_host(|host| host.embedder = Some(embedder));
    vectors
}

#[doc(hidden)]
pub fn fetch(request: &Fetch) -> Result<Fetched, String> {
    with_host(|host| {
        host.require("http");
        match &host.fetcher {
            Some(fetcher) => fetcher(request),
            None => Err("no fetcher is set (testing::set_fetcher)".to_owned()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config, kv, log, models};

    #[test]
    fn user_data_belongs_to_the_caller() {
        reset();
        set_caller(caller("ann"));
        kv::user().set("k", "ann's").unwrap();
        kv::shared().set("k", "everyone's").unwrap();
        set_caller(caller("bob"));
        assert_eq!(kv::user().get("k"), None);
        assert_eq!(kv::shared().get_string("k").as_deref(), Some("everyone's"));
        kv::user().set("k", "bob's").unwrap();
        set_caller(caller("ann"));
        assert_eq!(kv::user().get_string("k").as_deref(), Some("ann's"));
        assert!(kv::user().delete("k"));
        assert!(!kv::user().delete("k"));
        assert_eq!(user_kv("bob")["k"], b"bob's");
    }

    #[test]
    fn list_returns_keys_with_the_prefix_in_order() {
        reset();
        for key in ["b/2", "a/1", "b/1", "ba", "c"] {
            kv::user().set(key, "x").unwrap();
        }
        assert_eq!(kv::user().list("b/"), ["b/1", "b/2"]);
        assert_eq!(kv::user().list(""), ["a/1", "b/1", "b/2", "ba", "c"]);
        assert!(kv::user().list("z").is_empty());
    }

    #[test]
    fn the_quota_counts_keys_and_values_of_everyone() {
        reset();
        set_kv_quota(20);
        set_caller(caller("ann"));
        kv::user().set("a", [0u8; 9]).unwrap();
        set_caller(caller("bob"));
        let err = kv::user().set("b", [0u8; 10]).unwrap_err();
        assert!(err.message().contains("quota"), "{err}");
        // Replacing a value counts only the difference.
        set_caller(caller("ann"));
        kv::user().set("a", [0u8; 19]).unwrap();
        assert!(kv::user().set("", "x").is_err());
    }

    #[test]
    fn json_values_round_trip() {
        reset();
        kv::user().set_json("n", &[1, 2, 3]).unwrap();
        assert_eq!(
            kv::user().get_json::<Vec<u8>>("n").unwrap(),
            Some(vec![1, 2, 3])
        );
        assert_eq!(kv::user().get_json::<u8>("missing").unwrap(), None);
        kv::user().set("bad", "{").unwrap();
        assert!(kv::user().get_json::<u8>("bad").is_err());
    }

    #[test]
    fn config_reads_json_settings() {
        reset();
        set_config("top-k", serde_json::json!(7));
        set_config("name", serde_json::json!("docs"));
        assert_eq!(config::get::<u32>("top-k").unwrap(), Some(7));
        assert_eq!(config::get::<u32>("unset").unwrap(), None);
        assert!(config::get::<u32>("name").is_err());
        assert_eq!(config::get_or("name", 3u32), 3);
        assert_eq!(config::get_or("unset", String::from("d")), "d");
        assert_eq!(config::raw("name").as_deref(), Some("\"docs\""));
    }

    #[test]
    fn log_lines_are_kept() {
        reset();
        log::info!("{} passages", 3);
        log::error("boom");
        assert_eq!(
            logs(),
            vec![
                (Level::Info, "3 passages".to_owned()),
                (Level::Error, "boom".to_owned())
            ]
        );
    }

    #[test]
    #[should_panic(expected = "capability `kv` is not granted")]
    fn ungranted_capabilities_fail_like_the_host() {
        reset();
        grant(&["config"]);
        let _ = config::raw("x");
        let _ = kv::user().get("x");
    }

    #[test]
    fn models_reach_the_configured_stand_ins() {
        reset();
        assert_eq!(
            models::embed(&["a"]).unwrap_err().message(),
            "no embedding model"
        );
        set_embedder(|_, texts| Ok(texts.iter().map(|t| vec![t.len() as f32]).collect()));
        assert_eq!(
            models::embed(&["ab", "c"]).unwrap(),
            vec![vec![2.0], vec![1.0]]
        );
        set_embedder(|_, _| Ok(vec![]));
        assert!(models::embed(&["a"])
            .unwrap_err()
            .message()
            .contains("0 vectors"));

        set_generator(|request| Ok(format!("{} messages", request.messages.len())));
        let answer = models::generate(vec![Message::user("hi")]).unwrap();
        assert_eq!(answer, "1 messages");
    }

    struct HoldLastChar;
    impl Plugin for HoldLastChar {
        fn on_chunk(_ctx: &Context, mut text: String) -> crate::ChunkResult {
            let last = text.pop().map(String::from).unwrap_or_default();
            crate::ChunkResult::split(text, last)
        }
        fn finish(_ctx: &Context, held: String) -> String {
            held.to_uppercase()
        }
    }

    #[test]
    fn stream_passes_held_text_on() {
        reset();
        let run = stream::<HoldLastChar>(&context("ann"), &["ab", "cd", "e"]);
        assert_eq!(run.emitted, ["a", "bc", "d", "E"]);
        assert_eq!(run.text, "abcdE");
    }
}
