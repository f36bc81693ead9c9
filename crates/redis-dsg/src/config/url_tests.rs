//! `REDIS_URL` parsing and redaction, and the property behind contract 11:
//! over thousands of URL shapes, no part of a password ever shows in any
//! rendering of the address, of the configuration or of an error.

use super::*;
use crate::config::{Overrides, load_from};

fn parts(url: &str) -> UrlParts {
    RedisUrl::new(url)
        .parts()
        .unwrap_or_else(|e| panic!("{url:?}: {e}"))
        .clone()
}

fn refused(url: &str) -> UrlError {
    match RedisUrl::new(url).parts() {
        Ok(_) => panic!("{url:?} was accepted"),
        Err(e) => e.clone(),
    }
}

#[test]
fn url_forms() {
    let p = parts("127.0.0.1:6379");
    assert_eq!(p.scheme, Scheme::Redis);
    assert_eq!(
        p.hosts,
        [HostPort {
            host: "127.0.0.1".into(),
            port: 6379
        }]
    );
    assert_eq!(parts("redis-host:6380").hosts[0].port, 6380);
    let p = parts("redis://user:pw@host:6379/2");
    assert_eq!(p.username.as_deref(), Some("user"));
    assert_eq!(p.password.as_ref().map(Secret::expose), Some("pw"));
    assert_eq!(p.database, Some(2));
    assert!(parts("REDISS://host:6380").scheme.is_tls());
    assert_eq!(parts("[::1]:6379").hosts[0].host, "[::1]");
    assert_eq!(parts("rediss://u:p@[::1]").hosts[0].port, 6379);
    assert_eq!(
        parts("redis-sentinel://s0?sentinelServiceName=m").hosts[0].port,
        26379
    );
    let p = parts("redis-cluster://a:1?node=b:2&node=c:3");
    assert_eq!(p.hosts.len(), 3);
    let p = parts("redis://u:p%40ss%2Fw%3Ard@h:1");
    assert_eq!(p.password.as_ref().map(Secret::expose), Some("p@ss/w:rd"));
    assert_eq!(
        parts("redis://u:p@ss@h:1")
            .password
            .map(|s| s.expose().to_string()),
        Some("p@ss".into())
    );

    assert_eq!(refused("host"), UrlError::NotHostPort);
    assert_eq!(refused("host:99999"), UrlError::Port);
    assert_eq!(refused("host:0"), UrlError::Port);
    assert_eq!(refused("http://host:1"), UrlError::Scheme);
    assert_eq!(refused("redis://"), UrlError::NoHost);
    assert_eq!(refused(""), UrlError::Empty);
    assert_eq!(
        refused("dsg:LeakMe42@host:6379"),
        UrlError::CredentialsWithoutScheme
    );
    assert_eq!(refused("redis://u:p\tq@h:1"), UrlError::ControlCharacter);
    assert_eq!(refused("redis://h:1/16x"), UrlError::Database);
    assert_eq!(refused("redis://h:1/300"), UrlError::Database);
    assert_eq!(refused("redis-cluster://h:1/2"), UrlError::ClusterDatabase);
    assert_eq!(
        refused("redis://h:1?sentinelPassword=x"),
        UrlError::Parameter
    );
    assert_eq!(refused("redis-sentinel://h:1"), UrlError::ServiceName);
    assert_eq!(refused("redis://h:1#x"), UrlError::Fragment);
    assert!(matches!(
        refused("redis://u:Top/Secret4@h:1"),
        UrlError::Syntax(_)
    ));
    assert_eq!(refused(&"a".repeat(5000)), UrlError::TooLong(5000));
}

