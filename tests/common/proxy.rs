//! A fault-injecting TCP proxy on 127.0.0.1: forwards to an upstream
//! registry and, on the first few connections that carry more than a given
//! number of response bytes, either cuts them right there (a registry that
//! resets) or flips the byte there and carries on (bytes corrupted in transit).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

#[derive(Clone, Copy)]
enum Fault {
    Cut,
    Corrupt,
}

pub struct Proxy {
    pub addr: SocketAddr,
    remaining: Arc<AtomicUsize>,
    total: usize,
    _runtime: Runtime,
}

impl Proxy {
    /// Forwards to `upstream`; the first `cuts` connections whose responses
    /// pass `after` bytes are closed right there.
    pub fn cutting(upstream: &str, after: u64, cuts: usize) -> Self {
        Self::start(upstream, after, cuts, Fault::Cut)
    }

    /// Forwards to `upstream`; the first `count` connections whose responses
    /// pass `at` bytes get that byte flipped.
    pub fn corrupting(upstream: &str, at: u64, count: usize) -> Self {
        Self::start(upstream, at, count, Fault::Corrupt)
    }

    fn start(upstream: &str, after: u64, cuts: usize, fault: Fault) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let remaining = Arc::new(AtomicUsize::new(cuts));
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = upstream.to_string();
        let left = remaining.clone();
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, left) = (upstream.clone(), left.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, after, left, fault).await;
                    }
                });
            }
        });
        Self {
            addr,
            remaining,
            total: cuts,
            _runtime: runtime,
        }
    }

    /// How many connections were cut or corrupted so far.
    pub fn cuts_done(&self) -> usize {
        self.total - self.remaining.load(Ordering::SeqCst)
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    after: u64,
    remaining: Arc<AtomicUsize>,
    fault: Fault,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    });
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if sent + n as u64 > after && sent <= after && claim(&remaining) {
            let at = (after - sent) as usize;
            if let Fault::Corrupt = fault {
                buf[at] ^= 0xff;
            } else {
                let _ = client_write.write_all(&buf[..at]).await;
                // Drop both halves: the client sees a reset mid-response.
                upstream.abort();
                return;
            }
        }
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = client_write.shutdown().await;
    upstream.abort();
}

fn claim(remaining: &AtomicUsize) -> bool {
    remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}
