//! Corral plugin `code-mentor`: a coding-assistant persona. Before every
//! chat generation it sets a system prompt for the user's level
//! (beginner, intermediate, advanced or expert), which each user chooses
//! for themselves through the plugin's routes and which is kept in their
//! own key-value data:
//!
//! - `GET /api/plugins/code-mentor/level` → `{"level": "beginner", "source": "user"}`
//!   (`source` is `default` while the user has not chosen);
//! - `PUT /api/plugins/code-mentor/level` with `{"level": "expert"}`;
//! - `DELETE /api/plugins/code-mentor/level` goes back to the default.
//!
//! The default level is the setting `default-level`.

use corral_plugin::prelude::*;
use serde::{Deserialize, Serialize};

/// How much a user knows, which sets how the assistant answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Beginner,
    Intermediate,
    Advanced,
    Expert,
}

impl Level {
    pub const ALL: [Level; 4] = [
        Level::Beginner,
        Level::Intermediate,
        Level::Advanced,
        Level::Expert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Beginner => "beginner",
            Level::Intermediate => "intermediate",
            Level::Advanced => "advanced",
            Level::Expert => "expert",
        }
    }

    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == name)
    }

    /// The persona's instructions for this level.
    pub fn persona(self) -> &'static str {
        match self {
            Level::Beginner => {
                "You are a patient coding mentor. The user is a beginner: explain each idea in \
                 plain words before showing code, define a term the first time you use it, keep \
                 examples small and complete, comment the code where a line is not obvious, and \
                 end with one small next step the user can try."
            }
            Level::Intermediate => {
                "You are a coding mentor. The user knows the basics: explain why you suggest \
                 what you suggest, point out the idioms and the usual pitfalls, show complete but \
                 focused examples, and mention how to test the code where it helps."
            }
            Level::Advanced => {
                "You are a coding mentor for an experienced developer: be concise, focus on \
                 design trade-offs, correctness and performance, show only the code that matters, \
                 and be precise about language and library details."
            }
            Level::Expert => {
                "You are a peer reviewer for an expert developer: answer tersely, skip the \
                 basics, discuss edge cases, invariants and alternatives with their costs, and \
                 say plainly what you are unsure of."
            }
        }
    }
}

/// The key of the user's chosen level in their key-value data.
const LEVEL_KEY: &str = "level";
/// The setting that names the default level.
const DEFAULT_SETTING: &str = "default-level";

/// The system prompt for `level`: the persona, then the prompt the
/// conversation already had.
pub fn system_prompt(level: Level, current: Option<&str>) -> String {
    match current.map(str::trim) {
        Some(current) if !current.is_empty() => format!("{}\n\n{current}", level.persona()),
        _ => level.persona().to_owned(),
    }
}

/// The level when a user has not chosen one.
fn default_level() -> Level {
    config::get::<Level>(DEFAULT_SETTING)
        .ok()
        .flatten()
        .unwrap_or(Level::Intermediate)
}

/// The calling user's level, and whether they chose it.
fn current_level() -> (Level, bool) {
    match kv::user()
        .get_string(LEVEL_KEY)
        .as_deref()
        .and_then(Level::parse)
    {
        Some(level) => (level, true),
        None => (default_level(), false),
    }
}

#[derive(Serialize)]
struct LevelBody {
    level: Level,
    /// `user` when the user chose the level, `default` otherwise.
    source: &'static str,
}

fn level_response(status: u16, (level, chosen): (Level, bool)) -> Response {
    let source = if chosen { "user" } else { "default" };
    Response::json(status, &LevelBody { level, source })
}

/// Reads a `PUT level` body: `{"level": "<one of the levels>"}`.
pub fn parse_level_body(request: &Request) -> Result<Level, Response> {
    let body: serde_json::Value = request.json()?;
    let invalid = || {
        let names: Vec<&str> = Level::ALL.iter().map(|l| l.as_str()).collect();
        Response::bad_request(&format!("`level` must be one of {}", names.join(", ")))
    };
    let Some(object) = body.as_object() else {
        return Err(Response::bad_request("the body must be a JSON object"));
    };
    if let Some(unknown) = object.keys().find(|k| *k != "level") {
        return Err(Response::bad_request(&format!("unknown field `{unknown}`")));
    }
    object
        .get("level")
        .and_then(|v| v.as_str())
        .and_then(Level::parse)
        .ok_or_else(invalid)
}

struct CodeMentor;

impl Plugin for CodeMentor {
    fn before_prompt(ctx: &Context, prompt: &Prompt) -> Decision {
        // `/v1/completions` continues a text without a chat template: a
        // persona does not fit there.
        if ctx.surface == Surface::Completions {
            return Decision::Continue;
        }
        let (level, _) = current_level();
        let system = system_prompt(level, prompt.system_prompt.as_deref());
        Decision::modify(Modification::new().system_prompt(system))
    }

    fn handle(request: &Request) -> Response {
        if request.route("GET", LEVEL_KEY).is_some() {
            return level_response(200, current_level());
        }
        if request.route("PUT", LEVEL_KEY).is_some() {
            let level = match parse_level_body(request) {
                Ok(level) => level,
                Err(response) => return response,
            };
            return match kv::user().set(LEVEL_KEY, level.as_str()) {
                Ok(()) => level_response(200, (level, true)),
                Err(e) => Response::error(409, "limit_reached", e.message()),
            };
        }
        if request.route("DELETE", LEVEL_KEY).is_some() {
            kv::user().delete(LEVEL_KEY);
            return level_response(200, current_level());
        }
        Response::not_found()
    }
}

