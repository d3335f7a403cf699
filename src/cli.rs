//! The command line (clap). Each command's flags are named like the settings
//! keys they set (`--grpc-addr` sets `grpc_addr`), and every one also reads
//! `SESSIOND_<KEY>`; [`crate::config::Settings::layered`] puts them over the
//! TOML file and the defaults. Lives in the library so tests can check the
//! README's configuration table against it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Serialize;

use crate::domain::Role;
use crate::logging::LogFormat;

#[derive(Parser)]
#[command(
    name = "sessiond",
    version,
    about = "Session management service (gRPC + REST shim)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gRPC service (and the REST shim).
    Serve(Box<ServeArgs>),
    /// Run the REST shim alone, in front of any sessiond.
    Rest(RestArgs),
    /// Answer ValidateSession (and forward auth) next to a service, from
    /// memory kept coherent with a sessiond's revocation feed.
    Edge(Box<EdgeArgs>),
    /// User administration on a store.
    User(UserArgs),
    /// Copy a SQLite store to a file while it is in use (online backup).
    Backup(BackupArgs),
    /// The Shared Signals signing keys kept in a store.
    Keys(KeysArgs),
    /// One gRPC health check of the service: exits 0 only when it is SERVING.
    Health(HealthArgs),
    /// Print the REST shim's OpenAPI document (what GET /openapi.json serves;
    /// `sessiond openapi > docs/openapi.json` regenerates the repository's copy).
    Openapi,
}

/// Parses `args` (the first is the program name); also returns the raw
/// matches, which say where each value came from.
pub fn parse_from<I, T>(args: I) -> Result<(Cli, ArgMatches), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, matches))
}

