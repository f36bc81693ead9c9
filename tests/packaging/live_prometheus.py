"""Live observability test of redis-dsg (issue 14): a real Prometheus scrapes
real replicas every second, labelled as a ServiceMonitor would label them,
with the shipped alert rules loaded; the shipped dashboard's every
expression is evaluated with its variables substituted.

    target/packaging-venv/bin/python tests/packaging/live_prometheus.py --binary target/debug/redis-dsg [--verbose]

What it proves, in about a minute (every process it starts is stopped at the
end, also on failure; ports are free ports on 127.0.0.1):

1. Prometheus (Debian's package, `prometheus` on PATH) loads
   deploy/prometheus/alerts.yaml, and every rule evaluates without error.
2. Three replicas and a private redis-server: every target is up, one pod
   generates.
3. Every dashboard expression, with $namespace, $job, $pod (All), $queue,
   $error_queue, $__rate_interval, $__interval (the panel's minimum) and
   $__range substituted, parses in Prometheus and returns data (stat panels
   as instant queries, time series as range queries over the last 20 s).
4. While the fleet is healthy, no alert is pending or firing.
5. The generator is SIGKILLed: dsg_is_generator moves to another pod (as
   Prometheus sees it), the killed target goes down, RedisDsgNoGenerator is
   pending for a moment and resolves, nothing fires.
6. Redis is stopped for a few seconds: dsg_redis_up drops to 0 on every
   pod, the queue's gauges vanish instead of freezing; once Redis is back,
   one generator again and the queue's age is reported again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check  # noqa: E402  (the packaging checks' helpers)

NAMESPACE = check.README_NAMESPACE  # the namespace the scraped replicas' series carry (the README's)
JOB = check.RELEASE
REPLICAS = 3
SCRAPE = "1s"
# Grafana's $__rate_interval is max($__interval + scrape, 4 x scrape).
RATE_INTERVAL = "4s"
WARM_UP_SECONDS = 8


class Failed(Exception):
    pass


def say(message: str) -> None:
    print(f"live-prometheus: {message}", flush=True)


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise Failed(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/query", query=expr)["result"]

    def query_range(self, expr: str, seconds: int) -> list[dict[str, Any]]:
        now = time.time()
        return self.get("/api/v1/query_range", query=expr, start=f"{now - seconds:.3f}", end=f"{now:.3f}", step="1")["result"]

    def alerts(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/alerts")["alerts"]


def substitute(expr: str, panel: dict[str, Any], elapsed: int) -> str:
    """Grafana's variables, as the dashboard would send them for this fleet."""
    expr = check.substitute_numbers(expr, check.numeric_variables(json.loads(check.DASHBOARD.read_text())))
    interval = panel.get("interval") or "2s"
    for name, value in (("__rate_interval", RATE_INTERVAL), ("__interval", interval), ("__range", f"{elapsed}s"),
                        ("namespace", NAMESPACE), ("job", JOB), ("pod", ".+"), ("queue", "a"), ("error_queue", "errors")):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", type=Path, required=True)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, TSDB)")
    parser.add_argument("--verbose", action="store_true", help="print every expression and how many series it returned")
    args = parser.parse_args()
    prometheus_bin = shutil.which("prometheus")
    if not prometheus_bin:
        say("prometheus is not installed (Debian: apt-get install prometheus)")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="dsg-live-prometheus-"))
    procs = check.Processes(work)
    figures: dict[str, float] = {}
    problems: list[str] = []
    started = time.monotonic()

    try:
        # -- Redis and the replicas -----------------------------------------
        redis_port = check.start_redis(procs, "redis-server", None, None)
        ports = [check.free_port() for _ in range(REPLICAS)]
        pods = {}
        for i, port in enumerate(ports):
            env = {
                "PATH": os.environ["PATH"],
                "REDIS_URL": f"redis://127.0.0.1:{redis_port}",
                "DSG_HTTP__PORT": str(port),
                "DSG_HTTP__BIND": "127.0.0.1",
                "DSG_LOG_FORMAT": "json",
                # Traffic that fills every panel in seconds; a lease that
                # moves within 2 s of a SIGKILL.
                "DSG_GENERATOR__INTERVAL_MS": "20",
                "DSG_PROCESSOR__MAX_MS": "50",
                "DSG_LEASE__TTL_MS": "2000",
                "DSG_LEASE__RENEW_DEADLINE_MS": "1500",
                "DSG_LEASE__RETRY_PERIOD_MS": "500",
                "DSG_LEASE__PING_INTERVAL_SECONDS": "1",
            }
            name = f"{JOB}-{i}"
            pods[name] = (procs.start(name, [str(args.binary), "run"], env), port)
        t0 = time.monotonic()
        for name, (proc, port) in pods.items():
            check.wait_for(f"{name} ready", lambda p=proc, port=port: p.poll() is None and check.http_get(port, "/readyz")[0] == 200, 30)
        figures["replicas ready (s)"] = time.monotonic() - t0

        # -- Prometheus -------------------------------------------------------
        prom_port = check.free_port()
        # Labels as the Prometheus Operator gives a ServiceMonitor's targets.
        config = {
            "global": {"scrape_interval": SCRAPE, "scrape_timeout": SCRAPE, "evaluation_interval": SCRAPE},
            "rule_files": [str(check.ALERTS)],
            "scrape_configs": [{
                "job_name": JOB,
                "metrics_path": "/metrics",
                "static_configs": [{
                    "targets": [f"127.0.0.1:{port}"],
                    "labels": {"namespace": NAMESPACE, "pod": name, "service": JOB, "endpoint": "http", "container": JOB},
                } for name, (_, port) in pods.items()],
            }],
        }
        (work / "prometheus.yml").write_text(json.dumps(config, indent=2))
        check_config = subprocess.run(["promtool", "check", "config", str(work / "prometheus.yml")], capture_output=True, text=True)
        if check_config.returncode != 0:
            raise Failed(f"promtool check config:\n{check_config.stdout}{check_config.stderr}")
        t0 = time.monotonic()
        procs.start("prometheus", [prometheus_bin, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1h",
                                   "--log.level=warn"], {"PATH": os.environ["PATH"]})
        prom = Prometheus(prom_port)
        check.wait_for("Prometheus ready", lambda: check.http_get(prom_port, "/-/ready")[0] == 200, 30)
        figures["Prometheus ready (s)"] = time.monotonic() - t0
        check.wait_for("every target up", lambda: len([r for r in prom.query(f'up{{job="{JOB}"}} == 1')]) == REPLICAS, 30)
        figures["first scrape of every target (s)"] = time.monotonic() - t0
        t_query = time.monotonic()
        prom.query("up")
        figures["one instant query (ms)"] = (time.monotonic() - t_query) * 1000

        # 1. The rules load and evaluate without error.
        groups = prom.get("/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        expected = {r["alert"] for r in check.alert_rules(check.load_yaml(check.ALERTS))}
        if {r["name"] for r in rules} != expected:
            raise Failed(f"Prometheus loaded rules {sorted(r['name'] for r in rules)}, the file has {sorted(expected)}")
        check.wait_for("a rule evaluation", lambda: all(r.get("lastEvaluation", "").startswith("20") for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]), 10)
        bad = [f"{r['name']}: {r.get('lastError')}" for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"] if r.get("health") != "ok"]
        if bad:
            problems.append("rules that do not evaluate: " + "; ".join(bad))
        say(f"{len(rules)} alert rules loaded, health ok; evaluation every {SCRAPE}")

        # 2. One generator, as Prometheus sees it.
        check.wait_for("one generator in Prometheus", lambda: len(prom.query(f'dsg_is_generator{{job="{JOB}"}} == 1')) == 1, 30)
        time.sleep(WARM_UP_SECONDS)  # traffic for rates and histograms

        # 3. Every dashboard expression returns data.
        dashboard = json.loads(check.DASHBOARD.read_text())
        elapsed = int(time.monotonic() - t0)
        evaluated = empty = 0
        pending: set[str] = set()
        for panel in check.all_panels(dashboard):
            for target in panel.get("targets", []):
                expr = substitute(target["expr"], panel, elapsed)
                instant = target.get("instant", False)
                try:
                    result = prom.query(expr) if instant else prom.query_range(expr, 20)
                except (Failed, urllib.error.HTTPError) as e:
                    problems.append(f"panel {panel['title']!r} {target['refId']}: {expr}: {e}")
                    continue
                evaluated += 1
                has_data = any(r.get("value") or r.get("values") for r in result)
                if args.verbose:
                    say(f"  {'instant' if instant else 'range  '} {len(result):2d} series  {panel['title']} {target['refId']}: {expr}")
                if not has_data:
                    # A metric the product announced but this binary does
                    # not export yet (check.ANNOUNCED_METRICS) has no data.
                    missing = sorted(m for m in check.promql_metrics(expr) & check.ANNOUNCED_METRICS
                                     if not prom.query(f'count({{__name__="{m}"}})'))
                    if missing:
                        pending.update(missing)
                        continue
                    empty += 1
                    problems.append(f"panel {panel['title']!r} {target['refId']}: no data for {expr}")
        for var in dashboard["templating"]["list"]:
            if var.get("type") == "query":
                query = var["query"]["query"]
                selector = query[len("label_values("):query.rindex(",")]
                label = query[query.rindex(",") + 1:-1].strip()
                values = {s.get(label) for s in prom.get("/api/v1/series", **{"match[]": substitute(selector, {}, elapsed)})}
                if not values - {None}:
                    problems.append(f"variable {var['name']}: no values for {query}")
                evaluated += 1
        say(f"dashboard: {evaluated} expressions evaluated ({empty} empty)"
            + (f"; no data yet from metrics this binary does not export: {', '.join(sorted(pending))}" if pending else ""))

        # 4. Healthy: no alert pending or firing, looked at for 5 s.
        for _ in range(5):
            active = prom.alerts()
            if active:
                problems.append("alerts while healthy: " + ", ".join(f"{a['labels']['alertname']} {a['state']}" for a in active))
                break
            time.sleep(1)
        say("healthy fleet: no alert pending or firing" if not active else f"healthy fleet: {len(active)} alerts")

        # 5. SIGKILL the generator: the flag moves, as Prometheus sees it.
        generator = prom.query(f'dsg_is_generator{{job="{JOB}"}} == 1')[0]["metric"]["pod"]
        killed_at = time.monotonic()
        pods[generator][0].kill()
        check.wait_for("another generator in Prometheus",
                       lambda: [r["metric"]["pod"] for r in prom.query(f'dsg_is_generator{{job="{JOB}"}} == 1')] not in ([], [generator]), 30)
        figures["SIGKILL -> another pod's dsg_is_generator=1 in Prometheus (s)"] = time.monotonic() - killed_at
        new = prom.query(f'dsg_is_generator{{job="{JOB}"}} == 1')
        check.wait_for("the killed target down", lambda: prom.query(f'up{{job="{JOB}", pod="{generator}"}} == 0') != [], 10)
        figures["SIGKILL -> up=0 for the killed pod (s)"] = time.monotonic() - killed_at
        say(f"generator {generator} SIGKILLed; now {', '.join(r['metric']['pod'] for r in new)}")
        # NoGenerator goes pending between the kill and the takeover (its
        # `for` is a minute), QueueUnobserved if the killed pod was the one
        # sampling the queue's gauges until another takes the claim (its
        # TTL, 6 s, then the others' next try, every 10 s ± 20 %): they
        # must resolve, and nothing may fire.
        pending = sorted({a["labels"]["alertname"] for a in prom.alerts()})
        check.wait_for("no alert after the failover", lambda: prom.alerts() == [], 30)
        figures["SIGKILL -> no alert pending (s)"] = time.monotonic() - killed_at
        say("after the failover: pending for a moment, then resolved: " + (", ".join(pending) or "none"))

        # 6. Redis stops for a while: every pod reports it (dsg_redis_up),
        #    the queue's gauges vanish instead of freezing, and come back.
        redis_proc = next(p for n, p in procs.procs if n == "redis-server")
        redis_proc.kill()
        redis_proc.wait()
        stopped_at = time.monotonic()
        check.wait_for("max(dsg_redis_up) == 0", lambda: prom.query(f'max(dsg_redis_up{{job="{JOB}"}}) == 0') != [], 20)
        figures["Redis stopped -> max(dsg_redis_up)=0 in Prometheus (s)"] = time.monotonic() - stopped_at
        check.wait_for("dsg_queue_length gone while Redis is down",
                       lambda: prom.query(f'dsg_queue_length{{job="{JOB}", queue="a"}}') == [], 20)
        figures["Redis stopped -> dsg_queue_length gone in Prometheus (s)"] = time.monotonic() - stopped_at
        check.start_redis(procs, "redis-server-again", None, None, port=redis_port)
        restarted_at = time.monotonic()
        check.wait_for("one generator again", lambda: len(prom.query(f'dsg_is_generator{{job="{JOB}"}} == 1')) == 1, 30)
        figures["Redis back -> one generator in Prometheus (s)"] = time.monotonic() - restarted_at
        check.wait_for("the queue's age reported again",
                       lambda: prom.query(f'dsg_queue_oldest_message_age_seconds{{job="{JOB}", queue="a"}}') != [], 20)
        figures["Redis back -> queue age reported again (s)"] = time.monotonic() - restarted_at
        firing = [a for a in prom.alerts() if a["state"] == "firing"]
        if firing:
            problems.append("alerts firing: " + ", ".join(a["labels"]["alertname"] for a in firing))
    except (Failed, AssertionError) as e:
        problems.append(str(e))
    finally:
        procs.stop_all()
        if args.keep:
            say(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    figures["total (s)"] = time.monotonic() - started
    for k, v in figures.items():
        say(f"{k}: {v:.2f}")
    for p in problems:
        say(f"FAIL {p}")
    say("ok" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
