//! `plugin.toml`: what a plugin is, which hooks and host imports it uses,
//! its routes, limits and configuration schema.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::net::{HostPattern, MAX_HOSTS};
use crate::schema::ConfigSchema;

/// Memory a plugin gets when its manifest names none.
pub const DEFAULT_MEMORY_MB: u32 = 32;
/// Time per call a plugin gets when its manifest names none.
pub const DEFAULT_TIME_MS: u32 = 100;
/// Key-value quota a plugin gets when its manifest names none.
pub const DEFAULT_KV_KB: u32 = 1024;
/// The most key-value data one plugin may keep (all users together).
pub const MAX_KV_KB: u32 = 256 * 1024;

const MAX_DESCRIPTION_CHARS: usize = 500;
const MAX_ROUTES: usize = 64;

/// A parsed and checked `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct Manifest {
    /// 2-40 characters of `[a-z0-9-]`, starting with a letter.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The plugin's own version (semver).
    pub version: String,
    /// The `corral:plugin` WIT version it was built against.
    pub api: String,
    /// Up to 500 characters.
    pub description: String,
    /// Lower runs first; ties are broken by id.
    pub priority: i32,
    /// What a generation does when the plugin fails.
    pub failure: FailurePolicy,
    /// The exports the host calls.
    pub hooks: Vec<Hook>,
    /// The host imports the plugin asks for.
    pub capabilities: Vec<Capability>,
    /// The hosts it may send HTTP requests to (`[http] hosts`), when it
    /// asks for `http`.
    pub http_hosts: Vec<HostPattern>,
    /// Routes served by `handle`, under `/api/plugins/{id}/`.
    pub routes: Vec<RoutePattern>,
    /// Limits as requested (before the host caps them).
    pub limits: RequestedLimits,
    /// The settings a technician can set.
    pub config: ConfigSchema,
}

impl Manifest {
    /// Parses and checks `plugin.toml` text. Errors name the field and
    /// what is wrong with it.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        raw.check()
    }

    /// Whether a stored manifest makes its plugin refuse generations when
    /// it cannot run: `fail-closed` with at least one generation hook.
    /// Read leniently, so that a manifest this version no longer accepts
    /// whole (a field it dropped) still guards what it guarded.
    pub fn guards_generations(text: &str) -> bool {
        if let Ok(manifest) = Manifest::parse(text) {
            return manifest.failure == FailurePolicy::FailClosed && !manifest.hooks.is_empty();
        }
        let Ok(table) = text.parse::<toml::Table>() else {
            return false;
        };
        let fail_closed = table.get("failure").and_then(toml::Value::as_str)
            == Some(FailurePolicy::FailClosed.as_str());
        let hooked = table
            .get("hooks")
            .and_then(toml::Value::as_array)
            .is_some_and(|hooks| !hooks.is_empty());
        fail_closed && hooked
    }

    /// Whether the manifest lists `hook`.
    pub fn has_hook(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    /// Whether the manifest asks for `capability`.
    pub fn requests(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// Configuration fields whose values are never shown again once saved.
    pub fn secret_fields(&self) -> Vec<String> {
        self.config.secret_fields()
    }
}

/// A `plugin.toml` that cannot be used; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ManifestError> {
    Err(ManifestError(msg.into()))
}

fn toml_error(text: &str, e: &toml::de::Error) -> ManifestError {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            ManifestError(format!(
                "plugin.toml line {line}, column {column}: {message}"
            ))
        }
        None => ManifestError(format!("plugin.toml: {message}")),
    }
}

/// What a generation does when one of the plugin's calls fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Go on without the plugin's change (the rest of that generation
    /// skips the plugin).
    Skip,
    /// Stop the generation with a reason that says the plugin failed.
    FailClosed,
}

impl FailurePolicy {
    /// The manifest's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Skip => "skip",
            FailurePolicy::FailClosed => "fail-closed",
        }
    }
}

/// A group of exports the host calls, as the manifest names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// `before-prompt`.
    BeforePrompt,
    /// `on-chunk` and `finish`.
    Stream,
    /// `after-answer`.
    AfterAnswer,
}

impl Hook {
    /// All hooks, in the manifest's spelling.
    pub const ALL: [Hook; 3] = [Hook::BeforePrompt, Hook::Stream, Hook::AfterAnswer];

