#!/usr/bin/env python3
"""Benchmark privatize's managed Secrets: serve's credential writer and its Secret webhook (issue 15).

Usage: python3 bench/secret-webhook.py [--rounds N] [--secrets N] [--parts admission,writer,refresh]
                                       [--binary PATH] [--glibc-binary PATH | --no-glibc]

Three figures, against `privatize serve` on 127.0.0.1 whose credential writer is
limited to the bench's namespace (PRIVATIZE_CREDENTIAL_NAMESPACES). The subject,
column `privatize`, is the binary the container image ships (static musl +
mimalloc, `scripts/build-image --print-binary`); a second serve of the glibc
release build, column `privatize-glibc`, with a namespace of its own, gets the
same runs (admission and refresh rounds in alternating order). The goals are
judged on the shipped binary; the shipped/glibc ratios and both serves' memory
are printed:

1. writer: the time from a Secret's creation through the real kube-apiserver
   (the moment the client sends the POST) to the moment a watch on the
   namespace's Secrets shows it with the login serve's writer wrote, over 500
   managed Secrets created 16 at a time. p50, p99, max. Goal: p99 <= 2 s.
2. refresh: wall time of `privatize refresh-secrets --force --namespace NS`
   over those 500 Secrets, --rounds times. Goal: under 10 s (median and worst).
3. admission: Secret admissions per second (the answer: allowed, no patch, no
   token) next to pod admissions per second (a pod whose image is already
   mirrored) on the same server, with h2load over h2, 16 connections, a fixed
   request count per round, alternating order. Goal: a Secret admission costs
   no more than a pod admission (secrets/s >= pods/s, and by serve's CPU).

Prints a table with every figure, its goal, figure/goal and met / not met, and
writes the raw numbers to target/bench/secrets.json. See bench/README.md.
"""

import argparse
import base64
import http.client
import importlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import BenchError, log, run_checked, read_env_file, base_env  # noqa: E402
from benchlib import GLIBC, SHIPPED, add_binary_args, describe_binaries, gap, resolve_binaries  # noqa: E402

sb = importlib.import_module("serve")  # bench/serve.py: parse_kubeconfig, loopback, target_host_alias
ROOT = Path(__file__).resolve().parent.parent
SECRET_REVIEW = ROOT / "bench" / "data" / "secret-create-managed.json"
MANAGED = ("privatize.io/ecr-credentials", "managed")
ENABLED = ("privatize.io/ecr-credentials", "enabled")
REFRESHED_AT = "privatize.io/refreshed-at"
EXPIRES_AT = "privatize.io/expires-at"
REFRESH_REQUESTED_AT = "privatize.io/refresh-requested-at"
CONFIG_KEY = ".dockerconfigjson"
TARGET_PREFIX = "bench-secrets"  # fixed: the mirrored pod image is copied once, not per run
WRITER_P99_GOAL_S = 2.0
REFRESH_GOAL_S = 10.0
ADMISSIONS = "privatize_admissions_total"
INJECTED = "privatize_secrets_injected_total"


class Stop(Exception):
    """SIGTERM: unwind so the cleanup runs."""


def on_sigterm(signum, frame):
    raise Stop(f"signal {signum}")


def run_timed(argv, *, timeout, env):
    """Run argv in its own process group; (exit, wall_s, stdout, stderr). The
    group is killed at the timeout."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        err += f"\n[bench] killed after the {timeout} s timeout".encode()
    wall = time.perf_counter() - t0
    return p.returncode, wall, out.decode(errors="replace"), err.decode(errors="replace")


def privatize_env(tenv, kubeconfig, target):
    """Environment of every privatize run: ECR target on the testbed's TLS
    registry (as `target`), moto as the ECR API, the testbed's kubeconfig (as
    tests/common/serve.rs)."""
    env = base_env()
    for k in list(env):
        if k.startswith(("PRIVATIZE_", "SERVER_", "COPY_JOB_")) or k in (
                "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                "ECR_REGISTRY"):
            env.pop(k)
    env.update({
        "KUBECONFIG": kubeconfig,
        "ECR_REGISTRY": f"{target}/{TARGET_PREFIX}",
        "PRIVATIZE_TARGET_KIND": "ecr",
        "PRIVATIZE_CA_FILE": tenv["TARGET_CA_FILE"],
        "PRIVATIZE_PLAIN_HTTP": tenv["SOURCE_REGISTRY"],
        "PRIVATIZE_EXCLUDE": "example.invalid",
        "COPY_JOB_IMAGE": "127.0.0.1:15000/privatize/privatize:test",
        "AWS_ENDPOINT_URL": tenv["MOTO_ENDPOINT"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": tenv["AWS_REGION"],
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    })
    return env


def percentile(xs, p):
    """Nearest-rank percentile."""
    xs = sorted(xs)
    return xs[max(0, -(-p * len(xs) // 100) - 1)] if xs else None


def median(xs):
    return statistics.median(xs) if xs else None


def parse_time(text):
    """An RFC 3339 UTC time as privatize writes it (milliseconds optional), as epoch seconds."""
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp()
        except (TypeError, ValueError):
            pass
    return None


# ------------------------------------------------------------------ serve
def free_port():
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serve:
    """A running `privatize serve` on 127.0.0.1 ports picked here (so any
    --log-level works); its stderr goes to a file. take_log() reads and
    truncates it, keeping serve's warnings and errors."""

    def __init__(self, binary, env, cert_dir, log_level, work):
        self.log_path = Path(work) / "serve.log"
        self.log_file = open(self.log_path, "ab")  # O_APPEND: truncation between rounds is safe
        self.problems = []  # serve's WARN / ERROR lines (the first 50)
        self.problem_count = 0
        self.log_lines = 0
        https, http_ = free_port(), free_port()
        self.https, self.http = f"127.0.0.1:{https}", f"127.0.0.1:{http_}"
        self.proc = subprocess.Popen(
            [binary, "--log-format", "json", "--log-level", log_level, "serve",
             "--listen-address", "127.0.0.1", "--https-port", str(https), "--http-port", str(http_),
             "--tls-cert-path", str(Path(cert_dir) / "tls.crt"),
             "--tls-key-path", str(Path(cert_dir) / "tls.key")],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self.log_file, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"serve exited ({self.proc.returncode}):\n{self.log_tail()}")
            status, body = self.get("/readyz")
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"serve not ready after 30 s: {status} {body}\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, n=4000):
        return self.log_path.read_text(errors="replace")[-n:]

    def take_log(self):
        """Counts serve's log lines so far, keeps its warnings and errors, and truncates it."""
        text = self.log_path.read_text(errors="replace")
        os.truncate(self.log_path, 0)
        for line in text.splitlines():
            self.log_lines += 1
            try:
                level = json.loads(line).get("level", "")
            except ValueError:
                level = "WARN" if "WARN" in line or "ERROR" in line else ""
            if level in ("WARN", "ERROR"):
                self.problem_count += 1
                if len(self.problems) < 50:
                    self.problems.append(line[:600])
        return text

    def get(self, path):
        host, port = self.http.rsplit(":", 1)
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=10)
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode(errors="replace")
        except OSError as e:
            return 0, str(e)

    def memory(self):
        """VmRSS and VmHWM of serve, in MiB (/proc/PID/status)."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                fields[k] = round(int(v.split()[0]) / 1024, 1)
        return fields

    def cpu_s(self):
        """serve's user + system CPU time so far (/proc/PID/stat, clock ticks)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self):
        status, body = self.get("/metrics")
        if status != 200:
            raise BenchError(f"GET /metrics: {status} {body[:300]}")
        return body

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self.log_file.close()


