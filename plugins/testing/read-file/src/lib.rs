//! `test-read-file`: tries to reach the host's files and environment and
//! reports what it got, so a test can check that it found nothing.
//!
//! `before-prompt` adds one context passage per attempt:
//! `read /etc/passwd: error: …` (or `read /etc/passwd: ok: …`),
//! `list /: …`, `env: … variables`. `GET read?path=…` answers
//! `{"path": "…", "ok": false, "result": "<the error>"}`.

use corral_plugin::prelude::*;

/// What reading `path` gave: `Ok(the start of the text)` or the error.
pub fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|text| text.chars().take(200).collect())
        .map_err(|e| e.to_string())
}

/// What listing `path` gave.
pub fn list(path: &str) -> Result<String, String> {
    let entries = std::fs::read_dir(path).map_err(|e| e.to_string())?;
    let names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    Ok(names.join(", "))
}

fn report(what: &str, result: Result<String, String>) -> String {
    match result {
        Ok(found) => format!("{what}: ok: {found}"),
        Err(e) => format!("{what}: error: {e}"),
    }
}

struct ReadFile;

impl Plugin for ReadFile {
    fn before_prompt(_ctx: &Context, _prompt: &Prompt) -> Decision {
        let variables = std::env::vars().count();
        Decision::modify(
            Modification::new()
                .context(report("read /etc/passwd", read("/etc/passwd")))
                .context(report("list /", list("/")))
                .context(format!("env: {variables} variables")),
        )
    }

    fn handle(request: &Request) -> Response {
        if request.route("GET", "read").is_none() {
            return Response::not_found();
        }
        let path = request
            .query_param("path")
            .unwrap_or_else(|| "/etc/passwd".to_owned());
        let (ok, result) = match read(&path) {
            Ok(text) => (true, text),
            Err(e) => (false, e),
        };
        Response::json(
            200,
            &serde_json::json!({ "path": path, "ok": ok, "result": result }),
        )
    }
}

corral_plugin::export!(ReadFile);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_say_what_happened() {
        assert_eq!(
            report("read x", Err("denied".into())),
            "read x: error: denied"
        );
        assert_eq!(report("read x", Ok("text".into())), "read x: ok: text");
        assert!(read("/this/path/does/not/exist").is_err());
    }
}
