//! Test harness for the registry testbed (`testbed/up`): reads its env file,
//! runs the real `privatize` binary against it, and reads results back with
//! an independent client (curl), never through privatize's own code.
#![allow(dead_code)]

pub mod aws_counter;
pub mod cluster;
pub mod front;
pub mod kube;
pub mod proxy;
pub mod secret_webhook;
pub mod serve;
pub mod serve_gate;
pub mod ssrf;
pub mod tags;
pub mod token_gateway;
pub mod webhook;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest, Sha256};

pub struct Testbed {
    pub env: HashMap<String, String>,
    pub images: Value,
}

/// The running testbed; panics with the command to start it when it is absent.
pub fn testbed() -> &'static Testbed {
    static TESTBED: OnceLock<Testbed> = OnceLock::new();
    TESTBED.get_or_init(|| {
        let path = std::env::var("PRIVATIZE_TESTBED_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/testbed/env")
            });
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "testbed not running ({}: {e}); start it with `testbed/up`, or run `bash scripts/test`",
                path.display()
            )
        });
        let env: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (what, key) in [
            ("source registry", "SOURCE_REGISTRY"),
            ("target registry", "TARGET_REGISTRY"),
            ("moto", "MOTO_ENDPOINT"),
        ] {
            let address = env.get(key).map(|a| a.trim_start_matches("http://"));
            require_listening(what, address.unwrap_or("?"), "testbed/up");
        }
        let images =
            serde_json::from_slice(&std::fs::read(&env["IMAGES_JSON"]).expect("images.json"))
                .expect("images.json parses");
        Testbed { env, images }
    })
}

impl Testbed {
    pub fn source(&self) -> &str {
        &self.env["SOURCE_REGISTRY"]
    }

    pub fn target(&self) -> &str {
        &self.env["TARGET_REGISTRY"]
    }

    /// `reference` and `digest` of a test image from images.json.
    pub fn image(&self, name: &str) -> (String, String) {
        let entry = &self.images[name];
        assert!(
            entry.is_object(),
            "test image {name} missing from images.json (run `testbed/up --large` for large ones)"
        );
        (
            entry["reference"].as_str().unwrap().to_string(),
            entry["digest"].as_str().unwrap().to_string(),
        )
    }

    pub fn has_image(&self, name: &str) -> bool {
        self.images[name].is_object()
    }

    /// `privatize` with the testbed's ECR setup: moto as the ECR API, the
    /// TLS target trusted through its CA, the source over plain HTTP.
    pub fn privatize(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_privatize"));
        for key in [
            "PRIVATIZE_TARGET_KIND",
            "ECR_REGISTRY",
            "DOCKER_CONFIG",
            "PRIVATIZE_CA_FILE",
            "PRIVATIZE_PLAIN_HTTP",
        ] {
            cmd.env_remove(key);
        }
        cmd.env("AWS_ENDPOINT_URL", &self.env["MOTO_ENDPOINT"])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", &self.env["AWS_REGION"])
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("PRIVATIZE_PROGRESS", "never")
            .env("PRIVATIZE_CA_FILE", &self.env["TARGET_CA_FILE"])
            .env("PRIVATIZE_PLAIN_HTTP", self.source())
            .env("HOME", std::env::temp_dir());
        cmd
    }

    /// `privatize sync-image` into the ECR stand-in, under a per-test prefix.
    pub fn sync(&self, prefix: &str, args: &[&str]) -> Output {
        let to = format!("{}/{prefix}", self.target());
        let mut cmd = self.privatize();
        cmd.args(["sync-image", "--target-kind", "ecr", "--to", &to])
            .args(args);
        cmd.output().expect("running privatize")
    }

    /// `sync-image` of a testbed source image reached through a front (proxy,
    /// gateway) at `front` instead of the source registry. Returns the output
    /// and the target repository it lands in.
    pub fn sync_via(
        &self,
        front: std::net::SocketAddr,
        reference: &str,
        prefix: &str,
    ) -> (Output, String) {
        let via = reference.replacen(self.source(), &front.to_string(), 1);
        let mut cmd = self.privatize();
        cmd.env("PRIVATIZE_PLAIN_HTTP", front.to_string()).args([
            "sync-image",
            "--target-kind",
            "ecr",
            "--to",
            &format!("{}/{prefix}", self.target()),
            &via,
        ]);
        let host = front.to_string().replace(':', "-");
        let path = via.split_once('/').map(|(_, p)| p).unwrap_or_default();
        let path = path.rsplit_once(':').map(|(p, _)| p).unwrap_or(path);
        (
            cmd.output().expect("running privatize"),
            format!("{prefix}/{host}/{path}"),
        )
    }