def metric(text, name, **labels):
    """Value of one sample in Prometheus text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0


def post_review(serve, ca_file, path, body):
    """POSTs one AdmissionReview over verified TLS; (the parsed answer, its raw text)."""
    host, port = serve.https.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca_file)
    c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
    c.request("POST", path, body=body, headers={"content-type": "application/json"})
    r = c.getresponse()
    text = r.read()
    if r.status != 200:
        raise BenchError(f"POST {path}: {r.status} {text[:500]!r}")
    return json.loads(text)["response"], text.decode(errors="replace")


def token_texts(tenv):
    """The forms moto's token could take in an answer: as is, as a Basic `auth`, base64."""
    password = tenv["TARGET_PASSWORD"]
    auth = base64.b64encode(f"AWS:{password}".encode()).decode()
    return [password, auth, base64.b64encode(password.encode()).decode().rstrip("=")]


def check_secret_answer(response, raw, tenv):
    """Allowed, with no patch (serve's writer writes the login through the API),
    and no token anywhere in the answer."""
    if response.get("allowed") is not True:
        raise BenchError(f"Secret review: not allowed: {json.dumps(response)[:1000]}")
    if response.get("patch") or response.get("patchType"):
        raise BenchError(f"Secret review: the answer carries a patch: {json.dumps(response)[:1000]}")
    leaked = [t for t in token_texts(tenv) if t in raw]
    if leaked:
        raise BenchError(f"Secret review: the answer contains the ECR token ({len(leaked)} form(s))")
    return {"allowed": True, "patch": None, "bytes": len(raw)}


def decoded_patch(response, what):
    if not response.get("allowed"):
        raise BenchError(f"{what}: not allowed: {json.dumps(response)[:1000]}")
    if response.get("patchType") != "JSONPatch" or not response.get("patch"):
        raise BenchError(f"{what}: allowed without a patch: {json.dumps(response)[:1000]}")
    return json.loads(base64.b64decode(response["patch"]))


def check_pod_answer(response, expected_prefix):
    """Allowed, with the container's image rewritten and no scheduling gate."""
    patch = decoded_patch(response, "pod review")
    images = [o["value"] for o in patch if o.get("path", "").endswith("/image")]
    if not images or not all(i.startswith(expected_prefix) for i in images):
        raise BenchError(f"pod review: image not rewritten to {expected_prefix}…: {patch}")
    if any("schedulingGates" in o.get("path", "") for o in patch):
        raise BenchError(f"pod review: gated, so the image is not mirrored: {patch}")
    return images


def pod_review(namespace, image):
    kind = {"group": "", "version": "v1", "kind": "Pod"}
    res = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b3e7c1d0-5a2f-4c8e-9d61-bench-pod-0001", "kind": kind, "resource": res,
            "requestKind": kind, "requestResource": res, "name": "", "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ["system:serviceaccounts"]},
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"generateName": "web-5d9c7b-", "namespace": namespace},
                       "spec": {"containers": [{"name": "web", "image": image}]}},
            "oldObject": None, "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


