//! Retries for transient registry failures: connection resets and timeouts,
//! 408 and 5xx with exponential backoff and jitter; rate limits (429, or the
//! OCI code TOOMANYREQUESTS) after the pause the registry asks for, capped.
//! Everything else fails at once, a request refused by the plain-HTTP rule
//! first of all.

use std::future::Future;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};

use super::oci::refusal_in;
use super::realm::TokenRefused;

/// First pause between attempts; it doubles each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A rate-limit answer without a Retry-After waits at least this long, doubling up to [`MAX_RETRY_AFTER`].
const RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(1);
/// The longest pause a registry may ask for; one asking for more fails the transfer at once.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What to do about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Asking again gets the same answer.
    Fatal,
    /// Worth another attempt after a backoff.
    Transient,
    /// The registry asks us to slow down, for as long as its Retry-After said (when it could be read).
    RateLimited(Option<Duration>),
}

/// A registry's answer asking to slow down (HTTP 429), with its Retry-After,
/// for the requests privatize makes itself. oci-client keeps no response
/// headers, so its 429s are recognised by status and code and wait on the
/// rate-limit backoff instead.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rate limited by {url} (HTTP 429)")]
pub struct RateLimited {
    pub url: String,
    pub retry_after: Option<Duration>,
}

/// Runs `attempt` up to `attempts` times while it fails transiently.
pub async fn with_retries<T, F, Fut>(attempts: u32, what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut tried = 1;
    loop {
        let err = match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let verdict = classify(&err);
        if verdict == Verdict::Fatal || tried >= attempts {
            return Err(err);
        }
        let pause = match verdict {
            Verdict::RateLimited(Some(asked)) if asked > MAX_RETRY_AFTER => {
                return Err(err.context(format!(
                    "the registry asks for a {} s pause, more than the {} s privatize waits",
                    asked.as_secs(),
                    MAX_RETRY_AFTER.as_secs()
                )));
            }
            Verdict::RateLimited(Some(asked)) => asked + jitter(asked / 10),
            Verdict::RateLimited(None) => {
                backoff = backoff.max(RATE_LIMIT_BACKOFF);
                let pause = backoff + jitter(backoff / 2);
                backoff = (backoff * 2).min(MAX_RETRY_AFTER);
                pause
            }
            Verdict::Transient | Verdict::Fatal => {
                let pause = backoff + jitter(backoff / 2);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                pause
            }
        };
        tracing::warn!(
            attempt = tried, of = attempts, retry_in_ms = pause.as_millis() as u64,
            rate_limited = matches!(verdict, Verdict::RateLimited(_)),
            error = %format!("{err:#}"), "{what}: transient failure, retrying"
        );
        tokio::time::sleep(pause).await;
        tried += 1;
    }
}

/// A random extra pause in `0..=up_to`, so parallel transfers that failed
/// together do not all come back at the same instant.
fn jitter(up_to: Duration) -> Duration {
    Duration::from_millis(fastrand::u64(0..=up_to.as_millis() as u64))
}

/// The pause a `Retry-After` value asks for: delay-seconds or an HTTP date
/// (RFC 9110 §10.2.3). A date in the past means no pause; anything else unreadable is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Whether an error is worth another attempt.
pub fn is_transient(err: &anyhow::Error) -> bool {
    classify(err) != Verdict::Fatal
}

