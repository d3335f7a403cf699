//! Listeners, graceful shutdown and background tasks (expiry sweeper, store
//! health watch).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic::transport::Server;

use tonic_health::pb::health_server::{Health, HealthServer};
use tower::Layer as _;

use crate::config::Config;
use crate::grpc::{CallLayer, SessionGrpc};
use crate::pb::session_service_server::SessionServiceServer;
use crate::sessions::Sessions;
use crate::{rest, store};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] crate::domain::Error),
    #[error("cannot open store {store}")]
    StoreOpen {
        store: String,
        source: crate::domain::Error,
    },
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Config(String),
}

/// HTTP/2 streams a client may have open on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 1024;

/// How often the health watch pings the store.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// A started server: its bound addresses and a handle to stop it.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub rest_addr: Option<SocketAddr>,
    /// The metrics listener's address, when `--metrics-addr` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub sessions: Arc<Sessions>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Stops accepting, drains in-flight calls and waits for the end.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server stops (after `shutdown` or a fatal error).
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Config(format!("server task failed: {e}"))),
        }
    }

    /// A sender that stops the server when `true` is sent (for signal handlers).
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

pub(crate) async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { what, addr, source })
}

pub(crate) fn local_addr(
    what: &'static str,
    addr: SocketAddr,
    listener: &TcpListener,
) -> Result<SocketAddr, ServeError> {
    listener
        .local_addr()
        .map_err(|source| ServeError::Bind { what, addr, source })
}

pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    // Either a `true` was sent or every sender is gone: both mean stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Opens the store, binds the listeners (logging each bound address on its
/// own line) and serves until shut down.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    // Metrics recorded before the recorder exists are dropped: install it first.
    crate::telemetry::handle();
    log_startup(&config);
    let tls = config
        .tls
        .as_ref()
        .map(crate::tls::Tls::load)
        .transpose()
        .map_err(ServeError::Config)?;
    let sessions = open_sessions(&config).await?;

    let grpc_listener = bind("gRPC", config.grpc_addr).await?;
    let grpc_addr = local_addr("gRPC", config.grpc_addr, &grpc_listener)?;
    tracing::info!("grpc listening on {grpc_addr}");

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let grpc =
        SessionGrpc::new(sessions.clone(), shutdown_rx.clone()).trusting(&config.trusted_proxies);
    let calls = CallLayer::new(config.max_in_flight, config.max_queue_delay);
    let rest = start_rest(
        &config,
        &sessions,
        &grpc,
        &calls,
        tls.as_ref(),
        &shutdown_rx,
    )
    .await?;
    let rest_addr = rest.as_ref().map(|(a, _)| *a);
    let metrics = start_metrics(config.metrics_addr, &config.connections, &shutdown_rx).await?;
    let metrics_addr = metrics.as_ref().map(|(a, _)| *a);
    let auth = start_auth(&config, &grpc, &calls, &shutdown_rx).await?;

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, true).await;
    let background = [
        spawn_sweeper(sessions.clone(), &config, shutdown_rx.clone()),
        spawn_health_watch(sessions.clone(), health, shutdown_rx.clone()),
    ];
    let grpc_server = serve_grpc(
        grpc,
        calls,
        health_service,
        tls.as_ref(),
        grpc_listener,
        &config.connections,
        stopped(shutdown_rx),
    )?;
    let listeners = [("rest", rest), ("metrics", metrics), ("auth", auth)]
        .into_iter()
        .filter_map(|(name, l)| l.map(|(_, task)| (name, task)))
        .collect();
    let task = tokio::spawn(run_until_stopped(
        grpc_server,
        listeners,
        background,
        sessions.clone(),
    ));
    Ok(Running {
        grpc_addr,
        rest_addr,
        metrics_addr,
        sessions,
        shutdown: shutdown_tx,
        task,
    })
}

/// The store and the application service over it (with the demo users when
/// asked for).
async fn open_sessions(config: &Config) -> Result<Arc<Sessions>, ServeError> {
    let store = store::open_with(&config.store, &config.store_options)
        .await
        .map_err(|e| ServeError::StoreOpen {
            store: config.store.to_string(),
            source: e,
        })?;
    let store = if crate::otel::enabled() {
        let system = match config.store {
            store::StoreUrl::SqliteFile(_) | store::StoreUrl::SqliteMemory => "sqlite",
            store::StoreUrl::Redis(_) | store::StoreUrl::RedisCluster(_) => "redis",
        };
        store::traced::wrap(store, system)
    } else {
        store
    };
    let sessions = Arc::new(Sessions::new(store, config.policy.clone())?);
    if config.demo {
        let created = sessions.ensure_demo_users().await?;
        tracing::info!(created, "demo users present");
    }
    warn_if_demo_users(&sessions).await;
    Ok(sessions)
}

