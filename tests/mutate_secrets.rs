//! Managed Secrets (pure), from AdmissionReview fixtures in
//! tests/data/admission/secret-*.json: the webhook's validation of the
//! request, and the credential writer's patch of the Secret (applied to the
//! request object as the apiserver would apply serve's API write): the
//! resulting docker config is decoded and checked, entry by entry and byte
//! for byte, and when a Secret is due for a fresh login.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use privatize::ecr::Token;
use privatize::mutate::secrets::{
    due, format_time, login as write_login, registries_needed, secret_registries, Decision, Denial,
    EcrRegistry, Injection, Settings, EXPIRES_AT, REFRESHED_AT, REFRESH_REQUESTED_AT,
};
use serde_json::{json, Value};

const ECR: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
const OHIO: &str = "210987654321.dkr.ecr.us-east-2.amazonaws.com";
const DUAL_STACK: &str = "123456789012.dkr-ecr.eu-west-1.on.aws";

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_000_000_250)
}

fn settings() -> Settings {
    Settings {
        registry: EcrRegistry::parse(ECR),
    }
}

fn token(password: &str, hours: u64) -> Token {
    Token {
        username: "AWS".into(),
        password: password.into(),
        expires_at: now() + Duration::from_secs(hours * 3600),
    }
}

/// Tokens as the I/O layer looks them up: one per region, keyed by host.
fn tokens() -> HashMap<String, Token> {
    let ireland = token("eu-west-1-token", 12);
    HashMap::from([
        (ECR.to_string(), ireland.clone()),
        (DUAL_STACK.to_string(), ireland),
        (OHIO.to_string(), token("us-east-2-token", 11)),
    ])
}

fn review(case: &str) -> Value {
    let path = format!(
        "{}/tests/data/admission/{case}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn request(review: &Value) -> AdmissionRequest<Secret> {
    let review: AdmissionReview<Secret> = serde_json::from_value(review.clone()).unwrap();
    review.try_into().unwrap()
}

/// The review's Secret as serve reads it from the API (with its namespace).
fn secret(review: &Value) -> Secret {
    let request = request(review);
    let mut secret = request.object.clone().expect("the review holds a Secret");
    if secret.metadata.namespace.is_none() {
        secret.metadata.namespace = request.namespace.clone();
    }
    secret
}

/// The writer's patch for a fixture's Secret (or an edited review's) and the
/// resulting Secret object.
fn inject(review: &Value, settings: &Settings) -> (Injection, Value) {
    let decision = write_login(&secret(review), settings, &tokens(), now());
    let Ok(Decision::Inject(injection)) = decision else {
        panic!("expected an injection, got {decision:?}");
    };
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &injection.patch).expect("patch applies");
    (injection, object)
}

/// The webhook refuses it, and the writer would write nothing, with one message.
fn denial(review: &Value, settings: &Settings) -> String {
    let needed = registries_needed(&request(review), settings);
    let decided = write_login(&secret(review), settings, &tokens(), now());
    match (needed, decided) {
        (Err(Denial(first)), Err(Denial(second))) => {
            assert_eq!(first, second);
            first
        }
        other => panic!("expected a denial before and after the token lookup, got {other:?}"),
    }
}

/// The decoded `.dockerconfigjson` text of a Secret object.
fn config_text(secret: &Value) -> String {
    let encoded = secret["data"][".dockerconfigjson"]
        .as_str()
        .expect("data .dockerconfigjson is set");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn config(secret: &Value) -> Value {
    serde_json::from_str(&config_text(secret)).expect("the written config is JSON")
}

fn entry(password: &str) -> Value {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    json!({"username": "AWS", "password": password, "auth": auth})
}

fn annotation<'a>(secret: &'a Value, key: &str) -> Option<&'a str> {
    secret["metadata"]["annotations"][key].as_str()
}

#[test]
fn managed_secret_gets_a_login_for_the_ecr_registry_and_both_annotations() {
    for case in [
        "secret-create-empty",
        "secret-create-no-data",
        "secret-create-v1beta1-dry-run",
        "secret-ecr-anywhere-label",
    ] {
        let review = review(case);
        let needed = registries_needed(&request(&review), &settings()).unwrap();
        assert_eq!(needed, vec![EcrRegistry::parse(ECR).unwrap()], "{case}");
        assert_eq!(needed[0].region, "eu-west-1");

        let (injection, secret) = inject(&review, &settings());
        assert_eq!(injection.registries, vec![ECR], "{case}");
        assert_eq!(
            config(&secret),
            json!({"auths": {ECR: entry("eu-west-1-token")}}),
            "{case}"
        );
        let expires = now() + Duration::from_secs(12 * 3600);
        assert_eq!(injection.expires_at, expires);
        assert_eq!(
            annotation(&secret, EXPIRES_AT),
            Some("2026-11-30T12:53:20.250Z"),
            "{case}"
        );
        assert_eq!(
            annotation(&secret, REFRESHED_AT),
            Some("2026-11-30T00:53:20.250Z"),
            "{case}"
        );
        assert_eq!(
            secret["metadata"]["labels"], review["request"]["object"]["metadata"]["labels"],
            "{case}: labels untouched"
        );
        assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    }
}

