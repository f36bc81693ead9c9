//! A minimal HTTP/1.0 GET for loopback use (the demo and the benchmark read
//! their replicas' `/status` and `/metrics`); no client library needed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use redis_dsg::service::InstanceStatus;

/// `GET http://127.0.0.1:<port><path>`: status code and body.
pub async fn get(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let fetch = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    };
    tokio::time::timeout(timeout, fetch).await.ok().flatten()
}

/// `/status` of the instance on `port`, parsed.
pub async fn status(port: u16) -> Option<InstanceStatus> {
    let (code, body) = get(port, "/status", Duration::from_secs(2)).await?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}
