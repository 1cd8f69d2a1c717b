//! `privatize sync-image` against the testbed: real registries (source plain
//! HTTP, target TLS + Basic auth with moto's token) and moto as the ECR API.
//! Results are read back with curl and sha256, not with privatize's code.

mod common;

use common::{assert_ok, mirrored_repository, prefix, sha256, stderr, stdout, testbed};
use serde_json::Value;

/// Copies `name` and checks the target holds the exact source bytes:
/// the top manifest, every child manifest and every blob.
fn assert_exact_copy(name: &str) {
    let tb = testbed();
    let (reference, digest) = tb.image(name);
    let p = prefix(name);
    let out = tb.sync(&p, &[&reference]);
    assert_ok(&out);
    let repo = mirrored_repository(&p, &format!("test/{name}"));
    assert_eq!(
        stdout(&out).trim(),
        format!("{}/{repo}:v1@{digest}", tb.target())
    );

    let (status, top) = tb.target_manifest(&repo, "v1");
    assert_eq!(status, 200, "{name}: target tag missing");
    assert_eq!(
        sha256(&top),
        digest,
        "{name}: top manifest bytes differ from the source"
    );
    let (_, source_top) = tb.source_manifest(&format!("test/{name}"), "v1");
    assert_eq!(top, source_top);

    let doc: Value = serde_json::from_slice(&top).unwrap();
    let mut manifests = vec![doc.clone()];
    for child in doc["manifests"].as_array().into_iter().flatten() {
        let child_digest = child["digest"].as_str().unwrap();
        let (status, bytes) = tb.target_manifest(&repo, child_digest);
        assert_eq!(status, 200, "{name}: child {child_digest} missing");
        assert_eq!(
            sha256(&bytes),
            child_digest,
            "{name}: child manifest bytes differ"
        );
        manifests.push(serde_json::from_slice(&bytes).unwrap());
    }
    for m in &manifests {
        for blob in m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(m.get("config"))
        {
            let d = blob["digest"].as_str().unwrap();
            assert_eq!(
                tb.target_blob_status(&repo, d),
                200,
                "{name}: blob {d} missing"
            );
        }
    }
}

#[test]
fn docker_v2s2_single_platform_keeps_its_digest() {
    assert_exact_copy("docker-single");
}

#[test]
fn oci_single_platform_keeps_its_digest() {
    assert_exact_copy("oci-single");
}

#[test]
fn oci_index_copies_every_platform_with_exact_bytes() {
    assert_exact_copy("oci-index");
}

#[test]
fn docker_manifest_list_copies_every_platform_with_exact_bytes() {
    assert_exact_copy("docker-list");
}

