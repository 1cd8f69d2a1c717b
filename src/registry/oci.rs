//! oci-client as privatize calls it: the same calls, with error hygiene. An
//! answer's body is shown only when it is an OCI error envelope: any other
//! body may come from a host a redirect led to (a metadata service, say) and
//! is cut to its status line. The transport guard's own answers come back as
//! one clear line.

use std::io;

use bytes::Bytes;
use futures_util::Stream;
use oci_client::client::{AsLayerDescriptor, BlobResponse, LayerDescriptor, SizedStream};
use oci_client::errors::{OciDistributionError, Result};
use oci_client::manifest::OciImageIndex;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use reqwest::header::HeaderValue;
use reqwest::{StatusCode, Url};

use super::plain_http::{PlainHttp, PlainHttpRefused};

/// The oci-client of a registry client, behind its transport guard.
#[derive(Clone)]
pub struct Oci {
    inner: oci_client::Client,
    hygiene: Hygiene,
}

/// What tells the guard's answers from remote ones.
#[derive(Clone)]
pub struct Hygiene {
    pub marker: String,
    pub rule: PlainHttp,
}

impl Oci {
    pub fn new(inner: oci_client::Client, hygiene: Hygiene) -> Self {
        Self { inner, hygiene }
    }

    /// The client itself, for its token cache and stored logins.
    pub fn raw(&self) -> &oci_client::Client {
        &self.inner
    }

    pub async fn blob_exists(&self, image: &Reference, digest: &str) -> Result<bool> {
        let answer = self.inner.blob_exists(image, digest).await;
        answer.map_err(|e| self.hygiene.scrub(e))
    }

    pub async fn mount_blob(
        &self,
        image: &Reference,
        source: &Reference,
        digest: &str,
    ) -> Result<()> {
        let answer = self.inner.mount_blob(image, source, digest).await;
        answer.map_err(|e| self.hygiene.scrub(e))
    }

    pub async fn push_blob_stream<T>(
        &self,
        image: &Reference,
        stream: T,
        digest: &str,
        size: Option<u64>,
    ) -> Result<String>
    where
        T: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        let answer = self
            .inner
            .push_blob_stream(image, stream, digest, size)
            .await;
        answer.map_err(|e| self.hygiene.scrub(e))
    }

    pub async fn push_manifest_raw(
        &self,
        image: &Reference,
        body: impl Into<Bytes>,
        content_type: HeaderValue,
    ) -> Result<String> {
        // oci-client's way round a registry that answers 201 without a
        // Location (ECR, go-containerregistry's registry) cuts the URL at the
        // reference's tag, and panics when the URL ends in a digest instead
        // ("The manifest URL always ends with the image tag suffix"). A
        // digest given as the tag makes the same URL, and no panic.
        let by_digest = image.digest().map(|digest| {
            Reference::with_tag(
                image.registry().to_string(),
                image.repository().to_string(),
                digest.to_string(),
            )
        });
        let image = by_digest.as_ref().unwrap_or(image);
        let answer = self
            .inner
            .push_manifest_raw(image, body, content_type)
            .await;
        answer.map_err(|e| self.hygiene.scrub(e))
    }

    /// A blob as a stream. The descriptor's `urls` are never followed.
    pub async fn pull_blob_stream(
        &self,
        image: &Reference,
        layer: impl AsLayerDescriptor,
    ) -> Result<SizedStream> {
        let layer = layer.as_layer_descriptor();
        let registry_only = LayerDescriptor {
            digest: layer.digest,
            urls: &None,
        };
        let answer = self.inner.pull_blob_stream(image, &registry_only).await;
        answer.map_err(|e| self.hygiene.scrub(e))
    }

    /// A blob from `offset` on. The descriptor's `urls` are never followed.
    pub async fn pull_blob_stream_partial(
        &self,
        image: &Reference,
        layer: impl AsLayerDescriptor,
        offset: u64,
        length: Option<u64>,
    ) -> Result<BlobResponse> {
        let layer = layer.as_layer_descriptor();
        let registry_only = LayerDescriptor {
            digest: layer.digest,
            urls: &None,
        };
        let answer = self
            .inner
            .pull_blob_stream_partial(image, &registry_only, offset, length)
            .await;
        answer.map_err(|e| self.hygiene.scrub(e))
    }

    pub async fn fetch_manifest_digest(&self, image: &Reference) -> Result<String> {
        let answer = self
            .inner
            .fetch_manifest_digest(image, &RegistryAuth::Anonymous)
            .await;
        answer.map_err(|e| self.hygiene.scrub(e))
    }

    /// The referrers of a digest: the Referrers API's answer, or (when it
    /// answers 404) the referrers tag schema's index (oci-client's fallback).
    pub async fn pull_referrers(&self, image: &Reference) -> Result<OciImageIndex> {
        let answer = self.inner.pull_referrers(image, None).await;
        answer.map_err(|e| self.hygiene.scrub(e))
    }

    pub async fn pull_manifest_raw(
        &self,
        image: &Reference,
        accepted: &[&str],
    ) -> Result<(Bytes, String)> {
        let answer = self
            .inner
            .pull_manifest_raw(image, &RegistryAuth::Anonymous, accepted)
            .await;
        answer.map_err(|e| self.hygiene.scrub(e))
    }
}

