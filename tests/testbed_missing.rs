//! Without the testbed, a test that needs it fails at once with one line
//! saying how to start it (not deep inside, with a connection error).

mod common;

use std::process::Command;

/// Runs one ignored probe test of this binary in a child with `env` set.
fn probe(test: &str, env: &[(&str, String)]) -> (bool, String) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running the probe");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
#[ignore = "probe run by the tests below in a child process"]
fn probe_registry_testbed() {
    common::testbed();
}

#[tokio::test]
#[ignore = "probe run by the tests below in a child process"]
async fn probe_kube_testbed() {
    common::kube::client().await;
}

#[test]
fn a_stopped_registry_testbed_fails_in_one_line_that_says_how_to_start_it() {
    let dir = std::env::temp_dir().join(format!("privatize-no-testbed-{}", common::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let images = dir.join("images.json");
    std::fs::write(&images, "{}").unwrap();
    let env_file = dir.join("env");
    // Port 1 on loopback: nothing listens there.
    std::fs::write(
        &env_file,
        format!(
            "SOURCE_REGISTRY=127.0.0.1:1\nTARGET_REGISTRY=127.0.0.1:1\nMOTO_ENDPOINT=http://127.0.0.1:1\nIMAGES_JSON={}\n",
            images.display()
        ),
    )
    .unwrap();
    let (ok, text) = probe(
        "probe_registry_testbed",
        &[("PRIVATIZE_TESTBED_ENV", env_file.display().to_string())],
    );
    assert!(!ok, "the probe must fail: {text}");
    assert!(
        text.contains("testbed not running: nothing answers at 127.0.0.1:1 (source registry); start it with `testbed/up`, or run `bash scripts/test`"),
        "{text}"
    );
}

#[test]
fn a_stopped_kube_apiserver_fails_in_one_line_that_says_how_to_start_it() {
    let dir = std::env::temp_dir().join(format!("privatize-no-kube-{}", common::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: x\n",
    )
    .unwrap();
    let (ok, text) = probe(
        "probe_kube_testbed",
        &[("PRIVATIZE_KUBECONFIG", kubeconfig.display().to_string())],
    );
    assert!(!ok, "the probe must fail: {text}");
    assert!(
        text.contains("testbed not running: nothing answers at 127.0.0.1:1 (kube-apiserver)"),
        "{text}"
    );
}
