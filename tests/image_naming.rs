//! The reference normalisation and source → target naming rule (pure).

use privatize::image::{host_component, is_valid_repository_name, ImageRef, TargetRegistry};
use privatize::registry::copy::tags::TagPlan;

const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn target(source: &str) -> String {
    TargetRegistry::parse(ECR)
        .unwrap()
        .target_reference(&ImageRef::parse(source).unwrap())
        .to_string()
}

#[test]
fn docker_hub_short_names_get_library_and_latest() {
    assert_eq!(
        target("nginx"),
        format!("{ECR}/docker.io/library/nginx:latest")
    );
    assert_eq!(
        target("bitnami/redis:7"),
        format!("{ECR}/docker.io/bitnami/redis:7")
    );
    assert_eq!(
        target("docker.io/nginx:1.27"),
        format!("{ECR}/docker.io/library/nginx:1.27")
    );
}

#[test]
fn docker_hub_aliases_fold_into_docker_io() {
    for alias in [
        "index.docker.io/library/nginx",
        "registry-1.docker.io/nginx",
        "INDEX.DOCKER.IO/nginx",
    ] {
        assert_eq!(
            ImageRef::parse(alias).unwrap().name(),
            "docker.io/library/nginx",
            "{alias}"
        );
    }
}

#[test]
fn tag_and_digest_are_both_kept() {
    let d = digest('a');
    assert_eq!(
        target(&format!("quay.io/org/app:1.2@{d}")),
        format!("{ECR}/quay.io/org/app:1.2@{d}")
    );
}

#[test]
fn digest_only_reference_is_tagged_for_lifecycle_safety() {
    let d = digest('b');
    let source = ImageRef::parse(&format!("ghcr.io/x/y@{d}")).unwrap();
    assert_eq!(source.tag, None);
    let plan = TagPlan::new(&source, &source);
    assert_eq!(plan.named, None);
    assert_eq!(plan.anchor(&d), Some(format!("sha256-{}", "b".repeat(64))));
    let both = ImageRef::parse(&format!("ghcr.io/x/y:v1@{d}")).unwrap();
    let plan = TagPlan::new(&both, &both);
    assert_eq!(plan.named.as_deref(), Some("v1"));
    assert_eq!(plan.anchor(&d), Some(format!("sha256-{}", "b".repeat(64))));
}

#[test]
fn upper_case_hosts_are_lower_cased() {
    assert_eq!(
        target("Quay.IO/org/app:v1"),
        format!("{ECR}/quay.io/org/app:v1")
    );
    assert_eq!(
        ImageRef::parse("LOCALHOST:5000/a/b").unwrap().host,
        "localhost:5000"
    );
}

#[test]
fn registry_ports_map_to_ecr_valid_names() {
    assert_eq!(
        target("localhost:5000/team/app:v1"),
        format!("{ECR}/localhost-5000/team/app:v1")
    );
    assert_eq!(
        target("10.1.2.3:5000/app"),
        format!("{ECR}/10.1.2.3-5000/app:latest")
    );
    assert_eq!(target("10.1.2.3/app"), format!("{ECR}/10.1.2.3/app:latest"));
}

#[test]
fn a_port_form_never_meets_a_host_named_like_it() {
    assert_eq!(host_component("host:5000"), "host-5000");
    assert_eq!(host_component("host-5000"), "host_5000");
    assert_eq!(host_component("my-registry.io"), "my-registry.io");
    assert_ne!(target("reg.io:5000/app"), target("reg.io-5000/app"));
}

#[test]
fn prefix_goes_before_the_source_host() {
    let registry = TargetRegistry::parse(&format!("{ECR}/mirror/public")).unwrap();
    let source = ImageRef::parse("nginx").unwrap();
    assert_eq!(
        registry.repository_name(&source),
        "mirror/public/docker.io/library/nginx"
    );
}

#[test]
fn invalid_prefix_is_refused() {
    let err = TargetRegistry::parse(&format!("{ECR}/Bad_Prefix")).unwrap_err();
    assert!(
        format!("{err:#}").contains("invalid target prefix"),
        "{err:#}"
    );
    assert!(TargetRegistry::parse("").is_err());
}