#[test]
fn other_registries_entries_are_kept_byte_for_byte_and_a_stale_ecr_entry_is_replaced() {
    let review = review("secret-update-keeps-other-entries");
    let before = config_text(&review["request"]["object"]);
    let (_, secret) = inject(&review, &settings());
    let after = config_text(&secret);
    for kept in [
        r#""ghcr.io": { "auth" : "dXNlcjpnaHA=", "identitytoken":"tok" }"#,
        r#"{"auth":"ZDpw","email":"x@y.z"}"#,
        r#"{"gcr.io": "gcloud"}"#,
    ] {
        assert!(before.contains(kept), "fixture holds {kept}");
    }
    assert!(
        after.contains(r#""ghcr.io":{ "auth" : "dXNlcjpnaHA=", "identitytoken":"tok" }"#),
        "{after}"
    );
    assert!(
        after.contains(r#""docker.io":{"auth":"ZDpw","email":"x@y.z"}"#),
        "{after}"
    );
    assert!(
        after.contains(r#""credHelpers":{"gcr.io": "gcloud"}"#),
        "{after}"
    );
    let written = config(&secret);
    let auths = written["auths"].as_object().unwrap();
    let keys: Vec<&str> = auths.keys().map(String::as_str).collect();
    assert_eq!(
        keys.len(),
        3,
        "the stale https:// spelling is gone: {keys:?}"
    );
    assert!(!after.contains("stale"), "{after}");
    assert_eq!(auths[ECR], entry("eu-west-1-token"));

    let annotations = &review["request"]["object"]["metadata"]["annotations"];
    assert_eq!(
        annotation(&secret, REFRESH_REQUESTED_AT),
        annotations[REFRESH_REQUESTED_AT].as_str()
    );
    assert_eq!(annotation(&secret, "owner"), Some("team-a"));
    assert_eq!(
        annotation(&secret, REFRESHED_AT),
        Some(format_time(now()).as_str())
    );
}

#[test]
fn each_listed_registry_gets_a_login_and_expires_at_is_the_earliest() {
    let review = review("secret-extra-registries");
    let needed = registries_needed(&request(&review), &settings()).unwrap();
    let hosts: Vec<(&str, &str)> = needed
        .iter()
        .map(|r| (r.host.as_str(), r.region.as_str()))
        .collect();
    assert_eq!(
        hosts,
        [
            (ECR, "eu-west-1"),
            (OHIO, "us-east-2"),
            (DUAL_STACK, "eu-west-1")
        ],
        "ECR_REGISTRY first, duplicates and blanks dropped"
    );
    let (injection, secret) = inject(&review, &settings());
    assert_eq!(
        config(&secret),
        json!({"auths": {
            ECR: entry("eu-west-1-token"),
            OHIO: entry("us-east-2-token"),
            DUAL_STACK: entry("eu-west-1-token"),
        }})
    );
    assert_eq!(injection.expires_at, now() + Duration::from_secs(11 * 3600));
    assert_eq!(
        annotation(&secret, EXPIRES_AT),
        Some(format_time(injection.expires_at).as_str())
    );
}

#[test]
fn listed_registries_alone_serve_when_privatize_has_no_ecr_target() {
    let (injection, secret) = inject(&review("secret-extra-registries"), &Settings::default());
    assert_eq!(injection.registries, vec![OHIO, ECR, DUAL_STACK]);
    assert_eq!(config(&secret)["auths"].as_object().unwrap().len(), 3);
}

#[test]
fn re_injection_writes_the_same_document() {
    let review = review("secret-update-keeps-other-entries");
    let (_, once) = inject(&review, &settings());
    let mut again = review.clone();
    again["request"]["object"] = once.clone();
    let (_, twice) = inject(&again, &settings());
    assert_eq!(config_text(&once), config_text(&twice));
    assert_eq!(once, twice);
}

#[test]
fn bad_managed_secrets_are_denied_with_a_message_saying_why() {
    let cases = [
        (
            "secret-opaque-managed",
            "Secret team-a/pull is labelled for managed ECR credentials but has type Opaque: \
             a managed Secret must have type kubernetes.io/dockerconfigjson",
        ),
        (
            "secret-untyped-managed",
            "Secret team-a/pull is labelled for managed ECR credentials but has type Opaque: \
             a managed Secret must have type kubernetes.io/dockerconfigjson",
        ),
        (
            "secret-non-ecr-registry-listed",
            "Secret team-a/pull: annotation privatize.io/registries names \"ghcr.io\", which is \
             not an ECR registry host (<account>.dkr.ecr.<region>.amazonaws.com)",
        ),
        (
            "secret-not-json",
            "Secret team-a/ecr-secret: data .dockerconfigjson is not a docker config (expected \
             value at line 1 column 1); leave it out or set it to {\"auths\":{}} and privatize \
             fills it in",
        ),
    ];
    for (case, message) in cases {
        assert_eq!(denial(&review(case), &settings()), message, "{case}");
    }
}

#[test]
fn a_managed_secret_with_no_registry_at_all_is_denied() {
    assert_eq!(
        denial(&review("secret-create-empty"), &Settings::default()),
        "Secret team-a/pull: no ECR registry to write a login for: privatize has no ECR target \
         (ECR_REGISTRY) and annotation privatize.io/registries lists none"
    );
}

#[test]
fn a_missing_token_denies_naming_the_registry() {
    let review = review("secret-extra-registries");
    let mut tokens = tokens();
    tokens.remove(OHIO);
    let decision = write_login(&secret(&review), &settings(), &tokens, now());
    assert_eq!(
        decision,
        Err(Denial(format!(
            "Secret team-a/pull: no ECR token for {OHIO} (region us-east-2)"
        )))
    );
}

#[test]
fn unmanaged_secrets_and_deletes_are_left_unchanged() {
    for case in ["secret-unmanaged", "secret-delete"] {
        let review = review(case);
        assert_eq!(
            registries_needed(&request(&review), &settings()),
            Ok(vec![]),
            "{case}"
        );
    }
    assert_eq!(
        write_login(
            &secret(&review("secret-unmanaged")),
            &settings(),
            &HashMap::new(),
            now()
        ),
        Ok(Decision::Unchanged("not a managed Secret"))
    );
}

#[test]
fn a_blank_docker_config_is_filled_in() {
    let mut review = review("secret-create-empty");
    review["request"]["object"]["data"][".dockerconfigjson"] = json!("");
    let (_, secret) = inject(&review, &settings());
    assert_eq!(
        config(&secret),
        json!({"auths": {ECR: entry("eu-west-1-token")}})
    );
}

#[test]
fn an_auths_member_that_is_not_an_object_is_denied() {
    let mut review = review("secret-create-empty");
    review["request"]["object"]["data"][".dockerconfigjson"] =
        json!(base64::engine::general_purpose::STANDARD.encode(r#"{"auths":[]}"#));
    let message = denial(&review, &settings());
    assert!(
        message.starts_with(
            "Secret team-a/pull: data .dockerconfigjson is not a docker config (\"auths\" is not a JSON object"
        ),
        "{message}"
    );
}

#[test]
fn a_secret_is_due_for_a_login_when_new_asked_to_refresh_missing_a_registry_or_expiring() {
    let review = review("secret-extra-registries");
    let fresh = secret(&review);
    let registries = secret_registries(&fresh, &settings()).unwrap().unwrap();
    assert_eq!(due(&fresh, &registries, now()), Some("never written"));
    // Once written, it is current: the writer's own update is no new work.
    let (_, written) = inject(&review, &settings());
    let written: Secret = serde_json::from_value(written).unwrap();
    assert_eq!(due(&written, &registries, now()), None);
    let with = |key: &str, value: String| {
        let mut s = written.clone();
        s.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(key.into(), value);
        s
    };
    let later = format_time(now() + Duration::from_secs(1));
    let asked = with(REFRESH_REQUESTED_AT, later.clone());
    assert_eq!(
        due(&asked, &registries, now() + Duration::from_secs(2)),
        Some("refresh requested")
    );
    // A requester's clock 30 s ahead still counts; the write answering it is
    // stamped no earlier than the request, so it is not due again.
    let ahead = with(
        REFRESH_REQUESTED_AT,
        format_time(now() + Duration::from_secs(30)),
    );
    assert_eq!(due(&ahead, &registries, now()), Some("refresh requested"));
    let Ok(Decision::Inject(answer)) = write_login(&ahead, &settings(), &tokens(), now()) else {
        panic!("expected an injection");
    };
    let mut answered = serde_json::to_value(&ahead).unwrap();
    json_patch::patch(&mut answered, &answer.patch).unwrap();
    let answered: Secret = serde_json::from_value(answered).unwrap();
    assert_eq!(
        answered.metadata.annotations.as_ref().unwrap()[REFRESHED_AT],
        format_time(now() + Duration::from_secs(30))
    );
    assert_eq!(due(&answered, &registries, now()), None);
    // A request far in the future, or unreadable, is none: honouring it would
    // make each write due again (a loop a tenant could start).
    for bogus in [
        format_time(now() + Duration::from_secs(3600)),
        "soon".to_string(),
    ] {
        assert_eq!(
            due(
                &with(REFRESH_REQUESTED_AT, bogus.clone()),
                &registries,
                now()
            ),
            None,
            "{bogus}"
        );
    }
    let earlier = format_time(now() - Duration::from_secs(60));
    assert_eq!(
        due(&with(REFRESH_REQUESTED_AT, earlier), &registries, now()),
        None
    );
    assert_eq!(
        due(
            &written,
            &registries,
            now() + Duration::from_secs(11 * 3600)
        ),
        Some("expiring"),
        "within an hour of the earliest expiry (11 h)"
    );
    let mut another = registries.clone();
    another.push(EcrRegistry::parse("999999999999.dkr.ecr.ap-south-1.amazonaws.com").unwrap());
    assert_eq!(
        due(&written, &another, now()),
        Some("a registry's login missing")
    );
}
