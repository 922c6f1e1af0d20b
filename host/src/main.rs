//! The `corral` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use corral_host::config::{Config, FileConfig, Overrides};
use corral_sdk::Role;

/// Corral: a self-hosted LLM studio.
#[derive(Debug, Parser)]
#[command(name = "corral", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage accounts from the command line.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Serve one model of one backend library on a Unix socket (the host
    /// starts these itself when `model_workers` is on).
    Worker {
        /// The backend's shared library.
        #[arg(long)]
        library: PathBuf,
        /// The Unix socket to listen on.
        #[arg(long)]
        socket: PathBuf,
    },
    /// Run models for a Corral host on this machine: a worker node. The
    /// host registers it with its URL and token (`POST /api/nodes`).
    Node(NodeArgs),
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// Address to listen on, e.g. 0.0.0.0:7000 (serve TLS with --tls-cert
    /// and --tls-key, or put a TLS reverse proxy in front, when the network
    /// is not trusted).
    #[arg(long, env = "CORRAL_NODE_LISTEN")]
    listen: SocketAddr,
    /// Serve HTTPS with this PEM certificate (chain), e.g. a self-signed
    /// one; the node prints its SHA-256 fingerprint for the host to pin.
    #[arg(long, env = "CORRAL_NODE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "CORRAL_NODE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A file holding the token the host must send (its first line, at
    /// least 16 characters); or set CORRAL_NODE_TOKEN.
    #[arg(long, env = "CORRAL_NODE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The folder of model files the host may load by name.
    #[arg(long, env = "CORRAL_NODE_MODELS_DIR")]
    models_dir: PathBuf,
    /// Directory of backend libraries [default: the executable's directory].
    #[arg(long, env = "CORRAL_BACKENDS_DIR")]
    backends_dir: Option<PathBuf>,
    /// A private folder for the workers' sockets [default: ./node-data].
    #[arg(long, env = "CORRAL_DATA_DIR", default_value = "./node-data")]
    data_dir: PathBuf,
    /// Seconds a generation may go without progress before its worker is
    /// killed.
    #[arg(long, default_value_t = 60.0)]
    stall_secs: f64,
    /// Seconds a host may go unheard before the models it placed are
    /// freed (a host asks for the node's health every second).
    #[arg(long, default_value_t = 30.0)]
    lease_secs: f64,
}

/// The node's token: from `--token-file`, else `CORRAL_NODE_TOKEN`.
fn node_token(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned(),
        None => std::env::var("CORRAL_NODE_TOKEN").context(
            "no token: pass --token-file FILE or set CORRAL_NODE_TOKEN (e.g. `openssl rand -hex 32`)",
        )?,
    };
    Ok(token)
}

async fn run_node(args: NodeArgs) -> anyhow::Result<()> {
    let token = node_token(args.token_file.as_deref())?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let identity = corral_host::tls::Identity::load(cert, key)?;
            // A renewal is served without a restart (a pinned node then
            // needs its new fingerprint on the host).
            corral_host::tls::watch(identity.clone());
            let shown = corral_host::tls::show(&identity.fingerprint());
            let config = corral_host::tls::server_config(identity)?;
            tracing::info!(fingerprint = %shown, "serving TLS");
            println!("TLS certificate SHA-256 fingerprint: {shown}");
            Some(config)
        }
        _ => None,
    };
    let backends_dir = Config {
        backends_dir: args.backends_dir,
        ..Config::default()
    }
    .backends_dir();
    let backends = corral_host::inference::backends::BackendSet::discover(&backends_dir);
    for problem in backends.problems() {
        tracing::warn!("{problem}");
    }
    anyhow::ensure!(
        !backends.names().is_empty(),
        "no backend library in {}",
        backends_dir.display()
    );
    corral_host::store::secure_data_dir(&args.data_dir)
        .with_context(|| format!("preparing {}", args.data_dir.display()))?;
    anyhow::ensure!(
        (0.5..=corral_host::config::DAY_SECS as f64).contains(&args.stall_secs),
        "--stall-secs must be 0.5 to 86400 (a day)"
    );
    anyhow::ensure!(
        (10.0..=86_400.0).contains(&args.lease_secs),
        "--lease-secs must be between 10 and 86400"
    );
    let backends = corral_host::inference::isolated::in_workers(
        backends,
        &args.data_dir,
        std::time::Duration::from_secs_f64(args.stall_secs),
    )?;
    corral_host::inference::node::run(
        args.listen,
        &token,
        backends,
        &args.models_dir,
        std::time::Duration::from_secs_f64(args.lease_secs),
        tls,
    )
    .await
}

