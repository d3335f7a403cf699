//! Settings: one key space, where a key is a flag's name in snake_case
//! (`--grpc-addr` is `grpc_addr`), a TOML key of the `--config` file, and an
//! environment variable `SESSIOND_<KEY>`. Layered once (defaults, then the
//! file, then the environment, then flags) into [`Settings`], then validated
//! once into the typed [`Config`] a command runs with.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::{Deserialize, Serialize};

use crate::domain::password::HashCost;
use crate::domain::rate::Rate;
use crate::domain::Kind;
use crate::logging::LogFormat;
use crate::sessions::{Lifetimes, Policy, ServiceCredential};
use crate::store::{OpenOptions, StoreUrl};

/// Everything `sessiond serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    /// `None` disables the REST shim (`--rest-addr off`).
    pub rest_addr: Option<SocketAddr>,
    pub store: StoreUrl,
    /// How the store is opened (Redis key prefix).
    pub store_options: OpenOptions,
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
    pub trusted_proxies: Vec<IpAddr>,
    /// gRPC calls in progress at once before new ones are shed.
    pub max_in_flight: usize,
    /// A call that waited longer than this to start is shed.
    pub max_queue_delay: Duration,
    /// When set, both listeners speak TLS.
    pub tls: Option<crate::tls::TlsFiles>,
    /// The TOML file these settings came from, if any (logged at start).
    pub config_file: Option<PathBuf>,
    /// The base of Informatica's `serverUrl` behind a proxy (checked, no trailing slash).
    pub public_url: Option<String>,
    /// How log lines are written (the binary installs the subscriber).
    pub log_format: LogFormat,
    /// Timeouts and the per-address cap of every listener's connections.
    pub connections: crate::net::ConnLimits,
    /// Where Prometheus metrics are served (plain HTTP); `None`: nowhere.
    pub metrics_addr: Option<SocketAddr>,
    /// The forward-auth listener (`GET /auth`); `None`: none.
    pub auth_addr: Option<SocketAddr>,
    /// Forward auth also reads the token from this cookie.
    pub auth_cookie: Option<String>,
    /// The Shared Signals transmitter (served with the REST shim when the
    /// store is this process's own).
    pub signals: crate::signals::Settings,
    /// Identity providers that may call Global Token Revocation with their
    /// own secrets (besides the service credential).
    pub gtr_idps: Vec<crate::signals::gtr::IdentityProvider>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            rest_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            store: StoreUrl::SqliteFile("sessiond.db".into()),
            store_options: OpenOptions::default(),
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
            config_file: None,
            public_url: None,
            log_format: LogFormat::Text,
            connections: crate::net::ConnLimits::default(),
            metrics_addr: None,
            auth_addr: None,
            auth_cookie: None,
            signals: crate::signals::Settings::default(),
            gtr_idps: Vec::new(),
        }
    }
}

