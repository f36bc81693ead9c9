//! The four scenarios of `bench --memory` ([`super`]): a full Redis, an
//! evicting one, large messages, and the bytes per message.

use super::*;

impl Run<'_> {
    /// Scenario 1: a generator at interval 0 alone for `fill_seconds`, then
    /// two consumers for `consume_seconds`; with `maxmemory` and
    /// `noeviction`, or without a limit (`maxmemory` `None`).
    pub(super) async fn full(
        &self,
        maxmemory: Option<u64>,
        invalid_ratio: f64,
        reference: Option<&FullRun>,
    ) -> Result<FullRun, String> {
        let a = self.args;
        let name = match maxmemory {
            Some(b) => format!(
                "full Redis, maxmemory {} MiB noeviction, {} % invalid",
                b / 1_048_576,
                invalid_ratio * 100.0
            ),
            None => format!(
                "unconstrained reference, no maxmemory, {} % invalid",
                invalid_ratio * 100.0
            ),
        };
        let server_args = match maxmemory {
            Some(b) => vec![
                "--maxmemory".to_string(),
                b.to_string(),
                "--maxmemory-policy".into(),
                "noeviction".into(),
            ],
            None => vec!["--maxmemory".to_string(), "0".into()],
        };
        let mut stage = Stage::open(self.logs, &name, &server_args).await?;
        let exe = self.binary.exe;
        stage
            .start(exe, "generator", &self.generator_env(&stage.url))
            .await?;
        let t0 = Instant::now();
        let window = Duration::from_secs(a.sample_window_seconds.max(1));
        let fill = Duration::from_secs(a.fill_seconds);
        let end = fill + Duration::from_secs(a.consume_seconds);
        let mut windows = Vec::new();
        let mut current = WindowState::open(Duration::ZERO, &mut stage).await;
        let mut consumers_started = false;
        let mut tick = tokio::time::interval(MEMORY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut peak = 0;
        loop {
            tick.tick().await;
            let t = t0.elapsed();
            if let Ok(used) = stage.used_memory().await {
                current.used_max = current.used_max.max(used);
                peak = peak.max(used);
            }
            if !consumers_started && t >= fill {
                // Not waiting for them: their start-up is part of the run.
                let env = self.consumer_env(&stage.url, invalid_ratio);
                stage.spawn(exe, "consumer-1", &env)?;
                stage.spawn(exe, "consumer-2", &env)?;
                consumers_started = true;
            }
            if t >= current.start + window || t >= end {
                let (closed, next) = current.close(&mut stage, self.binary, fill, window).await?;
                windows.push(closed);
                if t >= end {
                    break;
                }
                current = next;
            }
        }
        if let Some(r) = reference {
            for (w, rw) in windows.iter_mut().zip(&r.windows) {
                w.processed_ratio_to_reference =
                    ratio(w.processed_per_second, rw.processed_per_second);
                w.generated_ratio_to_reference =
                    ratio(w.generated_per_second, rw.generated_per_second);
            }
        }
        stage.scrape_all().await;
        let run = FullRun {
            name,
            maxmemory_bytes: maxmemory.unwrap_or(0),
            policy: maxmemory.map(|_| "noeviction".to_string()),
            invalid_ratio,
            fill_seconds: a.fill_seconds,
            consume_seconds: a.consume_seconds,
            peak_used_memory_bytes: peak,
            windows,
            processed_total: stage.total("dsg_messages_processed_total") as u64,
            generated_total: stage.total("dsg_messages_generated_total") as u64,
            oom_log_lines: oom_lines(&stage.pods),
            redis_errors: per_process(&stage.pods, |p| {
                p.metrics
                    .as_deref()
                    .map(|m| metric_by_label(m, "dsg_redis_errors_total", "operation"))
            }),
            heartbeat_errors: stage
                .pods
                .iter()
                .filter_map(|p| {
                    p.metrics.as_deref().map(|m| {
                        metric_by_label(m, "dsg_redis_errors_total", "operation")
                            .get("heartbeat")
                            .copied()
                            .unwrap_or(0.0)
                    })
                })
                .sum::<f64>() as u64,
            generator_paused: stage.pods[0]
                .metrics
                .as_deref()
                .map(|m| metric_by_label(m, "dsg_generator_paused", "reason"))
                .filter(|m| !m.is_empty()),
            generator_paused_seconds: stage.pods[0]
                .metrics
                .as_deref()
                .map(|m| metric_by_label(m, "dsg_generator_paused_seconds_total", "reason"))
                .filter(|m| !m.is_empty()),
            generator_paused_log_lines: count_lines(&stage.pods[0].log_text(), |l| {
                l.contains("generator holding back")
            }),
            generator_resumed_log_lines: count_lines(&stage.pods[0].log_text(), |l| {
                l.contains("generator resumed after holding back")
            }),
            exited: exited(&mut stage.pods),
        };
        stage.close().await;
        Ok(run)
    }

    /// Scenario 2: a generator at interval 0 and two consumers together on
    /// a Redis at `maxmemory` with an evicting `policy`.
    pub(super) async fn evict(&self, maxmemory: u64, policy: &str) -> Result<EvictRun, String> {
        let a = self.args;
        let name = format!(
            "evicting Redis, maxmemory {} MiB {policy}",
            maxmemory / 1_048_576
        );
        let server_args = vec![
            "--maxmemory".to_string(),
            maxmemory.to_string(),
            "--maxmemory-policy".into(),
            policy.into(),
        ];
        let mut stage = Stage::open(self.logs, &name, &server_args).await?;
        let exe = self.binary.exe;
        let t0 = Instant::now();
        stage.spawn(exe, "generator", &self.generator_env(&stage.url))?;
        let env = self.consumer_env(&stage.url, a.evict_invalid_ratio);
        stage.spawn(exe, "consumer-1", &env)?;
        stage.spawn(exe, "consumer-2", &env)?;
        if self.binary.knows_new_settings {
            // Its own queue, so it takes none of the others' messages: it is
            // there for its readiness only.
            let probe = self.env(
                &stage.url,
                &PodSettings::defaults(PodMode::Consumer),
                &[
                    ("DSG_REDIS__REQUIRE_NOEVICTION", "true"),
                    ("REDIS_QUEUE", "dsg-bench-probe"),
                    ("REDIS_ERROR_QUEUE", "dsg-bench-probe:errors"),
                ],
            );
            stage.spawn(exe, "probe", &probe)?;
        }
        let errors_at_start = stage.llen(&self.binary.error_queue).await?;
        let mut errors_max = errors_at_start;
        let mut first_warning: Option<(f64, String, String)> = None;
        let end = Duration::from_secs(a.evict_seconds);
        let mut tick = tokio::time::interval(MEMORY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut peak = 0;
        while t0.elapsed() < end {
            tick.tick().await;
            if let Ok(used) = stage.used_memory().await {
                peak = peak.max(used);
            }
            if let Ok(n) = stage.llen(&self.binary.error_queue).await {
                errors_max = errors_max.max(n);
            }
            if first_warning.is_none() {
                let at = t0.elapsed().as_secs_f64();
                for p in &mut stage.pods {
                    if let Some(line) = p
                        .new_log_lines()
                        .into_iter()
                        .find(|l| l.contains("WARN") && l.contains(policy))
                    {
                        first_warning = Some((at, p.name.clone(), shorten(&line, 240)));
                        break;
                    }
                }
            }
        }
        stage.scrape_all().await;
        let probe = match stage.pods.iter().find(|p| p.name == "probe") {
            Some(p) => {
                let answer = dsg_testkit::http_client::get(
                    p.replica.port(),
                    "/readyz",
                    Duration::from_secs(2),
                )
                .await;
                Some(match answer {
                    Some((code, body)) => ProbeReadiness {
                        status: Some(code),
                        body: shorten(body.trim(), 400),
                    },
                    None => ProbeReadiness {
                        status: None,
                        body: "no answer".into(),
                    },
                })
            }
            None => None,
        };
        let generator = &stage.pods[0];
        let run = EvictRun {
            policy: policy.to_string(),
            seconds: a.evict_seconds,
            invalid_ratio: a.evict_invalid_ratio,
            peak_used_memory_bytes: peak,
            evicted_keys: stage.info_field(InfoKind::Stats, "evicted_keys").await?,
            error_list_at_start: errors_at_start,
            error_list_max: errors_max,
            error_list_at_end: stage.llen(&self.binary.error_queue).await?,
            queue_at_end: stage.llen(&self.binary.queue).await?,
            fenced_off_log_lines: count_lines(&generator.log_text(), |l| {
                l.contains("write fenced off")
            }),
            lease_transitions: {
                let mut all = BTreeMap::new();
                for p in &stage.pods {
                    if let Some(m) = p.metrics.as_deref() {
                        for (k, v) in
                            metric_by_label(m, "dsg_lease_transitions_total", "transition")
                        {
                            *all.entry(k).or_insert(0.0) += v;
                        }
                    }
                }
                all
            },
            processed_total: stage.total("dsg_messages_processed_total") as u64,
            generated_total: stage.total("dsg_messages_generated_total") as u64,
            first_policy_warning_seconds: first_warning.as_ref().map(|w| w.0),
            first_policy_warning: first_warning.map(|(_, who, line)| format!("{who}: {line}")),
            eviction_safe: stage
                .pods
                .iter()
                .map(|p| PerProcess {
                    process: p.name.clone(),
                    value: p.sum("dsg_redis_eviction_safe"),
                })
                .collect(),
            probe,
            redis_errors: per_process(&stage.pods, |p| {
                p.metrics
                    .as_deref()
                    .map(|m| metric_by_label(m, "dsg_redis_errors_total", "operation"))
            }),
            exited: exited(&mut stage.pods),
        };
        stage.close().await;
        Ok(run)
    }

    /// Scenario 3: `large_messages` messages of `large_message_kib` KiB
    /// each, then one consumer with every default; its memory while it
    /// takes them all.
    pub(super) async fn large(&self) -> Result<LargeRun, String> {
        let a = self.args;
        let size = a.large_message_kib * 1024;
        let name = format!(
            "{} messages of {} KiB",
            a.large_messages, a.large_message_kib
        );
        let mut stage = Stage::open(self.logs, &name, &[]).await?;
        let mut writer = MessageWriter::new();
        let well_formed =
            redis_dsg::service::message::parse(&large_message(size, &mut writer)).is_ok();
        let mut left = a.large_messages;
        while left > 0 {
            // About 7 MiB per LPUSH: large enough to be quick, small enough
            // for one reply within the client's timeout.
            let k = left.min(8);
            left -= k;
            let batch: Vec<Value> = (0..k)
                .map(|_| Value::Bytes(large_message(size, &mut writer).into()))
                .collect();
            let _: u64 = stage
                .redis
                .client()
                .lpush(&self.binary.queue, batch)
                .await
                .map_err(|e| format!("LPUSH: {e}"))?;
        }
        let used_before = stage.used_memory().await?;
        let env = self.env(&stage.url, &PodSettings::defaults(PodMode::Consumer), &[]);
        let t0 = Instant::now();
        stage.spawn(self.binary.exe, "consumer", &env)?;
        let pid = stage.pods[0]
            .replica
            .pid()
            .ok_or("the consumer did not start")?;
        let sampler = RssSampler::start(pid);
        let n = a.large_messages as f64;
        let mut used_peak = used_before;
        let done = poll(
            Duration::from_secs(180),
            Duration::from_millis(100),
            async || {
                if let Ok(u) = stage.used_memory().await {
                    used_peak = used_peak.max(u);
                }
                let pod = &mut stage.pods[0];
                let processed = pod
                    .scrape()
                    .await
                    .and_then(|m| metric_sum(m, "dsg_messages_processed_total"));
                (processed.unwrap_or(0.0) >= n).then(|| t0.elapsed())
            },
        )
        .await;
        // A moment for anything still being acknowledged twice to show.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stage.scrape_all().await;
        let peak_hwm = dsg_testkit::process::peak_rss_of(&pid.to_string()).unwrap_or(0);
        let (peak_sampled, samples) = sampler.stop();
        let pod = &stage.pods[0];
        let by_outcome = pod
            .metrics
            .as_deref()
            .map(|m| metric_by_label(m, "dsg_messages_processed_total", "outcome"))
            .unwrap_or_default();
        let in_flight_status = pod.replica.status().await.map(|s| s.in_flight);
        let keys = Keys::new(&self.binary.queue, &self.binary.error_queue);
        let mut in_flight_left = 0;
        for key in stage.scan(&keys.inflight("*")).await? {
            let n: u64 = stage
                .redis
                .client()
                .hlen(&key)
                .await
                .map_err(|e| e.to_string())?;
            // The marker field every in-flight hash carries is not a message.
            let marker: bool = stage
                .redis
                .client()
                .hexists(&key, INFLIGHT_MARKER)
                .await
                .map_err(|e| e.to_string())?;
            in_flight_left += n - u64::from(marker && n > 0);
        }
        let run = LargeRun {
            messages: a.large_messages,
            message_bytes: size,
            well_formed,
            redis_used_memory_after_push_bytes: used_before,
            redis_used_memory_peak_bytes: used_peak,
            all_processed_after_seconds: done.map(|d| d.as_secs_f64()),
            consumer_vm_hwm_bytes: peak_hwm,
            consumer_vm_rss_peak_sampled_bytes: peak_sampled,
            rss_samples: samples,
            processed_by_outcome: by_outcome
                .iter()
                .map(|(k, v)| (k.clone(), *v as u64))
                .collect(),
            processed_total: by_outcome.values().sum::<f64>() as u64,
            queue_at_end: stage.llen(&self.binary.queue).await?,
            error_list_at_end: stage.llen(&self.binary.error_queue).await?,
            in_flight_reported: in_flight_status,
            in_flight_left_in_redis: in_flight_left,
            redis_errors: pod
                .metrics
                .as_deref()
                .map(|m| metric_by_label(m, "dsg_redis_errors_total", "operation"))
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, v)| *v > 0.0)
                .map(|(k, v)| (k, v as u64))
                .collect(),
            exited: exited(&mut stage.pods),
        };
        stage.close().await;
        Ok(run)
    }

    /// Scenario 4: `MEMORY USAGE` of a queue of `queued_messages` product
    /// messages, and of the in-flight hash of a consumer holding
    /// `held_messages` (each takes 60 s, so they stay held).
    pub(super) async fn bytes(&self) -> Result<QueueBytes, String> {
        let a = self.args;
        let name = format!("bytes per message, {} queued", a.queued_messages);
        let mut stage = Stage::open(self.logs, &name, &[]).await?;
        let queue = &self.binary.queue;
        crate::bench::phases::prefill(&stage.redis, queue, a.queued_messages).await?;
        let queue_len = stage.llen(queue).await?;
        let queue_usage = stage.memory_usage(queue).await?;
        let mut c = PodSettings::defaults(PodMode::Consumer);
        c.processing_ms = Some((60_000, 60_000));
        let held = a.held_messages.to_string();
        let env = self.env(
            &stage.url,
            &c,
            &[("CONSUMER_MAX_GOROUTINES", held.as_str())],
        );
        stage.start(self.binary.exe, "consumer", &env).await?;
        let pod = &stage.pods[0];
        let want = a.held_messages.min(queue_len);
        poll(
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || {
                let s = pod.replica.status().await?;
                (u64::try_from(s.in_flight) == Ok(want)).then_some(())
            },
        )
        .await
        .ok_or_else(|| format!("the consumer did not hold {want} messages within 60 s"))?;
        let keys = Keys::new(queue, &self.binary.error_queue);
        let hashes = stage.scan(&keys.inflight("*")).await?;
        let hash = hashes
            .first()
            .ok_or("no in-flight hash found with SCAN")?
            .clone();
        let fields: u64 = stage
            .redis
            .client()
            .hlen(&hash)
            .await
            .map_err(|e| e.to_string())?;
        let marker: bool = stage
            .redis
            .client()
            .hexists(&hash, INFLIGHT_MARKER)
            .await
            .map_err(|e| e.to_string())?;
        let hash_usage = stage.memory_usage(&hash).await?;
        let held_n = fields - u64::from(marker);
        let run = QueueBytes {
            queued: queue_len,
            queue_usage_bytes: queue_usage,
            queue_bytes_per_message: queue_usage as f64 / queue_len.max(1) as f64,
            inflight_key: hash,
            inflight_fields: fields,
            inflight_marker: marker,
            held: held_n,
            inflight_usage_bytes: hash_usage,
            inflight_bytes_per_message: hash_usage as f64 / held_n.max(1) as f64,
            message_bytes: redis_dsg::service::message::GENERATED_LEN,
        };
        stage.close().await;
        Ok(run)
    }
}

