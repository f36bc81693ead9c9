"""Packaging checks of redis-dsg, run by tests/packaging/run.

Proves with the real tools, offline:

- the Dockerfile (hadolint, and the structure the chart relies on);
- the Helm chart, rendered with every value set of tests/packaging/values/
  (Helm v4's SDK: render, strict lint, values schema), each rendered document
  against the Kubernetes schemas of 1.25 and 1.37 (kubernetes-validate,
  strict), custom resources against the fields we rely on;
- that the schema and the templates refuse every file of
  tests/packaging/bad-values/ with the message each file announces;
- that consumer.max_in_flight_bytes is config.consumer.maxInFlightBytes when
  set, else 40 % of resources.limits.memory (clamped to the program's
  bounds), else left out for the program's default, and the binary reads it;
- that the Deployment agrees with the binary: the real binary, started with
  the pod's exact arguments, environment and mounted files (the ConfigMap and
  the Secrets' data written where the mounts would put them, the Redis
  address substituted by a private redis-server that demands the Secret's
  password and, for rediss:// value sets, speaks TLS with a throw-away CA),
  answers the probe paths on the port the spec names, picks up a rotated
  password file without a restart, stops in time, and `helm test`'s command
  passes against it;
- that deploy/ equals a fresh render (--update regenerates it);
- that the chart's README.md is the values table generated from
  values.yaml's comments (helm-docs' layout; --update regenerates it), that
  Helm loads it (`helm show readme`), and that .helmignore keeps the chart's
  files and drops VCS and editor leftovers;
- that every PromQL expression of the dashboard and the alerts parses and
  names only metrics a live /metrics scrape shows (plus a commented
  allow-list), and the alerts pass `promtool check rules` and
  `promtool test rules` (a healthy fleet checked at every evaluation);
- with a real Prometheus (live_prometheus.py): every dashboard expression
  returns data, no alert is pending on a healthy fleet, the generator flag
  moves when the generator is killed, Redis reachability drops and the
  queue's gauges vanish while Redis is down;
- that the README's alert table and runbooks match the rules;
- that the README's Kubernetes section uses the chart's own commands.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import difflib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import helm_python as helm
import kubernetes_validate.utils as kv
import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "packaging"
CHART = ROOT / "helm" / "redis-dsg"
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
DASHBOARD = DEPLOY / "grafana" / "redis-dsg.json"
CHART_DASHBOARD = CHART / "dashboards" / "redis-dsg.json"
CHART_README = CHART / "README.md"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent

# Release used for deploy/ and the README: `helm install redis-dsg … -n redis-dsg`.
RELEASE = "redis-dsg"
README_NAMESPACE = "redis-dsg"
KUBE_VERSIONS = ["1.25", "1.37"]
# Longest wait for a live process to reach a state (generous: CI machines are
# busy; a healthy run takes a second or two per step).
LIVE_TIMEOUT = 45

# Kinds without a Kubernetes schema, each checked field by field below.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}

# The program's settings that name a file mounted from a Secret, and the
# TriggerAuthentication parameter of KEDA's redis scaler that carries the
# same Secret key.
SECRET_FILE_SETTINGS = {"password_file": "password", "tls_ca_file": "ca", "tls_cert_file": "cert", "tls_key_file": "key"}
# The program's TLS settings: refused with a non-TLS URL.
TLS_SETTINGS = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name", "tls_insecure_skip_verify")
# What the operator would have put in an existing password Secret.
EXISTING_SECRET_PASSWORD = "existing-secret-password"
# Set to 1 to run the live checks of rediss:// value sets against a plain
# redis-server (TLS settings dropped), as happens when openssl is missing.
PLAIN_REDIS_ENV = "DSG_PACKAGING_PLAIN_REDIS"

# The program's bounds of consumer.max_in_flight_bytes, to which the chart
# clamps the value it derives from resources.limits.memory.
MAX_IN_FLIGHT_BYTES_BOUNDS = (65536, 68719476736)

# Metrics the alerts or the dashboard may use that redis-dsg does not export.
METRIC_ALLOW_LIST = {
    # kube-state-metrics: desired and available pods of the Deployment
    # (RedisDsgConsumersNotReady, RedisDsgNoGenerator).
    "kube_deployment_spec_replicas",
    "kube_deployment_status_replicas_available",
    # Prometheus' own series per target (the dashboard's scrape health).
    "up",
}

# Metrics the alerts and the dashboard may use before the binary exports
# them (a feature built in parallel): while the live /metrics lacks one, the
# PromQL check accepts it and names it in its result, and the live
# Prometheus test accepts no data from an expression that selects it. Empty
# now: every metric they use is exported (contract 12's landed with the
# product). Drop a name once the product exports it.
ANNOUNCED_METRICS: set[str] = set()

# Keys of values.yaml whose entries are the operator's own (labels,
# annotations, a node selector): documented as one map, not entry by entry.
FREE_MAPS = {"labels", "annotations", "podAnnotations", "podLabels", "nodeSelector"}

# The Accept header of Prometheus 2.42's scrapes.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")

# Alerts the chart ships (alert name -> what it covers); each has a runbook
# in the README under a heading of its name.
REQUIRED_ALERTS = {
    "RedisDsgNoGenerator": "no generator for more than a minute",
    "RedisDsgMultipleGenerators": "more than one generator",
    "RedisDsgRedisUnreachable": "no pod reaches Redis",
    "RedisDsgBacklogOld": "the oldest waiting message is too old",
    "RedisDsgErrorShareHigh": "error share above the configured invalid ratio",
    "RedisDsgConsumersNotReady": "pods not ready",
    "RedisDsgFencedWritesRejected": "a stale generator's writes were refused",
    "RedisDsgRedisErrors": "Redis operations failing while Redis answers",
    "RedisDsgQueueUnobserved": "no pod reports the backlog",
    "RedisDsgErrorEntriesTrimmed": "errors.max_entries trimmed error entries",
    "RedisDsgRedisMemoryHigh": "Redis' used_memory at the generator's share of maxmemory",
    "RedisDsgRedisEvicts": "Redis' maxmemory-policy may evict the fleet's keys",
}

GENERATED_HEADER = (
    "# Generated by tests/packaging/run --update from helm/redis-dsg with its\n"
    "# default values (release name redis-dsg). Do not edit: change the chart.\n"
)


# --------------------------------------------------------------------------
# Reporting


class Report:
    """Counts checks; a failing check prints why and the run goes on."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def check(self, name: str, fn: Callable[[], str | None]) -> bool:
        started = time.monotonic()
        try:
            detail = fn()
        except Exception as error:  # noqa: BLE001 - every failure is reported
            self.failed.append(name)
            message = str(error) or type(error).__name__
            if not isinstance(error, (AssertionError, helm.HelmError, subprocess.CalledProcessError)):
                message = "".join(traceback.format_exception(error)).rstrip()
            print(f"FAIL {name}\n     " + message.replace("\n", "\n     "), flush=True)
            return False
        self.passed += 1
        took = time.monotonic() - started
        print(f"ok   {name}" + (f" ({detail})" if detail else "") + (f" [{took:.0f} s]" if took >= 1 else ""), flush=True)
        return True

    def skip(self, name: str, why: str) -> None:
        self.skipped.append(name)
        print(f"skip {name}: {why}", flush=True)


def fail(message: str) -> None:
    raise AssertionError(message)