impl Hygiene {
    /// The error with no remote text but an OCI envelope's; the guard's
    /// refusals become [`PlainHttpRefused`] (inside an I/O error, the one
    /// variant that carries an error of ours), its relay failures I/O errors.
    pub fn scrub(&self, err: OciDistributionError) -> OciDistributionError {
        match err {
            OciDistributionError::ServerError { code, url, message } => {
                match message.strip_prefix(&self.marker) {
                    Some(refused) if code == 403 => refusal(refused),
                    Some(failure) => {
                        OciDistributionError::IoError(io::Error::other(failure.to_string()))
                    }
                    None => OciDistributionError::ServerError {
                        code,
                        url,
                        message: envelope(&message).unwrap_or_else(|| status_line(code)),
                    },
                }
            }
            OciDistributionError::AuthenticationFailure(_) => {
                OciDistributionError::AuthenticationFailure("the answer is not shown".into())
            }
            // A HEAD has no body: a 403 from a plain-HTTP URL outside the
            // rule can only be the guard's (nothing else answers there).
            OciDistributionError::RequestError(e)
                if e.status() == Some(StatusCode::FORBIDDEN)
                    && e.url()
                        .is_some_and(|u| u.scheme() == "http" && !self.rule.allows(u)) =>
            {
                let url = e.url().map(Url::to_string).unwrap_or_default();
                refusal(&url)
            }
            other => other,
        }
    }
}

fn refusal(url: &str) -> OciDistributionError {
    OciDistributionError::IoError(io::Error::new(
        io::ErrorKind::PermissionDenied,
        PlainHttpRefused {
            what: "request to",
            url: url.to_string(),
        },
    ))
}

/// A registry's OCI error envelope (`{"errors":[{"code","message"}]}`, codes
/// oci-client does not know, such as ECR's `TAG_INVALID`) rebuilt from its
/// first entry's code and message only, so nothing else of the body is kept.
fn envelope(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let first = value.get("errors")?.as_array()?.first()?;
    let code = first.get("code")?.as_str()?;
    let message = first.get("message").and_then(|m| m.as_str()).unwrap_or("");
    let message: String = message.chars().take(300).collect();
    Some(serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string())
}

/// `HTTP 500 Internal Server Error (body not shown)`.
fn status_line(code: u16) -> String {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("HTTP {code} {reason} (body not shown)").replace("  ", " ")
}

/// The refusal inside an error of oci-client, when it is one.
pub fn refusal_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a PlainHttpRefused> {
    if let Some(refused) = err.downcast_ref::<PlainHttpRefused>() {
        return Some(refused);
    }
    let io = match err.downcast_ref::<OciDistributionError>() {
        Some(OciDistributionError::IoError(io)) => io,
        _ => err.downcast_ref::<io::Error>()?,
    };
    io.get_ref()?.downcast_ref::<PlainHttpRefused>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hygiene() -> Hygiene {
        Hygiene {
            marker: "privatize-guard-0123456789abcdef: ".into(),
            rule: PlainHttp::new(&["127.0.0.1:5000".into()]),
        }
    }

    #[test]
    fn a_body_that_is_no_oci_envelope_is_cut_to_its_status_line() {
        let scrubbed = hygiene().scrub(OciDistributionError::ServerError {
            code: 500,
            url: "https://r/v2/x/blobs/sha256:00".into(),
            message: "SECRET-BODY AccessKeyId=AKIA…".into(),
        });
        let shown = scrubbed.to_string();
        assert!(!shown.contains("SECRET"), "{shown}");
        assert_eq!(
            shown,
            "Server error: url https://r/v2/x/blobs/sha256:00, code: 500, message: HTTP 500 Internal Server Error (body not shown)"
        );
        let auth = hygiene().scrub(OciDistributionError::AuthenticationFailure("SECRET".into()));
        assert!(!auth.to_string().contains("SECRET"));
    }

    #[test]
    fn an_oci_error_envelope_keeps_only_its_code_and_message() {
        let body = r#"{"errors":[{"code":"TAG_INVALID","message":"The image tag 'v1' already exists","detail":{"secret":"x"}}],"extra":"SECRET"}"#;
        let scrubbed = hygiene().scrub(OciDistributionError::ServerError {
            code: 400,
            url: "https://r/v2/x/manifests/v1".into(),
            message: body.into(),
        });
        let OciDistributionError::ServerError { message, .. } = scrubbed else {
            panic!("still a server error")
        };
        assert_eq!(
            message,
            r#"{"errors":[{"code":"TAG_INVALID","message":"The image tag 'v1' already exists"}]}"#
        );
    }

    #[test]
    fn the_guards_refusal_becomes_one_clear_line() {
        let scrubbed = hygiene().scrub(OciDistributionError::ServerError {
            code: 403,
            url: "http://127.0.0.1:5000/v2/x/manifests/v1".into(),
            message: "privatize-guard-0123456789abcdef: http://10.1.2.3:8080/x".into(),
        });
        assert_eq!(
            scrubbed.to_string(),
            "request to http://10.1.2.3:8080/x refused: plain HTTP is only used for hosts in --plain-http"
        );
        assert!(refusal_in(&scrubbed).is_some());
    }

    #[test]
    fn a_remote_body_imitating_the_guard_without_its_marker_is_cut() {
        let scrubbed = hygiene().scrub(OciDistributionError::ServerError {
            code: 403,
            url: "https://evil/v2/x/manifests/v1".into(),
            message: "privatize-guard-ffffffffffffffff: see http://x".into(),
        });
        assert!(refusal_in(&scrubbed).is_none());
        assert!(!scrubbed.to_string().contains("see http://x"));
    }
}
