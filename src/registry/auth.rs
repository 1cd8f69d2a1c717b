//! Registry credentials: `USER:PASSWORD` flags and docker `config.json`
//! (`credHelpers`, `credsStore` through `docker-credential-<name> get`, then
//! `auths` entries). An identity token travels as docker's own convention,
//! user `<token>`, until `registry/token.rs` exchanges it.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// The user name that marks the password as an identity token (docker's convention).
pub const IDENTITY_TOKEN_USER: &str = "<token>";
/// How long a credential helper may take to answer.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// The server URL docker's credential helpers know Docker Hub by.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// Parses `USER:PASSWORD` (the password may contain `:`).
pub fn parse_creds(text: &str, flag: &str) -> Result<RegistryAuth> {
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() => {
            Ok(RegistryAuth::Basic(user.to_string(), password.to_string()))
        }
        _ => bail!("invalid {flag}: expected USER:PASSWORD"),
    }
}

/// The identity token in `auth`, when it is one.
pub fn identity_token(auth: &RegistryAuth) -> Option<&str> {
    match auth {
        RegistryAuth::Basic(user, token) if user == IDENTITY_TOKEN_USER => Some(token),
        _ => None,
    }
}

/// A docker `config.json`: what privatize reads of it. Its `Debug` shows no secret.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    /// Credential helper for every registry without a `credHelpers` entry.
    #[serde(default)]
    creds_store: Option<String>,
    /// Registry host → credential helper.
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

impl fmt::Debug for DockerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfig")
            .field("auths", &self.auths)
            .field("creds_store", &self.creds_store)
            .field("cred_helpers", &self.cred_helpers)
            .finish()
    }
}

impl fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("AuthEntry")
            .field("auth", &redacted(&self.auth))
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("identity_token", &redacted(&self.identity_token))
            .finish()
    }
}

/// Where the docker config is: `--authfile`, else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn config_path(authfile: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = authfile {
        return Some(path.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// Reads a docker config. A missing default file is an empty config; a
/// missing `--authfile` is an error.
pub fn read_config(path: Option<&Path>, explicit: bool) -> Result<DockerConfig> {
    let Some(path) = path else {
        return Ok(DockerConfig::default());
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing docker config {}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !explicit => {
            Ok(DockerConfig::default())
        }
        Err(err) => Err(err).with_context(|| format!("reading docker config {}", path.display())),
    }
}

impl DockerConfig {
    /// Credentials for a registry host, or `None`. As the docker CLI does: the
    /// host's `credHelpers` entry, else `credsStore`, else the `auths` entry
    /// (also when the helper has nothing for the host).
    pub fn credentials(&self, host: &str) -> Result<Option<RegistryAuth>> {
        let helper = self
            .cred_helpers
            .iter()
            .find(|(key, _)| normalise_key(key) == normalise_key(host))
            .map(|(_, name)| (name, "credHelpers"))
            .or(self.creds_store.as_ref().map(|name| (name, "credsStore")))
            .filter(|(name, _)| !name.trim().is_empty());
        if let Some((name, from)) = helper {
            let server = match normalise_key(host).as_str() {
                "docker.io" => DOCKER_HUB_SERVER.to_string(),
                other => other.to_string(),
            };
            if let Some(auth) = run_helper(name, &server)
                .with_context(|| format!("getting credentials for {host} from the {from} helper docker-credential-{name}"))?
            {
                return Ok(Some(auth));
            }
        }
        self.auths_entry(host)
    }

    fn auths_entry(&self, host: &str) -> Result<Option<RegistryAuth>> {
        let entry = self
            .auths
            .iter()
            .find(|(key, _)| normalise_key(key) == normalise_key(host));
        let Some((key, entry)) = entry else {
            return Ok(None);
        };
        if let Some(token) = entry.identity_token.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(RegistryAuth::Basic(
                IDENTITY_TOKEN_USER.to_string(),
                token.clone(),
            )));
        }
        if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
            return Ok(Some(RegistryAuth::Basic(user.clone(), password.clone())));
        }
        let Some(encoded) = &entry.auth else {
            return Ok(None);
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .with_context(|| format!("decoding the auth of {key:?} in the docker config"))?;
        let text = String::from_utf8(decoded)
            .with_context(|| format!("decoding the auth of {key:?} in the docker config"))?;
        parse_creds(&text, &format!("auth of {key:?} in the docker config")).map(Some)
    }
}

/// A credential helper's answer to `get`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// Runs `docker-credential-<name> get` with `server` on stdin. `None` when the
/// helper has no credentials for it (its "credentials not found" answer).
fn run_helper(name: &str, server: &str) -> Result<Option<RegistryAuth>> {
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .with_context(|| format!("writing to {program}"))?;
    }
    let deadline = Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {program}"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no answer within {} s", HELPER_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout)
            .with_context(|| format!("reading the answer of {program}"))?;
    }
    if !status.success() {
        let mut stderr = Vec::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_end(&mut stderr);
        }
        // A failing helper explains itself on stdout (docker-credential-helpers) or stderr.
        let said = String::from_utf8_lossy(if stdout.trim_ascii().is_empty() {
            &stderr
        } else {
            &stdout
        })
        .trim()
        .to_string();
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let said: String = said.chars().take(200).collect();
        bail!("it failed ({status}): {said}");
    }
    let answer: HelperAnswer = serde_json::from_slice(&stdout)
        .context("its answer is not JSON with Username and Secret")?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(RegistryAuth::Basic(answer.username, answer.secret)))
}

/// `https://index.docker.io/v1/` and `docker.io` name the same registry; so do
/// `https://host/` and `host`.
fn normalise_key(key: &str) -> String {
    let key = key.trim().to_ascii_lowercase();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(&key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        other => other.to_string(),
    }
}
