#!/usr/bin/env python3
"""Build deterministic test images without docker and push them to a
plain-HTTP registry with the distribution API. Python standard library only.

Same code + same seeds -> same bytes -> same digests on every run and machine
(digests are computed from the exact bytes pushed; tests should still read
them from the JSON written with --out rather than hard-code them).

Usage:
  build_images.py --registry 127.0.0.1:15000 --out images.json --cache DIR [--large]
"""

import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import socket
import sys
import tarfile
import time
import urllib.parse

SEED_PREFIX = "privatize-testbed/v1/"
MiB = 1024 * 1024
EPOCH = "1970-01-01T00:00:00Z"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"

PLATFORMS3 = [("linux", "amd64"), ("linux", "arm64"), ("linux", "s390x")]


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def log(msg):
    print(f"[build_images] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- blobs

class Blob:
    """A content blob: bytes in memory (small) or a file on disk (large)."""

    def __init__(self, media_type, digest, size, data=None, path=None, diff_id=None):
        self.media_type = media_type
        self.digest = digest
        self.size = size
        self.data = data
        self.path = path
        self.diff_id = diff_id or digest

    def descriptor(self, annotations=None):
        d = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if annotations:
            d["annotations"] = annotations
        return d


class RandomReader:
    """Deterministic random bytes from random.Random(seed), generated in fixed
    1 MiB blocks, so the output does not depend on how it is read."""

    BLOCK = MiB

    def __init__(self, seed, size):
        self.rng = random.Random(seed)
        self.left = size  # bytes not yet generated
        self.buf = b""
        self.pos = 0

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.left + len(self.buf) - self.pos
        parts = []
        while n > 0:
            if self.pos >= len(self.buf):
                if self.left == 0:
                    break
                k = min(self.BLOCK, self.left)
                self.buf = self.rng.randbytes(k)
                self.pos = 0
                self.left -= k
            chunk = self.buf[self.pos:self.pos + n]
            self.pos += len(chunk)
            n -= len(chunk)
            parts.append(chunk)
        return b"".join(parts)


class HashingWriter:
    """Write-through sink that hashes and counts what passes through it."""

    def __init__(self, sink):
        self.sink = sink
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, b):
        self.h.update(b)
        self.size += len(b)
        self.sink.write(b)
        return len(b)

    def flush(self):
        pass

    @property
    def digest(self):
        return "sha256:" + self.h.hexdigest()


def write_layer_tar(out, key, payload_size):
    """A deterministic tar: a directory, a small text file and one file of
    `payload_size` seeded random bytes. mtime 0, uid/gid 0, fixed names."""
    name = key.replace("/", "_")

    def info(path, size=0, kind=tarfile.REGTYPE, mode=0o644):
        ti = tarfile.TarInfo(path)
        ti.size, ti.type, ti.mode = size, kind, mode
        ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "root", "root"
        return ti

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT,
                      copybufsize=MiB) as tar:
        tar.addfile(info(f"testbed/{name}", kind=tarfile.DIRTYPE, mode=0o755))
        text = f"privatize testbed layer {key}\n".encode()
        tar.addfile(info(f"testbed/{name}/ID", size=len(text)), io.BytesIO(text))
        tar.addfile(info(f"testbed/{name}/payload.bin", size=payload_size),
                    RandomReader(SEED_PREFIX + key, payload_size))


def small_layer(key, payload_size, docker):
    """gzip'd tar layer built in memory."""
    buf = io.BytesIO()
    compressed = HashingWriter(buf)
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0) as gz:
        plain = HashingWriter(gz)
        write_layer_tar(plain, key, payload_size)
    data = buf.getvalue()
    mt = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
    return Blob(mt, sha256_digest(data), len(data), data=data, diff_id=plain.digest)


