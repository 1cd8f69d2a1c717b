use super::*;

const TARGET: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror";
/// A repository the copy Jobs write and serve reads: under the prefix.
const MIRRORED: &str =
    "arn:aws:ecr:eu-west-1:123456789012:repository/mirror/docker.io/library/nginx";
/// Another team's repository in the same registry.
const OUTSIDE: &str = "arn:aws:ecr:eu-west-1:123456789012:repository/team-a/app";
const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// IAM's wildcard match: `*` is any run of characters, `/` included.
fn matches(pattern: &str, arn: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == arn,
        Some((head, tail)) => {
            let Some(rest) = arn.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && matches(tail, &rest[i..]))
        }
    }
}

/// Whether `policy` allows `action` on `resource` (our policies have no
/// Deny and no wildcard actions; conditions are checked where they matter).
fn allows(policy: &Policy, action: &str, resource: &str) -> bool {
    policy.statement.iter().any(|s| {
        s.effect == "Allow" && s.action.contains(&action) && matches(&s.resource, resource)
    })
}

fn resource_of(scope: Scope) -> &'static str {
    match scope {
        Scope::Any => "*",
        Scope::Mirror => MIRRORED,
        Scope::Key => KEY,
    }
}

fn actions(policy: &Policy) -> Vec<&'static str> {
    let mut all: Vec<&str> = policy
        .statement
        .iter()
        .flat_map(|s| s.action.iter().copied())
        .collect();
    all.sort();
    all.dedup();
    all
}

