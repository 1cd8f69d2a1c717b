//! Accepting connections: TLS (when given) with a handshake deadline, HTTP/1.1
//! and h2 through hyper-util with a header deadline, an idle bound, and a
//! graceful close of every connection when shutdown fires. The listener
//! keeps accepting while serve drains (until `stop`): a client still sent
//! here by endpoints that have not caught up (kube-proxy lags under load)
//! gets its request answered, and that connection closes after it, instead
//! of a refused connection (which the apiserver counts as a failed call).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// Deadlines that keep a slow or silent client from holding a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the TLS handshake, and for each request's headers (HTTP/1.1).
    pub header_read: Duration,
    /// A connection with no request in flight and no bytes moving is closed after this.
    pub idle: Duration,
}

/// Serves `routes` on `listener` until `stop`; each connection runs on
/// `connections`, so the caller can wait for requests in flight to finish.
/// Once `shutdown` fires every connection closes gracefully, and one
/// accepted after it closes after its first request.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    routes: BoxedFilter<(Response,)>,
    timeouts: Timeouts,
    shutdown: CancellationToken,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    builder.http2().timer(TokioTimer::new());
    loop {
        let tcp = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            routes: routes.clone(),
            timeouts,
            shutdown: shutdown.clone(),
        };
        connections.spawn(connection.run(tcp, tls.clone()));
    }
    // Dropping the listener refuses new connections at once.
    drop(listener);
}

struct Connection {
    builder: auto::Builder<TokioExecutor>,
    routes: BoxedFilter<(Response,)>,
    timeouts: Timeouts,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let activity = Arc::new(Activity::new());
        let Some(acceptor) = tls else {
            return self
                .drive(Tracked::new(tcp, activity.clone()), activity)
                .await;
        };
        match tokio::time::timeout(self.timeouts.header_read, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let protocol = stream.get_ref().1.alpn_protocol().unwrap_or(b"http/1.1");
                debug!(protocol = %String::from_utf8_lossy(protocol), "TLS connection");
                self.drive(Tracked::new(stream, activity.clone()), activity)
                    .await
            }
            // Plain HTTP or a bad client: rustls already sent its alert.
            Ok(Err(err)) => debug!(error = %err, "TLS handshake failed"),
            Err(_) => debug!("TLS handshake timed out"),
        }
    }

    async fn drive<I>(self, io: Tracked<I>, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = TowerToHyperService::new(warp::service(self.routes));
        let counted = activity.clone();
        let service = hyper::service::service_fn(move |request| {
            let guard = counted.begin_request();
            let answer = hyper::service::Service::call(&service, request);
            async move {
                let response = answer.await;
                drop(guard);
                response
            }
        });
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut closing = false;
        // Accepted while draining: answered, then closed after its first
        // request (closed before it, an HTTP/1.1 client would see its
        // request dropped; an h2 one would be sent back to the same endpoints).
        let late = self.shutdown.is_cancelled();
        loop {
            let idle_check = tokio::time::sleep(activity.time_until_idle(self.timeouts.idle));
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        debug!(error = %err, "connection ended with an error");
                    }
                    return;
                }
                _ = self.shutdown.cancelled(), if !closing && !late => {
                    // HTTP/1.1 finishes the request in flight, h2 sends GOAWAY.
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = activity.first_request.notified(), if late && !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = idle_check => {
                    if !activity.is_idle(self.timeouts.idle) {
                        continue;
                    }
                    if closing {
                        // The peer ignored the close for a whole idle period.
                        return;
                    }
                    debug!("closing an idle connection");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// When bytes last moved on a connection, and how many requests are in flight.
struct Activity {
    start: Instant,
    last_millis: AtomicU64,
    in_flight: Arc<AtomicUsize>,
    /// Told when a request begins (a permit is kept if nobody waits yet).
    first_request: tokio::sync::Notify,
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_millis: AtomicU64::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            first_request: tokio::sync::Notify::new(),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_millis.store(now, Ordering::Relaxed);
    }

    fn begin_request(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.first_request.notify_one();
        InFlight(self.in_flight.clone())
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    fn is_idle(&self, limit: Duration) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && self.quiet_for() >= limit
    }

    /// How long until the connection could be idle (at least a short step, so
    /// a busy connection is looked at again without spinning).
    fn time_until_idle(&self, limit: Duration) -> Duration {
        limit
            .saturating_sub(self.quiet_for())
            .max(Duration::from_millis(50))
    }
}

/// An I/O stream that records when bytes move.
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I> Tracked<I> {
    fn new(inner: I, activity: Arc<Activity>) -> Self {
        activity.touch();
        Self { inner, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