type RestTask = JoinHandle<std::io::Result<()>>;

/// The REST shim on its own listener, when one is configured: over the
/// remote upstream when one is given, otherwise over `grpc` in-process,
/// through the same call layer (and admission count) as the gRPC listener.
async fn start_rest(
    config: &Config,
    sessions: &Arc<Sessions>,
    grpc: &SessionGrpc,
    calls: &CallLayer,
    tls: Option<&crate::tls::Tls>,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<(SocketAddr, RestTask)>, ServeError> {
    let Some(addr) = config.rest_addr else {
        return Ok(None);
    };
    let listener = bind("REST", addr).await?;
    let rest_addr = local_addr("REST", addr, &listener)?;
    tracing::info!("rest listening on {rest_addr}");
    let upstream = match &config.upstream {
        Some(url) => rest::remote(url, None).map_err(ServeError::Config)?,
        None => rest::in_process(
            calls
                .in_process()
                .layer(SessionServiceServer::new(grpc.clone())),
        ),
    };
    // The transmitter needs the store: only where it is this process's own.
    let signals = match &config.upstream {
        Some(_) => None,
        None => {
            let issuer = config.public_url.clone().unwrap_or_else(|| {
                let scheme = if tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{rest_addr}")
            });
            let tx = Arc::new(
                crate::signals::Transmitter::new(sessions.clone(), config.signals.clone(), issuer)
                    .await?,
            );
            tokio::spawn(tx.clone().run_upkeep(shutdown.clone()));
            tokio::spawn(tx.clone().run_push(shutdown.clone()));
            Some(
                crate::signals::routes::router(tx.clone())
                    .merge(crate::signals::gtr::revocation_router(
                        tx,
                        config.gtr_idps.clone(),
                    ))
                    // The console calls this process's service through the
                    // full call layer, queue-delay shedding included: its
                    // callers arrive from the network like the gRPC ones.
                    .merge(crate::console::router(grpc.clone(), calls.clone())),
            )
        }
    };
    let task = tokio::spawn(rest::serve(
        listener,
        upstream,
        tls.map(|t| t.rustls.clone()),
        config.public_url.clone(),
        config.connections.clone(),
        signals,
        stopped(shutdown.clone()),
    ));
    Ok(Some((rest_addr, task)))
}

/// The forward-auth listener (`GET /auth`), when an address is configured:
/// each check is a ValidateSession of this process's own service, through
/// the same call layer (admission, shedding, metrics) as the gRPC listener.
async fn start_auth(
    config: &Config,
    grpc: &SessionGrpc,
    calls: &CallLayer,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<(SocketAddr, RestTask)>, ServeError> {
    let Some(addr) = config.auth_addr else {
        return Ok(None);
    };
    let listener = bind("forward auth", addr).await?;
    let bound = local_addr("forward auth", addr, &listener)?;
    tracing::info!("auth listening on {bound}");
    let client = rest::in_process(
        calls
            .in_process()
            .layer(SessionServiceServer::new(grpc.clone())),
    );
    let check: crate::edge::Check = Arc::new(move |token| {
        let mut client = client.clone();
        Box::pin(async move {
            client
                .validate_session(crate::pb::ValidateSessionRequest { token })
                .await
                .and_then(|r| {
                    r.into_inner()
                        .session
                        .ok_or_else(|| tonic::Status::internal("answer without a session"))
                })
        })
    });
    let task = tokio::spawn(crate::net::serve_http(
        listener,
        crate::edge::auth_router(check, config.auth_cookie.clone()),
        None,
        crate::net::Gate::new("auth", config.connections.clone()),
        stopped(shutdown.clone()),
    ));
    Ok(Some((bound, task)))
}

/// The metrics listener (plain HTTP, `GET /metrics`), when an address is
/// configured: kept off the REST listener, whose callers are the public.
async fn start_metrics(
    addr: Option<SocketAddr>,
    limits: &crate::net::ConnLimits,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<(SocketAddr, RestTask)>, ServeError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = bind("metrics", addr).await?;
    let bound = local_addr("metrics", addr, &listener)?;
    tracing::info!("metrics listening on {bound}");
    let task = tokio::spawn(crate::net::serve_http(
        listener,
        rest::metrics_app(),
        None,
        crate::net::Gate::new("metrics", limits.clone()),
        stopped(shutdown.clone()),
    ));
    Ok(Some((bound, task)))
}

/// The gRPC listener: the service behind the call layer, health and both
/// reflection versions, until `shutdown` completes.
pub(crate) fn serve_grpc<S: crate::pb::session_service_server::SessionService>(
    grpc: S,
    calls: CallLayer,
    health_service: HealthServer<impl Health>,
    tls: Option<&crate::tls::Tls>,
    listener: TcpListener,
    limits: &crate::net::ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + Send, ServeError> {
    let (reflection_v1, reflection_v1alpha) = reflection()?;
    // Accepted under the per-address cap, the handshake and idle bounds.
    let incoming = crate::net::Gate::new("grpc", limits.clone()).incoming(listener);
    // hyper's default (200 streams per connection) keeps a flood waiting in
    // the clients' own queues, where it can be neither seen nor shed; let it
    // reach the server, whose queue-delay shedding answers it at once.
    let mut builder = Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout));
    if let Some(t) = tls {
        let identity = tonic::transport::Identity::from_pem(&t.cert_pem, &t.key_pem);
        builder = builder.tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(identity)
                .timeout(limits.handshake_timeout),
        )?;
    }
    Ok(builder
        .layer(crate::net::ConnectionLayer)
        .layer(calls)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(SessionServiceServer::new(grpc))
        .serve_with_incoming_shutdown(incoming, shutdown))
}