/// Every setting by its key, after layering; `None` where no layer set it.
/// The TOML file is read into this same type, so an unknown or mistyped key
/// in it is refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub grpc_addr: Option<SocketAddr>,
    pub rest_addr: Option<String>,
    pub store: Option<String>,
    pub redis_prefix: Option<String>,
    pub redis_shards: Option<u16>,
    pub redis_replica_acks: Option<u32>,
    pub upstream: Option<String>,
    pub upstream_ca: Option<PathBuf>,
    pub demo: Option<bool>,
    pub idle_timeout_secs: Option<u64>,
    pub lifetime_secs: Option<u64>,
    pub touch_interval_secs: Option<u64>,
    pub sweep_interval_secs: Option<u64>,
    pub retention_secs: Option<u64>,
    pub audit_retention_secs: Option<u64>,
    pub argon2_memory_kib: Option<u32>,
    pub argon2_iterations: Option<u32>,
    pub min_password_length: Option<usize>,
    pub max_failures_per_user: Option<u32>,
    pub max_failures_per_address: Option<u32>,
    pub failure_window_secs: Option<u64>,
    pub max_logins_per_user: Option<u32>,
    pub max_logins_per_address: Option<u32>,
    pub max_sessions_per_user: Option<u32>,
    pub max_endings_per_user: Option<u32>,
    pub max_endings_per_address: Option<u32>,
    pub rate_window_secs: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub max_queue_delay_ms: Option<u64>,
    pub trusted_proxies: Option<Vec<IpAddr>>,
    pub service_credential_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub public_url: Option<String>,
    pub log_format: Option<LogFormat>,
    pub metrics_addr: Option<SocketAddr>,
    pub auth_addr: Option<String>,
    pub auth_cookie: Option<String>,
    pub max_staleness_ms: Option<u64>,
    pub ssf_signing_key_file: Option<PathBuf>,
    pub ssf_push_allow: Option<String>,
    pub ssf_max_streams_per_org: Option<usize>,
    pub ssf_key_grace_secs: Option<u64>,
    /// Global Token Revocation's identity providers: each a table
    /// (`[[gtr_idp]]`, see [`GTR_IDP_KEYS`]) or the flag's
    /// `NAME:key=value,…` text; checked by [`Settings::gtr_idps`].
    pub gtr_idp: Option<Vec<serde_json::Value>>,
    pub cache_entries: Option<usize>,
    pub cache_bytes: Option<usize>,
    pub upstream_concurrency: Option<usize>,
    pub header_read_timeout_secs: Option<u64>,
    pub handshake_timeout_secs: Option<u64>,
    pub connection_idle_timeout_secs: Option<u64>,
    pub keepalive_interval_secs: Option<u64>,
    pub keepalive_timeout_secs: Option<u64>,
    pub body_read_timeout_secs: Option<u64>,
    pub max_connections_per_address: Option<usize>,
    /// Where traces are exported (OTLP/gRPC); none when unset.
    pub otlp_endpoint: Option<String>,
    /// Per-kind lifetimes (`[kinds.imap]`; kind names in any case). File only.
    #[serde(default)]
    pub kinds: BTreeMap<String, KindSettings>,
    /// Where the file layer came from.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

/// `[kinds.<kind>]` in the TOML file.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KindSettings {
    pub idle_timeout_secs: Option<u64>,
    pub lifetime_secs: Option<u64>,
}

/// Environment variable holding the service credential itself.
pub const SERVICE_CREDENTIAL_ENV: &str = "SESSIOND_SERVICE_CREDENTIAL";

/// The keys of a `gtr_idp` entry. The secret itself is never a value here:
/// it is read from a file or a variable, like the service credential's.
pub const GTR_IDP_KEYS: [&str; 5] = ["name", "secret_file", "secret_env", "org", "iss"];

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

/// The file's keys, checked against [`Settings`] (so a typo is named), and
/// as a map to layer.
fn read_file(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    let at = |e: toml::de::Error| ConfigError(format!("{}: {e}", path.display()));
    toml::from_str::<Settings>(&text).map_err(at)?;
    let table: toml::Table = toml::from_str(&text).map_err(at)?;
    match serde_json::to_value(table) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(ConfigError(format!(
            "{}: not a table of settings",
            path.display()
        ))),
    }
}