/// Sorts a failure. A digest mismatch is never retried: it means the bytes
/// are wrong, and retrying could hide a tampering source.
pub fn classify(err: &anyhow::Error) -> Verdict {
    if is_digest_mismatch(err) || is_tls_rejection(err) || is_refusal(err) {
        return Verdict::Fatal;
    }
    for cause in err.chain() {
        if let Some(refused) = cause.downcast_ref::<TokenRefused>() {
            return status_verdict(refused.status.as_u16());
        }
        if let Some(limited) = cause.downcast_ref::<RateLimited>() {
            return Verdict::RateLimited(limited.retry_after);
        }
        if let Some(oci) = cause.downcast_ref::<OciDistributionError>() {
            return match oci {
                OciDistributionError::ServerError { code, .. } => status_verdict(*code),
                // oci-client keeps the envelope of a 4xx answer but not its status.
                OciDistributionError::RegistryError { envelope, .. } => {
                    if envelope
                        .errors
                        .iter()
                        .any(|e| e.code == OciErrorCode::Toomanyrequests)
                    {
                        Verdict::RateLimited(None)
                    } else {
                        Verdict::Fatal
                    }
                }
                OciDistributionError::RequestError(e) => reqwest_verdict(e),
                OciDistributionError::IoError(_) => Verdict::Transient,
                _ => Verdict::Fatal,
            };
        }
        if let Some(e) = cause.downcast_ref::<reqwest::Error>() {
            return reqwest_verdict(e);
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return Verdict::Transient;
        }
        if let Some(SourceFault::Io(_)) = cause.downcast_ref::<SourceFault>() {
            return Verdict::Transient;
        }
    }
    Verdict::Fatal
}

/// The verdict for an HTTP status.
pub fn status_verdict(code: u16) -> Verdict {
    match code {
        429 => Verdict::RateLimited(None),
        408 | 500..=599 => Verdict::Transient,
        _ => Verdict::Fatal,
    }
}

fn reqwest_verdict(e: &reqwest::Error) -> Verdict {
    match e.status() {
        Some(status) => status_verdict(status.as_u16()),
        None if e.is_connect()
            || e.is_timeout()
            || e.is_body()
            || e.is_request()
            || e.is_decode() =>
        {
            Verdict::Transient
        }
        None => Verdict::Fatal,
    }
}

/// Whether privatize refused the request itself (plain HTTP to a host not in
/// `--plain-http`): asking again gets the same answer.
pub fn is_refusal(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| refusal_in(cause).is_some())
}

/// Whether a TLS handshake was refused (untrusted or wrong certificate):
/// asking again gets the same answer.
fn is_tls_rejection(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        // hyper-util nests the rustls error in io::Errors, whose `source()` skips them.
        let mut current: &(dyn std::error::Error + 'static) = cause;
        loop {
            if current.downcast_ref::<rustls::Error>().is_some() {
                return true;
            }
            match current
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(inner) => current = inner,
                None => return false,
            }
        }
    })
}

/// Whether a registry answered 400 `DIGEST_INVALID` (a manifest or blob it
/// says does not match the digest it was sent under).
pub fn says_digest_invalid(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::ServerError { code, message, .. } => {
            *code == 400 && message.contains("DIGEST_INVALID")
        }
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| e.code == OciErrorCode::DigestInvalid),
        _ => false,
    }
}

/// Whether the error chain holds a digest verification failure.
pub fn is_digest_mismatch(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<SourceFault>(),
            Some(SourceFault::Digest(_))
        ) || matches!(
            cause.downcast_ref::<DigestError>(),
            Some(DigestError::VerificationError { .. })
        ) || matches!(
            cause.downcast_ref::<OciDistributionError>(),
            Some(OciDistributionError::DigestError(
                DigestError::VerificationError { .. }
            ))
        )
    })
}

