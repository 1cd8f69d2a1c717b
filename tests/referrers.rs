//! Referrers follow the image (`sync-image --copy-referrers`, on by
//! default): a multi-platform image signed with cosign (a sigstore bundle as
//! an OCI 1.1 referrer, and a legacy `.sig` tag), with an SBOM attached by
//! oras and signed in turn, and one platform's manifest signed, is mirrored,
//! and `cosign verify --key` and `oras discover` find it all at the target.
//! Sources and targets are distribution (no Referrers API: the referrers tag
//! schema) and go-containerregistry's registry (the Referrers API), in all
//! four combinations.

mod common;
#[path = "referrers/harness.rs"]
mod harness;

use std::process::Output;

use serde_json::Value;

use common::{assert_ok, prefix, sha256, stderr, stdout, testbed};
use harness::{tools, ReferrersRegistry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// distribution 2.8: the testbed's source (plain HTTP) or target (TLS, "ECR").
    Distribution,
    /// go-containerregistry's registry, serving the Referrers API.
    Referrers,
}

/// One registry of a test.
struct Side {
    host: String,
    /// The testbed's TLS target ("ECR"), reached through moto.
    ecr: bool,
    _registry: Option<ReferrersRegistry>,
}

impl Side {
    fn source(kind: Kind) -> Self {
        match kind {
            Kind::Distribution => Self {
                host: testbed().source().to_string(),
                ecr: false,
                _registry: None,
            },
            Kind::Referrers => Self::referrers(),
        }
    }

    fn target(kind: Kind) -> Self {
        match kind {
            Kind::Distribution => Self {
                host: testbed().target().to_string(),
                ecr: true,
                _registry: None,
            },
            Kind::Referrers => Self::referrers(),
        }
    }

    fn referrers() -> Self {
        let registry = ReferrersRegistry::start();
        Self {
            host: registry.address.clone(),
            ecr: false,
            _registry: Some(registry),
        }
    }

    fn plain(&self) -> bool {
        !self.ecr
    }

    /// A manifest's (status, bytes).
    fn manifest(&self, repository: &str, reference: &str) -> (u16, Vec<u8>) {
        if self.ecr {
            return testbed().target_manifest(repository, reference);
        }
        common::curl(
            &[],
            &format!("http://{}/v2/{repository}/manifests/{reference}", self.host),
            "GET",
        )
    }
}

/// What a signed test image consists of.
struct Signed {
    /// `host/<prefix>/app` in the source.
    repository: String,
    digest: String,
    sbom: String,
    arm64: String,
}

/// privatize with every registry of the test over plain HTTP but the TLS target.
fn privatize(sides: &[&Side]) -> std::process::Command {
    let mut plain = vec![testbed().source().to_string()];
    plain.extend(sides.iter().filter(|s| s.plain()).map(|s| s.host.clone()));
    let mut cmd = testbed().privatize();
    cmd.env("PRIVATIZE_PLAIN_HTTP", plain.join(","));
    cmd
}

