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
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an account (prompts for the password when not given).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        username: String,
        /// admin, technician or user.
        #[arg(long)]
        role: Role,
        /// Prefer the prompt: a password on the command line can end up in
        /// shell history.
        #[arg(long)]
        password: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
    },
}

fn resolve(
    store: &StoreArgs,
    bind: Option<SocketAddr>,
    log_json: Option<bool>,
    backends_dir: Option<PathBuf>,
    demo_model: Option<PathBuf>,
) -> anyhow::Result<Config> {
    let file = match &store.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    Config::resolve(
        file,
        Overrides {
            bind,
            data_dir: store.data_dir.clone(),
            database: store.database.clone(),
            log_json,
            backends_dir,
            demo_model,
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
                args.bind,
                args.log_json,
                args.backends_dir,
                args.demo_model,
            )?;
            init_logging(config.log_json);
            corral_host::server::serve(config).await
        }
        Command::Openapi => {
            print!("{}", corral_host::openapi::spec_json());
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::Create {
                    store,
                    username,
                    role,
                    password,
                    display_name,
                },
        } => {
            let config = resolve(&store, None, None, None, None)?;
            let password = match password {
                Some(p) => p,
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

fn prompt_password() -> anyhow::Result<String> {
    let first = rpassword::prompt_password("Password: ").context("reading the password")?;
    let second = rpassword::prompt_password("Repeat: ").context("reading the password")?;
    anyhow::ensure!(first == second, "the passwords differ");
    Ok(first)
}
