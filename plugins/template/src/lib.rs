//! The smallest useful Corral plugin: it adds a line that a technician
//! configures (setting `line`) to the system prompt of every generation.
//!
//! Copy this folder to start a plugin of your own:
//! 1. rename the package in `Cargo.toml` and `id` in `plugin.toml`;
//! 2. write the logic as plain functions (like [`add_line`]) and test them
//!    with `cargo test`;
//! 3. keep the [`Plugin`] impl thin: read settings, call the logic, return.
//!
//! Build it with `scripts/build-plugins.sh` and install the folder it
//! prints (see sdk/plugin/README.md).

use corral_plugin::prelude::*;

/// The line when the configuration has none. The host fills in the
/// `default` of plugin.toml, so this only matters when the `config`
/// capability is not granted; keep the two equal.
const DEFAULT_LINE: &str = "Answer in plain language and say so when you are not sure.";

/// The system prompt with `line` added as a paragraph of its own, or
/// `None` when there is nothing to add.
pub fn add_line(system_prompt: Option<&str>, line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    match system_prompt.map(str::trim_end) {
        Some(current) if current.contains(line) => None,
        Some(current) if !current.is_empty() => Some(format!("{current}\n\n{line}")),
        _ => Some(line.to_owned()),
    }
}

/// The plugin. It has no fields: each generation runs in a fresh instance.
struct Template;

impl Plugin for Template {
    // The manifest's `hooks = ["before-prompt"]` makes Corral call this one
    // method; the others keep their defaults, which change nothing.
    fn before_prompt(_ctx: &Context, prompt: &Prompt) -> Decision {
        // Capability `config`: settings arrive as JSON and are read into
        // the type asked for.
        let line: String = config::get_or("line", DEFAULT_LINE.to_owned());
        match add_line(prompt.system_prompt.as_deref(), &line) {
            Some(system_prompt) => {
                // Capability `log`: a line in Corral's log, tagged with
                // this plugin's id.
                log::debug!("adding {} characters to the system prompt", line.len());
                Decision::modify(Modification::new().system_prompt(system_prompt))
            }
            None => Decision::Continue,
        }
    }
}

// Generates the component's exports from `Template`. Exactly once per
// plugin.
corral_plugin::export!(Template);

#[cfg(test)]
mod tests {
    use super::*;
    use corral_plugin::testing;

    #[test]
    fn adds_the_line_as_its_own_paragraph() {
        assert_eq!(add_line(None, "Be brief."), Some("Be brief.".to_owned()));
        assert_eq!(
            add_line(Some("You are Corral.\n"), "Be brief."),
            Some("You are Corral.\n\nBe brief.".to_owned())
        );
    }

    #[test]
    fn adds_nothing_twice_or_empty() {
        assert_eq!(
            add_line(Some("You are Corral.\n\nBe brief."), "Be brief."),
            None
        );
        assert_eq!(add_line(Some("x"), "  "), None);
    }

    // The whole hook, against corral-plugin's stand-in host.
    #[test]
    fn before_prompt_uses_the_configured_line() {
        testing::reset();
        testing::grant(&["log", "config"]);
        testing::set_config("line", serde_json::json!("Answer in French."));
        let prompt = testing::prompt(vec![Message::user("Hello")]);
        let decision = testing::before_prompt::<Template>(&testing::context("ann"), &prompt);
        let Decision::Modify(change) = decision else {
            panic!("expected a modification, got {decision:?}");
        };
        assert_eq!(change.system_prompt.as_deref(), Some("Answer in French."));
        assert!(change.messages.is_none() && change.context.is_empty());
    }

    #[test]
    fn before_prompt_falls_back_on_the_default() {
        testing::reset();
        let prompt = testing::prompt(vec![Message::user("Hello")]);
        let decision = testing::before_prompt::<Template>(&testing::context("ann"), &prompt);
        let Decision::Modify(change) = decision else {
            panic!("expected a modification, got {decision:?}");
        };
        assert_eq!(change.system_prompt.as_deref(), Some(DEFAULT_LINE));
    }
}