/// `test/oci-index:v1` (three platforms) copied into `source` as
/// `<prefix>/app:v1`, then signed twice, given a signed SBOM, and its arm64
/// manifest signed.
fn signed_image(source: &Side, prefix: &str) -> Signed {
    let tb = testbed();
    let t = tools();
    let (reference, digest) = tb.image("oci-index");
    let repository = format!("{}/{prefix}/app", source.host);
    let out = privatize(&[source])
        .args([
            "sync-image",
            &reference,
            "--target",
            &format!("{repository}:v1"),
        ])
        .args(["--target-kind", "registry", "--copy-referrers=false"])
        .output()
        .unwrap();
    assert_ok(&out);
    let image = format!("{repository}@{digest}");
    let plain = source.plain();
    t.sign(&image, plain, false);
    t.sign(&image, plain, true);
    let sbom = t.attach(
        &image,
        plain,
        "application/spdx+json",
        "sbom.spdx.json",
        &format!(r#"{{"spdxVersion":"SPDX-2.3","name":"{prefix}"}}"#),
    );
    t.sign(&format!("{repository}@{sbom}"), plain, false);
    let arm64 = tb.images["oci-index"]["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"] == "linux/arm64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    t.sign(&format!("{repository}@{arm64}"), plain, false);
    Signed {
        repository,
        digest,
        sbom,
        arm64,
    }
}

/// `sync-image SOURCE --target TARGET --output json` with `extra` flags.
fn mirror(source: &Side, target: &Side, reference: &str, to: &str, extra: &[&str]) -> Output {
    let kind = if target.ecr { "ecr" } else { "registry" };
    privatize(&[source, target])
        .args(["sync-image", reference, "--target", to, "--output", "json"])
        .args(["--target-kind", kind])
        .args(extra)
        .output()
        .unwrap()
}

/// The JSON result line of a sync.
fn result(out: &Output) -> Value {
    stdout(out)
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON line: {}\n{}", stdout(out), stderr(out)))
}

fn digests(found: &[(String, String)]) -> Vec<String> {
    let mut d: Vec<String> = found.iter().map(|(_, d)| d.clone()).collect();
    d.sort();
    d
}

fn follows(source_kind: Kind, target_kind: Kind) {
    let t = tools();
    let prefix = prefix(&format!("referrers-{source_kind:?}-{target_kind:?}").to_lowercase());
    let source = Side::source(source_kind);
    let signed = signed_image(&source, &prefix);
    let target = Side::target(target_kind);
    let (sp, tp) = (source.plain(), target.plain());
    let repository = format!("{prefix}/mirror");
    let image = format!("{}/{repository}@{}", target.host, signed.digest);

    // Without referrers (what every copy did before): nothing verifies there.
    let bare = format!("{prefix}/bare");
    let out = mirror(
        &source,
        &target,
        &format!("{}:v1", signed.repository),
        &format!("{}/{bare}:v1", target.host),
        &["--copy-referrers=false"],
    );
    assert_ok(&out);
    let unsigned = t.verify(
        &format!("{}/{bare}@{}", target.host, signed.digest),
        tp,
        false,
    );
    assert!(
        !unsigned.status.success(),
        "a copy without referrers verified:\n{}",
        stdout(&unsigned)
    );

    let out = mirror(
        &source,
        &target,
        &format!("{}:v1", signed.repository),
        &format!("{}/{repository}:v1", target.host),
        &[],
    );
    assert_ok(&out);
    let line = result(&out);
    assert_eq!(line["digest"], signed.digest.as_str(), "{line}");
    // The bundle, the .sig manifest, the SBOM, its signature, arm64's signature.
    assert_eq!(line["referrers"], 5, "{line}\n{}", stderr(&out));
    assert!(line.get("referrers_skipped").is_none(), "{line}");

    // cosign finds both signatures of the image, the SBOM's and arm64's
    // (`cosign verify` falls back to a legacy .sig when it finds no bundle:
    // that the bundle is listed, oras shows below).
    for (what, reference, legacy) in [
        ("the bundle", signed.digest.as_str(), false),
        ("the legacy .sig", signed.digest.as_str(), true),
        ("the SBOM's signature", signed.sbom.as_str(), false),
        ("arm64's signature", signed.arm64.as_str(), false),
    ] {
        let at = format!("{}/{repository}@{reference}", target.host);
        let verified = t.verify(&at, tp, legacy);
        assert!(
            verified.status.success(),
            "cosign verify ({what}) of {at}: {}",
            stderr(&verified)
        );
    }
    // oras finds at the target what it finds at the source: the same
    // digests, so the same bytes.
    let at_source = t.discover(&format!("{}@{}", signed.repository, signed.digest), sp);
    let at_target = t.discover(&image, tp);
    assert_eq!(digests(&at_target), digests(&at_source), "{at_target:?}");
    assert_eq!(
        at_source.len(),
        3,
        "bundle, SBOM, SBOM's bundle: {at_source:?}"
    );
    let (status, sbom) = target.manifest(&repository, &signed.sbom);
    assert_eq!(status, 200);
    assert_eq!(sha256(&sbom), signed.sbom);
    let sbom: Value = serde_json::from_slice(&sbom).unwrap();
    assert_eq!(sbom["subject"]["digest"], signed.digest.as_str());
    assert_eq!(sbom["artifactType"], "application/spdx+json");

    // Again: everything is in place; nothing is pushed twice, nothing lost.
    let again = mirror(
        &source,
        &target,
        &format!("{}:v1", signed.repository),
        &format!("{}/{repository}:v1", target.host),
        &[],
    );
    assert_ok(&again);
    let line = result(&again);
    assert_eq!(line["referrers"], 5, "{line}");
    assert!(
        stderr(&again).contains("tags=[]"),
        "a tag pushed again: {}",
        stderr(&again)
    );
    assert_eq!(digests(&t.discover(&image, tp)), digests(&at_source));
}

#[test]
fn referrers_follow_from_distribution_to_distribution() {
    follows(Kind::Distribution, Kind::Distribution);
}

#[test]
fn referrers_follow_from_distribution_to_a_referrers_api_registry() {
    follows(Kind::Distribution, Kind::Referrers);
}

#[test]
fn referrers_follow_from_a_referrers_api_registry_to_distribution() {
    follows(Kind::Referrers, Kind::Distribution);
}

#[test]
fn referrers_follow_between_referrers_api_registries() {
    follows(Kind::Referrers, Kind::Referrers);
}

/// A referrer whose layer the source does not have.
fn broken_referrer(source: &Side, repository: &str, subject: &str) -> String {
    let (status, subject_bytes) = source.manifest(repository, subject);
    assert_eq!(status, 200);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.missing",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": format!("sha256:{}", "e".repeat(64)), "size": 7}],
        "subject": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": subject, "size": subject_bytes.len()}
    })
    .to_string();
    let digest = sha256(manifest.as_bytes());
    let (status, _) = common::curl(
        &[
            "-X".into(),
            "PUT".into(),
            "-H".into(),
            "Content-Type: application/vnd.oci.image.manifest.v1+json".into(),
            "--data-binary".into(),
            manifest,
        ],
        &format!("http://{}/v2/{repository}/manifests/{digest}", source.host),
        "PUT",
    );
    assert_eq!(status, 201, "pushing the broken referrer");
    digest
}

