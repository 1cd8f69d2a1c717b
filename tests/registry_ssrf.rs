//! No SSRF through registries: a registry a tenant names cannot turn a copy
//! against internal hosts. Token realms and redirects are https unless their
//! host is in `--plain-http` (for oci-client's own requests too), credentials
//! go nowhere else, and the text another host answers never reaches the
//! output beyond its status line. Every "internal host" here is a recorder
//! on 127.0.0.1 whose port is not in `--plain-http`.

mod common;

use std::process::Output;

use common::ssrf::{Cdn, ConnectProxy, EvilRegistry, Recorder, Tricks};
use common::{assert_ok, prefix, sha256, stderr, testbed};

const CREDS: &str = "tenant-user:s3cret-pass-71";

/// `sync-image` of the testbed image `tiny` through `front`, into the ECR
/// stand-in; `plain_http` lists the hosts spoken to over plain HTTP.
/// Returns the output, the source reference and the target reference.
fn sync_through(
    front: std::net::SocketAddr,
    plain_http: &[String],
    env: &[(&str, &str)],
    extra: &[&str],
) -> (Output, String, String) {
    let tb = testbed();
    let (reference, _) = tb.image("tiny");
    let via = reference.replacen(tb.source(), &front.to_string(), 1);
    let p = prefix("ssrf");
    let target = format!(
        "{}/{p}/{}/test/tiny:v1",
        tb.target(),
        front.to_string().replace(':', "-")
    );
    let mut cmd = tb.privatize();
    cmd.env("PRIVATIZE_PLAIN_HTTP", plain_http.join(","));
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd.args([
        "sync-image",
        "--target-kind",
        "ecr",
        "--retries",
        "1",
        "--to",
        &format!("{}/{p}", tb.target()),
    ])
    .args(extra)
    .arg(&via);
    (cmd.output().expect("running privatize"), via, target)
}

fn target_tag_exists(target: &str) -> bool {
    let tb = testbed();
    let (repository, tag) = target
        .strip_prefix(&format!("{}/", tb.target()))
        .and_then(|r| r.rsplit_once(':'))
        .unwrap();
    tb.target_manifest(repository, tag).0 == 200
}

const RULE: &str = "refused: plain HTTP is only used for hosts in --plain-http";