    /// The manifest's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::BeforePrompt => "before-prompt",
            Hook::Stream => "stream",
            Hook::AfterAnswer => "after-answer",
        }
    }
}

impl FromStr for Hook {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Hook::ALL.into_iter().find(|h| h.as_str() == s).ok_or(())
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host import a plugin may ask for and a technician may approve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// `corral:plugin/log`: write to Corral's log.
    Log,
    /// `corral:plugin/kv`: the plugin's own key-value data.
    Kv,
    /// `corral:plugin/config`: the plugin's saved settings.
    Config,
    /// `corral:plugin/models.generate`: answers from a model, as the caller.
    Generate,
    /// `corral:plugin/models.embed`: embeddings, as the caller.
    Embed,
    /// `wasi:http/outgoing-handler`: HTTP requests to the declared hosts.
    Http,
}

impl Capability {
    /// Every capability, in the manifest's spelling order.
    pub const ALL: [Capability; 6] = [
        Capability::Log,
        Capability::Kv,
        Capability::Config,
        Capability::Generate,
        Capability::Embed,
        Capability::Http,
    ];

    /// The manifest's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Kv => "kv",
            Capability::Config => "config",
            Capability::Generate => "generate",
            Capability::Embed => "embed",
            Capability::Http => "http",
        }
    }

    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl FromStr for Capability {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(())
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits as the manifest asks for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RequestedLimits {
    /// Linear memory, MiB.
    pub memory_mb: u32,
    /// Time per call, ms.
    pub time_ms: u32,
    /// Key-value quota, KiB (all users together).
    pub kv_kb: u32,
}

impl Default for RequestedLimits {
    fn default() -> Self {
        RequestedLimits {
            memory_mb: DEFAULT_MEMORY_MB,
            time_ms: DEFAULT_TIME_MS,
            kv_kb: DEFAULT_KV_KB,
        }
    }
}

/// `METHOD path`: a route the plugin serves. A `*` segment matches any
/// one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    method: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Any,
}

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl RoutePattern {
    /// Parses `"GET level"` or `"POST collections/*/documents"`.
    pub fn parse(text: &str) -> Result<RoutePattern, String> {
        let Some((method, path)) = text.split_once(' ') else {
            return Err(format!("`{text}` is not `METHOD path` (e.g. `GET level`)"));
        };
        if !METHODS.contains(&method) {
            return Err(format!(
                "method `{method}` is not one of {}",
                METHODS.join(", ")
            ));
        }
        if path.is_empty() {
            return Err(format!("`{text}` has no path"));
        }
        if path.starts_with('/') {
            return Err(format!(
                "path `{path}` must not start with `/` (routes are relative to /api/plugins/{{id}}/)"
            ));
        }
        let mut segments = Vec::new();
        for seg in path.split('/') {
            if seg == "*" {
                segments.push(Segment::Any);
            } else if seg.is_empty() {
                return Err(format!("path `{path}` has an empty segment"));
            } else if seg == "." || seg == ".." {
                return Err(format!("path `{path}` has a `{seg}` segment"));
            } else if !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
            {
                return Err(format!(
                    "path segment `{seg}` may hold only letters, digits, `-`, `.`, `_` and `~` (or be `*`)"
                ));
            } else {
                segments.push(Segment::Literal(seg.to_string()));
            }
        }
        Ok(RoutePattern {
            method: method.to_string(),
            segments,
        })
    }

    /// The HTTP method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Whether a request with `method` to `path` (after
    /// `/api/plugins/{id}/`, without the query) matches.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if method != self.method {
            return false;
        }
        let mut parts = path.split('/');
        for seg in &self.segments {
            match (seg, parts.next()) {
                (_, None) => return false,
                (_, Some("")) => return false,
                (Segment::Any, Some(_)) => {}
                (Segment::Literal(lit), Some(part)) if lit == part => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.method)?;
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            match seg {
                Segment::Literal(s) => f.write_str(s)?,
                Segment::Any => f.write_str("*")?,
            }
        }
        Ok(())
    }
}

impl Serialize for RoutePattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    id: String,
    name: String,
    version: String,
    api: String,
    #[serde(default)]
    description: String,
    priority: Option<i64>,
    failure: Option<String>,
    #[serde(default)]
    hooks: Vec<String>,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    routes: Vec<String>,
    limits: Option<RawLimits>,
    http: Option<RawHttp>,
    config: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    memory_mb: Option<i64>,
    time_ms: Option<i64>,
    kv_kb: Option<i64>,
}

