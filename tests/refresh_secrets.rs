//! `privatize refresh-secrets` against the real kube-apiserver, with a URL webhook
//! scoped to each test's namespace that injects logins the way serve does (the
//! pure decision, a fixed fake token). Every run is limited to the test's
//! namespace with `--namespace`, so tests running at once never see each other.
//! `refresh_secrets/serve.rs` does the same against the real `privatize serve`.

mod common;
#[path = "refresh_secrets/serve.rs"]
mod serve;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use common::kube::TestNamespace;
use common::secret_webhook::{Registration, SecretWebhook, PASSWORD, REGISTRY};
use common::webhook::TinyWebhook;
use futures_util::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use privatize::mutate::secrets::{format_time, EXPIRES_AT, REFRESHED_AT, REFRESH_REQUESTED_AT};
use serde_json::{json, Value};

const MANAGED: (&str, &str) = ("privatize.io/ecr-credentials", "managed");
const LEGACY_MANAGED: (&str, &str) = ("ecr-anywhere.centml.ai/managed", "true");
const ENABLED: (&str, &str) = ("privatize.io/ecr-credentials", "enabled");
const LEGACY_ENABLED: (&str, &str) = ("ecr-anywhere.centml.ai/namespace", "enabled");

/// A fresh namespace labelled for managed credentials with `label`.
async fn enabled_namespace(test: &str, label: (&str, &str)) -> TestNamespace {
    let ns = TestNamespace::new(test).await;
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {label.0: label.1}}})),
        )
        .await
        .unwrap();
    ns
}

fn hours_from_now(hours: i64) -> String {
    let now = SystemTime::now();
    let shift = Duration::from_secs(hours.unsigned_abs() * 3600);
    format_time(if hours < 0 { now - shift } else { now + shift })
}

/// A dockerconfigjson Secret with `labels` and `annotations` and an empty config.
fn secret(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Secret {
    let map = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": map(labels), "annotations": map(annotations)},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(r#"{"auths":{}}"#)},
    }))
    .unwrap()
}

async fn create(ns: &TestNamespace, secret: &Secret) -> Secret {
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), secret)
        .await
        .unwrap()
}

async fn get(ns: &TestNamespace, name: &str) -> Secret {
    Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .get(name)
        .await
        .unwrap()
}

fn annotation(secret: &Secret, key: &str) -> Option<String> {
    secret.metadata.annotations.as_ref()?.get(key).cloned()
}

/// The decoded docker config of a Secret.
fn config(secret: &Secret) -> Value {
    let bytes = &secret.data.as_ref().unwrap()[".dockerconfigjson"].0;
    serde_json::from_slice(bytes).unwrap()
}

/// What shows a registration is active: a server-side dry-run create of a managed
/// Secret comes back injected, or refused (a webhook that is down), or reaches a
/// webhook that injects nothing.
enum Active<'a> {
    Injected,
    Refused,
    /// The webhook saw a request (it counts or logs them).
    Seen(&'a dyn Fn() -> bool),
}

