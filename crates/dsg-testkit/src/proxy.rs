//! A small TCP proxy on loopback for fault injection: every connection is
//! forwarded to an upstream address, and [`Proxy::cut`] drops every
//! connection at once (both sides see the socket close mid-stream, as after
//! a network failure).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running proxy.
#[derive(Debug, Clone)]
pub struct Proxy {
    port: u16,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    /// Cancelled to cut the connections open now; replaced after each cut.
    current: Mutex<CancellationToken>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(State {
            current: Mutex::new(CancellationToken::new()),
            stop: CancellationToken::new(),
        });
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = s.stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                let cut = s.current.lock().map(|t| t.clone()).unwrap_or_default();
                let stop = s.stop.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                    // Dropping both streams closes them.
                });
            }
        });
        Ok(Proxy { port, state })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every open connection; new ones are forwarded as before.
    pub fn cut(&self) {
        if let Ok(mut current) = self.state.current.lock() {
            current.cancel();
            *current = CancellationToken::new();
        }
    }

    /// Stops listening and drops every connection.
    pub fn stop(&self) {
        self.state.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_and_cuts() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(upstream).await.expect("proxy");
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("connect");
        c.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        proxy.cut();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), c.read_to_end(&mut rest))
            .await
            .expect("closed promptly")
            .unwrap_or(0);
        assert_eq!(n, 0, "the cut connection is closed");
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("reconnect");
        c.write_all(b"pong").await.expect("write");
        c.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"pong");
    }
}
