//! kill -9 in the middle of a stream of endings (SQLite store): after a
//! restart the store opens cleanly and every ending that had been
//! acknowledged holds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use sessiond::pb::{self, Kind};

fn spawn(db: &std::path::Path) -> ServerProcess {
    let args = serve_args(db);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::spawn(&refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_endings_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    for round in 0..3 {
        let mut server = spawn(&db);
        let mut c = connect(&server.url()).await;
        let mut tokens = Vec::new();
        for _ in 0..300 {
            tokens.push(login(&mut c, JOE, Kind::Api).await.0);
        }
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut enders = Vec::new();
        for chunk in tokens.chunks(tokens.len() / 6) {
            let (chunk, acked) = (chunk.to_vec(), acked.clone());
            let mut c = c.clone();
            enders.push(tokio::spawn(async move {
                for t in chunk {
                    if c.logoff(authed(pb::LogoffRequest {}, &t)).await.is_ok() {
                        acked.lock().unwrap().push(t);
                    } else {
                        break;
                    }
                }
            }));
        }
        // Let some endings through, then SIGKILL mid-stream.
        while acked.lock().unwrap().len() < 60 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        for e in enders {
            let _ = e.await;
        }
        let acked = acked.lock().unwrap().clone();
        assert!(
            acked.len() < tokens.len(),
            "round {round}: the kill came mid-stream"
        );

        let server = spawn(&db);
        let mut c = connect(&server.url()).await;
        for t in &acked {
            assert!(
                !is_valid(&mut c, t).await,
                "round {round}: an acknowledged ending was lost"
            );
        }
        let still_live = {
            let mut n = 0;
            for t in &tokens {
                n += usize::from(is_valid(&mut c, t).await);
            }
            n
        };
        eprintln!(
            "round {round}: {} endings acknowledged before kill -9, all held; {still_live} sessions never ended",
            acked.len()
        );
        assert!(still_live > 0);
        assert!(
            server.terminate().success(),
            "the store reopened and serves"
        );
    }
}
