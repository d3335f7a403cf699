//! Measures the Shared Signals transmitter from outside: a real `sessiond
//! serve` (started here, on its own store), push receivers in this process,
//! and a poll receiver.
//!
//! - latency: endings one after another; each one's acknowledgement time,
//!   and the time from its acknowledgement to the push receiver's 202.
//!   Taken three times in one run: with no stream at all (the baseline of
//!   the acknowledgement), with one push stream, and with a second push
//!   stream whose receiver never answers.
//! - bulk: a LogoutAll of `--bulk` API sessions (seeded through the store):
//!   the time until the last SET reached a push receiver, then (another
//!   seeding, the push stream deleted) until a poll receiver taking
//!   `maxEvents` 1000 had acknowledged the last one; sessiond's CPU time per
//!   SET for each.
//!
//! Used by `scripts/bench-ssf.sh`; every SET is counted by the session it
//! names, so a lost or foreign one fails the run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;
use serde_json::{json, Value};
use sessiond::pb::{self, session_service_client::SessionServiceClient, Kind};
use tonic::transport::Channel;
use tonic::Request;

type Client = SessionServiceClient<Channel>;
type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Parser)]
struct Args {
    /// The sessiond binary to measure.
    #[arg(long, default_value = "target/release/sessiond")]
    sessiond: String,
    /// Its store (a new SQLite file by default, in a temporary directory).
    #[arg(long)]
    store: Option<String>,
    /// Endings measured one by one in each latency phase.
    #[arg(long, default_value = "500")]
    count: usize,
    /// Pause between two endings of the latency phases, ms.
    #[arg(long, default_value = "10")]
    gap_ms: u64,
    /// Sessions ended by the bulk LogoutAll (0: no bulk phase).
    #[arg(long, default_value = "100000")]
    bulk: usize,
    /// Label for the output lines.
    #[arg(long, default_value = "")]
    label: String,
}

const SECRET: &str = "ssf-bench-service-credential-0123456789";
const JOE: (&str, &str) = ("joe_user@example.com", "joe-pass-1");
const CO_USER: (&str, &str) = ("useremail@company.com", "mypassword");

/// The session a session-revoked SET names (its payload read without
/// verification: the test suite verifies signatures with jwcrypto).
fn session_of(jwt: &str) -> Option<i64> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub_id"]["session"]["id"].as_str()?.parse().ok()
}

/// A push receiver: when each session's SET arrived (the first time), and
/// how many deliveries in all. `hang`: never answers.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<HashMap<i64, Instant>>>,
    deliveries: Arc<Mutex<u64>>,
}

impl Receiver {
    async fn start(hang: bool) -> Res<(Self, String)> {
        let r = Receiver::default();
        let state = r.clone();
        let app = axum::Router::new().route(
            "/events",
            axum::routing::post(move |body: String| {
                let state = state.clone();
                async move {
                    if hang {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    let at = Instant::now();
                    *state.deliveries.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    if let Some(id) = session_of(&body) {
                        state
                            .seen
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(id)
                            .or_insert(at);
                    }
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/events", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((r, url))
    }

    fn arrived(&self, id: i64) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The sessiond under measurement.
struct Server {
    child: Child,
    grpc: SocketAddr,
    rest: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(args: &Args, store: &str) -> Res<Server> {
    let mut child = Command::new(&args.sessiond)
        .args([
            "serve",
            "--demo",
            "--store",
            store,
            "--grpc-addr",
            "127.0.0.1:0",
            "--rest-addr",
            "127.0.0.1:0",
            "--ssf-push-allow",
            "127.0.0.1",
            "--max-sessions-per-user",
            "0",
            // The bench logs in and ends far more than a person would.
            "--max-logins-per-user",
            "0",
            "--max-logins-per-address",
            "0",
            "--max-endings-per-user",
            "0",
            "--max-endings-per-address",
            "0",
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
        ])
        .env("SESSIOND_SERVICE_CREDENTIAL", SECRET)
        .env("RUST_LOG", "warn,sessiond=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            for (what, marker) in [
                ("grpc", "grpc listening on "),
                ("rest", "rest listening on "),
            ] {
                if let Some(i) = line.find(marker) {
                    let rest = &line[i + marker.len()..];
                    let addr = rest
                        .split(|c: char| c.is_whitespace() || c == '"')
                        .next()
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    if let Some(a) = addr {
                        let _ = tx.send((what, a));
                    }
                }
            }
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("sessiond: {line}");
            }
        }
    });
    let (mut grpc, mut rest) = (None, None);
    while grpc.is_none() || rest.is_none() {
        match rx.recv_timeout(Duration::from_secs(60))? {
            ("grpc", a) => grpc = Some(a),
            (_, a) => rest = Some(a),
        }
    }
    Ok(Server {
        child,
        grpc: grpc.ok_or("no gRPC address")?,
        rest: rest.ok_or("no REST address")?,
    })
}

/// CPU seconds (user + system) the process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) at its ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

async fn client(addr: SocketAddr) -> Res<Client> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(SessionServiceClient::new(ch))
}

fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

async fn login(c: &mut Client, who: (&str, &str)) -> Res<(String, i64)> {
    let r = c
        .login(pb::LoginRequest {
            username: who.0.into(),
            password: who.1.into(),
            kind: Kind::Api as i32,
            client: None,
        })
        .await?
        .into_inner();
    let id = r.session.map(|s| i64::from(s.id)).ok_or("no session")?;
    Ok((r.token, id))
}

async fn ssf(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Res<Value> {
    let mut req = http.request(method, url).bearer_auth(SECRET);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await?;
    let status = r.status();
    let text = r.text().await?;
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}: {text}").into());
    }
    Ok(if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)?
    })
}

