//! Shared test support: a real server on an ephemeral port (in-process or the
//! real binary), real tonic clients, and helpers to read error details.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sessiond::config::Config;
use sessiond::domain::password::HashCost;
use sessiond::pb::session_service_client::SessionServiceClient;
use sessiond::pb::{self, Kind};
use sessiond::server::{self, Running};
use sessiond::store::StoreUrl;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

pub type Client = SessionServiceClient<Channel>;

/// Argon2 cheap enough for tests; production cost is measured in benchmarks.
pub const CHEAP_HASH: HashCost = HashCost {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

/// Flags giving the binary the same cheap hashing.
pub const CHEAP_HASH_FLAGS: [&str; 4] = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"];

/// A config for an in-process test server: port 0, in-memory store, demo users.
pub fn test_config() -> Config {
    let mut c = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        rest_addr: None,
        store: StoreUrl::SqliteMemory,
        demo: true,
        ..Config::default()
    };
    c.policy.hash_cost = CHEAP_HASH;
    // Tests share a loaded machine, where a call can wait past the
    // production bound with no flood at all; tests of shedding set their own.
    c.max_queue_delay = std::time::Duration::from_secs(1);
    c
}

pub struct TestServer {
    pub running: Running,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config();
        adjust(&mut config);
        let running = server::start(config).await.expect("server starts");
        TestServer { running }
    }

    /// A server with the REST shim on its own ephemeral port.
    pub async fn start_rest() -> Self {
        Self::start_rest_with(|_| {}).await
    }

    pub async fn start_rest_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_with(|c| {
            c.rest_addr = Some("127.0.0.1:0".parse().unwrap());
            adjust(c);
        })
        .await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.running.grpc_addr)
    }

    /// Base URL of the REST shim (`start_rest` only).
    pub fn rest(&self) -> String {
        format!(
            "http://{}",
            self.running.rest_addr.expect("started with the REST shim")
        )
    }

    pub async fn client(&self) -> Client {
        connect(&self.url()).await
    }
}

pub async fn connect(url: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match SessionServiceClient::connect(url.to_owned()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The demo users (username, password, org).
pub const DOMAIN_ADMIN: (&str, &str) = ("domain_admin@example.com", "pencil75");
pub const JOE: (&str, &str) = ("joe_user@example.com", "joe-pass-1");
pub const USEREMAIL: (&str, &str) = ("useremail@company.com", "mypassword");
pub const COMPANY_ADMIN: (&str, &str) = ("admin@company.com", "admin-pass-1");

pub async fn try_login(
    client: &mut Client,
    who: (&str, &str),
    kind: Kind,
) -> Result<pb::LoginResponse, Status> {
    client
        .login(pb::LoginRequest {
            username: who.0.into(),
            password: who.1.into(),
            kind: kind as i32,
            client: None,
        })
        .await
        .map(|r| r.into_inner())
}

/// Logs in and returns (token, session).
pub async fn login(client: &mut Client, who: (&str, &str), kind: Kind) -> (String, pb::Session) {
    let r = try_login(client, who, kind)
        .await
        .unwrap_or_else(|s| panic!("login {} {kind:?}: {s:?}", who.0));
    (r.token, r.session.expect("session in login answer"))
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    req
}

pub async fn validate(client: &mut Client, token: &str) -> Result<pb::Session, Status> {
    client
        .validate_session(pb::ValidateSessionRequest {
            token: token.into(),
        })
        .await
        .map(|r| r.into_inner().session.expect("session"))
}

pub async fn is_valid(client: &mut Client, token: &str) -> bool {
    match validate(client, token).await {
        Ok(_) => true,
        Err(s) if s.code() == Code::Unauthenticated => false,
        Err(s) => panic!("unexpected validation failure: {s:?}"),
    }
}

/// The ErrorInfo reason of a status (panics when there is none: every error
/// this service returns must carry one).
pub fn reason(status: &Status) -> String {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "sessiond");
    info.reason
}

/// Asserts code and ErrorInfo reason.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    why: &str,
) -> Status {
    let status = match result {
        Ok(v) => panic!("expected {code:?}/{why}, got success {v:?}"),
        Err(s) => s,
    };
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(&status), why, "{status:?}");
    status
}

