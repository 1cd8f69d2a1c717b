//! The command line as a Job or a shell meets it: flags against environment
//! values, log output on pipes and terminals, usage errors, a missing AWS region.

mod common;

use common::{assert_ok, prefix, stderr, testbed};

/// `sync-image` of the testbed's tiny image with `ECR_REGISTRY` exported, as
/// the Deployment and the copy Jobs have it (the harness clears it: set it again).
fn with_ecr_registry() -> std::process::Command {
    let tb = testbed();
    let mut cmd = tb.privatize();
    cmd.env("ECR_REGISTRY", tb.target())
        .env("PRIVATIZE_TARGET_KIND", "ecr");
    cmd
}

#[test]
fn a_typed_target_wins_over_ecr_registry_from_the_environment() {
    let tb = testbed();
    let (reference, digest) = tb.image("tiny");
    let p = prefix("envtarget");
    let target = format!("{}/{p}/exact/tiny:v1", tb.target());
    let out = with_ecr_registry()
        .args(["sync-image", "--target", &target, &reference])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        common::stdout(&out).trim(),
        format!("{target}@{digest}"),
        "the exact target, not the ECR_REGISTRY naming rule"
    );
    let (status, body) = tb.target_manifest(&format!("{p}/exact/tiny"), "v1");
    assert_eq!(status, 200);
    assert_eq!(common::sha256(&body), digest);
}

#[test]
fn ecr_registry_from_the_environment_still_names_the_target() {
    let tb = testbed();
    let out = with_ecr_registry()
        .args(["sync-image", "--dry-run", "nginx"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        common::stdout(&out).trim(),
        format!(
            "docker.io/library/nginx:latest -> {}/docker.io/library/nginx:latest",
            tb.target()
        )
    );
}

#[test]
fn to_and_target_both_typed_are_a_usage_error() {
    let out = with_ecr_registry()
        .args([
            "sync-image",
            "--to",
            "127.0.0.1:15443/a",
            "--target",
            "127.0.0.1:15443/b/c:v1",
            "nginx",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: the argument '--target <TARGET>' cannot be used with '--to <TO>'"),
        "{err}"
    );
    assert!(
        !err.contains("--ca-file") && !err.contains("--progress"),
        "the usage line shows only what was typed: {err}"
    );
}

#[test]
fn no_target_at_all_is_a_usage_error() {
    let tb = testbed();
    let out = tb
        .privatize()
        .args(["sync-image", "--dry-run", "nginx"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "error: give the target with --to REGISTRY[/PREFIX] (or ECR_REGISTRY) or --target REF"
        ),
        "{}",
        stderr(&out)
    );
}

/// A real `sync-image` of the tiny image into a fresh ECR repository: it logs
/// at info level (repository created, blobs copied, image mirrored).
fn sync_args(test: &str) -> Vec<String> {
    let tb = testbed();
    vec![
        "sync-image".into(),
        "--target-kind".into(),
        "ecr".into(),
        "--to".into(),
        format!("{}/{}", tb.target(), prefix(test)),
        tb.image("tiny").0,
    ]
}

/// Runs privatize under `script`, so its stderr is a terminal; returns what the terminal showed.
fn on_terminal(args: &[String], no_color: Option<&str>) -> String {
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_privatize").to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    // The harness's environment, around `script` instead of the binary.
    let mut script = std::process::Command::new("script");
    for (key, value) in testbed().privatize().get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    script.env_remove("NO_COLOR");
    if let Some(value) = no_color {
        script.env("NO_COLOR", value);
    }
    let out = script
        .args(["-qec", &quoted.join(" "), "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running script(1)");
    assert_ok(&out);
    common::stdout(&out)
}

#[test]
fn text_logs_on_a_pipe_carry_no_colour_codes() {
    let out = testbed()
        .privatize()
        .env_remove("NO_COLOR")
        .args(sync_args("nocolour"))
        .output()
        .unwrap();
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains(" INFO ECR repository created"), "{err}");
    assert!(!err.contains('\x1b'), "escape codes on a pipe: {err:?}");
}

#[test]
fn text_logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let coloured = on_terminal(&sync_args("tty"), None);
    assert!(coloured.contains("ECR repository created"), "{coloured}");
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal: {coloured:?}"
    );

    let plain = on_terminal(&sync_args("nocolor"), Some("1"));
    assert!(plain.contains(" INFO ECR repository created"), "{plain}");
    assert!(
        !plain.contains('\x1b'),
        "colour despite NO_COLOR: {plain:?}"
    );

    let empty = on_terminal(&sync_args("emptynocolor"), Some(""));
    assert!(
        empty.contains("\x1b["),
        "an empty NO_COLOR does not count: {empty:?}"
    );
}