impl RawManifest {
    fn check(self) -> Result<Manifest, ManifestError> {
        check_id(&self.id)?;
        let name_chars = self.name.chars().count();
        if name_chars == 0 || name_chars > 80 || self.name.trim().is_empty() {
            return err("`name` must be 1-80 characters");
        }
        // Shown to technicians approving capabilities and to users turning
        // plugins on: it must not pass for another plugin's name.
        if corral_sdk::text::hides(&self.name) {
            return err("`name` must not hold control or invisible formatting characters");
        }
        if semver::Version::parse(&self.version).is_err() {
            return err(format!(
                "`version` `{}` is not a semantic version (e.g. 0.1.0)",
                self.version
            ));
        }
        if semver::Version::parse(&self.api).is_err() {
            return err(format!(
                "`api` `{}` is not a semantic version (e.g. 0.1.0)",
                self.api
            ));
        }
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            return err(format!(
                "`description` is longer than {MAX_DESCRIPTION_CHARS} characters"
            ));
        }
        let priority = match self.priority {
            None => 100,
            Some(p) => i32::try_from(p)
                .ok()
                .filter(|p| (-1_000_000..=1_000_000).contains(p))
                .ok_or_else(|| {
                    ManifestError(format!(
                        "`priority` {p} is out of range (-1000000 to 1000000)"
                    ))
                })?,
        };
        let failure = match self.failure.as_deref() {
            None | Some("skip") => FailurePolicy::Skip,
            Some("fail-closed") => FailurePolicy::FailClosed,
            Some(other) => {
                return err(format!(
                    "`failure` `{other}` is not `skip` or `fail-closed`"
                ))
            }
        };
        let mut hooks = Vec::new();
        for (i, h) in self.hooks.iter().enumerate() {
            let hook: Hook = h.parse().map_err(|()| {
                ManifestError(format!(
                    "`hooks[{i}]`: unknown hook `{h}` (expected one of before-prompt, stream, after-answer)"
                ))
            })?;
            if hooks.contains(&hook) {
                return err(format!("`hooks[{i}]`: `{h}` is listed twice"));
            }
            hooks.push(hook);
        }
        let mut capabilities = Vec::new();
        for (i, c) in self.capabilities.iter().enumerate() {
            let cap: Capability = c.parse().map_err(|()| {
                ManifestError(format!(
                    "`capabilities[{i}]`: unknown capability `{c}` (expected one of log, kv, config, generate, embed, http)"
                ))
            })?;
            if capabilities.contains(&cap) {
                return err(format!("`capabilities[{i}]`: `{c}` is listed twice"));
            }
            capabilities.push(cap);
        }
        let declared = self.http.map(|h| h.hosts).unwrap_or_default();
        if capabilities.contains(&Capability::Http) && declared.is_empty() {
            return err("capability `http` needs the hosts it may reach: `[http] hosts = [\"api.example.com\"]`");
        }
        if !declared.is_empty() && !capabilities.contains(&Capability::Http) {
            return err("`[http] hosts` is set but `capabilities` does not ask for `http`");
        }
        if declared.len() > MAX_HOSTS {
            return err(format!("`http.hosts`: more than {MAX_HOSTS} hosts"));
        }
        let mut http_hosts: Vec<HostPattern> = Vec::new();
        for (i, h) in declared.iter().enumerate() {
            let host = HostPattern::parse(h)
                .map_err(|e| ManifestError(format!("`http.hosts[{i}]`: {e}")))?;
            if http_hosts.contains(&host) {
                return err(format!("`http.hosts[{i}]`: `{h}` is listed twice"));
            }
            http_hosts.push(host);
        }
        if self.routes.len() > MAX_ROUTES {
            return err(format!("`routes`: more than {MAX_ROUTES} routes"));
        }
        let mut routes: Vec<RoutePattern> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            let route =
                RoutePattern::parse(r).map_err(|e| ManifestError(format!("`routes[{i}]`: {e}")))?;
            if routes.contains(&route) {
                return err(format!("`routes[{i}]`: `{r}` is listed twice"));
            }
            routes.push(route);
        }
        let limits = match self.limits {
            None => RequestedLimits::default(),
            Some(l) => RequestedLimits {
                memory_mb: limit("limits.memory-mb", l.memory_mb, DEFAULT_MEMORY_MB, 1)?,
                time_ms: limit("limits.time-ms", l.time_ms, DEFAULT_TIME_MS, 1)?,
                kv_kb: limit("limits.kv-kb", l.kv_kb, DEFAULT_KV_KB, 0)?,
            },
        };
        let config = match self.config {
            None => ConfigSchema::default(),
            Some(table) => ConfigSchema::from_toml(&table).map_err(ManifestError)?,
        };
        Ok(Manifest {
            id: self.id,
            name: self.name,
            version: self.version,
            api: self.api,
            description: self.description,
            priority,
            failure,
            hooks,
            capabilities,
            http_hosts,
            routes,
            limits,
            config,
        })
    }
}

