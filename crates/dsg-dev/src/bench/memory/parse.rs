//! Reading what the processes of `bench --memory` said: `INFO` fields,
//! the Prometheus exposition, log lines.

use super::*;

/// `field:value` of an `INFO` reply, as a number.
pub(super) fn info_field(info: &str, field: &str) -> Option<u64> {
    info.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .find(|(k, _)| *k == field)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// One series of Prometheus text: name, labels, value.
pub(super) type Series = (String, Vec<(String, String)>, f64);

/// The series of Prometheus text format 0.0.4 (comments skipped).
pub(super) fn parse_metrics(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = line[..name_end].to_string();
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if rest.starts_with('{') {
            let Some((parsed, after)) = parse_labels(&rest[1..]) else {
                continue;
            };
            labels = parsed;
            rest = after;
        }
        if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
            out.push((name, labels, v));
        }
    }
    out
}

/// `a="x",b="y"}` → the labels and what follows the brace.
pub(super) fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => {
                    let (_, e) = chars.next()?;
                    value.push(match e {
                        'n' => '\n',
                        other => other,
                    });
                }
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.push((key.trim().to_string(), value));
        rest = &after[end + 1..];
    }
}

/// The sum of every series of `name` (`None` when it is not exported).
pub(super) fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = parse_metrics(text)
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, v)| v)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The series of `name` by the value of `label` (summed over the others).
pub(super) fn metric_by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (n, labels, v) in parse_metrics(text) {
        if n != name {
            continue;
        }
        let key = labels
            .iter()
            .find(|(k, _)| k == label)
            .map_or_else(|| "(none)".to_string(), |(_, v)| v.clone());
        *out.entry(key).or_insert(0.0) += v;
    }
    out
}

/// A map per process (absent when the process exported nothing).
pub(super) fn per_process(
    pods: &[Pod],
    f: impl Fn(&Pod) -> Option<BTreeMap<String, f64>>,
) -> BTreeMap<String, BTreeMap<String, u64>> {
    pods.iter()
        .filter_map(|p| {
            let m = f(p)?;
            Some((
                p.name.clone(),
                m.into_iter()
                    .filter(|(_, v)| *v > 0.0)
                    .map(|(k, v)| (k, v as u64))
                    .collect(),
            ))
        })
        .collect()
}

/// Failures naming "OOM" (WARN and ERROR lines) in each process's log, by
/// the operation the line names (`operation=…`; "(none)" for lines that
/// name none). A generator holding back on OOM says so at INFO: that is the
/// designed answer, not a failure.
pub(super) fn oom_lines(pods: &[Pod]) -> BTreeMap<String, BTreeMap<String, u64>> {
    pods.iter()
        .map(|p| {
            let mut by_op = BTreeMap::new();
            for line in p.log_text().lines().filter(|l| is_oom_failure(l)) {
                *by_op.entry(operation_of(line)).or_insert(0) += 1;
            }
            (p.name.clone(), by_op)
        })
        .collect()
}

pub(super) fn is_oom_failure(line: &str) -> bool {
    let failure = ["WARN", "ERROR", "\"level\":\"WARN\"", "\"level\":\"ERROR\""]
        .iter()
        .any(|level| line.contains(level));
    failure && line.contains("OOM")
}

/// The `operation` field of a log line, text (`operation="fetch"` or
/// `operation=fetch`) or JSON (`"operation":"fetch"`).
pub(super) fn operation_of(line: &str) -> String {
    for key in ["operation=", "\"operation\":"] {
        if let Some(at) = line.find(key) {
            let v = &line[at + key.len()..];
            let v = v.trim_start_matches('"');
            let end = v.find(['"', ' ', ',', '}']).unwrap_or(v.len());
            return v[..end].to_string();
        }
    }
    "(none)".to_string()
}

pub(super) fn count_lines(text: &str, pred: impl Fn(&str) -> bool) -> u64 {
    text.lines().filter(|l| pred(l)).count() as u64
}

/// The processes that exited during the run, with their status.
pub(super) fn exited(pods: &mut [Pod]) -> BTreeMap<String, String> {
    pods.iter_mut()
        .filter_map(|p| Some((p.name.clone(), p.exit_status()?)))
        .collect()
}

pub(super) fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_name_and_label() {
        let text = "# HELP x y\n# TYPE dsg_redis_errors_total counter\n\
                    dsg_redis_errors_total{operation=\"fetch\"} 3\n\
                    dsg_redis_errors_total{operation=\"push\"} 2\n\
                    dsg_messages_processed_total{outcome=\"ok\"} 10\n\
                    dsg_messages_processed_total{outcome=\"invalid\"} 1\n\
                    dsg_build_info{version=\"0.1 \\\"x\\\"\"} 1\n\
                    dsg_is_generator 1\n";
        assert_eq!(metric_sum(text, "dsg_messages_processed_total"), Some(11.0));
        assert_eq!(metric_sum(text, "dsg_is_generator"), Some(1.0));
        assert_eq!(metric_sum(text, "dsg_generator_paused"), None);
        let errors = metric_by_label(text, "dsg_redis_errors_total", "operation");
        assert_eq!(errors.get("fetch"), Some(&3.0));
        assert_eq!(errors.get("push"), Some(&2.0));
        assert_eq!(metric_sum(text, "dsg_build_info"), Some(1.0));
    }

    #[test]
    fn log_lines_name_their_operation() {
        let text = "2026-12-06T10:00:00Z  WARN redis_dsg::service::health: fetching messages from the queue failed; retrying with a growing pause operation=\"fetch\" error=OOM command not allowed";
        assert_eq!(operation_of(text), "fetch");
        assert_eq!(
            operation_of("{\"level\":\"WARN\",\"operation\":\"push\",\"error\":\"OOM\"}"),
            "push"
        );
        assert_eq!(operation_of("OOM somewhere"), "(none)");
        assert!(is_oom_failure(text));
        assert!(!is_oom_failure(
            "2026-12-07T23:33:02Z  INFO redis_dsg::service::generator::hold_back: generator holding back: Redis refused the push: it is at maxmemory (OOM)"
        ));
    }

    #[test]
    fn info_fields_are_numbers() {
        let info =
            "# Memory\r\nused_memory:1234\r\nmaxmemory:25165824\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(info_field(info, "used_memory"), Some(1234));
        assert_eq!(info_field(info, "maxmemory"), Some(25_165_824));
        assert_eq!(info_field(info, "maxmemory_policy"), None);
    }
}
