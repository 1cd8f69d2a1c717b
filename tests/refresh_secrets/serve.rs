//! The credential writer and the Secret webhook of the real `privatize serve`
//! (ECR target: the testbed's TLS registry, ECR API: moto), the webhook
//! registered by URL for one test namespace: no admission answer carries a
//! login; the writer's login opens the target registry and keeps every other
//! entry byte for byte, `refresh-secrets` renews it, a broken ECR API denies
//! the Secret and leaves an Event, and a dry run fetches nothing.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures_util::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use privatize::mutate::secrets::parse_time;
use serde_json::json;

use super::common::aws_counter::{AwsCounter, GET_AUTHORIZATION_TOKEN};
use super::common::kube::TestNamespace;
use super::common::secret_webhook::Registration;
use super::common::serve::{Serve, ServeOptions};
use super::common::{stderr, stdout, testbed};
use super::{
    annotation, config, create, enabled_namespace, get, hours_from_now, refresh, secret,
    target_login, wait_written, writer_for, ENABLED, EXPIRES_AT, MANAGED, REFRESHED_AT,
};

/// Registers serve's Secret webhook for the namespace's managed Secrets;
/// active once serve has logged an admission of the namespace's probe (a
/// server-side dry run).
async fn register_serve(ns: &TestNamespace, serve: &Serve) -> Registration {
    let url = format!("https://{}/mutate/secrets", serve.https);
    let registration = Registration::create(&ns.client, &ns.name, &url, &serve.cas[0]).await;
    let api = Api::<Secret>::namespaced(ns.client.clone(), &ns.name);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let _ = api
            .create(&dry_run, &secret("probe", &[MANAGED], &[]))
            .await;
        let seen = serve
            .logs()
            .iter()
            .any(|line| line.contains(r#""message":"admission""#) && line.contains(&ns.name));
        if seen {
            return registration;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the webhook never became active"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET /v2/ on the target registry with Basic auth from a docker config `auth`.
fn target_accepts(auth: &str) -> u16 {
    let tb = testbed();
    let user_password = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&tb.env["TARGET_CA_FILE"])
        .arg("-u")
        .arg(String::from_utf8(user_password).unwrap())
        .arg(format!("https://{}/v2/", tb.target()))
        .output()
        .unwrap();
    stdout(&out).parse().unwrap_or(0)
}

#[tokio::test]
async fn serve_writes_a_login_the_target_accepts_keeping_other_entries_and_refresh_secrets_renews_it(
) {
    let ns = enabled_namespace("serve_inject", ENABLED).await;
    let serve = writer_for(&ns, ServeOptions::default());
    let _registration = register_serve(&ns, &serve).await;
    let (host, password) = target_login();

    let other = r#"{"auths":{"ghcr.io":{ "auth":"dXNlcjpwdw==" }}}"#;
    let mut pull = secret("pull", &[MANAGED], &[]);
    pull.data.as_mut().unwrap().insert(
        ".dockerconfigjson".into(),
        k8s_openapi::ByteString(other.as_bytes().to_vec()),
    );
    let before = SystemTime::now();
    let created = create(&ns, &pull).await;
    // The admission answer carries no login: the Secret is stored as sent.
    assert_eq!(
        created.data.as_ref().unwrap()[".dockerconfigjson"].0,
        other.as_bytes()
    );
    assert_eq!(annotation(&created, REFRESHED_AT), None);
    // The writer's login follows through the API.
    let (written, took) = wait_written(&ns, "pull", before).await;
    eprintln!("serve wrote the login {took:.2?} after the create");
    let login = &config(&written)["auths"][&host];
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    assert_eq!(
        *login,
        json!({"username": "AWS", "password": password, "auth": auth})
    );
    let text = String::from_utf8(
        written.data.as_ref().unwrap()[".dockerconfigjson"]
            .0
            .clone(),
    )
    .unwrap();
    assert!(
        text.contains(r#""ghcr.io":{ "auth":"dXNlcjpwdw==" }"#),
        "{text}"
    );
    assert_eq!(
        target_accepts(&auth),
        200,
        "the written login opens the target"
    );
    assert_eq!(
        target_accepts("QVdTOndyb25n"),
        401,
        "a wrong login does not"
    );
    // moto reports a past expiry: the token counts as valid for 12 h from its fetch.
    let expires = parse_time(&annotation(&written, EXPIRES_AT).unwrap()).unwrap();
    let twelve = Duration::from_secs(12 * 3600);
    assert!(expires >= before + twelve - Duration::from_secs(1));
    assert!(expires <= SystemTime::now() + twelve);
    let first = parse_time(&annotation(&written, REFRESHED_AT).unwrap()).unwrap();

    let out = refresh(&ns, &["--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1 refreshed, 0 fresh, 0 failed\n");
    let renewed = get(&ns, "pull").await;
    assert!(parse_time(&annotation(&renewed, REFRESHED_AT).unwrap()).unwrap() > first);
    let text = String::from_utf8(renewed.data.unwrap()[".dockerconfigjson"].0.clone()).unwrap();
    assert!(
        text.contains(r#""ghcr.io":{ "auth":"dXNlcjpwdw==" }"#),
        "{text}"
    );

    let out = refresh(&ns, &["--ensure"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0 refreshed, 1 fresh, 0 failed, 1 created\n");
    let ensured = get(&ns, "privatize-ecr").await;
    assert_eq!(
        config(&ensured)["auths"][&host]["password"],
        password.as_str()
    );

    let logs = serve.log_text();
    for secret in [password.as_str(), auth.as_str()] {
        assert!(!logs.contains(secret), "a token in serve's logs:\n{logs}");
    }
    let out_text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out_text.contains(&password), "{out_text}");

    let (status, metrics) = serve.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("privatize_secrets_injected_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"privatize_ecr_tokens_fetched_total{region="us-east-1"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_failing_ecr_api_denies_the_secret_leaves_an_event_and_fails_the_refresh() {
    let ns = enabled_namespace("serve_ecr_down", ENABLED).await;
    create(
        &ns,
        &secret("stale", &[MANAGED], &[(EXPIRES_AT, &hours_from_now(1))]),
    )
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let serve = writer_for(
        &ns,
        ServeOptions::default().env("AWS_ENDPOINT_URL", format!("http://{closed}")),
    );
    let _registration = register_serve(&ns, &serve).await;
    let expected = format!(
        "getting an ECR token for {} (region {}): getting an ECR authorization token: dispatch failure",
        testbed().target(),
        testbed().env["AWS_REGION"]
    );

    let refused = Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &secret("new", &[MANAGED], &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains(&format!(
            "admission webhook \"secrets.{}.test.privatize.io\" denied the request: {expected}",
            ns.name
        )),
        "{refused}"
    );
    // The cause chain, not the SDK's Debug dump of it.
    assert!(!refused.contains("DispatchFailure("), "{refused}");
    assert!(
        Api::<Secret>::namespaced(ns.client.clone(), &ns.name)
            .get_opt("new")
            .await
            .unwrap()
            .is_none(),
        "a managed Secret is never stored when no login can be written"
    );
    // The writer could not write the Secret that was there: an Event says why.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let event = loop {
        let events = Api::<Event>::namespaced(ns.client.clone(), &ns.name)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        if let Some(event) = events.into_iter().find(|e| {
            e.reason.as_deref() == Some("CredentialsFailed")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("stale")
        }) {
            break event;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no CredentialsFailed Event"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.unwrap_or_default();
    assert!(note.contains(&expected), "{note}");
    assert!(
        note.ends_with("the Secret's current logins are left in place"),
        "{note}"
    );

    let out = refresh(&ns, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("0 refreshed, 0 fresh, 1 failed"));
    let failed = lines.next().unwrap();
    assert!(
        failed.starts_with(&format!(
            "failed: Secret {}/stale: requesting a refresh: admission webhook \"secrets.{}.test.privatize.io\" denied the request: {expected}",
            ns.name, ns.name
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_dry_run_fetches_nothing_and_two_hundred_secrets_cost_one_token() {
    let ns = enabled_namespace("serve_tokens", ENABLED).await;
    let counter = AwsCounter::start(&testbed().env["MOTO_ENDPOINT"], Duration::ZERO);
    let serve = writer_for(
        &ns,
        ServeOptions::default().env("AWS_ENDPOINT_URL", counter.endpoint()),
    );
    let _registration = register_serve(&ns, &serve).await;
    let region = &testbed().env["AWS_REGION"];
    let (host, password) = target_login();
    let api = Api::<Secret>::namespaced(ns.client.clone(), &ns.name);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };

    // Cold cache: the dry run is allowed, shown without a login, and fetches nothing.
    let shown = api
        .create(&dry_run, &secret("dry", &[MANAGED], &[]))
        .await
        .unwrap();
    assert_eq!(config(&shown), json!({"auths": {}}));
    assert_eq!(annotation(&shown, REFRESHED_AT), None);
    assert_eq!(counter.calls(GET_AUTHORIZATION_TOKEN, region), 0);

    let started = SystemTime::now();
    stream::iter(0..200)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            async move {
                api.create(
                    &PostParams::default(),
                    &secret(&format!("s{i:03}"), &[MANAGED], &[]),
                )
                .await
                .unwrap();
            }
        })
        .await;
    for i in 0..200 {
        let (written, _) = wait_written(&ns, &format!("s{i:03}"), started).await;
        assert_eq!(
            config(&written)["auths"][&host]["password"],
            password.as_str()
        );
    }
    assert_eq!(counter.calls(GET_AUTHORIZATION_TOKEN, region), 1);

    // Warm cache: a dry run still shows no login (no answer carries one).
    let shown = api
        .create(&dry_run, &secret("dry", &[MANAGED], &[]))
        .await
        .unwrap();
    assert_eq!(config(&shown), json!({"auths": {}}));
    assert_eq!(counter.calls(GET_AUTHORIZATION_TOKEN, region), 1);
    assert!(api.get_opt("dry").await.unwrap().is_none());
}
