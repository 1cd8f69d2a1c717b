#!/usr/bin/env python3
"""Benchmark `privatize serve`'s memory under maximum-size admission reviews: 64 concurrent
3 MiB reviews of pods (several shapes) and of Secrets, several rounds, serve's peak RSS against
the memory limit `privatize install --dry-run` gives serve, and the answers by status.

Usage: python3 bench/serve-memory.py [--rounds N] [--concurrency N] [--binary PATH]

Runs `privatize serve` (target/release/privatize unless --binary) against the local testbed
(registries, moto, kube-apiserver, all on 127.0.0.1). Peak RSS is the kernel's VmHWM, reset
before every batch through /proc/PID/clear_refs, and VmRSS is sampled every 5 ms as a check.
First, unless --no-amplification, each review shape is sent alone to a fresh serve with a
large budget: the RSS it adds per byte of review. Prints tables and writes the raw numbers to
target/bench/serve-memory.json. A benchmark, not a test. See bench/README.md.
"""

import argparse
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import BenchError, log, run_checked, read_env_file, base_env  # noqa: E402
import importlib  # noqa: E402

sb = importlib.import_module("serve")  # bench/serve.py: Kube, Serve, review(), loopback
ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
MAX_BODY = 3 * MIB
MARK = "@@FILL@@"
POD_SHAPES = ("annotation", "labels", "env", "containers")
SECRET_SHAPES = ("secret-value", "secret-entries")
# Alone, for the amplification table: (shape, review bytes). The `{}` shapes are the worst
# a typed parse can meet (3 bytes of JSON, a 2-3 KiB struct); they are sent smaller.
AMPLIFICATION = (("annotation", MIB), ("labels", MIB), ("env", MIB), ("containers", 512 * 1024),
                 ("empty-containers", 64 * 1024), ("empty-volumes", 64 * 1024),
                 ("secret-value", MIB), ("secret-entries", MIB))
BUDGET_FLAG = "--review-memory-budget"


# ------------------------------------------------------------------ reviews
def fill(unit, size):
    """Comma-separated units, `size` bytes or a little less."""
    out, n, i = [], 0, 0
    while True:
        u = unit(i)
        if n + len(u) + 1 > size:
            return ",".join(out)
        out.append(u)
        n += len(u) + 1
        i += 1


