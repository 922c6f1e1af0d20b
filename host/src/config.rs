//! Host configuration: a TOML file, then `CORRAL_*` environment variables,
//! then command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Seconds in a day: the longest wait a setting may ask for.
pub const DAY_SECS: u64 = 24 * 60 * 60;

/// What `corral serve` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub bind: SocketAddr,
    /// Serve HTTPS with this PEM certificate (chain) and `tls_key`; read
    /// again when the files change or on SIGHUP. `None`: plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// `Strict-Transport-Security: max-age` sent over HTTPS (Corral's own,
    /// or a trusted proxy's), in seconds; 0 sends none. It covers the host
    /// name only, not its subdomains.
    pub hsts_max_age_secs: u64,
    pub data_dir: PathBuf,
    /// `None`: the embedded SQLite store in `data_dir`.
    pub database: Option<String>,
    /// Lifetime of access tokens, in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of refresh tokens, in days.
    pub refresh_token_ttl_days: u64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Log as JSON lines instead of text.
    pub log_json: bool,
    /// Where backend libraries (`libcorral_*.so`) are; default: the
    /// directory of the `corral` executable.
    pub backends_dir: Option<PathBuf>,
    /// Run each loaded model in a worker process of its own (`corral
    /// worker`, the default), so that a crash in a backend ends only that
    /// model's worker; off: models run inside the host process.
    pub model_workers: bool,
    /// With `model_workers`: a worker whose engine makes no progress on a
    /// generation for this many seconds is stuck, and is killed (its
    /// requests end as if it had crashed).
    pub model_worker_stall_secs: f64,
    /// Unload a model unused for this many seconds.
    pub idle_unload_secs: u64,
    /// Memory all loaded models may use together, in MiB; 0 = no limit.
    pub memory_budget_mb: u64,
    /// Models loaded at once; 0 = no limit.
    pub max_loaded_models: usize,
    /// Requests that may wait per model.
    pub queue_max_waiting: usize,
    /// Generations one user may have running or waiting.
    pub per_user_generations: usize,
    /// A GGUF file registered as the demo model on the first start that
    /// has one (a technician may remove it afterwards for good).
    pub demo_model: Option<PathBuf>,

    // Limits: how long a request may take, how many connections and how
    // many records one account may hold.
    /// Seconds an ordinary request may take to be answered; streamed
    /// answers, WebSockets and event streams are not limited. 0: no limit.
    pub request_timeout_secs: u64,
    /// Seconds a connection may take to send a request's headers, and may
    /// stay idle between requests.
    pub header_read_timeout_secs: u64,
    /// Connections served at once; beyond it, new ones wait to be accepted.
    pub max_connections: usize,
    /// Chats one account may hold.
    pub max_chats_per_user: u64,
    /// Open (not resolved or closed) tickets one account may hold.
    pub max_open_tickets_per_user: u64,
    /// Personal API keys one account may hold.
    pub max_api_keys_per_user: u64,
    /// Chat WebSockets one account may have open at once.
    pub max_websockets_per_user: usize,
    /// Chat WebSockets all accounts together may have open at once (each
    /// holds a connection): half of `max_connections` unless set.
    pub max_websockets: usize,
    /// Plugin route requests one account may have under way at once.
    pub per_user_plugin_requests: usize,
    /// Messages (questions and answers) one chat may hold.
    pub max_messages_per_chat: u64,
    /// Replies one ticket may hold, and staff notes apart.
    pub max_comments_per_ticket: u64,

    // Models: where local sources may lie and what downloads may reach.
    /// Folders a local model source must lie in (after resolving symbolic
    /// links); `None`: the data dir's `models/`. The demo model file itself
    /// is always allowed.
    pub model_dirs: Option<Vec<PathBuf>>,
    /// Let downloads reach private addresses (10/8, 172.16/12, 192.168/16,
    /// 100.64/10, fc00::/7), e.g. a mirror on the LAN.
    pub download_allow_private: bool,
    /// Origins (`scheme://host:port`) downloads may fetch from even though
    /// they are loopback or private addresses: a local mirror.
    pub download_allowed_origins: Vec<String>,
    /// Largest file a download may bring, in bytes.
    pub max_download_bytes: u64,
    /// Let remote upstreams (models of the `openai` backend) be private
    /// addresses, e.g. a vLLM server on the LAN.
    pub upstream_allow_private: bool,
    /// Origins (`scheme://host:port`) upstreams may be at even though they
    /// are loopback or private addresses: a llama-server or Ollama on this
    /// machine.
    pub upstream_allowed_origins: Vec<String>,
    /// Origins (`scheme://host:port`) worker nodes may be at even though
    /// they are loopback or link-local addresses. Private addresses (a
    /// node on the LAN) are always allowed.
    pub node_allowed_origins: Vec<String>,

    // Data: shutting down without losing answers.
    /// Seconds a shutdown waits for running answers to finish before it
    /// stops them (they are stored as `cancelled` with their text).
    pub shutdown_grace_secs: u64,

    // Accounts: who a request comes from.
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For`
    /// names the client; from any other peer the header is ignored.
    pub trusted_proxies: Vec<crate::client_addr::IpNet>,

    /// A folder holding the built web UI (`web/dist`), served instead of
    /// the copy embedded in the binary.
    pub web_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            hsts_max_age_secs: 63_072_000,
            data_dir: PathBuf::from("./data"),
            database: None,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_days: 30,
            max_body_bytes: 1024 * 1024,
            log_json: false,
            backends_dir: None,
            model_workers: true,
            model_worker_stall_secs: 60.0,
            idle_unload_secs: 15 * 60,
            memory_budget_mb: 0,
            max_loaded_models: 0,
            queue_max_waiting: 64,
            per_user_generations: 4,
            demo_model: None,
            request_timeout_secs: 60,
            header_read_timeout_secs: 15,
            max_connections: 1024,
            max_chats_per_user: 10_000,
            max_open_tickets_per_user: 100,
            max_api_keys_per_user: 50,
            max_websockets_per_user: 8,
            max_websockets: 512,
            per_user_plugin_requests: 8,
            max_messages_per_chat: 2_000,
            max_comments_per_ticket: 500,
            model_dirs: None,
            download_allow_private: false,
            download_allowed_origins: Vec::new(),
            max_download_bytes: 200 * 1024 * 1024 * 1024,
            upstream_allow_private: false,
            upstream_allowed_origins: Vec::new(),
            node_allowed_origins: Vec::new(),
            shutdown_grace_secs: 10,
            trusted_proxies: Vec::new(),
            web_dir: None,
        }
    }
}

/// The TOML file's shape; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub hsts_max_age_secs: Option<u64>,
    pub data_dir: Option<PathBuf>,
    pub database: Option<String>,
    pub access_token_ttl_secs: Option<u64>,
    pub refresh_token_ttl_days: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub log_json: Option<bool>,
    pub backends_dir: Option<PathBuf>,
    pub model_workers: Option<bool>,
    pub model_worker_stall_secs: Option<f64>,
    pub idle_unload_secs: Option<u64>,
    pub memory_budget_mb: Option<u64>,
    pub max_loaded_models: Option<usize>,
    pub queue_max_waiting: Option<usize>,
    pub per_user_generations: Option<usize>,
    pub demo_model: Option<PathBuf>,
    // Limits.
    pub request_timeout_secs: Option<u64>,
    pub header_read_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub max_chats_per_user: Option<u64>,
    pub max_open_tickets_per_user: Option<u64>,
    pub max_api_keys_per_user: Option<u64>,
    pub max_websockets_per_user: Option<usize>,
    pub max_websockets: Option<usize>,
    pub per_user_plugin_requests: Option<usize>,
    pub max_messages_per_chat: Option<u64>,
    pub max_comments_per_ticket: Option<u64>,
    // Models.
    pub model_dirs: Option<Vec<PathBuf>>,
    pub download_allow_private: Option<bool>,
    pub download_allowed_origins: Option<Vec<String>>,
    pub upstream_allow_private: Option<bool>,
    pub upstream_allowed_origins: Option<Vec<String>>,
    pub node_allowed_origins: Option<Vec<String>>,
    pub max_download_bytes: Option<u64>,
    // Data.
    pub shutdown_grace_secs: Option<u64>,
    // Accounts.
    pub trusted_proxies: Option<Vec<crate::client_addr::IpNet>>,
    // Web UI.
    pub web_dir: Option<PathBuf>,
}

impl FileConfig {
    /// Reads a TOML config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

/// Values from the environment or flags (clap merges those two: a flag wins
/// over its `CORRAL_*` variable).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub bind: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub database: Option<String>,
    pub log_json: Option<bool>,
    pub backends_dir: Option<PathBuf>,
    pub demo_model: Option<PathBuf>,
    pub web_dir: Option<PathBuf>,
}

impl Config {
    /// Defaults, then the file, then the overrides.
    pub fn resolve(file: FileConfig, overrides: Overrides) -> anyhow::Result<Self> {
        let d = Config::default();
        let config = Config {
            bind: overrides.bind.or(file.bind).unwrap_or(d.bind),
            tls_cert: overrides.tls_cert.or(file.tls_cert),
            tls_key: overrides.tls_key.or(file.tls_key),
            hsts_max_age_secs: file.hsts_max_age_secs.unwrap_or(d.hsts_max_age_secs),
            data_dir: overrides.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            database: overrides
                .database
                .or(file.database)
                .filter(|s| !s.is_empty()),
            access_token_ttl_secs: file
                .access_token_ttl_secs
                .unwrap_or(d.access_token_ttl_secs),
            refresh_token_ttl_days: file
                .refresh_token_ttl_days
                .unwrap_or(d.refresh_token_ttl_days),
            max_body_bytes: file.max_body_bytes.unwrap_or(d.max_body_bytes),
            log_json: overrides.log_json.or(file.log_json).unwrap_or(d.log_json),
            backends_dir: overrides.backends_dir.or(file.backends_dir),
            model_workers: file.model_workers.unwrap_or(d.model_workers),
            model_worker_stall_secs: file
                .model_worker_stall_secs
                .unwrap_or(d.model_worker_stall_secs),
            idle_unload_secs: file.idle_unload_secs.unwrap_or(d.idle_unload_secs),
            memory_budget_mb: file.memory_budget_mb.unwrap_or(d.memory_budget_mb),
            max_loaded_models: file.max_loaded_models.unwrap_or(d.max_loaded_models),
            queue_max_waiting: file.queue_max_waiting.unwrap_or(d.queue_max_waiting),
            per_user_generations: file.per_user_generations.unwrap_or(d.per_user_generations),
            demo_model: overrides.demo_model.or(file.demo_model),
            request_timeout_secs: file.request_timeout_secs.unwrap_or(d.request_timeout_secs),
            header_read_timeout_secs: file
                .header_read_timeout_secs
                .unwrap_or(d.header_read_timeout_secs),
            max_connections: file.max_connections.unwrap_or(d.max_connections),
            max_chats_per_user: file.max_chats_per_user.unwrap_or(d.max_chats_per_user),
            max_open_tickets_per_user: file
                .max_open_tickets_per_user
                .unwrap_or(d.max_open_tickets_per_user),
            max_api_keys_per_user: file
                .max_api_keys_per_user
                .unwrap_or(d.max_api_keys_per_user),
            max_websockets_per_user: file
                .max_websockets_per_user
                .unwrap_or(d.max_websockets_per_user),
            max_websockets: file
                .max_websockets
                .unwrap_or((file.max_connections.unwrap_or(d.max_connections) / 2).max(1)),
            per_user_plugin_requests: file
                .per_user_plugin_requests
                .unwrap_or(d.per_user_plugin_requests),
            max_messages_per_chat: file
                .max_messages_per_chat
                .unwrap_or(d.max_messages_per_chat),
            max_comments_per_ticket: file
                .max_comments_per_ticket
                .unwrap_or(d.max_comments_per_ticket),
            model_dirs: file.model_dirs,
            download_allow_private: file
                .download_allow_private
                .unwrap_or(d.download_allow_private),
            download_allowed_origins: file
                .download_allowed_origins
                .map(|origins| {
                    origins
                        .iter()
                        .map(|o| crate::download::normalize_origin("download_allowed_origins", o))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
                .transpose()?
                .unwrap_or_default(),
            max_download_bytes: file.max_download_bytes.unwrap_or(d.max_download_bytes),
            upstream_allow_private: file
                .upstream_allow_private
                .unwrap_or(d.upstream_allow_private),
            upstream_allowed_origins: file
                .upstream_allowed_origins
                .map(|origins| {
                    origins
                        .iter()
                        .map(|o| crate::download::normalize_origin("upstream_allowed_origins", o))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
                .transpose()?
                .unwrap_or_default(),
            node_allowed_origins: file
                .node_allowed_origins
                .map(|origins| {
                    origins
                        .iter()
                        .map(|o| crate::download::normalize_origin("node_allowed_origins", o))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
                .transpose()?
                .unwrap_or_default(),
            shutdown_grace_secs: file.shutdown_grace_secs.unwrap_or(d.shutdown_grace_secs),
            trusted_proxies: file.trusted_proxies.unwrap_or(d.trusted_proxies),
            web_dir: overrides.web_dir.or(file.web_dir),
        };
        anyhow::ensure!(
            config.tls_cert.is_some() == config.tls_key.is_some(),
            "tls_cert and tls_key go together: give both to serve HTTPS, or neither"
        );
        // Upper bounds keep every instant computed from these in range.
        anyhow::ensure!(
            (30..=7 * DAY_SECS).contains(&config.access_token_ttl_secs),
            "access_token_ttl_secs must be 30 to 604800 (a week)"
        );
        anyhow::ensure!(
            (1..=3650).contains(&config.refresh_token_ttl_days),
            "refresh_token_ttl_days must be 1 to 3650"
        );
        anyhow::ensure!(
            config.shutdown_grace_secs <= DAY_SECS,
            "shutdown_grace_secs must be at most 86400 (a day)"
        );
        anyhow::ensure!(
            config.max_body_bytes >= 1024,
            "max_body_bytes must be at least 1024"
        );
        anyhow::ensure!(
            config.max_messages_per_chat >= 2 && config.max_comments_per_ticket >= 1,
            "max_messages_per_chat must be at least 2 (a question and its answer) and \
             max_comments_per_ticket at least 1"
        );
        anyhow::ensure!(
            config.queue_max_waiting >= 1
                && config.per_user_generations >= 1
                && config.per_user_plugin_requests >= 1,
            "queue_max_waiting, per_user_generations and per_user_plugin_requests must be at least 1"
        );
        anyhow::ensure!(
            config.model_dirs.iter().flatten().all(|d| d.is_absolute()),
            "model_dirs must be absolute paths"
        );
        anyhow::ensure!(
            (0.5..=DAY_SECS as f64).contains(&config.model_worker_stall_secs),
            "model_worker_stall_secs must be 0.5 to 86400 (a day)"
        );
        anyhow::ensure!(
            config.max_download_bytes >= 1,
            "max_download_bytes must be at least 1"
        );
        anyhow::ensure!(
            config.header_read_timeout_secs >= 1 && config.max_connections >= 1,
            "header_read_timeout_secs and max_connections must be at least 1"
        );
        anyhow::ensure!(
            (1..config.max_connections.max(2)).contains(&config.max_websockets),
            "max_websockets must be at least 1 and below max_connections, so that \
             open sockets leave connections for everything else"
        );
        Ok(config)
    }

    /// Where local model sources may lie: `model_dirs` (default: the data
    /// dir's `models/`) and the demo model file itself. Only the file, not
    /// its folder: a demo model named relative to the working directory
    /// would otherwise open that directory (`/` under a service manager).
    pub fn model_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self
            .model_dirs
            .clone()
            .unwrap_or_else(|| vec![self.data_dir.join("models")]);
        dirs.extend(self.demo_model.clone());
        dirs
    }

    /// Where the files of registered models may lie when one is loaded:
    /// [`Self::model_dirs`] and the data dir's `models/`, where downloads go.
    pub fn loadable_model_paths(&self) -> Vec<PathBuf> {
        let mut dirs = self.model_dirs();
        let downloads = self.data_dir.join("models");
        if !dirs.contains(&downloads) {
            dirs.push(downloads);
        }
        dirs
    }

    /// The backends directory in use.
    pub fn backends_dir(&self) -> PathBuf {
        self.backends_dir.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("."))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_sources_override_earlier_ones() {
        let file: FileConfig = toml::from_str(
            "bind = \"0.0.0.0:9000\"\ndata_dir = \"/var/lib/corral\"\nmax_body_bytes = 2048",
        )
        .unwrap();
        let overrides = Overrides {
            bind: Some("127.0.0.1:9100".parse().unwrap()),
            ..Overrides::default()
        };
        let config = Config::resolve(file, overrides).unwrap();
        assert_eq!(config.bind.port(), 9100);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/corral"));
        assert_eq!(config.max_body_bytes, 2048);
        assert_eq!(config.database, None);
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let file: FileConfig = toml::from_str("tls_cert = \"/etc/corral/cert.pem\"").unwrap();
        let alone = Config::resolve(file, Overrides::default()).unwrap_err();
        assert!(
            alone
                .to_string()
                .contains("tls_cert and tls_key go together"),
            "{alone}"
        );
        // A flag completes (or replaces) what the file says.
        let file: FileConfig = toml::from_str("tls_cert = \"/etc/corral/cert.pem\"").unwrap();
        let overrides = Overrides {
            tls_key: Some("/run/secrets/key.pem".into()),
            ..Overrides::default()
        };
        let config = Config::resolve(file, overrides).unwrap();
        assert_eq!(config.tls_cert, Some(PathBuf::from("/etc/corral/cert.pem")));
        assert_eq!(config.tls_key, Some(PathBuf::from("/run/secrets/key.pem")));
    }

    #[tokio::test]
    async fn a_demo_model_opens_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let demo = dir.path().join("demo.gguf");
        let sibling = dir.path().join("other.gguf");
        std::fs::write(&demo, b"GGUF").unwrap();
        std::fs::write(&sibling, b"GGUF").unwrap();
        let cwd = std::env::current_dir().unwrap();
        let here = cwd.join("Cargo.toml");
        for named in [demo.clone(), PathBuf::from("demo.gguf")] {
            let config = Config {
                data_dir: dir.path().join("data"),
                demo_model: Some(named.clone()),
                ..Config::default()
            };
            let dirs = config.model_dirs();
            let source = |p: &Path| p.to_string_lossy().into_owned();
            if named.is_absolute() {
                let found = crate::registry::resolve_local(&dirs, &source(&demo)).await;
                assert_eq!(found.unwrap(), demo.canonicalize().unwrap());
            }
            for outside in [&sibling, &here, &cwd] {
                assert!(
                    crate::registry::resolve_local(&dirs, &source(outside))
                        .await
                        .is_err(),
                    "{named:?} opened {outside:?}"
                );
            }
        }
    }

    #[test]
    fn a_stall_limit_that_would_kill_every_worker_is_refused() {
        for bad in ["0", "0.1", "-5", "nan", "inf"] {
            let file: FileConfig =
                toml::from_str(&format!("model_worker_stall_secs = {bad}")).unwrap();
            let err = Config::resolve(file, Overrides::default()).unwrap_err();
            assert!(
                err.to_string().contains("model_worker_stall_secs"),
                "{bad}: {err}"
            );
        }
        let file: FileConfig = toml::from_str("model_worker_stall_secs = 2.5").unwrap();
        let config = Config::resolve(file, Overrides::default()).unwrap();
        assert_eq!(config.model_worker_stall_secs, 2.5);
    }

    #[test]
    fn lifetimes_and_waits_past_their_range_are_refused() {
        for (line, key) in [
            ("model_worker_stall_secs = 1e30", "model_worker_stall_secs"),
            (
                "access_token_ttl_secs = 9000000000000",
                "access_token_ttl_secs",
            ),
            (
                "refresh_token_ttl_days = 100000000",
                "refresh_token_ttl_days",
            ),
            (
                "shutdown_grace_secs = 9223372036854775807",
                "shutdown_grace_secs",
            ),
        ] {
            let file: FileConfig = toml::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            let err = Config::resolve(file, Overrides::default()).unwrap_err();
            assert!(err.to_string().contains(key), "{line}: {err}");
        }
        let file: FileConfig = toml::from_str(
            "access_token_ttl_secs = 604800\nrefresh_token_ttl_days = 3650\nshutdown_grace_secs = 86400",
        )
        .unwrap();
        Config::resolve(file, Overrides::default()).unwrap();
    }

    #[test]
    fn websockets_leave_connections_for_everything_else() {
        let resolve =
            |text: &str| Config::resolve(toml::from_str(text).unwrap(), Overrides::default());
        assert_eq!(resolve("").unwrap().max_websockets, 512);
        assert_eq!(resolve("max_connections = 10").unwrap().max_websockets, 5);
        assert_eq!(resolve("max_websockets = 900").unwrap().max_websockets, 900);
        for bad in [
            "max_websockets = 0",
            "max_websockets = 1024",
            "max_connections = 10\nmax_websockets = 10",
        ] {
            let err = resolve(bad).unwrap_err();
            assert!(err.to_string().contains("max_websockets"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("bnid = \"x\"").is_err());
    }
}
