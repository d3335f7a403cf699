//! Load generator for sessiond, over real gRPC (or HTTP for the REST shim).
//!
//! Every answer is checked; errors are counted by code, never hidden. Latency
//! goes into an HDR histogram (microseconds). Modes:
//!
//! - `validate`: log in `--tokens` API sessions (or take the `--token`s
//!   given), then ValidateSession them.
//! - `login`: log in `--tokens` API sessions and print their tokens, one per
//!   line; with `--grpc-body FILE`, also write the first one's
//!   ValidateSession request as a gRPC message (5-byte frame header, then the
//!   protobuf) for a load tool that sends a fixed body, such as h2load.
//! - `cycle`: Login + ValidateSession + Logoff per iteration.
//! - `ras-grpc` / `ras-rest`: the RAS logon + logoff pair, over gRPC
//!   (Login(ADMIN) + Logoff) or through the REST shim.
//! - `storm`: `validate` while `--storm` tasks log in without pause
//!   (reports the validations; run the server at production Argon2 cost).
//! - `bulk`: an in-process server on `--store`, seeded with `--sessions` API
//!   and IMAP sessions of one org among `--unrelated` others; times one
//!   LogoutAll and one LogoutUser over gRPC.
//! - `watch`: a revocation watcher of `--org` with the service credential
//!   (`SESSIOND_SERVICE_CREDENTIAL`): prints `ready` once the stream is
//!   open, then, after `--events` events, the Unix time in microseconds at
//!   which the last one arrived (a watcher in its own optimized process,
//!   for measuring how fast endings reach watchers).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use sessiond::pb::session_service_client::SessionServiceClient;
use sessiond::pb::{self, Kind};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Validate,
    Login,
    Cycle,
    RasGrpc,
    RasRest,
    Storm,
    Bulk,
    Watch,
}

#[derive(Debug, Parser)]
#[command(name = "sessiond-loadgen", about = "Load generator for sessiond")]
struct Args {
    #[arg(long, value_enum, default_value = "validate")]
    mode: Mode,
    /// gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// REST shim base URL (ras-rest).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    rest: String,
    /// HTTP/2 connections (requests are spread over them).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of measurement (after warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Stop after this many requests instead (per run, after warm-up).
    #[arg(long)]
    requests: Option<u64>,
    #[arg(long, default_value = "joe_user@example.com")]
    user: String,
    #[arg(long, default_value = "joe-pass-1")]
    password: String,
    #[arg(long, default_value = "domain_admin@example.com")]
    admin_user: String,
    #[arg(long, default_value = "pencil75")]
    admin_password: String,
    /// Milliseconds from the start of one call of a worker to the start of
    /// its next (0: no pause): a steady light load, to measure latency
    /// without adding load.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Sessions to validate across (validate, storm), or to log in (login).
    #[arg(long, default_value_t = 256)]
    tokens: usize,
    /// Validate this token instead of logging in (validate; repeatable).
    #[arg(long = "token")]
    given_tokens: Vec<String>,
    /// Where `login` writes the first token's framed ValidateSession request.
    #[arg(long)]
    grpc_body: Option<std::path::PathBuf>,
    /// Login tasks running without pause (storm).
    #[arg(long, default_value_t = 8)]
    storm: usize,
    /// Store for the in-process server (bulk).
    #[arg(long, default_value = "sqlite::memory:")]
    store: String,
    /// Sessions of the target org to end (bulk).
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Sessions of other orgs present (bulk).
    #[arg(long, default_value_t = 0)]
    unrelated: usize,
    /// Rounds of seeding and ending the target org (bulk); medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Organization to watch (watch).
    #[arg(long, default_value = "example.com")]
    org: String,
    /// Events to wait for (watch).
    #[arg(long, default_value_t = 1)]
    events: u64,
    /// Print one CSV line instead of the report.
    #[arg(long)]
    csv: bool,
    /// Label for the CSV line.
    #[arg(long, default_value = "")]
    label: String,
}

type Client = SessionServiceClient<Channel>;

