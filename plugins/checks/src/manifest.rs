//! `plugin.toml` as Corral's manifest format (api 0.1.0) describes it,
//! read strictly: unknown keys are errors, and every value is checked.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Hooks a manifest may name.
pub const HOOKS: &[&str] = &["before-prompt", "stream", "after-answer"];
/// Capabilities a manifest may ask for.
pub const CAPABILITIES: &[&str] = &["log", "kv", "config", "generate", "embed", "http"];
/// Methods a route may have.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub id: String,
    pub name: String,
    pub version: String,
    pub api: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub failure: Option<String>,
    #[serde(default)]
    pub hooks: Vec<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub limits: Option<Limits>,
    #[serde(default)]
    pub http: Option<Http>,
    #[serde(default)]
    pub config: Option<ConfigSchema>,
}

/// `[http]`: the hosts capability `http` may reach.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(rename = "memory-mb")]
    pub memory_mb: Option<u64>,
    #[serde(rename = "time-ms")]
    pub time_ms: Option<u64>,
    #[serde(rename = "kv-kb")]
    pub kv_kb: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSchema {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, Property>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Property {
    #[serde(rename = "type")]
    pub kind: String,
    pub description: Option<String>,
    pub default: Option<toml::Value>,
    #[serde(rename = "enum")]
    pub choices: Option<Vec<toml::Value>>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    #[serde(rename = "maxLength")]
    pub max_length: Option<u64>,
    pub items: Option<Items>,
    pub secret: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Items {
    #[serde(rename = "type")]
    pub kind: String,
}

impl Manifest {
    /// Reads and checks `text`; every problem found, or the manifest.
    pub fn parse(text: &str) -> Result<Manifest, Vec<String>> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let problems = manifest.problems();
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(problems)
        }
    }

    /// What does not follow the format.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let id_ok = (2..=40).contains(&self.id.len())
            && self.id.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            p.push(format!(
                "`id` {:?}: 2-40 chars of [a-z0-9-], starting with a letter",
                self.id
            ));
        }
        if !(1..=80).contains(&self.name.chars().count()) {
            p.push("`name`: 1-80 characters".to_owned());
        }
        if !is_semver(&self.version) {
            p.push(format!(
                "`version` {:?} is not a semantic version",
                self.version
            ));
        }
        if !is_semver(&self.api) {
            p.push(format!("`api` {:?} is not a semantic version", self.api));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 500)
        {
            p.push("`description`: at most 500 characters".to_owned());
        }
        if let Some(failure) = &self.failure {
            if failure != "skip" && failure != "fail-closed" {
                p.push(format!(
                    "`failure` {failure:?}: \"skip\" or \"fail-closed\""
                ));
            }
        }
        check_names(&mut p, "hooks", &self.hooks, HOOKS);
        check_names(&mut p, "capabilities", &self.capabilities, CAPABILITIES);
        let asks_http = self.capabilities.iter().any(|c| c == "http");
        let hosts = self.http.as_ref().map_or(0, |h| h.hosts.len());
        if asks_http && hosts == 0 {
            p.push("capability `http` needs `[http] hosts`".to_owned());
        }
        if !asks_http && hosts > 0 {
            p.push("`[http] hosts` without capability `http`".to_owned());
        }
        for route in &self.routes {
            if let Some(problem) = route_problem(route) {
                p.push(format!("route {route:?}: {problem}"));
            }
        }
        if has_duplicates(&self.routes) {
            p.push("`routes` lists a route twice".to_owned());
        }
        if let Some(limits) = &self.limits {
            for (name, value) in [
                ("memory-mb", limits.memory_mb),
                ("time-ms", limits.time_ms),
                ("kv-kb", limits.kv_kb),
            ] {
                if value == Some(0) {
                    p.push(format!("`limits.{name}` must be positive"));
                }
            }
        }
        if let Some(config) = &self.config {
            config_problems(&mut p, config);
        }
        p
    }
}

fn check_names(p: &mut Vec<String>, field: &str, names: &[String], known: &[&str]) {
    for name in names {
        if !known.contains(&name.as_str()) {
            p.push(format!(
                "`{field}`: unknown {name:?} (one of {})",
                known.join(", ")
            ));
        }
    }
    if has_duplicates(names) {
        p.push(format!("`{field}` names one twice"));
    }
}

fn has_duplicates(items: &[String]) -> bool {
    let mut sorted: Vec<&String> = items.iter().collect();
    sorted.sort();
    sorted.windows(2).any(|w| w[0] == w[1])
}

/// `MAJOR.MINOR.PATCH`, with an optional `-pre` and `+build`.
pub fn is_semver(version: &str) -> bool {
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|n| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n.len() == 1 || !n.starts_with('0'))
        })
}

