#!/usr/bin/env python3
"""Benchmark privatize's Secret webhook (issue 8 section 6).

Usage: python3 bench/secret-webhook.py [--rounds N] [--requests N] [--secrets N]

Two figures, both against a `privatize serve` release binary on 127.0.0.1:

1. Secret admissions per second with a warm ECR token cache, next to pod
   admissions per second (a pod whose image is already mirrored) on the same
   server, measured the same way: h2load over h2, 16 connections, a fixed
   request count per round, alternating order. Goal: a Secret admission costs
   no more than a pod admission (secrets/s >= pods/s).
2. Wall time of `privatize refresh-secrets --force` over 500 managed Secrets
   through the real kube-apiserver testbed, with serve registered as the
   Secret webhook by URL for the bench's namespace only. Goal: under 10 s.

Prints a table with every figure, its goal and met / not met, and writes the
raw numbers to target/bench/secrets.json. See bench/README.md.
"""

import argparse
import base64
import http.client
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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import BenchError, log, run_checked, read_env_file, base_env  # noqa: E402
ROOT = Path(__file__).resolve().parent.parent
SECRET_REVIEW = ROOT / "bench" / "data" / "secret-create-managed.json"
MANAGED = ("privatize.io/ecr-credentials", "managed")
ENABLED = ("privatize.io/ecr-credentials", "enabled")
REFRESHED_AT = "privatize.io/refreshed-at"
REFRESH_REQUESTED_AT = "privatize.io/refresh-requested-at"
TARGET_PREFIX = "bench-secrets"  # fixed: the mirrored pod image is copied once, not per run
REFRESH_GOAL_S = 10.0


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


def privatize_env(tenv, kubeconfig):
    """Environment of every privatize run: ECR target on the testbed's TLS
    registry, moto as the ECR API, the testbed's kubeconfig (as tests/common/serve.rs)."""
    env = base_env()
    for k in list(env):
        if k.startswith(("PRIVATIZE_", "SERVER_", "COPY_JOB_")) or k in (
                "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                "ECR_REGISTRY"):
            env.pop(k)
    env.update({
        "KUBECONFIG": kubeconfig,
        "ECR_REGISTRY": f"{tenv['TARGET_REGISTRY']}/{TARGET_PREFIX}",
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


# ------------------------------------------------------------------ serve
def free_port():
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serve:
    """A running `privatize serve` on 127.0.0.1 ports picked here (so any
    --log-level works); its stderr goes to a file, truncated between rounds."""

    def __init__(self, binary, env, cert_dir, log_level, work):
        self.log_path = Path(work) / "serve.log"
        self.log_file = open(self.log_path, "ab")  # O_APPEND: truncation between rounds is safe
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

    def truncate_log(self):
        os.truncate(self.log_path, 0)

    def get(self, path):
        host, port = self.http.rsplit(":", 1)
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=10)
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode(errors="replace")
        except OSError as e:
            return 0, str(e)

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
    """POSTs one AdmissionReview over verified TLS; the parsed answer."""
    host, port = serve.https.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca_file)
    c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
    c.request("POST", path, body=body, headers={"content-type": "application/json"})
    r = c.getresponse()
    text = r.read()
    if r.status != 200:
        raise BenchError(f"POST {path}: {r.status} {text[:500]!r}")
    return json.loads(text)["response"]


def decoded_patch(response, what):
    if not response.get("allowed"):
        raise BenchError(f"{what}: not allowed: {json.dumps(response)[:1000]}")
    if response.get("patchType") != "JSONPatch" or not response.get("patch"):
        raise BenchError(f"{what}: allowed without a patch: {json.dumps(response)[:1000]}")
    return json.loads(base64.b64decode(response["patch"]))


def check_secret_answer(response, tenv):
    """Allowed, with a patch that writes the target's login (moto's token)."""
    patch = decoded_patch(response, "Secret review")
    host, password = tenv["TARGET_REGISTRY"], tenv["TARGET_PASSWORD"]
    for op in patch:
        value = op.get("value")
        values = [value] + (list(value.values()) if isinstance(value, dict) else [])
        for v in values:
            try:
                config = json.loads(base64.b64decode(v, validate=True))
                login = config["auths"][host]
            except (TypeError, ValueError, KeyError):
                continue
            if login.get("username") == "AWS" and login.get("password") == password:
                return [o["path"] for o in patch]
    raise BenchError(f"Secret review: the patch has no login for {host}: "
                     f"{[o.get('path') for o in patch]}")


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


# ------------------------------------------------------------------ kube
class Kube:
    def __init__(self, kubeconfig, kubectl):
        self.env = base_env()
        self.env["KUBECONFIG"] = kubeconfig
        self.kubectl = kubectl

    def run(self, args, *, input=None, timeout=120):
        return run_checked([self.kubectl] + args, timeout=timeout, env=self.env, input=input,
                           what="kubectl " + " ".join(args[:3])).stdout.decode()

    def json(self, args, timeout=120):
        return json.loads(self.run(args + ["-o", "json"], timeout=timeout))


def secret_object(name, namespace):
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "namespace": namespace, "labels": {MANAGED[0]: MANAGED[1]}},
            "data": {".dockerconfigjson": base64.b64encode(b'{"auths":{}}').decode()}}


