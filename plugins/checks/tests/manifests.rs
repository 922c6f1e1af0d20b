//! Every plugin's manifest follows Corral's format, and the plugins fit
//! the conventions of this folder.

use std::collections::BTreeSet;

use plugin_checks::manifest::Manifest;
use plugin_checks::{plugin_dirs, plugins_root};

fn manifests() -> Vec<(String, Manifest)> {
    let dirs = plugin_dirs(&plugins_root());
    assert!(dirs.len() >= 14, "found only {dirs:?}");
    dirs.iter()
        .map(|dir| {
            let text = std::fs::read_to_string(dir.join("plugin.toml")).unwrap();
            let name = dir
                .strip_prefix(plugins_root())
                .unwrap()
                .display()
                .to_string();
            match Manifest::parse(&text) {
                Ok(manifest) => (name, manifest),
                Err(problems) => panic!("{name}/plugin.toml:\n  {}", problems.join("\n  ")),
            }
        })
        .collect()
}

#[test]
fn every_manifest_is_valid() {
    manifests();
}

#[test]
fn ids_are_unique_and_match_the_package() {
    let mut ids = BTreeSet::new();
    for (dir, manifest) in manifests() {
        assert!(
            ids.insert(manifest.id.clone()),
            "{dir}: id {} twice",
            manifest.id
        );
        let cargo = std::fs::read_to_string(plugins_root().join(&dir).join("Cargo.toml")).unwrap();
        let package: toml::Value = toml::from_str(&cargo).unwrap();
        assert_eq!(
            package["package"]["name"].as_str(),
            Some(manifest.id.as_str()),
            "{dir}: the package is named after the plugin's id"
        );
        if dir.starts_with("testing/") {
            assert!(
                manifest.id.starts_with("test-"),
                "{dir}: test plugins' ids start with test-"
            );
        } else {
            assert!(!manifest.id.starts_with("test-"), "{dir}");
        }
    }
}

#[test]
fn plugins_are_built_against_this_api() {
    for (dir, manifest) in manifests() {
        let want = if manifest.id == "test-wrong-version" {
            "0.9.0"
        } else {
            "0.1.0"
        };
        assert_eq!(manifest.api, want, "{dir}");
    }
}

#[test]
fn every_plugin_does_something() {
    for (dir, manifest) in manifests() {
        assert!(
            !manifest.hooks.is_empty() || !manifest.routes.is_empty(),
            "{dir}: no hooks and no routes"
        );
    }
}
