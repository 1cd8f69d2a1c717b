//! Registry credentials: `USER:PASSWORD` flags and docker `config.json`
//! (`auths` entries; credential helpers are not run). An identity token
//! travels as docker's own convention, user `<token>`, until
//! `registry/token.rs` exchanges it.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// The user name that marks the password as an identity token (docker's convention).
pub const IDENTITY_TOKEN_USER: &str = "<token>";

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
pub struct DockerConfig {
    #[serde(default)]
    auths: std::collections::HashMap<String, AuthEntry>,
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
    /// Credentials for a registry host, or `None`.
    pub fn credentials(&self, host: &str) -> Result<Option<RegistryAuth>> {
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
