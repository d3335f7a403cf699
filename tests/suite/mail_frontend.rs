//! The mail front end example, run for real: IMAP-like connections log in
//! through it, LogoutUser runs, and exactly that mailbox's connections close.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const SERVICE_SECRET: &str = "mail-frontend-test-credential-0123456789";

/// The example binary cargo built next to the test binaries.
fn example_binary() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sessiond"));
    let path = bin.parent().unwrap().join("examples").join("mail_frontend");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "mail_frontend"])
            .status()
            .expect("cargo build --example mail_frontend");
        assert!(status.success());
    }
    path
}

struct Frontend {
    child: Child,
    addr: String,
}

impl Drop for Frontend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_frontend(grpc: &str) -> Frontend {
    use std::io::BufRead;
    let mut child = Command::new(example_binary())
        .args(["--sessiond", grpc, "--listen", "127.0.0.1:0"])
        .env("SESSIOND_SERVICE_CREDENTIAL", SERVICE_SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the example");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    let mut watching = false;
    while addr.is_none() || !watching {
        let line = out.next().expect("example output").unwrap();
        if let Some(a) = line.strip_prefix("mail front end listening on ") {
            addr = Some(a.to_owned());
        }
        watching |= line == "watching revocations";
    }
    std::thread::spawn(move || for _ in out {});
    Frontend {
        child,
        addr: addr.unwrap(),
    }
}

struct Conn {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: &str) -> Self {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut c = Conn {
            lines: BufReader::new(r).lines(),
            write: w,
        };
        assert!(c.line().await.unwrap().starts_with("* OK"));
        c
    }

    async fn line(&mut self) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
            .await
            .expect("a line within 10 s")
            .unwrap()
    }

    async fn send(&mut self, text: &str) -> String {
        self.write
            .write_all(format!("{text}\r\n").as_bytes())
            .await
            .unwrap();
        self.line().await.expect("an answer")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_user_closes_exactly_that_mailboxs_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = serve_args(&dir.path().join("s.db"));
    let off = args.iter().position(|a| a == "off").unwrap();
    args[off] = "127.0.0.1:0".into();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let server =
        ServerProcess::spawn_env(&refs, &[("SESSIOND_SERVICE_CREDENTIAL", SERVICE_SECRET)]);
    let frontend = start_frontend(&server.url());

    let mut joe1 = Conn::open(&frontend.addr).await;
    let mut joe2 = Conn::open(&frontend.addr).await;
    let mut other = Conn::open(&frontend.addr).await;
    assert!(joe1
        .send(&format!("a1 LOGIN {} {}", JOE.0, JOE.1))
        .await
        .starts_with("a1 OK LOGIN"));
    assert!(joe2
        .send(&format!("b1 LOGIN {} {}", JOE.0, JOE.1))
        .await
        .starts_with("b1 OK LOGIN"));
    assert!(other
        .send(&format!("c1 LOGIN {} {}", USEREMAIL.0, USEREMAIL.1))
        .await
        .starts_with("c1 OK"));
    let mut bad = Conn::open(&frontend.addr).await;
    assert!(bad
        .send(&format!("d1 LOGIN {} wrong", JOE.0))
        .await
        .starts_with("d1 NO"));

    // The OpenSRS route, as an operator would call it.
    let started = std::time::Instant::now();
    let (status, _, body) = json_of(
        http()
            .post(format!("http://{}/api/logout_user", server.rest_addr.unwrap()))
            .json(&json!({"credentials": {"user": DOMAIN_ADMIN.0, "password": DOMAIN_ADMIN.1}, "user": JOE.0}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (200, json!({"success": true})));
    for conn in [&mut joe1, &mut joe2] {
        assert_eq!(
            conn.line().await.as_deref(),
            Some("* BYE session ended (LOGOUT_USER)")
        );
        assert_eq!(conn.line().await, None, "then the connection closes");
    }
    eprintln!(
        "LogoutUser to both connections closed: {:?}",
        started.elapsed()
    );
    assert_eq!(
        other.send("c2 NOOP").await,
        "c2 OK NOOP",
        "another mailbox stays connected"
    );
    drop(frontend);
    assert!(server.terminate().success());
}