/// The real `sessiond` binary, started with the given args; the bound gRPC
/// address is read from its log. Killed on drop.
pub struct ServerProcess {
    pub child: Child,
    /// `None` for `sessiond rest` (the shim alone).
    pub grpc: Option<SocketAddr>,
    pub rest_addr: Option<SocketAddr>,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProcess {
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_env(args, &[])
    }

    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(sessiond_bin());
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let want_grpc = args.first() == Some(&"serve");
        let rest_off = args
            .windows(2)
            .any(|w| w[0] == "--rest-addr" && w[1] == "off");
        let want_rest = args.first() == Some(&"rest") || (want_grpc && !rest_off);
        Self::from_command(cmd, want_grpc, want_rest)
    }

    /// Runs `cmd` (a sessiond, however started) and waits until it has
    /// logged the listening lines it is expected to log.
    pub fn from_command(mut cmd: Command, want_grpc: bool, want_rest: bool) -> Self {
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sessiond");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = addr_after(&line, "grpc listening on ") {
                    let _ = tx.send(("grpc", a));
                }
                if let Some(a) = addr_after(&line, "rest listening on ") {
                    let _ = tx.send(("rest", a));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut grpc_addr = None;
        let mut rest_addr = None;
        // Long enough for `cargo run` to check that nothing needs building.
        let deadline = Instant::now() + Duration::from_secs(120);
        while (want_grpc && grpc_addr.is_none()) || (want_rest && rest_addr.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(("grpc", a)) => grpc_addr = Some(a),
                Ok((_, a)) => rest_addr = Some(a),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "sessiond did not report its addresses; log:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            }
        }
        ServerProcess {
            child,
            grpc: grpc_addr,
            rest_addr,
            log,
        }
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.expect("this process serves gRPC")
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc_addr())
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log once it holds `needle` (lines arrive through a reader thread,
    /// a moment after the call that wrote them returned), or as it is after
    /// 10 s.
    pub fn log_text_once(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.log_text();
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "sessiond did not stop on SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    // A text line ends the address with a space, a JSON line with a quote.
    rest.split(|c: char| c.is_whitespace() || c == '"')
        .next()?
        .parse()
        .ok()
}

/// `serve` args for the binary on a SQLite file, ports 0, cheap hashing.
pub fn serve_args(db: &Path) -> Vec<String> {
    serve_args_for(&format!("sqlite://{}", db.display()))
}

/// `serve` args for the binary on any store, ports 0, cheap hashing.
pub fn serve_args_for(store: &str) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--demo".into(),
        "--store".into(),
        store.into(),
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--rest-addr".into(),
        "off".into(),
    ];
    args.extend(CHEAP_HASH_FLAGS.iter().map(|s| s.to_string()));
    args
}

/// An HTTP client for the REST shim tests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// Status, content type and JSON body (Null when the body is empty).
pub async fn json_of(resp: reqwest::Response) -> (u16, String, serde_json::Value) {
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = resp.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    (status, ct, body)
}

/// A private `redis-server` on a free port, in its own directory; killed on
/// drop. Never the shared 6379.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    durable: bool,
}