def big_layer(key, payload_size, docker, cache):
    """Uncompressed tar layer streamed to a cache file (never held in memory).
    Reused from the cache when it was built before."""
    mt = DOCKER_LAYER_TAR if docker else OCI_LAYER_TAR
    base = os.path.join(cache, key.replace("/", "_") + f"-{payload_size}")
    path, meta_path = base + ".tar", base + ".json"
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if os.path.getsize(path) == meta["size"]:
            return Blob(mt, meta["digest"], meta["size"], path=path)
    except (OSError, ValueError, KeyError):
        pass
    t0 = time.monotonic()
    os.makedirs(cache, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        w = HashingWriter(f)
        write_layer_tar(w, key, payload_size)
    os.replace(tmp, path)
    with open(meta_path + ".tmp", "w") as f:
        json.dump({"digest": w.digest, "size": w.size}, f)
    os.replace(meta_path + ".tmp", meta_path)
    log(f"generated {key} ({w.size / MiB:.1f} MiB) in {time.monotonic() - t0:.1f}s")
    return Blob(mt, w.digest, w.size, path=path)


def json_blob(obj, media_type):
    data = canonical(obj)
    return Blob(media_type, sha256_digest(data), len(data), data=data)


# ----------------------------------------------------------------- manifests

class Manifest:
    def __init__(self, media_type, obj, blobs=(), children=(), platform=None):
        self.media_type = media_type
        self.data = canonical(obj)
        self.digest = sha256_digest(self.data)
        self.size = len(self.data)
        self.blobs = list(blobs)        # config + layers (image manifests)
        self.children = list(children)  # child Manifests (indexes)
        self.platform = platform        # (os, arch) when a child of an index

    def descriptor(self, platform=None, annotations=None):
        d = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if platform:
            d["platform"] = {"os": platform[0], "architecture": platform[1]}
        if annotations:
            d["annotations"] = annotations
        return d


def image(name, layers, docker=False, platform=("linux", "amd64")):
    """An image manifest with a canonical config for `layers`."""
    config = {
        "architecture": platform[1],
        "os": platform[0],
        "created": EPOCH,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"org.opencontainers.image.title": name},
        },
        "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]},
        "history": [{"created": EPOCH, "created_by": f"testbed layer {i}"}
                    for i in range(len(layers))],
    }
    cfg = json_blob(config, DOCKER_CONFIG if docker else OCI_CONFIG)
    mt = DOCKER_MANIFEST if docker else OCI_MANIFEST
    obj = {"schemaVersion": 2, "mediaType": mt, "config": cfg.descriptor(),
           "layers": [l.descriptor() for l in layers]}
    return Manifest(mt, obj, blobs=[cfg] + list(layers), platform=platform)


def index(children, docker=False, extra=()):
    """An OCI index / Docker manifest list of `children` (Manifests with a
    platform) plus `extra` (Manifest, descriptor-annotations, platform) entries."""
    mt = DOCKER_LIST if docker else OCI_INDEX
    entries = [c.descriptor(platform=c.platform) for c in children]
    for m, annotations, platform in extra:
        entries.append(m.descriptor(platform=platform, annotations=annotations))
    obj = {"schemaVersion": 2, "mediaType": mt, "manifests": entries}
    return Manifest(mt, obj, children=list(children) + [m for m, _, _ in extra])


def attestation(repo, subject, platform):
    """A buildkit-style attestation manifest (in-toto statement layer) for
    `subject` (a Manifest)."""
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{
            "name": f"pkg:docker/{repo}@v1?platform={platform[0]}%2F{platform[1]}",
            "digest": {"sha256": subject.digest.split(":", 1)[1]},
        }],
        "predicate": {
            "builder": {"id": "privatize-testbed"},
            "buildType": "https://mobyproject.org/buildkit@v1",
            "metadata": {"buildStartedOn": EPOCH, "reproducible": True},
        },
    }
    layer = json_blob(statement, IN_TOTO)
    cfg = json_blob({"architecture": "unknown", "os": "unknown", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": [layer.digest]}}, OCI_CONFIG)
    obj = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg.descriptor(),
           "layers": [layer.descriptor({"in-toto.io/predicate-type":
                                        "https://slsa.dev/provenance/v0.2"})]}
    return Manifest(OCI_MANIFEST, obj, blobs=[cfg, layer], platform=("unknown", "unknown"))


# ----------------------------------------------------------------- the images

def build_small():
    imgs = {}

    imgs["docker-single"] = ("test/docker-single", image(
        "docker-single", [small_layer("docker-single/0", 48 * 1024, True),
                          small_layer("docker-single/1", 24 * 1024, True)], docker=True))

    imgs["oci-single"] = ("test/oci-single", image(
        "oci-single", [small_layer("oci-single/0", 48 * 1024, False),
                       small_layer("oci-single/1", 24 * 1024, False)]))

    for short, docker in (("oci-index", False), ("docker-list", True)):
        base = small_layer(f"{short}/base", 32 * 1024, docker)
        children = [image(f"{short}-{arch}",
                          [base, small_layer(f"{short}/{arch}", 16 * 1024, docker)],
                          docker=docker, platform=(os_, arch))
                    for os_, arch in PLATFORMS3]
        imgs[short] = (f"test/{short}", index(children, docker=docker))

    base = small_layer("attested/base", 16 * 1024, False)
    children = [image(f"attested-{arch}", [base, small_layer(f"attested/{arch}", 8 * 1024, False)],
                      platform=(os_, arch))
                for os_, arch in PLATFORMS3[:2]]
    att = attestation("test/attested", children[0], children[0].platform)
    imgs["attested"] = ("test/attested", index(children, extra=[(att, {
        "vnd.docker.reference.digest": children[0].digest,
        "vnd.docker.reference.type": "attestation-manifest",
    }, ("unknown", "unknown"))]))

    imgs["tiny"] = ("test/tiny", image("tiny", [small_layer("tiny/0", 2 * 1024, False)]))
    return imgs


def build_large(cache):
    imgs = {}
    imgs["large"] = ("test/large", image("large", [big_layer("large/0", 210 * MiB, False, cache)]))
    imgs["bench"] = ("test/bench", image(
        "bench", [big_layer(f"bench/{i}", 90 * MiB, False, cache) for i in range(3)]))
    shared = big_layer("bench-index/shared", 8 * MiB, False, cache)
    children = [image(f"bench-index-{arch}",
                      [shared, big_layer(f"bench-index/{arch}", 8 * MiB, False, cache)],
                      platform=(os_, arch))
                for os_, arch in PLATFORMS3]
    imgs["bench-index"] = ("test/bench-index", index(children))
    return imgs


# ----------------------------------------------------------------- registry

class RegistryError(Exception):
    pass


class Registry:
    def __init__(self, hostport):
        host, _, port = hostport.rpartition(":")
        self.hostport = hostport
        self.host, self.port = host, int(port)

    def call(self, method, path, body=None, headers=None, ok=(200,)):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600, blocksize=MiB)
        try:
            conn.connect()
            # http.client sends headers and body in separate writes: without
            # TCP_NODELAY, Nagle + delayed ACK costs ~40 ms per PUT.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status not in ok:
            raise RegistryError(f"{method} {path}: HTTP {resp.status}: {data[:500]!r}")
        return resp, data

    def has_blob(self, repo, digest):
        resp, _ = self.call("HEAD", f"/v2/{repo}/blobs/{digest}", ok=(200, 404))
        return resp.status == 200

    def push_blob(self, repo, blob):
        """Returns the number of bytes uploaded (0 when it was there)."""
        if self.has_blob(repo, blob.digest):
            return 0
        resp, _ = self.call("POST", f"/v2/{repo}/blobs/uploads/", ok=(202,))
        loc = urllib.parse.urlsplit(resp.headers["Location"])
        query = urllib.parse.parse_qsl(loc.query, keep_blank_values=True)
        query.append(("digest", blob.digest))
        path = loc.path + "?" + urllib.parse.urlencode(query)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)}
        if blob.data is not None:
            self.call("PUT", path, body=blob.data, headers=headers, ok=(201,))
        else:
            with open(blob.path, "rb") as f:  # streamed by http.client in 1 MiB blocks
                self.call("PUT", path, body=f, headers=headers, ok=(201,))
        return blob.size

    def push_manifest(self, repo, ref, m):
        resp, _ = self.call("PUT", f"/v2/{repo}/manifests/{ref}", body=m.data,
                            headers={"Content-Type": m.media_type}, ok=(201,))
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != m.digest:
            raise RegistryError(f"{repo}:{ref}: registry computed {got}, expected {m.digest}")

    def push_image(self, repo, tag, top):
        uploaded = 0
        for child in top.children:
            for blob in unique_blobs(child):
                uploaded += self.push_blob(repo, blob)
            self.push_manifest(repo, child.digest, child)
        for blob in top.blobs:
            uploaded += self.push_blob(repo, blob)
        self.push_manifest(repo, tag, top)
        return uploaded


