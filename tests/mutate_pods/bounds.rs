//! Tenant safety in the decision (DESIGN §11): pods that name their node are
//! never gated, private sources are mirrored only where allowed, and a pod's
//! images to mirror are capped.

use super::*;
use privatize::mutate::pods::Access;

#[test]
fn a_pod_that_names_its_node_gets_the_exists_answer_and_no_gate() {
    // What `kubectl debug node/…` creates: the API refuses a gate on such a pod.
    let review = review("create_node_name");
    let settings = settings();
    let facts = all(&review, &settings, Presence::Missing);
    let (decision, pod) = run("create_node_name", &settings, &facts);
    assert_eq!(image(&pod, "debugger"), "busybox:1.36");
    assert_eq!(outcome(&decision, "debugger"), Outcome::KeptUntilCopied);
    assert!(!decision.gated && gates(&pod).is_empty());
    assert_eq!(
        pod["metadata"]["labels"]["privatize.io/copy-pending"],
        "true"
    );
    assert_eq!(
        wanted(&review, &pod, &settings, &facts),
        [(
            "docker.io/library/busybox:1.36".to_string(),
            format!("{ECR}/docker.io/library/busybox:1.36")
        )]
    );
    // Once the copy is there, such a pod is rewritten like any other.
    let present = all(&review, &settings, Presence::Present);
    let (decision, pod) = run("create_node_name", &settings, &present);
    assert_eq!(
        image(&pod, "debugger"),
        format!("{ECR}/docker.io/library/busybox:1.36")
    );
    assert_eq!(outcome(&decision, "debugger"), Outcome::Rewritten);
    assert!(gates(&pod).is_empty());
}

fn strict() -> Settings {
    Settings {
        private_source_namespaces: vec!["trusted-*".into()],
        ..settings()
    }
}

fn with_access(review: &Value, settings: &Settings, presence: Presence, private: &str) -> Facts {
    let found = candidates(&request(review), settings);
    assert!(
        found.iter().all(|c| c.check_access),
        "shop may not mirror private images"
    );
    Facts {
        access: found
            .iter()
            .map(|c| {
                let access = if c.source.to_string() == private {
                    Access::Private
                } else {
                    Access::Public
                };
                (c.source.to_string(), access)
            })
            .collect(),
        ..all(review, settings, presence)
    }
}

#[test]
fn a_private_source_is_left_unchanged_where_private_sources_are_not_allowed() {
    let review = review("create_containers_and_init");
    let private = "quay.io/prometheus/node-exporter:v1.8.2";
    for presence in [Presence::Missing, Presence::Present] {
        let facts = with_access(&review, &strict(), presence, private);
        let (decision, pod) = run("create_containers_and_init", &strict(), &facts);
        assert_eq!(image(&pod, "metrics"), private, "{presence:?}");
        assert_eq!(
            outcome(&decision, "metrics"),
            Outcome::LeftAlone(LeaveReason::PrivateSource)
        );
        assert_eq!(
            Outcome::LeftAlone(LeaveReason::PrivateSource).label(),
            "private-source"
        );
        assert_eq!(
            decision.warnings,
            [format!("container metrics: {private} cannot be read anonymously and namespace may not mirror private images: left unchanged")]
        );
        // The public ones are mirrored as usual, and nothing wants the private one copied.
        assert_eq!(
            image(&pod, "app"),
            format!("{ECR}/docker.io/library/nginx:1.27")
        );
        assert!(!wanted(&review, &pod, &strict(), &facts)
            .iter()
            .any(|(source, _)| source == private));
    }
}

#[test]
fn a_private_source_is_mirrored_in_an_allowed_namespace_without_asking() {
    let mut review = review("create_containers_and_init");
    review["request"]["namespace"] = "trusted-payments".into();
    let settings = strict();
    assert!(candidates(&request(&review), &settings)
        .iter()
        .all(|c| !c.check_access));
    // No access facts at all: nothing is asked, nothing is unknown.
    let facts = all(&review, &settings, Presence::Missing);
    let decision = decide(&request(&review), &settings, &facts);
    assert!(decision.gated);
    assert!(decision.warnings.is_empty(), "{:?}", decision.warnings);
}

