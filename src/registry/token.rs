//! Every registry login, done by privatize itself so oci-client never holds a
//! credential nor fetches a token: ask `/v2/` how the host logs in, then for
//! Basic hosts hand oci-client the Basic pair (sent to that host only), for
//! Bearer hosts fetch a scoped token at the challenge's realm (anonymously,
//! with the Basic pair, or by exchanging an identity token as docker does)
//! and put it into oci-client's token cache before each request. The
//! requests themselves, and the plain-HTTP rule on them, are `registry/realm.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use oci_client::token_cache::{RegistryToken, RegistryTokenType};
use oci_client::{Reference, RegistryOperation};
use tokio::sync::Mutex;

use super::challenge::Endpoint;
use super::realm::{jwt_expiry, Challenge, Realms};

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

/// The logins of a run, by registry host (as oci-client names it). One host
/// logging in does not hold up another.
#[derive(Clone)]
pub struct Logins {
    realms: Realms,
    hosts: Arc<std::sync::Mutex<HashMap<String, Arc<Mutex<Host>>>>>,
}

struct Host {
    credentials: Credentials,
    /// How the host logs in, once asked.
    challenge: Option<Challenge>,
    access: HashMap<Scope, Access>,
    /// Scopes oci-client holds the Basic pair for (it keeps it for good).
    given: HashSet<Scope>,
}

/// Repository and whether it is a push.
type Scope = (String, bool);

struct Access {
    token: String,
    expires: Instant,
    renew_before: Duration,
    inserted: Instant,
}

impl Logins {
    pub fn new(realms: Realms) -> Self {
        Self {
            realms,
            hosts: Arc::default(),
        }
    }

    /// Remembers how `host` logs in.
    pub fn insert(&self, host: &str, credentials: Credentials) {
        self.hosts.lock().expect("logins lock").insert(
            host.to_string(),
            Arc::new(Mutex::new(Host::new(credentials))),
        );
    }

    /// Makes sure oci-client's next request for `reference` and `op` carries
    /// what the host asks for: a Basic pair, a scoped token, or nothing.
    pub async fn authorize(
        &self,
        oci: &oci_client::Client,
        reference: &Reference,
        op: RegistryOperation,
    ) -> Result<()> {
        let host_name = reference.resolve_registry();
        let host = self
            .hosts
            .lock()
            .expect("logins lock")
            .entry(host_name.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Host::new(Credentials::Anonymous))))
            .clone();
        let mut host = host.lock().await;
        if let Credentials::Token(token) = &host.credentials {
            let token = RegistryTokenType::Bearer(RegistryToken::Token {
                token: token.clone(),
            });
            oci.tokens.insert(reference, op, token).await;
            return Ok(());
        }
        let challenge = match &host.challenge {
            Some(challenge) => challenge.clone(),
            None => match self.realms.challenge(host_name).await? {
                Some(challenge) => host.challenge.insert(challenge).clone(),
                None => return Ok(()),
            },
        };
        let scope: Scope = (
            reference.repository().to_string(),
            op == RegistryOperation::Push,
        );
        let endpoint = match challenge {
            Challenge::Open => return Ok(()),
            Challenge::Bearer(endpoint) => endpoint,
            Challenge::Basic => {
                return match &host.credentials {
                    Credentials::Anonymous => Ok(()),
                    Credentials::Basic { user, password } => {
                        let pair = RegistryTokenType::Basic(user.clone(), password.clone());
                        if host.given.insert(scope) {
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
                let Some(access) =
                    fetch(&self.realms, host_name, &mut host, &endpoint, &scope).await?
                else {
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
}

/// A new token for `scope`; `None` when oci-client's own anonymous flow
/// would get the same (a token it cannot cache, for an anonymous login).
async fn fetch(
    realms: &Realms,
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
            let grant = realms
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
            realms
                .get_token(endpoint, &scope_text, Some((user, password)))
                .await?
        }
        Credentials::Anonymous | Credentials::Token(_) => {
            realms.get_token(endpoint, &scope_text, None).await?
        }
    };
    let mut lifetime = grant
        .expires_in
        .map_or(DEFAULT_LIFETIME, Duration::from_secs);
    let token = grant.into_token().with_context(|| {
        format!(
            "token endpoint {} gave no token for {scope_text}",
            endpoint.realm
        )
    })?;
    match jwt_expiry(&token, SystemTime::now()) {
        Ok(Some(left)) => lifetime = lifetime.min(left),
        Ok(None) => {}
        // oci-client would drop the token and fetch one itself, anonymously:
        // the same thing for an anonymous login, a wrong one otherwise.
        Err(why) if host.credentials == Credentials::Anonymous => {
            tracing::debug!(
                registry = host_name,
                scope = scope_text,
                why,
                "token left to oci-client"
            );
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