def webhook_configuration(name, namespace, url, ca_pem):
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
            "failurePolicy": "Fail", "sideEffects": "None",
            "admissionReviewVersions": ["v1", "v1beta1"], "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 10,
        }],
    }


def median(xs):
    return statistics.median(xs) if xs else None


# ------------------------------------------------------------------ parts
def admission_part(args, serve, tenv, work, result):
    """Secret vs pod admissions per second, h2load, alternating order."""
    cert_ca = str(Path(work) / "certs" / "ca.crt")
    secret_body = SECRET_REVIEW.read_bytes()
    namespace = json.loads(secret_body)["request"]["namespace"]
    pod_body = json.dumps(pod_review(namespace, tenv["_TINY"])).encode()
    pod_file = Path(work) / "pod-review.json"
    pod_file.write_bytes(pod_body)

    # Warm both caches and check one answer of each by hand.
    sec = post_review(serve, cert_ca, "/mutate/secrets", secret_body)
    result["checks"]["secret_patch_paths"] = check_secret_answer(sec, tenv)
    pod = post_review(serve, cert_ca, "/mutate/pods", pod_body)
    expected = f"{tenv['TARGET_REGISTRY']}/{TARGET_PREFIX}/"
    result["checks"]["pod_images"] = check_pod_answer(pod, expected)
    log(f"checked by hand: Secret allowed with a patch of {result['checks']['secret_patch_paths']}; "
        f"pod allowed, image -> {result['checks']['pod_images']}")
    tokens_before = metric(serve.metrics(), "privatize_ecr_tokens_fetched_total",
                           region=tenv["AWS_REGION"])

    paths = {"secret": ("/mutate/secrets", SECRET_REVIEW), "pod": ("/mutate/pods", pod_file)}
    for rnd in range(args.rounds):
        order = ["secret", "pod"] if rnd % 2 == 0 else ["pod", "secret"]
        for pos, kind in enumerate(order):
            path, body_file = paths[kind]
            before = metric(serve.metrics(), "privatize_admissions_total", path=path, outcome="patched")
            cpu0 = serve.cpu_s()
            run = h2load(f"https://{serve.https}{path}", body_file, args.requests,
                         args.connections, args.timeout)
            run["serve_cpu_us_per_admission"] = round((serve.cpu_s() - cpu0) / args.requests * 1e6, 1)
            after = metric(serve.metrics(), "privatize_admissions_total", path=path, outcome="patched")
            if after - before != args.requests:
                raise BenchError(f"round {rnd} {kind}: {int(after - before)} of {args.requests} "
                                 f"admissions were patched\n{serve.log_tail()}")
            serve.truncate_log()
            run.update({"kind": kind, "round": rnd, "position": pos, "patched": int(after - before)})
            result["admission_runs"].append(run)
            log(f"round {rnd} {kind:<6} {run['req_per_s']:9.0f} req/s  "
                f"mean {run['latency_ms']['mean'] if run['latency_ms'] else '?'} ms  "
                f"serve CPU {run['serve_cpu_us_per_admission']} us/admission")
    tokens_after = metric(serve.metrics(), "privatize_ecr_tokens_fetched_total",
                          region=tenv["AWS_REGION"])
    result["checks"]["ecr_tokens_fetched_during_rounds"] = int(tokens_after - tokens_before)
    if tokens_after != tokens_before:
        raise BenchError(f"the token cache was not warm: {int(tokens_after - tokens_before)} "
                         f"ECR tokens fetched during the rounds")


