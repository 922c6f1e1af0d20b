//! The `corral:plugin` WIT versions this runtime runs. Each version has
//! its own bindings module; plugins built against an older version keep
//! working when a newer one is added, because the host dispatches on the
//! version a component exports.

mod v0_1_0;

use corral_hooks::HookContext;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};

use crate::calls::{Call, Reply};
use crate::error::PluginError;
use crate::manifest::{Capability, Manifest};
use crate::sandbox::PluginState;

/// The `corral:plugin` versions this runtime runs, newest first.
pub const SUPPORTED_APIS: &[&str] = &[v0_1_0::VERSION];

const PACKAGE: &str = "corral:plugin";

/// A linker per supported version: WASI p2 and that version's imports.
pub(crate) struct Linkers {
    v0_1_0: Linker<PluginState>,
}

impl Linkers {
    pub(crate) fn new(engine: &Engine) -> anyhow::Result<Self> {
        let mut v0_1_0 = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut v0_1_0)
            .map_err(|e| anyhow::anyhow!("cannot link WASI: {e:#}"))?;
        // Every request passes the instance's gate (`net::HttpGate`); only
        // plugins that ask for `http` get past the import check.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut v0_1_0)
            .map_err(|e| anyhow::anyhow!("cannot link WASI HTTP: {e:#}"))?;
        v0_1_0::add_to_linker(&mut v0_1_0)
            .map_err(|e| anyhow::anyhow!("cannot link corral:plugin@0.1.0: {e:#}"))?;
        Ok(Linkers { v0_1_0 })
    }
}

/// A plugin compiled and linked once; instances are made from it per
/// generation or route request.
pub(crate) enum Pre {
    V0_1_0(v0_1_0::PluginPre<PluginState>),
}

/// One live instance of a plugin.
pub(crate) enum Instance {
    V0_1_0(v0_1_0::Bound),
}

impl Pre {
    /// Links `component` for the version `api` (already checked to be
    /// supported).
    pub(crate) fn new(
        api: &str,
        linkers: &Linkers,
        component: &Component,
    ) -> Result<Pre, PluginError> {
        let refused = |e: wasmtime::Error| PluginError::RefusedImport(format!("{e:#}"));
        let missing = |e: wasmtime::Error| {
            PluginError::InvalidComponent(format!(
                "it does not export what corral:plugin@{api} needs: {e:#}"
            ))
        };
        match api {
            v0_1_0::VERSION => {
                let pre = linkers.v0_1_0.instantiate_pre(component).map_err(refused)?;
                Ok(Pre::V0_1_0(v0_1_0::PluginPre::new(pre).map_err(missing)?))
            }
            other => Err(unsupported(other)),
        }
    }

    pub(crate) async fn instantiate(
        &self,
        store: &mut Store<PluginState>,
        ctx: Option<&HookContext>,
    ) -> wasmtime::Result<Instance> {
        match self {
            Pre::V0_1_0(pre) => Ok(Instance::V0_1_0(
                v0_1_0::instantiate(pre, store, ctx).await?,
            )),
        }
    }
}

impl Instance {
    /// Sets the generation this instance serves (none for a route).
    pub(crate) fn set_context(&mut self, ctx: Option<&HookContext>) {
        match self {
            Instance::V0_1_0(bound) => bound.set_context(ctx),
        }
    }

    pub(crate) async fn call(
        &self,
        store: &mut Store<PluginState>,
        call: Call<'_>,
    ) -> wasmtime::Result<Reply> {
        match self {
            Instance::V0_1_0(bound) => bound.call(store, call).await,
        }
    }
}

fn unsupported(api: &str) -> PluginError {
    PluginError::UnsupportedApi(format!(
        "corral:plugin@{api} is not supported by this Corral (it runs {})",
        SUPPORTED_APIS.join(", ")
    ))
}

fn same_version(a: &str, b: &str) -> bool {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Checks the WIT version of the manifest against the one the component
/// exports, and both against [`SUPPORTED_APIS`]. Returns the version.
pub(crate) fn check_version(
    manifest: &Manifest,
    engine: &Engine,
    component: &Component,
) -> Result<&'static str, PluginError> {
    let prefix = format!("{PACKAGE}/hooks@");
    let exported: Vec<String> = component
        .component_type()
        .exports(engine)
        .filter_map(|(name, _)| name.strip_prefix(&prefix).map(str::to_string))
        .collect();
    let Some(built) = exported.first() else {
        return Err(PluginError::InvalidComponent(format!(
            "it does not export `{PACKAGE}/hooks` (is it a Corral plugin built with the corral-plugin SDK?)"
        )));
    };
    let supported = SUPPORTED_APIS
        .iter()
        .find(|v| same_version(v, &manifest.api));
    if !same_version(built, &manifest.api) {
        return Err(PluginError::UnsupportedApi(format!(
            "plugin.toml says api {} but the component was built against {PACKAGE}@{built}",
            manifest.api
        )));
    }
    match supported {
        Some(v) => Ok(v),
        None => Err(PluginError::UnsupportedApi(format!(
            "the plugin was built against {PACKAGE}@{built} (plugin.toml api {}), which this Corral does not run; it runs {}",
            manifest.api,
            SUPPORTED_APIS.join(", ")
        ))),
    }
}

/// WASI packages a plugin may import. They come with nothing of the
/// host's: no preopened directories, no environment, closed stdin.
const WASI_OFFERED: [&str; 5] = [
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
];

