//! The Redis address (`REDIS_URL`): parsed once into its parts, and only
//! ever shown rendered from them, password and `sentinelPassword` as `***`
//! (DESIGN.md, contract 11). The text the operator gave is not kept, and no
//! error message repeats it: a URL that fails to parse may hold a password
//! in a place the parser did not recognise.
//!
//! Accepted: `host:port`, `[v6]:port`, and `redis://`, `rediss://`,
//! `redis-sentinel://`, `rediss-sentinel://`, `redis-cluster://`,
//! `rediss-cluster://` URLs (scheme in any case) with optional user and
//! password, `/db`, `node=host:port` (Sentinel, Cluster) and the Sentinel
//! parameters `sentinelServiceName`, `sentinelUsername`,
//! `sentinelPassword`. The Redis layer builds its client from the parts.

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Secret;

/// A `REDIS_URL`, parsed. Its `Debug`, `Display` and `Serialize` forms are
/// rendered from the parts with every password as `***`; an address that
/// did not parse shows as `<invalid>` and its error ([`RedisUrl::parts`])
/// never quotes it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Result<UrlParts, UrlError>);

/// What a valid [`RedisUrl`] says (its `Debug` hides the passwords:
/// [`Secret`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts {
    /// `redis`, `rediss`, … (lower case).
    pub scheme: Scheme,
    /// The ACL user, percent-decoded.
    pub username: Option<String>,
    /// The password, percent-decoded.
    pub password: Option<Secret>,
    /// The host of the URL, then every `node=` (Sentinel: sentinels;
    /// Cluster: seed nodes).
    pub hosts: Vec<HostPort>,
    /// The database of `/db`.
    pub database: Option<u8>,
    /// The Sentinel parameters (`redis-sentinel://` only).
    pub sentinel: Option<SentinelParams>,
}

/// One server address; an IPv6 host keeps its brackets (`[::1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or address.
    pub host: String,
    /// Port (never 0).
    pub port: u16,
}

/// The query parameters of a `redis-sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelParams {
    /// `sentinelServiceName`: the primary's name at the sentinels.
    pub service_name: String,
    /// `sentinelUsername`: the user for the sentinels themselves.
    pub username: Option<String>,
    /// `sentinelPassword`: the sentinels' own password.
    pub password: Option<Secret>,
}

/// The topology and transport a scheme names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `redis://`: one server.
    Redis,
    /// `rediss://`: one server over TLS.
    Rediss,
    /// `redis-sentinel://`: the primary named by sentinels.
    RedisSentinel,
    /// `rediss-sentinel://`: the same over TLS.
    RedissSentinel,
    /// `redis-cluster://`: a Redis Cluster.
    RedisCluster,
    /// `rediss-cluster://`: the same over TLS.
    RedissCluster,
}

impl Scheme {
    const ALL: [Scheme; 6] = [
        Scheme::Redis,
        Scheme::Rediss,
        Scheme::RedisSentinel,
        Scheme::RedissSentinel,
        Scheme::RedisCluster,
        Scheme::RedissCluster,
    ];

    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Redis => "redis",
            Scheme::Rediss => "rediss",
            Scheme::RedisSentinel => "redis-sentinel",
            Scheme::RedissSentinel => "rediss-sentinel",
            Scheme::RedisCluster => "redis-cluster",
            Scheme::RedissCluster => "rediss-cluster",
        }
    }

    /// Whether connections use TLS.
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            Scheme::Rediss | Scheme::RedissSentinel | Scheme::RedissCluster
        )
    }

    /// Whether the primary is found through sentinels.
    pub fn is_sentinel(self) -> bool {
        matches!(self, Scheme::RedisSentinel | Scheme::RedissSentinel)
    }

    /// Whether it is a Redis Cluster.
    pub fn is_cluster(self) -> bool {
        matches!(self, Scheme::RedisCluster | Scheme::RedissCluster)
    }
}

