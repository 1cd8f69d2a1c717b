//! Identity tokens (docker's `identitytoken`, or a credential helper's
//! `<token>` user) are OAuth2 refresh tokens: they are exchanged at the
//! registry's token endpoint for an access token per repository and action,
//! as docker and skopeo do. oci-client can only send a bearer token as it is,
//! so the access tokens go into its token cache before each request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use oci_client::token_cache::{RegistryToken, RegistryTokenType};
use oci_client::RegistryOperation;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::retry::{parse_retry_after, RateLimited};

/// The OAuth2 client id sent with every exchange.
const CLIENT_ID: &str = "privatize";
/// An access token is exchanged again this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(30);
/// How long an access token lives when the endpoint does not say (the token spec's default).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// oci-client forgets a token it cannot read an expiry from after 60 s: put it back well before.
const REINSERT_AFTER: Duration = Duration::from_secs(20);

/// The identity tokens of a run, by registry host (as oci-client names it).
#[derive(Clone)]
pub struct IdentityTokens {
    http: reqwest::Client,
    plain_http: Arc<Vec<String>>,
    hosts: Arc<Mutex<HashMap<String, Host>>>,
}

struct Host {
    refresh_token: String,
    endpoint: Option<Endpoint>,
    access: HashMap<(String, bool), Access>,
}

/// Where a registry hands out tokens, from its `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub realm: String,
    pub service: Option<String>,
}

struct Access {
    token: String,
    expires: Instant,
    inserted: Instant,
}

/// The token endpoint's answer (RFC 6749 §5.1; some registries say `token`).
#[derive(Deserialize)]
struct Grant {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

impl IdentityTokens {
    pub fn new(http: reqwest::Client, plain_http: Vec<String>) -> Self {
        Self {
            http,
            plain_http: Arc::new(plain_http),
            hosts: Arc::default(),
        }
    }

    /// Remembers the identity token of `host`.
    pub async fn insert(&self, host: &str, refresh_token: &str) {
        self.hosts.lock().await.insert(
            host.to_string(),
            Host {
                refresh_token: refresh_token.to_string(),
                endpoint: None,
                access: HashMap::new(),
            },
        );
    }

    /// Puts a fresh access token for `repository` and `op` into oci-client's
    /// cache when `host` logs in with an identity token; does nothing otherwise.
    pub async fn authorize(
        &self,
        oci: &oci_client::Client,
        reference: &oci_client::Reference,
        op: RegistryOperation,
    ) -> Result<()> {
        let host_name = reference.resolve_registry();
        let mut hosts = self.hosts.lock().await;
        let Some(host) = hosts.get_mut(host_name) else {
            return Ok(());
        };
        let key = (
            reference.repository().to_string(),
            op == RegistryOperation::Push,
        );
        let now = Instant::now();
        let fresh = host
            .access
            .get(&key)
            .filter(|a| a.expires > now + RENEW_BEFORE);
        if fresh.is_some_and(|a| now.duration_since(a.inserted) < REINSERT_AFTER) {
            return Ok(());
        }
        let token = match fresh {
            Some(access) => access.token.clone(),
            None => {
                let endpoint = match &host.endpoint {
                    Some(endpoint) => endpoint.clone(),
                    None => {
                        let endpoint = self.endpoint(host_name).await?;
                        host.endpoint = Some(endpoint.clone());
                        endpoint
                    }
                };
                let scope = match op {
                    RegistryOperation::Pull => format!("repository:{}:pull", key.0),
                    RegistryOperation::Push => format!("repository:{}:pull,push", key.0),
                };
                let grant = self
                    .exchange(&endpoint, &host.refresh_token, &scope)
                    .await
                    .with_context(|| {
                        format!(
                            "exchanging the identity token for {host_name} at {}",
                            endpoint.realm
                        )
                    })?;
                if let Some(rotated) = grant.refresh_token.filter(|t| !t.is_empty()) {
                    host.refresh_token = rotated;
                }
                let lifetime = grant
                    .expires_in
                    .map_or(DEFAULT_LIFETIME, Duration::from_secs);
                let token = grant
                    .access_token
                    .or(grant.token)
                    .filter(|t| !t.is_empty())
                    .with_context(|| {
                        format!(
                            "exchanging the identity token for {host_name} at {}: the answer holds no access token",
                            endpoint.realm
                        )
                    })?;
                tracing::debug!(
                    registry = host_name,
                    scope,
                    lifetime_s = lifetime.as_secs(),
                    "identity token exchanged"
                );
                host.access.insert(
                    key.clone(),
                    Access {
                        token: token.clone(),
                        expires: now + lifetime,
                        inserted: now,
                    },
                );
                token
            }
        };
        if let Some(access) = host.access.get_mut(&key) {
            access.inserted = now;
        }
        let token = RegistryTokenType::Bearer(RegistryToken::AccessToken {
            access_token: token,
        });
        oci.tokens.insert(reference, op, token).await;
        Ok(())
    }

    /// Asks `/v2/` where the token endpoint is.
    async fn endpoint(&self, host: &str) -> Result<Endpoint> {
        let plain = self.plain_http.iter().any(|h| h == host);
        let url = format!("{}://{host}/v2/", if plain { "http" } else { "https" });
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("asking {url} for its token endpoint"))?;
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_bearer_challenge);
        challenge.with_context(|| {
            format!(
                "asking {url} for its token endpoint: HTTP {} without a Bearer challenge, so an identity token cannot be used there",
                response.status().as_u16()
            )
        })
    }

    async fn exchange(
        &self,
        endpoint: &Endpoint,
        refresh_token: &str,
        scope: &str,
    ) -> Result<Grant> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
            ("scope", scope),
        ];
        if let Some(service) = &endpoint.service {
            form.push(("service", service));
        }
        let response = self
            .http
            .post(&endpoint.realm)
            .form(&form)
            .send()
            .await
            .context("sending the token request")?;
        let status = response.status();
        if status.as_u16() == 429 {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            return Err(RateLimited {
                url: endpoint.realm.clone(),
                retry_after,
            }
            .into());
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.trim().chars().take(200).collect();
            bail!("HTTP {}: {body}", status.as_u16());
        }
        response.json().await.context("reading the token answer")
    }
}

/// Realm and service of a `Bearer realm="…",service="…"` challenge.
pub fn parse_bearer_challenge(header: &str) -> Option<Endpoint> {
    let header = header.trim();
    let (scheme, params) = header.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut found: HashMap<String, String> = HashMap::new();
    let mut rest = params.trim_start();
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let name = name.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        found.insert(name, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Endpoint {
        realm: found.remove("realm").filter(|r| !r.is_empty())?,
        service: found.remove("service"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_give_realm_and_service() {
        assert_eq!(
            parse_bearer_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#
            ),
            Some(Endpoint {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(
            parse_bearer_challenge(
                r#"bearer service="a, \"b\"", realm=https://r/t, scope="repository:x:pull""#
            ),
            Some(Endpoint {
                realm: "https://r/t".into(),
                service: Some(r#"a, "b""#.into()),
            })
        );
        assert_eq!(parse_bearer_challenge(r#"Basic realm="registry""#), None);
        assert_eq!(parse_bearer_challenge(r#"Bearer service="s""#), None);
        assert_eq!(
            parse_bearer_challenge(r#"Bearer realm="unterminated"#),
            None
        );
    }
}