# ------------------------------------------------------------------ h2load
H2_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
H2_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                         r"(\d+) failed, (\d+) errored, (\d+) timeout")
H2_CODES = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
H2_REQ_TIME = re.compile(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def h2load(url, body_file, n, c, timeout):
    argv = ["h2load", "-n", str(n), "-c", str(c), "-t", "1", "-m", "1",
            "-H", "content-type: application/json", "-d", str(body_file), url]
    code, wall, out, err = run_timed(argv, timeout=timeout, env=base_env())
    f, q, s, t = (r.search(out) for r in (H2_FINISHED, H2_REQUESTS, H2_CODES, H2_REQ_TIME))
    if code != 0 or not (f and q and s):
        raise BenchError(f"h2load {url}: exit {code}\n{out[-2000:]}\n{err[-2000:]}")
    done, ok2xx = int(q.group(4)), int(s.group(1))
    if done != n or ok2xx != n:
        raise BenchError(f"h2load {url}: {done} of {n} succeeded, {ok2xx} 2xx\n{out[-2000:]}")
    secs = float(f.group(1)) / (1000 if f.group(2) == "ms" else 1)
    return {"req_per_s": float(f.group(3)), "seconds": secs, "wall_s": round(wall, 3),
            "succeeded": done, "status_2xx": ok2xx,
            "latency_ms": {k: to_ms(t.group(i)) for i, k in enumerate(("min", "max", "mean", "sd"), 1)}
            if t else None,
            "argv": argv}


# ------------------------------------------------------------------ kube-apiserver client
class Api:
    """HTTPS/1.1 client of the apiserver with the kubeconfig's client certificate:
    one keep-alive connection per thread, and watch streams on connections of their own."""

    def __init__(self, kubeconfig, tmp):
        server, ca, cert, key = sb.parse_kubeconfig(kubeconfig)
        sb.loopback(server, "kube-apiserver")
        url = urllib.parse.urlsplit(server)
        self.host, self.port = url.hostname, url.port or 443
        tmp = Path(tmp)
        (tmp / "kube-client.crt").write_bytes(cert)
        key_path = tmp / "kube-client.key"
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        self.ctx = ssl.create_default_context(cadata=ca.decode())
        self.ctx.load_cert_chain(tmp / "kube-client.crt", key_path)
        self.local = threading.local()

    def connect(self, timeout=60):
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def request(self, method, path, body=None, ok=(200, 201), retry=True,
                content_type="application/json"):
        """(status, parsed JSON). One retry on a dropped keep-alive connection when `retry`;
        a status outside `ok` raises."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(2 if retry else 1):
            conn = getattr(self.local, "conn", None)
            try:
                if conn is None:
                    conn = self.local.conn = self.connect()
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError) as e:
                if conn:
                    conn.close()
                self.local.conn = None
                if attempt or not retry:
                    raise BenchError(f"kube-apiserver {method} {path}: {e}")
        try:
            obj = json.loads(raw) if raw else None
        except ValueError:
            obj = {"raw": raw.decode(errors="replace")[:500]}
        if resp.status not in ok:
            msg = obj.get("message") if isinstance(obj, dict) else None
            raise BenchError(f"kube-apiserver {method} {path}: HTTP {resp.status}: {msg or obj}")
        return resp.status, obj

    def secrets(self, ns):
        """Every managed Secret of `ns`, and the list's resourceVersion."""
        sel = urllib.parse.quote(f"{MANAGED[0]}={MANAGED[1]}")
        _, obj = self.request("GET", f"/api/v1/namespaces/{ns}/secrets?labelSelector={sel}&limit=5000")
        return obj["items"], obj["metadata"]["resourceVersion"]

    def delete_namespace(self, name):
        """Deletes what the bench put in the namespace, then the namespace. The testbed runs no
        controller-manager, so the bench plays the namespace controller: it clears the
        finalizer, or the namespace would stay Terminating."""
        base = f"/api/v1/namespaces/{name}"
        for path in (f"{base}/secrets", f"{base}/configmaps", f"{base}/events", f"{base}/pods",
                     f"/apis/batch/v1/namespaces/{name}/jobs?propagationPolicy=Background"):
            self.request("DELETE", path, ok=(200, 404))
        status, _ = self.request("DELETE", base, ok=(200, 202, 404))
        if status == 404:
            return
        status, ns = self.request("GET", base, ok=(200, 404))
        if status == 200 and ns.get("spec", {}).get("finalizers"):
            ns["spec"]["finalizers"] = []
            self.request("PUT", f"{base}/finalize", ns, ok=(200, 201, 404, 409))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.request("GET", base, ok=(200, 404))[0] == 404:
                return
            time.sleep(0.2)
        log(f"namespace {name} is still there after 15 s (left Terminating)")


def has_login(obj, host, password):
    """Whether a Secret carries serve's login for `host` (and its refreshed-at)."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    if REFRESHED_AT not in annotations:
        return False
    try:
        config = json.loads(base64.b64decode(obj["data"][CONFIG_KEY]))
        return config["auths"][host]["password"] == password
    except (KeyError, TypeError, ValueError):
        return False


class SecretWatch(threading.Thread):
    """A watch of one namespace's managed Secrets from a resourceVersion on: the
    first moment (time.perf_counter()) each Secret is seen with the target's login."""

    def __init__(self, api, ns, rv, host, password, limit_s):
        super().__init__(daemon=True)
        self.api, self.ns, self.rv, self.host, self.password = api, ns, rv, host, password
        self.limit_s = limit_s
        self.written = {}  # name -> (perf_counter, refreshed-at, resourceVersion)
        self.events = 0
        self.error = None
        self.ready = threading.Event()
        self.cond = threading.Condition()
        self.conn = None
        self.stopping = False

    def run(self):
        sel = urllib.parse.quote(f"{MANAGED[0]}={MANAGED[1]}")
        path = (f"/api/v1/namespaces/{self.ns}/secrets?watch=1&labelSelector={sel}"
                f"&resourceVersion={self.rv}&timeoutSeconds={int(self.limit_s)}")
        try:
            self.conn = self.api.connect(timeout=self.limit_s + 30)
            self.conn.request("GET", path, headers={"Accept": "application/json"})
            resp = self.conn.getresponse()
            if resp.status != 200:
                raise BenchError(f"watch {path}: HTTP {resp.status}: {resp.read()[:300]!r}")
            self.ready.set()
            while True:
                line = resp.readline()
                seen = time.perf_counter()
                if not line:
                    break
                event = json.loads(line)
                self.events += 1
                if event.get("type") == "ERROR":
                    raise BenchError(f"watch of {self.ns}: {event.get('object')}")
                obj = event.get("object") or {}
                name = obj.get("metadata", {}).get("name")
                if event.get("type") in ("ADDED", "MODIFIED") and name not in self.written \
                        and has_login(obj, self.host, self.password):
                    with self.cond:
                        self.written[name] = (seen, obj["metadata"]["annotations"][REFRESHED_AT],
                                              obj["metadata"]["resourceVersion"])
                        self.cond.notify_all()
        except Exception as e:  # noqa: BLE001 (reported by the waiting thread)
            if not self.stopping:
                self.error = f"{type(e).__name__}: {e}"
        finally:
            self.ready.set()
            with self.cond:
                self.cond.notify_all()

    def wait_for(self, names, timeout):
        """True once every name was seen written; False at the timeout or when the watch ended."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(n in self.written for n in names):
                left = deadline - time.monotonic()
                if left <= 0 or not self.is_alive():
                    return False
                self.cond.wait(min(left, 1.0))
        return True

    def stop(self):
        self.stopping = True
        try:
            if self.conn and self.conn.sock:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.join(timeout=10)


def secret_object(name, namespace):
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED[0]: MANAGED[1]}},
            "data": {CONFIG_KEY: base64.b64encode(b'{"auths":{}}').decode()}}


def webhook_configuration(name, namespace, url, ca_pem):
    """The Secret webhook as `privatize install` registers it (rules, versions, policy,
    selectors), by URL and scoped to the bench's namespace."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": f"secrets.{namespace}.bench.privatize.io",
            "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem.encode()).decode()},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                       "resources": ["secrets"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "objectSelector": {"matchLabels": {MANAGED[0]: MANAGED[1]}},
            "failurePolicy": "Fail", "sideEffects": "None", "matchPolicy": "Equivalent",
            "admissionReviewVersions": ["v1", "v1beta1"], "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 10,
        }],
    }


# ------------------------------------------------------------------ parts
def admission_prepare(serve, tenv, work, result):
    """Checks one answer of each kind by hand (which warms both caches); returns the state of
    the rounds (admission_round, admission_finish)."""
    cert_ca = str(Path(work) / "certs" / "ca.crt")
    secret_body = SECRET_REVIEW.read_bytes()
    namespace = json.loads(secret_body)["request"]["namespace"]
    pod_body = json.dumps(pod_review(namespace, tenv["_TINY"])).encode()
    pod_file = Path(work) / "pod-review.json"
    pod_file.write_bytes(pod_body)

    # Warm both caches and check one answer of each by hand.
    sec, raw = post_review(serve, cert_ca, "/mutate/secrets", secret_body)
    result["checks"]["secret_answer"] = check_secret_answer(sec, raw, tenv)
    pod, _ = post_review(serve, cert_ca, "/mutate/pods", pod_body)
    expected = f"{tenv['_TARGET']}/{TARGET_PREFIX}/"
    result["checks"]["pod_images"] = check_pod_answer(pod, expected)
    log(f"checked by hand: Secret allowed, no patch, no token ({len(raw)} bytes); "
        f"pod allowed, image -> {result['checks']['pod_images']}")
    tokens_before = metric(serve.metrics(), "privatize_ecr_tokens_fetched_total",
                           region=tenv["AWS_REGION"])
    return {"tokens_before": tokens_before,
            "paths": {"secret": ("/mutate/secrets", SECRET_REVIEW, "allowed"),
                      "pod": ("/mutate/pods", pod_file, "patched")}}


