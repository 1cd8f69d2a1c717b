#!/usr/bin/env python3
"""Benchmark `privatize serve`: admission throughput and latency, the latency it adds to pod
creation through the real kube-apiserver, a burst for one new image, and its memory.

Usage: python3 bench/serve.py [--rounds N] [--duration S] [--pods N] [--burst N]
                              [--binary PATH] [--glibc-binary PATH | --no-glibc]

Runs `serve` against the local testbed (registries, moto, kube-apiserver, all on 127.0.0.1)
and measures it with h2load (Debian's nghttp2-client) over HTTP/1.1 and h2, each
/mutate/pods figure side by side with the same server's /healthz on the same TLS listener.
The subject, column `privatize`, is the binary the container image ships (static musl +
mimalloc, `scripts/build-image --print-binary`); a second serve of the glibc release build,
column `privatize-glibc`, runs next to it and gets the same load, in alternating order. The
goals are judged on the shipped binary; the shipped/glibc ratios are printed. Prints the
tables and writes the raw numbers to target/bench/serve.json. A benchmark, not a test:
nothing here asserts a timing. See bench/README.md.
"""

import argparse
import base64
import http.client
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from benchlib import BenchError, log, run_checked, read_env_file, base_env  # noqa: E402
from benchlib import GLIBC, SHIPPED, add_binary_args, describe_binaries, gap, resolve_binaries  # noqa: E402
ROOT = Path(__file__).resolve().parent.parent
MANAGED_BY = "app.kubernetes.io/managed-by=privatize"
SOURCE_ANNOTATION = "privatize.io/source"
CONNECTIONS = (1, 16, 64)
PROTOCOLS = ("h2", "http/1.1")
# Goals (issue 7 §6).
GOAL_RPS_RATIO = 0.7       # mutate req/s >= 0.7 x healthz req/s
GOAL_P99_64_MS = 10.0      # mutate p99 < 10 ms at 64 connections
GOAL_ADDED_P50_MS = 5.0    # added latency per pod creation through the apiserver, p50
GOAL_RSS_MIB = 40.0


def loopback(addr, what):
    host = addr.split("://", 1)[-1].rsplit(":", 1)[0]
    if host != "127.0.0.1":
        raise BenchError(f"refusing a non-loopback {what}: {addr}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_xs, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_xs:
        return None
    return sorted_xs[max(0, math.ceil(p / 100 * len(sorted_xs)) - 1)]


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return None if a is None or not b else a / b


def fmt(x, nd=2, unit=""):
    return "-" if x is None else f"{x:.{nd}f}{unit}"


def target_host_alias(target):
    """The target registry as `localhost:PORT` when localhost is only 127.0.0.1 (the testbed's
    certificate names both). serve's gate controller watches gated pods in every namespace and
    acts on those waiting for images on its own target host: under this name, it leaves the
    pods of other tests (which use 127.0.0.1:PORT) alone."""
    port = target.rsplit(":", 1)[1]
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo("localhost", int(port), proto=socket.IPPROTO_TCP)}
    except OSError:
        addrs = set()
    if addrs == {"127.0.0.1"}:
        return f"localhost:{port}"
    log(f"localhost resolves to {sorted(addrs)}, not only 127.0.0.1: using {target}; serve's gate "
        "controller may then act on other tests' gated pods")
    return target


GATE_ACTIONS = ("pod released", "pod reverted", "copy Job recreated")


def keep_log(raw_path, kept_path):
    """Copies serve's log without its two lines per admission (they are counted instead) and
    returns (lines, admission lines, lines of the gate acting on a pod)."""
    lines = admissions = 0
    gate = []
    with open(raw_path, errors="replace") as src, open(kept_path, "w") as dst:
        for line in src:
            lines += 1
            if " pod admission uid=" in line or " admission uid=" in line:
                admissions += 1
                continue
            if any(a in line for a in GATE_ACTIONS):
                gate.append(line.strip()[:400])
            dst.write(line)
    return lines, admissions, gate


# ------------------------------------------------------------------ kube-apiserver client
def parse_kubeconfig(path):
    """The server, CA and client certificate of a single-cluster kubeconfig (as
    testbed/kube/up writes it); the stdlib has no YAML, so only these flat keys are read."""
    keys = ("server", "certificate-authority-data", "certificate-authority",
            "client-certificate-data", "client-certificate", "client-key-data", "client-key")
    found = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^\s*([a-z-]+):\s*(\S+)\s*$", line)
        if m and m.group(1) in keys:
            if m.group(1) in found:
                raise BenchError(f"{path}: more than one {m.group(1)}; give a single-cluster kubeconfig")
            found[m.group(1)] = m.group(2).strip("'\"")

    def pem(name):
        if f"{name}-data" in found:
            return base64.b64decode(found[f"{name}-data"])
        if name in found:
            return (Path(path).parent / found[name]).read_bytes()
        raise BenchError(f"{path}: no {name}(-data): the bench needs a client-certificate user")

    if "server" not in found:
        raise BenchError(f"{path}: no server")
    return found["server"], pem("certificate-authority"), pem("client-certificate"), pem("client-key")