/// Why a `REDIS_URL` was refused. Its messages never quote the address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Nothing given.
    #[error("must not be empty; use host:port or redis://host:port")]
    Empty,
    /// Longer than [`MAX_URL_BYTES`].
    #[error("is {0} bytes long; at most {MAX_URL_BYTES} are accepted")]
    TooLong(usize),
    /// Tabs, newlines or other control characters (a URL parser drops
    /// some of them silently, which would change a password).
    #[error("holds control characters (tab, newline, …); percent-encode them")]
    ControlCharacter,
    /// `user:password@host:port`: credentials are only read from a URL.
    #[error("has credentials but no scheme; write redis://user:password@host:port (or rediss://)")]
    CredentialsWithoutScheme,
    /// Neither `host:port` nor a URL.
    #[error("is neither host:port nor a redis:// URL")]
    NotHostPort,
    /// A scheme other than the six supported.
    #[error(
        "has a scheme that is not supported; use redis, rediss, redis-sentinel, rediss-sentinel, redis-cluster or rediss-cluster"
    )]
    Scheme,
    /// The URL parser refused it (its message never holds the input).
    #[error("is not a valid URL ({0}); {PERCENT_HINT}")]
    Syntax(String),
    /// No host.
    #[error("has no host")]
    NoHost,
    /// Port 0 or not a number.
    #[error("has a port that is not a number from 1 to 65535")]
    Port,
    /// A path other than `/<db>` with db 0–255.
    #[error("has a path that is not a database number from 0 to 255 (/0 … /255)")]
    Database,
    /// A database with Redis Cluster, which has only database 0.
    #[error("selects a database, but Redis Cluster has only database 0")]
    ClusterDatabase,
    /// A `#` part: most likely an unencoded `#` in a password.
    #[error("has a '#' part; {PERCENT_HINT}")]
    Fragment,
    /// Percent-escapes that decode to invalid UTF-8.
    #[error("has a user name or password that is not UTF-8 once percent-decoded")]
    NotUtf8,
    /// A query parameter this scheme does not take (names not repeated:
    /// one may be a misplaced password).
    #[error(
        "has a query parameter this scheme does not take; redis-sentinel:// takes sentinelServiceName, sentinelUsername, sentinelPassword and node, redis-cluster:// takes node"
    )]
    Parameter,
    /// A `node=` that is not `host:port`.
    #[error("has a node= parameter that is not host:port")]
    Node,
    /// `redis-sentinel://` without `sentinelServiceName`.
    #[error("needs sentinelServiceName=<primary name> with redis-sentinel://")]
    ServiceName,
}

/// The longest `REDIS_URL` accepted.
pub(crate) const MAX_URL_BYTES: usize = 4096;

const PERCENT_HINT: &str = "percent-encode / ? # @ : % + and spaces in a user name or password (%2F %3F %23 %40 %3A %25 %2B %20)";

impl RedisUrl {
    /// Parses `text`; an invalid address is kept as its error (reported by
    /// validation, rendered as `<invalid>`).
    pub fn new(text: impl AsRef<str>) -> RedisUrl {
        RedisUrl(parse(text.as_ref()))
    }

    /// The parts, or why the address was refused.
    pub fn parts(&self) -> Result<&UrlParts, &UrlError> {
        self.0.as_ref()
    }

    /// The address as a URL, password included (to hand the setting on to
    /// a child process); empty when it did not parse.
    pub fn expose(&self) -> String {
        match &self.0 {
            Ok(p) => p.render(true),
            Err(_) => String::new(),
        }
    }
}

impl Default for RedisUrl {
    fn default() -> Self {
        RedisUrl::new("127.0.0.1:6379")
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Ok(p) => f.write_str(&p.render(false)),
            Err(_) => f.write_str("<invalid>"),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RedisUrl::new(String::deserialize(d)?))
    }
}

/// What stays unescaped in a rendered user name, password or parameter.
const COMPONENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

impl UrlParts {
    fn render(&self, expose: bool) -> String {
        let secret = |s: &Secret| {
            if expose {
                enc(s.expose())
            } else {
                "***".into()
            }
        };
        let mut out = format!("{}://", self.scheme.as_str());
        match (&self.username, &self.password) {
            (Some(u), Some(p)) => out.push_str(&format!("{}:{}@", enc(u), secret(p))),
            (None, Some(p)) => out.push_str(&format!(":{}@", secret(p))),
            // Some clients read `redis://word@host` as a password.
            (Some(u), None) if expose => out.push_str(&format!("{}@", enc(u))),
            (Some(_), None) => out.push_str("***@"),
            (None, None) => {}
        }
        let first = &self.hosts[0];
        out.push_str(&format!("{}:{}", first.host, first.port));
        if let Some(db) = self.database {
            out.push_str(&format!("/{db}"));
        }
        let mut query = Vec::new();
        if let Some(s) = &self.sentinel {
            query.push(format!("sentinelServiceName={}", enc(&s.service_name)));
            if let Some(u) = &s.username {
                query.push(format!("sentinelUsername={}", enc(u)));
            }
            if let Some(p) = &s.password {
                query.push(format!("sentinelPassword={}", secret(p)));
            }
        }
        for node in &self.hosts[1..] {
            query.push(format!("node={}:{}", node.host, node.port));
        }
        if !query.is_empty() {
            out.push('?');
            out.push_str(&query.join("&"));
        }
        out
    }
}