#[test]
fn every_target_name_is_ecr_valid() {
    for source in [
        "nginx",
        "localhost:5000/a/b",
        "quay.io/a-b/c.d_e",
        "gcr.io/a__b/c--d",
        "registry.k8s.io/pause:3.9",
    ] {
        let name = TargetRegistry::parse(ECR)
            .unwrap()
            .repository_name(&ImageRef::parse(source).unwrap());
        assert!(is_valid_repository_name(&name), "{source} -> {name}");
    }
}

#[test]
fn names_ecr_forbids_are_escaped_with_a_stable_hash() {
    let registry = TargetRegistry::parse(ECR).unwrap();
    let a = registry.repository_name(&ImageRef::parse("gcr.io/a__b/c").unwrap());
    let b = registry.repository_name(&ImageRef::parse("gcr.io/a_b/c").unwrap());
    assert!(is_valid_repository_name(&a), "{a}");
    assert_ne!(a, b, "escaping must not merge two sources");
    assert_eq!(
        a,
        registry.repository_name(&ImageRef::parse("gcr.io/a__b/c:other").unwrap()),
        "same repository, same name"
    );
}

#[test]
fn long_names_are_shortened_with_a_hash_the_same_every_time() {
    let registry = TargetRegistry::parse(ECR).unwrap();
    let long_a = format!("quay.io/{}/a", "x".repeat(230));
    let long_b = format!("quay.io/{}/b", "x".repeat(230));
    let a = registry.repository_name(&ImageRef::parse(&long_a).unwrap());
    let b = registry.repository_name(&ImageRef::parse(&long_b).unwrap());
    assert!(
        a.len() <= 256 && ECR.len() + 1 + a.len() <= 255,
        "{} chars",
        a.len()
    );
    assert!(is_valid_repository_name(&a), "{a}");
    assert_ne!(a, b);
    assert_eq!(
        a,
        registry.repository_name(&ImageRef::parse(&long_a).unwrap())
    );
}

#[test]
fn malformed_references_get_a_clear_error() {
    for bad in [
        "",
        "Bad//ref",
        "nginx:",
        "UPPER/case",
        "nginx@sha256:short",
        "a b",
        "http://x/y",
    ] {
        let err = ImageRef::parse(bad).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("invalid image reference"),
            "{bad}: {err:#}"
        );
    }
}

#[test]
fn display_round_trips_through_parse() {
    let d = digest('c');
    for text in [
        "docker.io/library/nginx:latest".to_string(),
        format!("localhost:5000/a/b:v1@{d}"),
        format!("quay.io/a/b@{d}"),
    ] {
        assert_eq!(ImageRef::parse(&text).unwrap().to_string(), text);
    }
}

#[test]
fn the_reference_grammar_matches_distributions() {
    let d = digest('d');
    for good in [
        "a/b--c",
        "a/b---c",
        "a/b__c",
        "a/b.c_d-e",
        "registry.example:5000/a/b:V1.0_rc-1",
        "localhost/a",
        "x:tag",
        &format!("a@{d}"),
    ] {
        assert!(ImageRef::parse(good).is_ok(), "{good} should parse");
    }
    let cases = [
        ("a/b..c", "invalid reference format"),
        ("a/b___c", "invalid reference format"),
        ("a/-b", "invalid reference format"),
        ("nginx:", "invalid tag format"),
        ("nginx:-x", "invalid tag format"),
        ("host:port/a", "invalid registry port"),
        ("-bad.host/a", "invalid registry host"),
        ("a@md5:00", "unsupported digest algorithm"),
        ("a@sha256:zz", "invalid digest length or characters"),
        ("[::1]:5000/a", "IPv6 registry hosts are not supported"),
    ];
    for (bad, why) in cases {
        let err = format!("{:#}", ImageRef::parse(bad).unwrap_err());
        assert!(err.ends_with(why), "{bad}: {err}");
    }
    let long = format!("quay.io/{}", "a".repeat(250));
    assert!(format!("{:#}", ImageRef::parse(&long).unwrap_err()).contains("longer than 255"));
}