class Kube:
    """A keep-alive HTTPS/1.1 client of the apiserver, authenticated by the kubeconfig's
    client certificate (written to a private temporary directory for ssl)."""

    def __init__(self, kubeconfig, tmp):
        server, ca, cert, key = parse_kubeconfig(kubeconfig)
        loopback(server, "kube-apiserver")
        url = urllib.parse.urlsplit(server)
        self.host, self.port = url.hostname, url.port or 443
        (tmp / "kube-client.crt").write_bytes(cert)
        key_path = tmp / "kube-client.key"
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        self.ctx = ssl.create_default_context(cadata=ca.decode())
        self.ctx.load_cert_chain(tmp / "kube-client.crt", key_path)
        self.conn = None
        self.reconnects = 0

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, ok=(200, 201, 202, 404)):
        """(status, parsed JSON or None, seconds from send to the last byte). One retry on
        a dropped keep-alive connection; a status outside `ok` raises."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                                            timeout=30)
                    if attempt:
                        self.reconnects += 1
                t0 = time.perf_counter()
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                secs = time.perf_counter() - t0
                break
            except (http.client.HTTPException, OSError) as e:
                self.close()
                if attempt:
                    raise BenchError(f"kube-apiserver {method} {path}: {e}")
        obj = None
        if raw:
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = {"raw": raw.decode(errors="replace")[:500]}
        if resp.status not in ok:
            msg = obj.get("message") if isinstance(obj, dict) else None
            raise BenchError(f"kube-apiserver {method} {path}: HTTP {resp.status}: {msg or obj}")
        return resp.status, obj, secs

    def create_namespace(self, name):
        self.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": name}}, ok=(201,))

    def delete_namespace(self, name):
        """Deletes what the bench put in it, then the namespace itself. The testbed runs no
        controller-manager, so the bench also plays the namespace controller: it empties the
        namespace and clears its finalizer, or the namespace would stay Terminating."""
        base = f"/api/v1/namespaces/{name}"
        for path in (f"{base}/pods", f"/apis/batch/v1/namespaces/{name}/jobs?propagationPolicy=Background",
                     f"{base}/events", f"{base}/configmaps"):
            self.request("DELETE", path)
        status, _, _ = self.request("DELETE", base)
        if status == 404:
            return
        status, ns, _ = self.request("GET", base)
        if status == 200 and ns.get("spec", {}).get("finalizers"):
            ns["spec"]["finalizers"] = []
            self.request("PUT", f"{base}/finalize", ns, ok=(200, 201, 404, 409))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.request("GET", base)[0] == 404:
                return
            time.sleep(0.2)
        log(f"namespace {name} is still there after 15 s (left Terminating)")

    def jobs(self, namespace):
        sel = urllib.parse.quote(MANAGED_BY)
        _, obj, _ = self.request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs?labelSelector={sel}",
                                 ok=(200,))
        return obj.get("items", [])

    def pods(self, namespace):
        _, obj, _ = self.request("GET", f"/api/v1/namespaces/{namespace}/pods?limit=2000", ok=(200,))
        return obj.get("items", [])


# ------------------------------------------------------------------ serve
class Serve:
    """One `privatize serve` process, bound to 127.0.0.1 only; stderr goes to a log file."""

    def __init__(self, binary, env, tls_dir, log_path, log_level):
        self.https_port, self.http_port = free_port(), free_port()
        self.log_path = log_path
        self.argv = [binary, "--log-level", log_level, "serve",
                     "--listen-address", "127.0.0.1",
                     "--https-port", str(self.https_port), "--http-port", str(self.http_port),
                     "--tls-cert-path", str(tls_dir / "tls.crt"),
                     "--tls-key-path", str(tls_dir / "tls.key")]
        self.env = env
        self.ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
        self.proc = None

    def start(self, timeout=60):
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=logf, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.get_plain("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchError(f"serve was not ready within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n=4000):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - n))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def get_plain(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def post_review(self, body):
        """POSTs one AdmissionReview over verified TLS; returns (status, parsed body)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.https_port, context=self.ctx, timeout=30)
        try:
            conn.request("POST", "/mutate/pods", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, {"raw": raw.decode(errors="replace")[:500]}

    def metrics(self):
        """Every sample of /metrics as {'name{labels}': value}."""
        status, raw = self.get_plain("/metrics")
        if status != 200:
            raise BenchError(f"GET /metrics: HTTP {status}")
        out = {}
        for line in raw.decode().splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                try:
                    out[series] = float(value)
                except ValueError:
                    pass
        return out

    def memory(self):
        """VmRSS and VmHWM of the process, in MiB."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                fields[k] = round(int(v.split()[0]) / 1024, 1)
        return fields

    def cpu_seconds(self):
        """User + system CPU time used so far (from /proc/PID/stat)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        f = stat.rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log("serve did not stop within 15 s of SIGTERM; killing it")
            self.proc.kill()
            self.proc.wait(timeout=10)


def metric_delta(before, after, prefix):
    """{series: after - before} for the series starting with prefix that changed."""
    out = {}
    for k, v in after.items():
        if k.startswith(prefix) and not k.startswith(prefix + "_bucket"):
            d = v - before.get(k, 0.0)
            if d:
                out[k] = d
    return out


def sum_series(delta, name, **labels):
    total = 0.0
    for k, v in delta.items():
        if k.split("{", 1)[0] == name and all(f'{lk}="{lv}"' in k for lk, lv in labels.items()):
            total += v
    return total


# ------------------------------------------------------------------ h2load
def h2load(url, *, proto, conns, tmp, body=None, duration=None, warmup=None, requests=None,
           timeout=120):
    """Runs h2load with `conns` keep-alive connections, one request in flight on each.
    Returns its figures, and p50/p99 from its per-request log."""
    logf = tmp / "h2load.log"
    logf.unlink(missing_ok=True)
    argv = ["h2load", "-c", str(conns), "-t", "1", "-m", "1", f"--log-file={logf}"]
    if proto == "http/1.1":
        argv.append("--h1")
    if duration:
        argv += ["-D", str(duration), f"--warm-up-time={warmup}"]
    else:
        argv += ["-n", str(requests)]
    if body:
        argv += ["-d", str(body), "-H", "content-type: application/json"]
    argv.append(url)
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout, env=base_env())
    except subprocess.TimeoutExpired:
        raise BenchError(f"h2load timed out after {timeout} s: {' '.join(argv)}")
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        raise BenchError(f"h2load exit {p.returncode}: {' '.join(argv)}\n{out[-2000:]}"
                         f"{p.stderr.decode(errors='replace')[-2000:]}")
    m_fin = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    m_req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    m_st = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    m_proto = re.search(r"Application protocol: (\S+)", out)
    if not (m_fin and m_req and m_st):
        raise BenchError(f"cannot read h2load's output:\n{out[-2000:]}")
    got_proto = m_proto.group(1) if m_proto else None
    if got_proto != proto:
        raise BenchError(f"h2load spoke {got_proto}, expected {proto}:\n{out[-2000:]}")
    secs = float(m_fin.group(1)) / (1000 if m_fin.group(2) == "ms" else 1)
    lat = []
    for line in logf.read_text().splitlines() if logf.exists() else []:
        f = line.split("\t")
        if len(f) >= 3 and f[1].startswith("2"):
            lat.append(int(f[2]) / 1000)  # ms
    lat.sort()
    r = [int(x) for x in m_req.groups()]
    return {
        "proto": proto, "connections": conns, "url_path": urllib.parse.urlsplit(url).path,
        "seconds": secs, "req_per_s": float(m_fin.group(3)),
        "requests": dict(zip(("total", "started", "done", "succeeded", "failed", "errored", "timeout"), r)),
        "status": dict(zip(("2xx", "3xx", "4xx", "5xx"), (int(x) for x in m_st.groups()))),
        "latency_samples": len(lat),
        "p50_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90), "p99_ms": percentile(lat, 99),
        "max_ms": lat[-1] if lat else None,
    }


