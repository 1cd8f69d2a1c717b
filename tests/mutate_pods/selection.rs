//! Which images are left alone: the default exclude list, placeholders, invalid
//! references, exclude entries, the include allowlist, the target itself.

use super::*;

#[test]
fn default_exclude_list_leaves_unmirrorable_images_alone() {
    let review = review("create_default_excluded");
    let settings = settings();
    let found: Vec<String> = candidates(&request(&review), &settings)
        .iter()
        .map(|c| c.container.clone())
        .collect();
    assert_eq!(found, ["app"]);
    let facts = all(&review, &settings, Presence::Missing);
    let (decision, pod) = run("create_default_excluded", &settings, &facts);
    let excluded = |entry: &str| Outcome::LeftAlone(LeaveReason::Excluded(entry.into()));
    for (container, written, want) in [
        ("localhost", "localhost/tools/x:1", excluded("localhost")),
        (
            "loopback",
            "127.0.0.1:5000/tools/x:1",
            excluded("127.0.0.1"),
        ),
        ("ipv6", "[::1]:5000/tools/x:1", excluded("[::1]")),
        ("svc", "foo.ns.svc:5000/tools/x:1", excluded("*.svc")),
        (
            "svc-cluster-local",
            "registry.ns.svc.cluster.local/tools/x:1",
            excluded("*.svc.cluster.local"),
        ),
        (
            "istio-proxy",
            "auto",
            Outcome::LeftAlone(LeaveReason::Placeholder),
        ),
    ] {
        assert_eq!(image(&pod, container), written, "{container}");
        assert_eq!(outcome(&decision, container), want, "{container}");
    }
    assert_eq!(
        image(&pod, "app"),
        format!("{ECR}/docker.io/library/nginx:1.27")
    );
    assert_eq!(original_images(&pod), json!({"app": "nginx:1.27"}));
    assert_eq!(wanted(&review, &pod, &settings, &facts).len(), 1);
    assert!(decision.warnings.is_empty(), "{:?}", decision.warnings);
    assert_eq!(
        default_exclude(),
        [
            "localhost",
            "127.0.0.1",
            "[::1]",
            "*.svc",
            "*.svc.cluster.local"
        ]
    );
}

#[test]
fn invalid_references_are_left_alone_with_a_warning() {
    let review = review("create_invalid_references");
    let settings = settings();
    let (decision, pod) = run(
        "create_invalid_references",
        &settings,
        &all(&review, &settings, Presence::Present),
    );
    assert_eq!(image(&pod, "upper"), "Library/NGINX:1.27");
    assert_eq!(image(&pod, "ipv6-other"), "[fd00::1]:5000/x:1");
    assert_eq!(
        image(&pod, "app"),
        format!("{ECR}/docker.io/library/nginx:1.27")
    );
    assert_eq!(outcome(&decision, "upper").label(), "unparsable");
    assert_eq!(decision.warnings.len(), 2, "{:?}", decision.warnings);
    assert!(
        decision.warnings[0]
            .starts_with("container upper: invalid image reference \"Library/NGINX:1.27\""),
        "{}",
        decision.warnings[0]
    );
    assert!(
        decision.warnings[1].contains("IPv6"),
        "{}",
        decision.warnings[1]
    );
}

#[test]
fn exclude_entries_are_registries_or_reference_globs() {
    let review = review("create_mixed_registries");
    // (exclude list, containers left alone)
    let table: [(&[&str], &[&str]); 7] = [
        (&[], &[]),
        (&["docker.io"], &["nginx", "redis"]),
        (&["docker.io/library/*"], &["nginx"]),
        (&["registry.internal"], &["internal"]),
        (&["registry.internal:5000"], &["internal"]),
        (&["registry.internal:5001", "*.io:443"], &[]),
        (
            &["gcr.io/distroless/static", "quay.io/org/*:1.*"],
            &["app", "static"],
        ),
    ];
    for (exclude, left) in table {
        let settings = Settings {
            exclude: exclude.iter().map(|e| e.to_string()).collect(),
            ..settings()
        };
        let (decision, pod) = run(
            "create_mixed_registries",
            &settings,
            &all(&review, &settings, Presence::Present),
        );
        for seen in &decision.images {
            let alone = left.contains(&seen.container.as_str());
            let case = format!("{exclude:?}: {}", seen.container);
            assert_eq!(seen.outcome.label() == "excluded", alone, "{case}");
            assert_eq!(seen.outcome.rewrites(), !alone, "{case}");
            assert_eq!(
                image(&pod, &seen.container) == seen.original,
                alone,
                "{case}"
            );
        }
    }
}

#[test]
fn include_registries_is_an_allowlist() {
    let review = review("create_mixed_registries");
    let settings = Settings {
        include_registries: vec!["quay.io".into(), "gcr.io".into()],
        ..settings()
    };
    let (decision, pod) = run(
        "create_mixed_registries",
        &settings,
        &all(&review, &settings, Presence::Present),
    );
    let rewritten: Vec<&str> = decision
        .images
        .iter()
        .filter(|i| i.outcome.rewrites())
        .map(|i| i.container.as_str())
        .collect();
    assert_eq!(rewritten, ["app", "static"]);
    assert_eq!(
        outcome(&decision, "nginx"),
        Outcome::LeftAlone(LeaveReason::NotIncluded)
    );
    assert_eq!(image(&pod, "nginx"), "nginx:1.27");
    assert_eq!(
        image(&pod, "static"),
        format!("{ECR}/gcr.io/distroless/static:nonroot")
    );
}

#[test]
fn images_in_the_target_are_left_alone_whatever_the_exclude_list() {
    let review = review("create_image_in_target");
    let settings = Settings {
        exclude: Vec::new(),
        ..settings()
    };
    assert!(candidates(&request(&review), &settings).is_empty());
    let (decision, pod) = run("create_image_in_target", &settings, &Facts::default());
    assert!(decision.patch.is_empty());
    assert_eq!(
        outcome(&decision, "app"),
        Outcome::LeftAlone(LeaveReason::InTarget)
    );
    // The target names no port, so it is the target on any port.
    for container in ["upper-case-host", "with-port"] {
        assert_eq!(
            outcome(&decision, container),
            Outcome::LeftAlone(LeaveReason::InTarget),
            "{container}"
        );
    }
    assert_eq!(
        image(&pod, "app"),
        format!("{ECR}/docker.io/library/nginx:1.27")
    );
    // With the namespace enabled for credentials, the pod still needs the pull Secret.
    let facts = Facts {
        pull_secret: Some(PULL_SECRET.into()),
        ..Facts::default()
    };
    let (_, pod) = run("create_image_in_target", &settings, &facts);
    assert_eq!(pull_secrets(&pod), [PULL_SECRET]);
}