def admission_round(args, serve, rnd, state, result, name):
    """One round of Secret and pod admissions (h2load), in the order the round's parity gives."""
    paths = state["paths"]
    order = ["secret", "pod"] if rnd % 2 == 0 else ["pod", "secret"]
    for pos, kind in enumerate(order):
        path, body_file, outcome = paths[kind]
        before = metric(serve.metrics(), ADMISSIONS, path=path, outcome=outcome)
        cpu0 = serve.cpu_s()
        run = h2load(f"https://{serve.https}{path}", body_file, args.requests,
                     args.connections, args.timeout)
        run["serve_cpu_us_per_admission"] = round((serve.cpu_s() - cpu0) / args.requests * 1e6, 1)
        after = metric(serve.metrics(), ADMISSIONS, path=path, outcome=outcome)
        if after - before != args.requests:
            raise BenchError(f"round {rnd} {kind}: {int(after - before)} of {args.requests} "
                             f"admissions came out {outcome}\n{serve.log_tail()}")
        serve.take_log()
        run.update({"kind": kind, "round": rnd, "position": pos, "outcome": outcome,
                    "counted": int(after - before)})
        result["admission_runs"].append(run)
        log(f"round {rnd} {name:<15} {kind:<6} {run['req_per_s']:9.0f} req/s  "
            f"mean {run['latency_ms']['mean'] if run['latency_ms'] else '?'} ms  "
            f"serve CPU {run['serve_cpu_us_per_admission']} us/admission")


def admission_finish(serve, tenv, state, result, name):
    """No ECR token may have been fetched during the rounds (the cache was warm)."""
    tokens_before = state["tokens_before"]
    tokens_after = metric(serve.metrics(), "privatize_ecr_tokens_fetched_total",
                          region=tenv["AWS_REGION"])
    result["checks"]["ecr_tokens_fetched_during_rounds"] = int(tokens_after - tokens_before)
    if tokens_after != tokens_before:
        raise BenchError(f"{name}: the token cache was not warm: {int(tokens_after - tokens_before)} "
                         f"ECR tokens fetched during the rounds")


def create_namespace(api, ns, tenv, cleanup):
    """The bench's namespace, enabled for ECR credentials. It is also serve's copy-Job
    namespace, with the `privatize-ca` ConfigMap serve checks at start (the testbed's CA)."""
    api.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {ENABLED[0]: ENABLED[1]}}}, ok=(201,))
    cleanup.append(("namespace", ns))
    api.request("POST", f"/api/v1/namespaces/{ns}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "privatize-ca"},
        "data": {"ca.pem": Path(tenv["TARGET_CA_FILE"]).read_text()}}, ok=(201,))


def register_webhook(args, serve, api, ns, work, tenv, result, cleanup):
    """serve registered as the namespace's Secret webhook by URL; returns once the webhook
    answers and the writer has written a first Secret there (deleted again, so the figures
    start from a warm writer)."""
    ca_pem = (Path(work) / "certs" / "ca.crt").read_text()
    hook = f"privatize-bench-{ns}"
    api.request("POST", "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
                webhook_configuration(hook, ns, f"https://{serve.https}/mutate/secrets", ca_pem),
                ok=(201,))
    cleanup.append(("webhook", hook))

    # Active once a server-side dry run is counted by serve as an allowed Secret admission.
    deadline = time.monotonic() + 30
    path = f"/api/v1/namespaces/{ns}/secrets"
    while True:
        before = metric(serve.metrics(), ADMISSIONS, path="/mutate/secrets", outcome="allowed")
        try:
            _, shown = api.request("POST", f"{path}?dryRun=All", secret_object("probe", ns))
        except BenchError:
            shown = None
        if shown and REFRESHED_AT in (shown["metadata"].get("annotations") or {}):
            raise BenchError(f"a dry run came back with {REFRESHED_AT}: an answer carries a login")
        after = metric(serve.metrics(), ADMISSIONS, path="/mutate/secrets", outcome="allowed")
        if after > before:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"the webhook for {ns} never became active\n{serve.log_tail()}")
        time.sleep(0.3)

    # The writer watches the namespace once a first Secret gets its login.
    api.request("POST", path, secret_object("warm-up", ns), ok=(201,))
    deadline = time.monotonic() + 30
    while True:
        _, got = api.request("GET", f"{path}/warm-up")
        if has_login(got, tenv["_TARGET"], tenv["TARGET_PASSWORD"]):
            break
        if time.monotonic() > deadline:
            raise BenchError(f"serve's writer wrote no login into {ns}/warm-up in 30 s\n"
                             f"{serve.log_tail()}")
        time.sleep(0.1)
    api.request("DELETE", f"{path}/warm-up")
    log(f"namespace {ns}: webhook active, the writer wrote the warm-up Secret")


