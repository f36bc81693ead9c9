//! The HTTP port under slow or half-open clients: each is cut after the
//! header-read timeout, and no more than the connection cap are held.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::helpers::*;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn http_slow_clients_are_cut_and_connections_capped() {
    const CAP: usize = 40;
    const CLIENTS: usize = 160;
    let env = TestEnv::new().await;
    let r = env
        .spawn(
            "web",
            &[
                ("DSG_HTTP__HEADER_READ_TIMEOUT_MS", "1000"),
                ("DSG_HTTP__MAX_CONNECTIONS", &CAP.to_string()),
                ("MODE", "consumer"),
            ],
        )
        .await;
    let pid = r.pid().expect("running");
    let base = open_fds(pid);
    // Each sends part of a request's headers and then nothing.
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", r.port())).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .expect("write");
            s.set_read_timeout(Some(Duration::from_millis(20)))
                .expect("timeout");
            s
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = open_fds(pid).saturating_sub(base);
    assert!(held <= CAP + 5, "{held} connections held, cap {CAP}");
    // All are cut: the capped ones as the first free up.
    let start = Instant::now();
    let mut closed = [false; CLIENTS];
    while closed.iter().any(|c| !c) && start.elapsed() < Duration::from_secs(15) {
        for (i, s) in clients.iter_mut().enumerate() {
            if closed[i] {
                continue;
            }
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(_) => closed[i] = true,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => closed[i] = true,
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still_open = closed.iter().filter(|c| !**c).count();
    assert_eq!(
        still_open,
        0,
        "{still_open} of {CLIENTS} slow clients still connected after {:?}",
        start.elapsed()
    );
    // Every 40 wait 1 s: four rounds, not one timeout per client.
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    // The port still answers.
    let probe = dsg_testkit::http_client::get(r.port(), "/healthz", Duration::from_secs(2)).await;
    assert_eq!(probe.map(|(code, _)| code), Some(200), "{}", log(&r));
}
