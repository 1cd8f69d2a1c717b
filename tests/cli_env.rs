//! The command line as a Job or a shell meets it: flags against environment
//! values, log output on pipes and terminals, usage errors, a missing AWS region.

mod common;

use common::{assert_ok, prefix, stderr, testbed};

/// `sync-image` of the testbed's tiny image with `ECR_REGISTRY` exported, as
/// the Deployment and the copy Jobs have it (the harness clears it: set it again).
fn with_ecr_registry() -> std::process::Command {
    let tb = testbed();
    let mut cmd = tb.privatize();
    cmd.env("ECR_REGISTRY", tb.target())
        .env("PRIVATIZE_TARGET_KIND", "ecr");
    cmd
}

#[test]
fn a_typed_target_wins_over_ecr_registry_from_the_environment() {
    let tb = testbed();
    let (reference, digest) = tb.image("tiny");
    let p = prefix("envtarget");
    let target = format!("{}/{p}/exact/tiny:v1", tb.target());
    let out = with_ecr_registry()
        .args(["sync-image", "--target", &target, &reference])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        common::stdout(&out).trim(),
        format!("{target}@{digest}"),
        "the exact target, not the ECR_REGISTRY naming rule"
    );
    let (status, body) = tb.target_manifest(&format!("{p}/exact/tiny"), "v1");
    assert_eq!(status, 200);
    assert_eq!(common::sha256(&body), digest);
}

#[test]
fn ecr_registry_from_the_environment_still_names_the_target() {
    let tb = testbed();
    let out = with_ecr_registry()
        .args(["sync-image", "--dry-run", "nginx"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        common::stdout(&out).trim(),
        format!(
            "docker.io/library/nginx:latest -> {}/docker.io/library/nginx:latest",
            tb.target()
        )
    );
}

#[test]
fn to_and_target_both_typed_are_a_usage_error() {
    let out = with_ecr_registry()
        .args([
            "sync-image",
            "--to",
            "127.0.0.1:15443/a",
            "--target",
            "127.0.0.1:15443/b/c:v1",
            "nginx",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: the argument '--target <TARGET>' cannot be used with '--to <TO>'"),
        "{err}"
    );
    assert!(
        !err.contains("--ca-file") && !err.contains("--progress"),
        "the usage line shows only what was typed: {err}"
    );
}

#[test]
fn no_target_at_all_is_a_usage_error() {
    let tb = testbed();
    let out = tb
        .privatize()
        .args(["sync-image", "--dry-run", "nginx"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "error: give the target with --to REGISTRY[/PREFIX] (or ECR_REGISTRY) or --target REF"
        ),
        "{}",
        stderr(&out)
    );
}
