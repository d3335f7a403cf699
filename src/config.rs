//! One `Config` from flags, `SESSIOND_*` environment variables and an optional
//! TOML file. Precedence: flag, then environment, then file, then default.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::password::HashCost;
use crate::domain::Kind;
use crate::sessions::{Lifetimes, Policy, ServiceCredential};
use crate::store::StoreUrl;

/// Everything `sessiond serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    /// `None` disables the REST shim (`--rest-addr off`).
    pub rest_addr: Option<SocketAddr>,
    pub store: StoreUrl,
    /// Where the shim sends gRPC; `None` means in-process to this server.
    pub upstream: Option<String>,
    pub demo: bool,
    pub policy: Policy,
    /// How often expired sessions are swept.
    pub sweep_interval: Duration,
    /// How long ended sessions and revocation events are kept.
    pub retention: Duration,
    /// How long audit records are kept.
    pub audit_retention: Duration,
    /// Peers (REST shims) whose `x-forwarded-for` names the real client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// gRPC calls in progress at once before new ones are shed.
    pub max_in_flight: usize,
    /// A call that waited longer than this to start is shed.
    pub max_queue_delay: Duration,
    /// When set, both listeners speak TLS.
    pub tls: Option<crate::tls::TlsFiles>,
    /// The base of Informatica's `serverUrl` behind a proxy (checked, no trailing slash).
    pub public_url: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            rest_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            store: StoreUrl::SqliteFile("sessiond.db".into()),
            upstream: None,
            demo: false,
            policy: Policy::default(),
            sweep_interval: Duration::from_secs(30),
            retention: Duration::from_secs(24 * 60 * 60),
            audit_retention: Duration::from_secs(90 * 24 * 60 * 60),
            trusted_proxies: Vec::new(),
            max_in_flight: crate::grpc::DEFAULT_MAX_IN_FLIGHT,
            max_queue_delay: crate::grpc::DEFAULT_MAX_QUEUE_DELAY,
            tls: None,
            public_url: None,
        }
    }
}

/// Flags of `sessiond serve` (each also readable from its environment variable).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (same keys as the flags, snake_case, plus [kinds.<kind>]).
    #[arg(long, env = "SESSIOND_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address; port 0 picks a free port.
    #[arg(long, env = "SESSIOND_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// REST shim listen address, or `off`.
    #[arg(long, env = "SESSIOND_REST_ADDR")]
    pub rest_addr: Option<String>,
    /// Store: sqlite://PATH, sqlite::memory: or redis://HOST:PORT/.
    #[arg(long, env = "SESSIOND_STORE")]
    pub store: Option<String>,
    /// Where the REST shim sends gRPC (default: this process, in-process).
    #[arg(long, env = "SESSIOND_UPSTREAM")]
    pub upstream: Option<String>,
    /// Create the demo users if absent.
    #[arg(long, env = "SESSIOND_DEMO")]
    pub demo: bool,
    /// Idle timeout of every kind, in seconds (default 1800).
    #[arg(long, env = "SESSIOND_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Absolute lifetime of every kind, in seconds (default 43200).
    #[arg(long, env = "SESSIOND_LIFETIME_SECS")]
    pub lifetime_secs: Option<u64>,
    /// At most one idle-timer write per session per this many seconds (default 60).
    #[arg(long, env = "SESSIOND_TOUCH_INTERVAL_SECS")]
    pub touch_interval_secs: Option<u64>,
    /// Seconds between expiry sweeps (default 30).
    #[arg(long, env = "SESSIOND_SWEEP_INTERVAL_SECS")]
    pub sweep_interval_secs: Option<u64>,
    /// Seconds ended sessions and revocation events are kept (default 86400).
    #[arg(long, env = "SESSIOND_RETENTION_SECS")]
    pub retention_secs: Option<u64>,
    /// Seconds audit records are kept (default 7776000, 90 days).
    #[arg(long, env = "SESSIOND_AUDIT_RETENTION_SECS")]
    pub audit_retention_secs: Option<u64>,
    /// Argon2id memory cost for new password hashes, KiB (default 19456).
    #[arg(long, env = "SESSIOND_ARGON2_MEMORY_KIB")]
    pub argon2_memory_kib: Option<u32>,
    /// Argon2id passes for new password hashes (default 2).
    #[arg(long, env = "SESSIOND_ARGON2_ITERATIONS")]
    pub argon2_iterations: Option<u32>,
    /// Failed credential attempts per username before a lockout (default 10 per 300 s).
    #[arg(long, env = "SESSIOND_MAX_FAILURES_PER_USER")]
    pub max_failures_per_user: Option<u32>,
    /// Failed credential attempts per client address before a lockout (default 100 per 300 s).
    #[arg(long, env = "SESSIOND_MAX_FAILURES_PER_ADDRESS")]
    pub max_failures_per_address: Option<u32>,
    /// Length of the failure-counting window, in seconds (default 300).
    #[arg(long, env = "SESSIOND_FAILURE_WINDOW_SECS")]
    pub failure_window_secs: Option<u64>,
    /// A call that waited longer than this (ms) to start is shed with RESOURCE_EXHAUSTED (default 50).
    #[arg(long, env = "SESSIOND_MAX_QUEUE_DELAY_MS")]
    pub max_queue_delay_ms: Option<u64>,
    /// PEM certificate chain: with --tls-key, both listeners speak TLS.
    #[arg(long, env = "SESSIOND_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SESSIOND_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// gRPC calls in progress at once; more are shed with RESOURCE_EXHAUSTED (default 1024).
    #[arg(long, env = "SESSIOND_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Comma-separated IPs of REST shims (`sessiond rest`) whose
    /// x-forwarded-for is trusted for per-address throttling.
    #[arg(long, env = "SESSIOND_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// File holding the service credential that may watch every org's
    /// revocations (or set SESSIOND_SERVICE_CREDENTIAL; never on the command line).
    #[arg(long, env = "SESSIOND_SERVICE_CREDENTIAL_FILE")]
    pub service_credential_file: Option<PathBuf>,
    /// Base URL clients use to reach the REST shim behind a proxy, e.g.
    /// https://sessions.example.com (Informatica's serverUrl is built from it).
    #[arg(long, env = "SESSIOND_PUBLIC_URL")]
    pub public_url: Option<String>,
}