fn route_problem(route: &str) -> Option<String> {
    let Some((method, path)) = route.split_once(' ') else {
        return Some("write it \"METHOD path\"".to_owned());
    };
    if !METHODS.contains(&method) {
        return Some(format!(
            "method {method:?} is not one of {}",
            METHODS.join(", ")
        ));
    }
    if path.is_empty() || path.starts_with('/') || path.ends_with('/') {
        return Some("the path is relative, without a leading or trailing `/`".to_owned());
    }
    for segment in path.split('/') {
        let ok = segment == "*"
            || (!segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
        if !ok {
            return Some(format!(
                "segment {segment:?} is neither `*` nor plain characters"
            ));
        }
    }
    None
}

fn config_problems(p: &mut Vec<String>, config: &ConfigSchema) {
    if config.kind.as_deref().is_some_and(|k| k != "object") {
        p.push("`config.type` can only be \"object\"".to_owned());
    }
    for name in &config.required {
        if !config.properties.contains_key(name) {
            p.push(format!(
                "`config.required` names {name:?}, which has no property"
            ));
        }
    }
    for (name, prop) in &config.properties {
        let at = format!("`config.properties.{name}`");
        let fits = |value: &toml::Value| value_fits(prop, value);
        match prop.kind.as_str() {
            "string" | "number" | "integer" | "boolean" => {}
            "array" => {
                if prop.items.as_ref().map(|i| i.kind.as_str()) != Some("string") {
                    p.push(format!(
                        "{at}: an array is of strings (items.type = \"string\")"
                    ));
                }
            }
            other => p.push(format!("{at}: unknown type {other:?}")),
        }
        if let Some(default) = &prop.default {
            if !fits(default) {
                p.push(format!("{at}: the default does not fit the property"));
            }
        }
        if let Some(choices) = &prop.choices {
            if choices.is_empty() || !choices.iter().all(fits) {
                p.push(format!(
                    "{at}: `enum` values must be of the property's type"
                ));
            }
        }
        let numeric = matches!(prop.kind.as_str(), "number" | "integer");
        if (prop.minimum.is_some() || prop.maximum.is_some()) && !numeric {
            p.push(format!("{at}: minimum and maximum are for numbers"));
        }
        if prop.max_length.is_some() && prop.kind != "string" {
            p.push(format!("{at}: maxLength is for strings"));
        }
        if prop.description.is_none() {
            p.push(format!("{at}: say what it does in `description`"));
        }
    }
}

fn value_fits(prop: &Property, value: &toml::Value) -> bool {
    let in_range =
        |x: f64| prop.minimum.is_none_or(|min| x >= min) && prop.maximum.is_none_or(|max| x <= max);
    let type_ok = match (prop.kind.as_str(), value) {
        ("string", toml::Value::String(s)) => prop
            .max_length
            .is_none_or(|max| s.chars().count() as u64 <= max),
        ("integer", toml::Value::Integer(i)) => in_range(*i as f64),
        ("number", toml::Value::Integer(i)) => in_range(*i as f64),
        ("number", toml::Value::Float(f)) => in_range(*f),
        ("boolean", toml::Value::Boolean(_)) => true,
        ("array", toml::Value::Array(items)) => items.iter().all(toml::Value::is_str),
        _ => false,
    };
    let in_enum = prop
        .choices
        .as_ref()
        .is_none_or(|choices| choices.contains(value));
    type_ok && in_enum
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "pii-redact"
name = "PII redaction"
version = "0.1.0"
api = "0.1.0"
description = "Masks things"
priority = 10
failure = "skip"
hooks = ["before-prompt", "stream"]
capabilities = ["log", "config"]
routes = ["GET level", "PUT collections/*/documents"]

[limits]
memory-mb = 32
time-ms = 100
kv-kb = 1024

[config]
required = []
[config.properties.email]
type = "boolean"
default = true
description = "Mask e-mail addresses"
"#;

    #[test]
    fn the_documented_example_is_valid() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.id, "pii-redact");
        assert_eq!(m.capabilities, ["log", "config"]);
    }

    fn problems_of(text: &str) -> Vec<String> {
        Manifest::parse(text).unwrap_err()
    }

    #[test]
    fn mistakes_are_caught() {
        let cases = [
            ("id = \"pii-redact\"", "id = \"PII\""),
            ("id = \"pii-redact\"", "id = \"9lives\""),
            ("version = \"0.1.0\"", "version = \"1.0\""),
            ("failure = \"skip\"", "failure = \"retry\""),
            (
                "\"before-prompt\", \"stream\"",
                "\"before-prompt\", \"on-chunk\"",
            ),
            ("[\"log\", \"config\"]", "[\"log\", \"http\"]"),
            ("[\"log\", \"config\"]", "[\"log\", \"log\"]"),
            ("\"GET level\"", "\"get level\""),
            ("\"GET level\"", "\"GET /level\""),
            ("\"GET level\"", "\"GET a b\""),
            ("time-ms = 100", "time-ms = 0"),
            ("default = true", "default = \"yes\""),
            ("type = \"boolean\"", "type = \"object\""),
            ("required = []", "required = [\"phone\"]"),
        ];
        for (from, to) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "{from}");
            assert!(!problems_of(&text).is_empty(), "{to} was accepted");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        for extra in ["capability = [\"kv\"]\n", "[limits]\nmemory = 3\n"] {
            let text = if extra.starts_with('[') {
                GOOD.replace("[limits]\n", extra)
            } else {
                format!("{extra}{GOOD}")
            };
            assert!(Manifest::parse(&text).is_err(), "{extra}");
        }
    }

    #[test]
    fn semantic_versions() {
        for good in ["0.1.0", "1.2.3-beta.1", "10.0.0+build.5"] {
            assert!(is_semver(good), "{good}");
        }
        for bad in ["1.2", "01.2.3", "1.2.x", "", "v1.2.3"] {
            assert!(!is_semver(bad), "{bad}");
        }
    }
}
