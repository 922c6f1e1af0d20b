//! What can go wrong when plugins are inspected, installed, configured or
//! asked to serve a route.

/// An error of the plugin runtime. [`PluginError::code`] is a stable
/// machine-readable name and [`PluginError::http_status`] the status the
/// host answers with; the `Display` text is safe to show a technician.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// `plugin.toml` does not parse or breaks a rule.
    #[error("invalid plugin.toml: {0}")]
    InvalidManifest(String),

    /// The WIT version of the manifest or the component is not one this
    /// Corral runs, or the two disagree.
    #[error("{0}")]
    UnsupportedApi(String),

    /// The upload is not a WebAssembly component Corral can run.
    #[error("invalid component: {0}")]
    InvalidComponent(String),

    /// The component imports an interface the manifest did not ask for,
    /// or one Corral does not offer plugins.
    #[error("{0}")]
    RefusedImport(String),

    /// Saved settings do not fit the manifest's schema; one `field:
    /// problem` per entry.
    #[error("invalid plugin configuration: {}", .0.join("; "))]
    InvalidConfig(Vec<String>),

    /// No plugin with that id is installed.
    #[error("plugin `{0}` is not installed")]
    NotFound(String),

    /// The plugin serves no route for that method and path.
    #[error("plugin `{plugin}` has no route `{method} {path}`")]
    RouteNotFound {
        /// The plugin's id.
        plugin: String,
        /// The request's method.
        method: String,
        /// The request's path under the plugin.
        path: String,
    },

    /// The plugin is turned off (by a technician or after failing too
    /// often).
    #[error("plugin `{plugin}` is disabled: {reason}")]
    Disabled {
        /// The plugin's id.
        plugin: String,
        /// Why.
        reason: String,
    },

    /// A request to a plugin route is larger than the runtime passes on.
    #[error("{0}")]
    PayloadTooLarge(String),

    /// The plugin trapped, ran out of time or memory, or answered with
    /// something invalid.
    #[error("plugin `{plugin}` failed: {reason}")]
    PluginFailed {
        /// The plugin's id.
        plugin: String,
        /// What happened.
        reason: String,
    },

    /// The runtime itself failed (the compile cache, the engine); details
    /// are in the log.
    #[error("plugin runtime error: {0}")]
    Internal(String),
}

impl PluginError {
    /// A stable, machine-readable name of the error.
    pub fn code(&self) -> &'static str {
        match self {
            PluginError::InvalidManifest(_) => "invalid_manifest",
            PluginError::UnsupportedApi(_) => "unsupported_api",
            PluginError::InvalidComponent(_) => "invalid_component",
            PluginError::RefusedImport(_) => "refused_import",
            PluginError::InvalidConfig(_) => "invalid_config",
            PluginError::NotFound(_) => "plugin_not_found",
            PluginError::RouteNotFound { .. } => "route_not_found",
            PluginError::Disabled { .. } => "plugin_disabled",
            PluginError::PayloadTooLarge(_) => "payload_too_large",
            PluginError::PluginFailed { .. } => "plugin_failed",
            PluginError::Internal(_) => "plugin_runtime_error",
        }
    }

    /// The HTTP status that fits the error.
    pub fn http_status(&self) -> u16 {
        match self {
            PluginError::InvalidManifest(_) | PluginError::InvalidComponent(_) => 400,
            PluginError::UnsupportedApi(_)
            | PluginError::RefusedImport(_)
            | PluginError::InvalidConfig(_) => 422,
            PluginError::NotFound(_) | PluginError::RouteNotFound { .. } => 404,
            PluginError::Disabled { .. } => 409,
            PluginError::PayloadTooLarge(_) => 413,
            PluginError::PluginFailed { .. } => 502,
            PluginError::Internal(_) => 500,
        }
    }
}

impl From<crate::manifest::ManifestError> for PluginError {
    fn from(e: crate::manifest::ManifestError) -> Self {
        PluginError::InvalidManifest(e.0)
    }
}
