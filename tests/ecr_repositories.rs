//! ECR repositories made by `sync-image`, read back from moto with the AWS SDK.

mod common;

use aws_sdk_ecr::types::{ImageScanningConfiguration, ImageTagMutability};
use common::{assert_ok, mirrored_repository, prefix, stderr, testbed};

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"ReadOnly","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}]}"#;
const LIFECYCLE: &str = r#"{"rules":[{"rulePriority":1,"description":"expire untagged","selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;

fn ecr() -> (tokio::runtime::Runtime, aws_sdk_ecr::Client) {
    let tb = testbed();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = runtime.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&tb.env["MOTO_ENDPOINT"])
            .region(aws_config::Region::new(tb.env["AWS_REGION"].clone()))
            .credentials_provider(aws_sdk_ecr::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .load(),
    );
    (runtime, aws_sdk_ecr::Client::new(&config))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn new_repository_gets_every_setting() {
    let tb = testbed();
    let (reference, _) = tb.image("tiny");
    let p = prefix("settings");
    let mut cmd = tb.privatize();
    cmd.env("ECR_REPOSITORY_POLICY_TEXT", POLICY)
        .env("PRIVATIZE_LIFECYCLE_POLICY_TEXT", LIFECYCLE)
        .args([
            "sync-image",
            "--target-kind",
            "ecr",
            "--tag-mutability",
            "IMMUTABLE",
            "--repository-tag",
            "team=platform",
            "--to",
            &format!("{}/{p}", tb.target()),
            &reference,
        ]);
    assert_ok(&cmd.output().unwrap());

    let name = mirrored_repository(&p, "test/tiny");
    let (rt, ecr) = ecr();
    let repo = rt
        .block_on(ecr.describe_repositories().repository_names(&name).send())
        .unwrap()
        .repositories()[0]
        .clone();
    assert_eq!(
        repo.image_scanning_configuration()
            .map(|c| c.scan_on_push()),
        Some(true)
    );
    assert_eq!(
        repo.image_tag_mutability(),
        Some(&ImageTagMutability::Immutable)
    );
    assert_eq!(
        repo.encryption_configuration()
            .map(|e| e.encryption_type().as_str()),
        Some("AES256")
    );
    let tags = rt
        .block_on(
            ecr.list_tags_for_resource()
                .resource_arn(repo.repository_arn().unwrap())
                .send(),
        )
        .unwrap();
    let tags: Vec<(String, String)> = tags
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    assert!(
        tags.contains(&("managed-by".into(), "privatize".into())),
        "{tags:?}"
    );
    assert!(
        tags.contains(&("team".into(), "platform".into())),
        "{tags:?}"
    );
    let policy = rt
        .block_on(ecr.get_repository_policy().repository_name(&name).send())
        .unwrap();
    assert_eq!(json(policy.policy_text().unwrap()), json(POLICY));
    let lifecycle = rt
        .block_on(ecr.get_lifecycle_policy().repository_name(&name).send())
        .unwrap();
    assert_eq!(
        json(lifecycle.lifecycle_policy_text().unwrap()),
        json(LIFECYCLE)
    );
}

#[test]
fn existing_repository_is_used_and_drift_is_repaired_only_when_asked() {
    let tb = testbed();
    let (reference, _) = tb.image("tiny");
    let p = prefix("drift");
    let name = mirrored_repository(&p, "test/tiny");
    let (rt, ecr) = ecr();
    rt.block_on(
        ecr.create_repository()
            .repository_name(&name)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(false)
                    .build(),
            )
            .send(),
    )
    .unwrap();
    let scan_on_push = || {
        rt.block_on(ecr.describe_repositories().repository_names(&name).send())
            .unwrap()
            .repositories()[0]
            .image_scanning_configuration()
            .map(|c| c.scan_on_push())
    };

    let plain = tb.sync(&p, &[&reference]);
    assert_ok(&plain);
    assert_eq!(
        scan_on_push(),
        Some(false),
        "an existing repository is left as it is by default"
    );

    let mut cmd = tb.privatize();
    cmd.env("PRIVATIZE_RECONCILE_REPOSITORIES", "true")
        .env("ECR_REPOSITORY_POLICY_TEXT", POLICY)
        .env("PRIVATIZE_LIFECYCLE_POLICY_TEXT", LIFECYCLE)
        .args([
            "sync-image",
            "--target-kind",
            "ecr",
            "--target",
            &format!("{}/{name}:v2", tb.target()),
            &reference,
        ]);
    let out = cmd.output().unwrap();
    assert_ok(&out);
    assert!(stderr(&out).contains("reconciled"), "{}", stderr(&out));
    assert_eq!(scan_on_push(), Some(true));
    let policy = rt
        .block_on(ecr.get_repository_policy().repository_name(&name).send())
        .unwrap();
    assert_eq!(json(policy.policy_text().unwrap()), json(POLICY));
    let lifecycle = rt
        .block_on(ecr.get_lifecycle_policy().repository_name(&name).send())
        .unwrap();
    assert_eq!(
        json(lifecycle.lifecycle_policy_text().unwrap()),
        json(LIFECYCLE)
    );
}