def shaped_review(shape, size, namespace, image, uid, secret_fixture):
    """A v1 AdmissionReview of exactly `size` bytes whose bulk is `shape`: the review is built
    with a marker where the bulk goes, the marker replaced by units up to the size, and JSON
    whitespace at the end makes up the last few bytes."""
    if shape.startswith("secret"):
        review = json.loads(secret_fixture)
        review["request"]["uid"] = uid
        review["request"]["namespace"] = review["request"]["object"]["metadata"]["namespace"] = namespace
        review["request"]["object"]["data"]["bulk"] = MARK
    else:
        review = sb.review(uid, namespace, image, "memory")
        pod = review["request"]["object"]
        where = {"annotation": (pod["metadata"], "annotations"), "labels": (pod["metadata"], "labels"),
                 "env": (pod["spec"]["containers"][0], "env"), "containers": (pod["spec"], "containers"),
                 "empty-containers": (pod["spec"], "containers"), "empty-volumes": (pod["spec"], "volumes")}
        if shape not in where:
            raise BenchError(f"unknown shape {shape}")
        parent, key = where[shape]
        parent[key] = MARK
    text = json.dumps(review, separators=(",", ":"))
    if shape == "secret-entries":
        # Entries of the Secret's data map itself, next to .dockerconfigjson.
        text = text.replace(f',"bulk":"{MARK}"', "," + MARK)
    else:
        text = text.replace(f'"{MARK}"', MARK)
    room = size - (len(text) - len(MARK))
    if room < 64:
        raise BenchError(f"a review of {size} bytes has no room for its shape")
    bulk = {
        "annotation": lambda r: '{"bulk":"' + "x" * (r - 11) + '"}',
        "secret-value": lambda r: '"' + "QUFB" * ((r - 2) // 4) + '"',
        "labels": lambda r: "{" + fill(lambda i: f'"l{i}":""', r - 2) + "}",
        "secret-entries": lambda r: fill(lambda i: f'"k{i}":""', r),
        "env": lambda r: "[" + fill(lambda i: f'{{"name":"E{i}","value":"v"}}', r - 2) + "]",
        "containers": lambda r: "[" + fill(lambda i: f'{{"name":"c{i}","image":"{image}"}}', r - 2) + "]",
        "empty-containers": lambda r: "[" + fill(lambda i: "{}", r - 2) + "]",
        "empty-volumes": lambda r: "[" + fill(lambda i: "{}", r - 2) + "]",
    }[shape](room)
    body = text.replace(MARK, bulk).encode()
    if len(body) > size:
        raise BenchError(f"{shape}: built {len(body)} bytes, over {size}")
    return body + b" " * (size - len(body))


# ------------------------------------------------------------------ HTTP/1.1 client
def read_head(f):
    line = f.readline(65536)
    if not line:
        raise ConnectionError("closed before a status line")
    m = re.match(rb"HTTP/1\.1 (\d{3})", line)
    if not m:
        raise ConnectionError(f"not a status line: {line[:80]!r}")
    headers = {}
    while True:
        h = f.readline(65536)
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(m.group(1)), headers


def post(port, ctx, path, body, chunked=False, timeout=120):
    """POSTs one review over TLS with `Expect: 100-continue`, so a review refused from its
    Content-Length is answered before its body is sent (as h2 lets the apiserver read an early
    answer). Returns (status or 'reset', first line of the body)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        tls.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"{length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").encode())
        f = tls.makefile("rb")
        status, headers = read_head(f)
        if status == 100:
            try:
                if chunked:
                    step = 64 * 1024
                    for i in range(0, len(body), step):
                        part = body[i:i + step]
                        tls.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
                    tls.sendall(b"0\r\n\r\n")
                else:
                    tls.sendall(body)
            except OSError:
                pass  # an early answer may be waiting
            try:
                status, headers = read_head(f)
            except (OSError, ConnectionError):
                return "reset", ""
        n = int(headers.get("content-length", "0") or 0)
        answer = f.read(min(n, 4096)) if n else b""
        return status, answer.decode(errors="replace").split("\n", 1)[0][:300]
    except (OSError, ConnectionError) as e:
        return "reset", str(e)[:200]
    finally:
        raw.close()


# ------------------------------------------------------------------ memory
def proc_status(pid):
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            fields[k] = int(v.split()[0]) / 1024
    return fields


def reset_peak(pid):
    """Sets VmHWM back to the current RSS (Linux ≥ 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Sampler(threading.Thread):
    """Samples VmRSS every 5 ms until stopped; keeps the maximum."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop_ = pid, 0.0, threading.Event()

    def run(self):
        while not self.stop_.is_set():
            try:
                self.peak = max(self.peak, proc_status(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            self.stop_.wait(0.005)

    def stop(self):
        self.stop_.set()
        self.join(timeout=5)
        return self.peak


def batch(serve, ctx, path, body, concurrency, chunked=False):
    """`concurrency` reviews at once; returns statuses, serve's peak RSS during it and a 429 text."""
    pid = serve.proc.pid
    can_reset = reset_peak(pid)
    sampler = Sampler(pid)
    sampler.start()
    gate = threading.Barrier(concurrency)

    def one(_):
        gate.wait(timeout=60)
        return post(serve.https_port, ctx, path, body, chunked=chunked)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(one, range(concurrency)))
    secs = time.perf_counter() - t0
    sampled = sampler.stop()
    mem = proc_status(pid)
    counts = {}
    for status, _ in answers:
        counts[str(status)] = counts.get(str(status), 0) + 1
    texts = {str(s): t for s, t in answers if s != 200}
    return {"statuses": counts, "seconds": round(secs, 2), "peak_rss_mib": round(mem["VmHWM"], 1),
            "sampled_rss_mib": round(sampled, 1), "rss_after_mib": round(mem["VmRSS"], 1),
            "peak_is_per_batch": can_reset, "refusal_texts": texts}


def wait_released(serve, timeout=30):
    """Waits until serve's review memory gauge is back to 0 (when the binary has it)."""
    deadline = time.monotonic() + timeout
    while True:
        held = serve.metrics().get("privatize_review_memory_bytes")
        if held is None or held == 0:
            return held
        if time.monotonic() > deadline:
            raise BenchError(f"serve still holds {held} bytes of review memory {timeout} s after a batch")
        time.sleep(0.1)


# ------------------------------------------------------------------ the limit
def quantity_mib(q):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?", q.strip().strip("'\""))
    if not m:
        raise BenchError(f"cannot read the quantity {q!r}")
    scale = {None: 1, "Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]
    return float(m.group(1)) * scale / MIB


def install_memory_limit(binary, env):
    """serve's memory limit as `privatize install --dry-run` renders it: the Deployment whose
    container runs `serve`, its resources.limits.memory."""
    out = run_checked([binary, "install", "--dry-run", "--target-registry",
                       "123456789012.dkr.ecr.us-east-1.amazonaws.com/mirror"], timeout=60, env=env,
                      what="privatize install --dry-run").stdout.decode()
    for doc in re.split(r"(?m)^---\s*$", out):
        if not re.search(r"(?m)^kind: Deployment\s*$", doc) or not re.search(r"(?m)^\s*- serve\s*$", doc):
            continue
        lines = doc.splitlines()
        for i, line in enumerate(lines):
            if re.match(r"^\s*limits:\s*$", line):
                indent = len(line) - len(line.lstrip())
                for nxt in lines[i + 1:]:
                    if len(nxt) - len(nxt.lstrip()) <= indent:
                        break
                    m = re.match(r"^\s*memory:\s*(\S+)", nxt)
                    if m:
                        return m.group(1), quantity_mib(m.group(1))
    raise BenchError("no memory limit for serve's Deployment in `privatize install --dry-run`")


# ------------------------------------------------------------------ main
def on_sigterm(signum, frame):
    raise KeyboardInterrupt()


def start_serve(binary, senv, tls_dir, tmp, name, extra):
    s = sb.Serve(binary, senv, tls_dir, tmp / f"{name}.log", "warn")
    s.argv += extra
    s.start()
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every batch (default 3)")
    ap.add_argument("--concurrency", type=int, default=64, help="reviews sent at once (default 64)")
    ap.add_argument("--size", type=int, default=MAX_BODY, help=f"bytes per review (default {MAX_BODY}, 3 MiB)")
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "privatize"),
                    help="the privatize to run (default target/release/privatize)")
    ap.add_argument("--budget", help=f"{BUDGET_FLAG} for the rounds (default: serve's own default)")
    ap.add_argument("--no-amplification", action="store_true", help="skip the one-review-per-shape table")
    ap.add_argument("--no-setup", action="store_true", help="skip testbed/up, testbed/kube/up and cargo build")
    ap.add_argument("--json", default=str(ROOT / "target" / "bench" / "serve-memory.json"),
                    help="where to write the raw numbers (default target/bench/serve-memory.json)")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 20 or not 1 <= args.concurrency <= 256 or not 1024 <= args.size <= MAX_BODY:
        ap.error(f"--rounds must be 1..20, --concurrency 1..256, --size 1024..{MAX_BODY}")

    result = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "host": {"nproc": os.cpu_count(), "loadavg_start": os.getloadavg()},
              "settings": vars(args), "amplification": [], "batches": []}
    json_path = Path(args.json)
    sess = secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-memory-"))
    kube = serve = None
    namespace = None
    signal.signal(signal.SIGTERM, on_sigterm)
    code = 0
    try:
        env = base_env()
        if not args.no_setup:
            for argv, what in (([str(ROOT / "testbed" / "up")], "testbed/up"),
                               ([str(ROOT / "testbed" / "kube" / "up")], "testbed/kube/up"),
                               (["cargo", "build", "--release", "--locked"], "cargo build --release")):
                log(what)
                run_checked(argv, timeout=3600, env=env, what=what)
        binary = args.binary
        result["version"] = run_checked([binary, "--version"], timeout=30).stdout.decode().strip()
        serve_help = run_checked([binary, "serve", "--help"], timeout=30).stdout.decode()
        has_budget = BUDGET_FLAG in serve_help
        m = re.search(r"--review-memory-budget <[^>]+>.*?\[default: ([^\]]+)\]", serve_help, re.S)
        result["budget"] = args.budget or (m.group(1) if m else None)
        if args.budget and not has_budget:
            raise BenchError(f"{binary} has no {BUDGET_FLAG}")
        limit_text, limit_mib = install_memory_limit(binary, env)
        result["limit"] = {"rendered": limit_text, "mib": limit_mib}

        state_dir = Path(os.environ.get("PRIVATIZE_TESTBED_DIR", ROOT / "target" / "testbed"))
        tenv = read_env_file(state_dir / "env")
        images = json.loads(Path(tenv["IMAGES_JSON"]).read_text())
        for addr, what in ((tenv["SOURCE_REGISTRY"], "source"), (tenv["TARGET_REGISTRY"], "target"),
                           (tenv["MOTO_ENDPOINT"], "moto")):
            sb.loopback(addr, what)
        kubeconfig = Path(os.environ.get("PRIVATIZE_KUBECONFIG", ROOT / "target" / "kube" / "kubeconfig"))
        kube = sb.Kube(kubeconfig, tmp)
        namespace = f"bench-serve-memory-{sess}"
        kube.create_namespace(namespace)
        kube.request("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                     {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "privatize-ca"},
                      "data": {"ca.pem": Path(tenv["TARGET_CA_FILE"]).read_text()}}, ok=(201,))
        target_registry = f"{sb.target_host_alias(tenv['TARGET_REGISTRY'])}/bench/serve-memory-{sess}"
        image = images["tiny"]["reference"]
        penv = dict(env)
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                  "PRIVATIZE_LOG", "DOCKER_CONFIG", "POD_NAME", "POD_NAMESPACE"):
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
        log(f"mirroring {image} to {target_registry}")
        run_checked([binary, "sync-image", "--to", target_registry, image], timeout=300, env=penv,
                    what="privatize sync-image")
        tls_dir = tmp / "tls"
        run_checked([binary, "gen-certs", "--out-dir", str(tls_dir), "--san", "127.0.0.1"], timeout=60,
                    env=penv, what="privatize gen-certs")
        senv = dict(penv)
        senv.update({"PRIVATIZE_EXCLUDE": "example.invalid", "PRIVATIZE_EXCLUDE_NAMESPACES": "kube-system",
                     "COPY_JOB_NAMESPACE": namespace, "PRIVATIZE_SHUTDOWN_DELAY": "0s",
                     "COPY_JOB_IMAGE": f"{tenv['SOURCE_REGISTRY']}/privatize/privatize:bench",
                     "PRIVATIZE_BODY_READ_TIMEOUT": "60s"})
        ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
        secret_fixture = (ROOT / "bench" / "data" / "secret-create-managed.json").read_text()

        def body(shape, size, n):
            return shaped_review(shape, size, namespace, image, f"bench-memory-{shape}-{n}", secret_fixture)

        if not args.no_amplification:
            extra = [BUDGET_FLAG, "2GiB"] if has_budget else []
            for shape, size in AMPLIFICATION:
                s = start_serve(binary, senv, tls_dir, tmp, f"amp-{shape}", extra)
                try:
                    time.sleep(1)
                    idle = proc_status(s.proc.pid)["VmRSS"]
                    path = "/mutate/secrets" if shape.startswith("secret") else "/mutate/pods"
                    status, text = post(s.https_port, ctx, path, body(shape, size, 0))
                    peak = proc_status(s.proc.pid)["VmHWM"]
                finally:
                    s.stop()
                amp = (peak - idle) * MIB / size
                row = {"shape": shape, "review_bytes": size, "status": status, "idle_rss_mib": round(idle, 1),
                       "peak_rss_mib": round(peak, 1), "rss_per_review_byte": round(amp, 1), "answer": text}
                result["amplification"].append(row)
                log(f"amplification {shape}: {status}, {amp:.1f} bytes of RSS per byte of review")

        extra = [BUDGET_FLAG, args.budget] if args.budget else []
        serve = start_serve(binary, senv, tls_dir, tmp, "serve", extra)
        log(f"serve ready (pid {serve.proc.pid}, https :{serve.https_port})")
        time.sleep(2)
        result["idle_rss_mib"] = round(proc_status(serve.proc.pid)["VmRSS"], 1)
        # One small review first: the image's presence is then cached, as in a busy cluster.
        status, text = post(serve.https_port, ctx, "/mutate/pods", body("annotation", 4096, 0))
        if status != 200:
            raise BenchError(f"a small review was answered {status}: {text}")
        plan = [("pods", s, False) for s in POD_SHAPES] + [("secrets", s, False) for s in SECRET_SHAPES]
        plan.append(("pods", "annotation", True))
        for rnd in range(args.rounds):
            for kind, shape, chunked in plan:
                review_body = body(shape, args.size, rnd)
                r = batch(serve, ctx, f"/mutate/{kind}", review_body, args.concurrency, chunked=chunked)
                r.update({"round": rnd + 1, "path": f"/mutate/{kind}", "shape": shape, "chunked": chunked,
                          "review_bytes": len(review_body)})
                r["held_after"] = wait_released(serve)
                result["batches"].append(r)
                log(f"round {rnd + 1} {kind} {shape}{' chunked' if chunked else ''}: {r['statuses']}, "
                    f"peak {r['peak_rss_mib']} MiB")
        result["end_rss_mib"] = round(proc_status(serve.proc.pid)["VmRSS"], 1)
        result["metrics"] = {k: v for k, v in serve.metrics().items()
                             if k.startswith(("privatize_reviews_refused", "privatize_admissions_total"))}
        result["loadavg_end"] = os.getloadavg()
    except (BenchError, KeyboardInterrupt) as e:
        result["error"] = str(e) or "interrupted"
        print(f"bench: ABORTED: {result['error']}", file=sys.stderr)
        if serve and serve.proc:
            print(f"serve's log, last lines:\n{serve.log_tail(1500)}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if serve:
            serve.stop()
        if kube:
            if namespace:
                try:
                    kube.delete_namespace(namespace)
                except BenchError as e:
                    log(f"cleanup: {e}")
            kube.close()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)

    if code == 0:
        report(result)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"raw numbers: {json_path}")
    return code


