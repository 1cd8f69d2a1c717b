//! `sync-image` when things go wrong: a source that resets mid-blob or
//! rate-limits, a corrupted blob, unreachable or unauthorised registries,
//! missing tags and bad references. Each ends in a correct copy or in a one-line error with
//! nothing tagged.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::front::{Action, Front, DOCKER_HUB_429};
use common::proxy::Proxy;
use common::{assert_ok, mirrored_repository, prefix, sha256, stderr, testbed, unique};

#[test]
fn connection_cut_mid_blob_still_ends_in_a_correct_copy() {
    let tb = testbed();
    let (reference, digest) = tb.image("oci-single");
    let proxy = Proxy::cutting(tb.source(), 30_000, 2);
    let (out, repo) = tb.sync_via(proxy.addr, &reference, &prefix("cut"));
    assert_ok(&out);
    assert_eq!(
        proxy.cuts_done(),
        2,
        "the proxy must really have cut two connections"
    );
    assert!(
        stderr(&out).contains("transient failure, retrying"),
        "{}",
        stderr(&out)
    );
    let (status, bytes) = tb.target_manifest(&repo, "v1");
    assert_eq!(status, 200);
    assert_eq!(sha256(&bytes), digest);
}

#[test]
fn rate_limited_source_is_retried_after_a_pause() {
    let tb = testbed();
    let (reference, digest) = tb.image("oci-single");
    // Docker Hub's pull-limit answer for the first two manifest or blob GETs.
    let limited = AtomicUsize::new(0);
    let front = Front::start(tb.source(), move |method, path| {
        let counted = method == warp::http::Method::GET
            && (path.contains("/manifests/") || path.contains("/blobs/"));
        if counted && limited.fetch_add(1, Ordering::SeqCst) < 2 {
            Action::Answer {
                status: 429,
                headers: vec![("retry-after", "1".to_string())],
                body: DOCKER_HUB_429,
                delay: Duration::ZERO,
            }
        } else {
            Action::Forward
        }
    });
    let (out, repo) = tb.sync_via(front.addr, &reference, &prefix("ratelimit"));
    assert_ok(&out);
    let (status, top) = tb.target_manifest(&repo, "v1");
    assert_eq!((status, sha256(&top)), (200, digest));
    let manifest: serde_json::Value = serde_json::from_slice(&top).unwrap();
    for blob in manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&manifest["config"]])
    {
        let blob = blob["digest"].as_str().unwrap();
        assert_eq!(tb.target_blob_status(&repo, blob), 200, "{blob}");
    }

    let seen = front.seen();
    let limited: Vec<usize> = (0..seen.len())
        .filter(|&i| seen[i].answered == Some(429))
        .collect();
    assert_eq!(limited.len(), 2, "{seen:#?}");
    for i in limited {
        let next = seen[i + 1..]
            .iter()
            .find(|s| s.method == seen[i].method && s.path == seen[i].path)
            .unwrap_or_else(|| panic!("{} was not asked again", seen[i].path));
        let pause = next.at - seen[i].at;
        assert!(
            pause >= Duration::from_millis(950),
            "asked again after {pause:?}, before the 1 s the registry asked for"
        );
    }
    let err = stderr(&out);
    assert_eq!(
        err.matches("transient failure, retrying").count(),
        2,
        "{err}"
    );
}

#[test]
fn blob_corrupted_in_transit_is_an_error_and_nothing_is_tagged() {
    let tb = testbed();
    let (reference, _) = tb.image("oci-single");
    // One flipped byte, 30 000 bytes into a connection: inside the 49 KB layer.
    let proxy = Proxy::corrupting(tb.source(), 30_000, 1);
    let (out, repo) = tb.sync_via(proxy.addr, &reference, &prefix("flip"));
    assert_eq!(
        proxy.cuts_done(),
        1,
        "the proxy must really have flipped a byte"
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .contains("source blob failed verification"),
        "{err}"
    );
    assert!(!err.contains("retrying"), "{err}");
    assert_eq!(
        tb.target_manifest(&repo, "v1").0,
        404,
        "nothing may be tagged"
    );
}

