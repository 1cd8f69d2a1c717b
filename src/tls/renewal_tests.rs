use super::*;
use crate::tls::{issue_at, ROTATION_GRACE, SERVING_LIFETIME};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

fn names() -> Vec<String> {
    crate::tls::service_sans("privatize", "privatize", &[])
}

/// A certificate for the service names with `left` to live at `now`.
fn with_left(left: Duration, now: SystemTime) -> Issued {
    issue_at(&names(), now + left - SERVING_LIFETIME).unwrap()
}

fn renews(plan: &Plan) -> Option<&Reason> {
    match plan {
        Plan::Renew { reason, .. } => Some(reason),
        Plan::Keep { .. } => None,
    }
}

#[test]
fn a_certificate_is_renewed_once_it_has_less_than_renew_before_left() {
    let now = SystemTime::now();
    let current = with_left(40 * DAY, now);
    let bundle = [current.ca_pem.clone()];
    let at = |later: Duration| plan(Ok(&current), &bundle, &names(), RENEW_BEFORE, now + later);
    assert_eq!(at(Duration::ZERO), Plan::Keep { bundle: None });
    assert_eq!(at(10 * DAY - MINUTE), Plan::Keep { bundle: None });
    let due = at(10 * DAY + MINUTE);
    assert!(
        matches!(renews(&due), Some(Reason::Expiring { left }) if (29 * 86400..30 * 86400).contains(left)),
        "{due:?}"
    );
    // Long expired: renewed too, not refused.
    assert!(matches!(
        renews(&at(41 * DAY)),
        Some(Reason::Expiring { left }) if *left < 0
    ));
}

#[test]
fn a_short_lived_certificate_is_renewed_as_the_test_bed_issues_it() {
    // What tests/serve_renewal.rs does: 2 minutes of life, renew before 1m50s.
    let now = SystemTime::now();
    let current = with_left(2 * MINUTE, now);
    let bundle = [current.ca_pem.clone()];
    let before = Duration::from_secs(110);
    let at = |later: Duration| plan(Ok(&current), &bundle, &names(), before, now + later);
    assert_eq!(at(Duration::from_secs(5)), Plan::Keep { bundle: None });
    assert!(renews(&at(Duration::from_secs(11))).is_some());
}

#[test]
fn the_renewal_keeps_the_sans_the_certificate_had() {
    let now = SystemTime::now();
    let mut sans = names();
    sans.push("webhook.example".into());
    sans.push("10.0.0.7".into());
    let current = issue_at(&sans, now - SERVING_LIFETIME + DAY).unwrap();
    let Plan::Renew { sans: renewed, .. } = plan(
        Ok(&current),
        std::slice::from_ref(&current.ca_pem),
        &names(),
        RENEW_BEFORE,
        now,
    ) else {
        panic!("due");
    };
    let as_set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(as_set(&renewed), as_set(&sans));
    assert_eq!(renewed[..4], names()[..], "the webhooks' names come first");
}

#[test]
fn a_certificate_lacking_a_name_the_webhooks_use_is_renewed_with_it() {
    let now = SystemTime::now();
    let current = issue_at(&["privatize.other.svc".to_string()], now).unwrap();
    let plan = plan(
        Ok(&current),
        std::slice::from_ref(&current.ca_pem),
        &["privatize.privatize.svc".into()],
        RENEW_BEFORE,
        now,
    );
    let Plan::Renew { reason, sans } = plan else {
        panic!("{plan:?}")
    };
    assert_eq!(
        reason,
        Reason::NamesMissing(vec!["privatize.privatize.svc".into()])
    );
    assert_eq!(sans, ["privatize.privatize.svc", "privatize.other.svc"]);
}

#[test]
fn names_compare_without_case_or_ipv6_brackets() {
    let now = SystemTime::now();
    let current = issue_at(&["Privatize.NS.svc".into(), "::1".into()], now).unwrap();
    let plan = plan(
        Ok(&current),
        std::slice::from_ref(&current.ca_pem),
        &["privatize.ns.svc".into(), "[::1]".into()],
        RENEW_BEFORE,
        now,
    );
    assert_eq!(plan, Plan::Keep { bundle: None });
}

#[test]
fn an_unusable_secret_is_renewed_for_the_webhooks_names() {
    let now = SystemTime::now();
    let good = with_left(100 * DAY, now);
    let cases = [
        (
            Issued {
                cert_pem: "garbage".into(),
                ..good.clone()
            },
            "tls.crt",
        ),
        (
            Issued {
                key_pem: with_left(100 * DAY, now).key_pem,
                ..good.clone()
            },
            "does not belong",
        ),
        (
            Issued {
                ca_pem: "nothing".into(),
                ..good.clone()
            },
            "ca.crt",
        ),
    ];
    for (broken, cause) in cases {
        let plan = plan(Ok(&broken), &[], &names(), RENEW_BEFORE, now);
        let Plan::Renew {
            reason: Reason::Unusable(text),
            sans,
        } = plan
        else {
            panic!("{cause}: {plan:?}")
        };
        assert!(text.contains(cause), "{text}");
        assert_eq!(sans, names());
    }
    let missing = plan(
        Err("the Secret has no tls.key"),
        &[],
        &names(),
        RENEW_BEFORE,
        now,
    );
    assert_eq!(
        missing,
        Plan::Renew {
            reason: Reason::Unusable("the Secret has no tls.key".into()),
            sans: names()
        }
    );
}

