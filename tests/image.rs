//! privatize's own image, built by `scripts/build-image` without a docker
//! engine: it agrees with the Dockerfile, carries a static binary, a CA bundle
//! and a non-root user, is reproducible, and pushes to the testbed registries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

mod common;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// `scripts/build-image --oci-dir target/tmp/image/NAME ARGS`; asserts success.
/// Fixed names: the script replaces an earlier run's layout, nothing piles up.
fn build_image(name: &str, args: &[&str]) -> (PathBuf, Output) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("image")
        .join(name);
    let out = Command::new(Path::new(REPO).join("scripts/build-image"))
        .arg("--oci-dir")
        .arg(&dir)
        .args(args)
        .output()
        .expect("running scripts/build-image");
    assert!(
        out.status.success(),
        "scripts/build-image failed ({}):\n{}",
        out.status,
        common::stderr(&out)
    );
    (dir, out)
}

/// stdout of build-image: exactly one line, a sha256 digest.
fn printed_digest(out: &Output) -> String {
    let stdout = common::stdout(out);
    let digest = stdout.strip_suffix('\n').unwrap_or(&stdout);
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71 && !digest.contains('\n'),
        "stdout is not one digest line: {stdout:?}"
    );
    digest.to_string()
}

struct Layout {
    dir: PathBuf,
    digest: String,
}

impl Layout {
    fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        std::fs::read(self.dir.join("blobs/sha256").join(hex)).expect("blob in the layout")
    }

    fn json(&self, digest: &str) -> Value {
        serde_json::from_slice(&self.blob(digest)).expect("blob is JSON")
    }

    fn manifest(&self) -> Value {
        self.json(&self.digest)
    }

    fn config(&self) -> Value {
        self.json(self.manifest()["config"]["digest"].as_str().unwrap())
    }

    fn layer_path(&self) -> PathBuf {
        let manifest = self.manifest();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "one layer: {manifest}");
        let hex = layers[0]["digest"].as_str().unwrap();
        self.dir.join("blobs/sha256").join(&hex["sha256:".len()..])
    }

    /// The layer unpacked into a fresh directory (once per test process).
    fn rootfs(&self) -> &'static Path {
        static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
        ROOTFS.get_or_init(|| {
            let root = self.dir.with_extension("rootfs");
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            run_ok(
                Command::new("tar")
                    .arg("-xzf")
                    .arg(self.layer_path())
                    .arg("-C")
                    .arg(&root),
            );
            root
        })
    }
}

fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("running a command");
    assert!(out.status.success(), "{cmd:?}: {}", common::stderr(&out));
    out.stdout
}

/// One build shared by the tests of this file.
fn built() -> &'static Layout {
    static BUILT: OnceLock<Layout> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (dir, out) = build_image("shared", &[]);
        let digest = printed_digest(&out);
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], digest.as_str(), "{index}");
        Layout { dir, digest }
    })
}

/// An exec-form instruction (`["a", "b"]`), or a shell form as docker runs it.
fn exec_form(arguments: &str) -> Value {
    serde_json::from_str::<Vec<String>>(arguments)
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(vec!["/bin/sh", "-c", arguments]))
}

/// USER, ENTRYPOINT, CMD and WORKDIR of the Dockerfile's final stage.
fn dockerfile_final_stage(text: &str) -> Value {
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.to_uppercase().starts_with("FROM "))
        .expect("the Dockerfile has a FROM");
    let mut stage =
        serde_json::json!({"User": null, "Entrypoint": null, "Cmd": null, "WorkingDir": "/"});
    for line in &lines[last_from + 1..] {
        let (instruction, arguments) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let arguments = arguments.trim();
        match instruction.to_uppercase().as_str() {
            "USER" => stage["User"] = arguments.into(),
            "ENTRYPOINT" => stage["Entrypoint"] = exec_form(arguments),
            "CMD" => stage["Cmd"] = exec_form(arguments),
            "WORKDIR" => stage["WorkingDir"] = arguments.into(),
            _ => {}
        }
    }
    stage
}

#[test]
fn dockerfile_final_stage_parsing_reads_the_last_stage() {
    let text = "FROM a AS build\nUSER 1\nWORKDIR /src\nENTRYPOINT [\"/x\"]\n\
                FROM b\nRUN apt-get \\\n  install\nUSER 65532:65532\nENTRYPOINT [\"/y\"]\nCMD run now\n";
    assert_eq!(
        dockerfile_final_stage(text),
        serde_json::json!({"User": "65532:65532", "Entrypoint": ["/y"],
                           "Cmd": ["/bin/sh", "-c", "run now"], "WorkingDir": "/"})
    );
}

