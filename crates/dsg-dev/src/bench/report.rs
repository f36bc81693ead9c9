//! What one benchmark run measured, as figures (JSON) and as a table of
//! ratios to the ceiling; and the Prometheus histograms it reads message
//! ages from.

use std::time::Duration;

use serde::Serialize;

/// Everything one run measured.
#[derive(Debug, Default, Serialize)]
pub(super) struct BenchReport {
    /// `redis-server --version`.
    pub redis_version: String,
    /// CPU cores available.
    pub cores: usize,
    /// `redis-benchmark -P 64 -c 50 -t lpush` requests (elements) per second.
    pub ceiling_lpush_per_second: Option<f64>,
    /// `redis-benchmark -P 64 -c 50 -t lpop` requests per second.
    pub ceiling_lpop_per_second: Option<f64>,
    /// Generator at interval 0, messages per second.
    pub generator_per_second: f64,
    /// Backlog drained by one consumer process, messages per second.
    pub drain_1_consumer_per_second: f64,
    /// Backlog drained by two consumer processes, messages per second.
    pub drain_2_consumers_per_second: f64,
    /// Median message age at the fixed rate, milliseconds.
    pub age_p50_ms: f64,
    /// 99th percentile message age at the fixed rate, milliseconds.
    pub age_p99_ms: f64,
    /// The fixed rate of the latency phase.
    pub latency_rate: u64,
    /// Peak RSS of the generator process, bytes.
    pub generator_peak_rss_bytes: u64,
    /// Peak RSS of the single draining consumer, bytes.
    pub consumer_peak_rss_bytes: u64,
    /// RSS of a consumer holding `in_flight` messages, bytes.
    pub consumer_rss_at_in_flight_bytes: u64,
    /// Messages held in the memory phase.
    pub in_flight: u64,
}

/// Cumulative `(le, count)` buckets of a histogram from `/metrics`.
pub(super) async fn scrape_histogram(port: u16, name: &str) -> Vec<(f64, f64)> {
    let Some((_, body)) =
        dsg_testkit::http_client::get(port, "/metrics", Duration::from_secs(2)).await
    else {
        return Vec::new();
    };
    parse_histogram(&body, name)
}

/// Parses cumulative buckets of `name` from Prometheus text.
fn parse_histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly within a
/// bucket (as Prometheus' `histogram_quantile`).
pub(super) fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let mut b: Vec<(f64, f64)> = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let Some(&(_, total)) = b.last() else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in &b {
        if count >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let in_bucket = count - prev.1;
            let frac = if in_bucket > 0.0 {
                (rank - prev.1) / in_bucket
            } else {
                0.0
            };
            return prev.0 + (le - prev.0) * frac;
        }
        prev = (le, count);
    }
    prev.0
}

/// The figures as a table.
pub(super) fn render(r: &BenchReport) -> String {
    let ratio = |v: f64, c: Option<f64>| c.map_or("-".to_string(), |c| format!("{:.2}", v / c));
    let per_s = |v: f64| format!("{:>12.0} /s", v);
    let opt = |v: Option<f64>| v.map_or(format!("{:>14}", "-"), per_s);
    let mb = |b: u64| format!("{:>11.1} MB", b as f64 / 1_048_576.0);
    let mut s = format!(
        "redis-dsg bench: redis-server {} on loopback, {} cores\n\n{:<48} {:>14}  {}\n",
        r.redis_version, r.cores, "measure", "value", "ratio to ceiling"
    );
    let mut line = |name: &str, value: String, ratio: String| {
        s.push_str(&format!("{name:<48} {value:>14}  {ratio}\n"));
    };
    line(
        "ceiling: redis-benchmark LPUSH -P 64 -c 50",
        opt(r.ceiling_lpush_per_second),
        "1.00".into(),
    );
    line(
        "ceiling: redis-benchmark LPOP -P 64 -c 50",
        opt(r.ceiling_lpop_per_second),
        "1.00".into(),
    );
    line(
        "generator, GENERATOR_INTERVAL=0",
        per_s(r.generator_per_second),
        format!(
            "{} of LPUSH",
            ratio(r.generator_per_second, r.ceiling_lpush_per_second)
        ),
    );
    line(
        "drain backlog, 1 consumer process",
        per_s(r.drain_1_consumer_per_second),
        format!(
            "{} of LPOP",
            ratio(r.drain_1_consumer_per_second, r.ceiling_lpop_per_second)
        ),
    );
    line(
        "drain backlog, 2 consumer processes",
        per_s(r.drain_2_consumers_per_second),
        format!(
            "{} of LPOP",
            ratio(r.drain_2_consumers_per_second, r.ceiling_lpop_per_second)
        ),
    );
    line(
        &format!("message age p50 at {} msgs/s", r.latency_rate),
        format!("{:>11.2} ms", r.age_p50_ms),
        String::new(),
    );
    line(
        &format!("message age p99 at {} msgs/s", r.latency_rate),
        format!("{:>11.2} ms", r.age_p99_ms),
        String::new(),
    );
    line(
        "peak RSS, generator",
        mb(r.generator_peak_rss_bytes),
        String::new(),
    );
    line(
        "peak RSS, consumer draining",
        mb(r.consumer_peak_rss_bytes),
        String::new(),
    );
    line(
        &format!("RSS, consumer with {} in flight", r.in_flight),
        mb(r.consumer_rss_at_in_flight_bytes),
        String::new(),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let b = vec![
            (0.001, 50.0),
            (0.002, 90.0),
            (0.005, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&b, 0.5) - 0.001).abs() < 1e-9);
        assert!((quantile(&b, 0.7) - 0.0015).abs() < 1e-9);
        assert!((quantile(&b, 0.95) - 0.0035).abs() < 1e-9);
        let text = "x_bucket{le=\"0.001\"} 5\nx_bucket{le=\"+Inf\"} 7\nx_count 7\n";
        assert_eq!(
            parse_histogram(text, "x"),
            vec![(0.001, 5.0), (f64::INFINITY, 7.0)]
        );
    }
}
