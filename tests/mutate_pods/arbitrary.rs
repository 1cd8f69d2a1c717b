//! Property: for any pod (garbage images, clashing names, odd annotations, gates and
//! pull secrets), `decide` does not panic, its patch applies to the request object and
//! leaves a valid Pod, dry runs copy nothing, and a second pass changes nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EphemeralContainer, LocalObjectReference, PodSchedulingGate, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;

use super::*;

fn image() -> impl Strategy<Value = Option<String>> {
    let known = prop::sample::select(vec![
        "nginx:1.27".to_string(),
        "nginx".to_string(),
        "auto".to_string(),
        String::new(),
        " quay.io/org/app:1.2 ".to_string(),
        format!("quay.io/org/app:1.2@sha256:{}", "a".repeat(64)),
        format!("registry.k8s.io/pause@sha256:{}", "b".repeat(64)),
        "[::1]:5000/x".to_string(),
        "[fd00::1]:5000/x".to_string(),
        "127.0.0.1:5000/x:1".to_string(),
        "foo.ns.svc/x".to_string(),
        format!("{ECR}/docker.io/library/nginx:1.27"),
        format!("{}/x", ECR.to_uppercase()),
        "Library/NGINX".to_string(),
        "a/b/c/d/e:tag".to_string(),
    ]);
    prop::option::weighted(
        0.9,
        prop_oneof![
            3 => known,
            5 => reference(),
            2 => "[a-zA-Z0-9./:@_\\[\\]~ -]{0,40}",
            1 => any::<String>(),
        ],
    )
}

/// Mostly valid references: `[host/]path[:tag][@digest]`.
fn reference() -> impl Strategy<Value = String> {
    let host = prop::option::of(prop::sample::select(vec![
        "quay.io",
        "ghcr.io",
        "Docker.IO",
        "registry.k8s.io:443",
        "localhost:5000",
    ]));
    let tag = prop::option::of("[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,8}");
    let digest = prop::option::of("[0-9a-f]{64}");
    ("[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}", host, tag, digest).prop_map(
        |(path, host, tag, digest)| {
            let mut text = host.map_or(path.clone(), |h| format!("{h}/{path}"));
            if let Some(tag) = tag {
                text = format!("{text}:{tag}");
            }
            if let Some(hex) = digest {
                text = format!("{text}@sha256:{hex}");
            }
            text
        },
    )
}

/// Few distinct names, so clashes happen.
fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-c]", Just("x/y~z".to_string())]
}

fn containers() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    prop::collection::vec((name(), image()), 0..4)
}

fn string_map(keys: Vec<&'static str>) -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
    let values = prop_oneof![
        Just("true".to_string()),
        Just("True ".to_string()),
        Just("{}".to_string()),
        Just("{\"a\":\"nginx\",\"n\":1}".to_string()),
        Just("[1]".to_string()),
        any::<String>(),
    ];
    let keys = prop::sample::select(keys).prop_map(String::from);
    prop::option::of(prop::collection::btree_map(keys, values, 0..4))
}

fn names_list(names: Vec<&'static str>) -> impl Strategy<Value = Option<Vec<String>>> {
    prop::option::of(prop::collection::vec(
        prop::sample::select(names).prop_map(String::from),
        0..3,
    ))
}

#[derive(Debug, Clone)]
struct Input {
    operation: u8,
    containers: Vec<(String, Option<String>)>,
    init: Option<Vec<(String, Option<String>)>>,
    ephemeral: Option<Vec<(String, Option<String>)>>,
    old_ephemeral: usize,
    annotations: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
    gates: Option<Vec<String>>,
    pull_secrets: Option<Vec<String>>,
    presence: Vec<u8>,
    pull_secret: bool,
    policy: u8,
    exclude: u8,
    settings_dry_run: bool,
    request_dry_run: bool,
}

fn input() -> impl Strategy<Value = Input> {
    let pod = (
        0..4u8,
        containers(),
        prop::option::of(containers()),
        prop::option::of(prop::collection::vec(("e[0-9]", image()), 0..5)),
        0..3usize,
        string_map(vec![ORIGINAL_KEY, "privatize.io/skip", "a~b/c", "x"]),
        string_map(vec!["privatize.io/gated", "app"]),
        names_list(vec!["privatize.io/mirror", "example.com/other"]),
        names_list(vec![PULL_SECRET, "regcred"]),
    );
    let facts = (
        prop::collection::vec(0..20u8, 0..8),
        any::<bool>(),
        0..3u8,
        0..3u8,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.2),
    );
    (pod, facts).prop_map(
        |(
            (
                operation,
                containers,
                init,
                ephemeral,
                old_ephemeral,
                annotations,
                labels,
                gates,
                pull_secrets,
            ),
            (presence, pull_secret, policy, exclude, settings_dry_run, request_dry_run),
        )| Input {
            operation,
            containers,
            init,
            ephemeral,
            old_ephemeral,
            annotations,
            labels,
            gates,
            pull_secrets,
            presence,
            pull_secret,
            policy,
            exclude,
            settings_dry_run,
            request_dry_run,
        },
    )
}