/// Flags of `sessiond serve`.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct ServeArgs {
    /// TOML file with the same keys as the flags (snake_case), plus [kinds.<kind>].
    #[arg(long, env = "SESSIOND_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// gRPC listen address; port 0 picks a free port.
    #[arg(long, env = "SESSIOND_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: Option<SocketAddr>,
    /// REST shim listen address, or `off`.
    #[arg(long, env = "SESSIOND_REST_ADDR", default_value = "127.0.0.1:8080")]
    pub rest_addr: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub store: StoreArgs,
    /// Redis replicas that must confirm an ending before it is acknowledged.
    #[arg(long, env = "SESSIOND_REDIS_REPLICA_ACKS", default_value = "0")]
    pub redis_replica_acks: Option<u32>,
    /// Where the REST shim sends gRPC [default: this process, in-process].
    #[arg(long, env = "SESSIOND_UPSTREAM")]
    pub upstream: Option<String>,
    /// Create the demo users if absent (1/0, yes/no, true/false in the environment).
    #[arg(long, env = "SESSIOND_DEMO", value_parser = BoolishValueParser::new())]
    pub demo: bool,
    /// Idle timeout of every kind, in seconds.
    #[arg(long, env = "SESSIOND_IDLE_TIMEOUT_SECS", default_value = "1800")]
    pub idle_timeout_secs: Option<u64>,
    /// Absolute lifetime of every kind, in seconds.
    #[arg(long, env = "SESSIOND_LIFETIME_SECS", default_value = "43200")]
    pub lifetime_secs: Option<u64>,
    /// At most one idle-timer write per session per this many seconds.
    #[arg(long, env = "SESSIOND_TOUCH_INTERVAL_SECS", default_value = "60")]
    pub touch_interval_secs: Option<u64>,
    /// Seconds between expiry sweeps.
    #[arg(long, env = "SESSIOND_SWEEP_INTERVAL_SECS", default_value = "30")]
    pub sweep_interval_secs: Option<u64>,
    /// Seconds ended sessions and revocation events are kept.
    #[arg(long, env = "SESSIOND_RETENTION_SECS", default_value = "86400")]
    pub retention_secs: Option<u64>,
    /// Seconds audit records are kept (90 days).
    #[arg(long, env = "SESSIOND_AUDIT_RETENTION_SECS", default_value = "7776000")]
    pub audit_retention_secs: Option<u64>,
    #[command(flatten)]
    #[serde(flatten)]
    pub hashing: HashArgs,
    /// Failed credential attempts per username, within the window, before a lockout.
    #[arg(long, env = "SESSIOND_MAX_FAILURES_PER_USER", default_value = "10")]
    pub max_failures_per_user: Option<u32>,
    /// Failed credential attempts per client address, within the window, before a lockout.
    #[arg(long, env = "SESSIOND_MAX_FAILURES_PER_ADDRESS", default_value = "100")]
    pub max_failures_per_address: Option<u32>,
    /// Length of the failure-counting window, in seconds.
    #[arg(long, env = "SESSIOND_FAILURE_WINDOW_SECS", default_value = "300")]
    pub failure_window_secs: Option<u64>,
    /// Successful logins per user within the rate window (0: no limit).
    #[arg(long, env = "SESSIOND_MAX_LOGINS_PER_USER", default_value = "600")]
    pub max_logins_per_user: Option<u32>,
    /// Successful logins per client address within the rate window (0: no limit).
    #[arg(long, env = "SESSIOND_MAX_LOGINS_PER_ADDRESS", default_value = "3000")]
    pub max_logins_per_address: Option<u32>,
    /// Live sessions per user; a login past it ends the user's oldest session (0: no cap).
    #[arg(long, env = "SESSIOND_MAX_SESSIONS_PER_USER", default_value = "500")]
    pub max_sessions_per_user: Option<u32>,
    /// Ending calls (Logoff, LogoffOther, LogoutUser, LogoutAll, EndUserSessions) per user within the rate window (0: no limit).
    #[arg(long, env = "SESSIOND_MAX_ENDINGS_PER_USER", default_value = "600")]
    pub max_endings_per_user: Option<u32>,
    /// Ending calls per client address within the rate window (0: no limit).
    #[arg(long, env = "SESSIOND_MAX_ENDINGS_PER_ADDRESS", default_value = "3000")]
    pub max_endings_per_address: Option<u32>,
    /// Length of the login and ending rate window, in seconds.
    #[arg(long, env = "SESSIOND_RATE_WINDOW_SECS", default_value = "60")]
    pub rate_window_secs: Option<u64>,
    /// gRPC calls in progress at once; more are shed with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SESSIOND_MAX_IN_FLIGHT", default_value = "1024")]
    pub max_in_flight: Option<usize>,
    /// A call that waited longer than this (ms) to start is shed with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SESSIOND_MAX_QUEUE_DELAY_MS", default_value = "50")]
    pub max_queue_delay_ms: Option<u64>,
    /// Comma-separated IPs of REST shims (`sessiond rest`) whose
    /// x-forwarded-for is trusted for per-address throttling.
    #[arg(long, env = "SESSIOND_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,
    /// File holding the service credential that may watch every org's
    /// revocations (or set SESSIOND_SERVICE_CREDENTIAL; never on the command line).
    #[arg(long, env = "SESSIOND_SERVICE_CREDENTIAL_FILE")]
    pub service_credential_file: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub signals: SignalArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub connections: ConnArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub listener: ListenerArgs,
}

/// The Shared Signals transmitter (on the REST listener of `serve`).
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct SignalArgs {
    /// ES256 signing key of the SETs, a PKCS#8 PEM file [default: a key
    /// generated at first start and kept in the store].
    #[arg(long, env = "SESSIOND_SSF_SIGNING_KEY_FILE")]
    pub ssf_signing_key_file: Option<PathBuf>,
    /// Comma-separated host names, addresses and CIDR ranges that push
    /// streams may deliver to [default: none; poll only].
    #[arg(long, env = "SESSIOND_SSF_PUSH_ALLOW")]
    pub ssf_push_allow: Option<String>,
    /// Streams one org (or the every-org streams together) may have.
    #[arg(long, env = "SESSIOND_SSF_MAX_STREAMS_PER_ORG", default_value = "16")]
    pub ssf_max_streams_per_org: Option<usize>,
    /// Seconds a rotated-out signing key stays in the JWKS (7 days).
    #[arg(long, env = "SESSIOND_SSF_KEY_GRACE_SECS", default_value = "604800")]
    pub ssf_key_grace_secs: Option<u64>,
    /// An identity provider that may call Global Token Revocation with its
    /// own secret: NAME:secret_file=PATH (or secret_env=VARIABLE)[,org=ORG][,iss=ISSUER].
    /// Repeat the flag, or separate entries with ';' [default: none].
    #[arg(long, env = "SESSIOND_GTR_IDP", value_delimiter = ';')]
    pub gtr_idp: Vec<String>,
}