def report(result):
    print(f"\nserve memory benchmark: {result['version']}, {result['host']['nproc']} cores, "
          f"load average {result['host']['loadavg_start'][0]:.2f} at the start")
    if result["amplification"]:
        print("\none review alone, fresh serve (RSS it adds per byte of review):")
        print(f"{'shape':<18} {'bytes':>9} {'status':>7} {'idle MiB':>9} {'peak MiB':>9} {'RSS/byte':>9}")
        for a in result["amplification"]:
            print(f"{a['shape']:<18} {a['review_bytes']:>9} {a['status']!s:>7} {a['idle_rss_mib']:>9.1f} "
                  f"{a['peak_rss_mib']:>9.1f} {a['rss_per_review_byte']:>9.1f}")
    s = result["settings"]
    print(f"\n{s['concurrency']} concurrent reviews of {s['size']} bytes, {s['rounds']} round(s); "
          f"review memory budget {result['budget'] or '(none: this binary has no budget)'}")
    print(f"{'round':>5} {'path':<16} {'shape':<22} {'200':>4} {'413':>4} {'429':>4} {'other':>6} "
          f"{'peak MiB':>9} {'seconds':>8}")
    for b in result["batches"]:
        st = dict(b["statuses"])
        other = sum(v for k, v in st.items() if k not in ("200", "413", "429"))
        shape = b["shape"] + (" (chunked)" if b["chunked"] else "")
        print(f"{b['round']:>5} {b['path']:<16} {shape:<22} {st.get('200', 0):>4} {st.get('413', 0):>4} "
              f"{st.get('429', 0):>4} {other:>6} {b['peak_rss_mib']:>9.1f} {b['seconds']:>8.2f}")
    peak = max(b["peak_rss_mib"] for b in result["batches"])
    sampled = max(b["sampled_rss_mib"] for b in result["batches"])
    totals = {}
    for b in result["batches"]:
        for k, v in b["statuses"].items():
            totals[k] = totals.get(k, 0) + v
    limit = result["limit"]
    held = peak < limit["mib"]
    print(f"\nidle RSS {result['idle_rss_mib']:.1f} MiB; end RSS {result['end_rss_mib']:.1f} MiB")
    print(f"answers: {', '.join(f'{k}: {v}' for k, v in sorted(totals.items()))}")
    print(f"peak RSS {peak:.1f} MiB (sampled VmRSS max {sampled:.1f} MiB) against the memory limit "
          f"install sets for serve, {limit['rendered']} ({limit['mib']:.0f} MiB): "
          f"{peak / limit['mib']:.0%} of it; the limit {'HELD' if held else 'DID NOT HOLD'}")
    result["summary"] = {"peak_rss_mib": peak, "sampled_rss_mib": sampled, "limit_mib": limit["mib"],
                         "held": held, "answers": totals}


if __name__ == "__main__":
    sys.exit(main())
