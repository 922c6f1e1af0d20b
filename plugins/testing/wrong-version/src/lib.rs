//! `test-wrong-version`: a plugin built against `corral:plugin@0.9.0` (the
//! WIT in `wit/`, a copy of 0.1.0 with the version changed). Its exports
//! are `corral:plugin/hooks@0.9.0` and `corral:plugin/routes@0.9.0`, so a
//! Corral that speaks 0.1.0 must refuse it with a clear message. Its
//! manifest says `api = "0.9.0"`; set it to "0.1.0" to test the check of
//! the component itself rather than of the manifest.

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
});

use exports::corral::plugin::hooks::{
    Answer, AnswerAction, ChunkResult, Context, Decision, Guest as Hooks, Prompt,
};
use exports::corral::plugin::routes::{Guest as Routes, HttpRequest, HttpResponse};

struct WrongVersion;

impl Hooks for WrongVersion {
    fn before_prompt(_ctx: Context, _prompt: Prompt) -> Decision {
        Decision::Continue
    }

    fn on_chunk(_ctx: Context, text: String) -> ChunkResult {
        ChunkResult {
            emit: text,
            hold: String::new(),
        }
    }

    fn finish(_ctx: Context, held: String) -> String {
        held
    }

    fn after_answer(_ctx: Context, _answer: Answer) -> AnswerAction {
        AnswerAction::Keep
    }
}

impl Routes for WrongVersion {
    fn handle(_request: HttpRequest) -> HttpResponse {
        HttpResponse {
            status: 404,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

export!(WrongVersion);
