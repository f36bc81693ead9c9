//! The Redis address: [`RedisUrl`] keeps what the operator gave and never
//! shows its password (`Debug`, `Display`, `Serialize` are redacted);
//! [`parse_url`] checks it and turns it into fred's client configuration.

use std::fmt;

use fred::types::config::Config as ClientConfig;
use serde::{Deserialize, Serialize, Serializer};

/// A Redis address as given (`host:port` or a `redis://`-style URL). Its
/// `Debug`, `Display` and `Serialize` forms hide any password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Wraps an address.
    pub fn new(url: impl Into<String>) -> Self {
        RedisUrl(url.into())
    }

    /// The address as a full URL (`host:port` gains `redis://`), password
    /// included.
    pub fn expose(&self) -> String {
        if self.0.contains("://") {
            self.0.clone()
        } else {
            format!("redis://{}", self.0)
        }
    }

    /// The address with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// Replaces the password of `scheme://user:password@host`, and the value of
/// a `sentinelPassword` query parameter, with `***`.
pub fn redact_url(url: &str) -> String {
    // The query parameter first, wherever it is: its value may hold '@',
    // which would otherwise pass for the end of a userinfo.
    const PARAM: &str = "sentinelpassword=";
    let lower = url.to_ascii_lowercase();
    let mut out = String::with_capacity(url.len());
    let mut from = 0;
    while let Some(found) = lower[from..].find(PARAM) {
        let value_start = from + found + PARAM.len();
        let value_end = url[value_start..]
            .find('&')
            .map_or(url.len(), |i| value_start + i);
        out.push_str(&url[from..value_start]);
        out.push_str("***");
        from = value_end;
    }
    out.push_str(&url[from..]);
    redact_userinfo(&out)
}

fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    // The userinfo ends at the last '@' before the path (a password may hold '@').
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let redacted_userinfo = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        // `redis://password@host` is read as a password by some clients.
        None if !userinfo.is_empty() => "***".to_string(),
        None => String::new(),
    };
    format!(
        "{}{}@{}",
        &url[..scheme_end + 3],
        redacted_userinfo,
        &rest[at + 1..]
    )
}

/// Parses a `REDIS_URL` value: `host:port` or a `redis://`, `rediss://`,
/// `redis-sentinel://`, `redis-cluster://` (and TLS variants) URL.
pub fn parse_url(url: &str) -> Result<ClientConfig, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("must not be empty; use host:port or redis://host:port".into());
    }
    let full = if url.contains("://") {
        url.to_string()
    } else {
        let (host, port) = url
            .rsplit_once(':')
            .ok_or_else(|| format!("{url:?} is neither host:port nor a redis:// URL"))?;
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        port.parse::<u16>()
            .map_err(|_| format!("{url:?}: port {port:?} is not a number from 0 to 65535"))?;
        format!("redis://{url}")
    };
    let scheme = full.split("://").next().unwrap_or_default();
    const SCHEMES: [&str; 6] = [
        "redis",
        "rediss",
        "redis-sentinel",
        "rediss-sentinel",
        "redis-cluster",
        "rediss-cluster",
    ];
    if !SCHEMES.contains(&scheme) {
        return Err(format!(
            "scheme {scheme:?} is not supported; use one of {}",
            SCHEMES.join(", ")
        ));
    }
    let after = &full[scheme.len() + 3..];
    let host_part = after.rsplit('@').next().unwrap_or(after);
    if host_part.is_empty() || host_part.starts_with('/') || host_part.starts_with(':') {
        return Err(format!("{:?} has no host", redact_url(&full)));
    }
    ClientConfig::from_url(&full).map_err(|e| {
        format!(
            "{:?} is not a valid Redis URL: {}",
            redact_url(&full),
            e.details()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert!(parse_url("127.0.0.1:6379").is_ok());
        assert!(parse_url("redis-host:6380").is_ok());
        assert!(parse_url("redis://user:pw@host:6379/2").is_ok());
        assert!(parse_url("rediss://host:6380").is_ok());
        assert!(parse_url("host").is_err());
        assert!(parse_url("host:99999").is_err());
        assert!(parse_url("http://host:1").is_err());
        assert!(parse_url("redis://").is_err());
        let e = parse_url("redis://u:secret@:1").expect_err("no host");
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn redact_url_hides_only_the_password() {
        assert_eq!(redact_url("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("rediss://:p@w@h:1"), "rediss://:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("h:1"), "h:1");
    }

    #[test]
    fn redact_url_hides_the_sentinel_password() {
        assert_eq!(
            redact_url(
                "redis-sentinel://u:p@s0:26379/0?sentinelServiceName=m&sentinelPassword=sp&node=s1:26379"
            ),
            "redis-sentinel://u:***@s0:26379/0?sentinelServiceName=m&sentinelPassword=***&node=s1:26379"
        );
        assert_eq!(
            redact_url("redis-sentinel://s0:26379?sentinelServiceName=m&sentinelPassword=a@b"),
            "redis-sentinel://s0:26379?sentinelServiceName=m&sentinelPassword=***"
        );
        // A '?' in a password does not hide it from redaction.
        assert_eq!(redact_url("redis://u:pa?ss@h:1"), "redis://u:***@h:1");
        assert_eq!(
            redact_url("redis-sentinel://u:p?x@s0:1?sentinelPassword=sp&node=s1:1"),
            "redis-sentinel://u:***@s0:1?sentinelPassword=***&node=s1:1"
        );
    }
}
