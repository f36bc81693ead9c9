//! Faults below the service: connections cut mid-command.

use std::time::Duration;

use fred::prelude::*;

use crate::helpers::*;

/// A script whose connection is cut while it runs has run once: the client
/// reports an error and never replays it (a replayed fetch would overwrite
/// in-flight messages under reused delivery ids, a replayed push would
/// duplicate messages).
#[tokio::test]
async fn contract3_a_command_cut_in_flight_is_never_resent() {
    let redis = dsg_testkit::local_redis::LocalRedis::start().expect("redis");
    let proxy = dsg_testkit::proxy::Proxy::start(([127, 0, 0, 1], redis.port()).into())
        .await
        .expect("proxy");
    let mut cfg = redis_dsg::config::Config::default();
    cfg.redis.url = redis_dsg::config::RedisUrl::new(format!("127.0.0.1:{}", proxy.port()));
    cfg.redis.command_timeout_ms = 3000;
    cfg.redis.reconnect_max_delay_ms = 100;
    let client = redis_dsg::redis::Redis::for_service(&cfg.redis).expect("client");
    client.connect();
    client.wait_connected().await.expect("connected");
    let direct = connect(&redis.url()).await;
    // Counts its runs, then stays busy for 100 ms so the cut lands mid-run.
    let script = "redis.call('INCR', KEYS[1]) \
        local t0 = redis.call('TIME') \
        while true do \
          local t = redis.call('TIME') \
          if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 100000 then break end \
        end \
        return 1";
    let cut = proxy.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        cut.cut();
    });
    let result: Result<i64, _> = client
        .client()
        .eval(script, vec!["runs"], Vec::<String>::new())
        .await;
    assert!(
        result.is_err(),
        "the caller must learn that the outcome is unknown"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let runs: i64 = direct.client().get("runs").await.expect("get");
    assert_eq!(runs, 1, "the script ran {runs} times");
}