/// Waits for the gRPC server to stop, then for the shim and the background
/// tasks, and closes the store.
async fn run_until_stopped(
    grpc_server: impl Future<Output = Result<(), tonic::transport::Error>>,
    listeners: Vec<(&'static str, RestTask)>,
    background: [JoinHandle<()>; 2],
    sessions: Arc<Sessions>,
) -> Result<(), ServeError> {
    let result = grpc_server.await;
    for (name, task) in listeners {
        match task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "{name} listener stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "{name} listener task failed"),
            Ok(Ok(())) => {}
        }
    }
    for task in background {
        let _ = task.await;
    }
    if let Err(e) = sessions.store().close().await {
        tracing::warn!(error = %e, "closing the store");
    }
    tracing::info!("stopped");
    result.map_err(ServeError::from)
}

/// One line that says what this process is about to run with.
fn log_startup(config: &Config) {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        store = %config.store,
        config_file = %config
            .config_file
            .as_deref()
            .map_or_else(|| "none".into(), |p| p.display().to_string()),
        tls = if config.tls.is_some() { "on" } else { "off" },
        "sessiond starting"
    );
}

/// The demo users' passwords are published: say so while any is active.
async fn warn_if_demo_users(sessions: &Sessions) {
    let Ok(users) = sessions.store().list_users().await else {
        return;
    };
    let demo: Vec<&str> = users
        .iter()
        .filter(|u| !u.disabled && crate::sessions::is_demo_user(&u.username))
        .map(|u| u.username.as_str())
        .collect();
    if !demo.is_empty() {
        tracing::warn!(
            users = %demo.join(","),
            "this store holds demo users whose passwords are published: \
             `sessiond user delete` them before real use"
        );
    }
}

/// Both the service's status and the server's overall one (the empty
/// service name, which load balancers ask for) follow the store.
pub(crate) async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    health
        .set_service_status(
            <SessionServiceServer<SessionGrpc> as NamedService>::NAME,
            status,
        )
        .await;
    health.set_service_status("", status).await;
}

/// Both reflection versions: grpcurl before 1.8.8 and many GUI clients speak
/// only v1alpha. Each lists the other too, so either shows every service.
pub(crate) fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ServeError,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            // An explicit list replaces the derived one: name every service served.
            .with_service_name(<SessionServiceServer<SessionGrpc> as NamedService>::NAME)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let v1 = builder()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    Ok((v1, v1alpha))
}