corral_plugin::export!(CodeMentor);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_plugin::testing;
    use serde_json::{json, Value};

    fn setup() {
        testing::reset();
        testing::grant(&["kv", "config"]);
    }

    fn call(method: &str, user: &str, body: &str) -> (u16, Value) {
        let response =
            testing::handle::<CodeMentor>(&testing::request(method, "level", user, body));
        let body = if response.body.is_empty() {
            Value::Null
        } else {
            response.body_json().expect("a JSON body")
        };
        (response.status, body)
    }

    fn system_of(decision: Decision) -> String {
        match decision {
            Decision::Modify(change) => change.system_prompt.expect("a system prompt"),
            other => panic!("expected a modification, got {other:?}"),
        }
    }

    #[test]
    fn the_persona_goes_before_the_existing_system_prompt() {
        assert_eq!(system_prompt(Level::Expert, None), Level::Expert.persona());
        assert_eq!(
            system_prompt(Level::Expert, Some("  ")),
            Level::Expert.persona()
        );
        assert_eq!(
            system_prompt(Level::Beginner, Some("Use Python.")),
            format!("{}\n\nUse Python.", Level::Beginner.persona())
        );
    }

    #[test]
    fn every_level_has_its_own_persona() {
        let personas: std::collections::BTreeSet<&str> =
            Level::ALL.iter().map(|l| l.persona()).collect();
        assert_eq!(personas.len(), 4);
        for level in Level::ALL {
            assert_eq!(Level::parse(level.as_str()), Some(level));
        }
        assert_eq!(Level::parse("Expert"), None);
    }

    #[test]
    fn a_user_without_a_choice_gets_the_configured_default() {
        setup();
        assert_eq!(
            call("GET", "ann", ""),
            (200, json!({"level": "intermediate", "source": "default"}))
        );
        testing::set_config("default-level", json!("advanced"));
        assert_eq!(
            call("GET", "ann", ""),
            (200, json!({"level": "advanced", "source": "default"}))
        );
        let prompt = testing::prompt(vec![Message::user("How do I sort a list?")]);
        let decision = testing::before_prompt::<CodeMentor>(&testing::context("ann"), &prompt);
        assert_eq!(system_of(decision), Level::Advanced.persona());
    }

    #[test]
    fn each_user_keeps_their_own_level() {
        setup();
        assert_eq!(
            call("PUT", "ann", r#"{"level": "beginner"}"#),
            (200, json!({"level": "beginner", "source": "user"}))
        );
        assert_eq!(call("PUT", "bob", r#"{"level": "expert"}"#).0, 200);
        assert_eq!(call("GET", "ann", "").1["level"], "beginner");
        assert_eq!(call("GET", "bob", "").1["level"], "expert");
        assert_eq!(call("GET", "cy", "").1["source"], "default");

        let prompt = testing::prompt(vec![Message::user("What is a closure?")]);
        let ann = testing::before_prompt::<CodeMentor>(&testing::context("ann"), &prompt);
        assert_eq!(system_of(ann), Level::Beginner.persona());
        let bob = testing::before_prompt::<CodeMentor>(&testing::context("bob"), &prompt);
        assert_eq!(system_of(bob), Level::Expert.persona());

        assert_eq!(
            call("DELETE", "ann", ""),
            (200, json!({"level": "intermediate", "source": "default"}))
        );
        assert_eq!(call("GET", "bob", "").1["level"], "expert");
    }

    #[test]
    fn invalid_levels_get_400_with_corrals_error_body() {
        setup();
        for body in [
            r#"{"level": "guru"}"#,
            r#"{"level": 3}"#,
            r#"{"level": "Beginner"}"#,
            r#"{}"#,
            r#"{"level": "expert", "extra": 1}"#,
            r#"["expert"]"#,
        ] {
            let (status, error) = call("PUT", "ann", body);
            assert_eq!(status, 400, "{body}");
            assert_eq!(error["code"], "bad_request", "{body}");
            assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        let (status, error) = call("PUT", "ann", "{not json");
        assert_eq!(
            (status, error["code"].as_str()),
            (400, Some("malformed_json"))
        );
        let (_, error) = call("PUT", "ann", r#"{"level": "guru"}"#);
        assert_eq!(
            error["message"],
            "`level` must be one of beginner, intermediate, advanced, expert"
        );
        // Nothing was stored.
        assert!(testing::user_kv("ann").is_empty());
    }

    #[test]
    fn a_broken_stored_value_falls_back_to_the_default() {
        setup();
        testing::set_caller(testing::caller("ann"));
        kv::user().set(LEVEL_KEY, "wizard").unwrap();
        assert_eq!(
            call("GET", "ann", ""),
            (200, json!({"level": "intermediate", "source": "default"}))
        );
    }

    #[test]
    fn completions_are_left_alone() {
        setup();
        let mut ctx = testing::context("ann");
        ctx.surface = Surface::Completions;
        let prompt = testing::prompt(vec![Message::user("def fib(n):")]);
        assert_eq!(
            testing::before_prompt::<CodeMentor>(&ctx, &prompt),
            Decision::Continue
        );
    }

    #[test]
    fn other_routes_are_not_found() {
        setup();
        let response =
            testing::handle::<CodeMentor>(&testing::request("POST", "level", "ann", "{}"));
        assert_eq!(response.status, 404);
        let response = testing::handle::<CodeMentor>(&testing::request("GET", "levels", "ann", ""));
        assert_eq!(response.status, 404);
    }
}
