//! Every registry login, done by privatize itself so oci-client never holds a
//! credential nor fetches a token: ask `/v2/` how the host logs in, then for
//! Basic hosts hand oci-client the Basic pair (sent to that host only), for
//! Bearer hosts fetch a scoped token at the challenge's realm (anonymously,
//! with the Basic pair, or by exchanging an identity token as docker does)
//! and put it into oci-client's token cache before each request. A realm or
//! redirect must be https unless its host is in `--plain-http`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use oci_client::token_cache::{RegistryToken, RegistryTokenType};
use oci_client::RegistryOperation;
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::challenge::{parse_bearer_challenge, Endpoint};
use super::guard::{PlainHttp, PlainHttpRefused};
use super::retry::{parse_retry_after, RateLimited};

/// The OAuth2 client id sent with every exchange.
const CLIENT_ID: &str = "privatize";
/// A token is fetched again this long before it expires (half its life when shorter).
const RENEW_BEFORE: Duration = Duration::from_secs(30);
/// How long a token lives when the endpoint does not say (the token spec's default).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);
/// oci-client forgets a token it cannot read an expiry from after 60 s: put it back well before.
const REINSERT_AFTER: Duration = Duration::from_secs(20);

/// What a registry host is logged in with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    Basic {
        user: String,
        password: String,
    },
    /// docker's `identitytoken`: an OAuth2 refresh token.
    Identity(String),
    /// A bearer token used as it is.
    Token(String),
}

/// The logins of a run, by registry host (as oci-client names it).
#[derive(Clone)]
pub struct Logins {
    http: reqwest::Client,
    /// Registry hosts spoken to over plain HTTP, as oci-client compares them.
    plain_hosts: Arc<Vec<String>>,
    rule: PlainHttp,
    hosts: Arc<Mutex<HashMap<String, Host>>>,
}

struct Host {
    credentials: Credentials,
    /// How the host logs in, once asked.
    challenge: Option<Challenge>,
    access: HashMap<Scope, Access>,
    /// Scopes oci-client holds a Basic pair or a fixed token for.
    given: HashSet<Scope>,
}

/// Repository and whether it is a push.
type Scope = (String, bool);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    /// No login asked (an open registry).
    Open,
    Basic,
    Bearer(Endpoint),
}

struct Access {
    token: String,
    expires: Instant,
    renew_before: Duration,
    inserted: Instant,
}

/// The token endpoint's answer (RFC 6749 §5.1; docker's says `token`).
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

/// A token endpoint's answer other than a token, by its status line only:
/// its body is another host's text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("token endpoint {url} answered HTTP {status}")]
pub struct TokenRefused {
    pub url: String,
    pub status: reqwest::StatusCode,
}

impl Logins {
    /// `rule` applies to realms and every redirect; `plain_hosts` are the
    /// registries spoken to over plain HTTP.
    pub fn new(http: reqwest::Client, plain_hosts: Vec<String>, rule: PlainHttp) -> Self {
        Self {
            http,
            plain_hosts: Arc::new(plain_hosts),
            rule,
            hosts: Arc::default(),
        }
    }

    /// Remembers how `host` logs in.
    pub async fn insert(&self, host: &str, credentials: Credentials) {
        self.hosts
            .lock()
            .await
            .insert(host.to_string(), Host::new(credentials));
    }