def refresh_part(args, serve, binary, penv, kube, tenv, work, sess, result, cleanup):
    """refresh-secrets --force over N Secrets through the apiserver and serve's webhook."""
    ns = f"bench-secrets-{sess}"
    kube.run(["create", "-f", "-"], input=json.dumps({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": {ENABLED[0]: ENABLED[1]}}}).encode())
    cleanup.append(("namespace", ns))
    ca_pem = (Path(work) / "certs" / "ca.crt").read_text()
    hook = f"privatize-bench-{ns}"
    kube.run(["create", "-f", "-"], input=json.dumps(webhook_configuration(
        hook, ns, f"https://{serve.https}/mutate/secrets", ca_pem)).encode())
    cleanup.append(("webhook", hook))
    result["refresh"] = {"namespace": ns, "secrets": args.secrets, "runs": []}

    # Active once a server-side dry run comes back with serve's annotation.
    deadline = time.monotonic() + 30
    probe = json.dumps(secret_object("probe", ns)).encode()
    while True:
        try:
            got = json.loads(kube.run(["create", "--dry-run=server", "-o", "json", "-f", "-"],
                                      input=probe))
            if REFRESHED_AT in (got["metadata"].get("annotations") or {}):
                break
        except BenchError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"the webhook for {ns} never became active\n{serve.log_tail()}")
        time.sleep(0.3)

    # Create the Secrets through the webhook: 4 kubectl processes, a List each.
    names = [f"pull-{i:04d}" for i in range(args.secrets)]
    chunks = [names[i::4] for i in range(4)]
    t0 = time.perf_counter()

    def create(chunk):
        if chunk:
            kube.run(["create", "-f", "-"], timeout=args.timeout, input=json.dumps(
                {"apiVersion": "v1", "kind": "List",
                 "items": [secret_object(n, ns) for n in chunk]}).encode())

    with ThreadPoolExecutor(max_workers=4) as pool:
        for f in [pool.submit(create, c) for c in chunks]:
            f.result()
    result["refresh"]["create_s"] = round(time.perf_counter() - t0, 3)
    serve.truncate_log()
    items = kube.json(["get", "secrets", "-n", ns, "-l", f"{MANAGED[0]}={MANAGED[1]}"])["items"]
    injected = [s for s in items if REFRESHED_AT in (s["metadata"].get("annotations") or {})]
    if len(items) != args.secrets or len(injected) != args.secrets:
        raise BenchError(f"{ns}: {len(items)} managed Secrets, {len(injected)} injected; "
                         f"expected {args.secrets}")
    config = json.loads(base64.b64decode(items[0]["data"][".dockerconfigjson"]))
    if config["auths"].get(tenv["TARGET_REGISTRY"], {}).get("password") != tenv["TARGET_PASSWORD"]:
        raise BenchError(f"{ns}/{items[0]['metadata']['name']}: no login for the target")
    log(f"created {args.secrets} managed Secrets in {ns} in {result['refresh']['create_s']:.1f} s")

    expected = f"{args.secrets} refreshed, 0 fresh, 0 failed"
    versions = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items}
    for rnd in range(args.refresh_rounds):
        injected_before = metric(serve.metrics(), "privatize_secrets_injected_total")
        code, wall, out, err = run_timed(
            [binary, "--log-level", "warn", "refresh-secrets", "--force", "--namespace", ns],
            timeout=args.timeout, env=penv)
        if code != 0 or out.strip() != expected:
            raise BenchError(f"refresh-secrets round {rnd}: exit {code}, stdout {out.strip()!r} "
                             f"(expected {expected!r})\n{err[-3000:]}")
        injected = int(metric(serve.metrics(), "privatize_secrets_injected_total") - injected_before)
        items = kube.json(["get", "secrets", "-n", ns, "-l", f"{MANAGED[0]}={MANAGED[1]}"])["items"]
        now = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items}
        # Every Secret rewritten since the last look (a new resourceVersion) and
        # carrying refresh-secrets' request annotation.
        renewed = sum(1 for i in items
                      if versions.get(i["metadata"]["name"]) not in (None, i["metadata"]["resourceVersion"])
                      and REFRESH_REQUESTED_AT in (i["metadata"].get("annotations") or {}))
        if renewed != args.secrets or injected != args.secrets:
            raise BenchError(f"refresh-secrets round {rnd}: {renewed} of {args.secrets} Secrets "
                             f"rewritten with {REFRESH_REQUESTED_AT}, serve injected {injected}")
        versions = now
        serve.truncate_log()
        result["refresh"]["runs"].append({"round": rnd, "wall_s": round(wall, 3), "stdout": out.strip(),
                                          "secrets_rewritten": renewed, "serve_injected": injected})
        log(f"refresh round {rnd}: {wall:.2f} s ({out.strip()}; serve injected {injected})")