/// What one worker saw.
struct Tally {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    ok: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            errors: BTreeMap::new(),
            ok: 0,
        }
    }

    fn record(&mut self, started: Instant, outcome: Result<(), String>) {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let _ = self.latency.record(us.clamp(1, 60_000_000));
        match outcome {
            Ok(()) => self.ok += 1,
            Err(code) => *self.errors.entry(code).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

async fn clients(args: &Args) -> Result<Vec<Client>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for _ in 0..args.connections.max(1) {
        // Lazy: modes that never call gRPC (ras-rest) never connect, and a
        // connection failure is counted as a request error like any other.
        let ch = Endpoint::from_shared(args.target.clone())?
            .tcp_nodelay(true)
            .connect_lazy();
        out.push(SessionServiceClient::new(ch).max_decoding_message_size(1 << 20));
    }
    Ok(out)
}

fn code(s: &tonic::Status) -> String {
    format!("{:?}", s.code())
}

fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

async fn login(
    c: &mut Client,
    user: &str,
    password: &str,
    kind: Kind,
) -> Result<(String, i32), String> {
    let r = c
        .login(pb::LoginRequest {
            username: user.into(),
            password: password.into(),
            kind: kind as i32,
            client: None,
        })
        .await
        .map_err(|s| code(&s))?
        .into_inner();
    let id = r.session.map(|s| s.id).ok_or("no session")?;
    if r.token.is_empty() || id <= 0 {
        return Err("malformed login answer".into());
    }
    Ok((r.token, id))
}

async fn validate(c: &mut Client, token: &str) -> Result<(), String> {
    let r = c
        .validate_session(pb::ValidateSessionRequest {
            token: token.into(),
        })
        .await
        .map_err(|s| code(&s))?
        .into_inner();
    match r.session {
        Some(s) if s.id > 0 => Ok(()),
        _ => Err("malformed validate answer".into()),
    }
}

async fn logoff(c: &mut Client, token: &str) -> Result<(), String> {
    c.logoff(authed(pb::LogoffRequest {}, token))
        .await
        .map(|_| ())
        .map_err(|s| code(&s))
}

/// One unit of work for `mode`; the latency recorded covers all of it.
async fn one(
    mode: Mode,
    args: &Args,
    c: &mut Client,
    http: &reqwest::Client,
    tokens: &[String],
    i: usize,
) -> Result<(), String> {
    match mode {
        Mode::Validate | Mode::Storm => validate(c, &tokens[i % tokens.len()]).await,
        Mode::Cycle => {
            let (t, _) = login(c, &args.user, &args.password, Kind::Api).await?;
            validate(c, &t).await?;
            logoff(c, &t).await
        }
        Mode::RasGrpc => {
            let (t, _) = login(c, &args.admin_user, &args.admin_password, Kind::Admin).await?;
            logoff(c, &t).await
        }
        Mode::RasRest => {
            let r = http
                .post(format!("{}/api/Session/logon", args.rest))
                .header("content-type", "application/json; api-version=1.0")
                .body(format!(
                    "{{\"username\":\"{}\",\"password\":\"{}\"}}",
                    args.admin_user, args.admin_password
                ))
                .send()
                .await
                .map_err(|e| format!("http: {e}"))?;
            if r.status() != 200 {
                return Err(format!("HTTP {}", r.status().as_u16()));
            }
            let body: serde_json::Value = r.json().await.map_err(|e| format!("json: {e}"))?;
            let token = body["authToken"].as_str().ok_or("no authToken")?.to_owned();
            let r = http
                .post(format!("{}/api/Session/logoff", args.rest))
                .header("auth_token", token)
                .send()
                .await
                .map_err(|e| format!("http: {e}"))?;
            match r.status().as_u16() {
                200 => Ok(()),
                s => Err(format!("HTTP {s}")),
            }
        }
        Mode::Login | Mode::Bulk | Mode::Watch => Err("not a loop mode".into()),
    }
}

/// Runs `concurrency` workers for warm-up + duration; returns the merged tally
/// of the measured part and its wall time.
async fn drive(
    args: Arc<Args>,
    clients: Vec<Client>,
    tokens: Arc<Vec<String>>,
) -> (Tally, Duration) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .build()
        .expect("http client");
    let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup);
    let stop = Arc::new(AtomicBool::new(false));
    let remaining = Arc::new(std::sync::atomic::AtomicU64::new(
        args.requests.unwrap_or(u64::MAX),
    ));
    let mut workers = Vec::new();
    for w in 0..args.concurrency.max(1) {
        let (args, tokens, stop, remaining) = (
            args.clone(),
            tokens.clone(),
            stop.clone(),
            remaining.clone(),
        );
        let mut client = clients[w % clients.len()].clone();
        let http = http.clone();
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let outcome = one(args.mode, &args, &mut client, &http, &tokens, i).await;
                i += args.concurrency;
                if started >= warm_until {
                    tally.record(started, outcome);
                    if remaining.fetch_sub(1, Ordering::Relaxed) <= 1 {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                if args.interval_ms > 0 {
                    let next = started + Duration::from_millis(args.interval_ms);
                    tokio::time::sleep_until(next.into()).await;
                }
            }
            tally
        }));
    }
    tokio::time::sleep_until(warm_until.into()).await;
    let measured_from = Instant::now();
    if args.requests.is_none() {
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut total = Tally::new();
    for w in workers {
        if let Ok(t) = w.await {
            total.merge(t);
        }
    }
    (total, measured_from.elapsed())
}