impl RedisServer {
    /// No persistence (fast).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Append-only file with fsync on every write, so data survives a restart.
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            durable,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(self.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if self.durable {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "\n\n*** redis-server could not be started ({e}). The Redis tests need it: \
                 `apt-get install -y redis-server` (.ci/run does this). ***\n"
            )
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops it (SIGKILL: as abrupt as a crash or a network cut).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `sessiond serve` process on `redis` (ports 0, demo users, cheap
/// hashing), with the REST shim when `rest`; extra environment as given.
pub fn redis_replica(redis: &RedisServer, rest: bool, env: &[(&str, &str)]) -> ServerProcess {
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--store".into(),
        redis.url(),
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--rest-addr".into(),
        if rest { "127.0.0.1:0" } else { "off" }.into(),
        "--demo".into(),
        "--sweep-interval-secs".into(),
        "1".into(),
    ];
    args.extend(CHEAP_HASH_FLAGS.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::spawn_env(&refs, env)
}

/// RAS `POST /api/Session/logon` as `who` against the shim at `base`.
pub async fn ras_logon(base: &str, who: (&str, &str)) -> (u16, String, serde_json::Value) {
    json_of(
        http()
            .post(format!("{base}/api/Session/logon"))
            .header("content-type", "application/json")
            .json(&serde_json::json!({"username": who.0, "password": who.1}))
            .send()
            .await
            .expect("HTTP request"),
    )
    .await
}

/// The OpenSRS documentation's logout_user call over gRPC: the demo admin logs out joe's mail
/// sessions; returns how many ended.
pub async fn logout_joe(c: &mut Client) -> u32 {
    c.logout_user(sessiond::pb::LogoutUserRequest {
        credentials: Some(sessiond::pb::Credentials {
            user: DOMAIN_ADMIN.0.into(),
            secret: Some(sessiond::pb::credentials::Secret::Password(
                DOMAIN_ADMIN.1.into(),
            )),
            client: String::new(),
        }),
        user: JOE.0.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .ended
}

/// A port that was free a moment ago (and whose +10000 neighbour is not
/// needed): for commands that must be given a fixed port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The environment that makes a README command run here: ports 0, cheap
/// hashing, a queue-delay bound a loaded test machine does not trip (the
/// addresses are read from the listening lines).
pub const QUIET_SERVE_ENV: [(&str, &str); 5] = [
    ("SESSIOND_GRPC_ADDR", "127.0.0.1:0"),
    ("SESSIOND_MAX_QUEUE_DELAY_MS", "1000"),
    ("SESSIOND_REST_ADDR", "127.0.0.1:0"),
    ("SESSIOND_ARGON2_MEMORY_KIB", "64"),
    ("SESSIOND_ARGON2_ITERATIONS", "1"),
];

/// The `sessiond` the tests start: this build's, or the one named by
/// `SESSIOND_TEST_BIN` (to take the slow tests' figures from a release
/// build: `SESSIOND_TEST_BIN=target/release/sessiond`).
pub fn sessiond_bin() -> std::ffi::OsString {
    std::env::var_os("SESSIOND_TEST_BIN")
        .unwrap_or_else(|| std::ffi::OsString::from(env!("CARGO_BIN_EXE_sessiond")))
}

/// `PATH` with the directory of the `sessiond` under test first, as
/// `cargo install --path .` would put it.
pub fn path_with_sessiond() -> std::ffi::OsString {
    let bin = Path::new(env!("CARGO_BIN_EXE_sessiond"))
        .parent()
        .expect("binary directory")
        .to_owned();
    let mut dirs = vec![bin];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("PATH")
}

/// A private Redis Cluster: six `redis-server`s in cluster mode on free ports
/// (three primaries, one replica each, a short node timeout, append-only
/// files), joined by `redis-cli --cluster create`; killed and removed on drop.
pub struct RedisCluster {
    pub nodes: Vec<ClusterNode>,
    /// Node directories (config, append-only files), removed on drop.
    _dir: tempfile::TempDir,
}

pub struct ClusterNode {
    pub port: u16,
    child: Option<Child>,
}

impl ClusterNode {
    /// SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port that is free, and whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let port = l.local_addr().expect("addr").port();
        if port > 55_000 {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisCluster {
    /// Starts one, trying again on fresh ports when a node never comes up
    /// (another process took its port between choosing and binding it).
    pub fn start() -> Self {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                Err(why) => failures.push(why),
            }
        }
        panic!("redis cluster did not start: {failures:?}");
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes: Vec<ClusterNode> = Vec::new();
        while nodes.len() < 6 {
            let port = free_cluster_port();
            // The OS may hand out a port it just handed out.
            if nodes.iter().any(|n| n.port == port) {
                continue;
            }
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--cluster-node-timeout", "1000", "--appendonly", "yes"])
                .args(["--save", "", "--cluster-replica-validity-factor", "0"])
                // Other shards keep serving while one fails over.
                .args(["--cluster-require-full-coverage", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (apt-get install -y redis-server)");
            nodes.push(ClusterNode {
                port,
                child: Some(child),
            });
        }
        let mut cluster = RedisCluster { nodes, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..cluster.nodes.len() {
            let port = cluster.nodes[i].port;
            while !cluster.cli(port, &["PING"]).starts_with("PONG") {
                let exited = cluster.nodes[i]
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                if exited || Instant::now() > deadline {
                    return Err(format!("node on port {port} did not come up"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let out = Command::new("redis-cli")
            .args(&create)
            .output()
            .expect("redis-cli");
        if !out.status.success() {
            return Err(format!("cluster create: {out:?}"));
        }
        cluster.wait_ready();
        Ok(cluster)
    }

    /// `redis-cli -p PORT ARGS…`, stdout as text ("" when the node is down).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    fn wait_for(&self, mut ok: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok() {
            assert!(Instant::now() < deadline, "redis cluster: {what} timed out");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every live node sees `cluster_state:ok`, and every live replica's
    /// link to its primary is up.
    pub fn wait_ready(&self) {
        self.wait_for(
            || {
                self.live_ports().iter().all(|&p| {
                    let info = self.cli(p, &["CLUSTER", "INFO"]);
                    let repl = self.cli(p, &["INFO", "replication"]);
                    info.contains("cluster_state:ok")
                        && (repl.contains("role:master") || repl.contains("master_link_status:up"))
                })
            },
            "cluster_state:ok and replicas linked",
        );
    }

    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// Ports of the live primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.live_ports()
            .into_iter()
            .filter(|&p| self.cli(p, &["ROLE"]).starts_with("master"))
            .collect()
    }

    /// The port of the primary serving a key.
    pub fn primary_of(&self, key: &str) -> u16 {
        let slot: u16 = self
            .cli(self.live_ports()[0], &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("slot");
        self.primaries()
            .into_iter()
            .find(|&p| self.serves(p, slot))
            .expect("a primary serves the slot")
    }

    fn serves(&self, port: u16, slot: u16) -> bool {
        // The slot ranges on the node's own line of CLUSTER NODES.
        let nodes = self.cli(port, &["CLUSTER", "NODES"]);
        nodes
            .lines()
            .filter(|l| l.contains("myself"))
            .flat_map(|l| {
                l.split_whitespace()
                    .skip(8)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .any(|range| match range.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot)
                        && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => range.parse::<u16>().is_ok_and(|s| s == slot),
            })
    }

    /// `redis-cluster://` URL naming every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", hosts.join(","))
    }

    pub fn node_mut(&mut self, port: u16) -> &mut ClusterNode {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("node")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}

/// A `sessiond serve` process on any store URL (ports 0, demo users, cheap
/// hashing, sweeps every second, no REST), with extra flags and environment.
pub fn store_replica(store: &str, extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--store".into(),
        store.into(),
        "--grpc-addr".into(),
        "127.0.0.1:0".into(),
        "--rest-addr".into(),
        "off".into(),
        "--demo".into(),
        "--sweep-interval-secs".into(),
        "1".into(),
    ];
    args.extend(CHEAP_HASH_FLAGS.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::spawn_env(&refs, env)
}

/// A WatchRevocations stream of every org, by the service credential
/// `secret`, resuming after `after_cursor` (empty: from now).
pub async fn service_watch(
    c: &mut Client,
    secret: &str,
    after_cursor: &str,
) -> tonic::Streaming<pb::WatchRevocationsResponse> {
    c.watch_revocations(authed(
        pb::WatchRevocationsRequest {
            after_sequence: None,
            org: String::new(),
            kinds: vec![],
            after_cursor: after_cursor.into(),
            ..Default::default()
        },
        secret,
    ))
    .await
    .unwrap()
    .into_inner()
}

/// The next event of a watch, within 10 s.
pub async fn next_event(s: &mut tonic::Streaming<pb::WatchRevocationsResponse>) -> pb::Revocation {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("event within 10 s")
        .unwrap()
        .unwrap()
        .revocation
        .unwrap()
}

/// Makes `call` again while the server sheds it (`RESOURCE_EXHAUSTED` /
/// `OVERLOADED`: refused before its handler ran, so nothing was done), as a
/// client honouring RetryInfo would; for tests whose subject is not
/// overload, on a host that other builds may stall. Gives up after 5 s.
pub async fn unless_shed<T, F, Fut>(mut call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match call().await {
            Err(s)
                if s.code() == tonic::Code::ResourceExhausted
                    && reason(&s) == "OVERLOADED"
                    && std::time::Instant::now() < give_up =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done => return done,
        }
    }
}

/// A TCP relay the test can cut: while cut, every relayed connection is
/// closed and new ones are refused at once.
pub struct Relay {
    pub addr: SocketAddr,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Relay {
    pub async fn to(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut cut = rx.clone();
                if *cut.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Relay {
            addr,
            cut: std::sync::Arc::new(tx),
        }
    }

    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}
