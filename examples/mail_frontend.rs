//! A stand-in for an IMAP front end, to show the revocation feed at work.
//!
//! A line-based TCP server: each connection logs in with
//! `a1 LOGIN <user> <password>`, which opens an IMAP session in sessiond.
//! One task watches `WatchRevocations` (with the service credential) and
//! closes exactly the connections whose sessions end (LogoutUser, LogoffOther,
//! expiry, ...), saying `* BYE session ended (<reason>)`.
//!
//! ```sh
//! SESSIOND_SERVICE_CREDENTIAL=... cargo run --example mail_frontend -- \
//!     --sessiond http://127.0.0.1:50051 --listen 127.0.0.1:1143
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sessiond::pb::session_service_client::SessionServiceClient;
use sessiond::pb::{self, Kind};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// Open connections by session id: sending on the channel closes one.
type Connections = Arc<Mutex<HashMap<i32, oneshot::Sender<String>>>>;

const MAX_LINE: usize = 4096;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let upstream = arg("--sessiond").unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let listen: SocketAddr = arg("--listen")
        .unwrap_or_else(|| "127.0.0.1:1143".into())
        .parse()?;
    let credential = std::env::var("SESSIOND_SERVICE_CREDENTIAL")
        .map_err(|_| "set SESSIOND_SERVICE_CREDENTIAL to sessiond's service credential")?;
    let channel = Channel::from_shared(upstream)?.connect_lazy();
    let client = SessionServiceClient::new(channel);
    let connections: Connections = Arc::default();

    // Accept nobody before the feed is live: a connection opened earlier
    // could miss the very ending meant to close it.
    let (live_tx, mut live_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(watch(
        client.clone(),
        credential,
        connections.clone(),
        live_tx,
    ));
    let _ = live_rx.wait_for(|live| *live).await;

    let listener = TcpListener::bind(listen).await?;
    println!("mail front end listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(stream, client.clone(), connections.clone()));
    }
}

/// Follows the revocation feed for ever, resuming after the last event seen
/// whenever the stream breaks, so no ending is missed across a reconnect.
async fn watch(
    mut client: SessionServiceClient<Channel>,
    credential: String,
    conns: Connections,
    live: tokio::sync::watch::Sender<bool>,
) {
    let mut cursor = String::new();
    loop {
        let mut req = tonic::Request::new(pb::WatchRevocationsRequest {
            after_sequence: None,
            org: String::new(),
            kinds: vec![Kind::Imap as i32],
            after_cursor: cursor.clone(),
            ..Default::default()
        });
        if let Ok(v) = format!("Bearer {credential}").parse() {
            req.metadata_mut().insert("authorization", v);
        }
        match client.watch_revocations(req).await {
            Ok(stream) => {
                println!("watching revocations");
                live.send_replace(true);
                let mut stream = stream.into_inner();
                while let Ok(Some(msg)) = stream.message().await {
                    let Some(r) = msg.revocation else { continue };
                    cursor = r.cursor.clone();
                    let reason = pb::EndReason::try_from(r.reason)
                        .map(|e| e.as_str_name().trim_start_matches("END_REASON_").to_owned())
                        .unwrap_or_default();
                    let closer = conns.lock().ok().and_then(|mut c| c.remove(&r.session_id));
                    if let Some(close) = closer {
                        let _ = close.send(reason);
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                eprintln!(
                    "cursor past retention; watching from now: {}",
                    status.message()
                );
                cursor.clear();
            }
            Err(status) => eprintln!("watch failed ({}); retrying", status.message()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn serve(stream: TcpStream, mut client: SessionServiceClient<Channel>, conns: Connections) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let _ = write
        .write_all(b"* OK sessiond mail front end ready\r\n")
        .await;
    let mut session: Option<(i32, String)> = None;
    let (close_tx, mut close_rx) = oneshot::channel::<String>();
    let mut close_tx = Some(close_tx);
    loop {
        let line = tokio::select! {
            reason = &mut close_rx, if session.is_some() => {
                let why = reason.unwrap_or_default();
                let _ = write.write_all(format!("* BYE session ended ({why})\r\n").as_bytes()).await;
                return;
            }
            line = lines.next_line() => match line {
                Ok(Some(l)) if l.len() <= MAX_LINE => l,
                _ => break,
            },
        };
        let mut words = line.split_whitespace();
        let tag = words.next().unwrap_or("*").to_owned();
        let command = words.next().unwrap_or("").to_ascii_uppercase();
        let reply = match (command.as_str(), &session) {
            ("LOGIN", None) => {
                let (user, password) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                match login(&mut client, user, password).await {
                    Ok((id, token)) => {
                        // Register first, then check once: an ending between
                        // the login and the registration is not missed.
                        if let (Ok(mut c), Some(tx)) = (conns.lock(), close_tx.take()) {
                            c.insert(id, tx);
                        }
                        let still = client
                            .validate_session(pb::ValidateSessionRequest {
                                token: token.clone(),
                            })
                            .await
                            .is_ok();
                        if !still {
                            let _ = write.write_all(b"* BYE session ended\r\n").await;
                            return;
                        }
                        session = Some((id, token));
                        format!("{tag} OK LOGIN session {id}")
                    }
                    Err(msg) => format!("{tag} NO {msg}"),
                }
            }
            ("LOGIN", Some(_)) => format!("{tag} BAD already logged in"),
            ("NOOP", _) => format!("{tag} OK NOOP"),
            ("LOGOUT", _) => {
                if let Some((id, token)) = session.take() {
                    log_off(&mut client, &conns, id, &token).await;
                }
                let _ = write
                    .write_all(format!("* BYE\r\n{tag} OK LOGOUT\r\n").as_bytes())
                    .await;
                return;
            }
            _ => format!("{tag} BAD unknown command"),
        };
        if write
            .write_all(format!("{reply}\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    // The client went away: its session ends with it.
    if let Some((id, token)) = session {
        log_off(&mut client, &conns, id, &token).await;
    }
}

/// Forgets the connection's session and ends it in sessiond.
async fn log_off(
    client: &mut SessionServiceClient<Channel>,
    conns: &Connections,
    id: i32,
    token: &str,
) {
    if let Ok(mut c) = conns.lock() {
        c.remove(&id);
    }
    let mut req = tonic::Request::new(pb::LogoffRequest {});
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert("authorization", v);
    }
    let _ = client.logoff(req).await;
}

async fn login(
    client: &mut SessionServiceClient<Channel>,
    user: &str,
    password: &str,
) -> Result<(i32, String), String> {
    let r = client
        .login(pb::LoginRequest {
            username: user.to_owned(),
            password: password.to_owned(),
            kind: Kind::Imap as i32,
            client: Some(pb::ClientInfo {
                address: String::new(),
                user_agent: "mail_frontend example".into(),
            }),
        })
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let id = r.session.map(|s| s.id).ok_or("no session in answer")?;
    Ok((id, r.token))
}