#[test]
fn an_invalid_policy_fails_with_the_repository_named() {
    let tb = testbed();
    let (reference, _) = tb.image("tiny");
    let p = prefix("badpolicy");
    let mut cmd = tb.privatize();
    cmd.env("ECR_REPOSITORY_POLICY_TEXT", "{not json").args([
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
    assert!(
        err.contains(&format!(
            "setting the policy of ECR repository {}",
            mirrored_repository(&p, "test/tiny")
        )),
        "{err}"
    );
}

/// `sync-image` of the tiny image to exactly `repository` in the ECR stand-in.
fn sync_to(repository: &str, policy: &str, lifecycle: &str) -> std::process::Output {
    let tb = testbed();
    let (reference, _) = tb.image("tiny");
    let mut cmd = tb.privatize();
    cmd.env("ECR_REPOSITORY_POLICY_TEXT", policy)
        .env("PRIVATIZE_LIFECYCLE_POLICY_TEXT", lifecycle)
        .args([
            "sync-image",
            "--target-kind",
            "ecr",
            "--target",
            &format!("{}/{repository}:v1", tb.target()),
            &reference,
        ]);
    cmd.output().unwrap()
}

#[test]
fn a_repository_whose_lifecycle_policy_failed_gets_it_on_the_next_run() {
    let name = format!("{}/tiny", prefix("halfmade"));
    // A typo moto refuses, as ECR does: `rule` for `rules`.
    let out = sync_to(&name, POLICY, r#"{"rule":[]}"#);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "setting the lifecycle policy of ECR repository {name}"
        )),
        "{}",
        stderr(&out)
    );
    let (rt, ecr) = ecr();
    let missing = rt
        .block_on(ecr.get_lifecycle_policy().repository_name(&name).send())
        .unwrap_err();
    assert!(missing
        .as_service_error()
        .is_some_and(|e| e.is_lifecycle_policy_not_found_exception()));

    // The fixed setting, and no --reconcile-repositories: the repository this
    // tool made is still completed.
    let out = sync_to(&name, POLICY, LIFECYCLE);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("ECR repository settings completed"),
        "{}",
        stderr(&out)
    );
    let lifecycle = rt
        .block_on(ecr.get_lifecycle_policy().repository_name(&name).send())
        .unwrap();
    assert_eq!(
        json(lifecycle.lifecycle_policy_text().unwrap()),
        json(LIFECYCLE)
    );
    let policy = rt
        .block_on(ecr.get_repository_policy().repository_name(&name).send())
        .unwrap();
    assert_eq!(json(policy.policy_text().unwrap()), json(POLICY));
}

#[test]
fn a_managed_repository_missing_a_policy_is_completed_and_others_are_left_alone() {
    let p = prefix("complete");
    let (rt, ecr) = ecr();
    let create = |name: &str, managed: bool| {
        let mut call = ecr.create_repository().repository_name(name);
        if managed {
            call = call.tags(
                aws_sdk_ecr::types::Tag::builder()
                    .key("managed-by")
                    .value("privatize")
                    .build()
                    .unwrap(),
            );
        }
        rt.block_on(call.send()).unwrap();
    };
    let policy_of = |name: &str| {
        rt.block_on(ecr.get_repository_policy().repository_name(name).send())
            .ok()
            .and_then(|out| out.policy_text().map(json))
    };
    // Left by a run that died after CreateRepository, before SetRepositoryPolicy.
    let crashed = format!("{p}/crashed");
    create(&crashed, true);
    // Made by someone else: without --reconcile-repositories it is not ours to change.
    let foreign = format!("{p}/foreign");
    create(&foreign, false);
    // Ours, with a policy someone changed since: drift, repaired only on request.
    let changed = format!("{p}/changed");
    create(&changed, true);
    let other_policy = POLICY.replace("ReadOnly", "Changed");
    rt.block_on(
        ecr.set_repository_policy()
            .repository_name(&changed)
            .policy_text(&other_policy)
            .send(),
    )
    .unwrap();

    for name in [&crashed, &foreign, &changed] {
        assert_ok(&sync_to(name, POLICY, LIFECYCLE));
    }
    assert_eq!(policy_of(&crashed), Some(json(POLICY)));
    let lifecycle = rt
        .block_on(ecr.get_lifecycle_policy().repository_name(&crashed).send())
        .unwrap();
    assert_eq!(
        json(lifecycle.lifecycle_policy_text().unwrap()),
        json(LIFECYCLE)
    );
    assert_eq!(policy_of(&foreign), None);
    assert_eq!(policy_of(&changed), Some(json(&other_policy)));
}