#[test]
fn a_referrer_that_cannot_be_copied_warns_and_fails_the_copy_only_when_required() {
    let tb = testbed();
    let prefix = prefix("referrers-required");
    let source = Side::source(Kind::Referrers);
    let (reference, digest) = tb.image("oci-index");
    let app = format!("{prefix}/app");
    let out = privatize(&[&source])
        .args([
            "sync-image",
            &reference,
            "--target",
            &format!("{}/{app}:v1", source.host),
        ])
        .args(["--target-kind", "registry"])
        .output()
        .unwrap();
    assert_ok(&out);
    let broken = broken_referrer(&source, &app, &digest);
    let target = Side::target(Kind::Distribution);
    let from = format!("{}/{app}:v1", source.host);

    // Required: the copy fails in one line naming the referrer, and no tag moved.
    let strict = format!("{prefix}/strict");
    let out = mirror(
        &source,
        &target,
        &from,
        &format!("{}/{strict}:v1", target.host),
        &["--require-referrers"],
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    let last = stderr(&out).lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: copying"), "{last}");
    assert!(
        last.contains("1 referrer(s) of") && last.contains("--require-referrers"),
        "{last}"
    );
    assert!(
        last.contains(&format!("copying {broken} (referrer of {digest})")),
        "{last}"
    );
    assert_eq!(
        tb.target_manifest(&strict, "v1").0,
        404,
        "the tag moved without its referrers"
    );

    // Not required: a warning, the line in the result, the image tagged.
    let lenient = format!("{prefix}/lenient");
    let out = mirror(
        &source,
        &target,
        &from,
        &format!("{}/{lenient}:v1", target.host),
        &[],
    );
    assert_ok(&out);
    let line = result(&out);
    let skipped = line["referrers_skipped"]
        .as_array()
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(skipped.len(), 1, "{line}");
    assert!(skipped[0].as_str().unwrap().contains(&broken), "{line}");
    assert!(
        stderr(&out).contains("WARN") && stderr(&out).contains("referrer not copied"),
        "{}",
        stderr(&out)
    );
    let (status, bytes) = tb.target_manifest(&lenient, "v1");
    assert_eq!((status, sha256(&bytes)), (200, digest));
}

#[test]
fn a_digest_pinned_copy_keeps_its_anchor_on_a_target_without_the_referrers_api() {
    let tb = testbed();
    let t = tools();
    let prefix = prefix("referrers-anchor");
    let source = Side::source(Kind::Referrers);
    let signed = signed_image(&source, &prefix);
    let target = Side::target(Kind::Distribution);
    let repository = format!("{prefix}/pinned");
    let pinned = format!("{}:v1@{}", signed.repository, signed.digest);
    let out = mirror(
        &source,
        &target,
        &pinned,
        &format!("{}/{repository}", target.host),
        &[],
    );
    assert_ok(&out);
    let line = result(&out);
    // The anchor sha256-<hex> still holds the image (DESIGN §11) ...
    let anchor = signed.digest.replacen(':', "-", 1);
    let (status, bytes) = tb.target_manifest(&repository, &anchor);
    assert_eq!((status, sha256(&bytes)), (200, signed.digest.clone()));
    // ... so the referrers of that one manifest are copied, but not listed,
    // and said so; everything else is found.
    let skipped = line["referrers_skipped"]
        .as_array()
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(skipped.len(), 1, "{line}");
    assert!(
        skipped[0]
            .as_str()
            .unwrap()
            .contains("anchors the digest-pinned image"),
        "{line}"
    );
    assert_eq!(line["referrers"], 5, "{line}");
    let at = |d: &str| format!("{}/{repository}@{d}", target.host);
    assert!(
        t.verify(&at(&signed.digest), false, true).status.success(),
        "the legacy .sig"
    );
    assert!(
        t.verify(&at(&signed.arm64), false, false).status.success(),
        "arm64's bundle"
    );
    // Required, that is a failure.
    let strict = format!("{prefix}/strict");
    let out = mirror(
        &source,
        &target,
        &pinned,
        &format!("{}/{strict}", target.host),
        &["--require-referrers"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("anchors the digest-pinned image"),
        "{}",
        stderr(&out)
    );
}

/// Uploads a blob to a plain-HTTP repository (`base` = `http://host/v2/repo`).
fn upload_blob(base: &str, bytes: &[u8]) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i", "-X", "POST", &format!("{base}/blobs/uploads/")])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let location = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or(l.strip_prefix("location: "))
        })
        .unwrap_or_else(|| panic!("no upload location: {head}"))
        .trim()
        .to_string();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("{}{location}", base.split("/v2/").next().unwrap())
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{sep}digest={}", sha256(bytes));
    let body = String::from_utf8(bytes.to_vec()).unwrap();
    assert_eq!(
        put(&url, "application/octet-stream", &body),
        201,
        "uploading a blob"
    );
}

