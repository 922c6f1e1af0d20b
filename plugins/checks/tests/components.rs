//! The built components: each exports Corral's interface in its
//! manifest's version and imports exactly the host functions its
//! manifest's capabilities grant (the SDK links only what is used).
//!
//! Uses the components in `$CORRAL_PLUGINS_DIST` when set (what
//! `scripts/build-plugins.sh` printed); otherwise builds them with that
//! script into this test's temporary folder (minutes the first time).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use plugin_checks::component::Surface;
use plugin_checks::manifest::Manifest;
use plugin_checks::{capability_for, plugin_dirs, plugins_root};

fn dist() -> &'static PathBuf {
    static DIST: OnceLock<PathBuf> = OnceLock::new();
    DIST.get_or_init(|| {
        if let Some(dir) = std::env::var_os("CORRAL_PLUGINS_DIST") {
            return PathBuf::from(dir);
        }
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugins-dist");
        let script = plugins_root().join("../scripts/build-plugins.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg(&out)
            .status()
            .expect("run scripts/build-plugins.sh");
        assert!(
            status.success(),
            "scripts/build-plugins.sh failed: {status}"
        );
        out
    })
}

struct Built {
    dir: String,
    manifest: Manifest,
    surface: Surface,
    size: u64,
}

fn built() -> Vec<Built> {
    plugin_dirs(&plugins_root())
        .into_iter()
        .map(|dir| {
            let manifest_text = std::fs::read_to_string(dir.join("plugin.toml")).unwrap();
            let manifest = Manifest::parse(&manifest_text).unwrap();
            let out = dist().join(&manifest.id);
            let shipped = std::fs::read_to_string(out.join("plugin.toml"))
                .unwrap_or_else(|e| panic!("{}: {e}", out.join("plugin.toml").display()));
            assert_eq!(
                shipped, manifest_text,
                "{}: the shipped manifest",
                manifest.id
            );
            let bytes = std::fs::read(out.join("plugin.wasm")).unwrap();
            let surface = Surface::read(&bytes).unwrap_or_else(|e| panic!("{}: {e}", manifest.id));
            Built {
                dir: dir
                    .strip_prefix(plugins_root())
                    .unwrap()
                    .display()
                    .to_string(),
                manifest,
                surface,
                size: bytes.len() as u64,
            }
        })
        .collect()
}

#[test]
fn components_import_exactly_what_their_manifests_ask_for() {
    let mut report = Vec::new();
    for b in built() {
        let id = &b.manifest.id;
        let mut used = BTreeSet::new();
        let mut other = Vec::new();
        for import in &b.surface.imports {
            if import.name.starts_with("corral:plugin/") {
                assert!(
                    import.name.ends_with(&format!("@{}", b.manifest.api)),
                    "{id}: imports {} but its manifest says api {}",
                    import.name,
                    b.manifest.api
                );
                for function in &import.functions {
                    let capability = capability_for(&import.name, function)
                        .unwrap_or_else(|e| panic!("{id}: {e}"));
                    used.extend(capability);
                }
            } else if import.name.starts_with("wasi:http/outgoing-handler@") {
                used.insert("http");
            } else {
                other.push(import.name.clone());
            }
        }
        let declared: BTreeSet<&str> = b.manifest.capabilities.iter().map(String::as_str).collect();
        assert_eq!(
            used, declared,
            "{id}: capabilities used vs. declared in {}",
            b.dir
        );
        report.push(format!(
            "{id:<20} {:>7} bytes  capabilities [{}]  other imports: {}",
            b.size,
            used.into_iter().collect::<Vec<_>>().join(", "),
            summarize(&other)
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// `wasi:cli/stdout@0.2.6, wasi:cli/stderr@0.2.6` → `wasi:cli`.
fn summarize(imports: &[String]) -> String {
    let packages: BTreeSet<&str> = imports
        .iter()
        .map(|i| i.split('/').next().unwrap_or(i))
        .collect();
    packages.into_iter().collect::<Vec<_>>().join(", ")
}

#[test]
fn components_export_corrals_interface_in_their_version() {
    for b in built() {
        let names: Vec<&str> = b.surface.exports.iter().map(|e| e.name.as_str()).collect();
        let api = &b.manifest.api;
        assert_eq!(
            names,
            [
                format!("corral:plugin/hooks@{api}"),
                format!("corral:plugin/routes@{api}")
            ],
            "{}",
            b.manifest.id
        );
    }
}

#[test]
fn only_the_sandbox_tests_reach_for_files_network_or_http() {
    for b in built() {
        let reaches = |prefix: &str| b.surface.imports.iter().any(|i| i.name.starts_with(prefix));
        let id = b.manifest.id.as_str();
        let files = reaches("wasi:filesystem/");
        let sockets = reaches("wasi:sockets/");
        let http = reaches("wasi:http/");
        match id {
            "test-read-file" => assert!(files, "{id} imports wasi:filesystem"),
            "test-net" => assert!(sockets && !http, "{id} imports wasi:sockets only"),
            "test-net-http" => assert!(
                b.surface
                    .imports
                    .iter()
                    .any(|i| i.name.starts_with("wasi:http/outgoing-handler@")),
                "{id} imports wasi:http/outgoing-handler"
            ),
            _ => assert!(
                !files && !sockets && !http,
                "{id} imports files, sockets or HTTP"
            ),
        }
    }
}