def do_cleanup(kube, cleanup):
    for kind, name in reversed(cleanup):
        try:
            if kind == "webhook":
                kube.run(["delete", "mutatingwebhookconfiguration", name, "--ignore-not-found"])
                log(f"deleted MutatingWebhookConfiguration {name}")
            elif kind == "namespace":
                kube.run(["delete", "secrets", "--all", "-n", name, "--wait=false"], timeout=300)
                kube.run(["delete", "namespace", name, "--wait=false", "--ignore-not-found"])
                log(f"deleted the Secrets of {name} and the namespace (--wait=false)")
        except BenchError as e:
            log(f"cleanup of {kind} {name} failed: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="h2load rounds per path (default 3)")
    ap.add_argument("--requests", type=int, default=20000, help="requests per h2load round")
    ap.add_argument("--connections", type=int, default=16, help="h2load connections (default 16)")
    ap.add_argument("--secrets", type=int, default=500, help="managed Secrets to refresh")
    ap.add_argument("--refresh-rounds", type=int, default=3, help="refresh-secrets rounds")
    ap.add_argument("--parts", default="admission,refresh", help="admission, refresh or both")
    ap.add_argument("--timeout", type=int, default=300, help="limit of each measured command (s)")
    ap.add_argument("--serve-log-level", default="info", help="serve's --log-level (default info)")
    ap.add_argument("--no-setup", action="store_true", help="skip testbed/up and cargo build")
    ap.add_argument("--json", default=str(ROOT / "target" / "bench" / "secrets.json"),
                    help="where to write the raw numbers (default target/bench/secrets.json)")
    args = ap.parse_args()
    for name, lo, hi in (("rounds", 1, 50), ("requests", 100, 1_000_000), ("connections", 1, 256),
                         ("secrets", 1, 5000), ("refresh_rounds", 1, 20)):
        if not lo <= getattr(args, name) <= hi:
            ap.error(f"--{name.replace('_', '-')} must be {lo}..{hi}")
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"admission", "refresh"}:
        ap.error("--parts takes admission, refresh or both")

    result = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {"nproc": os.cpu_count(), "machine": platform.machine(),
                 "kernel": platform.release(), "loadavg_start": os.getloadavg()},
        "params": {k: v for k, v in vars(args).items() if k != "json"},
        "setup": {}, "checks": {}, "admission_runs": [], "summary": {}, "goals": [],
    }
    json_path = Path(args.json)

    def write_json():
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")

    work = tempfile.mkdtemp(prefix="bench-secrets-")
    serve = kube = None
    cleanup = []
    try:
        if not shutil.which("h2load") and "admission" in parts:
            raise BenchError("h2load is missing: apt-get install -y nghttp2-client")
        if not args.no_setup:
            log("testbed/up")
            run_checked([str(ROOT / "testbed" / "up")], timeout=1800, what="testbed/up")
            log("cargo build --release --locked")
            t0 = time.perf_counter()
            run_checked(["cargo", "build", "--release", "--locked"], timeout=3600,
                        what="cargo build --release --locked")
            result["setup"]["cargo_build_s"] = round(time.perf_counter() - t0, 2)
        up = run_checked([str(ROOT / "testbed" / "kube" / "up")], timeout=300,
                         what="testbed/kube/up").stdout.decode()
        kenv = dict(re.findall(r"^export (\w+)=(.*)$", up, re.M))
        kubeconfig = kenv.get("KUBECONFIG") or str(ROOT / "target" / "kube" / "kubeconfig")
        kubectl = kenv.get("KUBECTL") or shutil.which("kubectl")
        if not kubectl:
            raise BenchError("no kubectl: testbed/kube/up printed no KUBECTL and none is on PATH")
        server = re.search(r"server:\s*(\S+)", Path(kubeconfig).read_text())
        if not server or not server.group(1).startswith("https://127.0.0.1:"):
            raise BenchError(f"refusing a non-loopback apiserver in {kubeconfig}")
        kube = Kube(kubeconfig, kubectl)

        state_dir = Path(os.environ.get("PRIVATIZE_TESTBED_DIR", ROOT / "target" / "testbed"))
        tenv = read_env_file(state_dir / "env")
        for key in ("SOURCE_REGISTRY", "TARGET_REGISTRY"):
            if not tenv[key].startswith("127.0.0.1:"):
                raise BenchError(f"refusing a non-loopback testbed address: {tenv[key]}")
        if not tenv["MOTO_ENDPOINT"].startswith("http://127.0.0.1:"):
            raise BenchError(f"refusing a non-loopback moto: {tenv['MOTO_ENDPOINT']}")
        tenv["_TINY"] = json.loads(Path(tenv["IMAGES_JSON"]).read_text())["tiny"]["reference"]

        binary = str(ROOT / "target" / "release" / "privatize")
        result["privatize"] = run_checked([binary, "--version"], timeout=30).stdout.decode().strip()
        result["h2load"] = run_checked(["h2load", "--version"], timeout=30).stdout.decode().strip() \
            if shutil.which("h2load") else None
        penv = privatize_env(tenv, kubeconfig)

        cert_dir = Path(work) / "certs"
        run_checked([binary, "gen-certs", "--out-dir", str(cert_dir), "--san", "127.0.0.1"],
                    timeout=60, env=penv, what="privatize gen-certs")
        # The pod's image, mirrored once (a fixed repository: later runs find it there).
        run_checked([binary, "sync-image", "--progress", "never", "--log-level", "warn",
                     tenv["_TINY"]], timeout=args.timeout, env=penv, what="privatize sync-image tiny")

        serve = Serve(binary, penv, cert_dir, args.serve_log_level, work)
        log(f"serve listening on https://{serve.https} (metrics on {serve.http})")
        sess = os.urandom(3).hex()
        if "admission" in parts:
            admission_part(args, serve, tenv, work, result)
        if "refresh" in parts:
            refresh_part(args, serve, binary, penv, kube, tenv, work, sess, result, cleanup)
        result["loadavg_end"] = os.getloadavg()
    except BenchError as e:
        result["error"] = str(e)
        write_json()
        print(f"bench: ABORTED: {e}", file=sys.stderr)
        return 1
    finally:
        if kube:
            do_cleanup(kube, cleanup)
        if serve:
            serve.stop()
        shutil.rmtree(work, ignore_errors=True)

    # summary and goals
    rows = []
    s = result["summary"]
    if "admission" in parts:
        for kind in ("secret", "pod"):
            runs = [r for r in result["admission_runs"] if r["kind"] == kind]
            s[kind] = {"req_per_s_median": round(median([r["req_per_s"] for r in runs]), 1),
                       "req_per_s_min": min(r["req_per_s"] for r in runs),
                       "req_per_s_max": max(r["req_per_s"] for r in runs),
                       "mean_latency_ms_median": median([r["latency_ms"]["mean"] for r in runs
                                                         if r["latency_ms"]]),
                       "serve_cpu_us_per_admission_median": median(
                           [r["serve_cpu_us_per_admission"] for r in runs])}
        ratio = round(s["secret"]["req_per_s_median"] / s["pod"]["req_per_s_median"], 3)
        s["secret/pod"] = ratio
        rows.append((f"Secret admissions/s (warm token cache, h2, -c {args.connections})",
                     f"{s['secret']['req_per_s_median']:.0f}", "-", None))
        rows.append(("pod admissions/s (image mirrored, same server and tool)",
                     f"{s['pod']['req_per_s_median']:.0f}", "-", None))
        rows.append(("Secret/pod throughput ratio", f"{ratio:.2f}",
                     ">= 1.0 (a Secret costs no more than a pod)", ratio >= 1.0))
        sc, pc = (s[k]["serve_cpu_us_per_admission_median"] for k in ("secret", "pod"))
        s["cpu_secret/pod"] = round(sc / pc, 3)
        rows.append(("serve CPU per admission, Secret / pod (us)", f"{sc:.0f}/{pc:.0f}",
                     "Secret <= pod (same goal, by CPU)", sc <= pc))
    if "refresh" in parts:
        walls = [r["wall_s"] for r in result["refresh"]["runs"]]
        s["refresh"] = {"wall_s_median": round(median(walls), 3), "wall_s_max": max(walls),
                        "wall_s_min": min(walls), "create_s": result["refresh"]["create_s"]}
        worst = max(walls)
        rows.append((f"refresh-secrets --force, {args.secrets} Secrets (worst of "
                     f"{len(walls)}; median {s['refresh']['wall_s_median']:.2f} s)",
                     f"{worst:.2f} s", f"< {REFRESH_GOAL_S:.0f} s", worst < REFRESH_GOAL_S))
    for what, value, goal, ok in rows:
        if ok is not None:
            result["goals"].append({"figure": what, "value": value, "goal": goal, "met": ok})

    print(f"\nSecret webhook benchmark ({os.cpu_count()} cores; {result['privatize']}; "
          f"medians of {args.rounds} h2load rounds of {args.requests} requests)\n")
    w = max(len(r[0]) for r in rows)
    print(f"{'figure':<{w}}  {'value':>9}  {'goal':<42} result")
    print("-" * (w + 62))
    for what, value, goal, ok in rows:
        print(f"{what:<{w}}  {value:>9}  {goal:<42} "
              f"{'-' if ok is None else ('met' if ok else 'NOT MET')}")
    if "admission" in parts:
        print("\nper round (req/s): " + "; ".join(
            f"r{r['round']} {r['kind']} {r['req_per_s']:.0f}" for r in result["admission_runs"]))
    if "refresh" in parts:
        print(f"refresh rounds (s): {', '.join(f'{w_:.2f}' for w_ in walls)}; creating the "
              f"{args.secrets} Secrets through the webhook took {result['refresh']['create_s']:.1f} s")
    write_json()
    print(f"raw numbers: {json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