impl Settings {
    /// Layers one command's parsed flags (`args`, whose field names are the
    /// settings keys; `matches` tells which came from the command line or the
    /// environment and which are clap's defaults) over the TOML file.
    pub fn layered<A: Serialize>(
        args: &A,
        matches: &ArgMatches,
        file: Option<&Path>,
    ) -> Result<Settings, ConfigError> {
        let given = match serde_json::to_value(args) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err(ConfigError("flags are not a table of settings".into())),
        };
        let (mut merged, mut explicit) = (serde_json::Map::new(), serde_json::Map::new());
        for (key, value) in given {
            if value.is_null() {
                continue;
            }
            match matches.value_source(&key) {
                Some(ValueSource::DefaultValue) => merged.insert(key, value),
                Some(_) => explicit.insert(key, value),
                None => None,
            };
        }
        if let Some(path) = file {
            merged.extend(read_file(path)?);
        }
        merged.extend(explicit);
        let mut settings: Settings = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| ConfigError(e.to_string()))?;
        settings.config_file = file.map(Path::to_owned);
        Ok(settings)
    }

    pub fn store_url(&self) -> Result<StoreUrl, ConfigError> {
        match &self.store {
            Some(s) => s.parse().map_err(ConfigError),
            None => Ok(Config::default().store),
        }
    }

    pub fn store_options(&self) -> Result<OpenOptions, ConfigError> {
        let mut options = OpenOptions::default();
        if let Some(prefix) = &self.redis_prefix {
            options.redis_prefix =
                crate::store::redis::check_prefix(prefix).map_err(ConfigError)?;
        }
        if let Some(n) = self.redis_shards {
            options.redis_shards = crate::store::redis::check_shards(n).map_err(ConfigError)?;
        }
        if let Some(n) = self.redis_replica_acks {
            if n > 16 {
                return Err(ConfigError(format!("redis replica acks: 0 to 16, not {n}")));
            }
            options.redis_replica_acks = n;
        }
        Ok(options)
    }

    pub fn hash_cost(&self) -> HashCost {
        let mut cost = HashCost::default();
        if let Some(m) = self.argon2_memory_kib {
            cost.memory_kib = m;
        }
        if let Some(t) = self.argon2_iterations {
            cost.iterations = t;
        }
        cost
    }

    /// `--public-url`, checked.
    pub fn public_url(&self) -> Result<Option<String>, ConfigError> {
        self.public_url
            .as_deref()
            .map(crate::rest::parse_public_url)
            .transpose()
            .map_err(ConfigError)
    }

    /// The connection timeouts and per-address cap (every listener).
    pub fn conn_limits(&self) -> Result<crate::net::ConnLimits, ConfigError> {
        let mut l = crate::net::ConnLimits::default();
        let set = |n: Option<u64>, what: &str, d: &mut Duration| -> Result<(), ConfigError> {
            if let Some(n) = n {
                *d = secs(n, what)?;
            }
            Ok(())
        };
        set(
            self.header_read_timeout_secs,
            "header_read_timeout_secs",
            &mut l.header_read_timeout,
        )?;
        set(
            self.handshake_timeout_secs,
            "handshake_timeout_secs",
            &mut l.handshake_timeout,
        )?;
        set(
            self.connection_idle_timeout_secs,
            "connection_idle_timeout_secs",
            &mut l.idle_timeout,
        )?;
        set(
            self.keepalive_interval_secs,
            "keepalive_interval_secs",
            &mut l.keepalive_interval,
        )?;
        set(
            self.keepalive_timeout_secs,
            "keepalive_timeout_secs",
            &mut l.keepalive_timeout,
        )?;
        set(
            self.body_read_timeout_secs,
            "body_read_timeout_secs",
            &mut l.body_read_timeout,
        )?;
        if let Some(n) = self.max_connections_per_address {
            if n == 0 {
                return Err(ConfigError(
                    "max_connections_per_address must be at least 1".into(),
                ));
            }
            l.max_connections_per_address = n;
        }
        Ok(l)
    }

    pub fn tls_files(&self) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            _ => Err(ConfigError("--tls-cert and --tls-key go together".into())),
        }
    }

    /// The password rules and hashing cost (for `user` and `serve`).
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        let mut policy = Policy {
            hash_cost: self.hash_cost(),
            ..Policy::default()
        };
        if let Some(n) = self.min_password_length {
            policy.min_password_length = n;
        }
        policy.lifetimes = self.lifetimes()?;
        if let Some(n) = self.touch_interval_secs {
            // 0 is allowed: record every use (useful in tests).
            policy.touch_interval = Duration::from_secs(n);
        }
        if let Some(n) = self.failure_window_secs {
            let w = secs(n, "failure_window_secs")?;
            policy.throttle_user.window = w;
            policy.throttle_address.window = w;
        }
        if let Some(n) = self.max_failures_per_user {
            policy.throttle_user.max_failures = n.max(1);
        }
        if let Some(n) = self.max_failures_per_address {
            policy.throttle_address.max_failures = n.max(1);
        }
        let window = match self.rate_window_secs {
            Some(n) => secs(n, "rate_window_secs")?,
            None => policy.login_rate_user.window,
        };
        let rate = |n: Option<u32>, default: Rate| Rate {
            max: n.unwrap_or(default.max),
            window,
        };
        policy.login_rate_user = rate(self.max_logins_per_user, policy.login_rate_user);
        policy.login_rate_address = rate(self.max_logins_per_address, policy.login_rate_address);
        policy.ending_rate_user = rate(self.max_endings_per_user, policy.ending_rate_user);
        policy.ending_rate_address = rate(self.max_endings_per_address, policy.ending_rate_address);
        if let Some(n) = self.max_sessions_per_user {
            policy.max_sessions_per_user = n;
        }
        policy.service_credential = self.service_credential()?;
        Ok(policy)
    }

    /// Lifetimes of each kind: `[kinds.<kind>]` over the global values.
    fn lifetimes(&self) -> Result<HashMap<Kind, Lifetimes>, ConfigError> {
        let mut per_kind: HashMap<Kind, &KindSettings> = HashMap::new();
        for (name, k) in &self.kinds {
            let kind: Kind = name.to_ascii_lowercase().parse().map_err(|_| {
                ConfigError(format!(
                    "[kinds.{name}]: unknown kind (admin, api, imap, pop)"
                ))
            })?;
            if per_kind.insert(kind, k).is_some() {
                return Err(ConfigError(format!(
                    "[kinds.{name}]: kind {} is configured twice",
                    kind.as_str().to_ascii_lowercase()
                )));
            }
        }
        let mut out = HashMap::new();
        for kind in Kind::ALL {
            let per = per_kind.get(&kind);
            let mut l = Lifetimes::default();
            if let Some(n) = per
                .and_then(|k| k.idle_timeout_secs)
                .or(self.idle_timeout_secs)
            {
                l.idle = secs(n, "idle_timeout_secs")?;
            }
            if let Some(n) = per.and_then(|k| k.lifetime_secs).or(self.lifetime_secs) {
                l.absolute = secs(n, "lifetime_secs")?;
            }
            out.insert(kind, l);
        }
        Ok(out)
    }

    /// From `--service-credential-file`, else `SESSIOND_SERVICE_CREDENTIAL`.
    fn service_credential(&self) -> Result<Option<ServiceCredential>, ConfigError> {
        self.service_credential_text()?
            .map(|s| ServiceCredential::new(&s).map_err(ConfigError))
            .transpose()
    }

    fn service_credential_text(&self) -> Result<Option<String>, ConfigError> {
        Ok(match &self.service_credential_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var(SERVICE_CREDENTIAL_ENV).ok(),
        })
    }

    fn auth_listener(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match &self.auth_addr {
            None => Ok(None),
            Some(a) if a.eq_ignore_ascii_case("off") => Ok(None),
            Some(a) => a
                .parse()
                .map(Some)
                .map_err(|e| ConfigError(format!("auth address {a:?}: {e}"))),
        }
    }

    fn auth_cookie(&self) -> Result<Option<String>, ConfigError> {
        match &self.auth_cookie {
            Some(c)
                if c.is_empty()
                    || c.len() > 256
                    || !c
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                Err(ConfigError(format!(
                    "auth cookie name {c:?}: 1 to 256 letters, digits, '-', '_' or '.'"
                )))
            }
            other => Ok(other.clone()),
        }
    }

    /// The Shared Signals transmitter's settings.
    pub fn signals(&self) -> Result<crate::signals::Settings, ConfigError> {
        use crate::signals::keys::{KeySource, DEFAULT_GRACE};
        let mut s = crate::signals::Settings::default();
        let grace = match self.ssf_key_grace_secs {
            Some(n) => secs(n, "ssf_key_grace_secs")?,
            None => DEFAULT_GRACE,
        };
        // A retired key must outlive the switch to the next one, or SETs it
        // signed just before would stop verifying.
        let least = crate::signals::keys::KEY_AHEAD * 2;
        if grace < least {
            return Err(ConfigError(format!(
                "ssf_key_grace_secs must be at least {} seconds (twice the time a new key is \
                 published before it signs)",
                least.as_secs()
            )));
        }
        s.keys = match &self.ssf_signing_key_file {
            Some(path) => {
                // Read now, so a bad file stops the start with its reason.
                let der =
                    crate::signals::keys::read_pem(path).map_err(|e| ConfigError(e.to_string()))?;
                crate::signals::keys::record(der.clone(), 0)
                    .and_then(|_| crate::signals::keys::check_signs(&der))
                    .map_err(|e| ConfigError(format!("signing key {}: {e}", path.display())))?;
                KeySource::File(path.clone())
            }
            None => KeySource::Store {
                grace,
                ahead: crate::signals::keys::KEY_AHEAD,
            },
        };
        if let Some(list) = &self.ssf_push_allow {
            s.push_allow = crate::signals::push::AllowList::parse(list).map_err(ConfigError)?;
        }
        match self.ssf_max_streams_per_org {
            Some(0) => {
                return Err(ConfigError(
                    "ssf_max_streams_per_org must be above 0".into(),
                ))
            }
            Some(n) => s.max_streams_per_org = n.min(10_000),
            None => {}
        }
        Ok(s)
    }

    /// Global Token Revocation's identity providers (`gtr_idp`), each secret
    /// read now so a bad one stops the start with its reason.
    pub fn gtr_idps(&self) -> Result<Vec<crate::signals::gtr::IdentityProvider>, ConfigError> {
        use crate::signals::gtr::IdentityProvider;
        let Some(list) = &self.gtr_idp else {
            return Ok(Vec::new());
        };
        if list.len() > IdentityProvider::MAX_COUNT {
            return Err(ConfigError(format!(
                "gtr_idp: at most {} identity providers, not {}",
                IdentityProvider::MAX_COUNT,
                list.len()
            )));
        }
        let mut idps = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            // A trailing ';' in the variable leaves an empty entry.
            if entry.as_str().is_some_and(|s| s.trim().is_empty()) {
                continue;
            }
            let idp = gtr_idp_entry(entry)
                .map_err(|e| ConfigError(format!("gtr_idp entry {}: {e}", i + 1)))?;
            idps.push(idp);
        }
        IdentityProvider::check_all(&idps).map_err(|e| ConfigError(format!("gtr_idp: {e}")))?;
        if let Some(service) = self.service_credential_text()? {
            if let Some(idp) = idps.iter().find(|i| i.matches(&service)) {
                return Err(ConfigError(format!(
                    "gtr_idp: identity provider {} has the service credential as its secret; \
                     give it its own",
                    idp.name()
                )));
            }
        }
        Ok(idps)
    }

    /// The validated configuration of `sessiond edge`.
    pub fn edge_config(&self) -> Result<crate::edge::EdgeConfig, ConfigError> {
        use crate::validator::{Credential, ValidatorConfig};
        let upstream = self.upstream.clone().ok_or_else(|| {
            ConfigError("sessiond edge needs --upstream (or SESSIOND_UPSTREAM, or upstream in the config file)".into())
        })?;
        let secret = self.service_credential_text()?.ok_or_else(|| {
            ConfigError(format!(
                "sessiond edge needs the upstream's service credential: {SERVICE_CREDENTIAL_ENV} or --service-credential-file"
            ))
        })?;
        // The same rules as the upstream's own (length, characters).
        ServiceCredential::new(&secret).map_err(ConfigError)?;
        let mut v = ValidatorConfig::new(upstream, Credential::service(secret.trim()));
        if let Some(path) = &self.upstream_ca {
            v.upstream_ca = Some(
                std::fs::read(path)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?,
            );
        }
        if let Some(ms) = self.max_staleness_ms {
            if !(200..=60_000).contains(&ms) {
                return Err(ConfigError("max_staleness_ms: from 200 to 60000".into()));
            }
            v.max_staleness = Duration::from_millis(ms);
        }
        if let Some(n) = self.touch_interval_secs {
            if !(1..=86_400).contains(&n) {
                return Err(ConfigError(
                    "touch_interval_secs: from 1 to 86400 for the edge".into(),
                ));
            }
            v.touch_interval = secs(n, "touch_interval_secs")?;
        }
        let positive = |n: Option<usize>, what: &str, d: &mut usize| -> Result<(), ConfigError> {
            match n {
                Some(0) => Err(ConfigError(format!("{what} must be above 0"))),
                Some(n) => {
                    *d = n;
                    Ok(())
                }
                None => Ok(()),
            }
        };
        positive(self.cache_entries, "cache_entries", &mut v.max_entries)?;
        positive(self.cache_bytes, "cache_bytes", &mut v.max_bytes)?;
        positive(
            self.upstream_concurrency,
            "upstream_concurrency",
            &mut v.max_upstream_calls,
        )?;
        let grpc_addr = self
            .grpc_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50061)));
        let mut e = crate::edge::EdgeConfig::new(v, grpc_addr);
        e.auth_addr = self.auth_listener()?;
        e.auth_cookie = self.auth_cookie()?;
        e.metrics_addr = self.metrics_addr;
        e.connections = self.conn_limits()?;
        if let Some(ms) = self.max_queue_delay_ms {
            e.max_queue_delay = Duration::from_millis(ms.max(1));
        }
        if let Some(n) = self.max_in_flight {
            e.max_in_flight = n.max(1);
        }
        Ok(e)
    }

    /// The validated configuration of `sessiond serve`.
    pub fn serve_config(self) -> Result<Config, ConfigError> {
        let mut c = Config {
            policy: self.policy()?,
            store: self.store_url()?,
            store_options: self.store_options()?,
            tls: self.tls_files()?,
            public_url: self.public_url()?,
            connections: self.conn_limits()?,
            metrics_addr: self.metrics_addr,
            auth_addr: self.auth_listener()?,
            auth_cookie: self.auth_cookie()?,
            signals: self.signals()?,
            gtr_idps: self.gtr_idps()?,
            ..Config::default()
        };
        if let Some(a) = self.grpc_addr {
            c.grpc_addr = a;
        }
        if let Some(r) = &self.rest_addr {
            c.rest_addr = parse_rest_addr(r)?;
        }
        c.upstream = self.upstream;
        c.demo = self.demo.unwrap_or(false);
        if let Some(n) = self.sweep_interval_secs {
            c.sweep_interval = secs(n, "sweep_interval_secs")?;
        }
        if let Some(n) = self.retention_secs {
            c.retention = secs(n, "retention_secs")?;
        }
        if let Some(n) = self.audit_retention_secs {
            c.audit_retention = secs(n, "audit_retention_secs")?;
        }
        if let Some(ms) = self.max_queue_delay_ms {
            c.max_queue_delay = Duration::from_millis(ms.max(1));
        }
        if let Some(n) = self.max_in_flight {
            c.max_in_flight = n.max(1);
        }
        c.trusted_proxies = self.trusted_proxies.unwrap_or_default();
        c.log_format = self.log_format.unwrap_or_default();
        c.config_file = self.config_file;
        Ok(c)
    }
}