const ORIGINAL_KEY: &str = "privatize.io/original-images";

fn container((name, image): &(String, Option<String>)) -> Container {
    Container {
        name: name.clone(),
        image: image.clone(),
        ..Container::default()
    }
}

fn ephemeral((name, image): &(String, Option<String>)) -> EphemeralContainer {
    EphemeralContainer {
        name: name.clone(),
        image: image.clone(),
        ..EphemeralContainer::default()
    }
}

fn pod(input: &Input, ephemeral_count: usize) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("shop".into()),
            annotations: input.annotations.clone(),
            labels: input.labels.clone(),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: input.containers.iter().map(container).collect(),
            init_containers: input
                .init
                .as_ref()
                .map(|c| c.iter().map(container).collect()),
            ephemeral_containers: input
                .ephemeral
                .as_ref()
                .map(|c| c.iter().take(ephemeral_count).map(ephemeral).collect()),
            scheduling_gates: input.gates.as_ref().map(|g| {
                g.iter()
                    .map(|name| PodSchedulingGate { name: name.clone() })
                    .collect()
            }),
            image_pull_secrets: input.pull_secrets.as_ref().map(|s| {
                s.iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect()
            }),
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn review_of(input: &Input) -> Value {
    let object = serde_json::to_value(pod(input, usize::MAX)).unwrap();
    let old = serde_json::to_value(pod(input, input.old_ephemeral)).unwrap();
    let (operation, sub_resource, old) = match input.operation {
        0 | 1 => ("CREATE", None, Value::Null),
        2 => ("UPDATE", Some("ephemeralcontainers"), old),
        _ => ("UPDATE", None, old),
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": sub_resource,
            "namespace": "shop",
            "operation": operation,
            "userInfo": {},
            "object": object,
            "oldObject": old,
            "dryRun": input.request_dry_run,
        }
    })
}

fn settings_of(input: &Input) -> Settings {
    Settings {
        swap_policy: [SwapPolicy::Gate, SwapPolicy::Always, SwapPolicy::Exists]
            [input.policy as usize % 3],
        exclude: match input.exclude {
            0 => default_exclude(),
            1 => Vec::new(),
            _ => vec!["quay.io".into(), "docker.io/library/*".into()],
        },
        dry_run: input.settings_dry_run,
        ..settings()
    }
}

fn facts_of(input: &Input, review: &Value, settings: &Settings) -> Facts {
    // Mostly known answers: one unknown image leaves the whole pod unchanged.
    let presence = candidates(&request(review), settings)
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let pick = input.presence.get(i).copied().unwrap_or(0);
            let presence = match pick {
                0..=9 => Presence::Present,
                10..=18 => Presence::Missing,
                _ => Presence::Unknown,
            };
            (c.target.to_string(), presence)
        })
        .collect();
    Facts {
        presence,
        pull_secret: input.pull_secret.then(|| PULL_SECRET.to_string()),
        access: Default::default(),
        digests: Default::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn any_pod_gets_a_patch_that_applies_and_is_stable(input in input()) {
        let review = review_of(&input);
        let settings = settings_of(&input);
        let facts = facts_of(&input, &review, &settings);
        let request = request(&review);
        let decision = decide(&request, &settings, &facts);

        let mut object = review["request"]["object"].clone();
        let applied = json_patch::patch(&mut object, &decision.patch);
        prop_assert!(applied.is_ok(), "{applied:?} for {:?}", decision.patch);
        prop_assert!(serde_json::from_value::<Pod>(object).is_ok());

        if settings.dry_run {
            prop_assert!(decision.patch.is_empty());
        }
        if settings.dry_run || input.request_dry_run {
            prop_assert!(decision.copies.is_empty());
        }
        let mut targets: Vec<String> = decision.copies.iter().map(|c| c.target.to_string()).collect();
        let copies = targets.len();
        targets.sort();
        targets.dedup();
        prop_assert_eq!(targets.len(), copies);

        // Reinvocation on our own output changes nothing.
        if request.operation == kube::core::admission::Operation::Create {
            let second = patched(&review, &decision.patch);
            let again = decide(&super::request(&second), &settings, &facts);
            prop_assert!(again.patch.is_empty(), "second pass: {:?}", again.patch);
        }
    }
}