def unique_blobs(m):
    seen, out = set(), []
    for x in [m] + m.children:
        for b in x.blobs:
            if b.digest not in seen:
                seen.add(b.digest)
                out.append(b)
    return out


def describe(registry, repo, tag, top):
    blobs = unique_blobs(top)
    entry = {
        "reference": f"{registry}/{repo}:{tag}",
        "repository": repo,
        "tag": tag,
        "digest": top.digest,
        "media_type": top.media_type,
        "blobs": [b.digest for b in blobs],
        # every unique blob (configs + layers) plus every manifest's bytes
        "total_bytes": sum(b.size for b in blobs) + top.size + sum(c.size for c in top.children),
    }
    if top.children:
        entry["manifests"] = [{"digest": c.digest, "media_type": c.media_type,
                               "platform": f"{c.platform[0]}/{c.platform[1]}"}
                              for c in top.children]
    return entry


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", required=True, help="host:port of the plain-HTTP registry")
    ap.add_argument("--out", required=True, help="JSON file to write (merged with an existing one)")
    ap.add_argument("--cache", required=True, help="directory for generated large layers")
    ap.add_argument("--large", action="store_true", help="also build large/bench/bench-index")
    ap.add_argument("--tag", default="v1")
    args = ap.parse_args()

    t0 = time.monotonic()
    reg = Registry(args.registry)
    imgs = build_small()
    if args.large:
        imgs.update(build_large(args.cache))
    t_build = time.monotonic() - t0

    result = {}
    if os.path.exists(args.out):
        try:
            with open(args.out) as f:
                result = json.load(f)
        except ValueError:
            result = {}
    uploaded = 0
    for short, (repo, top) in imgs.items():
        uploaded += reg.push_image(repo, args.tag, top)
        result[short] = describe(args.registry, repo, args.tag, top)

    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, args.out)
    log(f"{len(imgs)} images ready ({', '.join(imgs)}); built in {t_build:.1f}s, "
        f"uploaded {uploaded / MiB:.1f} MiB, total {time.monotonic() - t0:.1f}s -> {args.out}")


if __name__ == "__main__":
    try:
        main()
    except RegistryError as e:
        log(f"ERROR: {e}")
        sys.exit(1)
