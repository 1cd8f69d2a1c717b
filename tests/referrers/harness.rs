//! The referrers tests' tools: cosign (a local key, no transparency log, no
//! network), oras, and a registry that serves the OCI 1.1 Referrers API
//! (go-containerregistry's, one in-memory instance per test), next to the
//! testbed's distribution registries, which do not. Built and cached by
//! `testbed/referrers/build`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::common::{stderr, testbed, unique};

pub struct Tools {
    pub cosign: String,
    pub oras: String,
    pub registry: String,
    /// The key pair (empty password) and cosign's state, for every test.
    pub dir: PathBuf,
}

/// The tools: `PRIVATIZE_COSIGN`, `PRIVATIZE_ORAS` and
/// `PRIVATIZE_REFERRERS_REGISTRY`, else what `testbed/referrers/build` caches.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let mut paths: HashMap<String, String> = [
            "PRIVATIZE_COSIGN",
            "PRIVATIZE_ORAS",
            "PRIVATIZE_REFERRERS_REGISTRY",
        ]
        .into_iter()
        .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
        .collect();
        if paths.len() < 3 {
            let out = Command::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/testbed/referrers/build"
            ))
            .arg("--print-env")
            .stderr(Stdio::inherit())
            .output()
            .expect("running testbed/referrers/build");
            assert!(out.status.success(), "testbed/referrers/build failed");
            for line in String::from_utf8(out.stdout).unwrap().lines() {
                if let Some((k, v)) = line.split_once('=') {
                    paths.entry(k.to_string()).or_insert_with(|| v.to_string());
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("privatize-referrers-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let tools = Tools {
            cosign: paths["PRIVATIZE_COSIGN"].clone(),
            oras: paths["PRIVATIZE_ORAS"].clone(),
            registry: paths["PRIVATIZE_REFERRERS_REGISTRY"].clone(),
            dir,
        };
        let out = tools.cosign(&["generate-key-pair"]);
        assert!(
            out.status.success(),
            "cosign generate-key-pair: {}",
            stderr(&out)
        );
        tools
    })
}

impl Tools {
    /// cosign, kept on this machine: every proxy points at a closed port
    /// (loopback excepted), its TUF root is a fresh directory, and it trusts
    /// the testbed's CA and logs in to the target with its docker config.
    pub fn cosign(&self, args: &[&str]) -> Output {
        let tb = testbed();
        Command::new(&self.cosign)
            .current_dir(&self.dir)
            .args(args)
            .env("COSIGN_PASSWORD", "")
            .env("HOME", &self.dir)
            .env("TUF_ROOT", self.dir.join("tuf"))
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("SSL_CERT_FILE", &tb.env["TARGET_CA_FILE"])
            .env("DOCKER_CONFIG", &tb.env["DOCKER_CONFIG"])
            .output()
            .expect("running cosign")
    }

    /// Signs `image` (`host/repo@digest`) with the local key and no
    /// transparency log: as an OCI 1.1 referrer (a sigstore bundle), or
    /// `legacy`, under cosign's `sha256-<hex>.sig` tag.
    pub fn sign(&self, image: &str, plain: bool, legacy: bool) {
        let mut args = vec![
            "sign",
            "--key",
            "cosign.key",
            "--use-signing-config=false",
            "--tlog-upload=false",
            "-y",
        ];
        if legacy {
            args.push("--new-bundle-format=false");
        }
        if plain {
            args.extend(["--allow-insecure-registry", "--allow-http-registry"]);
        }
        args.push(image);
        let out = self.cosign(&args);
        assert!(
            out.status.success(),
            "cosign sign {image}: {}",
            stderr(&out)
        );
    }

    /// `cosign verify --key` of `image`: its output.
    pub fn verify(&self, image: &str, plain: bool, legacy: bool) -> Output {
        let mut args = vec![
            "verify",
            "--key",
            "cosign.pub",
            "--insecure-ignore-tlog=true",
        ];
        if legacy {
            args.push("--new-bundle-format=false");
        }
        if plain {
            args.extend(["--allow-insecure-registry", "--allow-http-registry"]);
        }
        args.push(image);
        self.cosign(&args)
    }

    /// oras against `host` (plain HTTP, or the testbed's TLS target).
    pub fn oras(&self, plain: bool, args: &[&str]) -> Output {
        let tb = testbed();
        let mut cmd = Command::new(&self.oras);
        cmd.current_dir(&self.dir)
            .args(args)
            .env("HOME", &self.dir)
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("NO_PROXY", "127.0.0.1,localhost");
        if plain {
            cmd.arg("--plain-http");
        } else {
            cmd.args(["--ca-file", &tb.env["TARGET_CA_FILE"]])
                .arg("--registry-config")
                .arg(format!("{}/config.json", tb.env["DOCKER_CONFIG"]));
        }
        cmd.output().expect("running oras")
    }

    /// Attaches `file` to `image` as an OCI 1.1 artifact with a subject; its digest.
    pub fn attach(
        &self,
        image: &str,
        plain: bool,
        artifact_type: &str,
        file: &str,
        text: &str,
    ) -> String {
        std::fs::write(self.dir.join(file), text).unwrap();
        let out = self.oras(
            plain,
            &[
                "attach",
                "--artifact-type",
                artifact_type,
                "--format",
                "json",
                image,
                file,
            ],
        );
        assert!(out.status.success(), "oras attach: {}", stderr(&out));
        let attached: Value = serde_json::from_slice(&out.stdout).unwrap();
        attached["digest"]
            .as_str()
            .expect("oras attach printed a digest")
            .to_string()
    }

    /// What `oras discover` finds under `image`, recursively: (artifact type, digest).
    pub fn discover(&self, image: &str, plain: bool) -> Vec<(String, String)> {
        let out = self.oras(plain, &["discover", "--format", "json", image]);
        assert!(
            out.status.success(),
            "oras discover {image}: {}",
            stderr(&out)
        );
        let found: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut all = Vec::new();
        let mut pending = vec![found];
        while let Some(node) = pending.pop() {
            for r in node["referrers"].as_array().into_iter().flatten() {
                all.push((
                    r["artifactType"].as_str().unwrap_or_default().to_string(),
                    r["digest"].as_str().unwrap().to_string(),
                ));
                pending.push(r.clone());
            }
        }
        all.sort();
        all
    }
}

/// A registry that serves the Referrers API, in memory, on a free loopback
/// port; killed when dropped.
pub struct ReferrersRegistry {
    pub address: String,
    child: Child,
}

impl ReferrersRegistry {
    pub fn start() -> Self {
        let mut child = Command::new(&tools().registry)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the referrers registry");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(address.starts_with("127.0.0.1:"), "registry said {line:?}");
        Self { address, child }
    }
}

impl Drop for ReferrersRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
