//! The plain-HTTP rule: every URL privatize follows (a registry, a token
//! realm, a redirect) is https unless its host and port are in `--plain-http`.

use std::fmt;
use std::sync::Arc;

use reqwest::Url;

/// Hosts (`HOST[:PORT]`, port 80 when left out) spoken to over plain HTTP;
/// every other URL privatize follows must be https.
#[derive(Debug, Clone, Default)]
pub struct PlainHttp {
    /// `host:port`, lower-case.
    authorities: Arc<Vec<String>>,
}

impl PlainHttp {
    pub fn new(entries: &[String]) -> Self {
        let authorities = entries
            .iter()
            .filter(|e| !e.trim().is_empty())
            .filter_map(|e| Url::parse(&format!("http://{}/", e.trim())).ok())
            .filter_map(|url| authority(&url))
            .collect();
        Self {
            authorities: Arc::new(authorities),
        }
    }

    /// Whether privatize may send a request to `url`.
    pub fn allows(&self, url: &Url) -> bool {
        match url.scheme() {
            "https" => true,
            "http" => authority(url).is_some_and(|a| self.authorities.contains(&a)),
            _ => false,
        }
    }

    /// `Ok` when `url` may be asked, else the refusal naming `what` it is.
    pub fn check(&self, what: &'static str, url: &Url) -> Result<(), PlainHttpRefused> {
        if self.allows(url) {
            Ok(())
        } else {
            Err(PlainHttpRefused {
                what,
                url: url.to_string(),
            })
        }
    }

    /// A redirect policy that follows only what this rule allows (ten hops at most).
    pub fn redirect_policy(&self) -> reqwest::redirect::Policy {
        let rule = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                attempt.error("too many redirects")
            } else if let Err(refused) = rule.check("redirect to", attempt.url()) {
                attempt.error(refused)
            } else {
                attempt.follow()
            }
        })
    }
}

/// `host:port` of a URL, lower-case, with the scheme's default port filled in.
fn authority(url: &Url) -> Option<String> {
    Some(format!(
        "{}:{}",
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?
    ))
}

/// A request privatize refused to make: plain HTTP to a host not in
/// `--plain-http`, or a scheme that is neither http nor https.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlainHttpRefused {
    /// What the URL is: "token endpoint", "redirect to", "request to".
    pub what: &'static str,
    pub url: String,
}

impl fmt::Display for PlainHttpRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = if self.url.starts_with("http:") {
            "plain HTTP is only used for hosts in --plain-http"
        } else {
            "only https (and plain HTTP for hosts in --plain-http) is used"
        };
        write!(f, "{} {} refused: {why}", self.what, self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn plain_http_is_allowed_only_for_the_listed_host_and_port() {
        let rule = PlainHttp::new(&[
            "127.0.0.1:5000".into(),
            " Registry.Internal ".into(),
            "[::1]:5001".into(),
        ]);
        assert!(rule.allows(&url("http://127.0.0.1:5000/v2/")));
        assert!(
            !rule.allows(&url("http://127.0.0.1:5001/v2/")),
            "another port"
        );
        assert!(
            !rule.allows(&url("http://127.0.0.1/v2/")),
            "port 80 is not 5000"
        );
        assert!(rule.allows(&url("http://registry.internal/token")));
        assert!(rule.allows(&url("http://REGISTRY.internal:80/token")));
        assert!(!rule.allows(&url("http://registry.internal:8080/token")));
        assert!(
            !rule.allows(&url("http://sub.registry.internal/token")),
            "no subdomains"
        );
        assert!(rule.allows(&url("http://[::1]:5001/x")));
        assert!(
            rule.allows(&url("https://169.254.169.254/anything")),
            "https is always allowed"
        );
        assert!(!rule.allows(&url("http://169.254.169.254/latest/meta-data/")));
        assert!(!rule.allows(&url("file:///etc/passwd")));
        assert!(!PlainHttp::default().allows(&url("http://127.0.0.1:5000/")));
    }

    #[test]
    fn a_refusal_names_what_was_refused_and_the_rule() {
        let rule = PlainHttp::new(&[]);
        let refused = rule
            .check("token endpoint", &url("http://10.0.0.1:8080/token"))
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "token endpoint http://10.0.0.1:8080/token refused: plain HTTP is only used for hosts in --plain-http"
        );
        let refused = rule.check("redirect to", &url("ftp://x/y")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "redirect to ftp://x/y refused: only https (and plain HTTP for hosts in --plain-http) is used"
        );
    }
}
