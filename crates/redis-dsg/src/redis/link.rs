//! Whether Redis answers this process, learnt without sending anything:
//! from the outcomes of the commands the service sends anyway and from
//! fred's connection events (a refused or failed connection attempt, a
//! connection closed or found unresponsive, a reconnection).
//!
//! A round trip that got any reply, an error reply included (`WRONGTYPE`,
//! `NOPERM`: Redis answered), marks the link up; a connection-level failure
//! (refused, unknown host, authentication, database index, TLS, timeout,
//! closed) marks it down with its cause. The service reads the state for
//! readiness and `dsg_redis_up`, and logs the events (`service::health`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use fred::error::{Error as FredError, ErrorKind};
use fred::interfaces::EventInterface;
use tokio::sync::broadcast;

/// Why Redis did not answer, or refused a command: named for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Nothing listens at the address (TCP connection refused).
    Refused,
    /// The host name does not resolve.
    UnknownHost,
    /// Wrong user name or password (`WRONGPASS`, `NOAUTH`).
    Authentication,
    /// The URL's database index does not exist on the server.
    DatabaseIndex,
    /// TLS handshake or certificate failure.
    Tls,
    /// No reply within the timeout (a stopped server, a partition).
    Timeout,
    /// The server closed the connection, or another I/O error.
    Connection,
    /// The server is loading its data set (`LOADING`).
    Loading,
    /// A key holds a value of another type (`WRONGTYPE`).
    WrongType,
    /// The ACL user lacks a permission (`NOPERM`).
    NoPermission,
    /// Writing to a read-only replica (`READONLY`), e.g. during a failover.
    ReadOnly,
    /// Redis is at `maxmemory` with `noeviction` and refuses writes that
    /// grow memory (`OOM`).
    OutOfMemory,
    /// Any other failure.
    Other,
}

impl Cause {
    /// Whether this cause means Redis did not answer (as opposed to an
    /// answer that was an error).
    pub fn is_unreachable(self) -> bool {
        matches!(
            self,
            Cause::Refused
                | Cause::UnknownHost
                | Cause::Authentication
                | Cause::DatabaseIndex
                | Cause::Tls
                | Cause::Timeout
                | Cause::Connection
                | Cause::Loading
        )
    }

    /// What it means, for logs and `/readyz`.
    pub fn describe(self) -> &'static str {
        match self {
            Cause::Refused => "connection refused: nothing listens at that address",
            Cause::UnknownHost => "unknown host: the name does not resolve",
            Cause::Authentication => "authentication failed: wrong user name or password",
            Cause::DatabaseIndex => {
                "database index out of range: the server has fewer databases than the URL's /db"
            }
            Cause::Tls => "TLS handshake failed",
            Cause::Timeout => "no reply in time",
            Cause::Connection => "connection lost",
            Cause::Loading => "the server is loading its data set",
            Cause::WrongType => "a key holds a value of the wrong type",
            Cause::NoPermission => "the ACL user lacks a permission (see `redis-dsg acl-rule`)",
            Cause::ReadOnly => "the server is a read-only replica",
            Cause::OutOfMemory => "Redis is at maxmemory and refuses writes that grow memory (OOM)",
            Cause::Other => "error",
        }
    }
}

/// A failure with its cause and fred's own words (shortened).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The cause.
    pub cause: Cause,
    /// fred's or Redis' message, at most [`Failure::MAX_DETAIL`] characters.
    pub detail: String,
}

impl Failure {
    /// Longest detail kept (a reply can quote arbitrary input).
    pub const MAX_DETAIL: usize = 200;

    /// Classifies a fred error.
    pub fn of(e: &FredError) -> Failure {
        Failure::classify(e.kind(), e.details())
    }

