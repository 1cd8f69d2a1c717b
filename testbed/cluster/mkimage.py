#!/usr/bin/env python3
"""Write a one-layer OCI image layout for the cluster testbed, without docker.

    mkimage.py OUT TAG --file SRC:DEST [--file ...] [--busybox-links]
               [--entrypoint JSON] [--cmd JSON] [--platform ARCH ...]

One --platform (default amd64) gives an OCI image manifest; several give an
OCI image index whose entries share the layer but each have their own config
(architecture ARCH), so the index is a real multi-platform index. Everything
is reproducible: mtime 0, uid/gid 0, sorted names, gzip without a timestamp.
Prints the layout's top descriptor (JSON: digest, mediaType, size) on stdout.
Standard library only.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

EPOCH = "1970-01-01T00:00:00Z"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def canonical(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class Layout:
    def __init__(self, out):
        self.out = out
        os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)

    def blob(self, data, media_type):
        digest = hashlib.sha256(data).hexdigest()
        path = os.path.join(self.out, "blobs", "sha256", digest)
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}


def tar_layer(files, busybox_links):
    raw = io.BytesIO()
    entries = {}

    def add_dir(name, mode=0o755):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode = tarfile.DIRTYPE, mode
        entries[name] = (ti, None)

    def add_data(name, data, mode=0o644):
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode = len(data), mode
        entries[name] = (ti, data)

    for d in ["bin", "dev", "etc", "proc", "root", "sys", "var"]:
        add_dir(d)
    add_dir("tmp", 0o1777)
    add_data("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    add_data("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    for spec in files:
        src, dest = spec.split(":", 1)
        with open(src, "rb") as f:
            add_data(dest.lstrip("/"), f.read(), 0o755)
    if busybox_links:
        applets = subprocess.run(
            ["/bin/busybox", "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        for applet in applets:
            name = "bin/" + applet
            if applet == "busybox" or name in entries:
                continue
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, "busybox", 0o777
            entries[name] = (ti, None)
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(entries):
            ti, data = entries[name]
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return raw.getvalue()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("tag")
    p.add_argument("--file", action="append", default=[], help="SRC:DEST, mode 0755")
    p.add_argument("--busybox-links", action="store_true", help="a /bin symlink per busybox applet")
    p.add_argument("--entrypoint", default="null", help="JSON list")
    p.add_argument("--cmd", default="null", help="JSON list")
    p.add_argument("--platform", action="append", default=[], help="architecture (linux)")
    a = p.parse_args()
    platforms = a.platform or ["amd64"]

    layout = Layout(a.out)
    tar = tar_layer(a.file, a.busybox_links)
    layer = layout.blob(gzip.compress(tar, compresslevel=9, mtime=0), OCI_LAYER)
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()

    manifests = []
    for arch in platforms:
        run = {"Env": ["PATH=/bin"], "WorkingDir": "/"}
        if json.loads(a.entrypoint) is not None:
            run["Entrypoint"] = json.loads(a.entrypoint)
        if json.loads(a.cmd) is not None:
            run["Cmd"] = json.loads(a.cmd)
        config = {
            "architecture": arch,
            "os": "linux",
            "created": EPOCH,
            "config": run,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": EPOCH, "created_by": "testbed/cluster/mkimage.py"}],
        }
        cfg = layout.blob(canonical(config), OCI_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": [layer]}
        desc = layout.blob(canonical(manifest), OCI_MANIFEST)
        desc["platform"] = {"architecture": arch, "os": "linux"}
        manifests.append(desc)

    if len(manifests) == 1:
        top = manifests[0]
    else:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        top = layout.blob(canonical(index), OCI_INDEX)
    entry = dict(top)
    entry["annotations"] = {"org.opencontainers.image.ref.name": a.tag}
    with open(os.path.join(a.out, "index.json"), "w") as f:
        f.write(json.dumps({"schemaVersion": 2, "manifests": [entry]}, sort_keys=True))
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    json.dump({k: top[k] for k in ("digest", "mediaType", "size")}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