/// Forward auth for HTTP gateways (`serve` and `edge`).
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct AuthArgs {
    /// Forward-auth listener (GET /auth, for nginx auth_request, Traefik
    /// forwardAuth, Caddy forward_auth), or `off`.
    #[arg(long, env = "SESSIOND_AUTH_ADDR", default_value = "off")]
    pub auth_addr: Option<String>,
    /// Forward auth also reads the token from this cookie (after
    /// `Authorization: Bearer`) [default: the header only].
    #[arg(long, env = "SESSIOND_AUTH_COOKIE")]
    pub auth_cookie: Option<String>,
}

/// Flags of `sessiond edge`.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct EdgeArgs {
    /// TOML file (the same keys as the flags).
    #[arg(long, env = "SESSIOND_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The sessiond gRPC endpoint, e.g. http://127.0.0.1:50051 (required here or in the file).
    #[arg(long, env = "SESSIOND_UPSTREAM")]
    pub upstream: Option<String>,
    /// CA certificate (PEM) that an https:// upstream's certificate must chain to.
    #[arg(long, env = "SESSIOND_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// gRPC listen address (ValidateSession, health, reflection); port 0 picks a free port.
    #[arg(long, env = "SESSIOND_GRPC_ADDR", default_value = "127.0.0.1:50061")]
    pub grpc_addr: Option<SocketAddr>,
    /// File holding the upstream's service credential (or set
    /// SESSIOND_SERVICE_CREDENTIAL; never on the command line).
    #[arg(long, env = "SESSIOND_SERVICE_CREDENTIAL_FILE")]
    pub service_credential_file: Option<PathBuf>,
    /// Past this age (ms) of the feed's last confirmed position, nothing is
    /// answered from memory: every call asks upstream, UNAVAILABLE if it cannot answer.
    #[arg(long, env = "SESSIOND_MAX_STALENESS_MS", default_value = "1000")]
    pub max_staleness_ms: Option<u64>,
    /// Use of a session is told upstream at most once per this many seconds.
    #[arg(long, env = "SESSIOND_TOUCH_INTERVAL_SECS", default_value = "30")]
    pub touch_interval_secs: Option<u64>,
    /// Sessions the edge keeps in memory at most.
    #[arg(long, env = "SESSIOND_CACHE_ENTRIES", default_value = "100000")]
    pub cache_entries: Option<usize>,
    /// Bytes of kept sessions at most.
    #[arg(long, env = "SESSIOND_CACHE_BYTES", default_value = "67108864")]
    pub cache_bytes: Option<usize>,
    /// Upstream calls in flight at most; a validation needing one more answers UNAVAILABLE at once.
    #[arg(long, env = "SESSIOND_UPSTREAM_CONCURRENCY", default_value = "64")]
    pub upstream_concurrency: Option<usize>,
    /// gRPC calls in progress at once; more are shed with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SESSIOND_MAX_IN_FLIGHT", default_value = "1024")]
    pub max_in_flight: Option<usize>,
    /// A call that waited longer than this (ms) to start is shed with RESOURCE_EXHAUSTED.
    #[arg(long, env = "SESSIOND_MAX_QUEUE_DELAY_MS", default_value = "50")]
    pub max_queue_delay_ms: Option<u64>,
    #[command(flatten)]
    #[serde(flatten)]
    pub auth: AuthArgs,
    /// Log lines on stderr: text, or one JSON object per line.
    #[arg(long, env = "SESSIOND_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: Option<LogFormat>,
    /// Serve Prometheus metrics (plain HTTP, GET /metrics) on this address
    /// [default: not served].
    #[arg(long, env = "SESSIOND_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    #[serde(flatten)]
    pub connections: ConnArgs,
}

