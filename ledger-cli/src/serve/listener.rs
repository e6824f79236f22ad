//! The accept loop: a cap on open connections, a header-read timeout and an idle timeout per connection,
//! graceful shutdown. (`axum::serve` has none of the three, so a few thousand slow clients could hold every
//! descriptor and task.) Requests themselves are bounded by the router's deadline (`http::deadline`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long shutdown waits for open connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Pause after a failed accept (e.g. out of descriptors) so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub connections_max: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Accepts until `shutdown` resolves, then lets open connections finish (bounded by `SHUTDOWN_GRACE`).
pub async fn accept_loop(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.connections_max));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Past the cap, new connections wait in the kernel's backlog instead of taking a descriptor.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let watched = Watched::new(stream);
        let activity = watched.activity.clone();
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(watched), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = idle(activity, limits.idle_timeout) => {
                    tracing::debug!("idle connection closed");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
}

/// Resolves once the connection has had no traffic for `timeout`. Requests are bounded by the request
/// timeout, which is shorter, so a connection waiting on its answer is not idle for this long.
async fn idle(activity: Arc<Activity>, timeout: Duration) {
    let check = (timeout / 4).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(check).await;
        if activity.quiet_for() >= timeout {
            return;
        }
    }
}

/// The time of a connection's last read or write.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A TCP stream that records when it last moved bytes.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    fn new(inner: TcpStream) -> Watched {
        Watched {
            inner,
            activity: Arc::new(Activity {
                origin: Instant::now(),
                last_ms: AtomicU64::new(0),
            }),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Raises this process's open-file limit to what `connections_max` needs (plus room for the database pool
/// and files), up to the hard limit. Returns the connection cap that fits.
pub fn raise_open_files_limit(connections_max: usize) -> usize {
    /// Descriptors kept for everything that is not a client connection.
    const HEADROOM: u64 = 256;
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let wanted = connections_max as u64 + HEADROOM;
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let current = limit.current.unwrap_or(u64::MAX);
    let target = wanted.min(hard).max(current);
    if target > current
        && let Err(e) = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: limit.maximum,
            },
        )
    {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let fits = usize::try_from(now.saturating_sub(HEADROOM)).unwrap_or(usize::MAX);
    if fits < connections_max {
        tracing::warn!(
            connections_max,
            fits,
            "open-file limit too low: connection cap lowered"
        );
    }
    connections_max.min(fits.max(1))
}