def writer_part(args, serve, api, ns, tenv, result):
    """Creates N managed Secrets through the apiserver (and the webhook), `--concurrency` at
    a time, and times each from its POST to the watch event that shows serve's login."""
    host, password = tenv["_TARGET"], tenv["TARGET_PASSWORD"]
    names = [f"pull-{i:04d}" for i in range(args.secrets)]
    _, rv = api.secrets(ns)
    watch = SecretWatch(api, ns, rv, host, password, limit_s=args.timeout)
    watch.start()
    if not watch.ready.wait(30) or watch.error:
        raise BenchError(f"the watch of {ns} did not start: {watch.error}")
    injected_before = metric(serve.metrics(), INJECTED)
    cpu0 = serve.cpu_s()
    sent, created, wall_sent = {}, {}, {}
    leaks = []
    path = f"/api/v1/namespaces/{ns}/secrets"

    def create(name):
        body = secret_object(name, ns)
        wall_sent[name] = time.time()
        sent[name] = time.perf_counter()
        _, obj = api.request("POST", path, body, ok=(201,), retry=False)
        created[name] = time.perf_counter()
        # The create's answer is the Secret as stored by the admission: no login in it.
        if has_login(obj, host, password) or REFRESHED_AT in (obj["metadata"].get("annotations") or {}):
            leaks.append(name)

    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for f in [pool.submit(create, n) for n in names]:
                f.result()
        created_all = time.perf_counter()
        complete = watch.wait_for(names, args.timeout)
        done = time.perf_counter()
    finally:
        watch.stop()
    cpu = serve.cpu_s() - cpu0
    if watch.error:
        raise BenchError(f"the watch of {ns} failed: {watch.error}")
    if leaks:
        raise BenchError(f"{len(leaks)} Secrets were stored with a login by their admission: {leaks[:5]}")
    missing = [n for n in names if n not in watch.written]
    if not complete or missing:
        raise BenchError(f"{len(missing)} of {len(names)} Secrets never showed serve's login within "
                         f"{args.timeout} s: {missing[:5]}\n{serve.log_tail()}")
    # serve's counter lags its PATCH answer by a moment.
    deadline = time.monotonic() + 5
    while (injected := int(metric(serve.metrics(), INJECTED) - injected_before)) < len(names) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    items, _ = api.secrets(ns)
    final = sum(1 for i in items if has_login(i, host, password))
    if final != len(names) or len(items) != len(names):
        raise BenchError(f"{ns}: {len(items)} managed Secrets, {final} with the login; expected "
                         f"{len(names)}")
    if injected < len(names):
        raise BenchError(f"serve counted {injected} logins written for {len(names)} Secrets")

    lat = [watch.written[n][0] - sent[n] for n in names]
    after_create = [watch.written[n][0] - created[n] for n in names]
    create_call = [created[n] - sent[n] for n in names]
    # refreshed-at is the writer's clock (same host) when it built the login: milliseconds.
    server_side = [parse_time(watch.written[n][1]) - wall_sent[n] for n in names
                   if parse_time(watch.written[n][1]) is not None]

    def stats(xs):
        return {"p50_s": round(percentile(xs, 50), 4), "p99_s": round(percentile(xs, 99), 4),
                "max_s": round(max(xs), 4), "min_s": round(min(xs), 4),
                "mean_s": round(statistics.fmean(xs), 4)}

    w = result["writer"] = {
        "namespace": ns, "secrets": len(names), "concurrency": args.concurrency,
        "created_to_login": stats(lat),
        "create_answered_to_login": stats(after_create),
        "create_call": stats(create_call),
        "sent_to_refreshed_at_annotation": stats(server_side) if server_side else None,
        "create_s": round(created_all - t0, 3),
        "first_create_to_last_login_s": round(done - t0, 3),
        "serve_injected": injected, "serve_cpu_s": round(cpu, 3),
        "watch_events": watch.events,
        "per_secret_s": {n: round(x, 4) for n, x in zip(names, lat)},
    }
    serve.take_log()
    log(f"writer: {len(names)} Secrets created in {w['create_s']:.2f} s ({args.concurrency} at a time), "
        f"all written after {w['first_create_to_last_login_s']:.2f} s; creation -> login "
        f"p50 {w['created_to_login']['p50_s']:.3f} s p99 {w['created_to_login']['p99_s']:.3f} s "
        f"max {w['created_to_login']['max_s']:.3f} s; serve injected {injected}")
    if injected != len(names):
        log(f"note: serve counted {injected} logins written for {len(names)} new Secrets")


def refresh_prepare(args, api, ns, result):
    """The writer part's Secrets as they are (resourceVersion, refreshed-at) before the rounds."""
    result["refresh"] = {"namespace": ns, "secrets": args.secrets, "runs": []}
    items, _ = api.secrets(ns)
    return {i["metadata"]["name"]: (i["metadata"]["resourceVersion"],
                                    parse_time((i["metadata"].get("annotations") or {}).get(REFRESHED_AT)))
            for i in items}


def refresh_round(args, rnd, serve, binary, penv, api, ns, tenv, state, result, name):
    """One timed `refresh-secrets --force --namespace NS` over the writer part's Secrets, run
    with the subject's own binary; returns the new state."""
    host, password = tenv["_TARGET"], tenv["TARGET_PASSWORD"]
    expected = f"{args.secrets} refreshed, 0 fresh, 0 failed"
    injected_before = metric(serve.metrics(), INJECTED)
    cpu0 = serve.cpu_s()
    code, wall, out, err = run_timed(
        [binary, "--log-level", "warn", "refresh-secrets", "--force", "--namespace", ns],
        timeout=args.timeout, env=penv)
    cpu = serve.cpu_s() - cpu0
    if code != 0 or out.strip() != expected:
        raise BenchError(f"{name}: refresh-secrets round {rnd}: exit {code}, stdout {out.strip()[:2000]!r} "
                         f"(expected {expected!r})\n{err[-3000:]}\n{serve.log_tail()}")
    deadline = time.monotonic() + 5
    while (injected := int(metric(serve.metrics(), INJECTED) - injected_before)) < args.secrets \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    items, _ = api.secrets(ns)
    now = {i["metadata"]["name"]: (i["metadata"]["resourceVersion"],
                                   parse_time((i["metadata"].get("annotations") or {}).get(REFRESHED_AT)))
           for i in items}
    # Every Secret rewritten since the last look: a new resourceVersion, the refresh
    # request annotation, a later refreshed-at and the login.
    renewed = sum(1 for i in items
                  if i["metadata"]["name"] in state
                  and state[i["metadata"]["name"]][0] != i["metadata"]["resourceVersion"]
                  and REFRESH_REQUESTED_AT in (i["metadata"].get("annotations") or {})
                  and (now[i["metadata"]["name"]][1] or 0) > (state[i["metadata"]["name"]][1] or 0)
                  and has_login(i, host, password))
    if renewed != args.secrets or injected != args.secrets:
        raise BenchError(f"{name}: refresh-secrets round {rnd}: {renewed} of {args.secrets} Secrets "
                         f"rewritten with a later {REFRESHED_AT}, serve injected {injected}")
    state = now
    serve.take_log()
    result["refresh"]["runs"].append({"round": rnd, "wall_s": round(wall, 3), "stdout": out.strip(),
                                      "loadavg_1m": os.getloadavg()[0],
                                      "stderr": err.strip()[-2000:], "secrets_rewritten": renewed,
                                      "serve_injected": injected, "serve_cpu_s": round(cpu, 3)})
    log(f"refresh round {rnd} {name}: {wall:.2f} s ({out.strip()}; serve injected {injected}, "
        f"serve CPU {cpu:.2f} s)")
    return state


def do_cleanup(api, cleanup):
    for kind, name in reversed(cleanup):
        try:
            if kind == "webhook":
                api.request("DELETE", "/apis/admissionregistration.k8s.io/v1/"
                            f"mutatingwebhookconfigurations/{name}", ok=(200, 404))
                log(f"deleted MutatingWebhookConfiguration {name}")
            elif kind == "namespace":
                api.delete_namespace(name)
                log(f"deleted the Secrets, ConfigMaps and Events of {name} and the namespace")
        except BenchError as e:
            log(f"cleanup of {kind} {name} failed: {e}")