/// What went wrong while reading a blob from the source, seen by the copy
/// stream itself (the push side only sees "body error").
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceFault {
    /// The source's bytes did not hash to the expected digest.
    #[error("source blob failed verification: {0}")]
    Digest(String),
    /// The source connection failed mid-blob.
    #[error("reading the source blob failed: {0}")]
    Io(String),
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use oci_client::errors::OciEnvelope;

    use super::*;

    const DOCKER_HUB_429: &str = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"}]}"#;

    #[test]
    fn docker_hub_rate_limit_is_recognised_by_its_code() {
        let envelope: OciEnvelope = serde_json::from_str(DOCKER_HUB_429).unwrap();
        let err = anyhow::Error::new(OciDistributionError::RegistryError {
            envelope,
            url: "https://registry-1.docker.io/v2/library/nginx/manifests/latest".into(),
        })
        .context("pulling manifest");
        assert_eq!(classify(&err), Verdict::RateLimited(None));
        let denied: OciEnvelope =
            serde_json::from_str(r#"{"errors":[{"code":"DENIED","message":"too many requests"}]}"#)
                .unwrap();
        let err = anyhow::Error::new(OciDistributionError::RegistryError {
            envelope: denied,
            url: "u".into(),
        });
        assert_eq!(
            classify(&err),
            Verdict::Fatal,
            "the code decides, not the message"
        );
    }

    #[test]
    fn a_digest_invalid_answer_is_recognised_and_nothing_else() {
        let server = |code, message: &str| OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: message.into(),
        };
        let seen = r#"{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"}]}"#;
        assert!(says_digest_invalid(&server(400, seen)));
        assert!(!says_digest_invalid(&server(
            400,
            r#"{"errors":[{"code":"MANIFEST_INVALID"}]}"#
        )));
        assert!(!says_digest_invalid(&server(500, seen)));
        // Still fatal by itself: only push_manifest, which hashed its own bytes, retries it.
        assert_eq!(
            classify(&anyhow::Error::new(server(400, seen))),
            Verdict::Fatal
        );
    }

    #[test]
    fn status_429_is_a_rate_limit_and_5xx_transient() {
        let server = |code| {
            anyhow::Error::new(OciDistributionError::ServerError {
                code,
                url: "u".into(),
                message: String::new(),
            })
        };
        assert_eq!(classify(&server(429)), Verdict::RateLimited(None));
        assert_eq!(classify(&server(503)), Verdict::Transient);
        assert_eq!(classify(&server(403)), Verdict::Fatal);
    }

    #[test]
    fn a_refused_request_is_not_retried_though_it_travels_as_an_io_error() {
        let refused = super::super::oci::Hygiene {
            marker: "m: ".into(),
            rule: super::super::plain_http::PlainHttp::default(),
        }
        .scrub(OciDistributionError::ServerError {
            code: 403,
            url: "u".into(),
            message: "m: http://10.0.0.1/".into(),
        });
        let err = anyhow::Error::new(refused).context("reading source blob");
        assert_eq!(classify(&err), Verdict::Fatal);
        let relay_failed = anyhow::Error::new(OciDistributionError::IoError(
            std::io::Error::other("relaying: connection refused"),
        ));
        assert_eq!(classify(&relay_failed), Verdict::Transient);
        let token = |code| {
            anyhow::Error::new(TokenRefused {
                url: "https://auth/token".into(),
                status: reqwest::StatusCode::from_u16(code).unwrap(),
            })
        };
        assert_eq!(classify(&token(503)), Verdict::Transient);
        assert_eq!(classify(&token(401)), Verdict::Fatal);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::from_secs(0)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past asks for no pause"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[tokio::test]
    async fn retry_after_is_waited_for() {
        let started = Instant::now();
        let mut calls = 0;
        let result = with_retries(3, "test", || {
            calls += 1;
            let first = calls == 1;
            async move {
                if first {
                    Err(anyhow::Error::new(RateLimited {
                        url: "u".into(),
                        retry_after: Some(Duration::from_millis(400)),
                    }))
                } else {
                    Ok(calls)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_millis(1000),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_cap_fails_at_once() {
        let started = Instant::now();
        let mut calls = 0;
        let err = with_retries(5, "test", || {
            calls += 1;
            async {
                Err::<(), _>(anyhow::Error::new(RateLimited {
                    url: "https://r/v2/".into(),
                    retry_after: Some(Duration::from_secs(3600)),
                }))
            }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(
            format!("{err:#}"),
            "the registry asks for a 3600 s pause, more than the 60 s privatize waits: rate limited by https://r/v2/ (HTTP 429)"
        );
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        for _ in 0..1000 {
            assert!(jitter(Duration::from_millis(100)) <= Duration::from_millis(100));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