fn report(args: &Args, t: &Tally, wall: Duration) {
    let n = t.ok + t.errors.values().sum::<u64>();
    let rps = n as f64 / wall.as_secs_f64();
    let q = |p: f64| t.latency.value_at_quantile(p) as f64 / 1000.0;
    let errors: u64 = t.errors.values().sum();
    if args.csv {
        println!(
            "{},{:?},{},{:.0},{:.3},{:.3},{:.3},{}",
            args.label,
            args.mode,
            args.concurrency,
            rps,
            q(0.5),
            q(0.99),
            q(0.999),
            errors
        );
        return;
    }
    println!(
        "mode {:?}  connections {}  concurrency {}  measured {:.1}s",
        args.mode,
        args.connections,
        args.concurrency,
        wall.as_secs_f64()
    );
    println!("  requests  {n} ({} ok, {errors} errors)", t.ok);
    println!("  rate      {rps:.0} req/s");
    println!(
        "  latency   p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        q(0.5),
        q(0.99),
        q(0.999),
        t.latency.max() as f64 / 1000.0
    );
    for (code, count) in &t.errors {
        println!("  error     {code}: {count}");
    }
}

async fn run_loop(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let args = Arc::new(args);
    let mut cs = clients(&args).await?;
    let mut tokens = args.given_tokens.clone();
    if matches!(args.mode, Mode::Validate | Mode::Storm) && tokens.is_empty() {
        tokens = api_sessions(&mut cs[0], &args).await?;
    }
    let storm_stop = Arc::new(AtomicBool::new(false));
    let mut storm = Vec::new();
    if args.mode == Mode::Storm {
        for i in 0..args.storm {
            let mut c = cs[i % cs.len()].clone();
            let (stop, user, pw) = (storm_stop.clone(), args.user.clone(), args.password.clone());
            storm.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if login(&mut c, &user, &pw, Kind::Api).await.is_ok() {
                        n += 1;
                    }
                }
                n
            }));
        }
    }
    let (tally, wall) = drive(args.clone(), cs, Arc::new(tokens.clone())).await;
    storm_stop.store(true, Ordering::Relaxed);
    let mut logins = 0;
    for s in storm {
        logins += s.await.unwrap_or(0);
    }
    report(&args, &tally, wall);
    if matches!(args.mode, Mode::Validate | Mode::Storm) {
        let mut c = clients(&args)
            .await?
            .into_iter()
            .next()
            .ok_or("no client")?;
        still_valid(&mut c, &tokens).await?;
    }
    if args.mode == Mode::Storm && !args.csv {
        println!("  storm     {logins} logins completed alongside");
    }
    Ok(())
}

/// Every token the run validated is still valid after it: a run that ended
/// or corrupted a session would not be a measure of validation.
async fn still_valid(c: &mut Client, tokens: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    for t in tokens {
        validate(c, t)
            .await
            .map_err(|e| format!("a token was no longer valid after the run: {e}"))?;
    }
    Ok(())
}