/// Where the data lives. `global`: `sessiond user` takes them after its
/// action too (`sessiond user list --store …`).
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct StoreArgs {
    /// Store: sqlite://PATH, sqlite::memory: or redis://[:PASSWORD@]HOST:PORT/[DB].
    #[arg(
        long,
        env = "SESSIOND_STORE",
        default_value = "sqlite://sessiond.db",
        global = true
    )]
    pub store: Option<String>,
    /// Prefix of every Redis key, so deployments can share one Redis.
    #[arg(
        long,
        env = "SESSIOND_REDIS_PREFIX",
        default_value = "sessiond",
        global = true
    )]
    pub redis_prefix: Option<String>,
    /// Shards of a new Redis store (fixed at creation; every replica must agree).
    #[arg(
        long,
        env = "SESSIOND_REDIS_SHARDS",
        default_value = "16",
        global = true
    )]
    pub redis_shards: Option<u16>,
}

/// The Argon2id cost of new password hashes, and the shortest password accepted.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct HashArgs {
    /// Argon2id memory cost for new password hashes, KiB.
    #[arg(
        long,
        env = "SESSIOND_ARGON2_MEMORY_KIB",
        default_value = "19456",
        global = true
    )]
    pub argon2_memory_kib: Option<u32>,
    /// Argon2id passes for new password hashes.
    #[arg(
        long,
        env = "SESSIOND_ARGON2_ITERATIONS",
        default_value = "2",
        global = true
    )]
    pub argon2_iterations: Option<u32>,
    /// Shortest password `user add`, `user passwd` and ChangePassword accept, in characters.
    #[arg(
        long,
        env = "SESSIOND_MIN_PASSWORD_LENGTH",
        default_value = "8",
        global = true
    )]
    pub min_password_length: Option<usize>,
}

/// TLS for the listeners.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct TlsArgs {
    /// PEM certificate chain: with --tls-key, the listeners speak TLS.
    #[arg(long, env = "SESSIOND_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SESSIOND_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// What both long-running commands (`serve` and `rest`) share besides TLS.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct ListenerArgs {
    /// Base URL clients use to reach the REST shim behind a proxy, e.g.
    /// https://sessions.example.com (Informatica's serverUrl is built from it)
    /// [default: the listener's scheme and the authority the client used].
    #[arg(long, env = "SESSIOND_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Log lines on stderr: text, or one JSON object per line.
    #[arg(long, env = "SESSIOND_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: Option<LogFormat>,
    /// Serve Prometheus metrics (plain HTTP, GET /metrics) on this address
    /// [default: not served].
    #[arg(long, env = "SESSIOND_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// OTLP/gRPC collector to export traces to, e.g. http://127.0.0.1:4317
    /// [default: no traces].
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// Connection timeouts and the per-address cap, applied on every listener.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct ConnArgs {
    /// HTTP/1 (REST, metrics): seconds a client has to send a request's whole head.
    #[arg(long, env = "SESSIOND_HEADER_READ_TIMEOUT_SECS", default_value = "10")]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a new connection has to finish its TLS handshake and send its first request bytes.
    #[arg(long, env = "SESSIOND_HANDSHAKE_TIMEOUT_SECS", default_value = "10")]
    pub handshake_timeout_secs: Option<u64>,
    /// Seconds a connection with no request in progress is kept open.
    #[arg(
        long,
        env = "SESSIOND_CONNECTION_IDLE_TIMEOUT_SECS",
        default_value = "120"
    )]
    pub connection_idle_timeout_secs: Option<u64>,
    /// Seconds between HTTP/2 keepalive pings (and before TCP keepalive probes).
    #[arg(long, env = "SESSIOND_KEEPALIVE_INTERVAL_SECS", default_value = "60")]
    pub keepalive_interval_secs: Option<u64>,
    /// Seconds a keepalive ping may go unanswered before the connection is closed.
    #[arg(long, env = "SESSIOND_KEEPALIVE_TIMEOUT_SECS", default_value = "20")]
    pub keepalive_timeout_secs: Option<u64>,
    /// REST: seconds a client has to send a request's whole body.
    #[arg(long, env = "SESSIOND_BODY_READ_TIMEOUT_SECS", default_value = "30")]
    pub body_read_timeout_secs: Option<u64>,
    /// Connections one client address may hold open at once on each listener.
    #[arg(
        long,
        env = "SESSIOND_MAX_CONNECTIONS_PER_ADDRESS",
        default_value = "256"
    )]
    pub max_connections_per_address: Option<usize>,
}