#[test]
fn image_config_agrees_with_the_dockerfile() {
    let dockerfile = std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap();
    let expected = dockerfile_final_stage(&dockerfile);
    let config = built().config();
    let got = &config["config"];
    for key in ["User", "Entrypoint", "Cmd", "WorkingDir"] {
        assert_eq!(got[key], expected[key], "{key}: image config {got}");
    }
    assert_eq!(got["User"], "65532:65532", "non-root user: {got}");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    let labels = &got["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap();
    let head = String::from_utf8(run_ok(Command::new("git").args([
        "-C",
        REPO,
        "rev-parse",
        "HEAD",
    ])))
    .unwrap();
    assert!(
        revision.starts_with(head.trim()),
        "revision {revision} vs HEAD {head}"
    );
}

/// Whether a 64-bit little-endian ELF file asks for a dynamic loader
/// (PT_INTERP), and whether its dynamic section names shared libraries (DT_NEEDED).
fn elf_links_dynamically(bytes: &[u8]) -> (bool, bool) {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!((bytes[4], bytes[5]), (2, 1), "not 64-bit little-endian");
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let (mut interp, mut needed) = (false, false);
    for i in 0..phnum {
        let header = phoff + i * phentsize;
        match u32_at(header) {
            3 => interp = true, // PT_INTERP: a dynamic loader is asked for
            2 => {
                // PT_DYNAMIC: a static-pie has one too, to relocate itself; only
                // DT_NEEDED entries (tag 1) mean shared libraries.
                let (offset, size) = (u64_at(header + 8), u64_at(header + 32));
                needed |= (offset..offset + size)
                    .step_by(16)
                    .any(|entry| u64_at(entry) == 1);
            }
            _ => {}
        }
    }
    (interp, needed)
}

#[test]
fn binary_in_the_layer_is_static_and_reports_the_crate_version() {
    let binary = built().rootfs().join("usr/local/bin/privatize");
    let bytes = std::fs::read(&binary).unwrap();
    assert_eq!(
        elf_links_dynamically(&bytes),
        (false, false),
        "static binary"
    );
    // The check can fail: the test build of privatize links glibc dynamically.
    let dynamic = std::fs::read(env!("CARGO_BIN_EXE_privatize")).unwrap();
    assert_eq!(elf_links_dynamically(&dynamic), (true, true));

    let version = run_ok(Command::new(&binary).arg("--version"));
    assert_eq!(
        String::from_utf8(version).unwrap(),
        format!("privatize {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn layer_holds_the_ca_bundle_the_nonroot_user_and_a_sticky_tmp() {
    let layout = built();
    let root = layout.rootfs();
    let bundle = std::fs::read(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert_eq!(
        bundle,
        std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap(),
        "the build machine's CA bundle"
    );
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l == "nonroot:x:65532:"), "{group}");

    // The listing: sorted names, mtime 0, /tmp world-writable and sticky.
    let listing = String::from_utf8(run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--full-time", "-tvzf"])
            .arg(layout.layer_path()),
    ))
    .unwrap();
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[5].trim_end_matches('/')).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "{listing}");
    assert!(
        rows.iter()
            .all(|r| r[3] == "1970-01-01" && r[4] == "00:00:00"),
        "{listing}"
    );
    let tmp = rows.iter().find(|r| r[5].trim_end_matches('/') == "tmp");
    assert_eq!(tmp.map(|r| r[0]), Some("drwxrwxrwt"), "{listing}");

    // containerd checks the uncompressed layer against the config's diff_id.
    let tar = run_ok(Command::new("gzip").arg("-dc").arg(layout.layer_path()));
    assert_eq!(
        layout.config()["rootfs"]["diff_ids"],
        serde_json::json!([common::sha256(&tar)])
    );
}

#[test]
fn building_twice_gives_the_same_manifest_digest() {
    let first = built();
    let (dir, out) = build_image("twice", &[]);
    let second = printed_digest(&out);
    assert_eq!(second, first.digest);
    let again = Layout {
        dir,
        digest: second,
    };
    assert_eq!(common::sha256(&again.blob(&again.digest)), first.digest);
    assert_eq!(again.manifest(), first.manifest());
}

#[test]
fn push_to_the_plain_http_source_prints_the_digest_the_registry_serves() {
    let testbed = common::testbed();
    let repository = format!("{}/privatize", common::prefix("image"));
    let reference = format!("{}/{repository}:e2e", testbed.source());
    // The lead's end-to-end invocation: no TLS flags for a loopback registry.
    let (_, out) = build_image("push", &["--push", &reference]);
    let digest = printed_digest(&out);
    assert_eq!(digest, built().digest);
    let (status, body) = testbed.source_manifest(&repository, "e2e");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(common::sha256(&body), digest);
}

#[test]
fn push_to_the_tls_target_uses_its_ca_and_credentials() {
    let testbed = common::testbed();
    let env = &testbed.env;
    let repository = format!("{}/privatize", common::prefix("image-tls"));
    let reference = format!("{}/{repository}:v1", testbed.target());
    let creds = format!("{}:{}", env["TARGET_USER"], env["TARGET_PASSWORD"]);
    let (_, out) = build_image(
        "push-tls",
        &[
            "--push",
            &reference,
            "--dest-cert-dir",
            &env["TARGET_CERT_DIR"],
            "--dest-creds",
            &creds,
        ],
    );
    let digest = printed_digest(&out);
    let (status, body) = testbed.target_manifest(&repository, &digest);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(common::sha256(&body), digest);
    assert!(
        !common::stderr(&out).contains(&env["TARGET_PASSWORD"]),
        "the password reached the log"
    );
}
