//! The backend libraries this host found and loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use corral_sdk::abi::host::DynBackend;
use corral_sdk::backend::{Backend, BackendInfo};

/// One loaded backend library.
#[derive(Clone)]
pub struct LoadedBackend {
    pub backend: Arc<dyn Backend>,
    pub info: BackendInfo,
    pub path: PathBuf,
}

/// Backends by name.
#[derive(Clone, Default)]
pub struct BackendSet {
    backends: BTreeMap<String, LoadedBackend>,
    /// Libraries that could not be loaded, with the reason.
    problems: Vec<String>,
}

/// Whether a file name looks like a Corral backend library
/// (`libcorral_<name>.so` and the like on other systems).
fn is_backend_library(name: &str) -> bool {
    let stem = name
        .strip_suffix(std::env::consts::DLL_SUFFIX)
        .unwrap_or("");
    stem.strip_prefix(std::env::consts::DLL_PREFIX)
        .is_some_and(|s| s.starts_with("corral_") && s.len() > "corral_".len())
}

impl BackendSet {
    /// Loads every backend library in `dir`. Libraries that fail are
    /// reported in [`BackendSet::problems`], never fatal.
    pub fn discover(dir: &Path) -> Self {
        let mut set = BackendSet::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) => {
                set.problems.push(format!(
                    "{}: cannot read the backends directory: {err}",
                    dir.display()
                ));
                return set;
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(is_backend_library)
            })
            .collect();
        paths.sort();
        for path in paths {
            match DynBackend::open(&path) {
                Ok(backend) => {
                    let info = backend.info();
                    tracing::info!(backend = %info.name, version = %info.version, path = %path.display(), "backend loaded");
                    set.insert(Arc::new(backend), path);
                }
                Err(err) => {
                    tracing::warn!(%err, "backend library skipped");
                    set.problems.push(err.to_string());
                }
            }
        }
        set
    }

    /// Adds a backend (also used by tests that link one in).
    pub fn insert(&mut self, backend: Arc<dyn Backend>, path: PathBuf) {
        let info = backend.info();
        self.backends.insert(
            info.name.clone(),
            LoadedBackend {
                backend,
                info,
                path,
            },
        );
    }

    pub fn get(&self, name: &str) -> Option<&LoadedBackend> {
        self.backends.get(name)
    }

    pub fn all(&self) -> impl Iterator<Item = &LoadedBackend> {
        self.backends.values()
    }

    pub fn names(&self) -> Vec<String> {
        self.backends.keys().cloned().collect()
    }

    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Adds problems found elsewhere (when the set is rebuilt).
    pub fn add_problems(&mut self, problems: &[String]) {
        self.problems.extend_from_slice(problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_backend_library_names() {
        assert!(is_backend_library("libcorral_llama.so"));
        assert!(!is_backend_library("libcorral_.so"));
        assert!(!is_backend_library("libllama.so"));
        assert!(!is_backend_library("libcorral_llama.so.d"));
        assert!(!is_backend_library("corral"));
    }

    #[test]
    fn a_missing_directory_is_a_problem_not_a_crash() {
        let set = BackendSet::discover(Path::new("/nonexistent/corral-backends"));
        assert!(set.names().is_empty());
        assert_eq!(set.problems().len(), 1);
    }

    #[test]
    fn foreign_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join(format!(
            "{}corral_fake{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ));
        std::fs::write(&fake, b"junk").unwrap();
        std::fs::write(dir.path().join("README"), b"not a library").unwrap();
        let set = BackendSet::discover(dir.path());
        assert!(set.names().is_empty());
        assert_eq!(set.problems().len(), 1);
        assert!(
            set.problems()[0].contains("corral_fake"),
            "{:?}",
            set.problems()
        );
    }
}