fn check_id(id: &str) -> Result<(), ManifestError> {
    let ok_len = (2..=40).contains(&id.len());
    let ok_start = id.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok_len && ok_start && ok_chars {
        Ok(())
    } else {
        err(format!(
            "`id` `{id}` must be 2-40 characters of a-z, 0-9 and `-`, starting with a letter"
        ))
    }
}

fn limit(field: &str, value: Option<i64>, default: u32, min: i64) -> Result<u32, ManifestError> {
    match value {
        None => Ok(default),
        Some(v) if v < min => err(format!("`{field}` must be at least {min}")),
        Some(v) => Ok(u32::try_from(v).unwrap_or(u32::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
id = "pii-redact"
name = "PII redaction"
version = "0.1.0"
api = "0.1.0"
description = "Masks e-mail addresses"
priority = 10
failure = "fail-closed"
hooks = ["before-prompt", "stream"]
capabilities = ["log", "config"]
routes = ["GET level", "PUT level", "POST collections/*/documents"]

[limits]
memory-mb = 64
time-ms = 200
kv-kb = 10

[config]
required = []
[config.properties.email]
type = "boolean"
default = true
description = "Mask e-mail addresses"
"#;

    fn with(extra: &str) -> String {
        format!("id = \"x-plugin\"\nname = \"X\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\n{extra}")
    }

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::parse(FULL).unwrap();
        assert_eq!(m.id, "pii-redact");
        assert_eq!(m.priority, 10);
        assert_eq!(m.failure, FailurePolicy::FailClosed);
        assert_eq!(m.hooks, vec![Hook::BeforePrompt, Hook::Stream]);
        assert_eq!(m.capabilities, vec![Capability::Log, Capability::Config]);
        assert_eq!(
            m.limits,
            RequestedLimits {
                memory_mb: 64,
                time_ms: 200,
                kv_kb: 10
            }
        );
        assert_eq!(m.routes.len(), 3);
        assert_eq!(m.routes[2].to_string(), "POST collections/*/documents");
    }

    #[test]
    fn a_fail_closed_manifest_with_hooks_guards_even_when_no_longer_accepted() {
        assert!(Manifest::guards_generations(FULL));
        let routes_only = with("failure = \"fail-closed\"\nroutes = [\"GET level\"]");
        assert!(!Manifest::guards_generations(&routes_only));
        assert!(!Manifest::guards_generations(&with(
            "hooks = [\"stream\"]\nfailure = \"skip\""
        )));
        // A field this version does not know: read leniently.
        let dropped = with("failure = \"fail-closed\"\nhooks = [\"stream\"]\nretired = 1");
        assert!(Manifest::parse(&dropped).is_err());
        assert!(Manifest::guards_generations(&dropped));
        assert!(!Manifest::guards_generations("not = [toml"));
    }

    #[test]
    fn http_hosts_come_with_the_capability() {
        let m = Manifest::parse(&with(
            "capabilities = [\"http\"]\n[http]\nhosts = [\"api.example.com\", \"*.wiki.example:*\"]",
        ))
        .unwrap();
        assert!(m.requests(Capability::Http));
        let hosts: Vec<String> = m.http_hosts.iter().map(ToString::to_string).collect();
        assert_eq!(hosts, ["api.example.com", "*.wiki.example:*"]);
    }

    #[test]
    fn applies_defaults() {
        let m = Manifest::parse(&with("")).unwrap();
        assert_eq!(m.priority, 100);
        assert_eq!(m.failure, FailurePolicy::Skip);
        assert_eq!(m.limits, RequestedLimits::default());
        assert!(m.hooks.is_empty() && m.routes.is_empty());
    }

    #[test]
    fn unknown_top_level_key_is_an_error_with_its_place() {
        let e = Manifest::parse(&with("hook = [\"stream\"]")).unwrap_err();
        assert!(e.0.contains("line 5"), "{e}");
        assert!(e.0.contains("unknown field `hook`"), "{e}");
    }

    #[test]
    fn missing_required_field_is_named() {
        let e = Manifest::parse("id = \"ab\"\nname = \"x\"\nversion = \"1.0.0\"").unwrap_err();
        assert!(e.0.contains("missing field `api`"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("id = \"Ab\"", "`id` `Ab`"),
            ("id = \"1ab\"", "`id` `1ab`"),
            ("id = \"a\"", "`id` `a`"),
        ];
        for (line, want) in cases {
            let text = format!("{line}\nname = \"X\"\nversion = \"1.0.0\"\napi = \"0.1.0\"");
            let e = Manifest::parse(&text).unwrap_err();
            assert!(e.0.contains(want), "{line}: {e}");
        }
        // A name that looks like another plugin's.
        for name in [
            "PII\u{200B} redaction",
            "\u{202E}noitcader IIP",
            "PII\tredaction",
        ] {
            let text =
                format!("id = \"ab\"\nname = \"{name}\"\nversion = \"1.0.0\"\napi = \"0.1.0\"");
            let e = Manifest::parse(&text).unwrap_err();
            assert!(e.0.contains("`name` must not hold"), "{name:?}: {e}");
        }
        let cases = [
            (
                "hooks = [\"before_prompt\"]",
                "`hooks[0]`: unknown hook `before_prompt`",
            ),
            (
                "hooks = [\"stream\", \"stream\"]",
                "`hooks[1]`: `stream` is listed twice",
            ),
            (
                "capabilities = [\"Kv\"]",
                "`capabilities[0]`: unknown capability `Kv`",
            ),
            ("capabilities = [\"https\"]", "unknown capability `https`"),
            (
                "capabilities = [\"http\"]",
                "capability `http` needs the hosts",
            ),
            ("[http]\nhosts = [\"a.example\"]", "does not ask for `http`"),
            (
                "capabilities = [\"http\"]\n[http]\nhosts = [\"https://a.example\"]",
                "`http.hosts[0]`: `https://a.example` must be a host, not a URL",
            ),
            (
                "capabilities = [\"http\"]\n[http]\nhosts = [\"a.example\", \"A.example\"]",
                "`http.hosts[1]`: `A.example` is listed twice",
            ),
            ("[http]\nports = [80]", "unknown field `ports`"),
            ("failure = \"open\"", "`failure` `open`"),
            ("routes = [\"get level\"]", "`routes[0]`: method `get`"),
            ("routes = [\"GET /level\"]", "must not start with `/`"),
            ("routes = [\"GET a//b\"]", "empty segment"),
            ("routes = [\"GET level\", \"GET level\"]", "`routes[1]`"),
            ("routes = [\"GET\"]", "not `METHOD path`"),
            ("priority = 99999999999", "`priority`"),
            (
                "[limits]\nmemory-mb = 0",
                "`limits.memory-mb` must be at least 1",
            ),
            ("[limits]\nmemory = 1", "unknown field `memory`"),
        ];
        for (extra, want) in cases {
            let e = Manifest::parse(&with(extra)).unwrap_err();
            assert!(e.0.contains(want), "{extra}: {e}");
        }
        let e = Manifest::parse("id = \"ab\"\nname = \"X\"\nversion = \"one\"\napi = \"0.1.0\"")
            .unwrap_err();
        assert!(e.0.contains("`version` `one`"), "{e}");
    }

    #[test]
    fn route_patterns_match_one_segment_per_star() {
        let r = RoutePattern::parse("POST collections/*/documents").unwrap();
        assert!(r.matches("POST", "collections/notes/documents"));
        assert!(!r.matches("GET", "collections/notes/documents"));
        assert!(!r.matches("POST", "collections//documents"));
        assert!(!r.matches("POST", "collections/a/b/documents"));
        assert!(!r.matches("POST", "collections/notes/documents/x"));
        assert!(!r.matches("POST", "collections/notes"));
        let r = RoutePattern::parse("GET level").unwrap();
        assert!(r.matches("GET", "level"));
        assert!(!r.matches("GET", "level/"));
        assert!(!r.matches("GET", "Level"));
        assert!(!r.matches("GET", ""));
    }
}
