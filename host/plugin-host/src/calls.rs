//! Calls into a plugin and their answers, independent of the WIT version
//! the plugin was built against, and the checks every answer passes
//! before the host uses it.

use corral_hooks::{AnswerInfo, ChatMessage, HookCaller, PromptRequest, SamplingChange};
use serde::{Deserialize, Serialize};

use crate::stats::Export;

/// The longest text a hook may return in one string.
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;
/// The longest reason a plugin may give for a rejection (users read it).
pub const MAX_REASON_BYTES: usize = 4096;
/// Most messages a plugin may put in a conversation.
pub const MAX_MESSAGES: usize = 10_000;
/// Most context passages one plugin may add to a request.
pub const MAX_CONTEXT_PASSAGES: usize = 64;
/// Largest body of a route request or response.
pub const MAX_ROUTE_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most headers of a route request or response.
pub const MAX_ROUTE_HEADERS: usize = 64;
/// Largest header (name and value) of a route request or response.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// A request to one of a plugin's routes, `/api/plugins/{id}/{path}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RouteRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The part after `/api/plugins/{id}/`, without the query.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// Request headers. `authorization`, `cookie` and
    /// `proxy-authorization` are never passed on to the plugin.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// A plugin's answer to a route request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteResponse {
    /// 100-599.
    pub status: u16,
    /// Response headers; headers the host owns (`content-length`,
    /// `set-cookie`, hop-by-hop headers) are left out.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// One call into a plugin.
pub(crate) enum Call<'a> {
    BeforePrompt(&'a PromptRequest),
    OnChunk(&'a str),
    Finish(&'a str),
    AfterAnswer(&'a AnswerInfo),
    Handle(&'a RouteRequest, &'a HookCaller),
}

impl Call<'_> {
    pub(crate) fn export(&self) -> Export {
        match self {
            Call::BeforePrompt(_) => Export::BeforePrompt,
            Call::OnChunk(_) => Export::OnChunk,
            Call::Finish(_) => Export::Finish,
            Call::AfterAnswer(_) => Export::AfterAnswer,
            Call::Handle(..) => Export::Handle,
        }
    }
}

/// What a plugin answered.
#[derive(Debug)]
pub(crate) enum Reply {
    Decision(Decision),
    Chunk(ChunkResult),
    Text(String),
    Answer(AnswerAction),
    Response(RouteResponse),
}

#[derive(Debug)]
pub(crate) enum Decision {
    Continue,
    Modify(Modification),
    Reject(String),
}

#[derive(Debug, Default)]
pub(crate) struct Modification {
    pub(crate) messages: Option<Vec<ChatMessage>>,
    pub(crate) system_prompt: Option<String>,
    pub(crate) sampling: Option<SamplingChange>,
    pub(crate) context: Vec<String>,
}

impl Modification {
    pub(crate) fn apply(self, prompt: &mut PromptRequest) {
        if let Some(messages) = self.messages {
            prompt.messages = messages;
        }
        if let Some(system) = self.system_prompt {
            prompt.system_prompt = Some(system);
        }
        if let Some(change) = self.sampling {
            prompt.sampling = change.apply(&prompt.sampling);
        }
        prompt.context.extend(self.context);
    }
}

#[derive(Debug)]
pub(crate) struct ChunkResult {
    pub(crate) emit: String,
    pub(crate) hold: String,
}

#[derive(Debug)]
pub(crate) enum AnswerAction {
    Keep,
    Annotate(String),
    Replace(String),
}

fn text(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        Err(format!("{what} is {} bytes, more than {max}", s.len()))
    } else {
        Ok(())
    }
}

fn finite(what: &str, v: Option<f32>) -> Result<(), String> {
    match v {
        Some(x) if !x.is_finite() || x < 0.0 => Err(format!("sampling `{what}` is {x}")),
        _ => Ok(()),
    }
}

/// Response headers the host sets itself, or that would reach beyond
/// the plugin's own answer.
const HOST_OWNED_HEADERS: [&str; 10] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-authenticate",
    "set-cookie",
    "strict-transport-security",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers that carry the caller's credentials.
pub(crate) const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!(
            "header name `{}` is not a valid token",
            name.escape_debug()
        ));
    }
    if name.len() + value.len() > MAX_HEADER_BYTES {
        return Err(format!(
            "header `{name}` is longer than {MAX_HEADER_BYTES} bytes"
        ));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("header `{name}` holds a line break or NUL"));
    }
    Ok(())
}