#[test]
fn corrupted_blob_is_an_error_and_nothing_is_tagged() {
    let tb = testbed();
    let repo = format!("corrupt{}", unique());
    let layer_digest = push_unique_image(&repo);
    // Flip one byte of the layer in the source registry's storage.
    let hex = layer_digest.trim_start_matches("sha256:");
    let data = format!(
        "{}/source/storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
        tb.env["TESTBED_DIR"],
        &hex[..2]
    );
    let mut bytes = std::fs::read(&data).expect("layer in source storage");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let served = sha256(&bytes);

    let p = prefix("corrupt");
    let source = format!("{}/{repo}:v1", tb.source());
    let out = tb.sync(&p, &[&source]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let target = format!("{}/{}", tb.target(), mirrored_repository(&p, &repo));
    assert_eq!(
        err.lines().last().unwrap_or_default(),
        format!(
            "error: copying {source} to {target}:v1: pushing blob {layer_digest} to {target}: \
             source blob failed verification: expected {layer_digest}, got {served}"
        ),
        "{err}"
    );
    assert!(
        !err.contains("retrying"),
        "a digest mismatch must not be retried:\n{err}"
    );
    let target_repo = mirrored_repository(&p, &repo);
    assert_eq!(
        tb.target_manifest(&target_repo, "v1").0,
        404,
        "nothing may be tagged"
    );
    assert_eq!(
        tb.target_blob_status(&target_repo, &layer_digest),
        404,
        "the bad blob must not land"
    );
}

#[test]
fn unreachable_registry_is_a_one_line_error() {
    let tb = testbed();
    let out = tb.sync(
        &prefix("unreachable"),
        &["--retries", "1", "127.0.0.1:1/some/image:v1"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: copying 127.0.0.1:1/some/image:v1 to "),
        "{err}"
    );
    assert!(err.contains("resolving 127.0.0.1:1/some/image:v1"), "{err}");
}

#[test]
fn missing_tag_says_not_found() {
    let tb = testbed();
    let out = tb.sync(
        &prefix("missing"),
        &[&format!("{}/test/tiny:does-not-exist", tb.source())],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("manifest") && err.contains("not found"),
        "{err}"
    );
}

#[test]
fn wrong_target_credentials_are_a_clear_401() {
    let tb = testbed();
    let (reference, _) = tb.image("tiny");
    let mut cmd = tb.privatize();
    cmd.args([
        "sync-image",
        "--target-kind",
        "registry",
        "--dest-creds",
        "AWS:wrong",
        "--to",
        tb.target(),
        &reference,
    ]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let target = format!(
        "{}/{}/test/tiny",
        tb.target(),
        tb.source().replace(':', "-")
    );
    let (at, path) = target.split_once('/').unwrap();
    assert_eq!(
        stderr(&out),
        format!(
            "error: copying {reference} to {target}:v1: resolving {target}:v1: \
             Not authorized: url https://{at}/v2/{path}/manifests/v1\n"
        )
    );
}

#[test]
fn bad_reference_fails_before_any_network() {
    let tb = testbed();
    let out = tb.sync(&prefix("bad"), &["Not//Valid"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        r#"error: invalid image reference "Not//Valid": repository name must be lower-case"#
    );
}

#[test]
fn plain_registry_target_with_dest_creds_and_with_docker_config() {
    let tb = testbed();
    let (reference, digest) = tb.image("tiny");
    let p = prefix("plainkind");
    let creds = format!("{}:{}", tb.env["TARGET_USER"], tb.env["TARGET_PASSWORD"]);
    let mut with_flag = tb.privatize();
    with_flag.args([
        "sync-image",
        "--target-kind",
        "registry",
        "--dest-creds",
        &creds,
        "--to",
        &format!("{}/{p}/flag", tb.target()),
        &reference,
    ]);
    assert_ok(&with_flag.output().unwrap());
    let mut with_config = tb.privatize();
    with_config
        .env("DOCKER_CONFIG", &tb.env["DOCKER_CONFIG"])
        .args([
            "sync-image",
            "--target-kind",
            "registry",
            "--to",
            &format!("{}/{p}/config", tb.target()),
            &reference,
        ]);
    assert_ok(&with_config.output().unwrap());
    for sub in ["flag", "config"] {
        let (status, bytes) = tb.target_manifest(
            &mirrored_repository(&format!("{p}/{sub}"), "test/tiny"),
            "v1",
        );
        assert_eq!((status, sha256(&bytes)), (200, digest.clone()), "{sub}");
    }
}

/// Pushes a one-layer OCI image with unique content to the source registry
/// (plain HTTP calls, not privatize) and returns the layer digest.
fn push_unique_image(repo: &str) -> String {
    let tb = testbed();
    let base = format!("http://{}/v2/{repo}", tb.source());
    let layer: Vec<u8> = (0..40_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (unique() as u8))
        .collect();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        for blob in [&layer, &config] {
            let started = http.post(format!("{base}/blobs/uploads/")).send().await.unwrap();
            let location = started.headers()["location"].to_str().unwrap().to_string();
            let sep = if location.contains('?') { '&' } else { '?' };
            let put = http.put(format!("{location}{sep}digest={}", sha256(blob))).body(blob.clone()).send().await.unwrap();
            assert_eq!(put.status(), 201, "pushing test blob");
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}]
        });
        let put = http
            .put(format!("{base}/manifests/v1"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(serde_json::to_vec(&manifest).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "pushing test manifest");
    });
    sha256(&layer)
}

#[test]
fn private_source_with_src_creds_or_authfile() {
    let tb = testbed();
    let (reference, digest) = tb.image("tiny");
    let p = prefix("privsrc");
    let creds = format!("{}:{}", tb.env["TARGET_USER"], tb.env["TARGET_PASSWORD"]);
    // Put an image behind auth: the TLS target registry doubles as a private source.
    let private = format!("{}/{p}/private/tiny:v1", tb.target());
    let mut seed = tb.privatize();
    seed.args([
        "sync-image",
        "--target-kind",
        "registry",
        "--dest-creds",
        &creds,
        "--target",
        &private,
        &reference,
    ]);
    assert_ok(&seed.output().unwrap());

    let authfile = format!("{}/config.json", tb.env["DOCKER_CONFIG"]);
    for (how, args) in [
        (
            "flag",
            vec![
                "--src-creds",
                creds.as_str(),
                "--dest-creds",
                creds.as_str(),
            ],
        ),
        ("authfile", vec!["--authfile", authfile.as_str()]),
    ] {
        let copy = format!("{}/{p}/copy-{how}/tiny:v1", tb.target());
        let mut cmd = tb.privatize();
        cmd.args(["sync-image", "--target-kind", "registry"])
            .args(&args)
            .args(["--target", &copy, &private]);
        assert_ok(&cmd.output().unwrap());
        let (status, bytes) = tb.target_manifest(&format!("{p}/copy-{how}/tiny"), "v1");
        assert_eq!((status, sha256(&bytes)), (200, digest.clone()), "{how}");
    }

    let mut anonymous = tb.privatize();
    // Into the open source registry, so no credentials are in play at all.
    anonymous.args([
        "sync-image",
        "--target-kind",
        "registry",
        "--target",
        &format!("{}/{p}/anon/tiny:v1", tb.source()),
        &private,
    ]);
    let out = anonymous.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "an anonymous read of a private source must fail"
    );
    assert!(
        stderr(&out).contains(&format!("resolving {private}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_untrusted_certificate_is_refused_not_skipped() {
    let tb = testbed();
    let (reference, _) = tb.image("tiny");
    let p = prefix("untrusted");
    let mut cmd = tb.privatize();
    cmd.env_remove("PRIVATIZE_CA_FILE").args([
        "sync-image",
        "--target-kind",
        "ecr",
        "--to",
        &format!("{}/{p}", tb.target()),
        &reference,
    ]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let repo = mirrored_repository(&p, "test/tiny");
    let target = format!("{}/{repo}:v1", tb.target());
    assert_eq!(
        err,
        format!(
            "error: copying {reference} to {target}: resolving {target}: error sending request \
             for url (https://{}/v2/{repo}/manifests/v1): client error (Connect): \
             invalid peer certificate: UnknownIssuer\n",
            tb.target()
        )
    );
    assert!(
        !err.contains("retrying"),
        "a refused certificate is not transient:\n{err}"
    );

    let mut bad_ca = tb.privatize();
    bad_ca.env("PRIVATIZE_CA_FILE", "/etc/hostname").args([
        "sync-image",
        "--to",
        tb.target(),
        &reference,
    ]);
    let out = bad_ca.output().unwrap();
    assert_eq!(
        stderr(&out).trim(),
        "error: reading CA file /etc/hostname: no PEM certificate in it"
    );
}
