//! The `sessiond` binary: parses the command line (`sessiond::cli`), layers
//! the settings, and hands over to the library.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::ArgMatches;
use sessiond::cli::{
    BackupArgs, Command, EdgeArgs, HealthArgs, KeysAction, KeysArgs, RestArgs, ServeArgs,
    UserAction, UserArgs,
};
use sessiond::config::Settings;
use sessiond::domain::Error;
use sessiond::sessions::Sessions;
use sessiond::store::{OpenOptions, StoreUrl};

// The server allocates per call (replies, keys, messages): glibc's
// allocator spent 40 % of a replica's CPU carrying out a bulk ending on
// Redis, and about a quarter of each Redis validation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when first polled: a SIGTERM that arrives while the server is
/// still starting must drain it, not kill it.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(args: &ServeArgs, m: &ArgMatches) -> anyhow::Result<()> {
    let signal = shutdown_signal();
    let settings = Settings::layered(args, m, args.config.as_deref())?;
    let tracing = sessiond::logging::init(
        settings.log_format.unwrap_or_default(),
        settings.otlp_endpoint.as_deref(),
    )?;
    let served = match settings.serve_config() {
        Ok(config) => sessiond::server::serve_until(config, signal)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    // After the drain: the spans of the last calls are exported too.
    if let Some(tracing) = tracing {
        tracing.shutdown().await;
    }
    served
}

async fn rest(args: &RestArgs, m: &ArgMatches) -> anyhow::Result<()> {
    let signal = shutdown_signal();
    let s = Settings::layered(args, m, args.config.as_deref())?;
    let tracing =
        sessiond::logging::init(s.log_format.unwrap_or_default(), s.otlp_endpoint.as_deref())?;
    let served = rest_until(&s, signal).await;
    if let Some(tracing) = tracing {
        tracing.shutdown().await;
    }
    served
}

async fn edge(args: &EdgeArgs, m: &ArgMatches) -> anyhow::Result<()> {
    let signal = shutdown_signal();
    let s = Settings::layered(args, m, args.config.as_deref())?;
    sessiond::logging::init(s.log_format.unwrap_or_default(), None)?;
    let running = sessiond::edge::start(s.edge_config()?).await?;
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        signal.await;
        let _ = stop.send(true);
    });
    running.wait().await?;
    Ok(())
}

async fn rest_until(
    s: &Settings,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Some(upstream) = s.upstream.clone() else {
        bail!(
            "sessiond rest needs --upstream (or SESSIOND_UPSTREAM, or upstream in the config file)"
        );
    };
    let rest_addr = match &s.rest_addr {
        Some(a) => sessiond::config::parse_rest_addr(a)?
            .context("sessiond rest cannot run with --rest-addr off")?,
        None => bail!("sessiond rest needs --rest-addr"),
    };
    sessiond::server::serve_rest_until(
        rest_addr,
        &upstream,
        s.upstream_ca.as_deref(),
        s.tls_files()?.as_ref(),
        s.public_url()?.as_deref(),
        sessiond::server::ShimListeners {
            connections: s.conn_limits()?,
            metrics_addr: s.metrics_addr,
        },
        signal,
    )
    .await?;
    Ok(())
}

async fn user(args: &UserArgs, m: &ArgMatches) -> anyhow::Result<()> {
    let s = Settings::layered(args, m, args.config.as_deref())?;
    let url = s.store_url()?;
    let create = matches!(args.action, UserAction::Add { create: true, .. });
    let options = OpenOptions {
        must_exist: !create,
        ..s.store_options()?
    };
    let store = match sessiond::store::open_with(&url, &options).await {
        Ok(store) => store,
        Err(Error::Unavailable(why))
            if !create && matches!(url, StoreUrl::SqliteFile(ref p) if !p.exists()) =>
        {
            bail!("{why}: pass --store or --config to name an existing store, or `sessiond user add --create …` to start a new one")
        }
        Err(e) => return Err(e).with_context(|| format!("opening store {url}")),
    };
    let sessions = Arc::new(Sessions::new(store, s.policy()?)?);
    run_user_action(&args.action, &sessions, &url).await
}

