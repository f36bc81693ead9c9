//! Standard output that can tell when what was written has really been
//! taken by the reader, so `errors drain` removes an entry from Redis only
//! after that.
//!
//! For a file or a terminal a successful write (and flush) is enough. For a
//! pipe it is not: `redis-dsg errors drain | head -1` can write many entries
//! into the pipe's buffer before `head` exits without reading them. So on a
//! pipe we wait until the reader has read everything (`FIONREAD` = 0), and
//! treat a reader that went away first (`POLLERR`) as a failure.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// Standard output with read confirmation.
#[derive(Debug)]
pub struct ConfirmedStdout {
    fd: RawFd,
    is_pipe: bool,
}

impl Default for ConfirmedStdout {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfirmedStdout {
    /// Wraps this process's standard output.
    pub fn new() -> ConfirmedStdout {
        let fd = io::stdout().as_raw_fd();
        ConfirmedStdout {
            fd,
            is_pipe: is_fifo(fd),
        }
    }

    /// Whether standard output is a pipe (then confirmations wait for the
    /// reader, so callers confirm one entry at a time).
    pub fn is_pipe(&self) -> bool {
        self.is_pipe
    }

    /// Writes `bytes` completely.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()
    }

    /// Resolves once everything written so far has reached the reader;
    /// fails when the reader went away before reading it.
    pub async fn confirm(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()?;
        if !self.is_pipe {
            return Ok(());
        }
        let mut wait = Duration::from_micros(200);
        loop {
            // Checked before the reader's presence: a reader that took
            // everything and then exited (`head -1`) did get it.
            if unread_bytes(self.fd)? == 0 {
                return Ok(());
            }
            if reader_gone(self.fd) {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the reader closed the pipe",
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(20));
        }
    }
}

fn is_fifo(fd: RawFd) -> bool {
    // SAFETY: fstat writes into the zeroed struct we own; fd is our stdout.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO
    }
}

fn unread_bytes(fd: RawFd) -> io::Result<libc::c_int> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int into `n`, which we own.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n)
    }
}

fn reader_gone(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd that we own, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && (p.revents & (libc::POLLERR | libc::POLLHUP)) != 0
}
