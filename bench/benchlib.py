"""Helpers the benchmark scripts share: running helper commands, reading the
testbed's env file, an environment that never goes through a proxy, and the
binaries under test (the image's musl binary first, the glibc build second)."""

import hashlib
import os
import struct
import subprocess
import sys
import time
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
    # A serve run here checks its certificate against no webhook configuration
    # someone else registered as `privatize` on the testbed's apiserver.
    env.setdefault("PRIVATIZE_WEBHOOK_CONFIG", "privatize-bench-no-such-config")
    return env


# ------------------------------------------------------------------ the binaries under test
# The benches' main subject is the binary the container image ships (static musl + mimalloc,
# built by scripts/build-image); the glibc release build (`cargo build --release --locked`) is
# the second column, so the gap between the two stays visible.
SHIPPED = "privatize"        # column of the image's binary
GLIBC = "privatize-glibc"    # column of target/release/privatize
SHIPPED_ENV = "PRIVATIZE_BENCH_BINARY"
GLIBC_ENV = "PRIVATIZE_BENCH_GLIBC_BINARY"
BUILD_SHIPPED = "scripts/build-image --print-binary"
BUILD_GLIBC = "cargo build --release --locked"
MUSL_TRIPLE = "x86_64-unknown-linux-musl"


def shipped_binary_default():
    """Where `scripts/build-image --print-binary` leaves the image's binary, without building
    it: its default --cargo-target-dir, ${PRIVATIZE_CACHE:-~/.cache/privatize}/cargo-target/
    <sha256 of this checkout's path, 12 hex digits>, then <musl triple>/release/
    privatize.stripped. Keep in step with scripts/build-image."""
    cache = Path(os.environ.get("PRIVATIZE_CACHE", Path.home() / ".cache" / "privatize"))
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    return cache / "cargo-target" / checkout / MUSL_TRIPLE / "release" / "privatize.stripped"


def add_binary_args(ap):
    """--binary, --glibc-binary and --no-glibc, the same in every bench."""
    ap.add_argument("--binary", metavar="PATH", default=os.environ.get(SHIPPED_ENV) or None,
                    help=f"the shipped (image's) binary, column {SHIPPED!r} (default: ${SHIPPED_ENV}, "
                         f"else what `{BUILD_SHIPPED}` prints, built first without --no-setup)")
    ap.add_argument("--glibc-binary", metavar="PATH", default=os.environ.get(GLIBC_ENV) or None,
                    help=f"the glibc release build, column {GLIBC!r} (default: ${GLIBC_ENV}, else "
                         f"target/release/privatize, built with `{BUILD_GLIBC}` without --no-setup)")
    ap.add_argument("--no-glibc", action="store_true",
                    help=f"measure the shipped binary only (no {GLIBC!r} column)")


def binary_facts(path):
    """Path, size, mtime and `--version` of a binary, and whether it is statically linked
    (no PT_INTERP program header)."""
    p = Path(path)
    st = p.stat()
    facts = {"path": str(p), "bytes": st.st_size,
             "mtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(st.st_mtime)),
             "version": run_checked([str(p), "--version"], timeout=30,
                                    what=f"{p} --version").stdout.decode().strip()}
    try:
        with open(p, "rb") as f:
            head = f.read(64)
            if head[:4] == b"\x7fELF" and head[4] == 2:  # 64-bit little-endian ELF
                phoff, = struct.unpack_from("<Q", head, 32)
                phentsize, phnum = struct.unpack_from("<HH", head, 54)
                f.seek(phoff)
                table = f.read(phentsize * phnum)
                facts["static"] = all(struct.unpack_from("<I", table, i * phentsize)[0] != 3
                                      for i in range(phnum))
    except (OSError, struct.error):
        pass
    return facts


def resolve_binaries(args, setup=None):
    """[(column, path)] of the binaries to measure: the shipped one first, then (unless
    --no-glibc) the glibc build. With --no-setup nothing is built and a missing binary is an
    error naming the command that builds it; without it, what is missing or stale is built
    (build-image and cargo are incremental). `setup`, a dict, gets the build times."""
    no_setup = getattr(args, "no_setup", False)
    out = []
    if args.binary:
        shipped = Path(args.binary)
        if not shipped.is_file():
            raise BenchError(f"--binary / ${SHIPPED_ENV}: {shipped} does not exist")
    elif no_setup:
        shipped = shipped_binary_default()
        if not shipped.is_file():
            raise BenchError(f"the shipped binary {shipped} is missing: build it with "
                             f"`{BUILD_SHIPPED}` (10-30 min cold), or pass --binary PATH")
    else:
        log(BUILD_SHIPPED)
        t0 = time.perf_counter()
        printed = run_checked([str(ROOT / "scripts" / "build-image"), "--print-binary"],
                              timeout=3 * 3600, what=BUILD_SHIPPED).stdout.decode().split()
        if setup is not None:
            setup["build_image_s"] = round(time.perf_counter() - t0, 1)
        shipped = Path(printed[-1]) if printed else None
        if not shipped or not shipped.is_file():
            raise BenchError(f"`{BUILD_SHIPPED}` printed no binary: {printed}")
    out.append((SHIPPED, str(shipped)))
    if not args.no_glibc:
        if args.glibc_binary:
            glibc = Path(args.glibc_binary)
            if not glibc.is_file():
                raise BenchError(f"--glibc-binary / ${GLIBC_ENV}: {glibc} does not exist")
        else:
            glibc = ROOT / "target" / "release" / "privatize"
            if not no_setup:
                log(BUILD_GLIBC)
                t0 = time.perf_counter()
                run_checked(BUILD_GLIBC.split(), timeout=3600, what=BUILD_GLIBC)
                if setup is not None:
                    setup["cargo_build_s"] = round(time.perf_counter() - t0, 1)
            if not glibc.is_file():
                raise BenchError(f"the glibc build {glibc} is missing: build it with "
                                 f"`{BUILD_GLIBC}`, pass --glibc-binary PATH, or --no-glibc")
        if glibc.resolve() == shipped.resolve():
            raise BenchError(f"--binary and --glibc-binary are the same file: {glibc}")
        out.append((GLIBC, str(glibc)))
    return out


def describe_binaries(binaries):
    """{column: binary_facts}, logged."""
    facts = {}
    for name, path in binaries:
        f = facts[name] = binary_facts(path)
        log(f"{name}: {path} ({f['version']}, {f['bytes'] / 2**20:.1f} MiB, "
            f"{'static' if f.get('static') else 'dynamic'}, built {f['mtime']})")
    return facts


def gap(a, b, nd=3):
    """a / b, rounded; None when either is missing or b is 0."""
    return None if a is None or not b else round(a / b, nd)