fn sorted(calls: &[(&'static str, Scope)]) -> Vec<&'static str> {
    let mut all: Vec<&str> = calls.iter().map(|(a, _)| *a).collect();
    all.sort();
    all.dedup();
    all
}

#[test]
fn every_call_serve_and_its_logins_make_is_allowed_to_serve_and_nothing_more() {
    let p = policies(Some(TARGET), "privatize", None).unwrap();
    let policy = p.webhook.policy.as_ref().unwrap();
    for (action, scope) in WEBHOOK_CALLS {
        assert!(allows(policy, action, resource_of(scope)), "{action}");
    }
    assert_eq!(actions(policy), sorted(&WEBHOOK_CALLS), "minimal");
    // Pull-only: nothing that writes, on any repository.
    for (action, _) in COPY_JOB_CALLS {
        if !WEBHOOK_CALLS.iter().any(|(a, _)| *a == action) {
            assert!(!allows(policy, action, MIRRORED), "serve may {action}");
        }
    }
    assert!(!allows(policy, "ecr:BatchGetImage", OUTSIDE));
}

#[test]
fn every_call_a_copy_job_makes_is_allowed_to_the_copy_jobs_and_nothing_more() {
    let p = policies(Some(TARGET), "privatize", None).unwrap();
    let policy = p.copy_job.policy.as_ref().unwrap();
    for (action, scope) in COPY_JOB_CALLS {
        assert!(allows(policy, action, resource_of(scope)), "{action}");
        if scope == Scope::Mirror {
            assert!(
                !allows(policy, action, OUTSIDE),
                "{action} outside the prefix"
            );
        }
    }
    assert_eq!(actions(policy), sorted(&COPY_JOB_CALLS), "minimal");
    assert!(
        !actions(policy).iter().any(|a| a.starts_with("kms:")),
        "no KMS without --kms-key"
    );
}

#[test]
fn with_a_kms_key_the_copy_jobs_may_have_ecr_use_it_and_serve_may_not() {
    let p = policies(Some(TARGET), "privatize", Some(KEY)).unwrap();
    let policy = p.copy_job.policy.as_ref().unwrap();
    for (action, scope) in KMS_CALLS.iter().chain(&COPY_JOB_CALLS) {
        assert!(allows(policy, action, resource_of(*scope)), "{action}");
    }
    let kms = policy.statement.last().unwrap();
    assert_eq!(kms.resource, KEY);
    assert_eq!(
        kms.condition,
        Some(json!({"StringEquals": {"kms:ViaService": "ecr.eu-west-1.amazonaws.com"}}))
    );
    assert!(!allows(
        p.webhook.policy.as_ref().unwrap(),
        "kms:CreateGrant",
        KEY
    ));
}

#[test]
fn a_kms_alias_is_matched_by_its_name_on_the_accounts_keys() {
    for alias in ["alias/ecr", "arn:aws:kms:eu-west-1:123456789012:alias/ecr"] {
        let p = policies(Some(TARGET), "privatize", Some(alias)).unwrap();
        let kms = p.copy_job.policy.unwrap().statement.pop().unwrap();
        assert_eq!(
            kms.resource, "arn:aws:kms:eu-west-1:123456789012:key/*",
            "{alias}"
        );
        assert_eq!(
            kms.condition.unwrap()["ForAnyValue:StringEquals"],
            json!({"kms:ResourceAliases": "alias/ecr"})
        );
    }
    let p = policies(Some(TARGET), "privatize", Some("1234abcd-12ab")).unwrap();
    let kms = p.copy_job.policy.unwrap().statement.pop().unwrap();
    assert_eq!(
        kms.resource,
        "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab"
    );
    let err = policies(Some(TARGET), "privatize", Some("arn:aws:s3:::bucket")).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid --kms-key "arn:aws:s3:::bucket": not a KMS key or alias ARN"#
    );
}

#[test]
fn the_refresh_cronjob_gets_no_policy_at_all() {
    let p = policies(Some(TARGET), "privatize", Some(KEY)).unwrap();
    assert_eq!(p.refresh.policy, None);
    assert_eq!(p.refresh.service_account, "privatize-refresh");
    let printed = serde_json::to_value(&p).unwrap();
    assert_eq!(printed["refresh"]["policy"], Value::Null);
}

#[test]
fn without_a_prefix_every_repository_of_the_registry_is_the_mirror() {
    let p = policies(
        Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
        "privatize",
        None,
    )
    .unwrap();
    let policy = p.copy_job.policy.unwrap();
    assert_eq!(
        policy.statement[1].resource,
        "arn:aws:ecr:eu-west-1:123456789012:repository/*"
    );
    assert!(allows(&policy, "ecr:PutImage", OUTSIDE));
}

#[test]
fn china_and_govcloud_hosts_name_their_partition() {
    for (host, arn) in [
        (
            "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/mirror",
            "arn:aws-cn:ecr:cn-north-1:123456789012:repository/mirror/*",
        ),
        (
            "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com/mirror",
            "arn:aws-us-gov:ecr:us-gov-west-1:123456789012:repository/mirror/*",
        ),
        (
            "123456789012.dkr-ecr.eu-west-1.on.aws/mirror",
            "arn:aws:ecr:eu-west-1:123456789012:repository/mirror/*",
        ),
    ] {
        let p = policies(Some(host), "privatize", None).unwrap();
        assert_eq!(
            p.webhook.policy.unwrap().statement[1].resource,
            arn,
            "{host}"
        );
    }
}

#[test]
fn a_target_that_is_not_ecr_is_refused_in_one_line() {
    let err = policies(Some("registry.example:5000/mirror"), "privatize", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--iam-policies needs an ECR target (<account>.dkr.ecr.<region>.amazonaws.com[/PREFIX]), \
         not registry.example:5000: other registries grant pull and push through their own credentials"
    );
    let err = policies(None, "privatize", None).unwrap_err();
    assert!(err
        .to_string()
        .starts_with("--iam-policies needs --target-registry"));
}

#[test]
fn each_identity_names_its_irsa_subject() {
    let p = policies(Some(TARGET), "mirror-system", None).unwrap();
    assert_eq!(
        p.webhook.subject,
        "system:serviceaccount:mirror-system:privatize-webhook"
    );
    assert_eq!(
        p.copy_job.subject,
        "system:serviceaccount:mirror-system:privatize"
    );
    assert_eq!(
        p.refresh.subject,
        "system:serviceaccount:mirror-system:privatize-refresh"
    );
}
