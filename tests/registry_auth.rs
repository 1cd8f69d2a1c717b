//! Registry credentials from a docker `config.json`: no secret in the
//! config's `Debug` output.

mod common;

use common::unique;
use privatize::registry::auth::read_config;

#[test]
fn docker_config_debug_output_holds_no_secret() {
    let dir = std::env::temp_dir().join(format!("privatize-debug-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
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