async fn push_stream(http: &reqwest::Client, rest: SocketAddr, url: &str) -> Res<String> {
    let s = ssf(
        http,
        reqwest::Method::POST,
        &format!("http://{rest}/ssf/streams"),
        Some(json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": url}})),
    )
    .await?;
    Ok(s["stream_id"].as_str().ok_or("no stream_id")?.to_owned())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `count` Logoffs one after another: each acknowledgement's time and, with
/// a receiver, the time from it to the receiver's 202.
async fn latency(args: &Args, c: &mut Client, phase: &str, receiver: Option<&Receiver>) -> Res<()> {
    let mut tokens = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        tokens.push(login(c, JOE).await?);
    }
    let mut acks = Vec::with_capacity(args.count);
    let mut ended = Vec::with_capacity(args.count);
    for (token, id) in tokens {
        let asked = Instant::now();
        c.logoff(authed(pb::LogoffRequest {}, &token)).await?;
        let acked = Instant::now();
        acks.push(ms(acked - asked));
        ended.push((id, acked));
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    acks.sort_by(f64::total_cmp);
    let mut line = format!(
        "{} latency[{phase}]: {} endings, acknowledgement p50 {:.2} ms p99 {:.2} ms",
        args.label,
        args.count,
        pct(&acks, 0.5),
        pct(&acks, 0.99)
    );
    if let Some(r) = receiver {
        let deadline = Instant::now() + Duration::from_secs(30);
        while ended.iter().any(|(id, _)| r.arrived(*id).is_none()) {
            if Instant::now() > deadline {
                return Err(format!("{phase}: a SET never reached the receiver").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut lat: Vec<f64> = ended
            .iter()
            .filter_map(|(id, acked)| {
                r.arrived(*id)
                    .map(|at| ms(at.saturating_duration_since(*acked)))
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        line.push_str(&format!(
            "; acknowledgement to receiver 202 p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN)
        ));
    }
    println!("{line}");
    Ok(())
}

/// `n` API sessions of the company.com user, made through the store.
async fn seed(store: &str, n: usize) -> Res<()> {
    let url: sessiond::store::StoreUrl = store.parse()?;
    let s = sessiond::store::open_with(&url, &sessiond::store::OpenOptions::default()).await?;
    let user = s.find_user(CO_USER.0).await?.ok_or("no demo user")?;
    let now = sessiond::sessions::now_millis();
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 8;
    for w in 0..workers {
        let s = s.clone();
        let uid = user.user.id;
        tasks.spawn(async move {
            for _ in (w..n).step_by(workers) {
                let digest = sessiond::domain::Token::generate_for_org("company.com")?.digest();
                s.create_session(sessiond::domain::NewSession {
                    digest,
                    kind: sessiond::domain::Kind::Api,
                    user_id: uid,
                    now,
                    idle_deadline: now + 3_600_000,
                    expires_at: now + 7_200_000,
                    client: Default::default(),
                })
                .await?;
            }
            Ok::<_, sessiond::domain::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

async fn logout_all(c: &mut Client) -> Res<(u32, Duration)> {
    let t = Instant::now();
    let r = c
        .logout_all(pb::LogoutAllRequest {
            username: CO_USER.0.into(),
            password: CO_USER.1.into(),
        })
        .await?
        .into_inner();
    Ok((r.ended, t.elapsed()))
}

/// A bulk phase: sessions seeded, then one LogoutAll, timed with
/// sessiond's CPU from the call on.
struct Bulk {
    cpu0: f64,
    start: Instant,
    acked: Duration,
}

impl Bulk {
    async fn start(args: &Args, store: &str, server: &Server, c: &mut Client) -> Res<Bulk> {
        seed(store, args.bulk).await?;
        let cpu0 = cpu_secs(server.child.id());
        let start = Instant::now();
        let (ended, acked) = logout_all(c).await?;
        if ended as usize != args.bulk {
            return Err(format!("LogoutAll ended {ended}, not {}", args.bulk).into());
        }
        Ok(Bulk { cpu0, start, acked })
    }

    /// The phase's line, once the last SET reached the receiver (`reached`
    /// says how).
    fn report(&self, args: &Args, server: &Server, method: &str, reached: &str) {
        let took = self.start.elapsed();
        let cpu = cpu_secs(server.child.id()) - self.cpu0;
        println!(
            "{} bulk[{method}]: LogoutAll of {} acknowledged in {:.2} s; {reached} {:.2} s after the call ({:.0} SETs/s); sessiond CPU {:.1} µs per SET (ending included)",
            args.label,
            args.bulk,
            self.acked.as_secs_f64(),
            took.as_secs_f64(),
            args.bulk as f64 / took.as_secs_f64(),
            cpu / args.bulk as f64 * 1e6
        );
    }
}

async fn bulk_push(
    args: &Args,
    store: &str,
    server: &Server,
    c: &mut Client,
    r: &Receiver,
) -> Res<()> {
    let before = r.count();
    let bulk = Bulk::start(args, store, server, c).await?;
    let want = before + args.bulk;
    let deadline = Instant::now() + Duration::from_secs(300);
    while r.count() < want {
        if Instant::now() > deadline {
            return Err(format!(
                "push: {} of {} SETs after 300 s",
                r.count() - before,
                args.bulk
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bulk.report(args, server, "push", "last SET at the push receiver");
    Ok(())
}

async fn bulk_poll(
    args: &Args,
    store: &str,
    server: &Server,
    c: &mut Client,
    http: &reqwest::Client,
) -> Res<()> {
    let s = ssf(
        http,
        reqwest::Method::POST,
        &format!("http://{}/ssf/streams", server.rest),
        Some(json!({"org": "company.com"})),
    )
    .await?;
    let poll_url = s["delivery"]["endpoint_url"]
        .as_str()
        .ok_or("no poll URL")?
        .to_owned();
    let bulk = Bulk::start(args, store, server, c).await?;

    let mut seen = std::collections::HashSet::with_capacity(args.bulk);
    let mut ack: Vec<String> = Vec::new();
    let mut polls = 0;
    while seen.len() < args.bulk {
        if bulk.start.elapsed() > Duration::from_secs(300) {
            return Err(format!("poll: {} of {} SETs after 300 s", seen.len(), args.bulk).into());
        }
        let got = ssf(
            http,
            reqwest::Method::POST,
            &poll_url,
            Some(json!({"ack": ack, "maxEvents": 1000, "returnImmediately": false})),
        )
        .await?;
        polls += 1;
        let sets = got["sets"].as_object().ok_or("no sets")?;
        ack = sets.keys().cloned().collect();
        for jwt in sets.values() {
            if let Some(id) = jwt.as_str().and_then(session_of) {
                seen.insert(id);
            }
        }
    }
    // The last acknowledgement: the receiver has them all.
    ssf(
        http,
        reqwest::Method::POST,
        &poll_url,
        Some(json!({"ack": ack, "maxEvents": 0, "returnImmediately": true})),
    )
    .await?;
    bulk.report(
        args,
        server,
        "poll",
        &format!("last SET acknowledged by the poll receiver (maxEvents 1000, {polls} polls)"),
    );
    Ok(())
}

async fn run(args: Args) -> Res<()> {
    let dir = std::env::temp_dir().join(format!("sessiond-ssf-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = args
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.join("bench.db").display()));
    let server = start_server(&args, &store)?;
    let http = reqwest::Client::new();
    let mut c = client(server.grpc).await?;

    latency(&args, &mut c, "no stream", None).await?;
    let (good, good_url) = Receiver::start(false).await?;
    let good_id = push_stream(&http, server.rest, &good_url).await?;
    latency(&args, &mut c, "one push stream", Some(&good)).await?;
    let (_hung, hung_url) = Receiver::start(true).await?;
    let hung_id = push_stream(&http, server.rest, &hung_url).await?;
    latency(
        &args,
        &mut c,
        "one push stream + one that never answers",
        Some(&good),
    )
    .await?;

    if args.bulk > 0 {
        // The hanging receiver stays: its stream owes every SET, and holds
        // no one up.
        bulk_push(&args, &store, &server, &mut c, &good).await?;
        for id in [&good_id, &hung_id] {
            ssf(
                &http,
                reqwest::Method::DELETE,
                &format!("http://{}/ssf/streams?stream_id={id}", server.rest),
                None,
            )
            .await?;
        }
        bulk_poll(&args, &store, &server, &mut c, &http).await?;
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> Res<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}