impl Reply {
    /// Checks that the answer fits the call and the runtime's size caps;
    /// the `Err` says what is wrong. Strips host-owned response headers.
    pub(crate) fn check(&mut self, export: Export) -> Result<(), String> {
        match (export, self) {
            (Export::BeforePrompt, Reply::Decision(d)) => match d {
                Decision::Continue => Ok(()),
                Decision::Reject(reason) => {
                    if reason.trim().is_empty() {
                        return Err("a rejection without a reason".into());
                    }
                    text("the rejection reason", reason, MAX_REASON_BYTES)
                }
                Decision::Modify(m) => {
                    if let Some(messages) = &m.messages {
                        if messages.len() > MAX_MESSAGES {
                            return Err(format!("more than {MAX_MESSAGES} messages"));
                        }
                        for (i, msg) in messages.iter().enumerate() {
                            if !matches!(msg.role.as_str(), "system" | "user" | "assistant") {
                                return Err(format!(
                                    "message {i} has role `{}` (not system, user or assistant)",
                                    msg.role.escape_debug()
                                ));
                            }
                            text(&format!("message {i}"), &msg.content, MAX_TEXT_BYTES)?;
                        }
                    }
                    if let Some(system) = &m.system_prompt {
                        text("the system prompt", system, MAX_TEXT_BYTES)?;
                    }
                    if let Some(s) = &m.sampling {
                        finite("temperature", s.temperature)?;
                        finite("top-p", s.top_p)?;
                        finite("min-p", s.min_p)?;
                        finite("repeat-penalty", s.repeat_penalty)?;
                        if let Some(stop) = &s.stop {
                            if stop.len() > 16 || stop.iter().any(|s| s.len() > 256) {
                                return Err("sampling `stop` has more than 16 strings or one over 256 bytes".into());
                            }
                        }
                    }
                    if m.context.len() > MAX_CONTEXT_PASSAGES {
                        return Err(format!("more than {MAX_CONTEXT_PASSAGES} context passages"));
                    }
                    for (i, c) in m.context.iter().enumerate() {
                        text(&format!("context passage {i}"), c, MAX_TEXT_BYTES)?;
                    }
                    Ok(())
                }
            },
            (Export::OnChunk, Reply::Chunk(c)) => {
                text("on-chunk `emit`", &c.emit, MAX_TEXT_BYTES)?;
                text("on-chunk `hold`", &c.hold, MAX_TEXT_BYTES)
            }
            (Export::Finish, Reply::Text(t)) => text("finish text", t, MAX_TEXT_BYTES),
            (Export::AfterAnswer, Reply::Answer(a)) => match a {
                AnswerAction::Keep => Ok(()),
                AnswerAction::Annotate(t) => text("the annotation", t, MAX_TEXT_BYTES),
                AnswerAction::Replace(t) => text("the replacement answer", t, MAX_TEXT_BYTES),
            },
            (Export::Handle, Reply::Response(r)) => {
                if !(100..=599).contains(&r.status) {
                    return Err(format!("HTTP status {}", r.status));
                }
                if r.body.len() > MAX_ROUTE_BODY_BYTES {
                    return Err(format!(
                        "a response body of {} bytes, more than {MAX_ROUTE_BODY_BYTES}",
                        r.body.len()
                    ));
                }
                if r.headers.len() > MAX_ROUTE_HEADERS {
                    return Err(format!("more than {MAX_ROUTE_HEADERS} headers"));
                }
                for (name, value) in &r.headers {
                    check_header(name, value)?;
                }
                r.headers.retain(|(name, _)| {
                    let lower = name.to_ascii_lowercase();
                    !HOST_OWNED_HEADERS.contains(&lower.as_str()) && !lower.starts_with("proxy-")
                });
                Ok(())
            }
            (export, reply) => Err(format!("{reply:?} is not an answer to {export}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_texts_and_checks_roles() {
        let big = "x".repeat(MAX_TEXT_BYTES + 1);
        let mut r = Reply::Chunk(ChunkResult {
            emit: big.clone(),
            hold: String::new(),
        });
        let e = r.check(Export::OnChunk).unwrap_err();
        assert!(e.contains("on-chunk `emit` is 1048577 bytes"), "{e}");
        let mut r = Reply::Decision(Decision::Modify(Modification {
            messages: Some(vec![ChatMessage {
                role: "root".into(),
                content: "hi".into(),
            }]),
            ..Default::default()
        }));
        assert!(r
            .check(Export::BeforePrompt)
            .unwrap_err()
            .contains("role `root`"));
        let mut r = Reply::Decision(Decision::Reject("  ".into()));
        assert!(r.check(Export::BeforePrompt).is_err());
        let mut r = Reply::Text("ok".into());
        assert!(r.check(Export::OnChunk).is_err());
    }

    #[test]
    fn route_responses_lose_host_owned_headers_and_bad_ones_fail() {
        let mut r = Reply::Response(RouteResponse {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Set-Cookie".into(), "session=x".into()),
                ("Content-Length".into(), "999".into()),
            ],
            body: b"{}".to_vec(),
        });
        r.check(Export::Handle).unwrap();
        let Reply::Response(resp) = r else {
            unreachable!()
        };
        assert_eq!(
            resp.headers,
            vec![("Content-Type".into(), "application/json".into())]
        );

        for (name, value) in [("X-A", "a\r\nSet-Cookie: x"), ("bad name", "v"), ("", "v")] {
            let mut r = Reply::Response(RouteResponse {
                status: 200,
                headers: vec![(name.into(), value.into())],
                body: vec![],
            });
            assert!(r.check(Export::Handle).is_err(), "{name:?}");
        }
        let mut r = Reply::Response(RouteResponse {
            status: 1000,
            headers: vec![],
            body: vec![],
        });
        assert!(r.check(Export::Handle).is_err());
    }
}
