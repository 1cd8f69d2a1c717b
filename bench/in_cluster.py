#!/usr/bin/env python3
"""bench/in_cluster.py: privatize as users run it, inside the cluster testbed
(testbed/cluster): `privatize install` of two serve replicas behind their
Service, then per round

  - install -> serve Ready (install returns once the Deployment rolled out
    and the webhooks are registered);
  - pod CREATE -> Running of a never-seen image through the in-cluster serve
    (gate, copy Job, release, pull from the copy) against the same pod
    pulling the source directly (a namespace serve skips);
  - admissions lost while `install` rolls serve over with a new
    configuration under load (pods created at --rate a second through the
    apiserver): the apiserver's own counters for the pod webhook (calls not
    answered 200, failed open or rejected) and pods admitted with their
    public image. Goal: 0;
  - uninstall.

    python3 bench/in_cluster.py [--rounds 3] [--rate 20] [--no-setup] [--json PATH]

Only 127.0.0.1 and the testbed's bridge (198.18.0.1, pods 198.18.0.0/24)
are contacted.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, BenchError, base_env, log, read_env_file, run_checked  # noqa: E402
from node import exports, free_port  # noqa: E402

BRIDGE = "198.18.0.1"
COPY_JOB_POD = """\
containers:
- name: sync-image
  envFrom:
  - secretRef: {name: aws-push-keys}