/// Where configuration and data come from (shared by `serve` and `admin`).
#[derive(Debug, Args)]
struct StoreArgs {
    /// TOML configuration file.
    #[arg(long, env = "CORRAL_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the embedded store and other data [default: ./data].
    #[arg(long, env = "CORRAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A mongodb:// URL; the embedded SQLite store when absent.
    #[arg(long, env = "CORRAL_DATABASE")]
    database: Option<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "CORRAL_BIND")]
    bind: Option<SocketAddr>,
    /// Serve HTTPS with this PEM certificate (chain) and --tls-key, e.g.
    /// Let's Encrypt's fullchain.pem; a renewal is picked up by itself (or
    /// at once on SIGHUP).
    #[arg(long, env = "CORRAL_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "CORRAL_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Log JSON lines instead of text.
    #[arg(long, env = "CORRAL_LOG_JSON")]
    log_json: Option<bool>,
    /// Directory of backend libraries [default: the executable's directory].
    #[arg(long, env = "CORRAL_BACKENDS_DIR")]
    backends_dir: Option<PathBuf>,
    /// A GGUF file to register as the demo model `gemma-3-270m` on the
    /// first start that has one (scripts/run.sh passes the fetched file).
    #[arg(long, env = "CORRAL_SERVE_DEMO_MODEL")]
    demo_model: Option<PathBuf>,
    /// Serve the web UI from this folder (a `web/dist` build) instead of
    /// the copy embedded in the binary.
    #[arg(long, env = "CORRAL_WEB_DIR")]
    web_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an account. The password is read from standard input with
    /// `--password-stdin`, else prompted for on the terminal.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        username: String,
        /// admin, technician or user.
        #[arg(long)]
        role: Role,
        /// Prefer the prompt or `--password-stdin`: a password on the
        /// command line can end up in shell history and process lists.
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from standard input (its first line, without
        /// the line break), e.g. `printf '%s\n' "$PW" | corral admin create
        /// ... --password-stdin`; for scripts and containers.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        display_name: Option<String>,
    },
}

/// The configuration: the file `store` names, then `overrides` (from the
/// environment and flags), then the store's own flags.
fn resolve(store: &StoreArgs, overrides: Overrides) -> anyhow::Result<Config> {
    let file = match &store.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    Config::resolve(
        file,
        Overrides {
            data_dir: store.data_dir.clone(),
            database: store.database.clone(),
            ..overrides
        },
    )
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = resolve(
                &args.store,
                Overrides {
                    bind: args.bind,
                    tls_cert: args.tls_cert,
                    tls_key: args.tls_key,
                    log_json: args.log_json,
                    backends_dir: args.backends_dir,
                    demo_model: args.demo_model,
                    web_dir: args.web_dir,
                    ..Overrides::default()
                },
            )?;
            init_logging(config.log_json);
            corral_host::server::serve(config).await
        }
        Command::Openapi => {
            print!("{}", corral_host::openapi::spec_json());
            Ok(())
        }
        Command::Worker { library, socket } => {
            init_logging(false);
            corral_host::inference::worker::run(&library, &socket).await
        }
        Command::Node(args) => {
            init_logging(false);
            run_node(args).await
        }
        Command::Admin {
            command:
                AdminCommand::Create {
                    store,
                    username,
                    role,
                    password,
                    password_stdin,
                    display_name,
                },
        } => {
            let config = resolve(&store, Overrides::default())?;
            let password = match password {
                Some(p) => p,
                None if password_stdin => read_password_line(std::io::stdin().lock())?,
                None => prompt_password()?,
            };
            let store =
                corral_host::store::open(config.database.as_deref(), &config.data_dir).await?;
            let user = corral_host::accounts::create_account(
                store.as_ref(),
                &username,
                display_name.as_deref(),
                role,
                password,
            )
            .await?;
            println!(
                "Created {} `{}` (id {}).",
                user.role, user.username, user.id
            );
            Ok(())
        }
    }
}

/// The longest line `--password-stdin` reads; longer is refused (no valid
/// password is that long).
const MAX_PASSWORD_LINE: u64 = 4096;

/// The first line of `input`, its line break (`\n` or `\r\n`) removed.
fn read_password_line(input: impl std::io::BufRead) -> anyhow::Result<String> {
    use std::io::BufRead as _;
    let mut line = String::new();
    input
        .take(MAX_PASSWORD_LINE + 2)
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    if let Some(rest) = line.strip_suffix('\n') {
        line.truncate(rest.strip_suffix('\r').unwrap_or(rest).len());
    }
    anyhow::ensure!(
        line.len() as u64 <= MAX_PASSWORD_LINE,
        "the password on standard input is too long"
    );
    anyhow::ensure!(
        !line.is_empty(),
        "no password on standard input (--password-stdin reads its first line)"
    );
    Ok(line)
}

fn prompt_password() -> anyhow::Result<String> {
    anyhow::ensure!(
        std::io::IsTerminal::is_terminal(&std::io::stdin()),
        "no password given and no terminal to prompt for one: pipe it in with \
         --password-stdin (e.g. `printf '%s\\n' \"$PASSWORD\" | corral admin create ... \
         --password-stdin`)"
    );
    let first = rpassword::prompt_password("Password: ").context("reading the password")?;
    let second = rpassword::prompt_password("Repeat: ").context("reading the password")?;
    anyhow::ensure!(first == second, "the passwords differ");
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_the_first_line_without_its_break() {
        let read = |s: &str| read_password_line(s.as_bytes());
        assert_eq!(read("correct horse\n").unwrap(), "correct horse");
        assert_eq!(
            read("correct horse\r\nsecond line\n").unwrap(),
            "correct horse"
        );
        assert_eq!(read("no line break").unwrap(), "no line break");
        assert_eq!(read(" spaces kept \n").unwrap(), " spaces kept ");
        assert!(read("").is_err());
        assert!(read("\n").is_err());
        assert!(read(&"x".repeat(5000)).is_err());
    }
}
