//! Measures the validator and `sessiond edge` from outside:
//!
//! - `coherence`: for each kind of ending, N times: a session validated at
//!   the edge in a tight loop while sessiond ends it; the time from the
//!   ending's acknowledgement to the edge's first refusal, and every "valid"
//!   answer to a request sent later than the bound (a violation).
//! - `speed`: validations per second on one core through the library,
//!   against the same validation as a remote ValidateSession, in one run.
//! - `memory`: bytes per kept session (as the cache counts them, and as the
//!   process's resident memory grows), and the bounds holding under a flood
//!   of distinct valid tokens.
//!
//! Used by `scripts/bench-edge.sh`; every answer is checked.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use sessiond::pb::{self, session_service_client::SessionServiceClient, Kind};
use sessiond::validator::{Credential, Validator, ValidatorConfig};
use tonic::transport::Channel;
use tonic::{Code, Request};

type Client = SessionServiceClient<Channel>;
type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Coherence,
    Speed,
    Memory,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// sessiond's gRPC endpoint.
    #[arg(long)]
    upstream: String,
    /// The edge's gRPC endpoint (coherence).
    #[arg(long)]
    edge: Option<String>,
    /// Endings of each kind (coherence), or sessions (memory).
    #[arg(long, default_value = "500")]
    count: usize,
    /// The coherence bound, ms: a valid answer to a request sent later than
    /// this after an acknowledgement is a violation.
    #[arg(long, default_value = "20")]
    bound_ms: u64,
    /// The sessiond binary and the store, to disable a user as an operator.
    #[arg(long)]
    sessiond: Option<String>,
    #[arg(long)]
    store: Option<String>,
    /// A user of example.com with this password (coherence: disabled and enabled again).
    #[arg(long, default_value = "disable-me@example.com")]
    disable_user: String,
    #[arg(long, default_value = "disable-me-pass")]
    disable_password: String,
    /// Seconds per speed measurement.
    #[arg(long, default_value = "3")]
    secs: u64,
    /// Kinds of ending (coherence), comma-separated; default all.
    #[arg(long, value_delimiter = ',')]
    endings: Vec<String>,
    /// Label for the output lines.
    #[arg(long, default_value = "")]
    label: String,
}

const ADMIN: (&str, &str) = ("domain_admin@example.com", "pencil75");
const JOE: (&str, &str) = ("joe_user@example.com", "joe-pass-1");
const CO_USER: &str = "useremail@company.com";
const CO_ADMIN: (&str, &str) = ("admin@company.com", "admin-pass-1");

async fn client(url: &str) -> Res<Client> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_owned())?
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

async fn login(c: &mut Client, who: (&str, &str), kind: Kind) -> Res<(String, pb::Session)> {
    let r = c
        .login(pb::LoginRequest {
            username: who.0.into(),
            password: who.1.into(),
            kind: kind as i32,
            client: None,
        })
        .await?
        .into_inner();
    Ok((r.token, r.session.ok_or("login without a session")?))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What a tight validation loop saw of one token.
struct Seen {
    /// Receipt of the first refusal.
    first_refusal: Option<Instant>,
    /// Send times of valid answers.
    valid_sent: Vec<Instant>,
}

/// Validates `token` at the edge until it is refused, then `after` longer.
async fn watch_token(mut edge: Client, token: String, after: Duration) -> Res<Seen> {
    let mut seen = Seen {
        first_refusal: None,
        valid_sent: Vec::new(),
    };
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let sent = Instant::now();
        match edge
            .validate_session(pb::ValidateSessionRequest {
                token: token.clone(),
            })
            .await
        {
            Ok(_) => seen.valid_sent.push(sent),
            Err(s) if s.code() == Code::Unauthenticated => {
                seen.first_refusal.get_or_insert_with(Instant::now);
            }
            Err(s) => return Err(format!("edge answered {:?}: {}", s.code(), s.message()).into()),
        }
        if let Some(r) = seen.first_refusal {
            if r.elapsed() >= after {
                return Ok(seen);
            }
        }
        if Instant::now() > give_up {
            return Err("still valid 30 s after its ending".into());
        }
    }
}

async fn warm(edge: &mut Client, token: &str) -> Res<()> {
    for _ in 0..3 {
        edge.validate_session(pb::ValidateSessionRequest {
            token: token.into(),
        })
        .await?;
    }
    Ok(())
}