"""
POD_WEBHOOK = 'name="pods.privatize.io"'
# The apiserver's counters of webhook calls, by name (a suffix filter would drop
# fail_open_count{name=...}, which looks like a histogram's _count series).
COUNTERS = tuple(f"apiserver_admission_webhook_{c}{{" for c in ("request_total", "fail_open_count",
                                                                 "rejection_count"))


def port(address):
    return address.rsplit(":", 1)[1]


class Bench:
    def __init__(self, args):
        self.args = args
        self.env = base_env()
        self.session = f"{int(time.time()) % 100000}"
        self.work = Path(tempfile.mkdtemp(prefix="privatize-bench-in-cluster-"))
        self.proxy = None
        self.namespaces = []

    def setup(self):
        if not self.args.no_setup:
            log("testbed/up")
            run_checked([str(ROOT / "testbed/up")], timeout=600)
        log("testbed/cluster/up")
        up = run_checked([str(ROOT / "testbed/cluster/up")], timeout=900)
        self.env.update(exports(up.stdout.decode()))
        self.env.pop("AWS_REGION", None)
        self.kubectl = self.env["KUBECTL"]
        self.tb = read_env_file(ROOT / "target/testbed/env")
        state = Path(os.environ.get("PRIVATIZE_CLUSTER_DIR", ROOT / "target/cluster"))
        self.crictl = [str(state / "bin/crictl"), "--config", str(state / "etc/crictl.yaml")]
        self.src = self.tb["SOURCE_REGISTRY"]
        self.bridge_src = f"{BRIDGE}:{port(self.src)}"
        log("scripts/build-image --push")
        pushed = f"{self.src}/privatize/privatize:bench"
        digest = run_checked([str(ROOT / "scripts/build-image"), "--push", pushed],
                             timeout=1800).stdout.decode().strip()
        self.image = f"{self.bridge_src}/privatize/privatize@{digest}"
        self.privatize = run_checked([str(ROOT / "scripts/build-image"), "--print-binary"],
                                     timeout=1800).stdout.decode().strip()
        (self.work / "copy-job-pod.yaml").write_text(COPY_JOB_POD)
        api = free_port()
        self.proxy = subprocess.Popen([self.kubectl, "proxy", "--address", "127.0.0.1", "--port", str(api)],
                                      env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.api = f"http://127.0.0.1:{api}"
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.api}/readyz", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise BenchError("kubectl proxy never answered")
                time.sleep(0.2)

    def k(self, argv, check=True, timeout=120, input=None):
        if check:
            return run_checked([self.kubectl, *argv], env=self.env, timeout=timeout, input=input,
                               what="kubectl " + " ".join(argv[:2]))
        return subprocess.run([self.kubectl, *argv], env=self.env, capture_output=True, timeout=timeout)

    def namespace(self, name, labels=()):
        self.namespaces.append(name)
        self.k(["create", "namespace", name])
        for label in labels:
            self.k(["label", "namespace", name, label])
        deadline = time.time() + 30
        while self.k(["-n", name, "get", "serviceaccount", "default"], check=False).returncode:
            if time.time() > deadline:
                raise BenchError(f"no default ServiceAccount in {name}")
            time.sleep(0.2)

    def install_argv(self, system, apps, direct, registry, extra=()):
        moto = f"http://{BRIDGE}:{port(self.tb['MOTO_ENDPOINT'])}"
        env = ["PRIVATIZE_TARGET_KIND=ecr", "AWS_REGION=us-east-1", f"AWS_ENDPOINT_URL={moto}",
               f"PRIVATIZE_PLAIN_HTTP={self.bridge_src}", "PRIVATIZE_EXCLUDE=example.invalid",
               f"PRIVATIZE_CREDENTIAL_NAMESPACES={apps}", *extra]
        argv = [self.privatize, "install", "--namespace", system, "--image", self.image,
                "--ca-file", self.tb["TARGET_CA_FILE"], "--aws-credentials-secret", "aws-pull-keys",
                "--credential-namespaces", apps, "--exclude-namespaces", f"kube-system,{direct}",
                "--copy-job-pod-template",
                str(self.work / "copy-job-pod.yaml"), "--wait-timeout", "180"]
        for e in env:
            argv += ["--env", e]
        return argv, {**self.env, "ECR_REGISTRY": registry}

    def round(self, r):
        system, apps, direct = (f"privatize-b{self.session}-{r}", f"apps-b{self.session}-{r}",
                                f"direct-b{self.session}-{r}")
        registry = f"{BRIDGE}:{port(self.tb['TARGET_REGISTRY'])}/bench-in-cluster-{self.session}-{r}"
        self.namespace(system)
        for name, key in (("aws-pull-keys", "PULLKEY"), ("aws-push-keys", "PUSHKEY")):
            self.k(["-n", system, "create", "secret", "generic", name, f"--from-literal=AWS_ACCESS_KEY_ID={key}",
                    "--from-literal=AWS_SECRET_ACCESS_KEY=testing"])
        self.namespace(apps, ["privatize.io/ecr-credentials=enabled"])
        self.namespace(direct)
        row = {}

        argv, env = self.install_argv(system, apps, direct, registry)
        t0 = time.monotonic()
        run_checked(argv, env=env, timeout=300, what="privatize install")
        row["install_ready"] = time.monotonic() - t0
        self.k(["-n", system, "create", "job", "--from=cronjob/privatize-refresh-secrets", "refresh-now"])
        self.k(["-n", system, "wait", "job/refresh-now", "--for=condition=Complete", "--timeout=120s"], timeout=130)

        fresh = f"app-{self.session}-{r}:v1"
        run_checked(["skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
                     f"docker://{self.src}/testbed/busybox:1.36", f"docker://{self.src}/bench-in-cluster/{fresh}"],
                    timeout=120)
        image = f"{self.bridge_src}/bench-in-cluster/{fresh}"
        order = ["direct", "privatize"] if r % 2 == 0 else ["privatize", "direct"]
        for how in order:
            subprocess.run([*self.crictl, "rmi", image, f"{self.bridge_src}/testbed/busybox:1.36"],
                           capture_output=True)
            ns = direct if how == "direct" else apps
            row[how] = self.pod_to_running(ns, f"{how}-{r}", image)
            pod = json.loads(self.k(["-n", ns, "get", "pod", f"{how}-{r}", "-o", "json"]).stdout)
            ran = pod["spec"]["containers"][0]["image"]
            if how == "privatize" and not ran.startswith(registry + "/"):
                raise BenchError(f"pod {how}-{r} runs {ran}, not the copy under {registry}")
            if how == "privatize":
                subprocess.run([*self.crictl, "rmi", ran], capture_output=True)
        row["added"] = row["privatize"] - row["direct"]

        upgrade, env = self.install_argv(system, apps, direct, registry,
                                         [f"PRIVATIZE_SWEEP_INTERVAL={20 + r}s"])
        row.update(self.upgrade_under_load(upgrade, env, apps, image, registry))

        t0 = time.monotonic()
        run_checked([self.privatize, "uninstall", "--namespace", system], env=self.env, timeout=300,
                    what="privatize uninstall")
        row["uninstall"] = time.monotonic() - t0
        for ns in (apps, direct):
            self.k(["delete", "namespace", ns, "--wait=false"], check=False)
        return row

    def pod_to_running(self, ns, name, image):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"terminationGracePeriodSeconds": 1, "enableServiceLinks": False,
                        "containers": [{"name": "app", "image": image,
                                        "command": ["sh", "-c", "exec sleep 3600"]}]}}
        t0 = time.monotonic()
        self.k(["-n", ns, "create", "-f", "-"], input=json.dumps(pod).encode())
        self.k(["-n", ns, "wait", f"pod/{name}", "--for=jsonpath={.status.phase}=Running",
                "--timeout=180s"], timeout=200)
        return time.monotonic() - t0

    def counters(self):
        text = urllib.request.urlopen(f"{self.api}/metrics", timeout=30).read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith(COUNTERS) and POD_WEBHOOK in line:
                series, _, value = line.rpartition(" ")
                out[series] = float(value)
        return out

    def upgrade_under_load(self, argv, env, apps, image, registry):
        """Runs `argv` while pods are created at --rate a second (until 15 s
        after it returns); what the apiserver counted for the pod webhook."""
        before = self.counters()
        stop = threading.Event()
        results, lock = [], threading.Lock()

        def create(i):
            body = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"load-{i}"},
                               "spec": {"nodeSelector": {"privatize.test/nowhere": "true"},
                                        "containers": [{"name": "app", "image": image}]}}).encode()
            req = urllib.request.Request(f"{self.api}/api/v1/namespaces/{apps}/pods", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
            try:
                admitted = json.loads(urllib.request.urlopen(req, timeout=30).read())
                ran = admitted["spec"]["containers"][0]["image"]
                with lock:
                    results.append(ran.startswith(registry + "/"))
            except OSError as e:
                with lock:
                    results.append(e)

        def load():
            i, threads, next_at = 0, [], time.monotonic()
            while not stop.is_set():
                t = threading.Thread(target=create, args=(i,))
                t.start()
                threads.append(t)
                i += 1
                next_at += 1 / self.args.rate
                time.sleep(max(0, next_at - time.monotonic()))
            for t in threads:
                t.join()

        loader = threading.Thread(target=load)
        loader.start()
        t0 = time.monotonic()
        try:
            run_checked(argv, env=env, timeout=300, what="privatize install (the upgrade)")
            rolled = time.monotonic() - t0
            time.sleep(15)
        finally:
            stop.set()
            loader.join()
        after = self.counters()
        delta = {s: v - before.get(s, 0.0) for s, v in after.items()}
        answered = sum(v for s, v in delta.items() if s.startswith("apiserver_admission_webhook_request_total")
                       and 'code="200"' in s and 'rejected="false"' in s)
        lost = sum(v for s, v in delta.items() if v > 0 and (
            s.startswith("apiserver_admission_webhook_fail_open_count")
            or s.startswith("apiserver_admission_webhook_rejection_count")
            or (s.startswith("apiserver_admission_webhook_request_total")
                and not ('code="200"' in s and 'rejected="false"' in s))))
        errors = [r for r in results if isinstance(r, Exception)]
        return {"rollout": rolled, "load_pods": len(results), "webhook_answered": answered,
                "webhook_lost": lost, "pods_unchanged": sum(1 for r in results if r is False),
                "create_errors": len(errors)}

    def cleanup(self):
        for ns in reversed(self.namespaces):
            subprocess.run([self.kubectl, "delete", "namespace", ns, "--wait=false"], env=self.env,
                           capture_output=True)
        if self.proxy:
            self.proxy.terminate()
            self.proxy.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=20, help="pods a second during the upgrade (default 20)")
    ap.add_argument("--no-setup", action="store_true", help="skip testbed/up (the cluster is always brought up)")
    ap.add_argument("--json", default=str(ROOT / "target/bench/in_cluster.json"))
    args = ap.parse_args()
    bench = Bench(args)
    rows = []
    try:
        bench.setup()
        for r in range(args.rounds):
            row = bench.round(r)
            rows.append(row)
            log(f"round {r}: install -> Ready {row['install_ready']:.1f} s; CREATE -> Running direct "
                f"{row['direct']:.2f} s, through serve {row['privatize']:.2f} s; upgrade {row['rollout']:.1f} s "
                f"under {row['load_pods']} pods: {row['webhook_lost']:.0f} webhook calls lost, "
                f"{row['pods_unchanged']} pods unchanged, {row['create_errors']} create errors")
    except BenchError as e:
        print(f"bench/in_cluster.py: {e}", file=sys.stderr)
        return 1
    finally:
        bench.cleanup()
    med = {k: statistics.median(r[k] for r in rows)
           for k in ("install_ready", "direct", "privatize", "added", "rollout", "uninstall")}
    lost = sum(r["webhook_lost"] + r["pods_unchanged"] + r["create_errors"] for r in rows)
    pods = sum(r["load_pods"] for r in rows)
    print(f"\nprivatize in the cluster testbed, {len(rows)} rounds (median)")
    print(f"  install -> serve Ready (2 replicas):   {med['install_ready']:6.2f} s")
    print(f"  pod CREATE -> Running, source direct:  {med['direct']:6.2f} s")
    print(f"  ... through in-cluster serve (copy):   {med['privatize']:6.2f} s   "
          f"ratio {med['privatize'] / med['direct']:.2f}x, added {med['added']:.2f} s")
    print(f"  upgrade (install -> rolled out):       {med['rollout']:6.2f} s")
    print(f"  uninstall:                             {med['uninstall']:6.2f} s")
    print(f"  admissions lost during the upgrades:   {lost:.0f} of {pods} pods (goal 0: "
          f"{'met' if lost == 0 else 'NOT met'})")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rounds": rows, "median": med}, indent=2))
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
