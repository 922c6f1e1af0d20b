//! The records hooks receive and return, with constructors that keep
//! plugin code short.

use crate::__private::wit::corral::plugin::types;

/// Who a hook or route runs for.
pub type Caller = types::Caller;
/// The role of a Corral account.
pub type Role = types::Role;
/// Where a generation comes from: a chat, `/v1/chat/completions` or
/// `/v1/completions`.
pub type Surface = types::Surface;
/// What every hook of one generation is told.
pub type Context = types::Context;
/// One turn of a conversation.
pub type Message = types::Message;
/// Sampling settings; `None` fields stay as they were.
pub type Sampling = types::Sampling;
/// The request as it will reach the model.
pub type Prompt = types::Prompt;
/// Changes to the request.
pub type Modification = types::Modification;
/// What `before_prompt` decided.
pub type Decision = types::Decision;
/// What to do with a stretch of streamed answer text.
pub type ChunkResult = types::ChunkResult;
/// The finished answer.
pub type Answer = types::Answer;
/// What `after_answer` decided.
pub type AnswerAction = types::AnswerAction;

impl Message {
    /// A message with any role (`system`, `user`, `assistant`).
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
}

impl Default for Sampling {
    /// Every field `None`: nothing changes.
    fn default() -> Self {
        Sampling {
            temperature: None,
            top_p: None,
            top_k: None,
            min_p: None,
            repeat_penalty: None,
            max_tokens: None,
            seed: None,
            stop: None,
        }
    }
}

impl Prompt {
    /// The content of the newest `user` message, if there is one.
    pub fn last_user_message(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.as_str())
    }

    /// The current system prompt with `line` added as a paragraph of its
    /// own at the end (or `line` alone when there is none).
    pub fn system_prompt_with(&self, line: &str) -> String {
        match self.system_prompt.as_deref() {
            Some(current) if !current.trim().is_empty() => {
                format!("{}\n\n{line}", current.trim_end())
            }
            _ => line.to_owned(),
        }
    }
}

impl Default for Modification {
    /// Changes nothing.
    fn default() -> Self {
        Modification {
            messages: None,
            system_prompt: None,
            sampling: None,
            context: Vec::new(),
        }
    }
}

impl Modification {
    /// A modification that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the conversation.
    pub fn messages(mut self, messages: Vec<Message>) -> Self {
        self.messages = Some(messages);
        self
    }

    /// Replaces the system prompt.
    pub fn system_prompt(mut self, system_prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(system_prompt.into());
        self
    }

    /// Changes sampling settings (fields left `None` stay as they were).
    pub fn sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = Some(sampling);
        self
    }

    /// Adds a passage the model should know.
    pub fn context(mut self, passage: impl Into<String>) -> Self {
        self.context.push(passage.into());
        self
    }

    /// Whether this changes nothing.
    pub fn is_empty(&self) -> bool {
        self.messages.is_none()
            && self.system_prompt.is_none()
            && self.sampling.is_none()
            && self.context.is_empty()
    }
}

impl Decision {
    /// Changes the request; a modification that changes nothing becomes
    /// [`Decision::Continue`].
    pub fn modify(modification: Modification) -> Self {
        if modification.is_empty() {
            Decision::Continue
        } else {
            Decision::Modify(modification)
        }
    }

    /// Stops the request; the user sees `reason`.
    pub fn reject(reason: impl Into<String>) -> Self {
        Decision::Reject(reason.into())
    }
}

impl ChunkResult {
    /// Emits all of `text` now.
    pub fn pass(text: String) -> Self {
        ChunkResult {
            emit: text,
            hold: String::new(),
        }
    }

    /// Emits `emit` now and holds `hold` back for the next stretch.
    pub fn split(emit: impl Into<String>, hold: impl Into<String>) -> Self {
        ChunkResult {
            emit: emit.into(),
            hold: hold.into(),
        }
    }
}

impl AnswerAction {
    /// Stores `note` with the answer (shown below it).
    pub fn annotate(note: impl Into<String>) -> Self {
        AnswerAction::Annotate(note.into())
    }

    /// Stores `text` instead of what was streamed.
    pub fn replace(text: impl Into<String>) -> Self {
        AnswerAction::Replace(text.into())
    }
}

impl Role {
    /// The role's name as Corral's API writes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Technician => "technician",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(system: Option<&str>, messages: Vec<Message>) -> Prompt {
        Prompt {
            messages,
            system_prompt: system.map(str::to_owned),
            sampling: Sampling::default(),
        }
    }

    #[test]
    fn last_user_message_skips_answers() {
        let p = prompt(
            None,
            vec![
                Message::user("first"),
                Message::assistant("reply"),
                Message::user("second"),
                Message::assistant("another"),
            ],
        );
        assert_eq!(p.last_user_message(), Some("second"));
        assert_eq!(prompt(None, vec![]).last_user_message(), None);
    }

    #[test]
    fn system_prompt_with_appends_a_paragraph() {
        assert_eq!(
            prompt(None, vec![]).system_prompt_with("Be brief."),
            "Be brief."
        );
        assert_eq!(
            prompt(Some("  "), vec![]).system_prompt_with("Be brief."),
            "Be brief."
        );
        assert_eq!(
            prompt(Some("You help.\n"), vec![]).system_prompt_with("Be brief."),
            "You help.\n\nBe brief."
        );
    }

    #[test]
    fn an_empty_modification_continues() {
        assert_eq!(Decision::modify(Modification::new()), Decision::Continue);
        let m = Modification::new().context("a passage");
        assert_eq!(Decision::modify(m.clone()), Decision::Modify(m));
    }
}