/// Flags of `sessiond rest`.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct RestArgs {
    /// TOML file (the same file `serve` reads; only the shim's keys are used).
    #[arg(long, env = "SESSIOND_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// The sessiond gRPC endpoint, e.g. http://127.0.0.1:50051 (required here or in the file).
    #[arg(long, env = "SESSIOND_UPSTREAM")]
    pub upstream: Option<String>,
    /// REST listen address; port 0 picks a free port.
    #[arg(long, env = "SESSIOND_REST_ADDR", default_value = "127.0.0.1:8080")]
    pub rest_addr: Option<String>,
    /// CA certificate (PEM) that an https:// upstream's certificate must chain to.
    #[arg(long, env = "SESSIOND_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub connections: ConnArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub listener: ListenerArgs,
}

/// Flags of `sessiond keys`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct KeysArgs {
    /// TOML file (the same file `serve` reads).
    #[arg(long, env = "SESSIOND_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub store: StoreArgs,
    /// Seconds a rotated-out signing key stays in the JWKS (7 days).
    #[arg(
        long,
        env = "SESSIOND_SSF_KEY_GRACE_SECS",
        default_value = "604800",
        global = true
    )]
    pub ssf_key_grace_secs: Option<u64>,
    #[command(subcommand)]
    #[serde(skip)]
    pub action: KeysAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysAction {
    /// Add a new signing key: every replica signs with it from its next key
    /// refresh (within 30 s); the older public keys stay in the JWKS for the
    /// grace period, and keys retired longer ago are forgotten.
    Rotate,
    /// The signing keys: id, when made, and whether signing or published.
    List,
}

/// Flags of `sessiond user`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct UserArgs {
    /// TOML file (the same file `serve` reads).
    #[arg(long, env = "SESSIOND_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub hashing: HashArgs,
    #[command(subcommand)]
    #[serde(skip)]
    pub action: UserAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum UserAction {
    /// Add a user; the password is read from stdin (or prompted on a terminal).
    Add {
        username: String,
        #[arg(long)]
        org: String,
        #[arg(long, default_value = "user")]
        role: Role,
        /// Create the store if it does not exist yet.
        #[arg(long)]
        create: bool,
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
    /// Delete a user: its live sessions end first (recorded like a disable).
    Delete { username: String },
}

/// Flags of `sessiond backup`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct BackupArgs {
    /// TOML file (the same file `serve` reads).
    #[arg(long, env = "SESSIOND_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub store: StoreArgs,
    /// The file to write (must not exist yet).
    #[arg(long)]
    #[serde(skip)]
    pub to: PathBuf,
}

/// Flags of `sessiond health`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// The sessiond gRPC endpoint to check (http:// or https://; a bare HOST:PORT means http://).
    #[arg(
        long,
        env = "SESSIOND_HEALTH_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// CA certificate (PEM) that an https:// endpoint's certificate must chain to.
    #[arg(long, env = "SESSIOND_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// Give up after this many seconds (connecting and asking).
    #[arg(long, env = "SESSIOND_HEALTH_TIMEOUT_SECS", default_value = "5")]
    pub timeout_secs: u64,
}