# ------------------------------------------------------------------ reviews and pods
def review(uid, namespace, image, name):
    """A v1 AdmissionReview of a Pod CREATE, as the apiserver sends it."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
           "spec": {"containers": [{"name": "app", "image": image}]}}
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name, "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ["system:serviceaccounts"]},
            "object": pod, "oldObject": None, "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def decode_answer(status, answer):
    """(allowed, patch ops, warnings) of an AdmissionReview answer; raises if it is none."""
    resp = answer.get("response") if isinstance(answer, dict) else None
    if status != 200 or not isinstance(resp, dict):
        raise BenchError(f"/mutate/pods answered HTTP {status}: {json.dumps(answer)[:500]}")
    patch = json.loads(base64.b64decode(resp["patch"])) if resp.get("patch") else []
    return resp.get("allowed"), patch, resp.get("warnings") or []


def pod(name, image):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench"}},
            "spec": {"containers": [{"name": "app", "image": image}]}}


def webhook_configuration(name, namespace, url, ca_pem):
    """The pod webhook as `privatize install` registers it (rules, versions, reinvocation,
    timeout), by URL and scoped to one namespace; failurePolicy Fail so an error shows."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "pods.privatize.io",
            "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "admissionReviewVersions": ["v1", "v1beta1"],
            "sideEffects": "NoneOnDryRun", "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded", "matchPolicy": "Equivalent", "timeoutSeconds": 10,
        }],
    }


# ------------------------------------------------------------------ phases
def check_mirrored_answer(serve, body, target_prefix):
    """One review of the mirrored image: must be allowed with its image rewritten to the
    target and no scheduling gate (the presence check said present)."""
    allowed, patch, warnings = decode_answer(*serve.post_review(body))
    images = [op.get("value") for op in patch if op.get("path", "").endswith("/image")]
    gated = [op for op in patch if "schedulingGates" in json.dumps(op)]
    if not allowed or not images or not all(str(i).startswith(target_prefix) for i in images) \
            or gated or warnings:
        raise BenchError("the mirrored image's review was not rewritten straight to the target "
                         f"(is the image mirrored, is this the real pod webhook?): allowed={allowed} "
                         f"patch={json.dumps(patch)[:600]} warnings={warnings}")
    return images[0]


class Subject:
    """One binary under test: its serve, its copy-Job namespace and its part of the results
    (result["subjects"][name]: memory, throughput, burst, apiserver, ...)."""

    def __init__(self, name, binary, tag):
        self.name, self.binary, self.tag = name, binary, tag
        self.serve = None
        self.jobs_ns = None
        self.result = {"binary": binary, "memory": {}, "throughput": {"runs": []}}


def phase_throughput(subjects, args, tmp, body_files):
    """Every cell for every subject; the subjects' order flips from cell to cell and from round
    to round, the order of /healthz and /mutate/pods as well (independently). body_files:
    {subject name: the review file of its /mutate/pods}."""
    for rnd in range(args.rounds):
        for pi, proto in enumerate(PROTOCOLS):
            for ci, conns in enumerate(CONNECTIONS):
                order = subjects if (rnd + ci) % 2 == 0 else subjects[::-1]
                for pos, sub in enumerate(order):
                    cell_throughput(sub, args, tmp, body_files[sub.name], rnd, pi, ci, proto, conns, pos)


def cell_throughput(sub, args, tmp, body_file, rnd, pi, ci, proto, conns, pos):
    """One throughput cell of one subject: /healthz and /mutate/pods, one h2load run each."""
    serve = sub.serve
    base = f"https://127.0.0.1:{serve.https_port}"
    paths = ["/healthz", "/mutate/pods"]
    if (rnd + pi + ci) % 2:
        paths.reverse()
    for path in paths:
        before_m, cpu0 = serve.metrics(), serve.cpu_seconds()
        r = h2load(base + path, proto=proto, conns=conns, tmp=tmp,
                   body=body_file if path == "/mutate/pods" else None,
                   duration=args.duration, warmup=args.warmup,
                   timeout=args.duration + args.warmup + 60)
        cpu = serve.cpu_seconds() - cpu0
        delta = metric_delta(before_m, serve.metrics(), "privatize_admissions_total")
        r.update({"round": rnd, "position": pos, "serve_cpu_s": round(cpu, 3), "admissions": delta})
        if path == "/mutate/pods":
            # h2load closes its connections with requests still in flight when the
            # time is up: serve counts those as invalid (body cut off), at most one
            # per connection. Anything else but `patched` stops the run.
            cut = sum_series(delta, "privatize_admissions_total", outcome="invalid")
            r["cut_off_at_end"] = int(cut)
            other = {k: v for k, v in delta.items()
                     if 'outcome="patched"' not in k and 'outcome="invalid"' not in k}
            if other or cut > conns or r["status"]["2xx"] != r["requests"]["done"]:
                raise BenchError(f"{sub.name} {proto} c={conns}: not every admission was patched: "
                                 f"{delta}, h2load {r['status']}")
        sub.result["throughput"]["runs"].append(r)
        log(f"round {rnd} {sub.name:<15} {proto:<8} c={conns:<2} {path:<12} {r['req_per_s']:9.0f} req/s  "
            f"p50 {fmt(r['p50_ms'])} ms  p99 {fmt(r['p99_ms'])} ms  serve cpu {cpu:.2f} s")


