#!/usr/bin/env python3
"""Check that the chart renders the same objects as `privatize install --dry-run`.

    charts/privatize/ci/compare.py [--helm HELM] [--privatize CMD | --reference FILE] [--namespace NS]
                                    [--image IMG] [--target-registry REG] [--webhook-url URL]
                                    [--webhook-sa-annotation K=V ...] [--copy-job-sa-annotation K=V ...]
                                    [--refresh-sa-annotation K=V ...] [--source-credentials-secret NAME]
                                    [--kms-key KEY] [--credential-namespaces NS,...]
                                    [--platforms all|auto|OS/ARCH[/VARIANT],...]

Renders both sides with equivalent settings (helm values derived from the install flags),
then compares every object semantically (parsed YAML, not text). Expected differences are
dropped before comparing: install renders a Namespace, the chart does not by default
(namespace.create=true is passed when comparing it); the chart renders the TLS Secret and
the webhooks' caBundle, which install only creates at apply time. Exits 1 on any other
difference and prints a unified diff per differing object.
"""
import argparse
import difflib
import json
import os
import shlex
import subprocess
import sys

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CHART = os.path.join(REPO, "charts", "privatize")


def load(text):
    return [d for d in yaml.safe_load_all(text) if d]


def key(obj):
    meta = obj.get("metadata", {})
    return (obj.get("kind"), meta.get("namespace", ""), meta.get("name"))


def normalize(obj):
    """Drops what install adds only at apply time (caBundle); nothing else."""
    obj = json.loads(json.dumps(obj))
    if obj.get("kind") == "MutatingWebhookConfiguration":
        for hook in obj.get("webhooks", []):
            hook.get("clientConfig", {}).pop("caBundle", None)
    return obj


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--helm", default=None, help="helm binary (default: testbed/helm/build --print-path)")
    ap.add_argument("--privatize", default="cargo run -q --", help="how to run privatize")
    ap.add_argument("--reference", default=None,
                    help="compare with this YAML (e.g. deploy/privatize.yaml) instead of running install")
    ap.add_argument("--namespace", default="privatize")
    ap.add_argument("--image", default=None)
    ap.add_argument("--target-registry", default=None)
    ap.add_argument("--webhook-url", default=None)
    # One identity per job: each ServiceAccount's annotations (install flag, chart value).
    accounts = [("webhook", "webhook"), ("copy-job", "copyJob"), ("refresh", "refresh")]
    for flag, _ in accounts:
        ap.add_argument("--%s-sa-annotation" % flag, action="append", default=[])
    ap.add_argument("--source-credentials-secret", default=None)
    ap.add_argument("--kms-key", default=None)
    ap.add_argument("--credential-namespaces", default=None)
    ap.add_argument("--platforms", default=None)
    args = ap.parse_args()

    helm = args.helm or subprocess.run(
        [os.path.join(REPO, "testbed", "helm", "build"), "--print-path"],
        check=True, capture_output=True, text=True).stdout.strip()

    install = shlex.split(args.privatize) + ["install", "--dry-run", "--namespace", args.namespace]
    values = {"namespace": {"create": True}}
    if args.image:
        install += ["--image", args.image]
        repo, _, tag = args.image.rpartition(":")
        if not repo or "/" in tag:  # a registry port or a bare name, no tag
            ap.error("--image needs a tag (the chart always renders repository:tag)")
        values["image"] = {"repository": repo, "tag": tag}
    if args.target_registry:
        install += ["--target-registry", args.target_registry]
        values["targetRegistry"] = args.target_registry
    if args.webhook_url:
        install += ["--webhook-url", args.webhook_url]
        values["webhookUrl"] = args.webhook_url
    if args.source_credentials_secret:
        install += ["--source-credentials-secret", args.source_credentials_secret]
        values["sourceCredentialsSecret"] = args.source_credentials_secret
    if args.kms_key:
        install += ["--kms-key", args.kms_key]
        values["kmsKey"] = args.kms_key
    if args.credential_namespaces:
        install += ["--credential-namespaces", args.credential_namespaces]
        values["ecrCredentials"] = {"namespaces": args.credential_namespaces.split(",")}
    if args.platforms is not None:
        install += ["--platforms", args.platforms]
        values["platforms"] = args.platforms
    for flag, value in accounts:
        given = getattr(args, "%s_sa_annotation" % flag.replace("-", "_"))
        if given:
            annotations = {}
            for a in given:
                install += ["--%s-service-account-annotation" % flag, a]
                k, _, v = a.partition("=")
                annotations[k] = v
            values.setdefault("serviceAccount", {})[value] = {"annotations": annotations}

    env = dict(os.environ)
    for var in ("PRIVATIZE_NAMESPACE", "PRIVATIZE_IMAGE", "ECR_REGISTRY",
                "PRIVATIZE_SOURCE_CREDENTIALS_SECRET", "PRIVATIZE_KMS_KEY", "PRIVATIZE_PLATFORMS"):
        env.pop(var, None)  # the flags above are the whole configuration
    if args.reference:
        with open(args.reference) as f:
            ref = load(f.read())
    else:
        run = subprocess.run(install, cwd=REPO, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit("%s failed:\n%s" % (" ".join(install), run.stderr))
        ref = load(run.stdout)
    chart = load(subprocess.run(
        # As an upgrade renders it: a first install makes the webhook configuration a
        # post-install hook (the same object plus Helm's hook and ownership metadata).
        [helm, "template", "privatize", CHART, "--namespace", args.namespace, "--is-upgrade",
         "--values", "-"], input=json.dumps(values), check=True,
        capture_output=True, text=True).stdout)

    ref_by = {key(o): normalize(o) for o in ref}
    # Helm hooks (the pre-delete Job) do what `privatize uninstall` does itself.
    chart_by = {key(o): normalize(o) for o in chart
                if "helm.sh/hook" not in (o.get("metadata", {}).get("annotations") or {})}
    # The chart's TLS Secret is what install's gen-certs step creates at apply time.
    tls = ("Secret", args.namespace, "privatize-tls")
    chart_by.pop(tls, None)

    failed = False
    for k in sorted(set(ref_by) | set(chart_by), key=lambda k: tuple(map(str, k))):
        name = "%s %s/%s" % k
        if k not in chart_by:
            print("only in install: " + name)
            failed = True
        elif k not in ref_by:
            print("only in chart:   " + name)
            failed = True
        elif ref_by[k] != chart_by[k]:
            failed = True
            a = yaml.safe_dump(ref_by[k], sort_keys=True).splitlines()
            b = yaml.safe_dump(chart_by[k], sort_keys=True).splitlines()
            print("differs: " + name)
            print("\n".join(difflib.unified_diff(a, b, "install", "chart", lineterm="")))
    print("%d objects compared: %s" % (len(ref_by), "DIFFERENT" if failed else "identical"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