/// Ends expired sessions, purges what retention no longer keeps and
/// refreshes the live-session gauge, every `sweep_interval`.
fn spawn_sweeper(
    sessions: Arc<Sessions>,
    config: &Config,
    mut rx: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (every, retention, audit_retention) = (
        config.sweep_interval,
        config.retention,
        config.audit_retention,
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = rx.wait_for(|s| *s) => break,
            }
            match sessions.sweep(retention, audit_retention).await {
                Ok(r) if r.expired > 0 || r.purged > 0 => {
                    tracing::info!(expired = r.expired, purged = r.purged, "sweep");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweep failed"),
            }
            if let Ok(counts) = sessions
                .store()
                .live_counts(crate::sessions::now_millis())
                .await
            {
                for (kind, n) in counts {
                    crate::telemetry::set_live_sessions(kind, n);
                }
            }
        }
    })
}

/// Pings the store every [`HEALTH_INTERVAL`]: health follows it, and a store
/// that held data and now holds none (a Redis restarted without
/// persistence: every login would fail as bad credentials) is reported.
fn spawn_health_watch(
    sessions: Arc<Sessions>,
    health: tonic_health::server::HealthReporter,
    mut rx: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut serving = true;
        let mut held_data = sessions.store().holds_data().await.unwrap_or(false);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HEALTH_INTERVAL) => {}
                _ = rx.wait_for(|s| *s) => break,
            }
            let ok = sessions.store().ping().await.is_ok();
            if ok != serving {
                serving = ok;
                if ok {
                    tracing::info!("store reachable again: SERVING");
                } else {
                    tracing::warn!("store unreachable: NOT_SERVING");
                }
                set_health(&health, ok).await;
            }
            if !ok {
                continue;
            }
            match sessions.store().holds_data().await {
                Ok(true) => held_data = true,
                Ok(false) if held_data => {
                    held_data = false;
                    tracing::warn!(
                        "the store lost its data: it holds no users and no sessions any more \
                         (a Redis restarted without persistence?); every login fails until \
                         users are restored"
                    );
                }
                _ => {}
            }
        }
    })
}

/// Serves until `signal` completes, then drains and stops.
pub async fn serve_until(
    config: Config,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let running = start(config).await?;
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown requested: draining in-flight calls");
        let _ = stop.send(true);
    });
    running.wait().await
}

/// The standalone shim's connection limits and metrics listener.
#[derive(Debug, Clone, Default)]
pub struct ShimListeners {
    pub connections: crate::net::ConnLimits,
    /// Where metrics are served (plain HTTP); `None`: nowhere.
    pub metrics_addr: Option<SocketAddr>,
}

/// `sessiond rest`: the shim alone, in front of the sessiond at `upstream`
/// (verified against `upstream_ca` when it is `https://`), over TLS when
/// `tls` is given, telling Informatica clients `public_url` when set, under
/// `listeners`' connection limits (and metrics listener). Serves until
/// `signal` completes.
pub async fn serve_rest_until(
    rest_addr: SocketAddr,
    upstream: &str,
    upstream_ca: Option<&std::path::Path>,
    tls: Option<&crate::tls::TlsFiles>,
    public_url: Option<&str>,
    listeners: ShimListeners,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Metrics recorded before the recorder exists are dropped: install it first.
    crate::telemetry::handle();
    let public_url = public_url
        .map(rest::parse_public_url)
        .transpose()
        .map_err(ServeError::Config)?;
    let ca = upstream_ca
        .map(|p| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())))
        .transpose()
        .map_err(ServeError::Config)?;
    let client = rest::remote(upstream, ca.as_deref()).map_err(ServeError::Config)?;
    let tls = tls
        .map(crate::tls::Tls::load)
        .transpose()
        .map_err(ServeError::Config)?;
    let listener = bind("REST", rest_addr).await?;
    let bound = local_addr("REST", rest_addr, &listener)?;
    tracing::info!("rest listening on {bound}");
    tracing::info!("forwarding to gRPC upstream {upstream}");
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = listeners.connections;
    let metrics = start_metrics(listeners.metrics_addr, &limits, &stop_rx).await?;
    let served = rest::serve(
        listener,
        client,
        tls.map(|t| t.rustls),
        public_url,
        limits,
        None,
        async move {
            signal.await;
            tracing::info!("shutdown requested: draining in-flight requests");
            let _ = stop_tx.send(true);
        },
    )
    .await;
    if let Some((_, task)) = metrics {
        if let Ok(Err(e)) = task.await {
            tracing::warn!(error = %e, "metrics listener stopped with an error");
        }
    }
    served.map_err(|source| ServeError::Bind {
        what: "REST",
        addr: bound,
        source,
    })?;
    tracing::info!("stopped");
    Ok(())
}