#[test]
fn a_plain_http_token_realm_outside_plain_http_is_refused_and_never_asked() {
    let tb = testbed();
    let internal = Recorder::start(200, r#"{"token":"granted-token"}"#);
    let realm = internal.url("/token");
    let evil = EvilRegistry::start(
        tb.source(),
        Tricks {
            challenge: Some(format!(r#"Bearer realm="{realm}",service="evil""#)),
            granted: Some("granted-token".into()),
            ..Tricks::default()
        },
    );
    for creds in [None, Some(CREDS)] {
        let extra: Vec<&str> = creds.map(|c| vec!["--src-creds", c]).unwrap_or_default();
        let (out, via, target) = sync_through(evil.addr, &[evil.addr.to_string()], &[], &extra);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!("error: copying {via} to {target}: resolving {via}: token endpoint {realm} {RULE}\n"),
            "with credentials: {}",
            creds.is_some()
        );
        assert!(!target_tag_exists(&target));
    }
    assert_eq!(
        internal.heard().len(),
        0,
        "the internal host was asked: {:?}",
        internal.heard()
    );
}

#[test]
fn source_credentials_reach_only_an_allowed_token_endpoint_and_never_the_registry_as_basic() {
    let tb = testbed();
    let (_, digest) = tb.image("tiny");
    let realm_host = Recorder::start(200, r#"{"token":"granted-token","expires_in":300}"#);
    let realm = realm_host.url("/token");
    let evil = EvilRegistry::start(
        tb.source(),
        Tricks {
            challenge: Some(format!(r#"Bearer realm="{realm}",service="evil""#)),
            granted: Some("granted-token".into()),
            ..Tricks::default()
        },
    );
    let allowed = [evil.addr.to_string(), realm_host.addr.to_string()];
    let (out, _, target) = sync_through(evil.addr, &allowed, &[], &["--src-creds", CREDS]);
    assert_ok(&out);
    let (repository, _) = target
        .strip_prefix(&format!("{}/", tb.target()))
        .and_then(|r| r.rsplit_once(':'))
        .unwrap();
    let (status, bytes) = tb.target_manifest(repository, "v1");
    assert_eq!((status, sha256(&bytes)), (200, digest));

    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(CREDS)
    );
    let asked = realm_host.heard();
    assert!(!asked.is_empty(), "no token was asked for");
    for request in &asked {
        assert_eq!(
            request.authorization.as_deref(),
            Some(basic.as_str()),
            "{request:?}"
        );
        assert!(
            request
                .target
                .contains("scope=repository%3Atest%2Ftiny%3Apull"),
            "{request:?}"
        );
    }
    for request in evil.heard() {
        let sent = request.authorization.unwrap_or_default();
        assert!(
            sent.is_empty() || sent == "Bearer granted-token",
            "the registry got {sent:?} on {}",
            request.target
        );
    }
    assert!(!stderr(&out).contains("s3cret"));
}

#[test]
fn a_blob_redirect_to_plain_http_outside_the_list_is_refused() {
    let tb = testbed();
    let internal = Recorder::start(200, "internal data");
    let evil = EvilRegistry::start(
        tb.source(),
        Tricks {
            blobs_to: Some(internal.url("")),
            ..Tricks::default()
        },
    );
    let (out, _, target) = sync_through(evil.addr, &[evil.addr.to_string()], &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let all = stderr(&out);
    // The one line besides the error: the repository was made before the copy.
    let err = all
        .lines()
        .filter(|l| !l.contains("ECR repository created"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(err.lines().count(), 1, "{all}");
    assert!(err.starts_with("error: copying "), "{err}");
    assert!(
        err.contains(&format!(
            "reading source blob: request to {}/v2/test/tiny/blobs/sha256:",
            internal.url("")
        )),
        "{err}"
    );
    assert!(err.trim_end().ends_with(RULE), "{err}");
    assert!(
        !err.contains("retrying"),
        "a refusal is not transient: {err}"
    );
    assert_eq!(internal.heard().len(), 0, "{:?}", internal.heard());
    assert!(!target_tag_exists(&target));
}

#[test]
fn a_manifest_redirect_to_plain_http_outside_the_list_is_refused() {
    let tb = testbed();
    let internal = Recorder::start(200, "internal data");
    let evil = EvilRegistry::start(
        tb.source(),
        Tricks {
            manifests_to: Some(internal.url("")),
            ..Tricks::default()
        },
    );
    let (out, via, target) = sync_through(evil.addr, &[evil.addr.to_string()], &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let path = via.split_once('/').unwrap().1.replace(":v1", "");
    assert_eq!(
        stderr(&out),
        format!(
            "error: copying {via} to {target}: resolving {via}: request to {}/v2/{path}/manifests/v1 {RULE}\n",
            internal.url("")
        )
    );
    assert_eq!(internal.heard().len(), 0, "{:?}", internal.heard());
}

#[test]
fn what_a_realm_or_redirect_target_answers_stays_out_of_the_output() {
    let tb = testbed();
    let secret = format!("SECRET-BODY-{}", common::unique());
    let other_host = Recorder::start(500, &secret);
    let allowed = |evil: &EvilRegistry| vec![evil.addr.to_string(), other_host.addr.to_string()];
    let realm = format!(
        r#"Bearer realm="{}",service="evil""#,
        other_host.url("/token")
    );
    let cases = [
        (
            "blob redirect",
            Tricks {
                blobs_to: Some(other_host.url("")),
                ..Tricks::default()
            },
            None,
        ),
        (
            "manifest redirect",
            Tricks {
                manifests_to: Some(other_host.url("")),
                ..Tricks::default()
            },
            None,
        ),
        (
            "anonymous realm",
            Tricks {
                challenge: Some(realm.clone()),
                ..Tricks::default()
            },
            None,
        ),
        (
            "realm with credentials",
            Tricks {
                challenge: Some(realm.clone()),
                ..Tricks::default()
            },
            Some("creds"),
        ),
        (
            "identity-token realm",
            Tricks {
                challenge: Some(realm.clone()),
                ..Tricks::default()
            },
            Some("identity"),
        ),
    ];
    for (case, tricks, login) in cases {
        let evil = EvilRegistry::start(tb.source(), tricks);
        let dir = std::env::temp_dir().join(format!("privatize-ssrf-{}", common::unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let authfile = dir.join("config.json");
        std::fs::write(
            &authfile,
            format!(
                r#"{{"auths":{{"{}":{{"identitytoken":"refresh-71"}}}}}}"#,
                evil.addr
            ),
        )
        .unwrap();
        let authfile = authfile.display().to_string();
        let extra: Vec<&str> = match login {
            Some("creds") => vec!["--src-creds", CREDS],
            Some(_) => vec!["--authfile", &authfile],
            None => vec![],
        };
        let (out, _, _) = sync_through(evil.addr, &allowed(&evil), &[], &extra);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{case}: {err}");
        assert!(
            !err.contains("SECRET"),
            "{case}: the other host's body leaked: {err}"
        );
        assert!(
            err.contains("500"),
            "{case}: the status line is kept: {err}"
        );
        assert!(
            !other_host.heard().is_empty(),
            "{case}: the allowed host was not asked"
        );
    }
}

#[test]
fn an_https_redirect_is_followed_without_the_registrys_credentials() {
    let tb = testbed();
    let (_, digest) = tb.image("tiny");
    let cert_dir = std::path::Path::new(&tb.env["TESTBED_DIR"]).join("certs");
    let cdn = Cdn::start(tb.source(), &cert_dir);
    let evil = EvilRegistry::start(
        tb.source(),
        Tricks {
            basic: Some(CREDS.into()),
            // By name: TLS sessions are kept per name, and the target is 127.0.0.1 too.
            blobs_to: Some(format!("https://localhost:{}", cdn.addr.port())),
            ..Tricks::default()
        },
    );
    let (out, _, target) = sync_through(
        evil.addr,
        &[evil.addr.to_string()],
        &[],
        &["--src-creds", CREDS],
    );
    assert_ok(&out);
    let (repository, _) = target
        .strip_prefix(&format!("{}/", tb.target()))
        .and_then(|r| r.rsplit_once(':'))
        .unwrap();
    let (status, bytes) = tb.target_manifest(repository, "v1");
    assert_eq!((status, sha256(&bytes)), (200, digest));
    let fetched = cdn.heard();
    assert!(
        fetched.iter().any(|r| r.target.contains("/blobs/")),
        "{fetched:?}"
    );
    assert!(
        fetched.iter().all(|r| r.authorization.is_none()),
        "the registry's credentials followed the redirect: {fetched:?}"
    );
}

#[test]
fn environment_proxies_keep_working_and_open_no_way_around_the_rule() {
    let tb = testbed();
    let proxy = ConnectProxy::start();
    let https_proxy = format!("http://{}", proxy.addr);

    // HTTPS goes through the proxy the environment names.
    let open = EvilRegistry::start(tb.source(), Tricks::default());
    let (out, _, _) = sync_through(
        open.addr,
        &[open.addr.to_string()],
        &[("HTTPS_PROXY", &https_proxy), ("NO_PROXY", "")],
        &[],
    );
    assert_ok(&out);
    assert!(
        proxy.targets().iter().any(|t| t == tb.target()),
        "the target was not reached through HTTPS_PROXY: {:?}",
        proxy.targets()
    );

    // NO_PROXY naming 127.0.0.1 (as it names internal ranges in clusters)
    // skips the proxy for HTTPS, and opens nothing for plain HTTP.
    let before = proxy.targets().len();
    let internal = Recorder::start(200, "internal data");
    let evil = EvilRegistry::start(
        tb.source(),
        Tricks {
            blobs_to: Some(internal.url("")),
            ..Tricks::default()
        },
    );
    let (out, _, _) = sync_through(
        evil.addr,
        &[evil.addr.to_string()],
        &[
            ("HTTPS_PROXY", &https_proxy),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.trim_end().ends_with(RULE), "{err}");
    assert_eq!(internal.heard().len(), 0, "{:?}", internal.heard());
    assert_eq!(
        proxy.targets().len(),
        before,
        "NO_PROXY was not honoured: {:?}",
        proxy.targets()
    );
}

#[test]
fn a_token_already_expired_by_its_claims_is_named_not_silently_replaced() {
    use base64::Engine as _;
    let tb = testbed();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // A JWT whose `exp` is long past, as a token server with a skewed clock hands out.
    let jwt = format!(
        "{}.{}.sig",
        b64.encode(r#"{"alg":"none"}"#),
        b64.encode(r#"{"exp":1}"#)
    );
    let realm_host = Recorder::start(200, &format!(r#"{{"token":"{jwt}"}}"#));
    let evil = EvilRegistry::start(
        tb.source(),
        Tricks {
            challenge: Some(format!(
                r#"Bearer realm="{}",service="evil""#,
                realm_host.url("/token")
            )),
            granted: Some(jwt.clone()),
            ..Tricks::default()
        },
    );
    let allowed = [evil.addr.to_string(), realm_host.addr.to_string()];

    // Anonymous: oci-client's own anonymous flow gets the same token, through the guard.
    let (out, _, _) = sync_through(evil.addr, &allowed, &[], &[]);
    assert_ok(&out);

    // With credentials, falling back to that flow would drop them: it is an error that says why.
    let (out, via, target) = sync_through(evil.addr, &allowed, &[], &["--src-creds", CREDS]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let realm = realm_host.url("/token");
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let err = stderr(&out);
    let prefix = format!(
        "error: copying {via} to {target}: resolving {via}: the token {realm} gave for repository:test/tiny:pull expired "
    );
    assert!(err.starts_with(&prefix), "{err}");
    assert!(
        err.ends_with(
            " s ago by its exp claim, so it cannot be used (is this machine's clock right?)\n"
        ),
        "{err}"
    );
    let said: u64 = err[prefix.len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(said.abs_diff(age) < 60, "{err}");
}