/// Checks every import of `component` against what the manifest asked
/// for and what Corral offers; the error names the interface. Returns the
/// imported interface names.
pub(crate) fn check_imports(
    manifest: &Manifest,
    api: &str,
    engine: &Engine,
    component: &Component,
) -> Result<Vec<String>, PluginError> {
    let mut names = Vec::new();
    for (name, _) in component.component_type().imports(engine) {
        check_import(manifest, api, name)?;
        names.push(name.to_string());
    }
    Ok(names)
}

fn check_import(manifest: &Manifest, api: &str, name: &str) -> Result<(), PluginError> {
    let refuse = |why: String| Err(PluginError::RefusedImport(why));
    if let Some(rest) = name.strip_prefix(&format!("{PACKAGE}/")) {
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        if !same_version(version, api) {
            return refuse(format!(
                "the component imports `{name}`, but the plugin's api is {api}"
            ));
        }
        let needs: &[Capability] = match interface {
            "types" => return Ok(()),
            "log" => &[Capability::Log],
            "kv" => &[Capability::Kv],
            "config" => &[Capability::Config],
            "models" => &[Capability::Generate, Capability::Embed],
            _ => {
                return refuse(format!(
                    "the component imports `{name}`, which corral:plugin@{api} does not have"
                ))
            }
        };
        if needs.iter().any(|c| manifest.requests(*c)) {
            return Ok(());
        }
        let wanted = needs
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(" or ");
        return refuse(format!(
            "the component imports `{name}` but plugin.toml does not ask for capability {wanted}"
        ));
    }
    if WASI_OFFERED.iter().any(|p| name.starts_with(p)) {
        return Ok(());
    }
    if name.starts_with("wasi:http/types@") || name.starts_with("wasi:http/outgoing-handler@") {
        if manifest.requests(Capability::Http) {
            return Ok(());
        }
        return refuse(format!(
            "the component imports `{name}` but plugin.toml does not ask for capability `http` (with `[http] hosts`)"
        ));
    }
    if name.starts_with("wasi:sockets/") || name.starts_with("wasi:http/") {
        return refuse(format!(
            "the component imports `{name}`; Corral gives plugins no socket access (outgoing HTTP is capability `http`)"
        ));
    }
    refuse(format!(
        "the component imports `{name}`, which Corral does not offer plugins"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(caps: &str) -> Manifest {
        Manifest::parse(&format!(
            "id = \"ab\"\nname = \"x\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\ncapabilities = [{caps}]"
        ))
        .unwrap()
    }

    #[test]
    fn imports_need_their_capability() {
        let m = manifest("\"log\"");
        assert!(check_import(&m, "0.1.0", "corral:plugin/log@0.1.0").is_ok());
        assert!(check_import(&m, "0.1.0", "corral:plugin/types@0.1.0").is_ok());
        let e = check_import(&m, "0.1.0", "corral:plugin/kv@0.1.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the component imports `corral:plugin/kv@0.1.0` but plugin.toml does not ask for capability `kv`"
        );
        let e = check_import(&m, "0.1.0", "corral:plugin/models@0.1.0").unwrap_err();
        assert!(e.to_string().contains("`generate` or `embed`"), "{e}");
        assert!(check_import(
            &manifest("\"embed\""),
            "0.1.0",
            "corral:plugin/models@0.1.0"
        )
        .is_ok());
        let e = check_import(&m, "0.1.0", "corral:plugin/log@0.9.0").unwrap_err();
        assert!(e.to_string().contains("api is 0.1.0"), "{e}");
    }

    #[test]
    fn outgoing_http_needs_its_capability() {
        let m = Manifest::parse(
            "id = \"ab\"\nname = \"x\"\nversion = \"1.0.0\"\napi = \"0.1.0\"\ncapabilities = [\"http\"]\n[http]\nhosts = [\"a.example\"]",
        )
        .unwrap();
        for ok in ["wasi:http/outgoing-handler@0.2.6", "wasi:http/types@0.2.0"] {
            assert!(check_import(&m, "0.1.0", ok).is_ok(), "{ok}");
        }
        let e = check_import(&m, "0.1.0", "wasi:sockets/tcp@0.2.6").unwrap_err();
        assert!(e.to_string().contains("no socket access"), "{e}");
    }

    #[test]
    fn only_harmless_wasi_is_offered() {
        let m = manifest("");
        for ok in [
            "wasi:io/streams@0.2.6",
            "wasi:cli/environment@0.2.0",
            "wasi:filesystem/preopens@0.2.3",
        ] {
            assert!(check_import(&m, "0.1.0", ok).is_ok(), "{ok}");
        }
        for (bad, want) in [
            (
                "wasi:http/outgoing-handler@0.2.6",
                "does not ask for capability `http`",
            ),
            ("wasi:sockets/tcp@0.2.6", "no socket access"),
            ("wasi:http/incoming-handler@0.2.6", "no socket access"),
            ("wasi:keyvalue/store@0.2.0", "does not offer plugins"),
            ("acme:spy/exfiltrate", "does not offer plugins"),
        ] {
            let e = check_import(&m, "0.1.0", bad).unwrap_err();
            assert!(
                e.to_string().contains(bad) && e.to_string().contains(want),
                "{e}"
            );
            assert_eq!(e.code(), "refused_import");
        }
    }
}