/// One `gtr_idp` entry: a table, or `NAME:key=value,…` (the flag's form,
/// where a value cannot hold a `,` or a `;`).
fn gtr_idp_entry(
    entry: &serde_json::Value,
) -> Result<crate::signals::gtr::IdentityProvider, String> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    match entry {
        serde_json::Value::Object(table) => {
            for (key, value) in table {
                let serde_json::Value::String(v) = value else {
                    return Err(format!("{key} must be a string"));
                };
                fields.insert(key.clone(), v.clone());
            }
        }
        serde_json::Value::String(text) => {
            let (name, rest) = text.trim().split_once(':').ok_or(
                "expected NAME:secret_file=PATH (or secret_env=VARIABLE)[,org=ORG][,iss=ISSUER]",
            )?;
            fields.insert("name".into(), name.to_owned());
            for (n, pair) in rest.split(',').enumerate() {
                // The part itself is not echoed: it may be a pasted secret.
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("part {} after the name is not key=value", n + 1))?;
                if key == "name" || fields.insert(key.to_owned(), value.to_owned()).is_some() {
                    return Err(format!("{key} is given twice"));
                }
            }
        }
        _ => return Err("a table or a NAME:key=value,… string".into()),
    }
    if let Some(key) = fields.keys().find(|k| !GTR_IDP_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key {key:?} (known: {})",
            GTR_IDP_KEYS.join(", ")
        ));
    }
    let name = fields.get("name").ok_or("name is required")?;
    let secret = match (fields.get("secret_file"), fields.get("secret_env")) {
        (Some(path), None) => std::fs::read_to_string(path)
            .map_err(|e| format!("identity provider {name}: cannot read {path}: {e}"))?,
        (None, Some(var))
            if var.is_empty()
                || var.len() > 256
                || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            return Err(format!(
                "identity provider {name}: secret_env names a variable: 1 to 256 letters, \
                 digits or '_'"
            ))
        }
        (None, Some(var)) => std::env::var(var)
            .map_err(|e| format!("identity provider {name}: secret_env {var}: {e}"))?,
        _ => {
            return Err(format!(
                "identity provider {name}: give exactly one of secret_file and secret_env \
                 (the secret itself is never a setting)"
            ))
        }
    };
    crate::signals::gtr::IdentityProvider::new(
        name,
        &secret,
        fields.get("org").map(String::as_str),
        fields.get("iss").map(String::as_str),
    )
}