#[test]
fn an_invalid_log_level_is_a_usage_error() {
    let tb = testbed();
    let dry_run = ["sync-image", "--dry-run", "--to", tb.target(), "nginx"];
    let out = tb
        .privatize()
        .arg("--log-level=bogus")
        .args(dry_run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "{}", common::stdout(&out));
    assert!(
        stderr(&out).starts_with("error: invalid value 'bogus' for '--log-level <LOG_LEVEL>': "),
        "{}",
        stderr(&out)
    );

    let out = tb
        .privatize()
        .env("PRIVATIZE_LOG", "privatize=loud")
        .args(dry_run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .starts_with("error: invalid value 'privatize=loud' for '--log-level <LOG_LEVEL>': "),
        "{}",
        stderr(&out)
    );

    for good in ["debug", "OFF", "warn,privatize=trace"] {
        let out = tb
            .privatize()
            .args(["--log-level", good])
            .args(dry_run)
            .output()
            .unwrap();
        assert_ok(&out);
    }
}

/// `sync-image` into the ECR stand-in with no region anywhere: no `AWS_REGION`,
/// no profile, a host name that names none, and an instance metadata service
/// that never answers (what a laptop outside AWS sees, or worse).
fn without_region(test: &str, config_file: &std::path::Path) -> std::process::Command {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let imds = format!("http://{}", silent.local_addr().unwrap());
    // The kernel accepts connections into the backlog; nobody ever answers.
    std::mem::forget(silent);
    let mut cmd = testbed().privatize();
    for key in [
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        cmd.env_remove(key);
    }
    cmd.env("AWS_CONFIG_FILE", config_file)
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
        .args(sync_args(test));
    cmd
}

#[test]
fn a_missing_region_is_one_line_saying_how_to_give_one_at_once() {
    let dir = std::env::temp_dir().join(format!("privatize-noregion-{}", common::unique()));
    let started = std::time::Instant::now();
    let out = without_region("noregion", &dir.join("config"))
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "error: ECR API for {}: no AWS region is known: set AWS_REGION (or a region in \
             the AWS profile), or name the target by its ECR host \
             <account>.dkr.ecr.<region>.amazonaws.com, which carries its region\n",
            testbed().target()
        )
    );
    assert!(
        elapsed < std::time::Duration::from_millis(1500),
        "waited {elapsed:?} for a region"
    );
}

#[test]
fn a_region_from_the_aws_profile_is_used() {
    let dir = std::env::temp_dir().join(format!("privatize-profile-{}", common::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config");
    let region = &testbed().env["AWS_REGION"];
    std::fs::write(&config, format!("[default]\nregion = {region}\n")).unwrap();
    let out = without_region("profileregion", &config).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_ok(&out);
    assert!(
        stderr(&out).contains(" INFO ECR repository created"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn secrets_given_on_the_command_line_never_reach_debug_output() {
    use privatize::cli::Cli;
    let sync = Cli::try_parse_args([
        "privatize",
        "sync-image",
        "--to",
        "registry.example",
        "--src-creds",
        "alice:src-s3cret",
        "--dest-creds",
        "bob:dest-s3cret",
        "nginx",
    ])
    .unwrap();
    let serve = Cli::try_parse_args([
        "privatize",
        "serve",
        "--tls-key=-----BEGIN PRIVATE KEY-----\nkey-s3cret\n-----END PRIVATE KEY-----",
        "--src-creds",
        "carol:serve-s3cret",
    ])
    .unwrap();
    for text in [format!("{sync:?}"), format!("{serve:#?}")] {
        assert!(!text.contains("s3cret"), "{text}");
        // Still says which were given, and shows the rest.
        assert!(text.contains("<redacted>"), "{text}");
        assert!(text.contains("target_kind"), "{text}");
    }
    assert!(format!("{serve:?}").contains("tls_key_path"));
}

/// Every subcommand that talks to Kubernetes, with no cluster to be found
/// (`KUBECONFIG` naming nothing, or unset with an empty home, outside a pod):
/// one line naming what was tried and how to fix it, exit 1.
#[test]
fn no_cluster_is_one_line_naming_what_was_tried() {
    let home = std::env::temp_dir().join(format!("privatize-nocluster-{}", common::unique()));
    std::fs::create_dir_all(&home).unwrap();
    let commands: [&[&str]; 4] = [
        &["refresh-secrets"],
        &["install", "--image", "example.com/privatize:1"],
        &["uninstall"],
        &["gen-certs", "--webhook-config", "privatize"],
    ];
    for kubeconfig in [Some("/nonexistent/kubeconfig"), None] {
        for args in commands {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_privatize"));
            cmd.args(args)
                .env("HOME", &home)
                .env(
                    "ECR_REGISTRY",
                    "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                )
                .env_remove("KUBERNETES_SERVICE_HOST")
                .env_remove("KUBERNETES_SERVICE_PORT");
            match kubeconfig {
                Some(path) => cmd.env("KUBECONFIG", path),
                None => cmd.env_remove("KUBECONFIG"),
            };
            let out = cmd.output().unwrap();
            let text = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
            let tried = match kubeconfig {
                Some(path) => format!("cannot read KUBECONFIG={path}: No such file or directory"),
                None => "no kubeconfig (KUBECONFIG is not set and ~/.kube/config does not exist)"
                    .to_string(),
            };
            assert_eq!(
                text,
                format!(
                    "error: connecting to Kubernetes: {tried}, and this is not a pod \
                     (KUBERNETES_SERVICE_HOST is not set); set KUBECONFIG to a kubeconfig file, \
                     create ~/.kube/config, or run privatize in a pod\n"
                ),
                "{args:?}"
            );
        }
    }
}