struct Trial {
    latency_ms: f64,
    violations: usize,
}

/// One ending: the session is validated at the edge in a loop, `end` is
/// called, and the loop's answers are judged against its acknowledgement.
async fn trial<F, Fut>(edge: &Client, token: &str, bound: Duration, end: F) -> Res<Trial>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Res<()>>,
{
    let mut e = edge.clone();
    warm(&mut e, token).await?;
    let watcher = tokio::spawn(watch_token(e, token.to_owned(), bound * 2));
    // Let the loop run before the ending.
    tokio::time::sleep(Duration::from_millis(2)).await;
    end().await?;
    let acked = Instant::now();
    let seen = watcher.await??;
    let first = seen.first_refusal.ok_or("never refused")?;
    Ok(Trial {
        latency_ms: first.saturating_duration_since(acked).as_secs_f64() * 1000.0,
        violations: seen
            .valid_sent
            .iter()
            .filter(|s| **s > acked + bound)
            .count(),
    })
}

fn report(label: &str, kind: &str, trials: &[Trial]) {
    let mut l: Vec<f64> = trials.iter().map(|t| t.latency_ms).collect();
    l.sort_by(f64::total_cmp);
    let violations: usize = trials.iter().map(|t| t.violations).sum();
    println!(
        "{label},{kind},{},{:.2},{:.2},{:.2},{violations}",
        l.len(),
        pct(&l, 0.5),
        pct(&l, 0.99),
        l.last().copied().unwrap_or(f64::NAN)
    );
}

