//! Connection hygiene shared by every listener (gRPC, REST, metrics): a cap
//! on the connections one peer address may hold open at once, a bound on
//! how long a new connection may take to say anything, an idle bound (no
//! request in progress), HTTP/2 keepalive pings, TCP keepalive, and for the
//! HTTP listeners this module serves itself (REST and metrics) the HTTP/1
//! header-read bound, the request-body read bound and the TLS handshake
//! bound. Without them a client that opens sockets and then sends nothing, a
//! partial header or a partial body holds a file descriptor for as long as
//! it likes, and a few hundred such sockets starve every other caller.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// Timeouts and caps of one listener's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// HTTP/1 (REST, metrics): the whole request head must arrive within this.
    pub header_read_timeout: Duration,
    /// A new connection must send its first bytes (the HTTP/2 preface or a
    /// request line) within this, and finish a TLS handshake within it.
    pub handshake_timeout: Duration,
    /// A connection with no request in progress is closed after this long
    /// (an HTTP/2 HEADERS frame that never completes starts no request).
    pub idle_timeout: Duration,
    /// HTTP/2 ping interval; a ping unanswered within `keepalive_timeout`
    /// closes the connection (also the TCP keepalive idle time).
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// REST: a request body must be read completely within this.
    pub body_read_timeout: Duration,
    /// Connections one peer address may hold open at once on one listener;
    /// past it, its new connections are closed as soon as accepted.
    pub max_connections_per_address: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            body_read_timeout: Duration::from_secs(30),
            max_connections_per_address: 256,
        }
    }
}

/// Bytes of the HTTP/2 client preface; also more than any HTTP/1 request
/// line a client sends before its headers, and less than a TLS ClientHello.
const PREFACE_LEN: usize = 24;

/// How long a listener waits before accepting again after an error such as
/// "too many open files" (instead of spinning on it).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Open connections per peer address, on one listener.
#[derive(Debug, Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One counted connection; the count is released when it is dropped.
#[derive(Debug)]
struct Permit {
    counts: PerAddress,
    ip: IpAddr,
}

