"""Helpers the benchmark scripts share: running helper commands, reading the
testbed's env file, and an environment that never goes through a proxy."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class BenchError(Exception):
    pass


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run_checked(argv, *, timeout, env=None, cwd=ROOT, input=None, what=None):
    """Run a helper command (not measured); raise BenchError on failure."""
    try:
        p = subprocess.run(argv, cwd=cwd, env=env, input=input, capture_output=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what or argv[0]}: timed out after {timeout} s")
    if p.returncode != 0:
        raise BenchError(f"{what or argv[0]}: exit {p.returncode}\n"
                         f"{p.stderr.decode(errors='replace')[-4000:]}")
    return p


def read_env_file(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


def base_env():
    env = dict(os.environ)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(k, None)
    return env