/// A well-formed product message of exactly `size` bytes (at least ~90):
/// the original's format, `<uuid> at <Go time>`, whose parser reads the
/// date, the clock and the offset and takes what follows (Go's zone name
/// and monotonic reading) as informational, so padding after them keeps
/// it well-formed. The RFC 3339 format has no such room: any byte after
/// the timestamp makes it malformed.
fn large_message(size: usize, writer: &mut MessageWriter) -> Vec<u8> {
    let small = writer.batch(1).remove(0);
    let text = String::from_utf8_lossy(&small);
    let (uuid, stamp) = text.split_once(' ').unwrap_or((&text, ""));
    let (date, clock) = stamp
        .trim_end_matches('Z')
        .split_once('T')
        .unwrap_or(("", ""));
    let mut out = format!("{uuid} at {date} {clock} +0000 UTC m=+0.000000001 ").into_bytes();
    out.resize(size.max(out.len()), b'x');
    out
}

/// The window being measured of a full-Redis run.
struct WindowState {
    start: Duration,
    used_max: u64,
    /// When the counters below were read.
    at: Instant,
    processed: f64,
    generated: f64,
}

impl WindowState {
    /// The first window, from the counters now.
    async fn open(start: Duration, stage: &mut Stage) -> WindowState {
        stage.scrape_all().await;
        WindowState {
            start,
            used_max: 0,
            at: Instant::now(),
            processed: stage.total("dsg_messages_processed_total"),
            generated: stage.total("dsg_messages_generated_total"),
        }
    }