/// PUTs `body` to a plain-HTTP registry URL with curl: its status.
fn put(url: &str, content_type: &str, body: &str) -> u16 {
    common::curl(
        &[
            "-X".into(),
            "PUT".into(),
            "-H".into(),
            format!("Content-Type: {content_type}"),
            "--data-binary".into(),
            body.into(),
        ],
        url,
        "PUT",
    )
    .0
}

#[test]
fn a_listed_referrer_that_names_another_subject_is_not_copied() {
    // The source's referrers tag schema index (anyone who can push there
    // writes it) lists, for the image, a manifest whose subject is another
    // image: it is not taken on trust.
    let tb = testbed();
    let prefix = prefix("referrers-lying");
    let source = Side::source(Kind::Distribution);
    let (reference, digest) = tb.image("oci-index");
    let app = format!("{prefix}/app");
    let out = privatize(&[&source])
        .args([
            "sync-image",
            &reference,
            "--target",
            &format!("{}/{app}:v1", source.host),
        ])
        .args(["--target-kind", "registry", "--copy-referrers=false"])
        .output()
        .unwrap();
    assert_ok(&out);
    let base = format!("http://{}/v2/{app}", source.host);
    let empty = sha256(b"{}");
    upload_blob(&base, b"{}");
    let other = format!("sha256:{}", "f".repeat(64));
    let liar = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.lie",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}],
        "subject": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": other, "size": 100}
    })
    .to_string();
    let liar_digest = sha256(liar.as_bytes());
    let manifest = "application/vnd.oci.image.manifest.v1+json";
    assert_eq!(
        put(&format!("{base}/manifests/{liar_digest}"), manifest, &liar),
        201
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": manifest, "digest": liar_digest, "size": liar.len(), "artifactType": "application/vnd.example.lie"}]
    })
    .to_string();
    let tag = digest.replacen(':', "-", 1);
    let status = put(
        &format!("{base}/manifests/{tag}"),
        "application/vnd.oci.image.index.v1+json",
        &index,
    );
    assert_eq!(status, 201);

    let target = Side::target(Kind::Distribution);
    let mirrored = format!("{prefix}/mirror");
    let out = mirror(
        &source,
        &target,
        &format!("{}/{app}:v1", source.host),
        &format!("{}/{mirrored}:v1", target.host),
        &[],
    );
    assert_ok(&out);
    assert_eq!(result(&out)["referrers"], 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a listed referrer names another subject"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        tb.target_manifest(&mirrored, &liar_digest).0,
        404,
        "the lie was copied"
    );
    assert_eq!(
        tb.target_manifest(&mirrored, &tag).0,
        404,
        "the lie was listed"
    );
}