    /// Classifies by fred's error kind and message (pure, for tests).
    pub fn classify(kind: &ErrorKind, details: &str) -> Failure {
        let has = |needle: &str| details.contains(needle);
        let cause = if has("WRONGPASS") || has("NOAUTH") || *kind == ErrorKind::Auth {
            Cause::Authentication
        } else if has("DB index is out of range") {
            Cause::DatabaseIndex
        } else if has("WRONGTYPE") {
            Cause::WrongType
        } else if has("NOPERM") {
            Cause::NoPermission
        } else if details.starts_with("OOM") || has("OOM command not allowed") {
            Cause::OutOfMemory
        } else if details.starts_with("READONLY") {
            Cause::ReadOnly
        } else if details.starts_with("LOADING") {
            Cause::Loading
        } else if has("ConnectionRefused") || has("Connection refused") {
            Cause::Refused
        } else if has("lookup address") || has("Name or service not known") || has("not known") {
            Cause::UnknownHost
        } else if *kind == ErrorKind::Tls {
            Cause::Tls
        } else if *kind == ErrorKind::Timeout {
            Cause::Timeout
        } else if matches!(
            kind,
            ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Routing
        ) {
            // Routing: fred had no connection to send the command on.
            Cause::Connection
        } else {
            Cause::Other
        };
        Failure {
            cause,
            detail: details.chars().take(Failure::MAX_DETAIL).collect(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.cause.describe(), self.detail)
    }
}

/// A change of the link, for whoever logs it.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// A connection-level failure (sent for each, not only the first).
    Down(Failure),
    /// Redis answered again after a failure (or for the first time).
    Up,
}

/// The reachability of Redis from this process. See the module docs.
#[derive(Debug)]
pub struct Link {
    up: AtomicBool,
    state: Mutex<State>,
    events: broadcast::Sender<LinkEvent>,
}

#[derive(Debug, Default)]
struct State {
    failure: Option<Failure>,
    down_since: Option<Instant>,
}

impl Link {
    /// A link that has not answered yet (down, no cause known).
    pub fn new() -> Arc<Link> {
        Arc::new(Link {
            up: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            events: broadcast::channel(256).0,
        })
    }

