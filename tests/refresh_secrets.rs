//! `privatize refresh-secrets` against the real kube-apiserver and the real
//! `privatize serve`, whose credential writer (ECR API: moto) writes the
//! logins: refresh-secrets asks for a refresh and reads the Secret back.
//! Each test's serve writes only in the test's namespace
//! (`PRIVATIZE_CREDENTIAL_NAMESPACES`) and each refresh-secrets run is limited
//! to it with `--namespace`, so tests running at once never see each other.
//! `refresh_secrets/serve.rs` covers the writer and the Secret webhook.

mod common;
#[path = "refresh_secrets/serve.rs"]
mod serve;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use common::kube::TestNamespace;
use common::serve::{Serve, ServeOptions};
use common::testbed;
use futures_util::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use privatize::mutate::secrets::{
    format_time, parse_time, EXPIRES_AT, REFRESHED_AT, REFRESH_REQUESTED_AT,
};
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

/// serve with its credential writer limited to `ns`.
fn writer_for(ns: &TestNamespace, options: ServeOptions) -> Serve {
    Serve::start_with(options.env("PRIVATIZE_CREDENTIAL_NAMESPACES", &ns.name))
}

/// The registry host serve writes logins for (the testbed's TLS "ECR") and
/// moto's password for it.
fn target_login() -> (String, String) {
    let tb = testbed();
    (tb.target().to_string(), tb.env["TARGET_PASSWORD"].clone())
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

/// A managed Secret serve wrote `written` hours ago (negative: in the past),
/// whose login expires in `expires` hours: an old login for the target in it.
fn written_secret(name: &str, label: (&str, &str), written: i64, expires: i64) -> Secret {
    let mut s = secret(
        name,
        &[label],
        &[
            (REFRESHED_AT, &hours_from_now(written)),
            (EXPIRES_AT, &hours_from_now(expires)),
        ],
    );
    let (host, _) = target_login();
    let old =
        json!({"auths": {host: {"username": "AWS", "password": "old", "auth": "QVdTOm9sZA=="}}});
    s.data.as_mut().unwrap().insert(
        ".dockerconfigjson".into(),
        k8s_openapi::ByteString(old.to_string().into_bytes()),
    );
    s
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

fn refreshed_at(secret: &Secret) -> Option<SystemTime> {
    parse_time(&annotation(secret, REFRESHED_AT)?)
}

/// The decoded docker config of a Secret.
fn config(secret: &Secret) -> Value {
    let bytes = &secret.data.as_ref().unwrap()[".dockerconfigjson"].0;
    serde_json::from_slice(bytes).unwrap()
}

/// Reads `name` back until serve wrote a login into it after `after`; the
/// Secret and how long that took from `after`.
async fn wait_written(ns: &TestNamespace, name: &str, after: SystemTime) -> (Secret, Duration) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let secret = get(ns, name).await;
        if let Some(at) = refreshed_at(&secret).filter(|at| *at > after) {
            return (secret, at.duration_since(after).unwrap_or_default());
        }
        assert!(
            Instant::now() < deadline,
            "serve wrote no login into {}/{name}: {:?}",
            ns.name,
            secret.metadata.annotations
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
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
async fn serve_writes_what_is_due_and_refresh_secrets_asks_for_what_expires_soon() {
    let ns = enabled_namespace("refresh_due", ENABLED).await;
    let (host, password) = target_login();
    // Made before serve runs, so their annotations are what we say.
    for s in [
        written_secret("fresh", MANAGED, -2, 10),
        written_secret("soon", MANAGED, -10, 2),
        written_secret("expired", MANAGED, -13, -1),
        secret("never-written", &[MANAGED], &[]),
        secret("legacy", &[LEGACY_MANAGED], &[]),
        secret("unreadable", &[MANAGED], &[(EXPIRES_AT, "tomorrow")]),
        secret("unmanaged", &[("app", "web")], &[]),
    ] {
        create(&ns, &s).await;
    }
    let started = SystemTime::now();
    let _serve = writer_for(&ns, ServeOptions::default());
    // The writer, unasked: what has no login, an unreadable expiry or one
    // within the hour.
    for name in ["expired", "never-written", "legacy", "unreadable"] {
        let (written, _) = wait_written(&ns, name, started).await;
        assert_eq!(
            config(&written)["auths"][&host]["password"],
            password.as_str(),
            "{name}"
        );
    }
    // Not due for serve (over an hour left), but within refresh-secrets' 6 h.
    let soon = get(&ns, "soon").await;
    assert!(refreshed_at(&soon).unwrap() < started);
    assert_eq!(config(&soon)["auths"][&host]["password"], "old");

    let before = SystemTime::now();
    let out = refresh(&ns, &["--output", "json"]);
    common::assert_ok(&out);
    let summary = json_summary(&out);
    assert_eq!(names(&summary, "refreshed"), ["soon"]);
    assert_eq!(
        names(&summary, "fresh"),
        ["expired", "fresh", "legacy", "never-written", "unreadable"]
    );
    assert_eq!(summary["failed"], json!([]));
    assert_eq!(summary["created"], json!([]));

    let soon = get(&ns, "soon").await;
    assert!(annotation(&soon, REFRESH_REQUESTED_AT).is_some());
    assert!(refreshed_at(&soon).unwrap() > before);
    let expires = parse_time(&annotation(&soon, EXPIRES_AT).unwrap()).unwrap();
    assert!(expires > before + Duration::from_secs(11 * 3600));
    assert_eq!(config(&soon)["auths"][&host]["password"], password.as_str());
    assert_eq!(
        summary["refreshed"][0]["expiresAt"].as_str(),
        annotation(&soon, EXPIRES_AT).as_deref()
    );
    let fresh = get(&ns, "fresh").await;
    assert_eq!(annotation(&fresh, REFRESH_REQUESTED_AT), None);
    assert_eq!(config(&fresh)["auths"][&host]["password"], "old");
    let unmanaged = get(&ns, "unmanaged").await;
    assert_eq!(unmanaged.metadata.annotations, None);
    assert_eq!(config(&unmanaged), json!({"auths": {}}));

    // Everything is fresh now: a second run asks for nothing.
    let out = refresh(&ns, &[]);
    common::assert_ok(&out);
    assert_eq!(common::stdout(&out), "0 refreshed, 6 fresh, 0 failed\n");
}

#[tokio::test]
async fn force_refreshes_every_managed_secret_in_legacy_labelled_namespaces_too() {
    let ns = enabled_namespace("refresh_force", LEGACY_ENABLED).await;
    for name in ["one", "two"] {
        create(&ns, &written_secret(name, LEGACY_MANAGED, -1, 11)).await;
    }
    let _serve = writer_for(&ns, ServeOptions::default());

    let out = refresh(&ns, &[]);
    common::assert_ok(&out);
    assert_eq!(common::stdout(&out), "0 refreshed, 2 fresh, 0 failed\n");

    let before = SystemTime::now();
    let out = refresh(&ns, &["--force"]);
    common::assert_ok(&out);
    assert_eq!(common::stdout(&out), "2 refreshed, 0 fresh, 0 failed\n");
    let (_, password) = target_login();
    for name in ["one", "two"] {
        let secret = get(&ns, name).await;
        assert!(refreshed_at(&secret).unwrap() > before, "{name}");
        assert_eq!(
            config(&secret)["auths"][testbed().target()]["password"],
            password.as_str()
        );
    }
}

#[tokio::test]
async fn refresh_before_decides_what_is_due() {
    let ns = enabled_namespace("refresh_before", ENABLED).await;
    create(&ns, &written_secret("eight-hours", MANAGED, -4, 8)).await;
    let _serve = writer_for(&ns, ServeOptions::default());
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
    let _serve = writer_for(&ns, ServeOptions::default());
    let (host, password) = target_login();

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
    assert_eq!(
        config(&created)["auths"][&host]["password"],
        password.as_str()
    );
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
async fn without_a_writer_the_run_fails_naming_each_secret_and_why() {
    let ns = enabled_namespace("refresh_no_writer", ENABLED).await;
    let stale = create(&ns, &written_secret("stale", MANAGED, -11, 1)).await;
    let stale_at = annotation(&stale, REFRESHED_AT).unwrap();
    // A serve runs, but writes elsewhere (the tests' default).
    let _elsewhere = Serve::start();

    let out = refresh(&ns, &["--ensure", "--wait", "2s"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    let stdout = common::stdout(&out);
    let hint =
        "(is serve running, and may it read Secrets here: a RoleBinding of privatize-credentials?)";
    assert_eq!(
        stdout,
        format!(
            "0 refreshed, 0 fresh, 2 failed\n\
             failed: Secret {ns}/privatize-ecr: created, but after 2s: serve wrote no login: no {REFRESHED_AT} {hint}\n\
             failed: Secret {ns}/stale: after 2s: serve wrote no fresh login: {REFRESHED_AT} is still {stale_at} {hint}\n",
            ns = ns.name
        )
    );
    assert_eq!(
        common::stderr(&out).lines().last(),
        Some("error: 2 of 2 managed Secrets could not be refreshed")
    );
    let stale = get(&ns, "stale").await;
    assert_eq!(
        config(&stale)["auths"][testbed().target()]["password"],
        "old"
    );
}

#[tokio::test]
async fn five_hundred_secrets_are_written_and_refreshed() {
    let ns = enabled_namespace("refresh_many", ENABLED).await;
    let api = Api::<Secret>::namespaced(ns.client.clone(), &ns.name);
    let _serve = writer_for(&ns, ServeOptions::default());
    let started = SystemTime::now();
    stream::iter(0..500)
        .for_each_concurrent(32, |i| {
            let api = api.clone();
            let secret = secret(&format!("s{i:03}"), &[MANAGED], &[]);
            async move {
                api.create(&PostParams::default(), &secret).await.unwrap();
            }
        })
        .await;
    let (_, last) = wait_written(&ns, "s499", started).await;
    let mut slowest = last;
    for i in 0..500 {
        let (_, took) = wait_written(&ns, &format!("s{i:03}"), started).await;
        slowest = slowest.max(took);
    }
    eprintln!(
        "serve: 500 Secrets created at once, all written {slowest:.2?} after the first create"
    );

    let begun = Instant::now();
    let out = refresh(&ns, &["--force"]);
    let elapsed = begun.elapsed();
    common::assert_ok(&out);
    assert_eq!(common::stdout(&out), "500 refreshed, 0 fresh, 0 failed\n");
    eprintln!("refresh-secrets --force: 500 Secrets in {elapsed:.2?}");
}