def summarize_throughput(result):
    cells = result["throughput"]["summary"] = []
    runs = result["throughput"]["runs"]
    for proto in PROTOCOLS:
        for conns in CONNECTIONS:
            cell = {"proto": proto, "connections": conns}
            for path, key in (("/healthz", "healthz"), ("/mutate/pods", "mutate")):
                rs = [r for r in runs if r["proto"] == proto and r["connections"] == conns
                      and r["url_path"] == path]
                cell[key] = {
                    "req_per_s": median([r["req_per_s"] for r in rs]),
                    "p50_ms": median([r["p50_ms"] for r in rs]),
                    "p99_ms": median([r["p99_ms"] for r in rs]),
                    "serve_cpu_us_per_req": median([r["serve_cpu_s"] * 1e6 / r["requests"]["done"]
                                                    for r in rs if r["requests"]["done"]]),
                }
            h, m = cell["healthz"], cell["mutate"]
            cell["ratio"] = {"req_per_s": ratio(m["req_per_s"], h["req_per_s"]),
                             "p50": ratio(m["p50_ms"], h["p50_ms"]),
                             "p99": ratio(m["p99_ms"], h["p99_ms"])}
            cells.append(cell)


def phase_apiserver(kube, subjects, args, sess, image, target_prefix, ca_pem, cleanup):
    """One namespace per subject with that subject's serve as its pod webhook, and one
    namespace without a webhook; pods are created in each, one at a time, interleaved (the
    order rotates from pod to pod). Each subject's added latency is against the shared
    namespace without a webhook."""
    plain_ns = f"bench-serve-plain-{sess}"
    hooks = {}  # namespace -> subject
    for sub in subjects:
        hook_ns = f"bench-serve-hook-{sub.tag}-{sess}"
        hooks[hook_ns] = sub
        kube.create_namespace(hook_ns)
        cleanup["namespaces"].append(hook_ns)
        name = f"bench-serve-{sub.tag}-{sess}"
        url = f"https://127.0.0.1:{sub.serve.https_port}/mutate/pods"
        kube.request("POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                     webhook_configuration(name, hook_ns, url, ca_pem), ok=(201,))
        cleanup["webhooks"].append(name)
    kube.create_namespace(plain_ns)
    cleanup["namespaces"].append(plain_ns)
    # The apiserver picks the configurations up from its informer: wait until a dry-run
    # create comes back rewritten (bounded). Only that subject's webhook selects the namespace.
    for hook_ns, sub in hooks.items():
        deadline = time.monotonic() + 30
        while True:
            _, obj, _ = kube.request("POST", f"/api/v1/namespaces/{hook_ns}/pods?dryRun=All",
                                     pod("probe", image), ok=(201,))
            if obj["spec"]["containers"][0]["image"].startswith(target_prefix):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"the apiserver did not call {sub.name}'s webhook within 30 s of "
                                 "registering it")
            time.sleep(0.2)
    namespaces = list(hooks) + [plain_ns]
    samples = {ns: [] for ns in namespaces}
    errors = []
    total = args.pods + args.pod_warmup
    for i in range(total):
        k = i % len(namespaces)
        for ns in namespaces[k:] + namespaces[:k]:
            status, obj, secs = kube.request("POST", f"/api/v1/namespaces/{ns}/pods",
                                             pod(f"p-{i:04d}", image), ok=range(100, 600))
            if status != 201:
                errors.append({"namespace": ns, "pod": i, "status": status,
                               "message": (obj or {}).get("message")})
                if len(errors) >= 10:
                    raise BenchError(f"10 pod creations failed; the first: {errors[0]}")
            elif i >= args.pod_warmup:
                samples[ns].append(secs * 1000)

    def stats(xs):
        xs = sorted(xs)
        return {"p50_ms": percentile(xs, 50), "p90_ms": percentile(xs, 90),
                "p99_ms": percentile(xs, 99), "mean_ms": statistics.fmean(xs) if xs else None}

    untouched = sum(1 for p in kube.pods(plain_ns) if p["spec"]["containers"][0]["image"] == image)
    wo = stats(samples[plain_ns])
    problems = []
    for hook_ns, sub in hooks.items():
        rewritten = sum(1 for p in kube.pods(hook_ns)
                        if p["spec"]["containers"][0]["image"].startswith(target_prefix))
        w = stats(samples[hook_ns])
        sub.result["apiserver"] = {
            "pods_each": args.pods, "warmup_each": args.pod_warmup, "errors": errors,
            "hook_namespace": hook_ns, "plain_namespace": plain_ns,
            "hook_namespace_pods_rewritten": rewritten, "plain_namespace_pods_untouched": untouched,
            "kube_reconnects": kube.reconnects,
            "create_ms": {"with_webhook": samples[hook_ns], "without": samples[plain_ns]},
            "with_webhook": w, "without": wo,
            "added": {k: (w[k] - wo[k]) if w[k] is not None and wo[k] is not None else None
                      for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")},
        }
        log(f"apiserver: {args.pods} pods each; with {sub.name}'s webhook p50 {fmt(w['p50_ms'])} ms "
            f"p99 {fmt(w['p99_ms'])} ms; without p50 {fmt(wo['p50_ms'])} ms p99 {fmt(wo['p99_ms'])} ms")
        if rewritten != total:
            problems.append(f"{rewritten} of {total} pods rewritten in {hook_ns}")
    if untouched != total:
        problems.append(f"{untouched} of {total} pods untouched in {plain_ns}")
    if problems:
        raise BenchError("expected every pod with a webhook rewritten and every other one "
                         "untouched: " + "; ".join(problems))


def phase_burst(kube, serve, args, tmp, body_file, jobs_ns, source, result):
    before = serve.metrics()
    r = h2load(f"https://127.0.0.1:{serve.https_port}/mutate/pods", proto="h2",
               conns=args.burst_connections, tmp=tmp, body=body_file, requests=args.burst,
               timeout=120)
    # Count the Jobs once their number stops changing (bounded).
    deadline, last, stable_since = time.monotonic() + 20, None, time.monotonic()
    while time.monotonic() < deadline:
        jobs = kube.jobs(jobs_ns)
        if len(jobs) != last:
            last, stable_since = len(jobs), time.monotonic()
        elif time.monotonic() - stable_since > 2:
            break
        time.sleep(0.25)
    after = serve.metrics()
    mine = [j for j in jobs if j["metadata"].get("annotations", {}).get(SOURCE_ANNOTATION) == source]
    delta = {}
    for fam in ("privatize_admissions_total", "privatize_images", "privatize_copy_jobs",
                "privatize_pods", "privatize_presence_checks"):
        delta.update(metric_delta(before, after, fam))
    admitted = sum_series(delta, "privatize_admissions_total", path="/mutate/pods")
    patched = sum_series(delta, "privatize_admissions_total", path="/mutate/pods", outcome="patched")
    unchanged = sum(v for k, v in delta.items() if "allowed_unchanged" in k)
    errors = (r["requests"]["total"] - r["status"]["2xx"]) + (admitted - patched) + unchanged
    result["burst"] = {
        "via": "h2load straight to serve's /mutate/pods (h2), the same review every time",
        "h2load": r, "copy_jobs_for_image": len(mine), "copy_jobs_in_namespace": len(jobs),
        "job_names": [j["metadata"]["name"] for j in jobs],
        "admissions_counted": admitted, "admissions_patched": patched,
        "allowed_unchanged": unchanged, "admission_errors": int(errors), "metrics_delta": delta,
    }
    log(f"burst: {r['requests']['done']} admissions in {r['seconds']:.2f} s, {len(mine)} copy Job(s) "
        f"for the image ({len(jobs)} in {jobs_ns}), {int(errors)} admission error(s)")


# ------------------------------------------------------------------ report
MEMORY_POINTS = (("idle", "VmRSS"), ("after_burst", "VmRSS"), ("after_burst", "VmHWM"),
                 ("after_throughput", "VmRSS"), ("end", "VmRSS"), ("end", "VmHWM"))


def print_throughput(r, args):
    cells = r.get("throughput", {}).get("summary")
    if not cells:
        return
    head = (f"{'proto':<9}{'conns':>5} {'healthz/s':>10}{'mutate/s':>10}{'ratio':>7}  "
            f"{'hz p50':>7}{'mu p50':>7}{'p50 x':>7}{'hz p99':>7}{'mu p99':>7}{'p99 x':>7}  {'hz cpu':>7}{'mu cpu':>7}")
    print(head + "\n" + "-" * len(head))
    for c in cells:
        h, m, q = c["healthz"], c["mutate"], c["ratio"]
        print(f"{c['proto']:<9}{c['connections']:>5} {fmt(h['req_per_s'], 0):>10}{fmt(m['req_per_s'], 0):>10}"
              f"{fmt(q['req_per_s']):>7}  {fmt(h['p50_ms']):>7}{fmt(m['p50_ms']):>7}{fmt(q['p50']):>7}{fmt(h['p99_ms']):>7}"
              f"{fmt(m['p99_ms']):>7}{fmt(q['p99']):>7}  {fmt(h['serve_cpu_us_per_req'], 0):>7}"
              f"{fmt(m['serve_cpu_us_per_req'], 0):>7}")
    print()


def goal_rows(r):
    """(figure, value text, goal text, met or None, the number) of one subject's results."""
    rows = []
    cells = r.get("throughput", {}).get("summary") or []
    for c in cells:
        q = c["ratio"]["req_per_s"]
        rows.append((f"{c['proto']} c={c['connections']} mutate/healthz req/s", f"{fmt(q)}x",
                     f">= {GOAL_RPS_RATIO}x", q is not None and q >= GOAL_RPS_RATIO, q))
    for c in cells:
        if c["connections"] == 64:
            p = c["mutate"]["p99_ms"]
            rows.append((f"{c['proto']} c=64 mutate p99", fmt(p, 2, " ms"), f"< {GOAL_P99_64_MS:g} ms",
                         p is not None and p < GOAL_P99_64_MS, p))
    a = r.get("apiserver")
    if a and "added" in a:
        p50, p99 = a["added"]["p50_ms"], a["added"]["p99_ms"]
        rows.append(("apiserver: added per pod create, p50", fmt(p50, 2, " ms"),
                     f"<= {GOAL_ADDED_P50_MS:g} ms", p50 is not None and p50 <= GOAL_ADDED_P50_MS, p50))
        rows.append(("apiserver: added per pod create, p99", fmt(p99, 2, " ms"), "-", None, p99))
    b = r.get("burst")
    if b:
        rows.append(("burst: copy Jobs for the new image", str(b["copy_jobs_for_image"]), "exactly 1",
                     b["copy_jobs_for_image"] == 1, b["copy_jobs_for_image"]))
        rows.append(("burst: admission errors", str(b["admission_errors"]), "0", b["admission_errors"] == 0,
                     b["admission_errors"]))
        rows.append(("burst: duration", fmt(b["h2load"]["seconds"], 2, " s"), "-", None,
                     b["h2load"]["seconds"]))
    mem = r.get("memory", {})
    for label, key, field in (("idle VmRSS", "idle", "VmRSS"), ("after burst VmRSS", "after_burst", "VmRSS"),
                              ("after burst VmHWM", "after_burst", "VmHWM"), ("end VmHWM", "end", "VmHWM")):
        v = mem.get(key, {}).get(field)
        if v is not None:
            rows.append((f"memory: {label}", f"{v:.1f} MiB", f"< {GOAL_RSS_MIB:g} MiB", v < GOAL_RSS_MIB, v))
    return rows


def compare(shipped, glibc):
    """The shipped/glibc ratios (result["shipped_vs_glibc"])."""
    out = {"throughput": [], "memory": {}}
    cells_g = {(c["proto"], c["connections"]): c for c in glibc.get("throughput", {}).get("summary") or []}
    for c in shipped.get("throughput", {}).get("summary") or []:
        g = cells_g.get((c["proto"], c["connections"]))
        if not g:
            continue
        row = {"proto": c["proto"], "connections": c["connections"]}
        for key in ("healthz", "mutate"):
            for field in ("req_per_s", "p50_ms", "p99_ms", "serve_cpu_us_per_req"):
                row[f"{key}_{field}"] = {SHIPPED: c[key][field], GLIBC: g[key][field],
                                         "ratio": gap(c[key][field], g[key][field])}
        out["throughput"].append(row)
    for key, field in MEMORY_POINTS:
        a, b = shipped["memory"].get(key, {}).get(field), glibc["memory"].get(key, {}).get(field)
        if a is not None and b is not None:
            out["memory"][f"{key}_{field}"] = {SHIPPED: a, GLIBC: b, "ratio": gap(a, b),
                                               "difference_mib": round(a - b, 1)}
    for key in ("p50_ms", "p99_ms"):
        if "apiserver" in shipped and "apiserver" in glibc:
            a, b = shipped["apiserver"]["added"][key], glibc["apiserver"]["added"][key]
            out.setdefault("apiserver_added", {})[key] = {SHIPPED: a, GLIBC: b}
    if "burst" in shipped and "burst" in glibc:
        a, b = shipped["burst"]["h2load"]["seconds"], glibc["burst"]["h2load"]["seconds"]
        out["burst_s"] = {SHIPPED: a, GLIBC: b, "ratio": gap(a, b)}
    return out


def print_comparison(cmp):
    rows = cmp["throughput"]
    if rows:
        print(f"shipped vs glibc: {SHIPPED} / {GLIBC} (x = the ratio; req/s higher is better, "
              f"latency and CPU lower)")
        head = (f"{'proto':<9}{'conns':>5}  {'mu/s':>7}{'glibc':>7}{'x':>6}  {'mu p50':>7}{'glibc':>7}{'x':>6}  "
                f"{'mu p99':>7}{'glibc':>7}{'x':>6}  {'mu cpu':>7}{'glibc':>7}{'x':>6}  {'hz/s':>7}{'glibc':>7}{'x':>6}")
        print(head + "\n" + "-" * len(head))
        for r in rows:
            line = f"{r['proto']:<9}{r['connections']:>5}"
            for key, nd in (("mutate_req_per_s", 0), ("mutate_p50_ms", 2), ("mutate_p99_ms", 2),
                            ("mutate_serve_cpu_us_per_req", 0), ("healthz_req_per_s", 0)):
                v = r[key]
                line += f"  {fmt(v[SHIPPED], nd):>7}{fmt(v[GLIBC], nd):>7}{fmt(v['ratio']):>6}"
            print(line)
        print()
    if cmp["memory"]:
        print(f"serve's memory (MiB)    {SHIPPED:>10} {GLIBC:>16}  {'x':>5}  {'+MiB':>6}")
        for key, v in cmp["memory"].items():
            print(f"  {key.replace('_Vm', ' Vm'):<22}{v[SHIPPED]:>10.1f} {v[GLIBC]:>16.1f}  "
                  f"{fmt(v['ratio']):>5}  {v['difference_mib']:>+6.1f}")
        print()


def report(result, args, subjects):
    load = result["host"]["loadavg_start"][0], (result.get("loadavg_end") or [None])[0]
    print(f"\nserve benchmark: {result.get('version')}, {os.cpu_count()} cores, load average "
          f"{fmt(load[0])} at the start and {fmt(load[1])} at the end")
    for name, facts in result["binaries"].items():
        print(f"  {name}: {facts['path']} ({'static' if facts.get('static') else 'dynamic'}, "
              f"{facts['bytes'] / 2**20:.1f} MiB, built {facts['mtime']})")
    print()
    if any(sub.result.get("throughput", {}).get("summary") for sub in subjects):
        print(f"h2load, one thread, one request in flight per connection; medians of {args.rounds} "
              f"round(s) of {args.duration} s each after {args.warmup} s of warm-up"
              + (", the two serves in alternating order" if len(subjects) > 1 else ""))
        print("(hz = GET /healthz, mu = POST /mutate/pods; latencies in ms; ratio and x = mutate/healthz;\n"
              " cpu = serve's user+system CPU per request, in microseconds)\n")
        for sub in subjects:
            print(f"{sub.name}:")
            print_throughput(sub.result, args)
    for sub in subjects:
        a = sub.result.get("apiserver")
        if a and "added" in a:
            print(f"pod creation through the apiserver, {sub.name} ({a['pods_each']} each, interleaved, ms): "
                  f"with webhook p50 {fmt(a['with_webhook']['p50_ms'])} p99 {fmt(a['with_webhook']['p99_ms'])}; "
                  f"without p50 {fmt(a['without']['p50_ms'])} p99 {fmt(a['without']['p99_ms'])}")
    for sub in subjects:
        b = sub.result.get("burst")
        if b:
            r = b["h2load"]
            print(f"burst, {sub.name}: {r['requests']['done']} admissions of one new image in "
                  f"{r['seconds']:.2f} s ({b['via']}, {args.burst_connections} connections)")
            if b["copy_jobs_in_namespace"] != b["copy_jobs_for_image"]:
                print(f"  note: {b['copy_jobs_in_namespace']} managed Jobs in the copy-Job namespace, "
                      f"{b['copy_jobs_for_image']} for the burst's image")
            gated = sum_series(b["metrics_delta"], "privatize_pods_gated_total")
            if b["copy_jobs_for_image"] == 0 and gated:
                print(f"  note: {int(gated)} admissions gated, no copy Job: serve starts copies for "
                      "pods that exist (its gate controller), and the burst's reviews create none")
    print()
    if len(subjects) > 1:
        result["shipped_vs_glibc"] = compare(subjects[0].result, subjects[1].result)
        print_comparison(result["shipped_vs_glibc"])

    rows = goal_rows(subjects[0].result)
    other = {r[0]: r for r in goal_rows(subjects[1].result)} if len(subjects) > 1 else {}
    w = max(len(r[0]) for r in rows) if rows else 10
    print(f"goals, judged on {SHIPPED} (the shipped binary)"
          + (f"; {GLIBC} for reference" if other else ""))
    head = (f"{'figure':<{w}}  {'value':>10}  {'goal':<11} {'met':<8}" + (f"{GLIBC:>16}" if other else "")).rstrip()
    print(head + "\n" + "-" * len(head))
    for fig, val, goal, met, _ in rows:
        g = other.get(fig)
        print((f"{fig:<{w}}  {val:>10}  {goal:<11} {'-' if met is None else ('met' if met else 'NOT MET'):<8}"
               + (f"{g[1] if g else '-':>16}" if other else "")).rstrip())
    result["goals"] = [{"figure": f, "value": v, "goal": g, "met": m,
                        **({f"{GLIBC}_value": other[f][1], f"{GLIBC}_met": other[f][3]} if f in other else {})}
                       for f, v, g, m, _ in rows]


# ------------------------------------------------------------------ main
def on_sigterm(signum, frame):
    """SIGTERM ends the run like Ctrl-C, so the cleanup still runs."""
    raise KeyboardInterrupt()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every throughput cell (default 3)")
    ap.add_argument("--duration", type=int, default=3, help="measured seconds per h2load run (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up seconds per h2load run (default 1)")
    ap.add_argument("--pods", type=int, default=300, help="pods created with and without the webhook (default 300)")
    ap.add_argument("--pod-warmup", type=int, default=10, help="unmeasured pods created first (default 10)")
    ap.add_argument("--burst", type=int, default=1000, help="admissions in the burst (default 1000)")
    ap.add_argument("--burst-connections", type=int, default=64, help="h2 connections of the burst (default 64)")
    ap.add_argument("--phases", default="throughput,apiserver,burst",
                    help="comma-separated subset of throughput, apiserver, burst (memory is always read)")
    ap.add_argument("--serve-log-level", default="info", help="--log-level of serve (default info)")
    ap.add_argument("--no-setup", action="store_true",
                    help="skip testbed/up, testbed/kube/up and the builds: use the binaries as they "
                         "are, and stop if one is missing")
    add_binary_args(ap)
    ap.add_argument("--json", default=str(ROOT / "target" / "bench" / "serve.json"),
                    help="where to write the raw numbers (default target/bench/serve.json)")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 60 or not 0 <= args.warmup <= 30:
        ap.error("--rounds must be 1..20, --duration 1..60, --warmup 0..30")
    if not 1 <= args.pods <= 2000 or not 0 <= args.pod_warmup <= 100:
        ap.error("--pods must be 1..2000, --pod-warmup 0..100")
    if not 1 <= args.burst <= 20000 or not 1 <= args.burst_connections <= min(256, args.burst):
        ap.error("--burst must be 1..20000, --burst-connections 1..256 and at most --burst")
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    for p in phases:
        if p not in ("throughput", "apiserver", "burst"):
            ap.error(f"unknown phase {p!r}")
    if not shutil.which("h2load"):
        sys.exit("bench: h2load not found: apt-get install -y nghttp2-client")

    result = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"nproc": os.cpu_count(), "machine": platform.machine(), "kernel": platform.release(),
                 "loadavg_start": os.getloadavg()},
        "settings": vars(args), "setup": {}, "subjects": {},
    }
    json_path = Path(args.json)
    sess = secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    cleanup = {"namespaces": [], "webhooks": []}
    kube = None
    subjects = []
    signal.signal(signal.SIGTERM, on_sigterm)
    code = 0
    try:
        env = base_env()
        if not args.no_setup:
            for argv, what, t in (([str(ROOT / "testbed" / "up")], "testbed/up", 1800),
                                  ([str(ROOT / "testbed" / "kube" / "up")], "testbed/kube/up", 1800)):
                log(what)
                t0 = time.perf_counter()
                run_checked(argv, timeout=t, env=env, what=what)
                result["setup"][what] = round(time.perf_counter() - t0, 1)
        binaries = resolve_binaries(args, result["setup"])
        result["binaries"] = describe_binaries(binaries)
        subjects = [Subject(name, path, "musl" if name == SHIPPED else "glibc") for name, path in binaries]
        state_dir = Path(os.environ.get("PRIVATIZE_TESTBED_DIR", ROOT / "target" / "testbed"))
        tenv = read_env_file(state_dir / "env")
        images = json.loads(Path(tenv["IMAGES_JSON"]).read_text())
        for addr, what in ((tenv["SOURCE_REGISTRY"], "source"), (tenv["TARGET_REGISTRY"], "target"),
                           (tenv["MOTO_ENDPOINT"], "moto")):
            loopback(addr, what)
        kubeconfig = Path(os.environ.get("PRIVATIZE_KUBECONFIG", ROOT / "target" / "kube" / "kubeconfig"))
        kube = Kube(kubeconfig, tmp)
        binary = subjects[0].binary  # the shipped one mirrors the image and makes the certificate
        result["version"] = result["binaries"][SHIPPED]["version"]
        result["h2load"] = subprocess.run(["h2load", "--version"], capture_output=True,
                                          timeout=30).stdout.decode().strip()

        # Each serve's namespace: its copy Jobs, and the namespace of the reviews sent straight
        # to it, with the `privatize-ca` ConfigMap serve checks at start (the testbed's CA).
        # Both serves use the same target repository (the image is mirrored once).
        for sub in subjects:
            sub.jobs_ns = f"bench-serve-{sub.tag}-{sess}"
            kube.create_namespace(sub.jobs_ns)
            cleanup["namespaces"].append(sub.jobs_ns)
            kube.request("POST", f"/api/v1/namespaces/{sub.jobs_ns}/configmaps", {
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "privatize-ca"},
                "data": {"ca.pem": Path(tenv["TARGET_CA_FILE"]).read_text()}}, ok=(201,))
        prefix = f"bench/serve-{sess}"
        target_host = target_host_alias(tenv["TARGET_REGISTRY"])
        result["target_host"] = target_host
        target_registry = f"{target_host}/{prefix}"
        mirrored, fresh = images["tiny"]["reference"], images["oci-single"]["reference"]

        penv = dict(env)
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                  "PRIVATIZE_LOG", "PRIVATIZE_JOBS", "DOCKER_CONFIG", "POD_NAME", "POD_NAMESPACE"):
            penv.pop(k, None)
        penv.update({
            "HOME": str(tmp), "KUBECONFIG": str(kubeconfig), "PRIVATIZE_PROGRESS": "never",
            "AWS_ENDPOINT_URL": tenv["MOTO_ENDPOINT"], "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": tenv["AWS_REGION"], "AWS_MAX_ATTEMPTS": "1",
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "PRIVATIZE_TARGET_KIND": "ecr", "ECR_REGISTRY": target_registry,
            "PRIVATIZE_CA_FILE": tenv["TARGET_CA_FILE"], "PRIVATIZE_PLAIN_HTTP": tenv["SOURCE_REGISTRY"],
        })
        log(f"mirroring {mirrored} to {target_registry}")
        run_checked([binary, "sync-image", "--to", target_registry, mirrored], timeout=300, env=penv,
                    what="privatize sync-image")
        tls_dir = tmp / "tls"
        run_checked([binary, "gen-certs", "--out-dir", str(tls_dir), "--san", "127.0.0.1"], timeout=60,
                    env=penv, what="privatize gen-certs")

        for sub in subjects:
            result["subjects"][sub.name] = sub.result
            senv = dict(penv)
            senv.update({
                # The testbed's registries live on 127.0.0.1, which the default exclude list names.
                "PRIVATIZE_EXCLUDE": "example.invalid", "PRIVATIZE_EXCLUDE_NAMESPACES": "kube-system",
                "COPY_JOB_NAMESPACE": sub.jobs_ns,
                "COPY_JOB_IMAGE": f"{tenv['SOURCE_REGISTRY']}/privatize/privatize:bench",
                "PRIVATIZE_SHUTDOWN_DELAY": "0s",
            })
            sub.serve = Serve(sub.binary, senv, tls_dir, tmp / f"serve-{sub.tag}.log", args.serve_log_level)
            t0 = time.perf_counter()
            sub.serve.start()
            sub.result["serve_ready_s"] = round(time.perf_counter() - t0, 2)
            log(f"{sub.name}: serve ready (pid {sub.serve.proc.pid}, https :{sub.serve.https_port}, "
                f"http :{sub.serve.http_port})")

        result["images"] = {"mirrored": mirrored, "burst": fresh, "target_registry": target_registry}
        for sub in subjects:
            # The reviews name the subject's own namespace (its copy Jobs go there).
            mirrored_body = json.dumps(review("bench-mirrored", sub.jobs_ns, mirrored, "mirrored")).encode()
            fresh_body = json.dumps(review("bench-burst", sub.jobs_ns, fresh, "burst")).encode()
            (tmp / f"mirrored-{sub.tag}.json").write_bytes(mirrored_body)
            (tmp / f"burst-{sub.tag}.json").write_bytes(fresh_body)
            result["review_bytes"] = {"mirrored": len(mirrored_body), "burst": len(fresh_body)}

        time.sleep(2)
        for sub in subjects:
            sub.result["memory"]["idle"] = sub.serve.memory()
            log(f"{sub.name}: memory idle: {sub.result['memory']['idle']}")
        for sub in subjects:
            result["images"]["mirrored_target"] = check_mirrored_answer(
                sub.serve, (tmp / f"mirrored-{sub.tag}.json").read_bytes(), target_registry + "/")

        if "burst" in phases:
            for sub in subjects:
                phase_burst(kube, sub.serve, args, tmp, tmp / f"burst-{sub.tag}.json", sub.jobs_ns,
                            fresh, sub.result)
                sub.result["memory"]["after_burst"] = sub.serve.memory()
                log(f"{sub.name}: memory after burst: {sub.result['memory']['after_burst']}")
        if "throughput" in phases:
            phase_throughput(subjects, args, tmp,
                             {sub.name: tmp / f"mirrored-{sub.tag}.json" for sub in subjects})
            for sub in subjects:
                summarize_throughput(sub.result)
                sub.result["memory"]["after_throughput"] = sub.serve.memory()
        if "apiserver" in phases:
            phase_apiserver(kube, subjects, args, sess, mirrored, target_registry + "/",
                            (tls_dir / "ca.crt").read_bytes(), cleanup)
        for sub in subjects:
            sub.result["memory"]["end"] = sub.serve.memory()
            log(f"{sub.name}: memory at the end: {sub.result['memory']['end']}")
            sub.result["presence_checks"] = {k: v for k, v in sub.serve.metrics().items()
                                             if k.startswith("privatize_presence_checks")}
        result["loadavg_end"] = os.getloadavg()
    except (BenchError, KeyboardInterrupt) as e:
        result["error"] = str(e) or "interrupted (Ctrl-C or SIGTERM)"
        print(f"bench: ABORTED: {result['error']}", file=sys.stderr)
        for sub in subjects:
            if sub.serve and sub.serve.proc:
                print(f"{sub.name}: serve's log, last lines:\n{sub.serve.log_tail(1500)}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for sub in subjects:
            if not sub.serve:
                continue
            sub.serve.stop()
            kept = json_path.parent / ("serve.log" if sub.name == SHIPPED else f"serve-{sub.tag}.log")
            kept.parent.mkdir(parents=True, exist_ok=True)
            try:
                lines, admissions, gate = keep_log(sub.serve.log_path, kept)
                sub.result["serve_log"] = {"lines": lines, "admission_lines": admissions,
                                           "gate_actions": gate, "kept": str(kept)}
                if gate:
                    log(f"{sub.name}: serve's gate controller acted on {len(gate)} pod(s): see {kept}")
            except OSError as e:
                log(f"reading {sub.name}'s serve log: {e}")
        if kube:
            for name in cleanup["webhooks"]:
                try:
                    kube.request("DELETE", f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}")
                except BenchError as e:
                    log(f"cleanup: {e}")
            for ns in cleanup["namespaces"]:
                try:
                    kube.delete_namespace(ns)
                except BenchError as e:
                    log(f"cleanup: {e}")
            kube.close()
        shutil.rmtree(tmp, ignore_errors=True)
        result["cleaned_up"] = cleanup

    if code == 0:
        report(result, args, subjects)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"raw numbers: {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