#[test]
fn an_unknown_anonymous_access_leaves_the_whole_pod_unchanged() {
    let review = review("create_containers_and_init");
    let settings = strict();
    let mut facts = with_access(&review, &settings, Presence::Missing, "none");
    facts.access.remove("ghcr.io/envoyproxy/envoy:v1.31.0");
    let (decision, pod) = run("create_containers_and_init", &settings, &facts);
    assert!(decision.patch.is_empty());
    assert_eq!(image(&pod, "app"), "nginx:1.27");
    assert_eq!(
        decision.warnings,
        ["could not tell whether ghcr.io/envoyproxy/envoy:v1.31.0 can be read anonymously: pod left unchanged"]
    );
    assert!(decision
        .images
        .iter()
        .all(|i| i.outcome == Outcome::SourceUnknown));
}

#[test]
fn a_pod_with_more_images_than_the_cap_is_left_unchanged_without_lookups() {
    let review = review("create_many_images");
    let settings = settings();
    assert!(
        candidates(&request(&review), &settings).is_empty(),
        "no registry is asked about a pod over the cap"
    );
    let (decision, pod) = run("create_many_images", &settings, &Facts::default());
    assert!(decision.patch.is_empty());
    assert_eq!(image(&pod, "c0"), "quay.io/org/app0:1");
    assert_eq!(
        decision.skipped,
        Some(SkipReason::TooManyImages { count: 40, max: 32 })
    );
    assert_eq!(
        decision.warnings,
        ["40 distinct images to mirror, over the limit of 32 per pod: pod left unchanged"]
    );
    let roomy = Settings {
        max_images_per_pod: 40,
        ..settings
    };
    assert_eq!(candidates(&request(&review), &roomy).len(), 40);
}

#[test]
fn with_require_pull_secret_a_pod_is_rewritten_only_where_the_pull_secret_is() {
    let settings = Settings {
        require_pull_secret: true,
        ..settings()
    };
    let review = review("create_containers_and_init");
    for presence in [Presence::Missing, Presence::Present] {
        // No managed pull Secret (the namespace is not enabled): left as it is.
        let facts = all(&review, &settings, presence);
        let (decision, pod) = run("create_containers_and_init", &settings, &facts);
        assert!(
            decision.patch.is_empty(),
            "{presence:?}: {:?}",
            decision.patch
        );
        assert_eq!(image(&pod, "app"), "nginx:1.27");
        assert!(gates(&pod).is_empty() && pull_secrets(&pod).is_empty());
        assert_eq!(
            outcome(&decision, "app"),
            Outcome::LeftAlone(LeaveReason::NoPullSecret)
        );
        assert_eq!(
            Outcome::LeftAlone(LeaveReason::NoPullSecret).label(),
            "no_pull_secret"
        );
        assert_eq!(
            decision.warnings,
            ["the namespace has no managed pull Secret (not enabled for ECR credentials), so its nodes could not pull mirrored images: left unchanged (PRIVATIZE_REQUIRE_PULL_SECRET)"]
        );
        assert!(wanted(&review, &pod, &settings, &facts).is_empty());
        // With the Secret there, the pod is rewritten and gets it.
        let facts = Facts {
            pull_secret: Some(PULL_SECRET.to_string()),
            ..all(&review, &settings, presence)
        };
        let (decision, pod) = run("create_containers_and_init", &settings, &facts);
        assert_eq!(
            image(&pod, "app"),
            format!("{ECR}/docker.io/library/nginx:1.27")
        );
        assert_eq!(pull_secrets(&pod), [PULL_SECRET]);
        assert!(decision.warnings.is_empty(), "{:?}", decision.warnings);
    }
}
