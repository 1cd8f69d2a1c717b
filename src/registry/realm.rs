//! The login requests privatize makes itself, under the plain-HTTP rule:
//! `/v2/` for how a host logs in, and the token endpoint its challenge names
//! (docker's `GET realm?scope=…`, or the OAuth2 refresh-token grant). A realm
//! and every redirect must be https unless the host is in `--plain-http`; an
//! answer that is no token shows only its status line (it is another host's text).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine as _;
use reqwest::Url;
use serde::Deserialize;

use super::challenge::{parse_bearer_challenge, Endpoint};
use super::plain_http::{PlainHttp, PlainHttpRefused};
use super::retry::{parse_retry_after, RateLimited};

/// The OAuth2 client id sent with every exchange.
const CLIENT_ID: &str = "privatize";

/// How a registry host logs in, by its `/v2/` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// No login asked (an open registry).
    Open,
    Basic,
    Bearer(Endpoint),
}

/// The token endpoint's answer (RFC 6749 §5.1; docker's says `token`).
#[derive(Deserialize)]
pub struct Grant {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl Grant {
    /// The token, when the answer holds one.
    pub fn into_token(self) -> Option<String> {
        self.access_token.or(self.token).filter(|t| !t.is_empty())
    }
}

/// A token endpoint's answer other than a token, by its status line only.
#[derive(Debug, Clone, thiserror::Error)]
#[error("token endpoint {url} answered HTTP {status}")]
pub struct TokenRefused {
    pub url: String,
    pub status: reqwest::StatusCode,
}

/// privatize's own HTTP client for logins, with the rule on every redirect.
#[derive(Clone)]
pub struct Realms {
    http: reqwest::Client,
    rule: PlainHttp,
    /// Registry hosts spoken to over plain HTTP, as oci-client compares them.
    plain_hosts: Arc<Vec<String>>,
}

impl Realms {
    /// `http` must follow redirects by `rule.redirect_policy()`.
    pub fn new(http: reqwest::Client, rule: PlainHttp, plain_hosts: Vec<String>) -> Self {
        Self {
            http,
            rule,
            plain_hosts: Arc::new(plain_hosts),
        }
    }

    /// Asks `/v2/` how `host` logs in; `None` when it cannot be reached now
    /// (the request that follows says why, in its own words).
    pub async fn challenge(&self, host: &str) -> Result<Option<Challenge>> {
        let plain = self.plain_hosts.iter().any(|h| h == host);
        let url = format!("{}://{host}/v2/", if plain { "http" } else { "https" });
        let response = match self.http.get(&url).send().await {
            Ok(response) => response,
            Err(err) => {
                if let Some(refused) = refusal(&err) {
                    return Err(refused.clone().into());
                }
                tracing::debug!(url, error = %err, "asking how to log in failed");
                return Ok(None);
            }
        };
        let challenges: Vec<&str> = response
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if let Some(endpoint) = challenges.iter().find_map(|c| parse_bearer_challenge(c)) {
            self.realm_url(&endpoint)?;
            return Ok(Some(Challenge::Bearer(endpoint)));
        }
        if response.status() == reqwest::StatusCode::UNAUTHORIZED && !challenges.is_empty() {
            return Ok(Some(Challenge::Basic));
        }
        Ok(Some(Challenge::Open))
    }

    /// docker's token flow: `GET realm?scope=…&service=…`, with the Basic pair when there is one.
    pub async fn get_token(
        &self,
        endpoint: &Endpoint,
        scope: &str,
        basic: Option<(&str, &str)>,
    ) -> Result<Grant> {
        let mut url = self.realm_url(endpoint)?;
        url.query_pairs_mut().append_pair("scope", scope);
        if let Some(service) = &endpoint.service {
            url.query_pairs_mut().append_pair("service", service);
        }
        let mut request = self.http.get(url);
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        let what = format!("getting a token for {scope} from {}", endpoint.realm);
        self.answer(request, &endpoint.realm, &what).await
    }

    /// The OAuth2 refresh-token grant (docker's identity tokens).
    pub async fn exchange(
        &self,
        endpoint: &Endpoint,
        refresh_token: &str,
        scope: &str,
    ) -> Result<Grant> {
        let url = self.realm_url(endpoint)?;
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT_ID),
            ("scope", scope),
        ];
        if let Some(service) = &endpoint.service {
            form.push(("service", service));
        }
        let request = self.http.post(url).form(&form);
        self.answer(request, &endpoint.realm, "sending the token request")
            .await
    }

    /// The realm as a URL the rule allows.
    fn realm_url(&self, endpoint: &Endpoint) -> Result<Url> {
        let url = Url::parse(&endpoint.realm)
            .with_context(|| format!("token endpoint {:?} is not a URL", endpoint.realm))?;
        self.rule.check("token endpoint", &url)?;
        Ok(url)
    }

    /// Sends a token request and reads the grant.
    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
        realm: &str,
        what: &str,
    ) -> Result<Grant> {
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                if let Some(refused) = refusal(&err) {
                    return Err(refused.clone().into());
                }
                return Err(anyhow::Error::new(err).context(what.to_string()));
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            return Err(RateLimited {
                url: realm.to_string(),
                retry_after,
            }
            .into());
        }
        if !status.is_success() {
            return Err(TokenRefused {
                url: realm.to_string(),
                status,
            }
            .into());
        }
        response
            .json()
            .await
            .with_context(|| format!("reading the answer of token endpoint {realm}"))
    }
}

/// The refusal behind a failed request of privatize's own client (its redirect policy).
fn refusal(err: &reqwest::Error) -> Option<&PlainHttpRefused> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<PlainHttpRefused>() {
            return Some(refused);
        }
        source = cause.source();
    }
    None
}

/// How long a JWT has left by its `exp` claim, read as oci-client's token
/// cache reads it: `Ok(None)` when it is no JWT or has no `exp`, an error
/// saying why when oci-client would not keep it (unreadable, or expired).
pub fn jwt_expiry(token: &str, now: SystemTime) -> Result<Option<Duration>, String> {
    #[derive(Deserialize)]
    struct Claims {
        exp: Option<u64>,
    }
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| "is a JWT whose claims are not base64url".to_string())?;
    let claims: Claims = serde_json::from_slice(&payload)
        .map_err(|_| "is a JWT whose claims cannot be read".to_string())?;
    let Some(exp) = claims.exp else {
        return Ok(None);
    };
    let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if exp <= now_s {
        return Err(format!("expired {} s ago by its exp claim", now_s - exp));
    }
    Ok(Some(Duration::from_secs(exp - now_s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", b64.encode("{}"), b64.encode(claims))
    }

    #[test]
    fn a_jwt_expiry_is_read_as_oci_client_reads_it() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(jwt_expiry("opaque-token", now), Ok(None));
        assert_eq!(jwt_expiry(&jwt(r#"{"sub":"x"}"#), now), Ok(None));
        assert_eq!(
            jwt_expiry(&jwt(r#"{"exp":1000300}"#), now),
            Ok(Some(Duration::from_secs(300)))
        );
        assert_eq!(
            jwt_expiry(&jwt(r#"{"exp":999990}"#), now),
            Err("expired 10 s ago by its exp claim".to_string())
        );
        assert!(jwt_expiry("a.!!!.c", now).is_err());
        assert!(jwt_expiry(&jwt(r#"{"exp":"soon"}"#), now).is_err());
    }
}