/// The configuration `sessiond serve ARGS…` would run with (flags,
/// environment, file and defaults, layered and validated).
pub fn serve_config_from<I, T>(args: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = ["sessiond".into(), "serve".into()]
        .into_iter()
        .chain(args.into_iter().map(Into::into));
    let (cli, matches) = crate::cli::parse_from(argv).map_err(|e| ConfigError(e.to_string()))?;
    let (crate::cli::Command::Serve(serve), Some(sub)) =
        (cli.command, matches.subcommand_matches("serve"))
    else {
        return Err(ConfigError("not a serve command".into()));
    };
    Settings::layered(&*serve, sub, serve.config.as_deref())?.serve_config()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<Config, ConfigError> {
        serve_config_from(args)
    }

    #[test]
    fn file_kinds_override_global_and_flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "idle_timeout_secs = 100\nlifetime_secs = 9\nstore = \"sqlite::memory:\"\n\
             rest_addr = \"off\"\ndemo = true\n[kinds.IMAP]\nidle_timeout_secs = 7\n",
        )
        .unwrap();
        let c = serve(&["--config", path.to_str().unwrap(), "--lifetime-secs", "500"]).unwrap();
        assert_eq!(c.store, StoreUrl::SqliteMemory);
        assert_eq!(c.rest_addr, None);
        assert!(c.demo);
        assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
        assert_eq!(c.policy.lifetimes[&Kind::Imap].idle, Duration::from_secs(7));
        assert_eq!(
            c.policy.lifetimes[&Kind::Api].idle,
            Duration::from_secs(100)
        );
        assert_eq!(
            c.policy.lifetimes[&Kind::Pop].absolute,
            Duration::from_secs(500)
        );
        // Defaults stay where no layer says otherwise.
        assert_eq!(c.grpc_addr, Config::default().grpc_addr);
        assert_eq!(c.sweep_interval, Duration::from_secs(30));
    }

    #[test]
    fn log_format_comes_from_the_file_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "log_format = \"json\"\n").unwrap();
        let c = serve(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(serve(&[]).unwrap().log_format, LogFormat::Text);
        std::fs::write(&path, "log_format = \"xml\"\n").unwrap();
        let err = serve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("xml"), "{err}");
        assert!(serve(&["--log-format", "yaml"]).is_err());
    }

    #[test]
    fn call_rates_and_the_session_cap_are_configured() {
        let c = serve(&[
            "--max-logins-per-user",
            "7",
            "--max-endings-per-address",
            "0",
            "--rate-window-secs",
            "30",
            "--max-sessions-per-user",
            "0",
        ])
        .unwrap();
        let p = &c.policy;
        assert_eq!(
            p.login_rate_user,
            Rate {
                max: 7,
                window: Duration::from_secs(30)
            }
        );
        assert_eq!(p.login_rate_address.max, 3000);
        assert_eq!(p.login_rate_address.window, Duration::from_secs(30));
        assert!(p.ending_rate_address.is_off());
        assert_eq!(p.ending_rate_user.max, 600);
        assert_eq!(p.max_sessions_per_user, 0);
        assert_eq!(serve(&[]).unwrap().policy.max_sessions_per_user, 500);
        assert!(serve(&["--rate-window-secs", "0"]).is_err());
    }

    #[test]
    fn bad_values_are_refused_in_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[kinds.smtp]\nidle_timeout_secs = 7\n").unwrap();
        let err = serve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("smtp"), "{err}");
        std::fs::write(&path, "[kinds.imap]\n[kinds.Imap]\n").unwrap();
        let err = serve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        std::fs::write(&path, "idle_timeout = 5\n").unwrap();
        let err = serve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("idle_timeout"), "{err}");
        let err = serve(&["--store", "postgres://x"]).unwrap_err();
        assert!(err.to_string().contains("unknown store"), "{err}");
        let err = serve(&["--redis-prefix", "a{b}"]).unwrap_err();
        assert!(err.to_string().contains("prefix"), "{err}");
    }

    #[test]
    fn connection_limits_default_for_production_and_refuse_zero() {
        let c = serve(&[]).unwrap();
        assert_eq!(c.connections, crate::net::ConnLimits::default());
        assert_eq!(c.connections.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.connections.max_connections_per_address, 256);
        assert_eq!(c.metrics_addr, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "max_connections_per_address = 7\n").unwrap();
        let c = serve(&[
            "--config",
            path.to_str().unwrap(),
            "--connection-idle-timeout-secs",
            "5",
            "--metrics-addr",
            "127.0.0.1:9464",
        ])
        .unwrap();
        assert_eq!(c.connections.max_connections_per_address, 7);
        assert_eq!(c.connections.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        for bad in [
            ["--handshake-timeout-secs", "0"],
            ["--body-read-timeout-secs", "0"],
            ["--max-connections-per-address", "0"],
        ] {
            assert!(serve(&bad).is_err(), "{bad:?} accepted");
        }
    }
}