/// Logs in `--tokens` API sessions of `--user`; their tokens.
async fn api_sessions(c: &mut Client, args: &Args) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    for _ in 0..args.tokens.max(1) {
        let (t, _) = login(c, &args.user, &args.password, Kind::Api)
            .await
            .map_err(|e| format!("setup login failed: {e}"))?;
        tokens.push(t);
    }
    Ok(tokens)
}

/// Logs in `--tokens` API sessions and prints the tokens; see `Mode::Login`.
async fn run_login(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    use prost::Message;
    let mut c = clients(&args)
        .await?
        .into_iter()
        .next()
        .ok_or("no client")?;
    let tokens = api_sessions(&mut c, &args).await?;
    if let (Some(path), Some(first)) = (&args.grpc_body, tokens.first()) {
        let msg = pb::ValidateSessionRequest {
            token: first.clone(),
        }
        .encode_to_vec();
        // gRPC's message framing: not compressed, then the length (big-endian).
        let len = u32::try_from(msg.len()).map_err(|_| "request too large")?;
        let mut framed = vec![0u8];
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&msg);
        std::fs::write(path, framed)?;
    }
    for t in tokens {
        println!("{t}");
    }
    Ok(())
}

/// The bulk user's name and password, and the unrelated org's user.
const BULK_USER: (&str, &str) = ("bulk@bulk.example", "bulk-pass-1");
const OTHER_USER: (&str, &str) = ("other@other.example", "other-pass-1");

/// Seeds an in-process server's store directly, then times the bulk endings
/// over real gRPC.
async fn run_bulk(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    use sessiond::domain::{Kind, Role};
    let running = bulk_server(&args.store).await?;
    let sessions = running.sessions.clone();
    let target = sessions
        .add_user(BULK_USER.0, "bulk.example", Role::User, BULK_USER.1)
        .await?;
    let other = sessions
        .add_user(OTHER_USER.0, "other.example", Role::User, OTHER_USER.1)
        .await?;
    let store = sessions.store();
    let started = Instant::now();
    seed(store, other.id, "other.example", Kind::Api, args.unrelated).await?;
    eprintln!(
        "seeded {} unrelated sessions in {:?}",
        args.unrelated,
        started.elapsed()
    );
    let mail = (args.sessions / 10).max(1);
    let mut c = SessionServiceClient::connect(format!("http://{}", running.grpc_addr)).await?;
    let (mut all_times, mut user_times) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        seed(store, target.id, "bulk.example", Kind::Api, args.sessions).await?;
        seed(store, target.id, "bulk.example", Kind::Imap, mail).await?;
        let (user_time, all_time) = time_endings(&mut c, mail, args.sessions).await?;
        user_times.push(user_time);
        all_times.push(all_time);
    }
    report_bulk(&args, mail, &mut all_times, &mut user_times);
    running.shutdown().await?;
    Ok(())
}

