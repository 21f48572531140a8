//! The caller's certificate: what it presented (read once per connection, from the
//! handshake or the resumed session), the API policy's verdict on it, and the form it is
//! forwarded in.

use boring::hash::MessageDigest;
use time::OffsetDateTime;

use super::Request;
use crate::config::ClientCertificates;
use crate::dataplane::error::{ErrorKind, ProxyError};
use crate::dataplane::WorkerContext;
use crate::model::certificate::{asn1_to_datetime, format_name};
use crate::model::client_rule::{ClientCertificateRule, PresentedCertificate};
use crate::model::Thumbprint;
use crate::tls::stream::{TlsError, TlsStream};

/// One connection's caller certificate.
pub(in crate::dataplane) struct Caller {
    pub(super) presented: PresentedCertificate,
    /// The `X-Forwarded-Client-Cert` value: `Hash=<sha256 hex>;Subject="<subject>"`
    /// (Envoy's element names; `"` and `\` in the subject escaped with `\`).
    pub(in crate::dataplane) forwarded: String,
}

/// The certificate the caller presented, when the listener asks for one; counted in
/// `edgegw_downstream_client_certificates_total`.
pub(super) fn presented(ctx: &WorkerContext, tls: &TlsStream) -> Option<Caller> {
    if ctx.callers.mode == ClientCertificates::Off {
        return None;
    }
    let ssl = tls.ssl();
    let Some(cert) = ssl.peer_certificate() else {
        ctx.metrics.client_certificate("none");
        return None;
    };
    // Set by the handshake, and kept in the session for a resumed one (whose session
    // context ties it to the same CAs, see `tls::server::ClientTrust`).
    let trusted = ssl.verify_result().is_ok();
    let digests = (
        cert.digest(MessageDigest::sha1()),
        cert.digest(MessageDigest::sha256()),
    );
    let (Ok(sha1), Ok(sha256)) = digests else {
        tracing::warn!("hashing a caller's certificate failed; treated as none");
        ctx.metrics.client_certificate("none");
        return None;
    };
    let (Ok(not_before), Ok(not_after)) = (
        asn1_to_datetime(cert.not_before()),
        asn1_to_datetime(cert.not_after()),
    ) else {
        tracing::warn!("a caller's certificate has unreadable validity dates; treated as none");
        ctx.metrics.client_certificate("none");
        return None;
    };
    let mut thumbprint = [0u8; 20];
    thumbprint.copy_from_slice(&sha1);
    let mut sha256_bytes = [0u8; 32];
    sha256_bytes.copy_from_slice(&sha256);
    let presented = PresentedCertificate {
        thumbprint: Thumbprint(thumbprint),
        sha256: sha256_bytes,
        subject: format_name(cert.subject_name()),
        issuer: format_name(cert.issuer_name()),
        not_before,
        not_after,
        trusted,
    };
    ctx.metrics
        .client_certificate(if trusted { "verified" } else { "unverified" });
    let forwarded = forwarded_value(&presented);
    Some(Caller {
        presented,
        forwarded,
    })
}

/// Counts a failed handshake that failed over the caller's certificate.
pub(super) fn count_failed_handshake(ctx: &WorkerContext, error: &TlsError) {
    if ctx.callers.mode == ClientCertificates::Off {
        return;
    }
    if let TlsError::Ssl(e) = error {
        if crate::tls::server::refused_client_certificate(e) {
            ctx.metrics.client_certificate("refused");
        }
    }
}

/// The API's rule applied to the caller: 403 `ClientCertificateInvalid` with the reason,
/// unless the rule says `ignore-error="true"` (then logged, and the request goes on).
pub(in crate::dataplane) fn check(
    rule: &ClientCertificateRule,
    caller: Option<&Caller>,
    req: &Request<'_>,
) -> Result<(), ProxyError> {
    let presented = caller.map(|c| &c.presented);
    let Err(failure) = rule.check(presented, OffsetDateTime::now_utc()) else {
        return Ok(());
    };
    let detail = match presented {
        Some(p) => format!(
            "The client certificate {} ({}) fails the policy of API {}: {failure}.",
            p.thumbprint, p.subject, req.api
        ),
        None => format!(
            "No client certificate for API {}, whose policy needs one.",
            req.api
        ),
    };
    if rule.ignore_error {
        tracing::info!(request_id = %req.id, api = %req.api, reason = %failure, "client certificate check failed; ignore-error=\"true\" lets the request through");
        return Ok(());
    }
    let closing =
        req.checked.framing != crate::dataplane::http::Framing::Empty || !req.checked.keep_alive;
    let e = ProxyError::new(ErrorKind::ClientCertificateInvalid(failure), detail);
    Err(if closing { e.closing() } else { e })
}

fn forwarded_value(p: &PresentedCertificate) -> String {
    let mut subject = String::with_capacity(p.subject.len());
    for c in p.subject.chars() {
        if matches!(c, '"' | '\\') {
            subject.push('\\');
        }
        // A header value carries no control characters.
        if !c.is_control() {
            subject.push(c);
        }
    }
    format!("Hash={};Subject=\"{subject}\"", hex::encode(p.sha256))
}
