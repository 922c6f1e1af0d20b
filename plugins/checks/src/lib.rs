//! Checks for Corral's example plugins: their manifests, and what their
//! built components import and export.

use std::path::{Path, PathBuf};

pub mod component;
pub mod manifest;

/// The `plugins/` folder.
pub fn plugins_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("checks/ lies in plugins/")
        .to_path_buf()
}

/// Every folder under `root` with a `plugin.toml`, sorted; build output
/// (`target`, `dist`) is skipped.
pub fn plugin_dirs(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if dir.join("plugin.toml").is_file() {
            found.push(dir.clone());
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let skip = matches!(name.to_str(), Some("target" | "dist" | "src" | "wit"))
                || name.to_string_lossy().starts_with('.');
            if path.is_dir() && !skip {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The capability that grants function `function` of the imported
/// interface `interface` (`corral:plugin/kv@0.1.0`), `Ok(None)` when none
/// is needed (`types`), or an error for an interface that no capability
/// grants.
pub fn capability_for(interface: &str, function: &str) -> Result<Option<&'static str>, String> {
    let name = interface
        .strip_prefix("corral:plugin/")
        .and_then(|rest| rest.split_once('@'))
        .map(|(name, _)| name)
        .ok_or_else(|| format!("{interface} is not a corral:plugin interface"))?;
    match (name, function) {
        ("types", _) => Ok(None),
        ("log", _) => Ok(Some("log")),
        ("kv", _) => Ok(Some("kv")),
        ("config", _) => Ok(Some("config")),
        ("models", "generate") => Ok(Some("generate")),
        ("models", "embed") => Ok(Some("embed")),
        _ => Err(format!("no capability grants {interface}#{function}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_follow_interfaces_and_functions() {
        assert_eq!(
            capability_for("corral:plugin/kv@0.1.0", "get"),
            Ok(Some("kv"))
        );
        assert_eq!(
            capability_for("corral:plugin/models@0.1.0", "embed"),
            Ok(Some("embed"))
        );
        assert_eq!(
            capability_for("corral:plugin/models@0.1.0", "generate"),
            Ok(Some("generate"))
        );
        assert_eq!(capability_for("corral:plugin/types@0.1.0", ""), Ok(None));
        assert!(capability_for("corral:plugin/hooks@0.1.0", "x").is_err());
        assert!(capability_for("wasi:http/types@0.2.6", "x").is_err());
    }
}