fn parse(text: &str) -> Result<UrlParts, UrlError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(UrlError::Empty);
    }
    if text.len() > MAX_URL_BYTES {
        return Err(UrlError::TooLong(text.len()));
    }
    if text.chars().any(char::is_control) {
        return Err(UrlError::ControlCharacter);
    }
    let full = match text.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            if !Scheme::ALL.iter().any(|s| s.as_str() == scheme) {
                return Err(UrlError::Scheme);
            }
            format!("{scheme}://{rest}")
        }
        // `host:port` (the original program's form): never credentials,
        // which would otherwise pass for a host and be printed.
        None if text.contains('@') => return Err(UrlError::CredentialsWithoutScheme),
        None => {
            let (host, port) = text.rsplit_once(':').ok_or(UrlError::NotHostPort)?;
            if host.is_empty() {
                return Err(UrlError::NoHost);
            }
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(UrlError::Port);
            }
            format!("redis://{text}")
        }
    };
    from_url(&full)
}

fn decode(s: &str) -> Result<String, UrlError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| UrlError::NotUtf8)
}

fn from_url(full: &str) -> Result<UrlParts, UrlError> {
    let url = url::Url::parse(full).map_err(|e| UrlError::Syntax(e.to_string()))?;
    let scheme = Scheme::ALL
        .into_iter()
        .find(|s| s.as_str() == url.scheme())
        .ok_or(UrlError::Scheme)?;
    if url.fragment().is_some() {
        return Err(UrlError::Fragment);
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or(UrlError::NoHost)?;
    let default_port = if scheme.is_sentinel() { 26379 } else { 6379 };
    let port = url.port().unwrap_or(default_port);
    if port == 0 {
        return Err(UrlError::Port);
    }
    let username = Some(decode(url.username())?).filter(|u| !u.is_empty());
    let password = match url.password() {
        Some(p) => Some(decode(p)?).filter(|p| !p.is_empty()).map(Secret::new),
        None => None,
    };
    let database = match url.path().trim_start_matches('/') {
        "" => None,
        db => Some(db.parse::<u8>().map_err(|_| UrlError::Database)?),
    };
    if scheme.is_cluster() && database.is_some_and(|d| d != 0) {
        return Err(UrlError::ClusterDatabase);
    }
    let mut hosts = vec![HostPort {
        host: host.to_string(),
        port,
    }];
    let (mut service_name, mut s_user, mut s_password) = (None, None, None);
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "node" if !matches!(scheme, Scheme::Redis | Scheme::Rediss) => {
                let (h, p) = value.rsplit_once(':').ok_or(UrlError::Node)?;
                let port = p.parse::<u16>().ok().filter(|p| *p != 0);
                match port {
                    Some(port) if !h.is_empty() => hosts.push(HostPort {
                        host: h.to_string(),
                        port,
                    }),
                    _ => return Err(UrlError::Node),
                }
            }
            "sentinelServiceName" if scheme.is_sentinel() => {
                service_name = Some(value.into_owned())
            }
            "sentinelUsername" if scheme.is_sentinel() => s_user = Some(value.into_owned()),
            "sentinelPassword" if scheme.is_sentinel() => {
                s_password = Some(Secret::new(value.into_owned()))
            }
            _ => return Err(UrlError::Parameter),
        }
    }
    let sentinel = if scheme.is_sentinel() {
        Some(SentinelParams {
            service_name: service_name.ok_or(UrlError::ServiceName)?,
            username: s_user,
            password: s_password,
        })
    } else {
        None
    };
    Ok(UrlParts {
        scheme,
        username,
        password,
        hosts,
        database,
        sentinel,
    })
}

#[cfg(test)]
#[path = "url_tests.rs"]
mod tests;