#[test]
fn rendering_hides_only_the_passwords() {
    let show = |u: &str| RedisUrl::new(u).to_string();
    assert_eq!(show("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
    assert_eq!(show("rediss://:p@w@h:1"), "rediss://:***@h:1");
    assert_eq!(show("redis://h:1"), "redis://h:1");
    assert_eq!(show("h:1"), "redis://h:1");
    assert_eq!(show("redis://word@h:1"), "redis://***@h:1");
    assert_eq!(show("redis://u:Top/Secret4@h:1"), "<invalid>");
    assert_eq!(
        show(
            "redis-sentinel://u:p@s0:26379/0?sentinelServiceName=m&sentinelPassword=sp&node=s1:26379"
        ),
        "redis-sentinel://u:***@s0:26379/0?sentinelServiceName=m&sentinelPassword=***&node=s1:26379"
    );
    assert_eq!(
        format!("{:?}", RedisUrl::new("redis://u:p@h:1")),
        "\"redis://u:***@h:1\""
    );
    // What is exposed parses back to the same parts.
    for u in [
        "redis://us%20er:p%40ss%2F%3F%23%25%2B@h:1/3",
        "redis-sentinel://u:p@s0:1?sentinelServiceName=m%26x&sentinelUsername=su&sentinelPassword=a%2Bb%26c&node=s1:2",
        "rediss://:only@[::1]:6380",
    ] {
        let url = RedisUrl::new(u);
        assert_eq!(RedisUrl::new(url.expose()), url, "{u} -> {}", url.expose());
    }
}

/// A small deterministic generator (the test needs variety, not quality).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    /// Four letters and digits not found in any host or scheme below.
    fn chunk(&mut self) -> String {
        const ALNUM: &[u8] = b"QWXZJKVYqwxzjkvy2345789";
        (0..4)
            .map(|_| ALNUM[(self.next() % ALNUM.len() as u64) as usize] as char)
            .collect()
    }
}

/// A password as chunks of letters (what the test looks for) around
/// characters that break naive parsers, raw or percent-encoded.
fn password(rng: &mut Rng, chunks: &mut Vec<String>) -> String {
    const SPECIAL: &[&str] = &[
        "@", "/", "?", "#", ":", "%", "+", " ", "\\", "\"", "ü", "%2F", "%40", "%3A", "%25", "%23",
        "%3F", "%2B", "&", "=", "", "",
    ];
    let mut p = String::new();
    for i in 0..3 {
        let c = rng.chunk();
        p.push_str(&c);
        chunks.push(c);
        if i < 2 {
            p.push_str(rng.pick(SPECIAL));
        }
    }
    p
}

/// Every way the address reaches the outside: `Display` (the start-up log,
/// `/status`, one-shot errors), `Debug`, `Serialize`, and through the whole
/// loader: `redis-dsg config` or the exit-78 message.
fn outputs(url: &str, full_load: bool) -> Vec<String> {
    let parsed = RedisUrl::new(url);
    let mut out = vec![
        parsed.to_string(),
        format!("{parsed:?}"),
        serde_json::to_string(&parsed).unwrap_or_default(),
    ];
    if let Err(e) = parsed.parts() {
        out.push(e.to_string());
    }
    if full_load {
        let env = vec![("REDIS_URL".to_string(), url.to_string())];
        out.push(match load_from(&env, &Overrides::default()) {
            Ok(loaded) => loaded.render_toml().unwrap_or_else(|e| e.to_string()),
            Err(e) => e.to_string(),
        });
    }
    out
}

#[test]
fn contract11_no_part_of_a_password_shows_for_any_url_shape() {
    let schemes = [
        "",
        "redis://",
        "rediss://",
        "REDIS://",
        "redis-sentinel://",
        "rediss-cluster://",
        "http://",
    ];
    let hosts = [
        "h",
        "h:1",
        "[::1]:6379",
        "10.0.0.1:6379",
        "",
        "bad host:1",
        "h:0",
    ];
    let paths = ["", "/0", "/16", "/300", "/x"];
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut cases = 0usize;
    for scheme in schemes {
        for host in hosts {
            for path in paths {
                for query in 0..3 {
                    for userinfo in 0..5 {
                        let mut chunks = Vec::new();
                        let pw = password(&mut rng, &mut chunks);
                        let user_info = match userinfo {
                            0 => String::new(),
                            1 => format!("u:{pw}@"),
                            2 => format!(":{pw}@"),
                            // A bare `word@host`: a raw ':' would make
                            // its start a user name.
                            3 => format!("{}@", pw.replace(':', "%3A")),
                            _ => format!("u%3Ax:{pw}@"),
                        };
                        let q = match query {
                            0 => String::new(),
                            1 => {
                                let sp = password(&mut rng, &mut chunks);
                                format!("?sentinelServiceName=m&sentinelPassword={sp}&node=h2:2")
                            }
                            _ => "?node=h2:2".to_string(),
                        };
                        let url = format!("{scheme}{user_info}{host}{path}{q}");
                        let full = cases % 7 == 0;
                        for text in outputs(&url, full) {
                            for c in &chunks {
                                assert!(
                                    !text.contains(c.as_str()),
                                    "{url:?}: {c:?} shows in {text:?}"
                                );
                            }
                        }
                        cases += 1;
                    }
                }
            }
        }
    }
    assert!(cases > 3_000, "{cases}");
}