    /// Makes sure oci-client's next request for `reference` and `op` carries
    /// what the host asks for: a Basic pair, a scoped token, or nothing.
    pub async fn authorize(
        &self,
        oci: &oci_client::Client,
        reference: &oci_client::Reference,
        op: RegistryOperation,
    ) -> Result<()> {
        let host_name = reference.resolve_registry();
        let mut hosts = self.hosts.lock().await;
        let host = hosts
            .entry(host_name.to_string())
            .or_insert_with(|| Host::new(Credentials::Anonymous));
        let scope: Scope = (
            reference.repository().to_string(),
            op == RegistryOperation::Push,
        );
        if let Credentials::Token(token) = &host.credentials {
            let token = RegistryTokenType::Bearer(RegistryToken::Token {
                token: token.clone(),
            });
            oci.tokens.insert(reference, op, token).await;
            return Ok(());
        }
        let challenge = match &host.challenge {
            Some(challenge) => challenge.clone(),
            None => match self.challenge(host_name).await? {
                Some(challenge) => host.challenge.insert(challenge).clone(),
                // Unreachable now: the request itself says why, in its own words.
                None => return Ok(()),
            },
        };
        let endpoint = match challenge {
            Challenge::Open => return Ok(()),
            Challenge::Bearer(endpoint) => endpoint,
            Challenge::Basic => {
                return match &host.credentials {
                    Credentials::Anonymous => Ok(()),
                    Credentials::Basic { user, password } => {
                        if host.given.insert(scope) {
                            let pair = RegistryTokenType::Basic(user.clone(), password.clone());
                            oci.tokens.insert(reference, op, pair).await;
                        }
                        Ok(())
                    }
                    Credentials::Identity(_) | Credentials::Token(_) => bail!(
                        "{host_name} asks for Basic credentials, so an identity token cannot be used there"
                    ),
                };
            }
        };
        self.bearer(oci, host_name, host, &endpoint, reference, op, scope)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn bearer(
        &self,
        oci: &oci_client::Client,
        host_name: &str,
        host: &mut Host,
        endpoint: &Endpoint,
        reference: &oci_client::Reference,
        op: RegistryOperation,
        scope: Scope,
    ) -> Result<()> {
        let now = Instant::now();
        let fresh = host
            .access
            .get(&scope)
            .filter(|a| a.expires > now + a.renew_before);
        if fresh.is_some_and(|a| now.duration_since(a.inserted) < REINSERT_AFTER) {
            return Ok(());
        }
        let token = match fresh {
            Some(access) => access.token.clone(),
            None => {
                let Some(access) = self.fetch(host_name, host, endpoint, &scope).await? else {
                    return Ok(());
                };
                let token = access.token.clone();
                host.access.insert(scope.clone(), access);
                token
            }
        };
        if let Some(access) = host.access.get_mut(&scope) {
            access.inserted = now;
        }
        let token = RegistryTokenType::Bearer(RegistryToken::AccessToken {
            access_token: token,
        });
        oci.tokens.insert(reference, op, token).await;
        Ok(())
    }

    /// A new token for `scope`; `None` when oci-client's own anonymous flow
    /// would get the same (a token it cannot cache, for an anonymous login).
    async fn fetch(
        &self,
        host_name: &str,
        host: &mut Host,
        endpoint: &Endpoint,
        scope: &Scope,
    ) -> Result<Option<Access>> {
        let scope_text = match scope {
            (repository, false) => format!("repository:{repository}:pull"),
            (repository, true) => format!("repository:{repository}:pull,push"),
        };
        let now = Instant::now();
        let grant = match &host.credentials {
            Credentials::Identity(refresh_token) => {
                let grant = self
                    .exchange(endpoint, refresh_token, &scope_text)
                    .await
                    .with_context(|| {
                        format!(
                            "exchanging the identity token for {host_name} at {}",
                            endpoint.realm
                        )
                    })?;
                if let Some(rotated) = grant.refresh_token.clone().filter(|t| !t.is_empty()) {
                    host.credentials = Credentials::Identity(rotated);
                }
                grant
            }
            Credentials::Basic { user, password } => {
                self.get_token(endpoint, &scope_text, Some((user, password)))
                    .await?
            }
            Credentials::Anonymous | Credentials::Token(_) => {
                self.get_token(endpoint, &scope_text, None).await?
            }
        };
        let token = grant
            .access_token
            .or(grant.token)
            .filter(|t| !t.is_empty())
            .with_context(|| {
                format!(
                    "token endpoint {} gave no token for {scope_text}",
                    endpoint.realm
                )
            })?;
        let mut lifetime = grant
            .expires_in
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        match jwt_expiry(&token, SystemTime::now()) {
            Ok(Some(left)) => lifetime = lifetime.min(left),
            Ok(None) => {}
            // oci-client would drop the token and fetch one itself, anonymously:
            // the same thing for an anonymous login, a wrong one otherwise.
            Err(why) if host.credentials == Credentials::Anonymous => {
                tracing::debug!(registry = host_name, scope = scope_text, why, "token left to oci-client");
                return Ok(None);
            }
            Err(why) => bail!(
                "the token {} gave for {scope_text} {why}, so it cannot be used (is this machine's clock right?)",
                endpoint.realm
            ),
        }
        tracing::debug!(
            registry = host_name,
            scope = scope_text,
            lifetime_s = lifetime.as_secs(),
            "registry token fetched"
        );
        Ok(Some(Access {
            token,
            expires: now + lifetime,
            renew_before: RENEW_BEFORE.min(lifetime / 2),
            inserted: now,
        }))
    }

    /// Asks `/v2/` how `host` logs in; `None` when it cannot be reached now.
    async fn challenge(&self, host: &str) -> Result<Option<Challenge>> {
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
            let realm = Url::parse(&endpoint.realm).with_context(|| {
                format!("token endpoint {:?} of {host} is not a URL", endpoint.realm)
            })?;
            self.rule.check("token endpoint", &realm)?;
            return Ok(Some(Challenge::Bearer(endpoint)));
        }
        if response.status() == reqwest::StatusCode::UNAUTHORIZED && !challenges.is_empty() {
            return Ok(Some(Challenge::Basic));
        }
        Ok(Some(Challenge::Open))
    }

    /// docker's token flow: `GET realm?scope=…&service=…`, with the Basic pair when there is one.
    async fn get_token(
        &self,
        endpoint: &Endpoint,
        scope: &str,
        basic: Option<(&String, &String)>,
    ) -> Result<Grant> {
        let mut url = Url::parse(&endpoint.realm)
            .with_context(|| format!("token endpoint {:?} is not a URL", endpoint.realm))?;
        self.rule.check("token endpoint", &url)?;
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
    async fn exchange(
        &self,
        endpoint: &Endpoint,
        refresh_token: &str,
        scope: &str,
    ) -> Result<Grant> {
        let url = Url::parse(&endpoint.realm)
            .with_context(|| format!("token endpoint {:?} is not a URL", endpoint.realm))?;
        self.rule.check("token endpoint", &url)?;
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

    /// Sends a token request and reads the grant; a refusal shows only its status line.
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

impl Host {
    fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            challenge: None,
            access: HashMap::new(),
            given: HashSet::new(),
        }
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
fn jwt_expiry(token: &str, now: SystemTime) -> Result<Option<Duration>, String> {
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
