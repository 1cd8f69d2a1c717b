//! Pod-level fields: the pull Secret, existing annotations, labels and gates, shared
//! images, and reinvocation on our own output.

use super::*;

#[test]
fn pull_secret_is_added_once_when_an_image_points_at_the_target() {
    let settings = settings();
    // (fixture, pull secrets after)
    for (case, want) in [
        ("create_containers_and_init", vec![PULL_SECRET]),
        ("create_with_existing_fields", vec!["regcred", PULL_SECRET]),
        ("create_pull_secret_listed", vec![PULL_SECRET]),
    ] {
        let review = review(case);
        let facts = Facts {
            pull_secret: Some(PULL_SECRET.into()),
            ..all(&review, &settings, Presence::Present)
        };
        let (decision, pod) = run(case, &settings, &facts);
        assert_eq!(pull_secrets(&pod), want, "{case}");
        let secret_ops = decision
            .patch
            .iter()
            .filter(|op| op.path().as_str().starts_with("/spec/imagePullSecrets"))
            .count();
        assert_eq!(
            secret_ops,
            usize::from(case != "create_pull_secret_listed"),
            "{case}"
        );
    }
}

#[test]
fn pull_secret_is_not_added_when_no_image_points_at_the_target() {
    let review = review("create_containers_and_init");
    // Policy exists with every image missing: originals kept.
    let settings = with_policy(SwapPolicy::Exists);
    let facts = Facts {
        pull_secret: Some(PULL_SECRET.into()),
        ..all(&review, &settings, Presence::Missing)
    };
    let (decision, pod) = run("create_containers_and_init", &settings, &facts);
    // Only the label that lets the gate controller start the copies.
    let paths: Vec<&str> = decision.patch.iter().map(|op| op.path().as_str()).collect();
    assert_eq!(paths, ["/metadata/labels/privatize.io~1copy-pending"]);
    assert!(pull_secrets(&pod).is_empty());
    // Every image excluded.
    let settings = Settings {
        exclude: vec!["*".into()],
        ..settings
    };
    let (decision, pod) = run("create_containers_and_init", &settings, &facts);
    assert!(decision.patch.is_empty() && decision.copies.is_empty());
    assert!(pull_secrets(&pod).is_empty());
}

#[test]
fn existing_annotations_labels_and_gates_are_kept() {
    let review = review("create_with_existing_fields");
    let settings = settings();
    let (decision, pod) = run(
        "create_with_existing_fields",
        &settings,
        &all(&review, &settings, Presence::Missing),
    );
    assert_eq!(gates(&pod), ["example.com/quota", "privatize.io/mirror"]);
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"app": "busy", "privatize.io/gated": "true"})
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["example.com/owner"], "team-a");
    assert_eq!(annotations["a~b/c"], "tilde and slash");
    assert_eq!(original_images(&pod), json!({"app": "nginx:1.27"}));
    let paths: Vec<&str> = decision.patch.iter().map(|op| op.path().as_str()).collect();
    assert_eq!(
        paths,
        [
            "/spec/containers/0/image",
            "/metadata/annotations/privatize.io~1original-images",
            "/spec/schedulingGates/-",
            "/metadata/labels/privatize.io~1gated",
        ]
    );
}

#[test]
fn one_image_written_three_ways_is_one_candidate_and_one_copy() {
    let review = review("create_shared_image");
    let settings = settings();
    let found = candidates(&request(&review), &settings);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].container, "a");
    let facts = all(&review, &settings, Presence::Missing);
    let (_, pod) = run("create_shared_image", &settings, &facts);
    let target = format!("{ECR}/docker.io/library/nginx:1.27");
    assert_eq!(
        wanted(&review, &pod, &settings, &facts),
        [("docker.io/library/nginx:1.27".to_string(), target.clone())]
    );
    for name in ["a", "b", "c"] {
        assert_eq!(image(&pod, name), target);
    }
    assert_eq!(
        original_images(&pod),
        json!({"a": "nginx:1.27", "b": "docker.io/library/nginx:1.27", "c": "index.docker.io/nginx:1.27"})
    );
    // Unknown presence: one warning for the one target.
    let decision = decide(&request(&review), &settings, &Facts::default());
    assert_eq!(decision.warnings.len(), 1, "{:?}", decision.warnings);
    assert!(decision.patch.is_empty());
}

#[test]
fn reinvocation_on_a_rewritten_pod_changes_nothing() {
    let review = review("reinvoked_rewritten");
    let settings = settings();
    assert!(candidates(&request(&review), &settings).is_empty());
    let facts = Facts {
        pull_secret: Some(PULL_SECRET.into()),
        ..Facts::default()
    };
    let decision = decide(&request(&review), &settings, &facts);
    assert!(decision.patch.is_empty(), "{:?}", decision.patch);
    assert!(decision.copies.is_empty());
    assert!(!decision.gated);
}

#[test]
fn every_fixture_is_idempotent_under_reinvocation() {
    let fixtures = [
        "create_containers_and_init",
        "create_tag_digest_references",
        "create_default_excluded",
        "create_invalid_references",
        "create_mixed_registries",
        "create_with_existing_fields",
        "create_pull_secret_listed",
        "create_shared_image",
        "reinvoked_with_new_sidecar",
    ];
    for case in fixtures {
        for policy in [SwapPolicy::Gate, SwapPolicy::Always, SwapPolicy::Exists] {
            for presence in [Presence::Present, Presence::Missing] {
                let settings = with_policy(policy);
                let first = review(case);
                let facts = Facts {
                    pull_secret: Some(PULL_SECRET.into()),
                    ..all(&first, &settings, presence)
                };
                let decision = decide(&request(&first), &settings, &facts);
                let second = patched(&first, &decision.patch);
                let again = decide(&request(&second), &settings, &facts);
                assert!(
                    again.patch.is_empty(),
                    "{case} {policy:?} {presence:?}: {:?}",
                    again.patch
                );
            }
        }
    }
}

#[test]
fn reinvocation_merges_original_images_and_keeps_one_gate() {
    let review = review("reinvoked_with_new_sidecar");
    let settings = settings();
    let facts = Facts {
        pull_secret: Some(PULL_SECRET.into()),
        ..all(&review, &settings, Presence::Missing)
    };
    let (decision, pod) = run("reinvoked_with_new_sidecar", &settings, &facts);
    assert_eq!(
        image(&pod, "istio-proxy"),
        format!("{ECR}/docker.io/istio/proxyv2:1.24.0")
    );
    assert_eq!(
        original_images(&pod),
        json!({"app": "nginx:1.27", "istio-proxy": "docker.io/istio/proxyv2:1.24.0"})
    );
    assert_eq!(gates(&pod), ["privatize.io/mirror"]);
    assert_eq!(pull_secrets(&pod), [PULL_SECRET]);
    assert_eq!(
        outcome(&decision, "app"),
        Outcome::LeftAlone(LeaveReason::InTarget)
    );
    assert!(decision.gated);
    assert_eq!(
        decision.patch.len(),
        2,
        "image and annotation only: {:?}",
        decision.patch
    );
}