#[test]
fn a_certificate_its_ca_does_not_sign_is_renewed() {
    let now = SystemTime::now();
    let mixed = Issued {
        ca_pem: with_left(100 * DAY, now).ca_pem,
        ..with_left(100 * DAY, now)
    };
    let plan = plan(
        Ok(&mixed),
        std::slice::from_ref(&mixed.ca_pem),
        &names(),
        RENEW_BEFORE,
        now,
    );
    assert_eq!(renews(&plan), Some(&Reason::NotFromItsCa));
}

/// Every step of a rotation: before, the bundle registered first, the
/// Secret written, replicas reloading, and the old CA leaving once settled.
#[test]
fn the_bundle_trusts_every_serving_certificate_at_every_step() {
    let t0 = SystemTime::now();
    let old = with_left(20 * DAY, t0);
    let registered = vec![old.ca_pem.clone(); 3];
    assert!(renews(&plan(Ok(&old), &registered, &names(), RENEW_BEFORE, t0)).is_some());

    // Step 1: the new CA and certificate; the bundle learns the new CA first.
    let new = issue_at(&names(), t0).unwrap();
    let step1 = bundle_for_renewal(&new, &registered, Some(&old.ca_pem), t0).unwrap();
    assert!(step1.starts_with(&new.ca_pem));
    assert_eq!(count_certificates(&step1), 2);
    let after_patch = vec![step1.clone(); 3];
    assert!(
        trusted_by_all(&old.cert_pem, &after_patch, t0),
        "old replicas"
    );
    assert!(
        trusted_by_all(&new.cert_pem, &after_patch, t0),
        "new replicas"
    );
    assert!(!trusted_by_all(&new.cert_pem, &registered, t0));

    // Step 2: the Secret holds the new certificate; replicas reload over the
    // next minutes while the bundle stays as it is, byte for byte.
    for later in [Duration::ZERO, 2 * MINUTE, 30 * MINUTE] {
        let kept = plan(Ok(&new), &after_patch, &names(), RENEW_BEFORE, t0 + later);
        assert_eq!(kept, Plan::Keep { bundle: None }, "at +{later:?}");
    }

    // Step 3: settled (notBefore is backdated an hour): the old CA leaves.
    let settled = t0 + ROTATION_GRACE - HOUR + MINUTE;
    let Plan::Keep {
        bundle: Some(trimmed),
    } = plan(Ok(&new), &after_patch, &names(), RENEW_BEFORE, settled)
    else {
        panic!("the old CA should leave once settled");
    };
    assert_eq!(trimmed, new.ca_pem);
    let done = vec![trimmed; 3];
    assert_eq!(
        plan(Ok(&new), &done, &names(), RENEW_BEFORE, settled),
        Plan::Keep { bundle: None }
    );
}

#[test]
fn a_replica_that_lost_the_race_leaves_only_an_unused_ca_behind() {
    let t0 = SystemTime::now();
    let old = with_left(20 * DAY, t0);
    let registered = vec![old.ca_pem.clone()];
    let winner = issue_at(&names(), t0).unwrap();
    let loser = issue_at(&names(), t0).unwrap();
    let first = bundle_for_renewal(&winner, &registered, Some(&old.ca_pem), t0).unwrap();
    // The loser re-read the bundle after its conflict and added its CA in front.
    let second = bundle_for_renewal(&loser, &[first], Some(&old.ca_pem), t0).unwrap();
    assert_eq!(count_certificates(&second), 3);
    let registered = vec![second];
    for cert in [&old.cert_pem, &winner.cert_pem] {
        assert!(trusted_by_all(cert, &registered, t0));
    }
    // The winner's Secret is what stays: its CA first, nothing dropped yet.
    let Plan::Keep {
        bundle: Some(reordered),
    } = plan(Ok(&winner), &registered, &names(), RENEW_BEFORE, t0)
    else {
        panic!("the Secret's CA comes first");
    };
    assert!(reordered.starts_with(&winner.ca_pem));
    assert_eq!(count_certificates(&reordered), 3);
}

#[test]
fn a_webhook_missing_the_secrets_ca_gets_it_back() {
    let now = SystemTime::now();
    let current = with_left(100 * DAY, now);
    let stranger = with_left(100 * DAY, now);
    let registered = vec![current.ca_pem.clone(), stranger.ca_pem.clone()];
    let Plan::Keep { bundle: Some(b) } =
        plan(Ok(&current), &registered, &names(), RENEW_BEFORE, now)
    else {
        panic!("the second webhook must learn the current CA");
    };
    assert!(trusted_by_all(&current.cert_pem, &vec![b; 2], now));
}

#[test]
fn a_renewal_bundle_drops_expired_and_unreadable_cas() {
    let now = SystemTime::now();
    let ancient = issue_at(&names(), now - 11 * 365 * DAY).unwrap();
    let new = issue_at(&names(), now).unwrap();
    let bundle = bundle_for_renewal(
        &new,
        &[ancient.ca_pem.clone(), String::new()],
        Some("garbage"),
        now,
    )
    .unwrap();
    assert_eq!(bundle, new.ca_pem);
}

#[test]
fn url_hosts_are_read_as_the_apiserver_dials_them() {
    for (url, host) in [
        ("https://127.0.0.1:8443/mutate/pods", Some("127.0.0.1")),
        ("https://webhook.example/mutate", Some("webhook.example")),
        ("https://[::1]:9443/x", Some("::1")),
        ("https://[::1]/x", Some("::1")),
        ("https://:443/x", None),
    ] {
        assert_eq!(url_host(url).as_deref(), host, "{url}");
    }
}
