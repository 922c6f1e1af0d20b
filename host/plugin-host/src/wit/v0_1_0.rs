//! `corral:plugin@0.1.0`: bindings, conversions to and from the runtime's
//! own types, and the host imports.

use corral_hooks::{ChatMessage, HookCaller, HookContext, Role, SamplingChange, Surface};
use wasmtime::component::HasSelf;
use wasmtime::Store;

use crate::calls::{AnswerAction, Call, ChunkResult, Decision, Modification, Reply, RouteResponse};
use crate::imports::Scope;
use crate::sandbox::{clip, PluginState, LOG_LINE_BYTES};

wasmtime::component::bindgen!({
    path: "../../sdk/wit/0.1.0",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

use corral::plugin::{config, kv, log, models, types};

/// The WIT package version.
pub(crate) const VERSION: &str = "0.1.0";

pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<PluginState>,
) -> wasmtime::Result<()> {
    Plugin::add_to_linker::<_, HasSelf<PluginState>>(linker, |s| s)
}

/// An instance with the context of its generation in WIT form.
pub(crate) struct Bound {
    plugin: Plugin,
    ctx: Option<types::Context>,
}

impl Bound {
    pub(crate) fn set_context(&mut self, ctx: Option<&HookContext>) {
        self.ctx = ctx.map(context);
    }
}

pub(crate) async fn instantiate(
    pre: &PluginPre<PluginState>,
    store: &mut Store<PluginState>,
    ctx: Option<&HookContext>,
) -> wasmtime::Result<Bound> {
    let plugin = pre.instantiate_async(&mut *store).await?;
    Ok(Bound {
        plugin,
        ctx: ctx.map(context),
    })
}

fn caller(c: &HookCaller) -> types::Caller {
    types::Caller {
        user_id: c.user_id.clone(),
        username: c.username.clone(),
        role: match c.role {
            Role::User => types::Role::User,
            Role::Admin => types::Role::Admin,
            Role::Technician => types::Role::Technician,
        },
    }
}

fn context(ctx: &HookContext) -> types::Context {
    types::Context {
        caller: caller(&ctx.caller),
        model: ctx.model.clone(),
        surface: match ctx.surface {
            Surface::Chat => types::Surface::Chat,
            Surface::ChatCompletions => types::Surface::ChatCompletions,
            Surface::Completions => types::Surface::Completions,
        },
        chat_id: ctx.chat_id.clone(),
    }
}

fn message_in(m: &ChatMessage) -> types::Message {
    types::Message {
        role: m.role.clone(),
        content: m.content.clone(),
    }
}

fn message_out(m: types::Message) -> ChatMessage {
    ChatMessage {
        role: m.role,
        content: m.content,
    }
}

fn sampling_out(s: types::Sampling) -> SamplingChange {
    SamplingChange {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        min_p: s.min_p,
        repeat_penalty: s.repeat_penalty,
        max_tokens: s.max_tokens,
        seed: s.seed,
        stop: s.stop,
    }
}

impl Bound {
    pub(crate) async fn call(
        &self,
        store: &mut Store<PluginState>,
        call: Call<'_>,
    ) -> wasmtime::Result<Reply> {
        let hooks = self.plugin.corral_plugin_hooks();
        let ctx = || {
            self.ctx
                .as_ref()
                .ok_or_else(|| wasmtime::Error::msg("a hook was called without a generation"))
        };
        Ok(match call {
            Call::BeforePrompt(p) => {
                let prompt = types::Prompt {
                    messages: p.messages.iter().map(message_in).collect(),
                    system_prompt: p.system_prompt.clone(),
                    sampling: types::Sampling {
                        temperature: Some(p.sampling.temperature),
                        top_p: Some(p.sampling.top_p),
                        top_k: Some(p.sampling.top_k),
                        min_p: Some(p.sampling.min_p),
                        repeat_penalty: Some(p.sampling.repeat_penalty),
                        max_tokens: Some(p.sampling.max_tokens),
                        seed: p.sampling.seed,
                        stop: Some(p.sampling.stop.clone()),
                    },
                };
                let d = hooks
                    .call_before_prompt(&mut *store, ctx()?, &prompt)
                    .await?;
                Reply::Decision(match d {
                    types::Decision::Continue => Decision::Continue,
                    types::Decision::Reject(r) => Decision::Reject(r),
                    types::Decision::Modify(m) => Decision::Modify(Modification {
                        messages: m
                            .messages
                            .map(|ms| ms.into_iter().map(message_out).collect()),
                        system_prompt: m.system_prompt,
                        sampling: m.sampling.map(sampling_out),
                        context: m.context,
                    }),
                })
            }
            Call::OnChunk(text) => {
                let r = hooks.call_on_chunk(&mut *store, ctx()?, text).await?;
                Reply::Chunk(ChunkResult {
                    emit: r.emit,
                    hold: r.hold,
                })
            }
            Call::Finish(held) => Reply::Text(hooks.call_finish(&mut *store, ctx()?, held).await?),
            Call::AfterAnswer(a) => {
                let answer = types::Answer {
                    text: a.text.clone(),
                    finish_reason: a.finish_reason.clone(),
                    prompt_tokens: a.prompt_tokens,
                    completion_tokens: a.completion_tokens,
                };
                Reply::Answer(
                    match hooks
                        .call_after_answer(&mut *store, ctx()?, &answer)
                        .await?
                    {
                        types::AnswerAction::Keep => AnswerAction::Keep,
                        types::AnswerAction::Annotate(t) => AnswerAction::Annotate(t),
                        types::AnswerAction::Replace(t) => AnswerAction::Replace(t),
                    },
                )
            }
            Call::Handle(req, who) => {
                let request = types::HttpRequest {
                    method: req.method.clone(),
                    path: req.path.clone(),
                    query: req.query.clone(),
                    headers: req.headers.clone(),
                    body: req.body.clone(),
                    caller: caller(who),
                };
                let r = self
                    .plugin
                    .corral_plugin_routes()
                    .call_handle(&mut *store, &request)
                    .await?;
                Reply::Response(RouteResponse {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                })
            }
        })
    }
}

fn scope(s: kv::Scope) -> Scope {
    match s {
        kv::Scope::User => Scope::User,
        kv::Scope::Shared => Scope::Shared,
    }
}

impl types::Host for PluginState {}

impl log::Host for PluginState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        if self.check(crate::manifest::Capability::Log).is_ok() {
            let level = match level {
                log::Level::Debug => tracing::Level::DEBUG,
                log::Level::Info => tracing::Level::INFO,
                log::Level::Warn => tracing::Level::WARN,
                log::Level::Error => tracing::Level::ERROR,
            };
            self.write_log(level, clip(&message, LOG_LINE_BYTES));
        }
        Ok(())
    }
}

impl kv::Host for PluginState {
    async fn get(&mut self, s: kv::Scope, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.kv_get(scope(s), key).await)
    }

    async fn set(
        &mut self,
        s: kv::Scope,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self.kv_set(scope(s), key, value).await)
    }

    async fn delete(&mut self, s: kv::Scope, key: String) -> wasmtime::Result<bool> {
        Ok(self.kv_delete(scope(s), key).await)
    }

    async fn list(&mut self, s: kv::Scope, prefix: String) -> wasmtime::Result<Vec<String>> {
        Ok(self.kv_list(scope(s), prefix).await)
    }
}

impl config::Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.config_get(&key))
    }
}

impl models::Host for PluginState {
    async fn generate(
        &mut self,
        request: models::GenerateRequest,
    ) -> wasmtime::Result<Result<String, String>> {
        let messages = request.messages.into_iter().map(message_out).collect();
        Ok(self
            .models_generate(request.model, messages, sampling_out(request.sampling))
            .await)
    }

    async fn embed(
        &mut self,
        model: Option<String>,
        texts: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Vec<f32>>, String>> {
        Ok(self.models_embed(model, texts).await)
    }
}