    /// Whether the last round trip got a reply and no connection failed
    /// since.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The last connection-level failure and when the link went down, while
    /// it is down.
    pub fn failure(&self) -> Option<(Failure, Instant)> {
        if self.is_up() {
            return None;
        }
        let state = self.state();
        Some((state.failure.clone()?, state.down_since?))
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LinkEvent> {
        self.events.subscribe()
    }

    /// A round trip got a reply. Cheap when the link is already up (one
    /// atomic load): called for every command.
    pub fn answered(&self) {
        if self.is_up() {
            return;
        }
        let mut state = self.state();
        if !self.up.swap(true, Ordering::AcqRel) {
            state.down_since = None;
            state.failure = None;
            let _ = self.events.send(LinkEvent::Up);
        }
    }

    /// A connection-level failure. A timeout while the link is already down
    /// for a named cause keeps that cause: "no reply in time" says less than
    /// the refused connection behind it.
    pub fn failed(&self, failure: Failure) {
        let mut state = self.state();
        let was_up = self.up.swap(false, Ordering::AcqRel);
        if was_up || state.down_since.is_none() {
            state.down_since = Some(Instant::now());
        }
        let keep_named = !was_up
            && failure.cause == Cause::Timeout
            && state
                .failure
                .as_ref()
                .is_some_and(|f| f.cause != Cause::Timeout);
        if !keep_named {
            state.failure = Some(failure.clone());
        }
        let _ = self.events.send(LinkEvent::Down(failure));
    }

    /// Records the outcome of a command: an answer (even an error reply)
    /// or a connection-level failure.
    pub fn observe(&self, outcome: Result<(), &FredError>) {
        match outcome {
            Ok(()) => self.answered(),
            Err(e) => {
                let failure = Failure::of(e);
                if failure.cause.is_unreachable() {
                    self.failed(failure);
                } else {
                    self.answered();
                }
            }
        }
    }

    /// Follows a fred client's connection events until it quits: failed
    /// connection attempts and lost connections mark the link down,
    /// (re)connections up. Subscribe before the client connects, so the
    /// first attempt's failure is seen.
    pub fn follow(self: &Arc<Self>, client: &impl EventInterface) {
        let mut errors = client.error_rx();
        let mut connected = client.reconnect_rx();
        let mut unresponsive = client.unresponsive_rx();
        let link = self.clone();
        tokio::spawn(async move {
            use broadcast::error::RecvError;
            loop {
                tokio::select! {
                    e = errors.recv() => match e {
                        Ok((e, _)) => {
                            let failure = Failure::of(&e);
                            // Cluster redirections and the like are not outages.
                            if failure.cause.is_unreachable() {
                                link.failed(failure);
                            }
                        }
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    },
                    s = connected.recv() => match s {
                        Ok(_) => link.answered(),
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    },
                    s = unresponsive.recv() => match s {
                        Ok(server) => link.failed(Failure {
                            cause: Cause::Timeout,
                            detail: format!("no reply from {server}; reconnecting"),
                        }),
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        });
    }

    /// The state's lock. Only whole values are stored under it, so a
    /// poisoned lock is used as it is.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fred_errors_seen_on_this_machine_are_named() {
        // The messages fred 10.1 reported at debug level for each fault
        // (issue 11, item 3), by kind and text.
        let cases = [
            (
                ErrorKind::Auth,
                "WRONGPASS invalid username-password pair or user is disabled.",
                Cause::Authentication,
            ),
            (
                ErrorKind::IO,
                "Os { code: 111, kind: ConnectionRefused, message: \"Connection refused\" }",
                Cause::Refused,
            ),
            (
                ErrorKind::IO,
                "Custom { kind: Uncategorized, error: \"failed to lookup address information: Name or service not known\" }",
                Cause::UnknownHost,
            ),
            (
                ErrorKind::Unknown,
                "ERR DB index is out of range",
                Cause::DatabaseIndex,
            ),
            (
                ErrorKind::Unknown,
                "WRONGTYPE Operation against a key holding the wrong kind of value",
                Cause::WrongType,
            ),
            (
                ErrorKind::Unknown,
                "NOPERM User dsg has no permissions to run the 'hset' command",
                Cause::NoPermission,
            ),
            (ErrorKind::Timeout, "Request timed out.", Cause::Timeout),
            (ErrorKind::IO, "Connection closed.", Cause::Connection),
            (
                ErrorKind::Routing,
                "Failed to route command.",
                Cause::Connection,
            ),
        ];
        for (kind, text, cause) in cases {
            assert_eq!(Failure::classify(&kind, text).cause, cause, "{text}");
        }
        assert!(!Cause::WrongType.is_unreachable());
        assert!(Cause::Authentication.is_unreachable());
    }

    #[tokio::test]
    async fn the_link_keeps_a_named_cause_over_later_timeouts() {
        let link = Link::new();
        assert!(!link.is_up());
        let mut events = link.subscribe();
        link.failed(Failure::classify(&ErrorKind::IO, "Connection refused"));
        link.failed(Failure::classify(&ErrorKind::Timeout, "Request timed out."));
        let (failure, _) = link.failure().expect("down");
        assert_eq!(failure.cause, Cause::Refused);
        // An error reply is an answer.
        link.observe(Err(&FredError::new(ErrorKind::Unknown, "WRONGTYPE x")));
        assert!(link.is_up());
        assert!(link.failure().is_none());
        assert!(matches!(events.try_recv(), Ok(LinkEvent::Down(_))));
        assert!(matches!(events.try_recv(), Ok(LinkEvent::Down(_))));
        assert!(matches!(events.try_recv(), Ok(LinkEvent::Up)));
        // A timeout on a healthy link is named as such.
        link.failed(Failure::classify(&ErrorKind::Timeout, "Request timed out."));
        assert_eq!(link.failure().expect("down").0.cause, Cause::Timeout);
    }
}