/// Registers `url` for the namespace and waits until the apiserver calls it.
async fn register(ns: &TestNamespace, url: &str, ca_pem: &str, until: Active<'_>) -> Registration {
    let registration = Registration::create(&ns.client, &ns.name, url, ca_pem).await;
    let api = Api::<Secret>::namespaced(ns.client.clone(), &ns.name);
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = api.create(&params, &secret("probe", &[MANAGED], &[])).await;
        let active = match (&until, probe) {
            (Active::Injected, Ok(created)) => annotation(&created, REFRESHED_AT).is_some(),
            (Active::Refused, Err(_)) => true,
            (Active::Seen(seen), _) => seen(),
            _ => false,
        };
        if active {
            return registration;
        }
        assert!(Instant::now() < deadline, "the webhook never became active");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `privatize refresh-secrets --namespace NS ARGS…`.
fn refresh(ns: &TestNamespace, args: &[&str]) -> std::process::Output {
    common::kube::privatize()
        .args(["refresh-secrets", "--namespace", &ns.name])
        .args(args)
        .output()
        .unwrap()
}

fn json_summary(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", common::stdout(out)))
}

fn names(summary: &Value, group: &str) -> Vec<String> {
    summary[group]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn due_secrets_are_refreshed_and_fresh_ones_left_alone() {
    let ns = enabled_namespace("refresh_due", ENABLED).await;
    // Made before the webhook exists, so their annotations are what we say.
    let fresh_until = hours_from_now(10);
    for (name, labels, annotations) in [
        (
            "fresh",
            vec![MANAGED],
            vec![(EXPIRES_AT, fresh_until.as_str())],
        ),
        (
            "soon",
            vec![MANAGED],
            vec![(EXPIRES_AT, &hours_from_now(2))],
        ),
        (
            "expired",
            vec![MANAGED],
            vec![(EXPIRES_AT, &hours_from_now(-1))],
        ),
        ("never-injected", vec![MANAGED], vec![]),
        ("unreadable", vec![MANAGED], vec![(EXPIRES_AT, "tomorrow")]),
        ("legacy", vec![LEGACY_MANAGED], vec![]),
        ("unmanaged", vec![("app", "web")], vec![]),
    ] {
        create(&ns, &secret(name, &labels, &annotations)).await;
    }
    let webhook = SecretWebhook::start();
    let _registration = register(&ns, &webhook.url, &webhook.ca_pem, Active::Injected).await;
    let before = SystemTime::now();

    let out = refresh(&ns, &["--output", "json"]);
    common::assert_ok(&out);
    let summary = json_summary(&out);
    assert_eq!(
        names(&summary, "refreshed"),
        ["expired", "legacy", "never-injected", "soon", "unreadable"]
    );
    assert_eq!(names(&summary, "fresh"), ["fresh"]);
    assert_eq!(summary["failed"], json!([]));
    assert_eq!(summary["created"], json!([]));

    for name in ["expired", "legacy", "never-injected", "soon", "unreadable"] {
        let secret = get(&ns, name).await;
        assert!(
            annotation(&secret, REFRESH_REQUESTED_AT).is_some(),
            "{name}"
        );
        let expires =
            privatize::mutate::secrets::parse_time(&annotation(&secret, EXPIRES_AT).unwrap())
                .unwrap();
        assert!(expires > before + Duration::from_secs(11 * 3600), "{name}");
        assert_eq!(
            config(&secret)["auths"][REGISTRY]["password"],
            PASSWORD,
            "{name}"
        );
    }
    let fresh = get(&ns, "fresh").await;
    assert_eq!(annotation(&fresh, REFRESH_REQUESTED_AT), None);
    assert_eq!(annotation(&fresh, EXPIRES_AT), Some(fresh_until));
    assert_eq!(config(&fresh), json!({"auths": {}}));
    let unmanaged = get(&ns, "unmanaged").await;
    assert_eq!(annotation(&unmanaged, REFRESH_REQUESTED_AT), None);

    // Everything is fresh now: a second run refreshes nothing.
    let out = refresh(&ns, &[]);
    common::assert_ok(&out);
    assert_eq!(common::stdout(&out), "0 refreshed, 6 fresh, 0 failed\n");
}

#[tokio::test]
async fn force_refreshes_every_managed_secret_in_legacy_labelled_namespaces_too() {
    let ns = enabled_namespace("refresh_force", LEGACY_ENABLED).await;
    for name in ["one", "two"] {
        create(
            &ns,
            &secret(
                name,
                &[LEGACY_MANAGED],
                &[(EXPIRES_AT, &hours_from_now(11))],
            ),
        )
        .await;
    }
    let webhook = SecretWebhook::start();
    let _registration = register(&ns, &webhook.url, &webhook.ca_pem, Active::Injected).await;

    let out = refresh(&ns, &[]);
    common::assert_ok(&out);
    assert_eq!(common::stdout(&out), "0 refreshed, 2 fresh, 0 failed\n");

    let out = refresh(&ns, &["--force"]);
    common::assert_ok(&out);
    assert_eq!(common::stdout(&out), "2 refreshed, 0 fresh, 0 failed\n");
    for name in ["one", "two"] {
        assert_eq!(
            config(&get(&ns, name).await)["auths"][REGISTRY]["username"],
            "AWS"
        );
    }
}

#[tokio::test]
async fn refresh_before_decides_what_is_due() {
    let ns = enabled_namespace("refresh_before", ENABLED).await;
    create(
        &ns,
        &secret(
            "eight-hours",
            &[MANAGED],
            &[(EXPIRES_AT, &hours_from_now(8))],
        ),
    )
    .await;
    let webhook = SecretWebhook::start();
    let _registration = register(&ns, &webhook.url, &webhook.ca_pem, Active::Injected).await;
    let out = refresh(&ns, &["--refresh-before", "7h 59m"]);
    assert_eq!(common::stdout(&out), "0 refreshed, 1 fresh, 0 failed\n");
    let out = refresh(&ns, &["--refresh-before", "9h"]);
    assert_eq!(common::stdout(&out), "1 refreshed, 0 fresh, 0 failed\n");

    let out = refresh(&ns, &["--refresh-before", "six hours"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad duration is a usage error"
    );
    assert!(
        common::stderr(&out).contains("invalid value 'six hours' for '--refresh-before"),
        "{}",
        common::stderr(&out)
    );
}

#[tokio::test]
async fn ensure_creates_the_pull_secret_where_it_is_missing() {
    let ns = enabled_namespace("refresh_ensure", ENABLED).await;
    let webhook = SecretWebhook::start();
    let _registration = register(&ns, &webhook.url, &webhook.ca_pem, Active::Injected).await;

    let out = refresh(&ns, &["--ensure", "--output", "json"]);
    common::assert_ok(&out);
    let summary = json_summary(&out);
    assert_eq!(names(&summary, "created"), ["privatize-ecr"]);
    let created = get(&ns, "privatize-ecr").await;
    assert_eq!(
        created.metadata.labels.as_ref().unwrap()[MANAGED.0],
        MANAGED.1
    );
    assert_eq!(
        created.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert_eq!(config(&created)["auths"][REGISTRY]["password"], PASSWORD);
    assert_eq!(
        summary["created"][0]["expiresAt"].as_str(),
        annotation(&created, EXPIRES_AT).as_deref()
    );

    // It exists now: nothing more is created, and it is fresh.
    let out = refresh(&ns, &["--ensure"]);
    common::assert_ok(&out);
    assert_eq!(common::stdout(&out), "0 refreshed, 1 fresh, 0 failed\n");

    // A Secret of the name that is not managed is left alone, not a failure.
    let theirs: Secret =
        serde_json::from_value(json!({"metadata": {"name": "theirs"}, "stringData": {"k": "v"}}))
            .unwrap();
    create(&ns, &theirs).await;
    let out = refresh(&ns, &["--ensure", "--pull-secret-name", "theirs"]);
    common::assert_ok(&out);
    assert_eq!(common::stdout(&out), "0 refreshed, 1 fresh, 0 failed\n");
    assert_eq!(get(&ns, "theirs").await.type_.as_deref(), Some("Opaque"));
}

#[tokio::test]
async fn a_webhook_that_is_down_fails_the_run_naming_each_secret() {
    let ns = enabled_namespace("refresh_down", ENABLED).await;
    create(
        &ns,
        &secret("stale", &[MANAGED], &[(EXPIRES_AT, &hours_from_now(1))]),
    )
    .await;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}/mutate/secrets");
    let webhook = SecretWebhook::start(); // only for its CA
    let _registration = register(&ns, &url, &webhook.ca_pem, Active::Refused).await;

    let out = refresh(&ns, &["--ensure"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let stdout = common::stdout(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "0 refreshed, 0 fresh, 2 failed");
    let prefix_create = format!(
        "failed: Secret {}/privatize-ecr: creating it: Internal error occurred: failed calling webhook \"secrets.{}.test.privatize.io\"",
        ns.name, ns.name
    );
    let prefix_refresh = format!(
        "failed: Secret {}/stale: requesting a refresh: Internal error occurred: failed calling webhook \"secrets.{}.test.privatize.io\"",
        ns.name, ns.name
    );
    assert!(lines[1].starts_with(&prefix_create), "{stdout}");
    assert!(lines[2].starts_with(&prefix_refresh), "{stdout}");
    assert!(lines[2].contains("connection refused"), "{stdout}");
    assert_eq!(
        common::stderr(&out).lines().last(),
        Some("error: 2 of 2 managed Secrets could not be refreshed")
    );
    let stale = get(&ns, "stale").await;
    assert_eq!(annotation(&stale, REFRESH_REQUESTED_AT), None);
}

#[tokio::test]
async fn a_webhook_that_answers_without_injecting_fails_the_run() {
    let ns = enabled_namespace("refresh_no_inject", ENABLED).await;
    create(
        &ns,
        &secret("stale", &[MANAGED], &[(EXPIRES_AT, &hours_from_now(1))]),
    )
    .await;
    // Another webhook (an old ecr-anywhere, a misconfiguration) allows every Secret unchanged.
    let webhook = TinyWebhook::start(json!([]));
    let url = format!("https://{}/mutate/secrets", webhook.addr);
    let _registration = register(
        &ns,
        &url,
        &webhook.ca_pem,
        Active::Seen(&|| webhook.calls() > 0),
    )
    .await;

    let out = refresh(&ns, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert_eq!(
        common::stdout(&out),
        format!(
            "0 refreshed, 0 fresh, 1 failed\nfailed: Secret {}/stale: the webhook did not inject it: no privatize.io/refreshed-at\n",
            ns.name
        )
    );
}

#[tokio::test]
async fn five_hundred_secrets_refresh_in_seconds() {
    let ns = enabled_namespace("refresh_many", ENABLED).await;
    let expired = hours_from_now(-1);
    let api = Api::<Secret>::namespaced(ns.client.clone(), &ns.name);
    stream::iter(0..500)
        .for_each_concurrent(32, |i| {
            let api = api.clone();
            let secret = secret(&format!("s{i:03}"), &[MANAGED], &[(EXPIRES_AT, &expired)]);
            async move {
                api.create(&PostParams::default(), &secret).await.unwrap();
            }
        })
        .await;
    let webhook = SecretWebhook::start();
    let _registration = register(&ns, &webhook.url, &webhook.ca_pem, Active::Injected).await;
    let calls = webhook.calls();

    let started = Instant::now();
    let out = refresh(&ns, &[]);
    let elapsed = started.elapsed();
    common::assert_ok(&out);
    assert_eq!(common::stdout(&out), "500 refreshed, 0 fresh, 0 failed\n");
    assert_eq!(webhook.calls() - calls, 500, "one webhook call per Secret");
    eprintln!("refresh-secrets: 500 Secrets in {elapsed:.2?}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