def ratio_text(value, goal):
    return f"{value / goal:.2f}x" if value is not None and goal else "-"


class Subject:
    """One binary under test: its serve, its namespace and its part of the results
    (result["subjects"][name])."""

    def __init__(self, name, binary, tag, work):
        self.name, self.binary, self.tag = name, binary, tag
        self.work = Path(work) / tag  # serve's log
        self.work.mkdir(parents=True, exist_ok=True)
        self.serve = None
        self.ns = None
        self.result = {"binary": binary, "checks": {}, "admission_runs": [], "summary": {},
                       "memory": {}}


def summarize(r, args, parts):
    """One subject's summary (r["summary"]) and its rows: (figure, value text, goal text,
    figure/goal text, met or None)."""
    rows = []
    s = r["summary"]
    if "writer" in parts:
        c = r["writer"]["created_to_login"]
        s["writer"] = {k: c[k] for k in ("p50_s", "p99_s", "max_s")}
        what = f"Secret created -> login seen ({args.secrets}, {args.concurrency} at a time)"
        rows.append((f"{what}, p50", f"{c['p50_s']:.3f} s", "-", "-", None))
        rows.append((f"{what}, p99", f"{c['p99_s']:.3f} s", f"<= {WRITER_P99_GOAL_S:.0f} s",
                     ratio_text(c["p99_s"], WRITER_P99_GOAL_S), c["p99_s"] <= WRITER_P99_GOAL_S))
        rows.append((f"{what}, max", f"{c['max_s']:.3f} s", "-", "-", None))
    if "refresh" in parts:
        walls = [x["wall_s"] for x in r["refresh"]["runs"]]
        s["refresh"] = {"wall_s_median": round(median(walls), 3), "wall_s_max": max(walls),
                        "wall_s_min": min(walls)}
        what = f"refresh-secrets --force, {args.secrets} Secrets"
        med, worst = s["refresh"]["wall_s_median"], max(walls)
        rows.append((f"{what}, median of {len(walls)}", f"{med:.2f} s", f"< {REFRESH_GOAL_S:.0f} s",
                     ratio_text(med, REFRESH_GOAL_S), med < REFRESH_GOAL_S))
        rows.append((f"{what}, worst of {len(walls)}", f"{worst:.2f} s", f"< {REFRESH_GOAL_S:.0f} s",
                     ratio_text(worst, REFRESH_GOAL_S), worst < REFRESH_GOAL_S))
    if "admission" in parts:
        for kind in ("secret", "pod"):
            runs = [x for x in r["admission_runs"] if x["kind"] == kind]
            s[kind] = {"req_per_s_median": round(median([x["req_per_s"] for x in runs]), 1),
                       "req_per_s_min": min(x["req_per_s"] for x in runs),
                       "req_per_s_max": max(x["req_per_s"] for x in runs),
                       "mean_latency_ms_median": median([x["latency_ms"]["mean"] for x in runs
                                                         if x["latency_ms"]]),
                       "serve_cpu_us_per_admission_median": median(
                           [x["serve_cpu_us_per_admission"] for x in runs])}
        ratio = round(s["secret"]["req_per_s_median"] / s["pod"]["req_per_s_median"], 3)
        s["secret/pod"] = ratio
        rows.append((f"Secret admissions/s (no patch, warm token cache, h2, -c {args.connections})",
                     f"{s['secret']['req_per_s_median']:.0f}", "-", "-", None))
        rows.append(("pod admissions/s (image mirrored, same server and tool)",
                     f"{s['pod']['req_per_s_median']:.0f}", "-", "-", None))
        rows.append(("Secret/pod throughput ratio", f"{ratio:.2f}", ">= 1.0", ratio_text(ratio, 1.0),
                     ratio >= 1.0))
        sc, pc = (s[k]["serve_cpu_us_per_admission_median"] for k in ("secret", "pod"))
        s["cpu_secret/pod"] = round(sc / pc, 3)
        rows.append(("serve CPU per admission, Secret / pod (us)", f"{sc:.0f}/{pc:.0f}",
                     "Secret <= pod", ratio_text(sc, pc), sc <= pc))
    peak = r["memory"].get("end", {}).get("VmHWM")
    if peak is not None:
        s["memory"] = {"idle_VmRSS_mib": r["memory"]["idle"]["VmRSS"], "peak_VmHWM_mib": peak}
        rows.append(("serve's memory: idle VmRSS", f"{r['memory']['idle']['VmRSS']:.1f} MiB", "-", "-", None))
        rows.append(("serve's memory: peak (VmHWM at the end)", f"{peak:.1f} MiB", "-", "-", None))
    return rows


def compare(shipped, glibc, parts):
    """The shipped/glibc figures side by side, with shipped/glibc ratios."""
    out = {}

    def pair(key, a, b):
        out[key] = {SHIPPED: a, GLIBC: b, "ratio": gap(a, b)}

    a, b = shipped["summary"], glibc["summary"]
    if "writer" in parts:
        for k in ("p50_s", "p99_s", "max_s"):
            pair(f"writer created->login {k[:-2]} (s)", a["writer"][k], b["writer"][k])
        pair("writer: serve CPU for the logins (s)", shipped["writer"]["serve_cpu_s"],
             glibc["writer"]["serve_cpu_s"])
    if "refresh" in parts:
        pair("refresh-secrets median (s)", a["refresh"]["wall_s_median"], b["refresh"]["wall_s_median"])
        pair("refresh-secrets worst (s)", a["refresh"]["wall_s_max"], b["refresh"]["wall_s_max"])
        pair("refresh: serve CPU per round, median (s)",
             median([x["serve_cpu_s"] for x in shipped["refresh"]["runs"]]),
             median([x["serve_cpu_s"] for x in glibc["refresh"]["runs"]]))
    if "admission" in parts:
        for kind in ("secret", "pod"):
            pair(f"{kind} admissions/s", a[kind]["req_per_s_median"], b[kind]["req_per_s_median"])
            pair(f"{kind} mean latency (ms)", a[kind]["mean_latency_ms_median"],
                 b[kind]["mean_latency_ms_median"])
            pair(f"{kind}: serve CPU per admission (us)", a[kind]["serve_cpu_us_per_admission_median"],
                 b[kind]["serve_cpu_us_per_admission_median"])
    for point in shipped["memory"]:
        for field in ("VmRSS", "VmHWM"):
            x, y = shipped["memory"][point].get(field), glibc["memory"].get(point, {}).get(field)
            if x is not None and y is not None and (field == "VmRSS" or point == "end"):
                pair(f"memory: {point} {field} (MiB)", x, y)
    return out


