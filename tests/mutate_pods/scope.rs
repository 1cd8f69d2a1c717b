//! Which admissions are looked at: skipped pods, Pod UPDATEs, new ephemeral
//! containers, admission dryRun and PRIVATIZE_DRY_RUN.

use super::*;

#[test]
fn skip_annotation_and_excluded_namespaces_skip_the_pod() {
    let settings = settings();
    for (case, settings, reason) in [
        (
            "create_skip_annotation",
            settings.clone(),
            SkipReason::Annotated,
        ),
        (
            "create_kube_system",
            settings.clone(),
            SkipReason::NamespaceExcluded("kube-system".into()),
        ),
        (
            "create_containers_and_init",
            Settings {
                exclude_namespaces: vec!["sh*".into()],
                ..settings
            },
            SkipReason::NamespaceExcluded("sh*".into()),
        ),
    ] {
        let review = review(case);
        assert!(
            candidates(&request(&review), &settings).is_empty(),
            "{case}"
        );
        let facts = Facts {
            pull_secret: Some(PULL_SECRET.into()),
            ..Facts::default()
        };
        let decision = decide(&request(&review), &settings, &facts);
        assert_eq!(
            decision,
            Decision {
                skipped: Some(reason),
                ..Decision::default()
            },
            "{case}"
        );
    }
}

#[test]
fn pod_updates_other_than_ephemeral_containers_are_answered_unchanged() {
    let settings = settings();
    for (case, operation) in [
        ("update_pod_labels", "UPDATE"),
        ("update_pod_status", "UPDATE pods/status"),
    ] {
        let review = review(case);
        assert!(candidates(&request(&review), &settings).is_empty());
        let decision = decide(
            &request(&review),
            &settings,
            &all(&review, &settings, Presence::Missing),
        );
        assert_eq!(
            decision.skipped,
            Some(SkipReason::Operation(operation.into())),
            "{case}"
        );
        assert!(
            decision.patch.is_empty() && decision.copies.is_empty() && decision.images.is_empty()
        );
    }
}

#[test]
fn new_ephemeral_containers_are_rewritten_when_present_and_never_gated() {
    let review = review("update_ephemeral_containers");
    let shell_target = format!("{ECR}/docker.io/nicolaka/netshoot:v0.13");
    let tools_target = format!("{ECR}/quay.io/org/tools:2");
    for policy in [SwapPolicy::Gate, SwapPolicy::Always, SwapPolicy::Exists] {
        let settings = with_policy(policy);
        let found: Vec<String> = candidates(&request(&review), &settings)
            .iter()
            .map(|c| c.container.clone())
            .collect();
        assert_eq!(found, ["debugger-shell", "debugger-tools"], "only new ones");
        let facts = Facts {
            presence: HashMap::from([
                (shell_target.clone(), Presence::Present),
                (tools_target.clone(), Presence::Missing),
            ]),
            pull_secret: None,
            access: Default::default(),
            digests: Default::default(),
        };
        let (decision, pod) = run("update_ephemeral_containers", &settings, &facts);
        assert_eq!(
            images(&pod, "ephemeralContainers"),
            [
                ("debugger-old".into(), "busybox:1.36".into()),
                ("debugger-shell".into(), shell_target.clone()),
                ("debugger-tools".into(), "quay.io/org/tools:2".into()),
            ],
            "{policy:?}"
        );
        assert_eq!(
            outcome(&decision, "debugger-tools"),
            Outcome::KeptUntilCopied
        );
        assert_eq!(
            copies(&decision),
            [("quay.io/org/tools:2".to_string(), tools_target.clone())]
        );
        assert!(!decision.gated);
        assert!(gates(&pod).is_empty() && gated_label(&pod).is_none());
        // Only the image changes: the subresource would drop anything else.
        assert_eq!(decision.patch.len(), 1, "{policy:?}");
        assert_eq!(
            decision.patch[0].path().as_str(),
            "/spec/ephemeralContainers/1/image"
        );
    }
}

#[test]
fn ephemeral_image_kept_when_the_running_pod_lacks_the_pull_secret() {
    let shell_target = format!("{ECR}/docker.io/nicolaka/netshoot:v0.13");
    let facts = Facts {
        presence: HashMap::from([
            (shell_target.clone(), Presence::Present),
            (format!("{ECR}/quay.io/org/tools:2"), Presence::Present),
        ]),
        pull_secret: Some(PULL_SECRET.into()),
        access: Default::default(),
        digests: Default::default(),
    };
    let (decision, pod) = run("update_ephemeral_containers", &settings(), &facts);
    assert!(decision.patch.is_empty());
    assert_eq!(
        outcome(&decision, "debugger-shell"),
        Outcome::KeptNoPullSecret
    );
    assert_eq!(image(&pod, "debugger-shell"), "nicolaka/netshoot:v0.13");
    assert_eq!(decision.warnings.len(), 2);

    let (decision, pod) = run("update_ephemeral_with_pull_secret", &settings(), &facts);
    assert_eq!(image(&pod, "debugger-shell"), shell_target);
    assert_eq!(decision.patch.len(), 2);
    assert!(decision.warnings.is_empty());
}

#[test]
fn admission_dry_run_patches_the_same_but_starts_no_copy() {
    let settings = settings();
    let review = review("create_dry_run");
    let facts = all(&review, &settings, Presence::Missing);
    let (dry, dry_pod) = run("create_dry_run", &settings, &facts);
    let (wet, wet_pod) = run("create_containers_and_init", &settings, &facts);
    assert_eq!(dry.patch, wet.patch);
    assert_eq!(dry_pod, wet_pod);
    // Neither starts a Job: copies start once a pod exists, which a dry run's never does.
    assert!(dry.copies.is_empty() && wet.copies.is_empty());
    assert_eq!(wanted(&review, &wet_pod, &settings, &facts).len(), 4);
    assert!(dry.gated);
}

#[test]
fn privatize_dry_run_changes_nothing_but_reports_what_would_happen() {
    let review = review("create_containers_and_init");
    let settings = Settings {
        dry_run: true,
        ..settings()
    };
    let facts = Facts {
        pull_secret: Some(PULL_SECRET.into()),
        ..all(&review, &settings, Presence::Missing)
    };
    let (decision, pod) = run("create_containers_and_init", &settings, &facts);
    assert!(decision.patch.is_empty());
    assert!(decision.copies.is_empty());
    assert!(decision.gated);
    assert!(decision.images.iter().all(|i| i.outcome == Outcome::Gated));
    assert_eq!(pod, review["request"]["object"]);
}
