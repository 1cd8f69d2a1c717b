//! The test runner itself: a failing testbed step stops it loudly.

use std::path::Path;
use std::process::Command;

mod common;

#[test]
fn scripts_test_stops_when_kube_up_fails() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("privatize-scripts-{}", common::unique()));
    for sub in ["scripts", "testbed/kube", "testbed/helm"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::copy(repo.join("scripts/test"), dir.join("scripts/test")).unwrap();
    let stub = |path: &str, body: &str| {
        let file = dir.join(path);
        std::fs::write(&file, format!("#!/usr/bin/env bash\n{body}\n")).unwrap();
        Command::new("chmod").arg("+x").arg(&file).status().unwrap();
    };
    stub("testbed/up", "exit 0");
    // kube/up fails without printing anything to stdout (what eval would run).
    stub(
        "testbed/kube/up",
        "echo 'kube-apiserver did not become ready' >&2; exit 3",
    );
    stub("testbed/helm/build", "echo /bin/true");
    let out = Command::new("bash")
        .arg(dir.join("scripts/test"))
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "scripts/test went on: {stdout}");
    assert!(stderr.contains("testbed/kube/up failed"), "{stderr}");
    assert!(
        !stdout.contains("==> helm"),
        "scripts/test went on after kube/up failed: {stdout}"
    );
}