impl PerAddress {
    fn try_acquire(&self, ip: IpAddr, max: usize) -> Option<Permit> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Permit {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Requests in progress on one connection, and when that last changed.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    started_any: AtomicBool,
    last_change: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            started_any: AtomicBool::new(false),
            last_change: Mutex::new(Instant::now()),
        }
    }

    fn touch(&self) {
        *self.last_change.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn last_change(&self) -> Instant {
        *self.last_change.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request started; it ends when the guard (held by its response
    /// body, so a stream counts until it ends) is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.started_any.store(true, Ordering::Relaxed);
        // No clock read: while a request is in flight the idle bound does
        // not look at `last_change`, and the end of the last one sets it.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An accepted TCP connection under the listener's rules: counted against
/// its peer address, and failing its reads (which closes it) when it said
/// nothing within the handshake bound or carried no request for the idle
/// bound.
pub struct Guarded {
    io: TcpStream,
    info: TcpConnectInfo,
    activity: Arc<Activity>,
    _permit: Permit,
    accepted: Instant,
    bytes_read: usize,
    handshake: Duration,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// The waker `timer` was last polled with, while it has not fired:
    /// the timer wakes it when it fires, so a read that finds nothing
    /// under the same waker need not poll the timer (or read the clock)
    /// again.
    armed_for: Option<Waker>,
}

enum Deadline {
    Passed(&'static str),
    At(Instant),
}

impl Guarded {
    /// The connection's request counter (REST counts its requests on it).
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    pub fn peer(&self) -> Option<SocketAddr> {
        self.info.remote_addr
    }

    /// After a TLS handshake: the first request bytes (one TLS record
    /// carrying them is longer than [`PREFACE_LEN`]) are due within the
    /// handshake bound from now, not counting the handshake's own bytes.
    fn restart_first_bytes_clock(&mut self) {
        if !self.activity.started_any.load(Ordering::Relaxed) {
            self.accepted = Instant::now();
            self.bytes_read = 0;
        }
    }

    /// When the connection is due to close as things stand, with no clock
    /// read: `None` while a request is in progress (no bound applies then).
    fn due(&self) -> Option<(Instant, &'static str)> {
        let activity = &self.activity;
        if self.bytes_read < PREFACE_LEN && !activity.started_any.load(Ordering::Relaxed) {
            let at = self.accepted + self.handshake;
            return Some((at, "no request within the handshake timeout"));
        }
        if activity.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = activity.last_change().max(self.accepted) + self.idle;
        Some((at, "idle timeout"))
    }

    fn deadline(&self, now: Instant) -> Deadline {
        match self.due() {
            Some((at, why)) if at <= now => Deadline::Passed(why),
            Some((at, _)) => Deadline::At(at),
            None => {
                // Busy: look again one idle period from now.
                let armed = self.timer.deadline();
                Deadline::At(if armed > now && !self.timer.is_elapsed() {
                    armed
                } else {
                    now + self.idle
                })
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.bytes_read = this.bytes_read.saturating_add(buf.filled().len() - before);
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        // A timer armed for this task, not yet fired and not later than the
        // connection's due time, needs nothing: it fires, and the state
        // decides then. So a read that finds nothing reads no clock and
        // touches no timer, except when a request's end moved the due time.
        if !this.timer.is_elapsed()
            && this
                .armed_for
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            && this.due().is_none_or(|(at, _)| this.timer.deadline() <= at)
        {
            return Poll::Pending;
        }
        loop {
            match this.deadline(Instant::now()) {
                Deadline::Passed(why) => {
                    tracing::debug!(peer = ?this.info.remote_addr, why, "closing connection");
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
                }
                Deadline::At(at) => {
                    // A timer armed earlier just fires and looks again, so
                    // the timer wheel is touched once per idle period, not
                    // once per request.
                    if this.timer.is_elapsed() || at < this.timer.deadline() {
                        this.timer.as_mut().reset(at);
                    }
                    if this.timer.as_mut().poll(cx).is_pending() {
                        this.armed_for = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                    // The timer fired: the state now decides (closed, or a later deadline).
                    this.armed_for = None;
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What tonic puts in each request's extensions for a [`Guarded`]
/// connection; [`ConnectionLayer`] turns it back into the plain
/// [`TcpConnectInfo`] that `Request::remote_addr` reads.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub tcp: TcpConnectInfo,
    activity: Arc<Activity>,
}

impl Connected for Guarded {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        PeerInfo {
            tcp: self.info.clone(),
            activity: self.activity.clone(),
        }
    }
}

/// Admits accepted connections under one listener's limits.
#[derive(Debug, Clone)]
pub struct Gate {
    limits: ConnLimits,
    counts: PerAddress,
    listener: &'static str,
}

impl Gate {
    pub fn new(listener: &'static str, limits: ConnLimits) -> Self {
        Gate {
            limits,
            counts: PerAddress::default(),
            listener,
        }
    }

    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    /// The connection, counted, or `None` (and it is closed) when its peer
    /// address already holds as many as allowed.
    pub fn admit(&self, stream: TcpStream, peer: SocketAddr) -> Option<Guarded> {
        let ip = peer.ip().to_canonical();
        let Some(permit) = self
            .counts
            .try_acquire(ip, self.limits.max_connections_per_address)
        else {
            tracing::debug!(listener = self.listener, %ip, "per-address connection cap reached: closed");
            crate::telemetry::connection_refused(self.listener);
            return None;
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(self.limits.keepalive_interval)
            .with_interval(self.limits.keepalive_timeout);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let info = TcpConnectInfo {
            local_addr: stream.local_addr().ok(),
            remote_addr: Some(peer),
        };
        let now = Instant::now();
        Some(Guarded {
            io: stream,
            info,
            activity: Arc::new(Activity::new()),
            _permit: permit,
            accepted: now,
            bytes_read: 0,
            handshake: self.limits.handshake_timeout,
            idle: self.limits.idle_timeout,
            timer: Box::pin(tokio::time::sleep_until(
                now + self.limits.handshake_timeout,
            )),
            armed_for: None,
        })
    }

    /// Accepts on `listener` in a task of its own and yields the admitted
    /// connections, until the receiver is dropped (which closes the listener).
    pub fn incoming(
        self,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<io::Result<Guarded>> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    r = listener.accept() => r,
                    _ = tx.closed() => break,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        if let Some(conn) = self.admit(stream, peer) {
                            if tx.send(Ok(conn)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Err(e) => accept_error(self.listener, &e).await,
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

async fn accept_error(listener: &'static str, e: &io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) {
        return;
    }
    tracing::warn!(listener, error = %e, "accept failed; pausing");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Tower layer for the gRPC server: counts each request (until its
/// response body ends) on its connection's [`Activity`]. The peer address
/// stays where tonic put it, in [`PeerInfo`]; [`peer_addr`] reads it.
#[derive(Debug, Clone, Default)]
pub struct ConnectionLayer;

impl<S> tower::Layer<S> for ConnectionLayer {
    type Service = Connection<S>;

    fn layer(&self, inner: S) -> Connection<S> {
        Connection { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Connection<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Connection<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Unpin,
{
    type Response = http::Response<Tracked<ResBody>>;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let ext = req.extensions();
        let guard = ext
            .get::<PeerInfo>()
            .or_else(|| ext.get::<TlsConnectInfo<PeerInfo>>().map(|t| t.get_ref()))
            .map(|p| p.activity.begin());
        Counted {
            inner: self.inner.call(req),
            guard,
        }
    }
}

/// The future of a [`Connection`] call: its response body takes over the
/// request's count. A plain struct, not a box: nothing to allocate per call.
pub struct Counted<F> {
    inner: F,
    guard: Option<InFlight>,
}

impl<F, B, E> Future for Counted<F>
where
    F: Future<Output = Result<http::Response<B>, E>> + Unpin,
{
    type Output = Result<http::Response<Tracked<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let resp = std::task::ready!(Pin::new(&mut this.inner).poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(resp.map(|body| Tracked::new(body, guard))))
    }
}

/// The peer of the connection a request came on: from [`PeerInfo`] on this
/// module's listeners, else where tonic's own listener puts it; `None` for
/// an in-process call.
pub fn peer_addr(ext: &http::Extensions) -> Option<SocketAddr> {
    ext.get::<PeerInfo>()
        .map(|p| &p.tcp)
        .or_else(|| {
            ext.get::<TlsConnectInfo<PeerInfo>>()
                .map(|t| &t.get_ref().tcp)
        })
        .or_else(|| ext.get::<TcpConnectInfo>())
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(|t| t.get_ref())
        })
        .and_then(TcpConnectInfo::remote_addr)
}

/// A response body that keeps its request counted until it ends. Held by
/// value (response bodies here are `Unpin`): no allocation per request.
pub struct Tracked<B> {
    inner: B,
    guard: Option<InFlight>,
}

impl<B> Tracked<B> {
    pub fn new(body: B, guard: Option<InFlight>) -> Self {
        Tracked { inner: body, guard }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails when it has not been read completely within
/// the bound (a client sending part of a body and then nothing).
struct TimedBody {
    inner: hyper::body::Incoming,
    deadline: Pin<Box<Sleep>>,
    bound: Duration,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => Poll::Ready(r.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "request body not received within {} s",
                    this.bound.as_secs_f64()
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The HTTP/1 and HTTP/2 connection settings of an HTTP listener.
fn http_builder(limits: &ConnLimits) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    builder
}

/// The axum/tower application an HTTP listener serves.
pub trait App:
    tower::Service<
        http::Request<axum::body::Body>,
        Response = http::Response<axum::body::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: tower::Service<
            http::Request<axum::body::Body>,
            Response = http::Response<axum::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// How long a stopping HTTP listener waits for its requests in progress.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `app` over HTTP/1 and HTTP/2 (over TLS when given) on `listener`
/// under `gate`'s limits, until `shutdown` completes; then stops accepting
/// and drains the requests in progress (for at most 30 s). The peer address
/// is in each request's extensions as axum's `ConnectInfo<SocketAddr>`.
pub async fn serve_http(
    listener: TcpListener,
    app: impl App,
    tls: Option<Arc<rustls::ServerConfig>>,
    gate: Gate,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = gate.limits().clone();
    let builder = Arc::new(http_builder(&limits));
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_error(gate.listener, &e).await;
                continue;
            }
        };
        let Some(conn) = gate.admit(stream, peer) else {
            continue;
        };
        let (builder, app, tls, limits) =
            (builder.clone(), app.clone(), tls.clone(), limits.clone());
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let activity = conn.activity();
            match tls {
                None => serve_connection(conn, &builder, app, activity, peer, &limits, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(conn))
                        .await
                    {
                        Ok(Ok(mut io)) => {
                            // The request's first bytes are due within the
                            // bound again, counted from the handshake's end.
                            io.get_mut().0.restart_first_bytes_clock();
                            serve_connection(io, &builder, app, activity, peer, &limits, stop).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    if tokio::time::timeout(DRAIN, stop_tx.closed()).await.is_err() {
        tracing::warn!(
            listener = gate.listener,
            "requests still in progress after 30 s: stopping anyway"
        );
    }
    Ok(())
}

async fn serve_connection<IO>(
    io: IO,
    builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    app: impl App,
    activity: Arc<Activity>,
    peer: SocketAddr,
    limits: &ConnLimits,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_bound = limits.body_read_timeout;
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let guard = activity.begin();
        let mut req = req.map(|inner| {
            axum::body::Body::new(TimedBody {
                inner,
                deadline: Box::pin(tokio::time::sleep(body_bound)),
                bound: body_bound,
            })
        });
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let fut = tower::ServiceExt::oneshot(app.clone(), req);
        async move {
            let resp = fut.await?;
            Ok::<_, Infallible>(resp.map(|b| axum::body::Body::new(Tracked::new(b, Some(guard)))))
        }
    });
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}
