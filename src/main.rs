//! The `sessiond` command line: parses arguments and hands over to the library.

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use sessiond::config::ServeArgs;
use sessiond::domain::password::HashCost;
use sessiond::domain::Role;
use sessiond::sessions::{Policy, Sessions};
use sessiond::store::StoreUrl;

#[derive(Parser)]
#[command(
    name = "sessiond",
    version,
    about = "Session management service (gRPC + REST shim)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC service (and the REST shim).
    Serve(Box<ServeArgs>),
    /// Run the REST shim alone, in front of any sessiond.
    Rest {
        /// The sessiond gRPC endpoint, e.g. http://127.0.0.1:50051.
        #[arg(long, env = "SESSIOND_UPSTREAM")]
        upstream: String,
        /// REST listen address; port 0 picks a free port.
        #[arg(long, env = "SESSIOND_REST_ADDR", default_value = "127.0.0.1:8080")]
        rest_addr: std::net::SocketAddr,
        /// CA certificate (PEM) that an https:// upstream's certificate must chain to.
        #[arg(long, env = "SESSIOND_UPSTREAM_CA")]
        upstream_ca: Option<std::path::PathBuf>,
        /// PEM certificate chain: with --tls-key, the shim speaks HTTPS.
        #[arg(long, env = "SESSIOND_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, env = "SESSIOND_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// Base URL clients use to reach this shim behind a proxy (Informatica's serverUrl).
        #[arg(long, env = "SESSIOND_PUBLIC_URL")]
        public_url: Option<String>,
    },
    /// User administration on a store.
    User {
        /// Store: sqlite://PATH or redis://HOST:PORT/.
        #[arg(
            long,
            env = "SESSIOND_STORE",
            default_value = "sqlite://sessiond.db",
            global = true
        )]
        store: String,
        /// Argon2id memory cost for new password hashes, KiB.
        #[arg(long, env = "SESSIOND_ARGON2_MEMORY_KIB", global = true)]
        argon2_memory_kib: Option<u32>,
        /// Argon2id passes for new password hashes.
        #[arg(long, env = "SESSIOND_ARGON2_ITERATIONS", global = true)]
        argon2_iterations: Option<u32>,
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user; the password is read from stdin (or prompted on a terminal).
    Add {
        username: String,
        #[arg(long)]
        org: String,
        #[arg(long, default_value = "user")]
        role: Role,
    },
    /// List users.
    List,
    /// Set a user's password (read from stdin, or prompted on a terminal);
    /// every session of the user ends, unless --keep-sessions.
    Passwd {
        username: String,
        /// Leave the user's live sessions alone.
        #[arg(long)]
        keep_sessions: bool,
    },
    /// Disable a user: its live sessions end and it can no longer log in.
    Disable { username: String },
    /// Enable a disabled user again.
    Enable { username: String },
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("password: ")?;
        let again = rpassword::prompt_password("again: ")?;
        if first != again {
            bail!("passwords differ");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("no password on stdin");
    }
    Ok(password)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn user_command(store: &str, cost: HashCost, action: UserAction) -> anyhow::Result<()> {
    let url: StoreUrl = store.parse().map_err(anyhow::Error::msg)?;
    let store = sessiond::store::open(&url)
        .await
        .with_context(|| format!("opening {url}"))?;
    let policy = Policy {
        hash_cost: cost,
        ..Policy::default()
    };
    let sessions = Arc::new(Sessions::new(store, policy)?);
    match action {
        UserAction::Add {
            username,
            org,
            role,
        } => {
            let password = read_password()?;
            let user = sessions.add_user(&username, &org, role, &password).await?;
            println!(
                "added {} (org {}, role {})",
                user.username, user.org, user.role
            );
        }
        UserAction::List => {
            println!("{:<40} {:<24} {:<6} status", "username", "org", "role");
            for u in sessions.store().list_users().await? {
                let status = if u.disabled { "disabled" } else { "active" };
                println!(
                    "{:<40} {:<24} {:<6} {status}",
                    u.username,
                    u.org,
                    u.role.as_str()
                );
            }
        }
        UserAction::Passwd {
            username,
            keep_sessions,
        } => {
            let password = read_password()?;
            let ended = sessions
                .set_password(&username, &password, keep_sessions)
                .await?;
            println!("password changed for {username}; {ended} session(s) ended");
        }
        UserAction::Disable { username } => {
            sessions.set_disabled(&username, true).await?;
            println!("disabled {username}; its sessions have ended");
        }
        UserAction::Enable { username } => {
            sessions.set_disabled(&username, false).await?;
            println!("enabled {username}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = (*args).into_config()?;
            sessiond::server::serve_until(config, shutdown_signal()).await?;
        }
        Command::Rest {
            upstream,
            rest_addr,
            upstream_ca,
            tls_cert,
            tls_key,
            public_url,
        } => {
            let tls = tls_cert
                .zip(tls_key)
                .map(|(cert, key)| sessiond::tls::TlsFiles { cert, key });
            sessiond::server::serve_rest_until(
                rest_addr,
                &upstream,
                upstream_ca.as_deref(),
                tls.as_ref(),
                public_url.as_deref(),
                shutdown_signal(),
            )
            .await?
        }
        Command::User {
            store,
            argon2_memory_kib,
            argon2_iterations,
            action,
        } => {
            let mut cost = HashCost::default();
            cost.memory_kib = argon2_memory_kib.unwrap_or(cost.memory_kib);
            cost.iterations = argon2_iterations.unwrap_or(cost.iterations);
            user_command(&store, cost, action).await?
        }
    }
    Ok(())
}