/// Environment variable holding the service credential itself.
pub const SERVICE_CREDENTIAL_ENV: &str = "SESSIOND_SERVICE_CREDENTIAL";

/// The TOML file: every flag by its snake_case name, and per-kind lifetimes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    grpc_addr: Option<SocketAddr>,
    rest_addr: Option<String>,
    store: Option<String>,
    upstream: Option<String>,
    demo: Option<bool>,
    idle_timeout_secs: Option<u64>,
    lifetime_secs: Option<u64>,
    touch_interval_secs: Option<u64>,
    sweep_interval_secs: Option<u64>,
    retention_secs: Option<u64>,
    audit_retention_secs: Option<u64>,
    argon2_memory_kib: Option<u32>,
    argon2_iterations: Option<u32>,
    max_failures_per_user: Option<u32>,
    max_failures_per_address: Option<u32>,
    failure_window_secs: Option<u64>,
    service_credential_file: Option<PathBuf>,
    trusted_proxies: Option<Vec<std::net::IpAddr>>,
    max_in_flight: Option<usize>,
    max_queue_delay_ms: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    public_url: Option<String>,
    #[serde(default)]
    kinds: HashMap<String, KindFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KindFile {
    idle_timeout_secs: Option<u64>,
    lifetime_secs: Option<u64>,
}

/// A configuration problem, said in words an operator can act on.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

fn secs(n: u64, what: &str) -> Result<Duration, ConfigError> {
    if n == 0 {
        return Err(ConfigError(format!("{what} must be at least 1 second")));
    }
    Ok(Duration::from_secs(n))
}

/// `off` disables; anything else must be an address.
pub fn parse_rest_addr(s: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| ConfigError(format!("rest address {s:?}: {e}")))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
}

impl ServeArgs {
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let mut c = Config::default();
        if let Some(a) = self.grpc_addr.or(file.grpc_addr) {
            c.grpc_addr = a;
        }
        if let Some(r) = self.rest_addr.or(file.rest_addr) {
            c.rest_addr = parse_rest_addr(&r)?;
        }
        if let Some(s) = self.store.or(file.store) {
            c.store = s.parse().map_err(ConfigError)?;
        }
        c.upstream = self.upstream.or(file.upstream);
        c.public_url = (self.public_url.or(file.public_url).as_deref())
            .map(crate::rest::parse_public_url)
            .transpose()
            .map_err(ConfigError)?;
        c.demo = self.demo || file.demo.unwrap_or(false);