def print_comparison(cmp):
    width = max(len(k) for k in cmp)
    head = f"{'shipped vs glibc':<{width}}  {SHIPPED:>10} {GLIBC:>16}  {'x':>5}"
    print(head)
    print("-" * len(head))
    for k, v in cmp.items():
        nd = 3 if k.endswith("(s)") else (1 if "MiB" in k or "(us)" in k or "(ms)" in k else 0)
        if k.endswith("(ms)"):
            nd = 2
        print(f"{k:<{width}}  {fmt_num(v[SHIPPED], nd):>10} {fmt_num(v[GLIBC], nd):>16}  "
              f"{fmt_num(v['ratio'], 2):>5}")
    print("(x = privatize / privatize-glibc)\n")


def fmt_num(x, nd):
    return "-" if x is None else f"{x:.{nd}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5,
                    help="h2load rounds per path and refresh-secrets rounds (default 5)")
    ap.add_argument("--refresh-rounds", type=int, help="refresh-secrets rounds (default --rounds)")
    ap.add_argument("--requests", type=int, default=20000, help="requests per h2load round")
    ap.add_argument("--connections", type=int, default=16, help="h2load connections (default 16)")
    ap.add_argument("--secrets", type=int, default=500, help="managed Secrets created (default 500)")
    ap.add_argument("--concurrency", type=int, default=16,
                    help="Secret creations in flight at once (default 16)")
    ap.add_argument("--parts", default="admission,writer,refresh",
                    help="any of admission, writer, refresh (refresh brings in writer)")
    ap.add_argument("--timeout", type=int, default=300, help="limit of each measured command (s)")
    ap.add_argument("--serve-log-level", default="info", help="serve's --log-level (default info)")
    ap.add_argument("--no-setup", action="store_true",
                    help="skip testbed/up, testbed/kube/up and the builds: use the binaries as they "
                         "are, and stop if one is missing")
    add_binary_args(ap)
    ap.add_argument("--json", default=str(ROOT / "target" / "bench" / "secrets.json"),
                    help="where to write the raw numbers (default target/bench/secrets.json)")
    args = ap.parse_args()
    if args.refresh_rounds is None:
        args.refresh_rounds = args.rounds
    for name, lo, hi in (("rounds", 1, 50), ("requests", 100, 1_000_000), ("connections", 1, 256),
                         ("secrets", 1, 5000), ("refresh_rounds", 1, 20), ("concurrency", 1, 256)):
        if not lo <= getattr(args, name) <= hi:
            ap.error(f"--{name.replace('_', '-')} must be {lo}..{hi}")
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if "refresh" in parts:
        parts.add("writer")  # refresh-secrets renews the writer part's Secrets
    if not parts or parts - {"admission", "writer", "refresh"}:
        ap.error("--parts takes admission, writer, refresh")

    result = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"nproc": os.cpu_count(), "machine": platform.machine(),
                 "kernel": platform.release(), "loadavg_start": os.getloadavg()},
        "params": {k: v for k, v in vars(args).items() if k != "json"},
        "setup": {}, "subjects": {}, "goals": [],
    }
    json_path = Path(args.json)

    def write_json():
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")

    signal.signal(signal.SIGTERM, on_sigterm)
    work = tempfile.mkdtemp(prefix="bench-secrets-")
    api = None
    subjects = []
    cleanup = []
    try:
        if not shutil.which("h2load") and "admission" in parts:
            raise BenchError("h2load is missing: apt-get install -y nghttp2-client")
        if not args.no_setup:
            log("testbed/up")
            run_checked([str(ROOT / "testbed" / "up")], timeout=1800, what="testbed/up")
        binaries = resolve_binaries(args, result["setup"])
        result["binaries"] = describe_binaries(binaries)
        subjects = [Subject(name, path, "musl" if name == SHIPPED else "glibc", work)
                    for name, path in binaries]
        if args.no_setup:
            kubeconfig = os.environ.get("PRIVATIZE_KUBECONFIG") or str(ROOT / "target" / "kube" / "kubeconfig")
            if not Path(kubeconfig).is_file():
                raise BenchError(f"{kubeconfig} is missing: start the testbed with testbed/kube/up")
        else:
            up = run_checked([str(ROOT / "testbed" / "kube" / "up")], timeout=300,
                             what="testbed/kube/up").stdout.decode()
            kenv = dict(re.findall(r"^export (\w+)=(.*)$", up, re.M))
            kubeconfig = kenv.get("KUBECONFIG", "").strip("'\"") or str(ROOT / "target" / "kube" / "kubeconfig")
        api = Api(kubeconfig, work)

        state_dir = Path(os.environ.get("PRIVATIZE_TESTBED_DIR", ROOT / "target" / "testbed"))
        tenv = read_env_file(state_dir / "env")
        for key in ("SOURCE_REGISTRY", "TARGET_REGISTRY"):
            if not tenv[key].startswith("127.0.0.1:"):
                raise BenchError(f"refusing a non-loopback testbed address: {tenv[key]}")
        if not tenv["MOTO_ENDPOINT"].startswith("http://127.0.0.1:"):
            raise BenchError(f"refusing a non-loopback moto: {tenv['MOTO_ENDPOINT']}")
        tenv["_TINY"] = json.loads(Path(tenv["IMAGES_JSON"]).read_text())["tiny"]["reference"]
        # serve's gate controller acts on gated pods waiting for its own target host: under
        # localhost:PORT it leaves other tests' pods (127.0.0.1:PORT) alone.
        tenv["_TARGET"] = sb.target_host_alias(tenv["TARGET_REGISTRY"])
        result["target"] = f"{tenv['_TARGET']}/{TARGET_PREFIX}"

        binary = subjects[0].binary  # the shipped one makes the certificate and mirrors the image
        result["privatize"] = result["binaries"][SHIPPED]["version"]
        result["h2load"] = run_checked(["h2load", "--version"], timeout=30).stdout.decode().strip() \
            if shutil.which("h2load") else None
        penv = privatize_env(tenv, kubeconfig, tenv["_TARGET"])

        cert_dir = Path(work) / "certs"
        run_checked([binary, "gen-certs", "--out-dir", str(cert_dir), "--san", "127.0.0.1"],
                    timeout=60, env=penv, what="privatize gen-certs")
        # The pod's image, mirrored once (a fixed repository: later runs find it there).
        run_checked([binary, "sync-image", "--progress", "never", "--log-level", "warn",
                     tenv["_TINY"]], timeout=args.timeout, env=penv, what="privatize sync-image tiny")

        sess = os.urandom(3).hex()
        for sub in subjects:
            result["subjects"][sub.name] = sub.result
            sub.ns = f"bench-secrets-{sub.tag}-{sess}"
            create_namespace(api, sub.ns, tenv, cleanup)
            serve_env = dict(penv, PRIVATIZE_CREDENTIAL_NAMESPACES=sub.ns, COPY_JOB_NAMESPACE=sub.ns)
            sub.serve = Serve(sub.binary, serve_env, cert_dir, args.serve_log_level, sub.work)
            log(f"{sub.name}: serve listening on https://{sub.serve.https} (metrics on "
                f"{sub.serve.http}); its writer writes in {sub.ns} only")
        time.sleep(2)
        for sub in subjects:
            sub.result["memory"]["idle"] = sub.serve.memory()
        if "admission" in parts:
            states = {sub.name: admission_prepare(sub.serve, tenv, work, sub.result) for sub in subjects}
            for rnd in range(args.rounds):
                for sub in (subjects if rnd % 2 == 0 else subjects[::-1]):
                    admission_round(args, sub.serve, rnd, states[sub.name], sub.result, sub.name)
            for sub in subjects:
                admission_finish(sub.serve, tenv, states[sub.name], sub.result, sub.name)
                sub.result["memory"]["after_admission"] = sub.serve.memory()
        if "writer" in parts:
            # One writer run per serve (the shipped one first), the other serve idle meanwhile.
            for sub in subjects:
                register_webhook(args, sub.serve, api, sub.ns, work, tenv, sub.result, cleanup)
                writer_part(args, sub.serve, api, sub.ns, tenv, sub.result)
                sub.result["memory"]["after_writer"] = sub.serve.memory()
        if "refresh" in parts:
            states = {sub.name: refresh_prepare(args, api, sub.ns, sub.result) for sub in subjects}
            for rnd in range(args.refresh_rounds):
                for sub in (subjects if rnd % 2 == 0 else subjects[::-1]):
                    states[sub.name] = refresh_round(args, rnd, sub.serve, sub.binary, penv, api, sub.ns,
                                                     tenv, states[sub.name], sub.result, sub.name)
        for sub in subjects:
            sub.result["memory"]["end"] = sub.serve.memory()
            log(f"{sub.name}: serve's memory: " + ", ".join(
                f"{k} {v}" for k, v in sub.result["memory"].items()))
        result["loadavg_end"] = os.getloadavg()
    except (BenchError, Stop, KeyboardInterrupt) as e:
        result["error"] = str(e) or type(e).__name__
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if api:
            do_cleanup(api, cleanup)
        for sub in subjects:
            if sub.serve:
                sub.serve.stop()
                sub.serve.take_log()
                sub.result["serve_log"] = {"lines": sub.serve.log_lines,
                                           "warnings_and_errors": sub.serve.problem_count,
                                           "first_problems": sub.serve.problems}
        shutil.rmtree(work, ignore_errors=True)
    if "error" in result:
        write_json()
        print(f"bench: ABORTED: {result['error']}", file=sys.stderr)
        return 1

    per = {sub.name: summarize(sub.result, args, parts) for sub in subjects}
    rows = per[SHIPPED]
    other = {r[0]: r for r in per[GLIBC]} if GLIBC in per else {}
    for what, value, goal, of_goal, ok in rows:
        if ok is not None:
            g = other.get(what)
            result["goals"].append({"figure": what, "value": value, "goal": goal,
                                    "figure/goal": of_goal, "met": ok,
                                    **({f"{GLIBC}_value": g[1], f"{GLIBC}_met": g[4]} if g else {})})
    if GLIBC in per:
        result["shipped_vs_glibc"] = compare(subjects[0].result, subjects[1].result, parts)

    print(f"\nSecret benchmark ({os.cpu_count()} cores; {result['privatize']}; load average "
          f"{result['host']['loadavg_start'][0]:.2f} at the start, {result['loadavg_end'][0]:.2f} "
          f"at the end)")
    for name, facts in result["binaries"].items():
        print(f"  {name}: {facts['path']} ({'static' if facts.get('static') else 'dynamic'}, "
              f"{facts['bytes'] / 2**20:.1f} MiB, built {facts['mtime']})")
    print(f"goals judged on {SHIPPED} (the shipped binary)" + (f"; {GLIBC} for reference" if other else ""))
    print()
    width = max(len(r[0]) for r in rows)
    head = (f"{'figure':<{width}}  {'value':>9}  {'goal':<13} {'fig/goal':>8}  {'result':<8}" +
            (f"{GLIBC:>16}" if other else "")).rstrip()
    print(head)
    print("-" * len(head))
    for what, value, goal, of_goal, ok in rows:
        g = other.get(what)
        print((f"{what:<{width}}  {value:>9}  {goal:<13} {of_goal:>8}  "
               f"{'-' if ok is None else ('met' if ok else 'NOT MET'):<8}"
               + (f"{g[1] if g else '-':>16}" if other else "")).rstrip())
    print()
    if "shipped_vs_glibc" in result:
        print_comparison(result["shipped_vs_glibc"])
    for sub in subjects:
        r = sub.result
        print(f"{sub.name}:")
        if "writer" in parts:
            w = r["writer"]
            a, b, srv = w["create_answered_to_login"], w["create_call"], w["sent_to_refreshed_at_annotation"]
            print(f"  writer: {args.secrets} creates took {w['create_s']:.2f} s (each create p50 "
                  f"{b['p50_s'] * 1000:.1f} ms, p99 {b['p99_s'] * 1000:.1f} ms), the last login was seen "
                  f"{w['first_create_to_last_login_s']:.2f} s after the first create; create answered -> "
                  f"login seen p50 {a['p50_s']:.3f} s, p99 {a['p99_s']:.3f} s"
                  + (f"; POST sent -> serve's refreshed-at p50 {srv['p50_s']:.3f} s, p99 {srv['p99_s']:.3f} s"
                     if srv else "")
                  + f"; serve wrote {w['serve_injected']} logins with {w['serve_cpu_s']:.2f} s of CPU")
        if "refresh" in parts:
            print("  refresh rounds (s): " + ", ".join(f"{x['wall_s']:.2f}" for x in r["refresh"]["runs"])
                  + "; serve CPU per round (s): "
                  + ", ".join(f"{x['serve_cpu_s']:.2f}" for x in r["refresh"]["runs"]))
        if "admission" in parts:
            print("  admission rounds (req/s): " + "; ".join(
                f"r{x['round']} {x['kind']} {x['req_per_s']:.0f}" for x in r["admission_runs"]))
        log_ = r["serve_log"]
        print(f"  serve's log: {log_['lines']} lines, {log_['warnings_and_errors']} warnings or errors"
              + (f" (first: {log_['first_problems'][0][:300]})" if log_["first_problems"] else ""))
    write_json()
    print(f"raw numbers: {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
