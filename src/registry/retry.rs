//! Retries with exponential backoff for transient registry failures:
//! connection resets and timeouts, 408, 429 and 5xx. Everything else fails at once.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use oci_client::errors::{DigestError, OciDistributionError};

/// First pause between attempts; it doubles each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `attempt` up to `attempts` times while it fails transiently.
pub async fn with_retries<T, F, Fut>(attempts: u32, what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut pause = FIRST_BACKOFF;
    let mut tried = 1;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(err) if tried < attempts && is_transient(&err) => {
                tracing::warn!(attempt = tried, of = attempts, retry_in_ms = pause.as_millis() as u64, error = %format!("{err:#}"), "{what}: transient failure, retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACKOFF);
                tried += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Whether an error is worth another attempt. A digest mismatch never is:
/// it means the bytes are wrong, and retrying could hide a tampering source.
pub fn is_transient(err: &anyhow::Error) -> bool {
    if is_digest_mismatch(err) || is_tls_rejection(err) {
        return false;
    }
    for cause in err.chain() {
        if let Some(oci) = cause.downcast_ref::<OciDistributionError>() {
            return match oci {
                OciDistributionError::ServerError { code, .. } => is_transient_status(*code),
                OciDistributionError::RegistryError { envelope, .. } => envelope
                    .errors
                    .iter()
                    .any(|e| e.message.to_ascii_lowercase().contains("too many requests")),
                OciDistributionError::RequestError(e) => is_transient_reqwest(e),
                OciDistributionError::IoError(_) => true,
                _ => false,
            };
        }
        if let Some(e) = cause.downcast_ref::<reqwest::Error>() {
            return is_transient_reqwest(e);
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        if let Some(SourceFault::Io(_)) = cause.downcast_ref::<SourceFault>() {
            return true;
        }
    }
    false
}

fn is_transient_status(code: u16) -> bool {
    code == 408 || code == 429 || (500..600).contains(&code)
}

fn is_transient_reqwest(e: &reqwest::Error) -> bool {
    match e.status() {
        Some(status) => is_transient_status(status.as_u16()),
        None => e.is_connect() || e.is_timeout() || e.is_body() || e.is_request() || e.is_decode(),
    }
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
