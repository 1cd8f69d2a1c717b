//! Registry credentials from a docker `config.json` against the testbed:
//! identity tokens exchanged at a token endpoint (never sent as they are),
//! and no secret in the config's `Debug` output.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::token_gateway::TokenGateway;
use common::{assert_ok, prefix, sha256, stderr, testbed, unique};
use privatize::registry::auth::read_config;

const REFRESH_TOKEN: &str = "refresh-token-7f3a9c";

/// A fresh directory for one test's config.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("privatize-{test}-{}", unique()));
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    dir
}

/// `sync-image --authfile dir/config.json` with `dir/bin` first on PATH.
fn sync_with_config(dir: &Path, config: &str, plain_http: &str, args: &[&str]) -> Output {
    let path = dir.join("config.json");
    std::fs::write(&path, config).unwrap();
    let search = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = testbed().privatize();
    cmd.env("PATH", search)
        .env("PRIVATIZE_PLAIN_HTTP", plain_http)
        .arg("sync-image")
        .arg("--authfile")
        .arg(&path)
        .args(args);
    cmd.output().expect("running privatize")
}

#[test]
fn identity_token_is_exchanged_for_an_access_token_not_sent_as_one() {
    let tb = testbed();
    let (reference, digest) = tb.image("tiny");
    let gateway = TokenGateway::with_identity_token(tb.source(), REFRESH_TOKEN);
    let front = gateway.addr.to_string();
    let via = reference.replacen(tb.source(), &front, 1);
    let dir = scratch("identity");
    let p = prefix("identity");
    let config = format!(r#"{{"auths":{{"{front}":{{"identitytoken":"{REFRESH_TOKEN}"}}}}}}"#);
    let to = format!("{}/{p}", tb.target());
    let out = sync_with_config(
        &dir,
        &config,
        &front,
        &["--target-kind", "ecr", "--to", &to, &via],
    );
    assert_ok(&out);

    let repo = format!("{p}/{}/test/tiny", front.replace(':', "-"));
    let (status, bytes) = tb.target_manifest(&repo, "v1");
    assert_eq!((status, sha256(&bytes)), (200, digest));
    let exchanges = gateway.exchanges.lock().unwrap().clone();
    assert!(!exchanges.is_empty(), "no refresh-token exchange happened");
    for form in &exchanges {
        assert_eq!(form["grant_type"], "refresh_token", "{form:?}");
        assert_eq!(form["service"], "test-gateway", "{form:?}");
        assert_eq!(form["client_id"], "privatize", "{form:?}");
        assert_eq!(form["scope"], "repository:test/tiny:pull", "{form:?}");
    }
    let authorizations = gateway.authorizations.lock().unwrap().clone();
    assert!(
        authorizations.iter().all(|a| !a.contains(REFRESH_TOKEN)),
        "the refresh token was sent to the registry: {authorizations:?}"
    );
    assert!(authorizations
        .iter()
        .any(|a| a == "Bearer exchanged-access-token"));
    assert!(!stderr(&out).contains(REFRESH_TOKEN));
}

#[test]
fn docker_config_debug_output_holds_no_secret() {
    let dir = scratch("debug");
    let path = dir.join("config.json");
    // base64("user:hunter2-pass")
    std::fs::write(
        &path,
        r#"{"auths":{"a.io":{"auth":"dXNlcjpodW50ZXIyLXBhc3M="},"b.io":{"username":"bob","password":"s3cret-pw"},"c.io":{"identitytoken":"idtok-9a8b"}}}"#,
    )
    .unwrap();
    let config = read_config(Some(&path), true).unwrap();
    let shown = format!("{config:?} {config:#?}");
    for secret in [
        "dXNlcjpodW50ZXIyLXBhc3M=",
        "hunter2",
        "s3cret-pw",
        "idtok-9a8b",
    ] {
        assert!(
            !shown.contains(secret),
            "{secret} leaks through Debug: {shown}"
        );
    }
    for visible in ["a.io", "bob", "c.io", "<redacted>"] {
        assert!(shown.contains(visible), "{visible} missing: {shown}");
    }
}