        let idle = self.idle_timeout_secs.or(file.idle_timeout_secs);
        let life = self.lifetime_secs.or(file.lifetime_secs);
        for kind in Kind::ALL {
            let per = file.kinds.get(&kind.as_str().to_ascii_lowercase());
            let mut l = Lifetimes::default();
            if let Some(n) = per.and_then(|k| k.idle_timeout_secs).or(idle) {
                l.idle = secs(n, "idle_timeout_secs")?;
            }
            if let Some(n) = per.and_then(|k| k.lifetime_secs).or(life) {
                l.absolute = secs(n, "lifetime_secs")?;
            }
            c.policy.lifetimes.insert(kind, l);
        }
        for name in file.kinds.keys() {
            if name.parse::<Kind>().is_err() {
                return Err(ConfigError(format!(
                    "[kinds.{name}]: unknown kind (admin, api, imap, pop)"
                )));
            }
        }
        if let Some(n) = self.touch_interval_secs.or(file.touch_interval_secs) {
            // 0 is allowed: record every use (useful in tests).
            c.policy.touch_interval = Duration::from_secs(n);
        }
        if let Some(n) = self.sweep_interval_secs.or(file.sweep_interval_secs) {
            c.sweep_interval = secs(n, "sweep_interval_secs")?;
        }
        if let Some(n) = self.retention_secs.or(file.retention_secs) {
            c.retention = secs(n, "retention_secs")?;
        }
        if let Some(n) = self.audit_retention_secs.or(file.audit_retention_secs) {
            c.audit_retention = secs(n, "audit_retention_secs")?;
        }
        let mut cost = HashCost::default();
        if let Some(m) = self.argon2_memory_kib.or(file.argon2_memory_kib) {
            cost.memory_kib = m;
        }
        if let Some(t) = self.argon2_iterations.or(file.argon2_iterations) {
            cost.iterations = t;
        }
        c.policy.hash_cost = cost;
        let window = self.failure_window_secs.or(file.failure_window_secs);
        if let Some(n) = window {
            let w = secs(n, "failure_window_secs")?;
            c.policy.throttle_user.window = w;
            c.policy.throttle_address.window = w;
        }
        if let Some(n) = self.max_failures_per_user.or(file.max_failures_per_user) {
            c.policy.throttle_user.max_failures = n.max(1);
        }
        if let Some(n) = self
            .max_failures_per_address
            .or(file.max_failures_per_address)
        {
            c.policy.throttle_address.max_failures = n.max(1);
        }
        c.tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(ConfigError("--tls-cert and --tls-key go together".into())),
        };
        if let Some(ms) = self.max_queue_delay_ms.or(file.max_queue_delay_ms) {
            c.max_queue_delay = Duration::from_millis(ms.max(1));
        }
        if let Some(n) = self.max_in_flight.or(file.max_in_flight) {
            c.max_in_flight = n.max(1);
        }
        c.trusted_proxies = if self.trusted_proxies.is_empty() {
            file.trusted_proxies.unwrap_or_default()
        } else {
            self.trusted_proxies
        };
        let secret = match self
            .service_credential_file
            .or(file.service_credential_file)
        {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var(SERVICE_CREDENTIAL_ENV).ok(),
        };
        if let Some(secret) = secret {
            c.policy.service_credential =
                Some(ServiceCredential::new(&secret).map_err(ConfigError)?);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_kinds_override_global_and_flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "idle_timeout_secs = 100\nstore = \"sqlite::memory:\"\nrest_addr = \"off\"\n\
             [kinds.imap]\nidle_timeout_secs = 7\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            lifetime_secs: Some(500),
            ..Default::default()
        };
        let c = args.into_config().unwrap();
        assert_eq!(c.store, StoreUrl::SqliteMemory);
        assert_eq!(c.rest_addr, None);
        assert_eq!(c.policy.lifetimes[&Kind::Imap].idle, Duration::from_secs(7));
        assert_eq!(
            c.policy.lifetimes[&Kind::Api].idle,
            Duration::from_secs(100)
        );
        assert_eq!(
            c.policy.lifetimes[&Kind::Pop].absolute,
            Duration::from_secs(500)
        );
    }

    #[test]
    fn bad_values_are_refused_in_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[kinds.smtp]\nidle_timeout_secs = 7\n").unwrap();
        let err = ServeArgs {
            config: Some(path),
            ..Default::default()
        }
        .into_config()
        .unwrap_err();
        assert!(err.to_string().contains("smtp"), "{err}");
        let err = ServeArgs {
            store: Some("postgres://x".into()),
            ..Default::default()
        }
        .into_config()
        .unwrap_err();
        assert!(err.to_string().contains("unknown store"), "{err}");
    }
}
