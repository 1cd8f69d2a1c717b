//! Helpers for the tag tests: "push a new build" to a tag of the plain source
//! registry at any moment (blobs mounted, the manifest PUT as exact bytes, all
//! with curl), read which digest a target tag points at, and make ECR
//! repositories in moto with a given tag mutability.

use std::process::Command;

use serde_json::Value;

use super::{sha256, Testbed};

/// Puts the testbed image `image` (single-platform: tiny, oci-single,
/// docker-single) under `repository:tag` of the source registry, as a new
/// build of that tag would land. Returns its digest.
pub fn push_build(tb: &Testbed, image: &str, repository: &str, tag: &str) -> String {
    let from = format!("test/{image}");
    let (status, bytes) = tb.source_manifest(&from, "v1");
    assert_eq!(status, 200, "test image {image} missing from the source");
    let manifest: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        manifest.get("layers").is_some(),
        "{image} must be a single-platform image"
    );
    let blobs = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(std::iter::once(&manifest["config"]))
        .map(|b| b["digest"].as_str().unwrap().to_string());
    for digest in blobs {
        let url = format!(
            "http://{}/v2/{repository}/blobs/uploads/?mount={digest}&from={from}",
            tb.source()
        );
        let status = http(&["-X", "POST"], &url, None);
        assert_eq!(status, 201, "mounting {digest} into {repository}");
    }
    let media_type = manifest["mediaType"].as_str().unwrap();
    let url = format!("http://{}/v2/{repository}/manifests/{tag}", tb.source());
    let content_type = format!("Content-Type: {media_type}");
    let status = http(&["-X", "PUT", "-H", &content_type], &url, Some(&bytes));
    assert_eq!(status, 201, "putting {repository}:{tag}");
    sha256(&bytes)
}

/// The digest `repository:tag` of the target points at, `None` when there is no such tag.
pub fn target_tag(tb: &Testbed, repository: &str, tag: &str) -> Option<String> {
    match tb.target_manifest(repository, tag) {
        (200, bytes) => Some(sha256(&bytes)),
        (404, _) => None,
        (status, body) => panic!(
            "reading {repository}:{tag}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        ),
    }
}

/// The digest `repository:tag` of the source points at, `None` when there is no such tag.
pub fn source_tag(tb: &Testbed, repository: &str, tag: &str) -> Option<String> {
    match tb.source_manifest(repository, tag) {
        (200, bytes) => Some(sha256(&bytes)),
        _ => None,
    }
}

/// `sha256-<hex>`: the anchor tag of a digest.
pub fn anchor(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Creates an ECR repository in moto with the given tag mutability (`IMMUTABLE`, `MUTABLE`).
pub fn create_repository(tb: &Testbed, name: &str, mutability: &str) {
    let endpoint = tb.env["MOTO_ENDPOINT"].clone();
    let region = tb.env["AWS_REGION"].clone();
    let (name, mutability) = (name.to_string(), mutability.to_string());
    super::kube::block_on_thread(move || async move {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new(region))
            .credentials_provider(aws_sdk_ecr::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load()
            .await;
        aws_sdk_ecr::Client::new(&config)
            .create_repository()
            .repository_name(&name)
            .image_tag_mutability(mutability.as_str().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating {name} in moto: {e:?}"));
    });
}

/// The last line of stderr, and how many lines there start with `error:`.
pub fn error_line(stderr: &str) -> (String, usize) {
    let last = stderr.lines().last().unwrap_or_default().to_string();
    let count = stderr.lines().filter(|l| l.starts_with("error:")).count();
    (last, count)
}

fn http(args: &[&str], url: &str, body: Option<&[u8]>) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args);
    let file = body.map(|bytes| {
        let path = std::env::temp_dir().join(format!(
            "privatize-put-{}-{}",
            std::process::id(),
            super::unique()
        ));
        std::fs::write(&path, bytes).unwrap();
        path
    });
    if let Some(path) = &file {
        cmd.arg("--data-binary").arg(format!("@{}", path.display()));
    }
    let out = cmd.arg(url).output().expect("running curl");
    if let Some(path) = file {
        let _ = std::fs::remove_file(path);
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}