def expect(condition: Any, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# --------------------------------------------------------------------------
# Project facts


def crate_version() -> str:
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


def crate_rust_version() -> str:
    with open(ROOT / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["rust-version"]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) or {}


def value_sets() -> dict[str, dict[str, Any]]:
    return {p.stem: load_yaml(p) for p in sorted((HERE / "values").glob("*.yaml"))}


def values_keys() -> list[tuple[str, int, str]]:
    """(dotted path, line number, comment) of every key of values.yaml, in
    the file's order. The comment is the block of `#` lines right above the
    key (blank lines between them allowed), or the key line's own trailing
    comment. Entries of a free map (FREE_MAPS) and of list items are the
    operator's, not keys of the chart."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = []
    # (indent, key, whether its descendants are keys of the chart)
    stack: list[tuple[int, str, bool]] = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(- )?([A-Za-z_][\w.-]*):(\s|$)", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = m.group(3)
        inside = all(documented for _, _, documented in stack)
        stack.append((indent, key, inside and not m.group(2) and key not in FREE_MAPS))
        if m.group(2) or not inside:
            continue
        comment: list[str] = []
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        while j >= 0 and lines[j].strip().startswith("#"):
            comment.insert(0, lines[j].strip().lstrip("#").strip())
            j -= 1
        trailing = line.split(":", 1)[1]
        if not comment and "#" in trailing:
            comment = [trailing.split("#", 1)[1].strip()]
        keys.append((".".join(k for _, k, _ in stack), i + 1, " ".join(c for c in comment if c)))
    return keys


# --------------------------------------------------------------------------
# Rendering


class Render:
    """One rendering of the chart: its templates' text and parsed documents."""

    def __init__(self, values: dict[str, Any], name: str, namespace: str) -> None:
        self.values = values
        self.name = name
        self.namespace = namespace
        with helm.Chart.load(CHART) as chart:
            self.merged = chart.merge_values(values)
            self.files = chart.render(values, name=name, namespace=namespace, is_install=True)
        self.docs: list[tuple[str, dict[str, Any]]] = []
        for path, text in sorted(self.files.items()):
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    self.docs.append((path, doc))

    @property
    def notes(self) -> str:
        return next((t for p, t in self.files.items() if p.endswith("NOTES.txt")), "")

    def template(self, name: str) -> str:
        return self.files[f"redis-dsg/templates/{name}"]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for _, d in self.docs if d.get("kind") == kind]

    def one(self, kind: str, hook: bool = False) -> dict[str, Any]:
        found = [d for d in self.all(kind) if is_hook(d) == hook]
        expect(len(found) == 1, f"expected one {kind}, rendered {len(found)}")
        return found[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = [d for d in self.all(kind) if not is_hook(d)]
        expect(len(found) <= 1, f"expected at most one {kind}, rendered {len(found)}")
        return found[0] if found else None

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((d for d in self.all(kind) if d["metadata"]["name"] == name), None)


def redis_endpoint(url: str) -> tuple[str, int, str, bool]:
    """(host, port, database, tls) of a Redis address as the program reads it:
    host:port or redis[s]://[user@]host[:port][/db]."""
    m = re.fullmatch(r"(?:(rediss?)://)?(?:[^@/]*@)?([^:/]+)(?::(\d+))?(?:/(\d*))?", url)
    expect(m, f"unexpected Redis URL {url}")
    scheme, host, port, db = m.groups()
    return host, int(port or 6379), db or "0", scheme == "rediss"


def is_hook(doc: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (doc.get("metadata", {}).get("annotations") or {})


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------
# Generated files: deploy/base, deploy/prometheus/alerts.yaml, the chart's
# dashboard copy.


def generated_files() -> dict[Path, str]:
    """Every generated file and the text it must hold."""
    files: dict[Path, str] = {}
    render = Render({}, RELEASE, "default")
    resources = []
    for path, text in sorted(render.files.items()):
        if path.endswith("NOTES.txt") or "/tests/" in path or not text.strip():
            continue
        docs = [d for d in yaml.safe_load_all(text) if d]
        if not docs or any(is_hook(d) for d in docs):
            continue
        name = Path(path).name
        # Plain manifests are not managed by Helm: drop Helm's own labels.
        lines = [
            line.replace("app.kubernetes.io/managed-by: Helm", "app.kubernetes.io/managed-by: kustomize")
            for line in text.strip("\n").splitlines()
            if not re.match(r"^\s*helm\.sh/chart: ", line)
        ]
        files[BASE / name] = GENERATED_HEADER + "\n".join(lines) + "\n"
        resources.append(name)
    files[BASE / "kustomization.yaml"] = (
        GENERATED_HEADER
        + "# Apply with `kubectl apply -k deploy/base`, or use it as the base of an overlay\n"
        + "# (namespace, ConfigMap patch for config.toml, image tag).\n"
        + yaml.safe_dump(
            {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources},
            sort_keys=False,
        )
    )
    rules = Render({"prometheusRule": {"enabled": True}}, RELEASE, README_NAMESPACE).one("PrometheusRule")
    files[ALERTS] = (
        GENERATED_HEADER
        + "# The rules of the chart's PrometheusRule, as a Prometheus rule file. Series\n"
        + "# need the labels a ServiceMonitor gives them: job = the Service's name,\n"
        + "# namespace, pod. No rule names a namespace: each alerts per namespace, so the\n"
        + "# file holds wherever deploy/base is applied (kustomize `namespace:`).\n"
        + "# Readiness and RedisDsgNoGenerator also read kube-state-metrics when it is\n"
        + "# there.\n"
        + dump_rules(rules["spec"])
    )
    files[CHART_DASHBOARD] = DASHBOARD.read_text()
    files[CHART_README] = chart_readme()
    return files


# The one command of the chart's README: the try-out install of the
# project's README (its Kubernetes section), a Redis of the chart's own.
CHART_README_INSTALL = "helm install redis-dsg ./helm/redis-dsg -n redis-dsg --create-namespace --set redis.enabled=true"


def helm_docs_type(value: Any, path: str, schema: dict[str, Any]) -> str:
    """helm-docs' name of a value's type; a null default takes the type its
    schema allows besides null."""
    if value is None:
        node: dict[str, Any] | None = schema
        for key in path.split("."):
            node = (node or {}).get("properties", {}).get(key)
        allowed = (node or {}).get("type", "string")
        allowed = [t for t in ([allowed] if isinstance(allowed, str) else allowed) if t != "null"] or ["string"]
        names = {"integer": "int", "number": "float", "boolean": "bool", "array": "list"}
        return names.get(allowed[0], allowed[0])
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"), (list, "list"), (dict, "object")):
        if isinstance(value, kind):
            return name
    raise AssertionError(f"values.yaml {path}: a value of type {type(value).__name__}")


def markdown_cell(text: str) -> str:
    """Text for a Markdown table cell: no pipe ends the cell, no asterisk or
    tilde starts emphasis or strikethrough."""
    return text.replace("|", "\\|").replace("*", "\\*").replace("~", "\\~")


def chart_readme() -> str:
    """helm/redis-dsg/README.md in helm-docs' layout: title, badges,
    Chart.yaml's description, links and requirements, then one row per key
    of values.yaml (Key | Type | Default | Description) in the file's order,
    the description being the key's comment. A key whose keys follow it has
    no default of its own (its keys' defaults apply)."""
    meta = load_yaml(CHART / "Chart.yaml")
    values = load_yaml(CHART / "values.yaml")
    schema = json.loads((CHART / "values.schema.json").read_text())
    keys = values_keys()
    parents = {path.rsplit(".", 1)[0] for path, _, _ in keys if "." in path}

    def badge(label: str, value: str) -> str:
        return f"![{label}: {value}](https://img.shields.io/badge/{label}-{value.replace('-', '--')}-informational?style=flat-square)"

    rows = []
    for path, _, comment in keys:
        value: Any = values
        for key in path.split("."):
            value = value[key]
        default = "" if path in parents else "`" + json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "`"
        rows.append(f"| {path} | {helm_docs_type(value, path, schema)} | {markdown_cell(default)} | {markdown_cell(comment)} |")
    readme_url = f"{meta['home']}/blob/main/README.md"
    return "\n".join([
        "<!-- Generated by tests/packaging/run --update from Chart.yaml and the comments of",
        "values.yaml (helm-docs' layout). Do not edit: change values.yaml. -->",
        f"# {meta['name']}",
        "",
        " ".join([badge("Version", str(meta["version"])), badge("Type", meta.get("type", "application")),
                  badge("AppVersion", str(meta["appVersion"]))]),
        "",
        " ".join(meta["description"].split()),
        "",
        f"**Homepage:** <{meta['home']}>",
        "",
        "## Source Code",
        "",
        *[f"* <{url}>" for url in meta.get("sources", [])],
        "",
        "## Requirements",
        "",
        f"Kubernetes: `{meta['kubeVersion']}`",
        "",
        "## Installing",
        "",
        "To try it out with a small Redis of the chart's own (one pod, no persistence; not for production):",
        "",
        "```sh",
        CHART_README_INSTALL,
        "```",
        "",
        f"The project's README shows installing against your own Redis, scaling, upgrading and draining the error list "
        f"([Run on Kubernetes]({readme_url}#run-on-kubernetes)), and a runbook per alert "
        f"([Alerts and runbooks]({readme_url}#alerts-and-runbooks)).",
        "",
        "## Values",
        "",
        "`values.schema.json` checks every value: unknown keys and wrong types are refused before anything renders. "
        "Keys are listed in the order of `values.yaml`; a key whose keys follow it has no default of its own.",
        "",
        "| Key | Type | Default | Description |",
        "|-----|------|---------|-------------|",
        *rows,
        "",
    ])


class _RulesDumper(yaml.SafeDumper):
    """Multi-line strings (the alerts' expressions) as literal blocks."""


_RulesDumper.add_representer(
    str,
    lambda dumper, s: dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def dump_rules(spec: dict[str, Any]) -> str:
    return yaml.dump(spec, Dumper=_RulesDumper, sort_keys=False, width=1000, allow_unicode=True)


def update_generated() -> None:
    for path, text in generated_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"updated {path.relative_to(ROOT)}")
    for stale in BASE.glob("*.yaml"):
        if stale not in generated_files():
            stale.unlink()
            print(f"removed {stale.relative_to(ROOT)}")


# --------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(what: str, condition: Callable[[], bool], timeout: float) -> None:
    """Poll condition until it holds; an AssertionError from it fails at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.1)
    fail(f"timed out after {timeout:.0f} s waiting for {what}")


def die_with_parent() -> None:
    """In a child before exec: be killed when this script dies, even by
    SIGKILL, so no redis-server or redis-dsg outlives a run (Linux prctl
    PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Processes:
    """Started processes, all stopped on exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent)
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop_all(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for _, proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


class RedisTls:
    """TLS of a private redis-server: its certificate and key, the CA it
    trusts for client certificates, and whether it demands one."""

    def __init__(self, cert: Path, key: Path, ca: Path, client: tuple[Path, Path] | None) -> None:
        self.cert, self.key, self.ca, self.client = cert, key, ca, client


def start_redis(procs: Processes, name: str, password: str | None, username: str | None, port: int = 0,
                tls: RedisTls | None = None) -> int:
    port = port or free_port()
    argv = ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if tls:
        argv += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
                 "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "yes" if tls.client else "no"]
    else:
        argv += ["--port", str(port)]
    if password and username:
        argv += ["--user", "default", "off", "--user", username, "on", f">{password}", "~*", "&*", "+@all"]
    elif password:
        argv += ["--requirepass", password]
    procs.start(name, argv, {"PATH": os.environ["PATH"]})

    def pong() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
            s = raw
            if tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.load_verify_locations(tls.ca)
                if tls.client:
                    ctx.load_cert_chain(tls.client[0], tls.client[1])
                s = ctx.wrap_socket(raw)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH", b"-ERR"))

    wait_for(f"redis-server on port {port}" + (" (TLS)" if tls else ""), pong, 10)
    return port


class TlsMaterial:
    """A throw-away CA, a client certificate signed by it, and server
    certificates on demand (openssl): what the operator would keep in the TLS
    Secret, and the private redis-server's own certificate. Without openssl,
    placeholders the program can open (TLS is then not exercised live)."""

    PLACEHOLDER = "-----BEGIN CERTIFICATE-----\nTk8gT1BFTlNTTA==\n-----END CERTIFICATE-----\n"

    def __init__(self, work: Path) -> None:
        self.dir = work / "tls"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.openssl = shutil.which("openssl")
        self.ca = self.dir / "ca.crt"
        self.client = (self.dir / "client.crt", self.dir / "client.key")
        self.servers: dict[str, tuple[Path, Path]] = {}
        if not self.openssl:
            for path in (self.ca, *self.client):
                path.write_text(self.PLACEHOLDER)
            return
        self.openssl_run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", str(self.dir / "ca.key"), "-out", str(self.ca), "-days", "2",
                         "-subj", "/CN=redis-dsg packaging test CA")
        self.client = self.issue("client", "redis-dsg", "extendedKeyUsage=clientAuth")

    @property
    def available(self) -> bool:
        return self.openssl is not None

    def openssl_run(self, *args: str) -> None:
        run = subprocess.run([self.openssl, *args], capture_output=True, text=True, timeout=60)  # type: ignore[list-item]
        expect(run.returncode == 0, f"openssl {' '.join(args[:2])} failed:\n{run.stderr}")

    def issue(self, name: str, common_name: str, extensions: str) -> tuple[Path, Path]:
        key, csr, crt, ext = (self.dir / f"{name}.{suffix}" for suffix in ("key", "csr", "crt", "ext"))
        self.openssl_run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={common_name}")
        ext.write_text("basicConstraints=CA:FALSE\n" + extensions + "\n")
        self.openssl_run("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.dir / "ca.key"),
                         "-set_serial", str(int.from_bytes(os.urandom(8), "big") >> 1), "-days", "2",
                         "-out", str(crt), "-extfile", str(ext))
        return crt, key

    def server(self, server_name: str) -> tuple[Path, Path]:
        """A server certificate valid for exactly this name (DNS name or IP)."""
        if server_name not in self.servers:
            kind = "IP" if re.fullmatch(r"[0-9.]+|[0-9a-fA-F:]+", server_name) else "DNS"
            self.servers[server_name] = self.issue(f"server-{len(self.servers)}", server_name,
                                                   f"subjectAltName={kind}:{server_name}\nextendedKeyUsage=serverAuth")
        return self.servers[server_name]


# --------------------------------------------------------------------------
# PromQL


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables, replaced so the text is plain PromQL."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?(\w+)\}?", r"\1", expr)


def promql_metrics(expr: str) -> set[str]:
    """Parse (raises ValueError when the text is not PromQL) and list the
    metric names it selects."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for m in node.matchers.matchers:
                if m.name == "__name__":
                    names.add(m.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""

    def walk(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from walk(p.get("panels", []))

    return walk(dashboard.get("panels", []))


def numeric_variables(dashboard: dict[str, Any]) -> dict[str, str]:
    """Textbox variables holding a number (e.g. $memory_ratio), name ->
    current value: used as numbers in expressions, not as label values."""
    found = {}
    for var in dashboard.get("templating", {}).get("list", []):
        value = str((var.get("current") or {}).get("value", ""))
        if var.get("type") == "textbox" and re.fullmatch(r"[0-9]+(\.[0-9]+)?", value):
            found[var["name"]] = value
    return found


def substitute_numbers(expr: str, numbers: dict[str, str]) -> str:
    for name, value in numbers.items():
        expr = re.sub(rf"\$\{{{name}\}}|\${name}\b", value, expr)
    return expr


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every label_values
    variable; numeric textbox variables are replaced by their value."""
    queries = []
    numbers = numeric_variables(dashboard)
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']!r} target {target['refId']}", substitute_numbers(target["expr"], numbers)))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            expect(m, f"variable {var['name']}: unexpected query {query!r}")
            queries.append((f"variable {var['name']}", m.group(1)))
    return queries


def series_samples(values: str) -> int:
    """Number of samples of a promtool input series ('1x3 _ 0+2x5 stale')."""
    count = 0
    for token in values.split():
        m = re.fullmatch(r"\S*?x(\d+)", token)
        count += int(m.group(1)) + 1 if m else 1
    return count


def alert_rules(groups_doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in groups_doc["groups"] for rule in group["rules"]]


# --------------------------------------------------------------------------
# The checks


class Checks:
    def __init__(self, binary: Path, report: Report, work: Path) -> None:
        self.binary = binary
        self.report = report
        self.work = work
        self.version = crate_version()
        self.scraped_metrics: set[str] = set()
        self.renders: dict[str, Render] = {}
        self.tls = TlsMaterial(work)

    # ---- tools ----------------------------------------------------------

    def tool_versions(self) -> str:
        kubectl = subprocess.run([VENV_BIN / "kubectl", "version", "--client"], capture_output=True, text=True).stdout
        hadolint = subprocess.run([VENV_BIN / "hadolint", "--version"], capture_output=True, text=True).stdout
        promtool = shutil.which("promtool")
        prom = (
            subprocess.run([promtool, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
            if promtool
            else "promtool: not installed"
        )
        redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
        lines = [
            f"helm-python-sdk {helm.__version__} (Helm SDK {helm.helm_sdk_version()})",
            f"kubernetes-validate {kv.__version__}"
            f" (schemas {kv.all_versions()[0]}..{kv.latest_version()})",
            " / ".join(line.strip() for line in kubectl.splitlines() if line.strip()),
            hadolint.strip(),
            f"promql-parser {pkg_version('promql-parser')}",
            prom,
            redis.split(" sha=")[0],
        ]
        print("tools:\n  " + "\n  ".join(lines), flush=True)
        return ""

    # ---- Dockerfile -----------------------------------------------------

    def dockerfile_hadolint(self) -> str:
        run = subprocess.run([VENV_BIN / "hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True)
        expect(run.returncode == 0, f"hadolint found problems:\n{run.stdout}{run.stderr}")
        return "no findings"

    def dockerfile_structure(self) -> str:
        text = (ROOT / "Dockerfile").read_text()
        joined = re.sub(r"\\\n", " ", text)
        instructions = [
            (m.group(1).upper(), m.group(2).strip())
            for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.M)
            if not m.group(0).lstrip().startswith("#")
        ]
        args = {}
        for op, rest in instructions:
            if op == "ARG" and "=" in rest:
                k, v = rest.split("=", 1)
                args[k] = v
        froms = [rest for op, rest in instructions if op == "FROM"]
        expect(len(froms) >= 2, "the Dockerfile must be multi-stage")
        builder = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), froms[0].split()[0])
        m = re.fullmatch(r"rust:(\d+)\.(\d+)\.(\d+)-(slim-)?bookworm", builder)
        expect(m, f"builder {builder!r} must be a pinned rust:X.Y.Z[-slim]-bookworm image (bookworm = Debian 12, the runtime's glibc)")
        need = tuple(int(x) for x in (crate_rust_version().split(".") + ["0"])[:3])
        expect(tuple(int(x) for x in m.groups()[:3]) >= need, f"builder Rust {builder} is older than rust-version {crate_rust_version()}")
        expect(froms[-1] == "gcr.io/distroless/cc-debian12:nonroot", f"runtime image is {froms[-1]!r}")
        final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
        ops = {op: rest for op, rest in final}
        expect(json.loads(ops.get("ENTRYPOINT", "null")) == ["/usr/local/bin/redis-dsg"], f"ENTRYPOINT must be exec form [\"/usr/local/bin/redis-dsg\"], is {ops.get('ENTRYPOINT')}")
        expect(json.loads(ops.get("CMD", "null")) == ["run"], f"CMD must be [\"run\"], is {ops.get('CMD')}")
        user = ops.get("USER", "")
        expect(user and user.split(":")[0] not in ("0", "root"), f"USER must be non-root, is {user!r}")
        expect(any(op == "COPY" and "--from=builder" in rest and rest.endswith("/usr/local/bin/redis-dsg") for op, rest in final),
               "the runtime stage must COPY --from=builder the binary to /usr/local/bin/redis-dsg")
        labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"', " ".join(r for op, r in final if op == "LABEL")))
        for key in ("title", "description", "version", "source", "licenses"):
            expect(f"org.opencontainers.image.{key}" in labels, f"OCI label org.opencontainers.image.{key} is missing")
        version = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), labels["org.opencontainers.image.version"])
        expect(version == self.version, f"image version label {version} != crate version {self.version}")
        expose = ops.get("EXPOSE", "")
        default_port = load_yaml(CHART / "values.yaml")["config"]["http"]["port"]
        expect(expose == str(default_port), f"EXPOSE {expose} != the chart's config.http.port {default_port}")
        # Dependency caching: the manifests are copied and built before the sources.
        copy_manifest = next(i for i, (op, r) in enumerate(instructions) if op == "COPY" and "Cargo.lock" in r)
        copy_src = next(i for i, (op, r) in enumerate(instructions) if op == "COPY" and r.startswith("crates/redis-dsg/src"))
        expect(any(op == "RUN" and "cargo build" in r for op, r in instructions[copy_manifest:copy_src]),
               "dependencies must be built in a layer before the sources are copied")
        # .dockerignore lets through what the build copies.
        ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
        for needed in ("Cargo.toml", "Cargo.lock", "crates/redis-dsg/Cargo.toml", "crates/redis-dsg/src"):
            expect(f"!{needed}" in ignore, f".dockerignore must let {needed} through")
        # Only the product is built, in the stripped `dist` profile.
        builds = [r for op, r in instructions if op == "RUN" and "cargo build" in r]
        for r in builds:
            expect("-p redis-dsg" in r and "--profile dist" in r, f"the image must build only the product, stripped (-p redis-dsg --profile dist): {r}")
        expect(not any(op == "COPY" and ("dsg-dev/src" in r or "dsg-testkit/src" in r or r.startswith("tests")) for op, r in instructions),
               "the image must not copy the development tools' or the tests' sources")
        return f"builder {builder}, runtime {froms[-1]}, version {version}"

    def dockerfile_build(self) -> str:
        """Runs the builder stage's COPY and RUN steps outside Docker (no
        engine here), on exactly what .dockerignore lets through, then checks
        the binary the image would ship: the product's commands only,
        stripped. Its target directory is kept under target/ so a second run
        only relinks."""
        text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
        stages = re.split(r"^FROM\s", text, flags=re.M)
        builder = stages[1]
        context = self.work / "docker-context"
        allowed = [line.strip()[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip().startswith("!")]
        for item in allowed:
            src = ROOT / item
            dst = context / item
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
        workdir = Path(re.search(r"^WORKDIR\s+(\S+)", builder, re.M).group(1))
        build = self.work / "docker-build" / workdir.relative_to("/")
        build.mkdir(parents=True)
        target = ROOT / "target" / "docker-build"
        target.mkdir(parents=True, exist_ok=True)
        (build / "target").symlink_to(target)
        out = self.work / "docker-out"
        out.mkdir()
        for m in re.finditer(r"^(COPY|RUN)\s+(.*)$", builder, re.M):
            op, rest = m.group(1), m.group(2).strip()
            if op == "COPY":
                *sources, dest = rest.split()
                for source in sources:
                    src = context / source
                    dst = build / dest / (src.name if dest.endswith("/") else "")
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    if src.is_dir():
                        shutil.copytree(src, dst, dirs_exist_ok=True)
                    else:
                        shutil.copy2(src, dst)
            else:
                command = rest.replace("/usr/local/bin/redis-dsg", str(out / "redis-dsg"))
                run = subprocess.run(["bash", "-euc", command], cwd=build, capture_output=True, text=True)
                expect(run.returncode == 0, f"RUN {rest}\nfailed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
        binary = out / "redis-dsg"
        expect(binary.is_file(), "the builder stage did not produce /usr/local/bin/redis-dsg")
        help_text = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
        commands = re.findall(r"^  (\S+)", help_text.split("Commands:")[1].split("\n\n")[0], re.M)
        expect(commands == ["run", "errors", "config", "acl-rule", "status", "return-inflight", "help"], f"the image's binary has commands {commands}")
        sections = subprocess.run(["readelf", "-S", "-W", binary], capture_output=True, text=True)
        expect(sections.returncode == 0, f"readelf: {sections.stderr}")
        expect(".debug_" not in sections.stdout and ".symtab" not in sections.stdout, "the image's binary still carries debug info or symbols")
        size = binary.stat().st_size
        return f"built the product alone; {size / 1e6:.1f} MB, stripped; commands {', '.join(commands)}"

    # ---- chart metadata ---------------------------------------------------

    def chart_metadata(self) -> str:
        with helm.Chart.load(CHART) as chart:
            meta = chart.metadata
        expect(meta["appVersion"] == self.version, f"Chart.yaml appVersion {meta['appVersion']} != Cargo.toml version {self.version}")
        expect(re.fullmatch(r"\d+\.\d+\.\d+", meta["version"]), f"chart version {meta['version']} is not semver")
        expect(meta.get("kubeVersion"), "Chart.yaml needs kubeVersion")
        return f"chart {meta['version']}, appVersion {meta['appVersion']} = crate {self.version}"

    def values_documented(self) -> str:
        """Every key of values.yaml has a comment and is camelCase."""
        problems = []
        keys = values_keys()
        for path, line, comment in keys:
            key = path.rsplit(".", 1)[-1]
            if not comment:
                problems.append(f"line {line}: {key} has no comment")
            if not re.fullmatch(r"[a-z][a-zA-Z0-9]*", key):
                problems.append(f"line {line}: {key} is not camelCase")
        expect(not problems, "\n".join(problems))
        return f"{len(keys)} keys"

    def chart_readme(self) -> str:
        """helm/redis-dsg/README.md is what chart_readme() generates (a row
        for every key of values.yaml, counted here from the parsed YAML, not
        from the generator's line reader), Helm loads it as the chart's
        README (`helm show readme`, Artifact Hub), its command is one the
        schema accepts, and .helmignore keeps the chart's own files while it
        drops VCS and editor leftovers."""
        want = chart_readme()
        have = CHART_README.read_text() if CHART_README.exists() else ""
        if have != want:
            diff = "".join(difflib.unified_diff(have.splitlines(True), want.splitlines(True), "helm/redis-dsg/README.md (committed)", "generated", n=1))
            fail("helm/redis-dsg/README.md differs from the values table of values.yaml; run tests/packaging/run --update\n" + diff[:3000])
        # Every key of the parsed values, parents included; free maps and
        # lists are one row each.
        def walk(node: Any, prefix: str) -> Iterator[str]:
            for key, value in node.items():
                path = f"{prefix}{key}"
                yield path
                if isinstance(value, dict) and key not in FREE_MAPS:
                    yield from walk(value, path + ".")

        paths = list(walk(load_yaml(CHART / "values.yaml"), ""))
        rows = [row for row in re.findall(r"^\| ([\w.]+) \| ", have, re.M) if row != "Key"]
        expect(rows == paths,
               f"the README's rows are not the keys of values.yaml: missing {sorted(set(paths) - set(rows))}, extra {sorted(set(rows) - set(paths) - {'Key'})}")
        with helm.Chart.load(CHART) as chart:
            readme = next((f["data"] for f in chart.files if f["name"] == "README.md"), None)
            expect(readme is not None, "Helm does not load README.md (.helmignore?)")
            expect(readme == have, "the README.md Helm loads differs from the file")
            for expression in re.findall(r"--set (\S+)", CHART_README_INSTALL):
                chart.validate_schema(chart.merge_values(helm.parse_set_string(expression)))
        # .helmignore: a copy of the chart with VCS and editor leftovers
        # loads without them and with every file of the chart.
        copy = self.work / "helmignore" / CHART.name
        shutil.rmtree(copy.parent, ignore_errors=True)
        shutil.copytree(CHART, copy)
        leftovers = [".git/HEAD", ".svn/entries", ".hg/store", "values.yaml.orig", "values.yaml~", "templates/deployment.yaml.swp",
                     "notes.tmp", "Chart.yaml.bak", ".DS_Store", ".idea/workspace.xml", ".vscode/settings.json", "chart.tmproj"]
        for leftover in leftovers:
            (copy / leftover).parent.mkdir(parents=True, exist_ok=True)
            (copy / leftover).write_text("x\n")
        with helm.Chart.load(copy) as chart:
            loaded = {f["name"] for f in chart.files} | {t["name"] for t in chart.templates}
            has_schema = chart.schema is not None
        kept = loaded & set(leftovers)
        expect(not kept, f".helmignore keeps {', '.join(sorted(kept))}")
        needed = {str(p.relative_to(CHART)) for p in CHART.rglob("*")
                  if p.is_file() and p.name not in (".helmignore", "Chart.yaml", "values.yaml", "values.schema.json")}
        expect(needed <= loaded, f"Helm does not load {', '.join(sorted(needed - loaded))} (.helmignore?)")
        expect(has_schema, "Helm does not load values.schema.json (.helmignore?)")
        return (f"{len(paths)} keys of values.yaml, each a row; Helm loads it as the chart's README; "
                f".helmignore drops {len(leftovers)} leftovers, keeps {len(needed)} files and the schema")

    def schema_strict(self) -> str:
        """additionalProperties: false on every object of the schema whose keys are ours."""
        schema = json.loads((CHART / "values.schema.json").read_text())
        problems = []
        objects = 0

        def walk(node: Any, path: str) -> None:
            nonlocal objects
            if isinstance(node, dict):
                if node.get("type") == "object" and "properties" in node:
                    objects += 1
                    if node.get("additionalProperties") is not False:
                        problems.append(path or "/")
                for k, v in node.items():
                    walk(v, f"{path}/{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{path}/{i}")

        walk(schema, "")
        expect(not problems, "objects that accept unknown keys: " + ", ".join(problems))
        with helm.Chart.load(CHART) as chart:
            chart.validate_schema(chart.values)
        return f"{objects} objects closed; defaults valid"

    def config_coverage(self) -> str:
        """Every setting the binary has is a chart value (or set through the
        environment by the chart); the reverse holds because the binary
        refuses unknown keys, which the live checks prove."""
        run = subprocess.run([str(self.binary), "config"], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=30)
        expect(run.returncode == 0, f"redis-dsg config exited {run.returncode}: {run.stderr}")
        binary: set[str] = set()
        section = ""
        for line in run.stdout.splitlines():
            if m := re.match(r"^\[(\w+)\]$", line):
                section = m.group(1) + "."
            elif m := re.match(r"^(?:# )?(\w+)(?: = |: not set)", line):
                binary.add(section + m.group(1))
        values = load_yaml(CHART / "values.yaml")["config"]

        def snake(key: str) -> str:
            return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)

        chart = {snake(k) for k, v in values.items() if not isinstance(v, dict)}
        chart |= {f"{sec}.{snake(k)}" for sec, keys in values.items() if isinstance(keys, dict) for k in keys}
        # Set by the chart from other values: through the environment
        # (logFormat, auth.username) or as the paths of files mounted from
        # Secrets (auth.*, tls.*; `redis-dsg config` lists those only when
        # set, the live checks prove the binary reads them).
        elsewhere = {"log_format", "redis.username"} | {f"redis.{s}" for s in SECRET_FILE_SETTINGS}
        # Deliberately not set: the password is a file (redis.password_file),
        # never an environment variable or a ConfigMap value; bind stays on
        # every address.
        unused = {"redis.password", "http.bind"}
        missing = binary - chart - elsewhere - unused
        expect(not missing, f"settings of the binary with no chart value: {', '.join(sorted(missing))}")
        expect("consumer.output_queue" in chart, "consumer.outputQueue")
        for setting in ("redis.tls_server_name", "redis.tls_insecure_skip_verify"):
            expect(setting in chart, f"{setting} has no chart value")
        return (f"{len(binary)} settings of `redis-dsg config`: {len(chart)} chart values + {', '.join(sorted(binary & elsewhere))} set by the chart"
                f" + {', '.join(sorted(binary & unused))} left unset; file settings from Secrets: {', '.join(sorted(SECRET_FILE_SETTINGS))}")

    def max_in_flight_bytes(self) -> str:
        """config.consumer.maxInFlightBytes: an explicit value wins; unset, it
        is 40 % of resources.limits.memory (Kubernetes quantities), clamped
        to the program's bounds; without a memory limit it is left out and
        the binary's own default applies. The binary reads what the chart
        rendered."""
        low, high = MAX_IN_FLIGHT_BYTES_BOUNDS
        cases: list[tuple[str, dict[str, Any], int | None]] = [
            ("defaults (256Mi)", {}, 268435456 * 2 // 5),
            ("explicit value with 1Gi", {"config": {"consumer": {"maxInFlightBytes": 50000000}}, "resources": {"limits": {"memory": "1Gi"}}}, 50000000),
            ("explicit value without a limit", {"config": {"consumer": {"maxInFlightBytes": 65536}}, "resources": {"limits": None}}, 65536),
            ("1Gi", {"resources": {"limits": {"memory": "1Gi"}}}, 1073741824 * 2 // 5),
            ("512M", {"resources": {"limits": {"memory": "512M"}}}, 512000000 * 2 // 5),
            ("1.5Gi", {"resources": {"limits": {"memory": "1.5Gi"}}}, 1610612736 * 2 // 5),
            ("3000000000 (a number)", {"resources": {"limits": {"memory": 3000000000}}}, 3000000000 * 2 // 5),
            ("2k (clamped up)", {"resources": {"limits": {"memory": "2k"}}}, low),
            ("1Ti (clamped down)", {"resources": {"limits": {"memory": "1Ti"}}}, high),
            ("no memory limit", {"resources": {"limits": None}}, None),
            ("no resources", {"resources": None}, None),
        ]
        for what, values, want in cases:
            render = Render(values, RELEASE, "default")
            got = self.toml(render)["consumer"].get("max_in_flight_bytes")
            expect(got == want, f"{what}: consumer.max_in_flight_bytes renders as {got}, expected {want if want is not None else 'left out'}")
        # The binary takes the derived value from the file, and its own
        # default (64 MiB) when the chart leaves it out.
        agreed = []
        for what, values in (("derived", {}), ("left out", {"resources": {"limits": None}})):
            render = Render(values, RELEASE, "default")
            dep = self.app_deployment(render)
            pod_spec = dep["spec"]["template"]["spec"]
            env = self.pod_files(render, pod_spec, pod_spec["containers"][0], self.work / "max-in-flight-bytes" / what.replace(" ", "-"),
                                 self.secrets(render), redis_url=None)
            run = subprocess.run([str(self.binary), "config"], env=env, capture_output=True, text=True, timeout=30)
            expect(run.returncode == 0, f"{what}: `redis-dsg config` exited {run.returncode}: {run.stderr}")
            line = next((l for l in run.stdout.splitlines() if l.startswith("max_in_flight_bytes = ")), "")
            effective = tomllib.loads(run.stdout)["consumer"]["max_in_flight_bytes"]
            rendered = self.toml(render)["consumer"].get("max_in_flight_bytes")
            if rendered is None:
                expect(effective == 67108864 and "default" in line, f"{what}: the binary's max_in_flight_bytes is {line!r}, expected its default 67108864")
            else:
                expect(effective == rendered and "TOML file" in line, f"{what}: the binary's max_in_flight_bytes is {line!r}, the ConfigMap says {rendered}")
            agreed.append(f"{what}: {effective}")
        return f"{len(cases)} renders (256Mi -> {268435456 * 2 // 5}, explicit wins, 1Gi, 512M, clamps, no limit: left out); binary reads " + ", ".join(agreed)

    def bad_values(self) -> str:
        files = sorted((HERE / "bad-values").glob("*.yaml"))
        schema_refusals = template_refusals = binary_refusals = 0
        with helm.Chart.load(CHART) as chart:
            for path in files:
                m = re.search(r"^# expect: (.+)$", path.read_text(), re.M)
                expect(m, f"{path.name}: no '# expect: <message>' line")
                wanted = m.group(1).strip()
                values = load_yaml(path)
                try:
                    chart.validate_schema(chart.merge_values(values))
                except helm.HelmValuesError as e:
                    expect(wanted in str(e), f"{path.name}: refused, but with {str(e)!r}, not {wanted!r}")
                    schema_refusals += 1
                else:
                    try:
                        rendered = chart.render(values, name=RELEASE, namespace="default")
                    except helm.HelmError as e:
                        expect(wanted in str(e), f"{path.name}: refused, but with {str(e)!r}, not {wanted!r}")
                        template_refusals += 1
                    else:
                        # Rules only the program knows: the pods would stop at
                        # start-up with exit 78 and this message. The binary
                        # gets the pod's environment and files (ConfigMap,
                        # Secrets), so only the announced rule can trip it.
                        del rendered
                        render = Render(values, RELEASE, "default")
                        dep = self.app_deployment(render)
                        pod_dir = self.work / "bad-values" / path.stem
                        env = self.pod_files(render, dep["spec"]["template"]["spec"], dep["spec"]["template"]["spec"]["containers"][0],
                                             pod_dir, self.secrets(render), redis_url=None)
                        run = subprocess.run([str(self.binary), "config"], env=env, capture_output=True, text=True, timeout=30)
                        expect(run.returncode == 78, f"{path.name}: rendered, and the binary accepted it (exit {run.returncode}); expected {wanted!r}")
                        stderr = re.sub(r"from TOML file \S*config\.toml", "from TOML file config.toml", run.stderr)
                        expect(wanted in stderr, f"{path.name}: the binary refused it with {stderr!r}, not {wanted!r}")
                        binary_refusals += 1
                        continue
                # `helm install` and `helm template` refuse them too.
                with contextlib.suppress(helm.HelmError):
                    chart.render(values, name=RELEASE, namespace="default")
                    fail(f"{path.name}: rendering accepted it")
        expect(schema_refusals >= 5, f"only {schema_refusals} files are refused by the schema")
        return (f"{len(files)} files refused, each with its message: {schema_refusals} by the schema, "
                f"{template_refusals} by the templates, {binary_refusals} by the binary (exit 78)")

    # ---- one value set ----------------------------------------------------

    def render(self, set_name: str, values: dict[str, Any]) -> Render:
        namespace = "apps" if set_name != "defaults" else "default"
        name = "orders" if set_name == "external-redis-tls" else RELEASE
        render = Render(values, name, namespace)
        self.renders[set_name] = render
        return render

    def lint(self, set_name: str, values: dict[str, Any]) -> str:
        notes = []
        for kube in KUBE_VERSIONS:
            report = helm.lint(CHART, values, strict=True, namespace="apps", kube_version=f"v{kube}.0")
            bad = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
            expect(not bad, f"helm lint --strict (kube {kube}): " + "; ".join(m["error"].strip() for m in bad))
            notes = [m["error"] for m in report["messages"] if m["severity"] == 1]
        return "strict, kube " + " and ".join(KUBE_VERSIONS) + (f"; info: {', '.join(notes)}" if notes else "")

    def kubernetes_validate(self, render: Render) -> str:
        checked = 0
        custom = []
        for path, doc in render.docs:
            key = (doc["apiVersion"], doc["kind"])
            for kube in KUBE_VERSIONS:
                try:
                    kv.validate(doc, kube, strict=True)
                    checked += 1
                except kv.SchemaNotFoundError:
                    expect(key in CUSTOM_KINDS, f"{path}: no Kubernetes {kube} schema for {key} and no own check")
                    custom.append(doc["kind"])
                except kv.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    fail(f"{path}: {doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {kube}: {where}: {e.message}")
        kinds = sorted({d["kind"] for _, d in render.docs if (d["apiVersion"], d["kind"]) not in CUSTOM_KINDS})
        return f"{checked} document-versions valid ({', '.join(kinds)})" + (
            f"; custom resources checked below: {', '.join(sorted(set(custom)))}" if custom else ""
        )

    def deployment_static(self, render: Render) -> str:
        v = render.merged
        dep = self.app_deployment(render)
        pod = dep["spec"]["template"]
        spec = pod["spec"]
        expect(len(spec["containers"]) == 1, "one container expected")
        c = spec["containers"][0]
        expect(c["image"] == f"{v['image']['repository']}:{v['image']['tag'] or self.version}", f"image {c['image']}")
        # Security.
        expect(spec.get("automountServiceAccountToken") is False, "automountServiceAccountToken must be false")
        expect(spec.get("enableServiceLinks") is False, "enableServiceLinks must be false")
        psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
        expect(psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is True, "runAsNonRoot must be true (pod and container)")
        expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccompProfile must be RuntimeDefault")
        expect(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
        expect(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
        expect(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities.drop must be [ALL]")
        # Probes: liveness never depends on Redis, readiness does.
        expect(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness must probe /healthz")
        expect(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness must probe /readyz")
        expect("startupProbe" in c, "a startup probe is required")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            port = c[probe]["httpGet"]["port"]
            expect(port == "http" or port == c["ports"][0]["containerPort"], f"{probe} port {port} is not the HTTP port")
        expect([p["name"] for p in c["ports"]] == ["http"], "one container port named http")
        res = c.get("resources", {})
        expect(res.get("requests", {}).get("memory") and res.get("limits", {}).get("memory"), "memory request and limit required")
        # Environment.
        env = {e["name"]: e for e in c["env"]}
        expect(env.get("DSG_LOG_FORMAT", {}).get("value") == "json", "DSG_LOG_FORMAT=json required")
        config_path = env["DSG_CONFIG"]["value"]
        mount = next((m for m in c["volumeMounts"] if config_path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        expect(mount, f"DSG_CONFIG={config_path} is not under a volume mount")
        volume = next(vol for vol in spec["volumes"] if vol["name"] == mount["name"])
        cm = render.named("ConfigMap", volume["configMap"]["name"])
        expect(cm, f"ConfigMap {volume['configMap']['name']} is not rendered")
        key = config_path[len(mount["mountPath"].rstrip("/")) + 1 :]
        expect(key in cm["data"], f"ConfigMap has no key {key}")
        # Password: a file mounted from a Secret, existing or created, never
        # an environment variable (a rotated Secret would not reach running
        # pods) nor a ConfigMap value.
        toml = tomllib.loads(cm["data"][key])
        files = self.secret_files(render)
        expect("password" not in toml["redis"], "the password must not be in the ConfigMap")
        expect("DSG_REDIS__PASSWORD" not in env and not any(e["name"].startswith("DSG_REDIS__PASSWORD") for e in c["env"]),
               "the password must not be an environment variable: mount its Secret and set redis.password_file")
        if v["auth"]["existingSecret"] or v["auth"]["password"]:
            expect("password_file" in files, "a password is configured, yet redis.password_file is not set")
            secret_name, secret_key = files["password_file"]
            if v["auth"]["existingSecret"]:
                expect(files["password_file"] == (v["auth"]["existingSecret"], v["auth"]["existingSecretPasswordKey"]),
                       f"the password file is mounted from {files['password_file']}")
                expect(not render.all("Secret"), "no Secret is created with auth.existingSecret")
            else:
                secret = render.named("Secret", secret_name)
                expect(secret and secret_key in secret["data"], f"Secret {secret_name} with key {secret_key} is not rendered")
        else:
            expect("password_file" not in files, "no password configured, yet redis.password_file is set")
        for e in c["env"]:
            expect("value" in e or "secretKeyRef" in e.get("valueFrom", {}), f"env {e['name']}: only values and secrets are expected")
        # TLS files: from tls.existingSecret under the keys the values name,
        # only with a rediss:// URL, as the program demands.
        tls = v["tls"]
        want_tls = {setting: (tls["existingSecret"], k) for setting, k in
                    (("tls_ca_file", tls["caKey"]), ("tls_cert_file", tls["certKey"]), ("tls_key_file", tls["keyKey"]))
                    if tls["existingSecret"] and k}
        got_tls = {s: ref for s, ref in files.items() if s != "password_file"}
        expect(got_tls == want_tls, f"TLS files mounted from {got_tls}, the values ask for {want_tls}")
        expect(toml["redis"].get("tls_server_name", "") == v["config"]["redis"]["tlsServerName"], "tls_server_name differs from config.redis.tlsServerName")
        expect(toml["redis"].get("tls_insecure_skip_verify") is v["config"]["redis"]["tlsInsecureSkipVerify"],
               "tls_insecure_skip_verify differs from config.redis.tlsInsecureSkipVerify")
        if any(toml["redis"].get(s) for s in TLS_SETTINGS):
            expect(re.match(r"rediss(-sentinel|-cluster)?://", toml["redis"]["url"]), f"TLS settings with the non-TLS URL {toml['redis']['url']}")
        # Roll on configuration change, not on a password change: the file
        # is read again at every (re)connection.
        checksum = pod["metadata"]["annotations"].get("checksum/config")
        expect(checksum == hashlib.sha256(render.template("configmap.yaml").encode()).hexdigest(),
               "checksum/config is not the sha256 of the rendered ConfigMap")
        rolls = [a for a in pod["metadata"]["annotations"] if a.startswith("checksum/") and a != "checksum/config"]
        expect(not rolls, f"{', '.join(rolls)}: a new password must not roll the pods (they read the mounted file again)")
        # Replicas belong to the autoscaler when there is one.
        autoscaled = bool(render.all("HorizontalPodAutoscaler") or render.all("ScaledObject"))
        expect(("replicas" in dep["spec"]) != autoscaled, "replicas must be set exactly when no autoscaler owns them")
        if not autoscaled:
            expect(dep["spec"]["replicas"] >= 2, "at least 2 replicas: one generator, one consumer")
        # Grace period above the shutdown timeout (the binary's own view is checked live).
        tgps = spec["terminationGracePeriodSeconds"]
        expect(tgps * 1000 > toml["shutdown"]["timeout_ms"], f"terminationGracePeriodSeconds {tgps} s <= shutdown.timeout_ms {toml['shutdown']['timeout_ms']}")
        if v["topologySpreadConstraints"]:
            for tsc in spec["topologySpreadConstraints"]:
                expect(selects(tsc["labelSelector"]["matchLabels"], pod["metadata"]["labels"]), "topology spread must select the pods")
        mounted = ", ".join(f"{s} from {name}/{k}" for s, (name, k) in files.items())
        return (f"probes {c['startupProbe']['httpGet']['path']}, {c['livenessProbe']['httpGet']['path']}, {c['readinessProbe']['httpGet']['path']} on port http; "
                f"grace {tgps} s > shutdown {toml['shutdown']['timeout_ms']} ms; " + (f"read-only Secret files: {mounted}" if mounted else "no Secret files"))

    def secret_files(self, render: Render) -> dict[str, tuple[str, str]]:
        """The program's file settings of the pods' TOML (password_file,
        tls_*_file), each traced through the pod's volume mounts to the Secret
        and key behind it: setting -> (Secret name, key). Fails when a file is
        not on a read-only, whole-volume Secret mount."""
        dep = self.app_deployment(render)
        spec = dep["spec"]["template"]["spec"]
        container = spec["containers"][0]
        redis = self.toml(render)["redis"]
        found = {}
        for setting in SECRET_FILE_SETTINGS:
            if setting not in redis:
                continue
            path = redis[setting]
            mount = next((m for m in container["volumeMounts"]
                          if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")), None)
            expect(mount, f"{setting} = {path} is not under a volume mount")
            expect("subPath" not in mount and "subPathExpr" not in mount,
                   f"{setting}: volume {mount['name']} is mounted with subPath, which never sees a rotated Secret")
            expect(mount.get("readOnly") is True, f"{setting}: volume {mount['name']} must be mounted read-only")
            vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            expect("secret" in vol, f"{setting}: volume {vol['name']} is not a Secret")
            relative = path[len(mount["mountPath"].rstrip("/")) + 1 :]
            items = vol["secret"].get("items")
            key = next((i["key"] for i in items if i["path"] == relative), None) if items else relative
            expect(key, f"{setting}: no key of Secret {vol['secret']['secretName']} is mounted as {relative}")
            expect(not vol["secret"].get("optional"), f"{setting}: Secret {vol['secret']['secretName']} must not be optional (a pod without the file would only fail later)")
            found[setting] = (vol["secret"]["secretName"], key)
        return found

    def fullname(self, render: Render) -> str:
        return render.one("Service")["metadata"]["name"] if len(render.all("Service")) == 1 else next(
            s["metadata"]["name"] for s in render.all("Service") if not s["metadata"]["name"].endswith("-redis"))

    def app_deployment(self, render: Render) -> dict[str, Any]:
        name = self.fullname(render)
        return next(d for d in render.all("Deployment") if d["metadata"]["name"] == name)

    def wiring(self, render: Render) -> str:
        """Selectors, ports and references between the rendered objects."""
        dep = self.app_deployment(render)
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        expect(selects(dep["spec"]["selector"]["matchLabels"], pod_labels), "Deployment selector does not select its pods")
        other_pods = [d["spec"]["template"]["metadata"]["labels"] for d in render.all("Deployment") if d is not dep]
        other_pods += [p["metadata"]["labels"] for p in render.all("Pod")]
        svc = next(s for s in render.all("Service") if s["metadata"]["name"] == dep["metadata"]["name"])
        expect(selects(svc["spec"]["selector"], pod_labels), "Service does not select the pods")
        expect(not any(selects(svc["spec"]["selector"], o) for o in other_pods), "Service also selects the Redis or test pod")
        expect(svc["spec"]["ports"][0]["targetPort"] == "http", "Service must target the http port")
        spec = dep["spec"]["template"]["spec"]
        sa = render.maybe("ServiceAccount")
        if sa:
            expect(spec["serviceAccountName"] == sa["metadata"]["name"], "pods must use the ServiceAccount")
            expect(sa.get("automountServiceAccountToken") is False, "the ServiceAccount must not automount its token")
        pdb = render.maybe("PodDisruptionBudget")
        if pdb:
            expect(selects(pdb["spec"]["selector"]["matchLabels"], pod_labels), "PDB does not select the pods")
            expect(not any(selects(pdb["spec"]["selector"]["matchLabels"], o) for o in other_pods), "PDB selects other pods")
        hpa = render.maybe("HorizontalPodAutoscaler")
        if hpa:
            ref = hpa["spec"]["scaleTargetRef"]
            expect((ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"]), "HPA must scale the Deployment")
            expect(hpa["spec"]["minReplicas"] >= 2, "HPA minReplicas must be >= 2")
        for np in render.all("NetworkPolicy"):
            if np["metadata"]["name"] == dep["metadata"]["name"]:
                expect(selects(np["spec"]["podSelector"]["matchLabels"], pod_labels), "NetworkPolicy does not select the pods")
                ports = [p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]]
                expect(ports == ["http"], f"ingress ports {ports}")
                _, redis_port, _, _ = redis_endpoint(self.toml(render)["redis"]["url"])
                egress_ports = [p["port"] for rule in np["spec"]["egress"] for p in rule.get("ports", [])]
                expect(redis_port in egress_ports and 53 in egress_ports, f"egress ports {egress_ports} miss DNS or Redis {redis_port}")
        dash = next((c for c in render.all("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")), None)
        if dash:
            expect(dash["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboard ConfigMap needs grafana_dashboard: \"1\"")
            expect(json.loads(dash["data"]["redis-dsg.json"]) == json.loads(DASHBOARD.read_text()),
                   "dashboard ConfigMap differs from deploy/grafana/redis-dsg.json")
        # The in-cluster Redis: our URL points at its Service.
        if render.merged["redis"]["enabled"]:
            rsvc = next(s for s in render.all("Service") if s["metadata"]["name"].endswith("-redis"))
            if not render.merged["config"]["redis"]["url"]:
                host, port, _, _ = redis_endpoint(self.toml(render)["redis"]["url"])
                expect((host, port) == (rsvc["metadata"]["name"], rsvc["spec"]["ports"][0]["port"]),
                       f"the URL must point at the in-cluster Redis, is {self.toml(render)['redis']['url']}")
            rdep = next(d for d in render.all("Deployment") if d is not dep)
            expect(selects(rsvc["spec"]["selector"], rdep["spec"]["template"]["metadata"]["labels"]), "Redis Service does not select Redis")
        # helm test pod: `redis-dsg status --check` with the pods' configuration.
        test = render.one("Pod", hook=True)
        expect(test["metadata"]["annotations"]["helm.sh/hook"] == "test", "test pod needs the helm.sh/hook: test annotation")
        tc = test["spec"]["containers"][0]
        expect(tc["args"][:1] == ["status"] and "--check" in tc["args"], f"test pod runs {tc['args']}")
        expect(tc["env"] == spec["containers"][0]["env"][: len(tc["env"])], "test pod env differs from the pods'")
        expect(tc["volumeMounts"] == spec["containers"][0]["volumeMounts"] and test["spec"]["volumes"] == spec["volumes"],
               "test pod volumes differ from the pods' (configuration, password, TLS files)")
        expect(tc["image"] == spec["containers"][0]["image"], "test pod image differs")
        return f"Service, ServiceAccount{', PDB' if pdb else ''}{', HPA' if hpa else ''}{', NetworkPolicy' if render.all('NetworkPolicy') else ''}{', dashboard' if dash else ''}, test pod"

    def toml(self, render: Render) -> dict[str, Any]:
        dep = self.app_deployment(render)
        vol = dep["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
        return tomllib.loads(render.named("ConfigMap", vol)["data"]["config.toml"])

    def custom_resources(self, render: Render) -> str:
        dep = self.app_deployment(render)
        container = dep["spec"]["template"]["spec"]["containers"][0]
        svc = next(s for s in render.all("Service") if s["metadata"]["name"] == dep["metadata"]["name"])
        toml = self.toml(render)
        done = []
        for sm in render.all("ServiceMonitor"):
            expect(sm["apiVersion"] == "monitoring.coreos.com/v1", sm["apiVersion"])
            expect(set(sm["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, f"unexpected fields {set(sm['spec'])}")
            expect(selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]), "ServiceMonitor does not select the Service")
            ep = sm["spec"]["endpoints"]
            expect(len(ep) == 1 and ep[0]["port"] == svc["spec"]["ports"][0]["name"] and ep[0]["path"] == "/metrics",
                   f"endpoint {ep} must scrape the Service's port {svc['spec']['ports'][0]['name']} at /metrics")
            for k in ("interval", "scrapeTimeout"):
                promql_parser.parse_duration(ep[0][k])
            expect(set(ep[0]) <= {"port", "path", "interval", "scrapeTimeout"}, f"unexpected endpoint fields {set(ep[0])}")
            done.append("ServiceMonitor")
        for pr in render.all("PrometheusRule"):
            expect(pr["apiVersion"] == "monitoring.coreos.com/v1", pr["apiVersion"])
            expect(set(pr["spec"]) == {"groups"}, f"unexpected fields {set(pr['spec'])}")
            rules = alert_rules(pr["spec"])
            names = {r["alert"] for r in rules}
            wanted = set(REQUIRED_ALERTS) - ({"RedisDsgNoGenerator"} if toml["mode"] == "consumer" else set())
            expect(wanted == names, f"alerts {sorted(names)}, expected {sorted(wanted)}")
            for r in rules:
                expect(set(r) <= {"alert", "expr", "for", "labels", "annotations"}, f"{r['alert']}: unexpected fields {set(r)}")
                expect(r["labels"]["severity"] in ("critical", "warning", "info"), f"{r['alert']}: severity {r['labels']}")
                expect({"summary", "description"} <= set(r["annotations"]), f"{r['alert']}: needs summary and description")
                if "for" in r:
                    promql_parser.parse_duration(r["for"])
                try:
                    metrics = promql_metrics(r["expr"])
                except ValueError as e:
                    fail(f"{r['alert']}: expr does not parse: {e}\n  {r['expr']}")
                if any(m.startswith("dsg_") for m in metrics):
                    # The job label a ServiceMonitor gives the series is the Service's name.
                    expect(f'job="{svc["metadata"]["name"]}"' in r["expr"], f"{r['alert']}: must select job={svc['metadata']['name']}")
                for q in re.findall(r'queue="([^"]+)"', r["expr"]):
                    expect(q in (toml["redis"]["queue"], toml["redis"]["error_queue"]), f"{r['alert']}: unknown queue {q}")
            by_name = {r["alert"]: r for r in rules}
            expect(by_name["RedisDsgNoGenerator"].get("for") == "1m", "no generator alerts after 1 minute")
            # Per namespace, wherever the rules are loaded: deploy/'s copy is
            # applied to any namespace (kustomize `namespace:`).
            for r in rules:
                expect(not re.search(r"\bnamespace\s*(=|!=|=~|!~)", r["expr"]), f"{r['alert']}: the expression names a namespace:\n{r['expr']}")
                expect("absent(" not in r["expr"], f"{r['alert']}: absent() yields only the labels its selector fixes, not the namespace")
            expect(re.search(r"_over_time\(dsg_is_generator\{[^}]*\}\[", by_name["RedisDsgNoGenerator"]["expr"]),
                   "RedisDsgNoGenerator must remember a namespace's fleet after its last pod is gone (without kube-state-metrics)")
            expect(f'queue="{toml["redis"]["queue"]}"' in by_name["RedisDsgBacklogOld"]["expr"], "backlog alert on the wrong list")
            expect("dsg_processor_invalid_ratio" in by_name["RedisDsgErrorShareHigh"]["expr"],
                   "the error-share alert must compare with the configured invalid ratio")
            expect(f'deployment="{dep["metadata"]["name"]}"' in by_name["RedisDsgConsumersNotReady"]["expr"], "readiness alert on the wrong Deployment")
            # Memory: the generator's own hold-back share (0.9 when it has none).
            ratio = toml["generator"]["max_redis_memory_ratio"] or 0.9
            memory = by_name["RedisDsgRedisMemoryHigh"]["expr"]
            expect(re.search(rf">= {re.escape(str(ratio))}\s*$", memory), f"RedisDsgRedisMemoryHigh must compare with generator.max_redis_memory_ratio {ratio}:\n{memory}")
            expect("dsg_redis_memory_max_bytes" in memory and "> 0" in memory, "RedisDsgRedisMemoryHigh must skip a Redis without maxmemory")
            expect(by_name["RedisDsgRedisEvicts"]["labels"]["severity"] == "critical", "an evicting Redis is critical")
            base = render.merged["prometheusRule"]["runbookBaseUrl"].rstrip("#")
            for r in rules:
                expect(r["annotations"].get("runbook_url") == f"{base}#{r['alert'].lower()}",
                       f"{r['alert']}: runbook_url must be {base}#{r['alert'].lower()}, is {r['annotations'].get('runbook_url')}")
            self.promtool_check(pr["spec"], f"{render.name}-rules")
            done.append(f"PrometheusRule ({len(rules)} alerts)")
        for so in render.all("ScaledObject"):
            expect(so["apiVersion"] == "keda.sh/v1alpha1", so["apiVersion"])
            spec = so["spec"]
            expect(set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod", "triggers"}, f"unexpected fields {set(spec)}")
            ref = spec["scaleTargetRef"]
            expect(ref.get("kind", "Deployment") == "Deployment" and ref["name"] == dep["metadata"]["name"], f"scaleTargetRef {ref}")
            expect(isinstance(spec["minReplicaCount"], int) and spec["minReplicaCount"] >= 2, "minReplicaCount must be >= 2 (one generator + one consumer)")
            expect(spec["maxReplicaCount"] >= spec["minReplicaCount"], "maxReplicaCount < minReplicaCount")
            expect(not render.all("HorizontalPodAutoscaler"), "an HPA next to a ScaledObject would fight over replicas")
            expect(len(spec["triggers"]) == 1 and spec["triggers"][0]["type"] == "redis", "one redis (lists) trigger")
            meta = spec["triggers"][0]["metadata"]
            expect(all(isinstance(x, str) for x in meta.values()), "KEDA trigger metadata values must be strings")
            allowed = {"address", "listName", "listLength", "activationListLength", "databaseIndex", "enableTLS", "unsafeSsl", "usernameFromEnv"}
            expect(set(meta) <= allowed, f"unknown trigger metadata {set(meta) - allowed}")
            expect(meta["listName"] == toml["redis"]["queue"], f"listName {meta['listName']} != queue {toml['redis']['queue']}")
            url = toml["redis"]["url"]
            host, port, db, tls = redis_endpoint(url)
            expect(meta["address"] == f"{host}:{port}", f"address {meta['address']} != {host}:{port} from {url}")
            expect(meta["databaseIndex"] == db, f"databaseIndex {meta['databaseIndex']} for {url}")
            expect(meta["enableTLS"] == str(tls).lower(), f"enableTLS {meta['enableTLS']} for {url}")
            expect(int(meta["listLength"]) >= 1, "listLength must be a positive integer")
            expect(meta.get("unsafeSsl", "false") == str(toml["redis"]["tls_insecure_skip_verify"]).lower(),
                   f"unsafeSsl {meta.get('unsafeSsl')} for tls_insecure_skip_verify = {toml['redis']['tls_insecure_skip_verify']}")
            env_names = {e["name"] for e in container["env"]}
            if "usernameFromEnv" in meta:
                expect(meta["usernameFromEnv"] in env_names, f"usernameFromEnv={meta['usernameFromEnv']} is not an env variable of the container")
            if "DSG_REDIS__USERNAME" in env_names:
                expect(meta.get("usernameFromEnv") == "DSG_REDIS__USERNAME", "the scaler needs the Redis user name")
            # The password and the TLS files: KEDA reads the Secrets the pods
            # mount, key for key, through a TriggerAuthentication.
            trigger = spec["triggers"][0]
            expect(set(trigger) <= {"type", "metadata", "authenticationRef"}, f"unexpected trigger fields {set(trigger)}")
            want = {SECRET_FILE_SETTINGS[s]: ref for s, ref in self.secret_files(render).items()}
            if want:
                ref = trigger.get("authenticationRef") or {}
                expect(ref.get("kind", "TriggerAuthentication") == "TriggerAuthentication", f"authenticationRef {ref}")
                ta = render.named("TriggerAuthentication", ref.get("name", ""))
                expect(ta, f"the trigger needs a TriggerAuthentication for {', '.join(sorted(want))}, references {ref}")
                expect(set(ta["spec"]) == {"secretTargetRef"}, f"unexpected TriggerAuthentication fields {set(ta['spec'])}")
                for r in ta["spec"]["secretTargetRef"]:
                    expect(set(r) == {"parameter", "name", "key"}, f"secretTargetRef {r}")
                got = {r["parameter"]: (r["name"], r["key"]) for r in ta["spec"]["secretTargetRef"]}
                expect(got == want, f"the TriggerAuthentication hands KEDA {got}, the pods mount {want}")
                # KEDA refuses `tls` in both the trigger and the authentication.
                expect("tls" not in got, "tls must be set by the trigger's enableTLS only")
                done.append(f"TriggerAuthentication ({', '.join(sorted(got))})")
            else:
                expect("authenticationRef" not in trigger, "authenticationRef without a password or TLS files")
            done.append("ScaledObject")
        referenced = {so["spec"]["triggers"][0].get("authenticationRef", {}).get("name") for so in render.all("ScaledObject")}
        for ta in render.all("TriggerAuthentication"):
            expect(ta["metadata"]["name"] in referenced, f"TriggerAuthentication {ta['metadata']['name']} is used by no ScaledObject")
        return ", ".join(done) if done else "none rendered"

    # ---- live: the binary with the pod's exact configuration ------------

    @staticmethod
    def mount_map(container: dict[str, Any], files: Path) -> list[tuple[str, Path]]:
        """The container's mount paths and the local directories standing
        for them (files/<volume>), longest path first."""
        mounts = [(m["mountPath"].rstrip("/"), files / m["name"]) for m in container.get("volumeMounts", [])]
        return sorted(mounts, key=lambda m: -len(m[0]))

    @staticmethod
    def local_path(value: str, mounts: list[tuple[str, Path]]) -> str:
        """A path inside the container, as the local file standing for it."""
        for mount_path, local in mounts:
            if value.startswith(mount_path + "/"):
                return str(local / value[len(mount_path) + 1 :])
        return value

    def pod_env(self, render: Render, container: dict[str, Any], files: Path, secrets: dict[tuple[str, str], str]) -> dict[str, str]:
        """The container's environment with paths under its mounts mapped to
        the local files (see pod_files)."""
        env = {"PATH": os.environ["PATH"]}
        mounts = self.mount_map(container, files)
        for e in container["env"]:
            if "value" in e:
                env[e["name"]] = self.local_path(e["value"], mounts)
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = secrets[(ref["name"], ref["key"])]
        return env

    @staticmethod
    def write_volume(directory: Path, data: dict[str, str], mode: int = 0o644) -> None:
        """Write a volume's files as the kubelet does (its atomic writer): the
        data in a timestamped directory, `..data` a symlink to it, each file a
        symlink through `..data`. Writing again swaps `..data` in one rename,
        which is how a rotated Secret reaches a running pod."""
        directory.mkdir(parents=True, exist_ok=True)
        stamp = directory / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{os.urandom(4).hex()}"
        stamp.mkdir()
        for name, text in data.items():
            (stamp / name).parent.mkdir(parents=True, exist_ok=True)
            (stamp / name).write_text(text)
            (stamp / name).chmod(mode)
        data_link = directory / "..data"
        old = data_link.resolve() if data_link.is_symlink() else None
        tmp_link = directory / "..data_tmp"
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(stamp.name)
        os.replace(tmp_link, data_link)
        for name in data:
            top = name.split("/")[0]
            if not (directory / top).is_symlink():
                (directory / top).symlink_to(f"..data/{top}")
        if old and old != stamp.resolve():
            shutil.rmtree(old)

    def pod_files(self, render: Render, spec: dict[str, Any], container: dict[str, Any], files: Path,
                  secrets: dict[tuple[str, str], str], redis_url: str | None, drop_tls: bool = False) -> dict[str, str]:
        """Write every ConfigMap and Secret volume of the pod to
        files/<volume>/ (the Secrets' items where the kubelet would put them,
        with their mode), mapping paths under the container's mounts to those
        local files inside config.toml; return the container's environment.
        redis_url replaces the file's Redis address (the private
        redis-server); drop_tls removes the TLS settings for a plain one."""
        mounts = self.mount_map(container, files)
        for vol in spec["volumes"]:
            if "configMap" in vol:
                cm = render.named("ConfigMap", vol["configMap"]["name"])
                expect(cm, f"volume {vol['name']}: ConfigMap {vol['configMap']['name']} is not rendered")
                data = dict(cm["data"])
                if "config.toml" in data:
                    text = data["config.toml"]
                    if redis_url is not None:
                        text, n = re.subn(r'^url = ".*"$', f'url = "{redis_url}"', text, flags=re.M)
                        expect(n == 1, "config.toml must hold exactly one url line")
                    if drop_tls:
                        text = re.sub(rf"^(?:{'|'.join(TLS_SETTINGS)}) = .*\n", "", text, flags=re.M)
                    text = re.sub(r'"(/[^"]*)"', lambda m: json.dumps(self.local_path(m.group(1), mounts)), text)
                    data["config.toml"] = text
                self.write_volume(files / vol["name"], data)
            elif "secret" in vol:
                name = vol["secret"]["secretName"]
                items = vol["secret"].get("items") or [{"key": k, "path": k} for (s, k) in secrets if s == name]
                data = {}
                for item in items:
                    expect((name, item["key"]) in secrets, f"volume {vol['name']}: Secret {name} has no key {item['key']} (the pod would not start)")
                    data[item["path"]] = secrets[(name, item["key"])]
                self.write_volume(files / vol["name"], data, vol["secret"].get("defaultMode", 0o644))
        return self.pod_env(render, container, files, secrets)

    def secrets(self, render: Render) -> dict[tuple[str, str], str]:
        """The data of every Secret the pods mount: the chart's own, and what
        the operator would have put in the existing ones (a password; the CA,
        client certificate and key of the throw-away CA)."""
        found = {}
        for s in render.all("Secret"):
            for k, v in s.get("data", {}).items():
                found[(s["metadata"]["name"], k)] = base64.b64decode(v).decode()
        auth = render.merged["auth"]
        if auth["existingSecret"]:
            found[(auth["existingSecret"], auth["existingSecretPasswordKey"])] = EXISTING_SECRET_PASSWORD
        tls = render.merged["tls"]
        if tls["existingSecret"]:
            for key, path in ((tls["caKey"], self.tls.ca), (tls["certKey"], self.tls.client[0]), (tls["keyKey"], self.tls.client[1])):
                if key:
                    found[(tls["existingSecret"], key)] = path.read_text()
        return found

    def live(self, set_name: str, render: Render, scrape: bool) -> str:
        dep = self.app_deployment(render)
        spec = dep["spec"]["template"]["spec"]
        container = spec["containers"][0]
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
        argv = [str(self.binary)] + container.get("args", [])
        expect("command" not in container, "the container must keep the image's ENTRYPOINT")
        secrets = self.secrets(render)
        secret_files = self.secret_files(render)
        rendered = self.toml(render)["redis"]
        work = Path(tempfile.mkdtemp(prefix=f"{set_name}-", dir=self.work))
        procs = Processes(work)
        try:
            # 1. The binary reads the rendered configuration as it is (TLS
            #    URL included), opens the mounted Secret files, and agrees on
            #    the port and the grace period.
            files = work / "files"
            env = self.pod_files(render, spec, container, files, secrets, redis_url=None)
            cfg = subprocess.run([str(self.binary), "config"], env=env, capture_output=True, text=True, timeout=30)
            expect(cfg.returncode == 0, f"`redis-dsg config` with the pod's configuration exited {cfg.returncode}:\n{cfg.stderr}")
            effective = tomllib.loads(cfg.stdout)
            expect(effective["http"]["port"] == port, f"the binary listens on {effective['http']['port']}, the spec names {port}")
            expect(effective["log_format"] == "json", "log_format must be json")
            expect(spec["terminationGracePeriodSeconds"] * 1000 > effective["shutdown"]["timeout_ms"],
                   f"terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} s <= the binary's shutdown.timeout_ms {effective['shutdown']['timeout_ms']}")
            expect(effective["redis"]["url"] == rendered["url"], "the file's URL was not read")
            for line in cfg.stdout.splitlines():
                if re.match(r"^\w+ = ", line) and not line.startswith(("log_format", "bind")) and "TOML file" not in line and "environment" not in line:
                    fail(f"setting not taken from the ConfigMap: {line}")
            mounts = self.mount_map(container, files)
            for setting, (secret, key) in secret_files.items():
                local = self.local_path(rendered[setting], mounts)
                expect(effective["redis"].get(setting) == local, f"the binary's {setting} is {effective['redis'].get(setting)}, the pod mounts {local}")
                expect(Path(local).read_text() == secrets[(secret, key)], f"{local} does not hold Secret {secret}'s {key}")
            expect(re.search(r"^# password: not set", cfg.stdout, re.M), "the password must come from the file only")

            # 2. The same, against a private redis-server that demands the
            #    password of the mounted Secret and, for a rediss:// URL,
            #    speaks TLS with a certificate of the CA the TLS Secret holds:
            #    probes answer on the port the spec names.
            _, _, db, _ = redis_endpoint(rendered["url"])
            password = None
            if "password_file" in secret_files:
                password = secrets[secret_files["password_file"]].rstrip("\r\n")
            username = render.merged["auth"]["username"] or None
            redis_tls = None
            drop_tls = False
            tls_note = ""
            if rendered["url"].startswith("rediss"):
                verifiable = "tls_ca_file" in rendered or rendered["tls_insecure_skip_verify"]
                if self.tls.available and verifiable and not os.environ.get(PLAIN_REDIS_ENV):
                    # The server's certificate names what the program must
                    # verify: tls_server_name when set (so that it must be
                    # used), else the address it connects to.
                    server_name = rendered.get("tls_server_name") or "127.0.0.1"
                    cert, key = self.tls.server(server_name)
                    redis_tls = RedisTls(cert, key, self.tls.ca, self.tls.client if "tls_cert_file" in rendered else None)
                    tls_note = (f"TLS: rediss:// to a server certificate for {server_name} of the CA in Secret "
                                f"{secret_files['tls_ca_file'][0] if 'tls_ca_file' in secret_files else '(none: verification off)'}"
                                + ("; the server demands the client certificate of the TLS Secret" if redis_tls.client else ""))
                else:
                    # The program refuses TLS settings with a redis:// URL,
                    # so a plain run drops them.
                    drop_tls = True
                    why = (f"{PLAIN_REDIS_ENV} is set" if os.environ.get(PLAIN_REDIS_ENV)
                           else "openssl is missing" if not self.tls.available
                           else "no CA file to trust a private CA with (the system's roots)")
                    tls_note = (f"TLS NOT exercised ({why}): plain redis:// substituted and the TLS settings "
                                f"({', '.join(s for s in TLS_SETTINGS if s in rendered and rendered[s] is not False)}) "
                                "dropped for this run, as the program refuses them with a non-TLS URL; step 1 read them with the real URL")
            redis_port = start_redis(procs, "redis-server", password, username, tls=redis_tls)
            files = work / "files-live"
            local_url = f"{'rediss' if redis_tls else 'redis'}://127.0.0.1:{redis_port}/{db}"
            env = self.pod_files(render, spec, container, files, secrets, redis_url=local_url, drop_tls=drop_tls)
            if not self.port_free(port):
                # The spec's port is taken on this machine: use another one
                # through the HTTP port setting, the probes keep their paths.
                port = free_port()
                env["DSG_HTTP__PORT"] = str(port)
            pod1 = procs.start("pod-1", argv, env)

            def alive(proc: subprocess.Popen[bytes], name: str) -> bool:
                expect(proc.poll() is None, f"{name} exited {proc.returncode}:\n{procs.log(name)}")
                return True

            probes = [(name, container[name]["httpGet"]) for name in ("startupProbe", "livenessProbe", "readinessProbe")]
            for name, get in probes:
                expect(get["port"] in ("http", port) or get["port"] == effective["http"]["port"], f"{name} port {get['port']}")
                wait_for(f"{name} {get['path']} = 200 on port {port}", lambda p=get["path"]: alive(pod1, "pod-1") and http_get(port, p)[0] == 200, LIVE_TIMEOUT)
            expect(pod1.poll() is None, f"pod-1 exited:\n{procs.log('pod-1')}")
            # A second replica (a consumer with fast processing, so that
            # histograms fill): `helm test`'s command passes against the pair.
            port2 = free_port()
            env2 = dict(env, DSG_HTTP__PORT=str(port2), MODE="consumer", DSG_PROCESSOR__MAX_MS="1")
            pod2 = procs.start("pod-2", argv, env2)
            wait_for("pod-2 ready", lambda: alive(pod2, "pod-2") and http_get(port2, "/readyz")[0] == 200, LIVE_TIMEOUT)
            test = render.one("Pod", hook=True)
            tc = test["spec"]["containers"][0]
            tenv = self.pod_env(render, tc, files, secrets)
            deadline = time.monotonic() + LIVE_TIMEOUT
            while True:
                status = subprocess.run([str(self.binary)] + tc["args"], env=tenv, capture_output=True, text=True, timeout=30)
                if status.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            expect(status.returncode == 0, f"`redis-dsg {' '.join(tc['args'])}` (helm test) exited {status.returncode}:\n{status.stdout}{status.stderr}")
            if scrape:
                wait_for("processing histograms in /metrics", lambda: "dsg_message_age_seconds_bucket" in http_get(port2, "/metrics")[1], LIVE_TIMEOUT)
                # One replica at a time exports the fleet's gauges: the scrape
                # is the union of both.
                wait_for("the fleet's gauges in /metrics", lambda: any("dsg_queue_length{" in http_get(p, "/metrics")[1] for p in (port, port2)), LIVE_TIMEOUT)
                for p in (port, port2):
                    code, text = http_get(p, "/metrics")
                    expect(code == 200, f"/metrics answered {code}")
                    self.scraped_metrics |= {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][\w:]*)(\{| )", text, re.M)}
                # What Prometheus 2.42 sends: OpenMetrics preferred. The
                # answer is the text format 0.0.4, labelled as such (the
                # README says so), which Prometheus parses by Content-Type.
                req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept": PROMETHEUS_ACCEPT})
                with urllib.request.urlopen(req, timeout=5) as r:
                    ctype = r.headers.get("Content-Type", "")
                    expect(r.status == 200 and ctype.startswith("text/plain") and "version=0.0.4" in ctype,
                           f"/metrics with Prometheus' Accept header answered {r.status} {ctype!r}")
            grace = spec["terminationGracePeriodSeconds"]
            ready = container["readinessProbe"]["httpGet"]["path"]
            live = container["livenessProbe"]["httpGet"]["path"]

            def stop(name: str, proc: subprocess.Popen[bytes]) -> float:
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    fail(f"{name} did not stop within terminationGracePeriodSeconds={grace}:\n{procs.log(name)}")
                expect(code == 0, f"{name} exited {code} after SIGTERM:\n{procs.log(name)}")
                return time.monotonic() - started

            # 3. SIGTERM: the consumer stops cleanly within the grace period.
            took = stop("pod-2", pod2)
            # 4. Liveness never depends on Redis, readiness does, and the pod
            #    comes back by itself when Redis does. With a password, Redis
            #    comes back with a new one while the Secret's file is rotated
            #    the kubelet's way: the running pod must read it again.
            redis_proc = next(p for n, p in procs.procs if n == "redis-server")
            redis_proc.kill()
            redis_proc.wait()
            wait_for(f"{ready} = 503 with Redis down", lambda: http_get(port, ready)[0] == 503, LIVE_TIMEOUT)
            expect(http_get(port, live)[0] == 200, f"{live} must stay 200 while Redis is down")
            rotated = ""
            if password:
                secret, key = secret_files["password_file"]
                password = password + "-rotated"
                secrets = dict(secrets)
                secrets[(secret, key)] = password
                mount = next(m for m in container["volumeMounts"] if rendered["password_file"].startswith(m["mountPath"].rstrip("/") + "/"))
                vol = next(v for v in spec["volumes"] if v["name"] == mount["name"])
                self.pod_files(render, {"volumes": [vol]}, container, files, secrets, redis_url=None)
                rotated = f"; Secret {secret} rotated under the running pod: ready again with the new password, no restart"
            start_redis(procs, "redis-server-again", password, username, port=redis_port, tls=redis_tls)
            wait_for(f"{ready} = 200 once Redis is back" + (" with the rotated password" if rotated else ""),
                     lambda: alive(pod1, "pod-1") and http_get(port, ready)[0] == 200, LIVE_TIMEOUT)
            # 5. SIGTERM: the generator stops cleanly within the grace period.
            took = max(took, stop("pod-1", pod1))
            probed = ", ".join(f"{n} {g['path']}" for n, g in probes)
            auth = ("password from the mounted file" + (f" (user {username})" if username else "")) if password else "no password"
            return (f"{' '.join(argv[1:])} on port {port}: {probed} = 200; "
                    f"helm test `{' '.join(tc['args'])}` = 0; {ready} 503 / {live} 200 without Redis, ready again with it; "
                    f"SIGTERM exit 0 in {took:.1f} s < {grace} s; {auth}{rotated}" + (f"; {tls_note}" if tls_note else ""))
        finally:
            procs.stop_all()

    @staticmethod
    def port_free(port: int) -> bool:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
                return True
            except OSError:
                return False

    # ---- deploy/ ------------------------------------------------------------

    def drift(self) -> str:
        problems = []
        expected = generated_files()
        for path, text in expected.items():
            actual = path.read_text() if path.exists() else None
            if actual != text:
                diff = "".join(difflib.unified_diff((actual or "").splitlines(True), text.splitlines(True),
                                                    f"{path.relative_to(ROOT)} (committed)", "fresh render", n=1))
                problems.append(diff[:2000] or f"{path.relative_to(ROOT)} is missing")
        for stale in BASE.glob("*.yaml"):
            if stale not in expected:
                problems.append(f"{stale.relative_to(ROOT)} is not part of the render")
        expect(not problems, "deploy/ differs from a fresh render; run tests/packaging/run --update\n" + "\n".join(problems))
        return f"{len(expected)} files equal a fresh render"

    def kustomize(self) -> str:
        run = subprocess.run([VENV_BIN / "kubectl", "kustomize", str(BASE)], capture_output=True, text=True)
        expect(run.returncode == 0, f"kubectl kustomize failed:\n{run.stderr}")
        built = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(run.stdout) if d}
        render = Render({}, RELEASE, "default")
        wanted = {}
        for _, d in render.docs:
            if is_hook(d):
                continue
            for meta in [d["metadata"]] + ([d["spec"]["template"]["metadata"]] if d["kind"] == "Deployment" else []):
                meta.get("labels", {}).pop("helm.sh/chart", None)
                if meta.get("labels", {}).get("app.kubernetes.io/managed-by") == "Helm":
                    meta["labels"]["app.kubernetes.io/managed-by"] = "kustomize"
            wanted[(d["kind"], d["metadata"]["name"])] = d
        expect(set(built) == set(wanted), f"kustomize builds {sorted(built)}, the chart renders {sorted(wanted)}")
        for key, doc in built.items():
            expect(doc == wanted[key], f"{key} differs between the kustomize build and the chart's render")
            for kube in KUBE_VERSIONS:
                kv.validate(doc, kube, strict=True)
        return f"kubectl kustomize deploy/base builds {len(built)} objects = chart defaults, valid for {' and '.join(KUBE_VERSIONS)}"

    # ---- PromQL ---------------------------------------------------------------

    def promql(self) -> str:
        expect(self.scraped_metrics, "no live /metrics scrape to compare with")
        dashboard = json.loads(DASHBOARD.read_text())
        exprs = [(f"dashboard {where}", grafana_to_promql(q)) for where, q in dashboard_queries(dashboard)]
        exprs += [(f"deploy/prometheus/alerts.yaml {r['alert']}", r["expr"]) for r in alert_rules(load_yaml(ALERTS))]
        for set_name, render in self.renders.items():
            for pr in render.all("PrometheusRule"):
                exprs += [(f"{set_name} PrometheusRule {r['alert']}", r["expr"]) for r in alert_rules(pr["spec"])]
        problems = []
        used: set[str] = set()
        for where, expr in exprs:
            try:
                metrics = promql_metrics(expr)
            except ValueError as e:
                problems.append(f"{where}: does not parse: {e}\n  {expr}")
                continue
            used |= metrics
            for metric in sorted(metrics - self.scraped_metrics - METRIC_ALLOW_LIST - ANNOUNCED_METRICS):
                problems.append(f"{where}: {metric} is not in the live /metrics scrape")
        # The other way round: the dashboard shows every metric redis-dsg exports.
        families = {re.sub(r"_(bucket|sum|count)$", "", m) for m in self.scraped_metrics}
        dash_used = set()
        for _, q in dashboard_queries(dashboard):
            dash_used |= {re.sub(r"_(bucket|sum|count)$", "", m) for m in promql_metrics(grafana_to_promql(q))}
        for family in sorted(families - dash_used):
            problems.append(f"the dashboard shows nothing of {family}")
        expect(not problems, "\n".join(problems))
        pending = sorted(used & ANNOUNCED_METRICS - self.scraped_metrics)
        return (f"{len(exprs)} expressions parse; {len(used - METRIC_ALLOW_LIST - set(pending))} metric names in the live scrape of "
                f"{len(self.scraped_metrics)} series names; allow-listed: {', '.join(sorted(used & METRIC_ALLOW_LIST))}"
                + (f"; announced, not exported by this binary yet: {', '.join(pending)}" if pending else ""))

    def dashboard_topics(self) -> str:
        dashboard = json.loads(DASHBOARD.read_text())
        expect(dashboard.get("uid") and dashboard.get("title"), "dashboard needs uid and title")
        expect(CHART_DASHBOARD.read_bytes() == DASHBOARD.read_bytes(), "helm/redis-dsg/dashboards/redis-dsg.json differs from deploy/grafana/redis-dsg.json (run --update)")
        text = json.dumps(dashboard)
        topics = {
            "generation rate": "rate(dsg_messages_generated_total",
            "processing rate by outcome": "sum by (outcome) (rate(dsg_messages_processed_total",
            "error list length": 'queue=\\"$error_queue\\"',
            "backlog": 'queue=\\"$queue\\"',
            "message age p50": "histogram_quantile(0.5, sum by (le) (rate(dsg_message_age_seconds_bucket",
            "message age p99": "histogram_quantile(0.99, sum by (le) (rate(dsg_message_age_seconds_bucket",
            "in-flight": "dsg_in_flight_messages",
            "current generator": "dsg_is_generator",
            "epoch": "dsg_lease_epoch",
            "lease transitions": "dsg_lease_transitions_total",
            "fenced-write rejections": "dsg_generator_fenced_writes_rejected_total",
            "Redis errors": "dsg_redis_errors_total",
            "per-pod RSS": "sum by (pod) (process_resident_memory_bytes",
            "per-pod CPU": "sum by (pod) (rate(process_cpu_seconds_total",
            "scrape health": "max by (pod) (up{",
            "readiness": "dsg_ready{",
            "Redis reachability": "dsg_redis_up{",
            "restarts": "changes(process_start_time_seconds{",
            "uptime": "time() - process_start_time_seconds{",
            "build version": "count by (version) (dsg_build_info{",
            "live consumers": "dsg_consumers_live{",
            "backlog age": 'dsg_queue_oldest_message_age_seconds{namespace=\\"$namespace\\", job=\\"$job\\", queue=\\"$queue\\"}',
            "error share vs configured ratio": "dsg_processor_invalid_ratio{",
            "implausible message ages": "dsg_message_age_implausible_total{",
            "Redis memory vs maxmemory": "dsg_redis_memory_max_bytes{",
            "Redis used_memory": "dsg_redis_memory_used_bytes{",
            "the generator's memory ratio line": "$memory_ratio * max(dsg_redis_memory_max_bytes{",
            "generator held back by reason": "max by (reason) (dsg_generator_paused{",
            "error entries trimmed": "dsg_error_entries_trimmed_total{",
            "Redis eviction policy": "dsg_redis_eviction_safe{",
            "in-flight bytes": "dsg_in_flight_bytes{",
        }
        missing = [t for t, needle in topics.items() if needle not in text]
        expect(not missing, f"dashboard lacks: {', '.join(missing)}")
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        expect("pod" in variables and variables["pod"].get("multi") and variables["pod"].get("includeAll"),
               "the dashboard needs a multi-value pod variable with All")
        problems = []
        for panel in all_panels(dashboard):
            if panel["type"] == "row":
                continue
            expect(panel.get("datasource", {}).get("uid") == "${datasource}", f"panel {panel['title']} must use the $datasource variable")
            for target in panel.get("targets", []):
                expr = target["expr"]
                # increase() over $__rate_interval in a time series counts
                # one event in several points (the windows overlap); count
                # events per $__interval with a minimum interval of at least
                # two scrapes instead.
                if panel["type"] == "timeseries" and re.search(r"(increase|changes)\([^\[]*\[\$__rate_interval\]", expr):
                    problems.append(f"panel {panel['title']!r}: increase()/changes() over $__rate_interval counts one event in several points; use [$__interval] and a panel interval")
                if "[$__interval]" in expr:
                    interval = panel.get("interval", "")
                    if not interval or promql_parser.parse_duration(interval).total_seconds() < 60:
                        problems.append(f"panel {panel['title']!r}: [$__interval] needs a panel interval of at least 1m (two scrapes at the chart's 30 s)")
                # Fleet-wide gauges come from one pod at a time: filtering
                # them by pod would hide them.
                if re.search(r"dsg_(queue_length|queue_oldest_message_age_seconds|consumers_live)\{[^}]*pod=", expr):
                    problems.append(f"panel {panel['title']!r}: fleet-wide gauges must not be filtered by $pod")
        expect(not problems, "\n".join(problems))
        return f"{len([p for p in all_panels(dashboard) if p['type'] != 'row'])} panels cover {len(topics)} topics; pod variable; event counts per interval"

    # ---- promtool ---------------------------------------------------------------

    def promtool_check(self, groups: dict[str, Any], name: str) -> None:
        promtool = shutil.which("promtool")
        if not promtool:
            return
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(groups, sort_keys=False))
        run = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
        expect(run.returncode == 0, f"promtool check rules {name}:\n{run.stdout}{run.stderr}")

    def promtool_rules(self) -> str:
        promtool = shutil.which("promtool")
        check = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
        expect(check.returncode == 0, f"promtool check rules:\n{check.stdout}{check.stderr}")
        tests_path = HERE / "alerts-test.yaml"
        test = subprocess.run([promtool, "test", "rules", str(tests_path)], capture_output=True, text=True)
        expect(test.returncode == 0, f"promtool test rules:\n{test.stdout}{test.stderr}")
        alerts = {r["alert"] for r in alert_rules(load_yaml(ALERTS))}
        suite = load_yaml(tests_path)
        # Every alert is shown to fire somewhere, with its labels checked.
        fired = {c["alertname"] for g in suite["tests"] for c in g.get("alert_rule_test", []) if c.get("exp_alerts")}
        expect(alerts <= fired, f"no promtool test shows these alerts firing: {', '.join(sorted(alerts - fired))}")
        for g in suite["tests"]:
            for c in g.get("alert_rule_test", []):
                for a in c.get("exp_alerts") or []:
                    expect(set(a.get("exp_labels", {})) == {"severity", "namespace"},
                           f"{g['name']}: {c['alertname']} at {c['eval_time']}: expect exactly the labels severity and namespace")
        # The healthy groups again, with every alert checked at every
        # evaluation: nothing fires, ever (not only at the sampled times).
        healthy = [g for g in suite["tests"] if g.get("name", "").startswith("healthy")]
        expect(healthy, "alerts-test.yaml needs a group named 'healthy …'")
        step = promql_parser.parse_duration(suite.get("evaluation_interval", "1m")).total_seconds()
        dense_groups = []
        evaluations = 0
        for g in healthy:
            interval = promql_parser.parse_duration(g.get("interval", "1m")).total_seconds()
            length = max(series_samples(s["values"]) for s in g["input_series"]) * interval
            times = [int(step * i) for i in range(1, int(length // step) + 1)]
            evaluations += len(times) * len(alerts)
            dense_groups.append(dict(g, name=g["name"] + " (every evaluation)", alert_rule_test=[
                {"eval_time": f"{s}s", "alertname": a, "exp_alerts": []} for s in times for a in sorted(alerts)]))
        dense = self.work / "alerts-test-healthy-dense.yaml"
        dense.write_text(yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": suite.get("evaluation_interval", "1m"),
                                         "tests": dense_groups}, sort_keys=False))
        run = subprocess.run([promtool, "test", "rules", str(dense)], capture_output=True, text=True)
        expect(run.returncode == 0, f"promtool test rules (healthy groups at every evaluation):\n{(run.stdout + run.stderr)[-4000:]}")
        rules = re.search(r"SUCCESS: (\d+) rules found", check.stdout)
        return (f"check rules: {rules.group(1) if rules else '?'} rules; test rules: {len(suite['tests'])} groups, every alert fires "
                f"with exactly {{namespace, severity}}; healthy fleet quiet at all {evaluations} alert evaluations")

    # ---- README -------------------------------------------------------------------

    def readme(self) -> str:
        text = README.read_text()
        m = re.search(r"<!-- kubernetes:start -->(.*)<!-- kubernetes:end -->", text, re.S)
        expect(m, "README has no kubernetes markers")
        section = m.group(1)
        expect("## Run on Kubernetes" in section, "the section needs a '## Run on Kubernetes' heading")
        # Fenced blocks pair up whatever their language; only shell ones hold commands.
        blocks = [re.sub(r"\s*\\\n\s*", " ", block) for lang, block in re.findall(r"```([a-z]*)\n(.*?)```", section, re.S)
                  if lang in ("", "sh", "bash", "console")]
        commands = [line.strip() for block in blocks for line in block.splitlines()]
        commands = [re.sub(r"\s+#.*$", "", c) for c in commands if c and not c.startswith("#")]
        for needed in (r"^helm install ", r"^kubectl .*\bscale\b", r"^kubectl .*\bexec\b .* errors drain", r"^helm upgrade ",
                       r"^helm uninstall ", r"^helm test "):
            expect(any(re.search(needed, c) for c in commands), f"the section shows no command matching {needed}")
        # Every command the chart's NOTES print (release redis-dsg in
        # namespace redis-dsg, defaults) appears verbatim in the README.
        notes = Render({}, RELEASE, README_NAMESPACE).notes
        notes_cmds = [line.strip() for line in notes.splitlines() if line.strip().startswith(("kubectl ", "helm "))]
        missing = [c for c in notes_cmds if c not in commands]
        expect(not missing, "commands of the chart's NOTES missing from the README:\n  " + "\n  ".join(missing))
        # Every helm command names the chart and a release the way NOTES does,
        # and every --set is accepted by the schema.
        with helm.Chart.load(CHART) as chart:
            for c in commands:
                if c.startswith(("helm install", "helm upgrade")):
                    expect(f" {RELEASE} " in f" {c} " and "helm/redis-dsg" in c and (f"-n {README_NAMESPACE}" in c or f"--namespace {README_NAMESPACE}" in c),
                           f"`{c}` must install release {RELEASE} of ./helm/redis-dsg in namespace {README_NAMESPACE}")
                for s in re.findall(r"--set(?:-string)? (\S+)", c):
                    chart.validate_schema(chart.merge_values(helm.parse_set_string(s)))
                if c.startswith("kubectl ") and " -k " not in c:
                    for kind, name in re.findall(r"(?<=\s)(deployment|deploy|svc)/([a-z0-9.-]+)", c):
                        expect(name == RELEASE, f"`{c}` names {kind}/{name}, the chart names it {RELEASE}")
            # Values snippets are valid chart values.
            for lang, block in re.findall(r"```([a-z]*)\n(.*?)```", section, re.S):
                if lang == "yaml":
                    chart.validate_schema(chart.merge_values(yaml.safe_load(block)))
        # The files the chart mounts from Secrets are where the README says.
        secret_mounts = Render({"config": {"redis": {"url": "rediss://redis.example.internal:6380"}}, "auth": {"password": "x"},
                                "tls": {"existingSecret": "redis-tls", "certKey": "tls.crt", "keyKey": "tls.key"}}, RELEASE, README_NAMESPACE)
        dep = self.app_deployment(secret_mounts)
        for setting, path in sorted(self.toml(secret_mounts)["redis"].items()):
            if setting in SECRET_FILE_SETTINGS:
                directory = path.rsplit("/", 1)[0]
                expect(f"`{path}`" in section or f"`{directory}`" in section, f"the section does not say where {setting} is mounted ({directory})")
        expect(len(dep["spec"]["template"]["spec"]["volumes"]) == 3, "expected the ConfigMap, password and TLS volumes")
        # The Docker image the README builds is the chart's image.
        repo = load_yaml(CHART / "values.yaml")["image"]["repository"]
        for tag in re.findall(r"docker build -t (\S+)", section):
            expect(tag.startswith(repo + ":"), f"README builds {tag}, the chart pulls {repo}")
        return f"{len(commands)} command lines; all {len(notes_cmds)} NOTES commands present"


    def live_prometheus(self) -> str:
        """tests/packaging/live_prometheus.py against the binary: a real
        Prometheus scraping three replicas every second with the shipped
        rules; every dashboard expression evaluated; no alert while healthy;
        the generator SIGKILLed; Redis stopped and back."""
        argv = [sys.executable, str(HERE / "live_prometheus.py"), "--binary", str(self.binary)]
        run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        out = run.stdout + run.stderr
        expect(run.returncode == 0, f"{' '.join(argv[1:])} exited {run.returncode}:\n{out[-6000:]}")
        lines = [line.removeprefix("live-prometheus: ") for line in out.splitlines()]
        figures = [line for line in lines if re.search(r"\): [\d.]+$", line)]
        summary = [line for line in lines if line.startswith(("dashboard:", "healthy fleet", "generator ", "9 alert", f"{len(alert_rules(load_yaml(ALERTS)))} alert"))]
        return "; ".join(summary + figures)

    def alerts_readme(self) -> str:
        """The README's alert table and runbooks match the rules: one table
        row and one runbook heading (the runbook_url's anchor) per alert,
        nothing else; the thresholds it names are the chart's defaults."""
        text = README.read_text()
        m = re.search(r"^## Alerts and runbooks\n(.*?)(?=^## )", text, re.S | re.M)
        expect(m, "README has no '## Alerts and runbooks' section")
        section = m.group(1)
        rules = alert_rules(load_yaml(ALERTS))
        names = [r["alert"] for r in rules]
        rows = re.findall(r"^\| `(\w+)` \| (\w+) \|", section, re.M)
        expect([n for n, _ in rows] == names, f"the README's alert table lists {[n for n, _ in rows]}, the rules are {names}")
        for (name, severity), rule in zip(rows, rules):
            expect(severity == rule["labels"]["severity"], f"{name}: the table says {severity}, the rule {rule['labels']['severity']}")
        headings = re.findall(r"^### (\w+)$", section, re.M)
        expect(headings == names, f"runbook headings {headings}, expected one per alert in the rules' order: {names}")
        for rule in rules:
            anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
            expect(anchor == rule["alert"].lower(), f"{rule['alert']}: runbook anchor #{anchor} is not its heading's")
            body = section.split(f"### {rule['alert']}\n", 1)[1].split("\n### ", 1)[0]
            for part in ("**Means:**", "**Check:**", "**Do:**"):
                expect(part in body, f"runbook {rule['alert']} lacks {part}")
        defaults = load_yaml(CHART / "values.yaml")["prometheusRule"]
        for key in ("backlogMaxAgeSeconds", "errorShareMargin", "errorShareMinMessages"):
            expect(f"`{key}`" in section or f"`prometheusRule.{key}`" in section, f"the section does not name prometheusRule.{key}")
        expect(f"({defaults['backlogMaxAgeSeconds']} s)" in section, "the table must give backlogMaxAgeSeconds' default")
        expect(f"({defaults['errorShareMargin']})" in section and f"({defaults['errorShareMinMessages']})" in section,
               "the table must give the error-share defaults")
        return f"{len(names)} alerts: table rows, severities and runbooks (Means/Check/Do) match the rules and their anchors"


def pkg_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


# --------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", type=Path, required=True, help="the redis-dsg binary to run")
    parser.add_argument("--update", action="store_true", help="regenerate deploy/, the chart's dashboard copy and README.md first")
    args = parser.parse_args()
    # A SIGTERM (CI ending the run) unwinds like Ctrl-C: every started
    # process is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.update:
        update_generated()

    report = Report()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dsg-packaging-") as tmp:
        checks = Checks(args.binary.resolve(), report, Path(tmp))
        checks.tool_versions()
        report.check("Dockerfile: hadolint", checks.dockerfile_hadolint)
        report.check("Dockerfile: stages, base images, entrypoint, user, labels", checks.dockerfile_structure)
        report.check("Dockerfile: the builder stage run outside Docker ships one stripped product binary", checks.dockerfile_build)
        report.check("chart: Chart.yaml appVersion = crate version", checks.chart_metadata)
        report.check("chart: every value commented, camelCase", checks.values_documented)
        report.check("chart: README.md is values.yaml's table (helm-docs), loaded by Helm; .helmignore", checks.chart_readme)
        report.check("chart: values.schema.json is strict and accepts the defaults", checks.schema_strict)
        report.check("chart: config.* covers every setting of the binary", checks.config_coverage)
        report.check("chart: bad values are refused with clear messages", checks.bad_values)
        report.check("chart: consumer.maxInFlightBytes explicit, or 40 % of the memory limit, or the binary's default", checks.max_in_flight_bytes)
        for set_name, values in value_sets().items():
            render: Render | None = None

            def do_render(set_name: str = set_name, values: dict[str, Any] = values) -> str:
                nonlocal render
                render = checks.render(set_name, values)
                return f"release {render.name}, namespace {render.namespace}: {len(render.docs)} documents"

            if not report.check(f"[{set_name}] helm render", do_render):
                continue
            assert render is not None
            report.check(f"[{set_name}] helm lint", lambda v=values, s=set_name: checks.lint(s, v))
            report.check(f"[{set_name}] kubernetes-validate --strict {' and '.join(KUBE_VERSIONS)}", lambda r=render: checks.kubernetes_validate(r))
            report.check(f"[{set_name}] Deployment: probes, security, env, config, grace period", lambda r=render: checks.deployment_static(r))
            report.check(f"[{set_name}] selectors and references between objects", lambda r=render: checks.wiring(r))
            report.check(f"[{set_name}] custom resources", lambda r=render: checks.custom_resources(r))
            report.check(f"[{set_name}] live: the binary with the pod's args, env and ConfigMap",
                         lambda s=set_name, r=render: checks.live(s, r, scrape=s == "defaults"))
        report.check("deploy/: equals a fresh render of the chart's defaults", checks.drift)
        report.check("deploy/base: kubectl kustomize", checks.kustomize)
        report.check("dashboard: panels cover the required topics; chart copy identical", checks.dashboard_topics)
        report.check("PromQL: dashboard and alerts parse; metrics exist in a live scrape", checks.promql)
        if shutil.which("promtool"):
            report.check("promtool: check rules and test rules", checks.promtool_rules)
        else:
            report.skip("promtool: check rules and test rules", "promtool is not installed (run as root to install Debian's prometheus package)")
        if shutil.which("prometheus") and shutil.which("promtool"):
            report.check("live Prometheus: 3 replicas scraped every second, dashboard, alerts, failover, Redis outage", checks.live_prometheus)
        else:
            report.skip("live Prometheus", "prometheus is not installed (run as root to install Debian's prometheus package)")
        report.check("README: 'Run on Kubernetes' matches the chart", checks.readme)
        report.check("README: alert table and runbooks match the rules", checks.alerts_readme)

    print(f"\npackaging checks took {time.monotonic() - started:.0f} s"
          + (f"; skipped: {', '.join(report.skipped)}" if report.skipped else ""))
    if report.failed:
        print("failed: " + "; ".join(report.failed))
    print(f"packaging: {report.passed} passed, {len(report.failed)} failed" + (f", {len(report.skipped)} skipped" if report.skipped else ""))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