    /// Ends the window with the lengths and counters now; the next window
    /// starts from the same reading, so no message falls between two.
    async fn close(
        self,
        stage: &mut Stage,
        binary: &Binary<'_>,
        fill: Duration,
        length: Duration,
    ) -> Result<(Window, WindowState), String> {
        stage.scrape_all().await;
        let at = Instant::now();
        let seconds = (at - self.at).as_secs_f64().max(1e-9);
        let processed = stage.total("dsg_messages_processed_total");
        let generated = stage.total("dsg_messages_generated_total");
        let window = Window {
            start_s: self.start.as_secs_f64(),
            end_s: (self.start + length).as_secs_f64(),
            phase: if self.start < fill { "fill" } else { "consume" }.into(),
            used_memory_max_bytes: self.used_max,
            queue_length: stage.llen(&binary.queue).await?,
            error_list_length: stage.llen(&binary.error_queue).await?,
            processed_per_second: (processed - self.processed).max(0.0) / seconds,
            generated_per_second: (generated - self.generated).max(0.0) / seconds,
            processed_ratio_to_reference: None,
            generated_ratio_to_reference: None,
            generator_paused: stage.pods[0]
                .metrics
                .as_deref()
                .map(|m| metric_by_label(m, "dsg_generator_paused", "reason"))
                .filter(|m| !m.is_empty()),
        };
        let next = WindowState {
            start: self.start + length,
            used_max: 0,
            at,
            processed,
            generated,
        };
        Ok((window, next))
    }
}

fn ratio(v: f64, reference: f64) -> Option<f64> {
    (reference > 0.0).then(|| v / reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_message_is_well_formed_and_exactly_its_size() {
        let mut w = MessageWriter::new();
        let m = large_message(900 * 1024, &mut w);
        assert_eq!(m.len(), 900 * 1024);
        assert!(redis_dsg::service::message::parse(&m).is_ok());
    }
}