    /// GET a manifest from the target with curl; returns (status, body).
    pub fn target_manifest(&self, repository: &str, reference: &str) -> (u16, Vec<u8>) {
        let url = format!(
            "https://{}/v2/{repository}/manifests/{reference}",
            self.target()
        );
        curl(&self.target_curl_args(), &url, "GET")
    }

    /// HEAD a blob in the target: its HTTP status.
    pub fn target_blob_status(&self, repository: &str, digest: &str) -> u16 {
        let url = format!("https://{}/v2/{repository}/blobs/{digest}", self.target());
        curl(&self.target_curl_args(), &url, "HEAD").0
    }

    /// curl's arguments for the target: its CA and its login.
    pub fn target_curl_args(&self) -> Vec<String> {
        vec![
            "--cacert".into(),
            self.env["TARGET_CA_FILE"].clone(),
            "-u".into(),
            format!(
                "{}:{}",
                self.env["TARGET_USER"], self.env["TARGET_PASSWORD"]
            ),
        ]
    }

    /// GET a manifest from the source registry.
    pub fn source_manifest(&self, repository: &str, reference: &str) -> (u16, Vec<u8>) {
        curl(
            &[],
            &format!(
                "http://{}/v2/{repository}/manifests/{reference}",
                self.source()
            ),
            "GET",
        )
    }
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// One request with curl (`extra` arguments first): (status, body).
pub fn curl(extra: &[String], url: &str, method: &str) -> (u16, Vec<u8>) {
    let body = std::env::temp_dir().join(format!(
        "privatize-curl-{}-{}",
        std::process::id(),
        unique()
    ));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o"])
        .arg(&body)
        .args(["-w", "%{http_code}", "-H", &format!("Accept: {ACCEPT}")])
        .args(extra);
    if method == "HEAD" {
        cmd.arg("-I");
    }
    let out = cmd.arg(url).output().expect("running curl");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let bytes = std::fs::read(&body).unwrap_or_default();
    let _ = std::fs::remove_file(&body);
    (status, bytes)
}

/// Binds 127.0.0.1:0 and runs `serve` with that listener on a thread of its
/// own (block_on needs no `Send` future); it lives as long as the test process.
pub fn serve_on_thread<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            serve(tokio::net::TcpListener::from_std(listener).unwrap()).await
        });
    });
    addr
}

/// Fails the test at once, in one line, when nothing listens at `address`
/// (`HOST:PORT`): the testbed is not running.
pub fn require_listening(what: &str, address: &str, start: &str) {
    use std::net::{TcpStream, ToSocketAddrs};
    let reachable = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
        });
    if !reachable {
        panic!(
            "testbed not running: nothing answers at {address} ({what}); start it with `{start}`, or run `bash scripts/test`"
        );
    }
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // Distinct inputs (time, process, call), mixed by splitmix64 (a bijection),
    // so that every residue (callers keep `% 1_000_000`) is as likely: the old
    // `nanos * 1000 + n` left `% 1_000_000` about a thousand values, and test
    // binaries on one apiserver met a namespace of the same name still
    // terminating.
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ NEXT.fetch_add(1, Ordering::Relaxed).rotate_right(12);
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A fresh lower-case prefix so every test writes its own repositories.
pub fn prefix(test: &str) -> String {
    format!("t{}-{}", unique() % 1_000_000_007, test.replace('_', "-"))
}

pub fn sha256(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and shows stderr when not.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "privatize failed ({}):\n{}",
        out.status,
        stderr(out)
    );
}

/// The target repository for a source repository on the testbed's source registry.
pub fn mirrored_repository(prefix: &str, source_repository: &str) -> String {
    let host = testbed().source().replace(':', "-");
    format!("{prefix}/{host}/{source_repository}")
}

/// The helm binary: `$HELM`, else the one `testbed/helm/build` caches.
pub fn helm() -> String {
    if let Ok(path) = std::env::var("HELM") {
        return path;
    }
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testbed/helm/build"))
        .arg("--print-path")
        .output()
        .expect("testbed/helm/build");
    assert!(
        out.status.success(),
        "building helm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
