#!/usr/bin/env python3
"""bench/node.py: on the real node (testbed/cluster), pod CREATE -> Running for
a never-seen image through privatize (gate, copy Job in privatize's own image,
release, pull from the private copy) against the same pod pulling the source
directly, and the copy Job's own time from creation to completion.

Goal (issue 9): added time <= the copy Job's own time + 3 s.

    python3 bench/node.py [--rounds 5] [--no-setup] [--json PATH]

Each round pushes the test image under a new source name (the copy really
copies, into a new target repository) and removes both images from the node
before each measured pod (the node really pulls). The order alternates
between rounds. Only 127.0.0.1 is contacted.
"""

import argparse
import datetime
import json
import shutil
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, BenchError, base_env, log, read_env_file, run_checked  # noqa: E402

TEMPLATE = """\
hostNetwork: true
containers:
- env:
  - name: AWS_ACCESS_KEY_ID
    valueFrom: {secretKeyRef: {name: aws-credentials, key: AWS_ACCESS_KEY_ID}}
  - name: AWS_SECRET_ACCESS_KEY
    valueFrom: {secretKeyRef: {name: aws-credentials, key: AWS_SECRET_ACCESS_KEY}}
"""


def exports(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            k, v = line[len("export "):].split("=", 1)
            out[k] = v.strip("'\"")
    return out


class Bench:
    def __init__(self, args):
        self.args = args
        self.env = base_env()
        self.session = f"{int(time.time()) % 100000}"
        self.work = Path(tempfile.mkdtemp(prefix="privatize-bench-node-"))
        self.serve = None

    # -- setup ---------------------------------------------------------------
    def setup(self):
        if not self.args.no_setup:
            log("testbed/up, testbed/cluster/up")
            run_checked([str(ROOT / "testbed/up")], timeout=600)
        up = run_checked([str(ROOT / "testbed/cluster/up")], timeout=900)
        self.env.update(exports(up.stdout.decode()))
        self.kubectl = self.env["KUBECTL"]
        self.tb = read_env_file(ROOT / "target/testbed/env")
        state = self.state = Path(os.environ.get("PRIVATIZE_CLUSTER_DIR", ROOT / "target/cluster"))
        self.crictl = [str(state / "bin/crictl"), "--config", str(state / "etc/crictl.yaml")]
        src = self.tb["SOURCE_REGISTRY"]
        self.image = f"{src}/privatize/privatize:bench"
        log("scripts/build-image --push")
        digest = run_checked([str(ROOT / "scripts/build-image"), "--push", self.image],
                             timeout=1800).stdout.decode().strip()
        self.image = f"{self.image}@{digest}"  # pinned: the node may hold an older :bench
        self.privatize = run_checked([str(ROOT / "scripts/build-image"), "--print-binary"],
                                     timeout=1800).stdout.decode().strip()
        if not Path(self.privatize).exists():
            raise BenchError(f"{self.privatize}: not built by scripts/build-image")
        self.system = f"privatize-bench-{self.session}"
        self.apps = f"bench-apps-{self.session}"
        self.direct = f"bench-direct-{self.session}"
        self.registry = f"{self.tb['TARGET_REGISTRY']}/bench-node-{self.session}"
        self.env.update({
            "ECR_REGISTRY": self.registry, "PRIVATIZE_TARGET_KIND": "ecr",
            "AWS_ENDPOINT_URL": self.tb["MOTO_ENDPOINT"], "AWS_REGION": self.tb["AWS_REGION"],
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true", "PRIVATIZE_PROGRESS": "never",
            "PRIVATIZE_CA_FILE": self.tb["TARGET_CA_FILE"], "PRIVATIZE_PLAIN_HTTP": src,
            "PRIVATIZE_EXCLUDE": "example.invalid",
            "PRIVATIZE_EXCLUDE_NAMESPACES": f"kube-system,{self.system},{self.direct}",
            "COPY_JOB_NAMESPACE": self.system, "COPY_JOB_IMAGE": self.image,
        })
        https, http = free_port(), free_port()
        p = self.p
        p(["install", "--namespace", self.system, "--webhook-url", f"https://127.0.0.1:{https}",
           "--replicas", "0", "--image", self.image, "--ca-file", self.tb["TARGET_CA_FILE"]])
        self.k(["-n", self.system, "create", "secret", "generic", "aws-credentials",
                "--from-literal=AWS_ACCESS_KEY_ID=testing", "--from-literal=AWS_SECRET_ACCESS_KEY=testing"])
        (self.work / "template.yaml").write_text(TEMPLATE)
        for key in ("crt", "key"):
            data = self.k(["-n", self.system, "get", "secret", "privatize-tls", "-o",
                           f"jsonpath={{.data.tls\\.{key}}}"]).stdout
            (self.work / f"tls.{key}").write_bytes(
                run_checked(["base64", "-d"], input=data, timeout=10).stdout)
        self.serve_log = open(self.work / "serve.log", "wb")
        self.serve = subprocess.Popen(
            [self.privatize, "serve", "--listen-address", "127.0.0.1", "--https-port", str(https),
             "--http-port", str(http), "--sweep-interval", self.args.sweep_interval,
             "--copy-job-pod-template", str(self.work / "template.yaml"),
             "--tls-cert-path", str(self.work / "tls.crt"), "--tls-key-path", str(self.work / "tls.key")],
            env=self.env, stdout=subprocess.DEVNULL, stderr=self.serve_log)
        deadline = time.time() + 20
        while subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{http}/readyz"]).returncode:
            if time.time() > deadline or self.serve.poll() is not None:
                raise BenchError("serve never became ready: " + (self.work / "serve.log").read_text()[-2000:])
            time.sleep(0.1)
        for ns in (self.apps, self.direct):
            self.k(["create", "namespace", ns])
        self.k(["label", "namespace", self.apps, "privatize.io/ecr-credentials=enabled"])
        for ns in (self.apps, self.direct):
            deadline = time.time() + 30
            while self.k(["-n", ns, "get", "serviceaccount", "default"], check=False).returncode:
                if time.time() > deadline:
                    raise BenchError(f"no default ServiceAccount in {ns}")
                time.sleep(0.2)
        p(["refresh-secrets", "--ensure", "--namespace", self.apps])

    def k(self, argv, check=True, timeout=120):
        if check:
            return run_checked([self.kubectl, *argv], env=self.env, timeout=timeout, what="kubectl " + argv[0])
        return subprocess.run([self.kubectl, *argv], env=self.env, capture_output=True, timeout=timeout)

    def p(self, argv):
        return run_checked([self.privatize, *argv], env=self.env, timeout=300, what="privatize " + argv[0])

    # -- one measurement -------------------------------------------------------
    def forget(self, *refs):
        """Removes images from the node so that the next pod really pulls."""
        for ref in refs:
            subprocess.run([*self.crictl, "rmi", ref], capture_output=True)

    def pod_to_running(self, ns, name, image, jobs_before=None):
        """Seconds from `kubectl create` to phase Running (a watch, not a poll);
        with `jobs_before`, also the copy Job's own time: from the create (the
        Job is made inside that admission) to the copy container's last log
        line (CRI timestamps, ns), and to the Job's `Complete` as watched."""
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"terminationGracePeriodSeconds": 1, "enableServiceLinks": False,
                        "containers": [{"name": "app", "image": image,
                                        "command": ["sh", "-c", "exec sleep 3600"]}]}}
        t0, t0_wall = time.monotonic(), time.time()
        run_checked([self.kubectl, "-n", ns, "create", "-f", "-"], env=self.env, timeout=30,
                    input=json.dumps(pod).encode(), what="kubectl create pod")
        job_done = {}
        if jobs_before is not None:
            new = [j for j in self.jobs() if j not in jobs_before]
            if len(new) != 1:
                raise BenchError(f"expected one new copy Job, saw {new}")
            waiter = subprocess.Popen(
                [self.kubectl, "-n", self.system, "wait", f"job/{new[0]}", "--for=condition=Complete",
                 "--timeout=180s"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            thread = threading.Thread(target=lambda: job_done.update(rc=waiter.wait(), t=time.monotonic()))
            thread.start()
        self.k(["-n", ns, "wait", f"pod/{name}", "--for=jsonpath={.status.phase}=Running",
                "--timeout=180s"], timeout=200)
        running = time.monotonic() - t0
        if jobs_before is None:
            return running, None
        thread.join()
        if job_done.get("rc") != 0:
            raise BenchError(f"copy Job {new[0]} did not complete")
        return running, {"copy_job": self.copy_finished(new[0]) - t0_wall,
                         "job_complete": job_done["t"] - t0}

    def copy_finished(self, job):
        """Wall-clock time of the copy container's last log line."""
        pod = json.loads(self.k(["-n", self.system, "get", "pods", "-l", f"job-name={job}",
                                 "-o", "json"]).stdout)["items"][0]
        log = (self.state / "pod-logs" / f"{self.system}_{pod['metadata']['name']}_{pod['metadata']['uid']}"
               / "sync-image" / "0.log")
        last = log.read_text().strip().splitlines()[-1].split(" ", 1)[0]
        whole, _, frac = last.rstrip("Z").partition(".")
        stamp = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.timezone.utc)
        return stamp.timestamp() + float(f"0.{frac or 0}")

    def round(self, r):
        src = self.tb["SOURCE_REGISTRY"]
        fresh = f"{src}/bench-node/app-{self.session}-{r}:v1"
        run_checked(["skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false",
                     f"docker://{src}/testbed/busybox:1.36", f"docker://{fresh}"], timeout=120)
        results = {}
        order = ["direct", "privatize"] if r % 2 == 0 else ["privatize", "direct"]
        for how in order:
            jobs_before = set(self.jobs())
            self.forget(fresh, f"{src}/testbed/busybox:1.36")
            ns = self.direct if how == "direct" else self.apps
            name = f"{how}-{r}"
            results[how], job = self.pod_to_running(
                ns, name, fresh, jobs_before if how == "privatize" else None)
            if how == "privatize":
                results.update(job)
                image = json.loads(self.k(["-n", ns, "get", "pod", name, "-o", "json"]).stdout)
                target = image["spec"]["containers"][0]["image"]
                if not target.startswith(self.registry):
                    raise BenchError(f"pod {name} runs {target}, not a private copy")
                self.forget(target)
            self.k(["-n", ns, "delete", "pod", name, "--wait=false"])
        return results

    def jobs(self):
        out = self.k(["-n", self.system, "get", "jobs", "-l", "app.kubernetes.io/managed-by=privatize",
                      "-o", "jsonpath={.items[*].metadata.name}"]).stdout.decode()
        return out.split()

    def cleanup(self):
        shutil.rmtree(self.work, ignore_errors=True)
        if not hasattr(self, "system"):
            return
        if self.serve:
            self.serve.terminate()
            self.serve.wait(timeout=30)
        subprocess.run([self.privatize, "uninstall", "--namespace", self.system], env=self.env,
                       capture_output=True)
        for ns in (self.apps, self.direct, self.system):
            subprocess.run([self.kubectl, "delete", "namespace", ns, "--wait=false"], env=self.env,
                           capture_output=True)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sweep-interval", default="30s",
                    help="serve's --sweep-interval (default: serve's own, 30s: releases follow the Job's status)")
    ap.add_argument("--no-setup", action="store_true", help="skip testbed/up (the cluster is always brought up)")
    ap.add_argument("--json", default=str(ROOT / "target/bench/node.json"))
    args = ap.parse_args()
    bench = Bench(args)
    rows = []
    try:
        bench.setup()
        for r in range(args.rounds):
            row = bench.round(r)
            row["added"] = row["privatize"] - row["direct"]
            rows.append(row)
            log(f"round {r}: direct {row['direct']:.2f} s, privatize {row['privatize']:.2f} s "
                f"(added {row['added']:.2f} s), copy Job {row['copy_job']:.2f} s "
                f"(Complete seen at {row['job_complete']:.2f} s)")
    except BenchError as e:
        print(f"bench/node.py: {e}", file=sys.stderr)
        return 1
    finally:
        bench.cleanup()
    med = {k: statistics.median(r[k] for r in rows)
           for k in ("direct", "privatize", "added", "copy_job", "job_complete")}
    print(f"\npod CREATE -> Running on the node, {len(rows)} rounds (median; each round a never-seen image)")
    print(f"  direct from the source:       {med['direct']:6.2f} s")
    print(f"  through privatize:            {med['privatize']:6.2f} s   ratio {med['privatize'] / med['direct']:.2f}x")
    print(f"  added by privatize:           {med['added']:6.2f} s")
    print(f"  the copy Job's own time:      {med['copy_job']:6.2f} s   (created -> copy container's last line)")
    print(f"  ... until the Job is Complete: {med['job_complete']:6.2f} s   (as watched; the Job controller batches)")
    ok = med["added"] <= med["copy_job"] + 3
    print(f"goal: added <= copy Job + 3 s: {'met' if ok else 'NOT met'}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"rounds": rows, "median": med}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
