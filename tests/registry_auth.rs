//! Registry credentials from a docker `config.json` against the testbed:
//! identity tokens exchanged at a token endpoint (never sent as they are),
//! credential helpers (`credsStore`, `credHelpers`) run as docker runs them,
//! and no secret in the config's `Debug` output.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::token_gateway::TokenGateway;
use common::{assert_ok, mirrored_repository, prefix, sha256, stderr, testbed, unique};
use privatize::registry::auth::read_config;

const REFRESH_TOKEN: &str = "refresh-token-7f3a9c";

/// A fresh directory for one test's config and helper.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("privatize-{test}-{}", unique()));
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    dir
}

/// Writes `docker-credential-privtest` into `dir/bin`: it logs each call to
/// `dir/helper.log` and answers from `answers` (server URL → JSON), else
/// "credentials not found" as docker's helpers do.
fn write_helper(dir: &Path, answers: &[(&str, String)]) {
    let mut cases = String::new();
    for (server, json) in answers {
        cases.push_str(&format!("  '{server}') printf '%s' '{json}' ;;\n"));
    }
    let script = format!(
        "#!/bin/sh\nserver=$(cat)\necho \"$1 $server\" >> '{log}'\ncase \"$server\" in\n{cases}  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n",
        log = dir.join("helper.log").display()
    );
    let path = dir.join("bin/docker-credential-privtest");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
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

fn helper_calls(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("helper.log")).unwrap_or_default()
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
fn credential_helpers_give_the_target_its_login() {
    let tb = testbed();
    let (reference, digest) = tb.image("tiny");
    let target = tb.target();
    let answer = format!(
        r#"{{"ServerURL":"{target}","Username":"{}","Secret":"{}"}}"#,
        tb.env["TARGET_USER"], tb.env["TARGET_PASSWORD"]
    );
    let p = prefix("helpers");
    for (how, config) in [
        ("store", r#"{"credsStore":"privtest"}"#.to_string()),
        (
            "helpers",
            format!(r#"{{"credsStore":"","credHelpers":{{"https://{target}":"privtest"}}}}"#),
        ),
    ] {
        let dir = scratch(how);
        write_helper(&dir, &[(target, answer.clone())]);
        let to = format!("{target}/{p}/{how}");
        let out = sync_with_config(
            &dir,
            &config,
            tb.source(),
            &["--target-kind", "registry", "--to", &to, &reference],
        );
        assert_ok(&out);
        let (status, bytes) = tb.target_manifest(
            &mirrored_repository(&format!("{p}/{how}"), "test/tiny"),
            "v1",
        );
        assert_eq!((status, sha256(&bytes)), (200, digest.clone()), "{how}");
        let calls = helper_calls(&dir);
        assert!(
            calls.lines().any(|l| l == format!("get {target}")),
            "{how}: {calls}"
        );
        // The source has no entry anywhere: the store is asked and says "not found".
        let source_asked = calls.lines().any(|l| l == format!("get {}", tb.source()));
        assert_eq!(source_asked, how == "store", "{how}: {calls}");
    }
}

#[test]
fn a_credential_helper_may_hand_out_an_identity_token() {
    let tb = testbed();
    let (reference, digest) = tb.image("tiny");
    let gateway = TokenGateway::with_identity_token(tb.source(), REFRESH_TOKEN);
    let front = gateway.addr.to_string();
    let dir = scratch("helper-token");
    write_helper(
        &dir,
        &[(
            &front,
            format!(r#"{{"ServerURL":"{front}","Username":"<token>","Secret":"{REFRESH_TOKEN}"}}"#),
        )],
    );
    let config = format!(r#"{{"credHelpers":{{"{front}":"privtest"}}}}"#);
    let p = prefix("helper-token");
    let to = format!("{}/{p}", tb.target());
    let via = reference.replacen(tb.source(), &front, 1);
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
    assert!(!gateway.exchanges.lock().unwrap().is_empty());
    assert_eq!(helper_calls(&dir).trim(), format!("get {front}"));
}

#[test]
fn a_missing_credential_helper_is_named_in_a_one_line_error() {
    let tb = testbed();
    let (reference, _) = tb.image("tiny");
    let dir = scratch("nohelper");
    let to = format!("{}/{}", tb.target(), prefix("nohelper"));
    let out = sync_with_config(
        &dir,
        r#"{"credsStore":"privatize-absent"}"#,
        tb.source(),
        &["--target-kind", "registry", "--to", &to, &reference],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: getting credentials for {} from the credsStore helper docker-credential-privatize-absent: running docker-credential-privatize-absent: No such file or directory (os error 2)\n",
            tb.target()
        )
    );
}

#[test]
fn a_failing_credential_helper_says_what_it_said() {
    let tb = testbed();
    let (reference, _) = tb.image("tiny");
    let dir = scratch("badhelper");
    let script = dir.join("bin/docker-credential-privbroken");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat >/dev/null\necho 'keychain locked' >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let to = format!("{}/{}", tb.target(), prefix("badhelper"));
    let out = sync_with_config(
        &dir,
        r#"{"credsStore":"privbroken"}"#,
        tb.source(),
        &["--target-kind", "registry", "--to", &to, &reference],
    );
    assert_eq!(
        stderr(&out),
        format!(
            "error: getting credentials for {} from the credsStore helper docker-credential-privbroken: it failed (exit status: 3): keychain locked\n",
            tb.target()
        )
    );
}

#[test]
fn docker_config_debug_output_holds_no_secret() {
    let dir = scratch("debug");
    let path = dir.join("config.json");
    // base64("user:hunter2-pass")
    std::fs::write(
        &path,
        r#"{"auths":{"a.io":{"auth":"dXNlcjpodW50ZXIyLXBhc3M="},"b.io":{"username":"bob","password":"s3cret-pw"},"c.io":{"identitytoken":"idtok-9a8b"}},"credHelpers":{"d.io":"ecr-login"}}"#,
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
    for visible in ["a.io", "bob", "c.io", "ecr-login", "<redacted>"] {
        assert!(shown.contains(visible), "{visible} missing: {shown}");
    }
}