/// One `sessiond user` action against the opened store.
async fn run_user_action(
    action: &UserAction,
    sessions: &Sessions,
    url: &StoreUrl,
) -> anyhow::Result<()> {
    let in_store = |name: &str| format!("user {name} in store {url}");
    match action {
        UserAction::Add {
            username,
            org,
            role,
            ..
        } => {
            let password = read_password()?;
            let user = sessions
                .add_user(username, org, *role, &password)
                .await
                .with_context(|| format!("cannot add {}", in_store(username)))?;
            println!(
                "added {} (org {}, role {}) to {url}",
                user.username, user.org, user.role
            );
        }
        UserAction::List => {
            println!("{:<40} {:<24} {:<6} status", "username", "org", "role");
            for u in sessions
                .store()
                .list_users()
                .await
                .with_context(|| format!("listing users of {url}"))?
            {
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
                .set_password(username, &password, *keep_sessions)
                .await
                .with_context(|| format!("cannot change the password of {}", in_store(username)))?;
            println!("password changed for {username}; {ended} session(s) ended");
        }
        UserAction::Disable { username } => {
            sessions
                .set_disabled(username, true)
                .await
                .with_context(|| format!("cannot disable {}", in_store(username)))?;
            println!("disabled {username}; its sessions have ended");
        }
        UserAction::Enable { username } => {
            sessions
                .set_disabled(username, false)
                .await
                .with_context(|| format!("cannot enable {}", in_store(username)))?;
            println!("enabled {username}");
        }
        UserAction::Delete { username } => {
            sessions
                .delete_user(username)
                .await
                .with_context(|| format!("cannot delete {}", in_store(username)))?;
            println!("deleted {username}; its sessions have ended");
        }
    }
    Ok(())
}

fn backup(args: &BackupArgs, m: &ArgMatches) -> anyhow::Result<()> {
    let s = Settings::layered(args, m, args.config.as_deref())?;
    let url = s.store_url()?;
    let StoreUrl::SqliteFile(path) = &url else {
        bail!("sessiond backup copies a SQLite store (sqlite://PATH), not {url}; back up Redis with its own persistence (RDB/AOF)");
    };
    sessiond::store::sqlite::backup(path, &args.to)?;
    println!("backed up {url} to {}", args.to.display());
    Ok(())
}

/// `sessiond keys`: rotate or list the Shared Signals signing keys kept in
/// the store (a key given by `--ssf-signing-key-file` is the operator's to
/// rotate).
async fn keys(args: &KeysArgs, m: &ArgMatches) -> anyhow::Result<()> {
    use sessiond::signals::keys;
    let s = Settings::layered(args, m, args.config.as_deref())?;
    let url = s.store_url()?;
    let grace = match s.signals()?.keys {
        keys::KeySource::Store { grace, .. } => grace,
        keys::KeySource::File(path) => bail!(
            "the signing key comes from --ssf-signing-key-file ({}): rotate it by replacing that file, not in the store",
            path.display()
        ),
    };
    let options = OpenOptions {
        must_exist: true,
        ..s.store_options()?
    };
    let store = sessiond::store::open_with(&url, &options)
        .await
        .with_context(|| format!("opening store {url}"))?;
    match args.action {
        KeysAction::Rotate => {
            let (kid, gone) = keys::rotate(&*store, grace)
                .await
                .with_context(|| format!("rotating the signing keys of {url}"))?;
            println!(
                "added signing key {kid} to {url}: replicas publish it in the JWKS within 30 s \
                 and sign with it {} s after now, once receivers' cached JWKS hold it",
                keys::KEY_AHEAD.as_secs()
            );
            for old in gone {
                println!("forgot key {old} (retired longer than the grace period ago)");
            }
        }
        KeysAction::List => {
            let list = store
                .signing_keys()
                .await
                .with_context(|| format!("reading the signing keys of {url}"))?;
            if list.is_empty() {
                println!("no signing keys in {url} yet (serve makes the first at its start)");
            }
            let now = sessiond::sessions::now_millis();
            for (kid, age, state) in keys::describe(&list, now, grace, keys::KEY_AHEAD) {
                println!("{kid}\t{state}\tmade {age} s ago");
            }
        }
    }
    Ok(())
}

/// `sessiond health`: one `grpc.health.v1` Check of the service; `Ok` only
/// when it answers SERVING (for exec probes and container health checks).
async fn health(args: &HealthArgs) -> anyhow::Result<()> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let service = sessiond::pb::session_service_server::SERVICE_NAME;
    let addr = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let timeout = std::time::Duration::from_secs(args.timeout_secs.max(1));
    let mut endpoint = tonic::transport::Endpoint::from_shared(addr.clone())
        .with_context(|| format!("--addr {addr:?}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    if addr.starts_with("https://") {
        let Some(ca) = &args.upstream_ca else {
            bail!("an https:// address needs --upstream-ca (its CA certificate, PEM)");
        };
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        endpoint = endpoint.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        )?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach {addr}"))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .with_context(|| format!("health check of {service} at {addr}"))?;
    let status = reply.into_inner().status();
    if status != tonic_health::pb::health_check_response::ServingStatus::Serving {
        bail!("{service} at {addr} is {}", status.as_str_name());
    }
    println!("{service} at {addr} is SERVING");
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let (cli, matches) =
        sessiond::cli::parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let Some((_, m)) = matches.subcommand() else {
        bail!("no command given; see sessiond --help");
    };
    // serve, rest and edge install the subscriber once their settings say which
    // format; the one-shot commands always log text.
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::Rest(_) | Command::Edge(_)
    ) {
        sessiond::logging::init(sessiond::logging::LogFormat::Text, None)?;
    }
    match &cli.command {
        Command::Serve(args) => serve(args, m).await,
        Command::Rest(args) => rest(args, m).await,
        Command::Edge(args) => edge(args, m).await,
        Command::User(args) => user(args, m).await,
        Command::Backup(args) => backup(args, m),
        Command::Keys(args) => keys(args, m).await,
        Command::Health(args) => health(args).await,
        Command::Openapi => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(sessiond::rest::openapi::json().as_bytes())
                .context("writing the OpenAPI document")
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line; the backtrace only when asked for
            // (RUST_BACKTRACE is often set machine-wide, so it is not asking).
            if std::env::var_os("SESSIOND_BACKTRACE").is_some_and(|v| v == "1") {
                eprintln!("error: {e:?}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
