//! Standard output that can tell when what was written has been taken by
//! its reader, so `errors drain` removes an entry from Redis only after
//! that.
//!
//! For a file or a terminal a complete write (and flush) is enough. For a
//! pipe it is not: `redis-dsg errors drain | head -1` writes entries into
//! the pipe's buffer, and `head` may read many and print one. So on a pipe
//! a batch counts as delivered only once the reader has read all of it
//! (`FIONREAD` = 0) *and then come back for more*: a reader reads the next
//! batch only after it has dealt with the bytes it read before (`cat`
//! writes them out, `head` exits instead). The last batch, which has no
//! next one, counts once the reader has read it and is still there a
//! moment later. A reader that went away (`POLLERR`, `EPIPE`) fails the
//! wait. See [`crate::ops::ErrorList`]'s drain for how batches use this.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// How often a pipe's reader is checked while a batch waits for it.
const POLL: Duration = Duration::from_millis(1);
/// The pipe buffer asked for (Linux `F_SETPIPE_SZ`): batches of up to this
/// many bytes go into the pipe in one write.
pub(super) const PIPE_BYTES: usize = 1024 * 1024;

/// Standard output with read confirmation.
#[derive(Debug)]
pub(crate) struct ConfirmedStdout {
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
    pub(crate) fn new() -> ConfirmedStdout {
        let fd = io::stdout().as_raw_fd();
        ConfirmedStdout {
            fd,
            is_pipe: is_fifo(fd),
        }
    }

    /// Whether standard output is a pipe (then deliveries are confirmed by
    /// watching the reader).
    pub(crate) fn is_pipe(&self) -> bool {
        self.is_pipe
    }

    /// Asks for a pipe buffer of [`PIPE_BYTES`]; keeps the old one if the
    /// system refuses (a smaller buffer only means smaller writes).
    pub(crate) fn grow_pipe(&self) {
        if self.is_pipe {
            // SAFETY: F_SETPIPE_SZ takes an int and touches no memory of ours.
            unsafe {
                libc::fcntl(self.fd, libc::F_SETPIPE_SZ, PIPE_BYTES as libc::c_int);
            }
        }
    }

    /// Writes `bytes` completely and flushes.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(bytes)?;
        out.flush()
    }

    /// Writes `bytes` completely and flushes, on a thread of its own: a
    /// pipe whose reader stalls blocks the write, and the caller must stay
    /// free to react to signals meanwhile.
    pub(crate) async fn write_detached(&self, bytes: Vec<u8>) -> io::Result<()> {
        tokio::task::spawn_blocking(move || {
            let mut out = io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
    }

    /// Resolves once the reader has read everything written so far; fails
    /// when it went away first.
    pub(crate) async fn read_all(&self) -> io::Result<()> {
        if !self.is_pipe {
            return Ok(());
        }
        loop {
            // Checked before the reader's presence: a reader that took
            // everything and then exited did read it.
            if unread_bytes(self.fd)? == 0 {
                return Ok(());
            }
            self.check_reader()?;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Resolves once the reader has started on the last `written` bytes
    /// (it reads fewer than `written` remain unread), which it does only
    /// after it has dealt with what it read before; fails when it went
    /// away first.
    pub(crate) async fn reader_moved_on(&self, written: usize) -> io::Result<()> {
        if !self.is_pipe {
            return Ok(());
        }
        loop {
            self.check_reader()?;
            if (unread_bytes(self.fd)? as usize) < written {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// After the last write: resolves once the reader has read everything
    /// and is still there `grace` later.
    pub(crate) async fn reader_kept_everything(&self, grace: Duration) -> io::Result<()> {
        self.read_all().await?;
        if self.is_pipe {
            tokio::time::sleep(grace).await;
            self.check_reader()?;
        }
        Ok(())
    }

    fn check_reader(&self) -> io::Result<()> {
        if reader_gone(self.fd) {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the reader closed the pipe",
            ))
        } else {
            Ok(())
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