#[test]
fn attestation_entries_come_along() {
    assert_exact_copy("attested");
    let tb = testbed();
    let (_, source_top) = tb.source_manifest("test/attested", "v1");
    let doc: Value = serde_json::from_slice(&source_top).unwrap();
    assert!(
        doc["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["platform"]["os"] == "unknown"),
        "fixture must hold an attestation entry"
    );
}

#[test]
fn second_run_only_checks_the_tag() {
    let tb = testbed();
    let (reference, digest) = tb.image("oci-index");
    let p = prefix("warm");
    assert_ok(&tb.sync(&p, &[&reference]));
    let out = tb.sync(&p, &["--log-format", "json", &reference]);
    assert_ok(&out);
    let log = stderr(&out);
    assert!(
        !log.contains("blob copied") && !log.contains("ECR repository created"),
        "warm run did work:\n{log}"
    );
    assert!(log.contains(r#""unchanged":true"#), "{log}");
    assert!(stdout(&out).contains(&digest));
}

#[test]
fn blobs_already_in_the_target_are_not_sent_again() {
    let tb = testbed();
    let (reference, _) = tb.image("oci-single");
    let p = prefix("present");
    let target = |tag: &str| format!("{}/{p}/copy:{tag}", tb.target());
    let mut first = tb.privatize();
    first.args([
        "sync-image",
        "--target-kind",
        "ecr",
        "--target",
        &target("a"),
        &reference,
    ]);
    assert_ok(&first.output().unwrap());
    let mut second = tb.privatize();
    second.args([
        "sync-image",
        "--target-kind",
        "ecr",
        "--log-format",
        "json",
        "--target",
        &target("b"),
        &reference,
    ]);
    let out = second.output().unwrap();
    assert_ok(&out);
    let log = stderr(&out);
    assert!(!log.contains("blob copied"), "{log}");
    assert_eq!(
        log.matches(r#""how":"present""#).count(),
        3,
        "config + 2 layers already present:\n{log}"
    );
    assert_eq!(tb.target_manifest(&format!("{p}/copy"), "b").0, 200);
}

#[test]
fn shared_blobs_are_mounted_across_repositories() {
    let tb = testbed();
    let (reference, _) = tb.image("tiny");
    // Two source repositories holding the same image.
    let p = prefix("mount");
    for repo in ["a", "b"] {
        let mut cmd = tb.privatize();
        cmd.args([
            "sync-image",
            "--target-kind",
            "registry",
            "--target",
            &format!("{}/{p}/{repo}:v1", tb.source()),
            &reference,
        ]);
        assert_ok(&cmd.output().unwrap());
    }
    let a = format!("{}/{p}/a:v1", tb.source());
    let b = format!("{}/{p}/b:v1", tb.source());
    let out = tb.sync(&p, &["--log-format", "json", &a, &b]);
    assert_ok(&out);
    let log = stderr(&out);
    assert!(
        log.matches(r#""how":"mounted""#).count() >= 2,
        "second repository should mount config and layer:\n{log}"
    );
    let repo_b = mirrored_repository(&p, &format!("{p}/b"));
    assert_eq!(tb.target_manifest(&repo_b, "v1").0, 200);
}

#[test]
fn digest_only_source_is_tagged_sha256_hex() {
    let tb = testbed();
    let (reference, digest) = tb.image("oci-single");
    let pinned = format!("{}@{digest}", reference.rsplit_once(':').unwrap().0);
    let p = prefix("pinned");
    let out = tb.sync(&p, &[&pinned]);
    assert_ok(&out);
    let repo = mirrored_repository(&p, "test/oci-single");
    let (status, bytes) = tb.target_manifest(&repo, &digest.replace(':', "-"));
    assert_eq!(status, 200, "sha256-<hex> tag missing");
    assert_eq!(sha256(&bytes), digest);
    assert_eq!(
        stdout(&out).trim(),
        format!("{}/{repo}@{digest}", tb.target())
    );
}

#[test]
fn platform_filter_keeps_only_the_asked_platforms() {
    let tb = testbed();
    let (reference, digest) = tb.image("oci-index");
    let p = prefix("platforms");
    let out = tb.sync(&p, &["--platforms", "linux/arm64", &reference]);
    assert_ok(&out);
    let repo = mirrored_repository(&p, "test/oci-index");
    let (_, bytes) = tb.target_manifest(&repo, "v1");
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let platforms: Vec<&str> = doc["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["arm64"]);
    assert_ne!(sha256(&bytes), digest);
    assert_eq!(
        doc["annotations"]["io.privatize.filtered-from"], digest,
        "the filtered index names the index it came from"
    );

    // A single-platform image has no platforms to choose from: copied as it is.
    let (single, single_digest) = tb.image("tiny");
    let out = tb.sync(
        &p,
        &["--platforms", "linux/arm64", "--output", "json", &single],
    );
    assert_ok(&out);
    let result: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(result["digest"], single_digest, "{result}");

    let pinned = format!("{}@{digest}", reference.rsplit_once(':').unwrap().0);
    let refused = tb.sync(&p, &["--platforms", "linux/arm64", &pinned]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("would change its digest"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn json_output_has_one_object_per_image() {
    let tb = testbed();
    let (single, single_digest) = tb.image("tiny");
    let (index, index_digest) = tb.image("oci-index");
    let p = prefix("json");
    let out = tb.sync(&p, &["--output", "json", &single, &index]);
    assert_ok(&out);
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["source"], single);
    assert_eq!(lines[0]["digest"], single_digest);
    assert_eq!(lines[1]["digest"], index_digest);
    assert_eq!(
        lines[1]["target"],
        format!(
            "{}/{}:v1@{index_digest}",
            tb.target(),
            mirrored_repository(&p, "test/oci-index")
        )
    );
}

#[test]
fn dry_run_prints_the_mapping_without_network_or_credentials() {
    let tb = testbed();
    let mut cmd = tb.privatize();
    cmd.env_remove("AWS_ENDPOINT_URL")
        .env("AWS_ACCESS_KEY_ID", "")
        .args([
            "sync-image",
            "--dry-run",
            "--to",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror",
            "nginx",
            "localhost:5000/team/app:v2",
        ]);
    let out = cmd.output().unwrap();
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        "docker.io/library/nginx:latest -> 123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror/docker.io/library/nginx:latest\n\
         localhost:5000/team/app:v2 -> 123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror/localhost-5000/team/app:v2\n"
    );
}

#[test]
fn anonymous_token_flow_reaches_a_bearer_protected_source() {
    let tb = testbed();
    let (reference, digest) = tb.image("oci-index");
    let gateway = common::token_gateway::TokenGateway::start(tb.source());
    let (out, repo) = tb.sync_via(gateway.addr, &reference, &prefix("token"));
    assert_ok(&out);
    let scopes = gateway.scopes.lock().unwrap().clone();
    assert!(
        scopes.iter().any(|s| s == "repository:test/oci-index:pull"),
        "token scopes asked: {scopes:?}"
    );
    let (status, bytes) = tb.target_manifest(&repo, "v1");
    assert_eq!((status, sha256(&bytes)), (200, digest));
}