fn operator(args: &Args, action: &str) -> Res<()> {
    let (Some(bin), Some(store)) = (&args.sessiond, &args.store) else {
        return Err("--sessiond and --store are needed to disable a user".into());
    };
    let out = std::process::Command::new(bin)
        .args(["user", action, &args.disable_user, "--store", store])
        .output()?;
    if !out.status.success() {
        return Err(format!("user {action}: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(())
}

async fn coherence(args: &Args) -> Res<()> {
    let edge = client(args.edge.as_deref().ok_or("--edge is needed")?).await?;
    let mut c = client(&args.upstream).await?;
    let bound = Duration::from_millis(args.bound_ms);
    let all = [
        "logoff",
        "logoff_other",
        "logout_user",
        "logout_all",
        "end_user_sessions",
        "password_changed",
        "disabled",
        "expired",
    ];
    let wanted: Vec<&str> = if args.endings.is_empty() {
        all.to_vec()
    } else {
        args.endings.iter().map(String::as_str).collect()
    };
    println!("# label,ending,count,median_ms,p99_ms,max_ms,valid_after_bound");
    let (admin, _) = login(&mut c, ADMIN, Kind::Admin).await?;
    let mut co_password = "mypassword".to_owned();
    for kind in wanted {
        let mut trials = Vec::with_capacity(args.count);
        if kind == "expired" {
            trials = expiries(args, &edge, &mut c, bound).await?;
            report(&args.label, kind, &trials);
            continue;
        }
        for _ in 0..args.count {
            let mut c2 = c.clone();
            let t = match kind {
                "logoff" => {
                    let (t, _) = login(&mut c, JOE, Kind::Api).await?;
                    let tt = t.clone();
                    trial(&edge, &t, bound, || async move {
                        c2.logoff(authed(pb::LogoffRequest {}, &tt)).await?;
                        Ok(())
                    })
                    .await?
                }
                "logoff_other" => {
                    let (t, s) = login(&mut c, ADMIN, Kind::Admin).await?;
                    let a = admin.clone();
                    trial(&edge, &t, bound, || async move {
                        c2.logoff_other(authed(
                            pb::LogoffOtherRequest {
                                session_id: s.id,
                                ..Default::default()
                            },
                            &a,
                        ))
                        .await?;
                        Ok(())
                    })
                    .await?
                }
                "logout_user" => {
                    let (t, _) = login(&mut c, JOE, Kind::Imap).await?;
                    let a = admin.clone();
                    trial(&edge, &t, bound, || async move {
                        c2.logout_user(pb::LogoutUserRequest {
                            credentials: Some(pb::Credentials {
                                user: ADMIN.0.into(),
                                secret: Some(pb::credentials::Secret::Token(a)),
                                client: String::new(),
                            }),
                            user: JOE.0.into(),
                        })
                        .await?;
                        Ok(())
                    })
                    .await?
                }
                "logout_all" => {
                    let (t, _) = login(&mut c, (CO_USER, &co_password), Kind::Api).await?;
                    trial(&edge, &t, bound, || async move {
                        c2.logout_all(pb::LogoutAllRequest {
                            username: CO_ADMIN.0.into(),
                            password: CO_ADMIN.1.into(),
                        })
                        .await?;
                        Ok(())
                    })
                    .await?
                }
                "end_user_sessions" => {
                    let (t, _) = login(&mut c, JOE, Kind::Api).await?;
                    let a = admin.clone();
                    trial(&edge, &t, bound, || async move {
                        c2.end_user_sessions(authed(
                            pb::EndUserSessionsRequest {
                                user: JOE.0.into(),
                                kinds: vec![Kind::Api as i32],
                                keep_current: false,
                            },
                            &a,
                        ))
                        .await?;
                        Ok(())
                    })
                    .await?
                }
                "password_changed" => {
                    let (t, _) = login(&mut c, (CO_USER, &co_password), Kind::Api).await?;
                    let (current, _) = login(&mut c, (CO_USER, &co_password), Kind::Api).await?;
                    let next = if co_password == "mypassword" {
                        "mypassword-two".to_owned()
                    } else {
                        "mypassword".to_owned()
                    };
                    let (old, new) = (co_password.clone(), next.clone());
                    let r = trial(&edge, &t, bound, || async move {
                        c2.change_password(authed(
                            pb::ChangePasswordRequest {
                                current_password: old,
                                new_password: new,
                            },
                            &current,
                        ))
                        .await?;
                        Ok(())
                    })
                    .await?;
                    co_password = next;
                    r
                }
                "disabled" => {
                    let who = (args.disable_user.as_str(), args.disable_password.as_str());
                    let (t, _) = login(&mut c, who, Kind::Api).await?;
                    let r = trial(&edge, &t, bound, || async { operator(args, "disable") }).await?;
                    operator(args, "enable")?;
                    r
                }
                other => return Err(format!("unknown ending {other}").into()),
            };
            trials.push(t);
        }
        report(&args.label, kind, &trials);
    }
    Ok(())
}

/// Sessions that reach their absolute lifetime (the server's POP lifetime
/// must be short): measured from `expires_at` to the edge's first refusal.
async fn expiries(args: &Args, edge: &Client, c: &mut Client, bound: Duration) -> Res<Vec<Trial>> {
    let mut tasks = Vec::new();
    for _ in 0..args.count {
        let (t, s) = login(c, JOE, Kind::Pop).await?;
        let expires = s.expires_at.ok_or("no expires_at")?;
        let expires_ms = expires.seconds * 1000 + i64::from(expires.nanos / 1_000_000);
        let mut e = edge.clone();
        warm(&mut e, &t).await?;
        tasks.push(tokio::spawn(async move {
            // Asleep until just before the deadline, then in a tight loop.
            let wait = expires_ms - now_ms() - 5;
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            let base = Instant::now();
            let base_ms = now_ms();
            let deadline =
                base + Duration::from_millis(u64::try_from(expires_ms - base_ms).unwrap_or(0));
            let seen = watch_token(e, t, bound * 2).await?;
            let first = seen.first_refusal.ok_or("never refused")?;
            Res::Ok(Trial {
                latency_ms: first.saturating_duration_since(deadline).as_secs_f64() * 1000.0,
                violations: seen
                    .valid_sent
                    .iter()
                    .filter(|s| **s > deadline + bound)
                    .count(),
            })
        }));
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    let mut trials = Vec::new();
    for t in tasks {
        trials.push(t.await??);
    }
    Ok(trials)
}

fn credential() -> Res<String> {
    Ok(std::env::var("SESSIOND_SERVICE_CREDENTIAL")
        .map_err(|_| "set SESSIOND_SERVICE_CREDENTIAL")?)
}

/// Validations per second and p50 on this one-thread runtime, `secs` long.
async fn rate<F, Fut>(secs: u64, mut call: F) -> Res<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Res<()>>,
{
    let mut samples = Vec::new();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        // Every 64th call timed alone: the clock costs more than a hit.
        let t = Instant::now();
        call().await?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        for _ in 0..63 {
            call().await?;
        }
        // As a service's request tasks would: let the validator's own
        // tasks (the feed, its heartbeats) run on this one thread.
        tokio::task::yield_now().await;
        n += 64;
    }
    let rps = n as f64 / start.elapsed().as_secs_f64();
    samples.sort_by(f64::total_cmp);
    Ok((rps, pct(&samples, 0.5)))
}

async fn speed(args: &Args) -> Res<()> {
    let mut c = client(&args.upstream).await?;
    let (token, _) = login(&mut c, JOE, Kind::Api).await?;
    let v = Validator::start(ValidatorConfig::new(
        args.upstream.clone(),
        Credential::service(credential()?),
    ))?;
    if !v.ready(Duration::from_secs(10)).await {
        return Err("the validator's feed never became fresh".into());
    }
    println!("# label,target,validations_per_s,p50_us (one thread)");
    for round in 1..=3 {
        let (remote, remote_p50) = rate(args.secs, || {
            let mut c = c.clone();
            let t = token.clone();
            async move {
                c.validate_session(pb::ValidateSessionRequest { token: t })
                    .await?;
                Ok(())
            }
        })
        .await?;
        let before = v.stats();
        let (local, local_p50) = rate(args.secs, || {
            let v = v.clone();
            let t = token.as_str();
            async move {
                v.validate(t).await?;
                Ok(())
            }
        })
        .await?;
        let after = v.stats();
        println!("{},remote-{round},{remote:.0},{remote_p50:.2}", args.label);
        println!("{},library-{round},{local:.0},{local_p50:.3}", args.label);
        let answered = after.from_memory - before.from_memory;
        let calls =
            (after.upstream_calls + after.touches) - (before.upstream_calls + before.touches);
        println!(
            "# round {round}: library/remote {:.0}x; {calls} upstream calls for {answered} library validations",
            local / remote
        );
    }
    Ok(())
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

async fn memory(args: &Args) -> Res<()> {
    let mut c = client(&args.upstream).await?;
    let mut tokens = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        tokens.push(login(&mut c, JOE, Kind::Api).await?.0);
    }
    println!("# label,measure,value");
    // Room for all: bytes per kept session.
    let mut config =
        ValidatorConfig::new(args.upstream.clone(), Credential::service(credential()?));
    config.max_entries = args.count * 2;
    config.max_bytes = usize::MAX / 2;
    let v = Validator::start(config)?;
    if !v.ready(Duration::from_secs(10)).await {
        return Err("the validator's feed never became fresh".into());
    }
    let rss0 = rss_bytes();
    for t in &tokens {
        v.validate(t).await?;
    }
    let rss1 = rss_bytes();
    let s = v.stats();
    println!("{},sessions_kept,{}", args.label, s.entries);
    println!(
        "{},cache_bytes_per_session,{:.0}",
        args.label,
        s.bytes as f64 / s.entries.max(1) as f64
    );
    println!(
        "{},rss_growth_per_session,{:.0}",
        args.label,
        rss1.saturating_sub(rss0) as f64 / s.entries.max(1) as f64
    );
    drop(v);
    // The bounds under a flood of distinct valid tokens.
    for (entries, bytes) in [(args.count / 4, usize::MAX / 2), (args.count * 2, 1 << 20)] {
        let mut config =
            ValidatorConfig::new(args.upstream.clone(), Credential::service(credential()?));
        config.max_entries = entries;
        config.max_bytes = bytes;
        let v = Validator::start(config)?;
        if !v.ready(Duration::from_secs(10)).await {
            return Err("the validator's feed never became fresh".into());
        }
        for t in &tokens {
            v.validate(t).await?;
        }
        let s = v.stats();
        let bytes_shown = if bytes > 1 << 40 {
            "unbounded".into()
        } else {
            bytes.to_string()
        };
        println!(
            "{},flood_of_{}_tokens_max_entries_{entries}_max_bytes_{bytes_shown},entries={} bytes={}",
            args.label,
            tokens.len(),
            s.entries,
            s.bytes
        );
        if s.entries > entries || s.bytes > bytes {
            return Err("a cache bound did not hold".into());
        }
    }
    Ok(())
}

fn main() -> Res<()> {
    let args = Args::parse();
    match args.mode {
        // One core for the speed comparison: both sides on one thread.
        Mode::Speed | Mode::Memory => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                match args.mode {
                    Mode::Speed => speed(&args).await,
                    _ => memory(&args).await,
                }
            }),
        Mode::Coherence => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(coherence(&args)),
    }
}