/// Watches `--org` until `--events` events came; prints when the last did.
async fn run_watch(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    use tonic::metadata::MetadataValue;
    let secret = std::env::var("SESSIOND_SERVICE_CREDENTIAL")
        .map_err(|_| "watch needs SESSIOND_SERVICE_CREDENTIAL")?;
    let mut c = SessionServiceClient::new(
        Endpoint::from_shared(args.target.clone())?
            .connect()
            .await?,
    )
    .max_decoding_message_size(16 * 1024 * 1024);
    let mut request = tonic::Request::new(pb::WatchRevocationsRequest {
        after_sequence: None,
        org: args.org.clone(),
        kinds: vec![],
        after_cursor: String::new(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {secret}"))?,
    );
    let mut feed = c.watch_revocations(request).await?.into_inner();
    println!("ready");
    let mut seen = 0u64;
    while seen < args.events {
        match feed.message().await? {
            Some(m) => seen += u64::from(m.revocation.is_some()),
            None => return Err(format!("the stream ended after {seen} events").into()),
        }
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    println!("{}", now.as_micros());
    Ok(())
}

/// An in-process server on `store` with cheap Argon2.
async fn bulk_server(store: &str) -> Result<sessiond::server::Running, Box<dyn std::error::Error>> {
    let mut config = sessiond::config::Config {
        grpc_addr: "127.0.0.1:0".parse()?,
        rest_addr: None,
        store: store.parse().map_err(|e: String| e)?,
        ..Default::default()
    };
    config.policy.hash_cost = sessiond::domain::password::HashCost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    Ok(sessiond::server::start(config).await?)
}

/// `n` live sessions of `kind` for user `uid`, written to the store directly.
async fn seed(
    store: &Arc<dyn sessiond::store::Store>,
    uid: i64,
    org: &'static str,
    kind: sessiond::domain::Kind,
    n: usize,
) -> Result<(), String> {
    use sessiond::domain::{ClientInfo, NewSession, Token};
    let now = sessiond::sessions::now_millis();
    let store = store.clone();
    let mut pending = bounded(n, 256, move |_| {
        let store = store.clone();
        async move {
            // The token names its org's shard (Redis); SQLite ignores it.
            let digest = Token::generate_for_org(org)
                .map(|t| t.digest())
                .map_err(|e| e.to_string())?;
            store
                .create_session(NewSession {
                    digest,
                    kind,
                    user_id: uid,
                    now,
                    idle_deadline: now + 3_600_000,
                    expires_at: now + 7_200_000,
                    client: ClientInfo::default(),
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    });
    pending.run().await
}

/// One round: LogoutUser (the mail sessions), then LogoutAll (the API
/// sessions), each timed and its count checked.
async fn time_endings(
    c: &mut SessionServiceClient<Channel>,
    mail: usize,
    api: usize,
) -> Result<(Duration, Duration), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let user = c
        .logout_user(pb::LogoutUserRequest {
            credentials: Some(pb::Credentials {
                user: BULK_USER.0.into(),
                secret: Some(pb::credentials::Secret::Password(BULK_USER.1.into())),
                client: String::new(),
            }),
            user: BULK_USER.0.into(),
        })
        .await?
        .into_inner()
        .ended;
    let user_time = t.elapsed();
    let t = Instant::now();
    let all = c
        .logout_all(pb::LogoutAllRequest {
            username: BULK_USER.0.into(),
            password: BULK_USER.1.into(),
        })
        .await?
        .into_inner()
        .ended;
    let all_time = t.elapsed();
    if user as usize != mail || all as usize != api {
        return Err(
            format!("ended {user} mail and {all} API sessions; expected {mail} and {api}").into(),
        );
    }
    Ok((user_time, all_time))
}

/// Medians of the rounds, as a CSV row or as text.
fn report_bulk(args: &Args, mail: usize, all_times: &mut [Duration], user_times: &mut [Duration]) {
    all_times.sort();
    user_times.sort();
    let (all_time, user_time) = (
        all_times[all_times.len() / 2],
        user_times[user_times.len() / 2],
    );
    if args.csv {
        println!(
            "{},{},{},{:.2},{:.0},{},{:.2},{}",
            args.label,
            args.unrelated,
            args.sessions,
            all_time.as_secs_f64() * 1000.0,
            args.sessions as f64 / all_time.as_secs_f64(),
            mail,
            user_time.as_secs_f64() * 1000.0,
            all_times.len()
        );
    } else {
        println!(
            "store {}  unrelated sessions {}  rounds {}",
            args.store,
            args.unrelated,
            all_times.len()
        );
        println!(
            "  LogoutAll  ended {} API sessions: median {all_time:?}",
            args.sessions
        );
        println!("  LogoutUser ended {mail} IMAP sessions: median {user_time:?}");
    }
}

/// Runs `n` jobs with at most `width` in flight (no extra dependency).
struct Bounded<F> {
    n: usize,
    width: usize,
    make: F,
}

fn bounded<F>(n: usize, width: usize, make: F) -> Bounded<F> {
    Bounded { n, width, make }
}

impl<F, Fut> Bounded<F>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    async fn run(&mut self) -> Result<(), String> {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..self.n {
            if set.len() >= self.width {
                if let Some(r) = set.join_next().await {
                    r.map_err(|e| e.to_string())??;
                }
            }
            set.spawn((self.make)(i));
        }
        while let Some(r) = set.join_next().await {
            r.map_err(|e| e.to_string())??;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    match args.mode {
        Mode::Bulk => run_bulk(args).await,
        Mode::Watch => run_watch(args).await,
        Mode::Login => run_login(args).await,
        _ => run_loop(args).await,
    }
}
