//! Upstream TLS: one client context per (client certificate, validation flags), the
//! per-connection settings (SNI, name checks, session to resume), and the mapping of a failed
//! handshake to the contract's `BackendTlsError` reasons.

use std::net::IpAddr;
use std::os::raw::c_int;
use std::sync::OnceLock;

use boring::hash::MessageDigest;
use boring::ssl::{
    Ssl, SslContext, SslMethod, SslRef, SslSession, SslSessionCacheMode, SslVerifyMode, SslVersion,
};
use boring::x509::store::{X509Store, X509StoreBuilder};
use boring::x509::verify::X509VerifyParamRef;
use boring::x509::{X509VerifyError, X509};
use foreign_types::ForeignTypeRef as _;

use crate::model::{Certificate, Thumbprint};

/// One more name the certificate may carry (`X509_VERIFY_PARAM_add1_host`, which `boring`
/// does not wrap): any of the names set passes.
fn add_host(param: &mut X509VerifyParamRef, name: &str) -> Result<(), boring::error::ErrorStack> {
    // SAFETY: `param` is a valid parameter object owned by the connection; the name is
    // passed with its length (no NUL needed) and copied by BoringSSL.
    let ok = unsafe {
        boring_sys::X509_VERIFY_PARAM_add1_host(param.as_ptr(), name.as_ptr().cast(), name.len())
    };
    if ok == 1 {
        Ok(())
    } else {
        Err(boring::error::ErrorStack::get())
    }
}

/// Why the TLS connection to a backend failed (contract §4, `details[].reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    UntrustedChain,
    NameMismatch,
    /// The backend's certificate is none of `tls.serverCertificateThumbprints`.
    PinMismatch,
    Expired,
    ClientCertificateRejected,
    HandshakeFailed,
}

impl TlsFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::UntrustedChain => "UntrustedChain",
            TlsFailure::NameMismatch => "NameMismatch",
            TlsFailure::PinMismatch => "PinMismatch",
            TlsFailure::Expired => "Expired",
            TlsFailure::ClientCertificateRejected => "ClientCertificateRejected",
            TlsFailure::HandshakeFailed => "HandshakeFailed",
        }
    }
}

/// BoringSSL's reason codes (library `ERR_LIB_SSL`) for the alerts by which a server refuses
/// the client certificate it got, or refuses to go on without one. Compared as numbers: the
/// error's text is for people and may change between BoringSSL releases.
const CLIENT_CERT_ALERTS: [c_int; 8] = [
    boring_sys::SSL_R_TLSV1_ALERT_CERTIFICATE_REQUIRED,
    boring_sys::SSL_R_SSLV3_ALERT_BAD_CERTIFICATE,
    boring_sys::SSL_R_TLSV1_ALERT_UNKNOWN_CA,
    boring_sys::SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN,
    boring_sys::SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED,
    boring_sys::SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED,
    boring_sys::SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE,
    boring_sys::SSL_R_TLSV1_ALERT_ACCESS_DENIED,
];

/// True when BoringSSL reports an alert by which the backend refused our certificate. With
/// TLS 1.3 that alert comes after the handshake, on the first read of the response.
pub fn refuses_client_certificate(error: &boring::ssl::Error) -> bool {
    let ssl_library = boring_sys::ERR_LIB_SSL.0 as c_int;
    error.ssl_error().is_some_and(|stack| {
        stack.errors().iter().any(|e| {
            e.library_code() == ssl_library && CLIENT_CERT_ALERTS.contains(&e.reason_code())
        })
    })
}

/// Classifies a failed upstream TLS operation: first our own verdict on the backend's
/// certificate, then the alert the backend sent.
pub fn classify_failure(ssl: &SslRef, error: &boring::ssl::Error) -> TlsFailure {
    if let Err(verdict) = ssl.verify_result() {
        return match verdict {
            X509VerifyError::HOSTNAME_MISMATCH | X509VerifyError::IP_ADDRESS_MISMATCH => {
                TlsFailure::NameMismatch
            }
            X509VerifyError::CERT_HAS_EXPIRED | X509VerifyError::CERT_NOT_YET_VALID => {
                TlsFailure::Expired
            }
            // Set by the pin check of `build_context`'s verify callback, and only there.
            X509VerifyError::APPLICATION_VERIFICATION => TlsFailure::PinMismatch,
            _ => TlsFailure::UntrustedChain,
        };
    }
    if refuses_client_certificate(error) {
        TlsFailure::ClientCertificateRejected
    } else {
        TlsFailure::HandshakeFailed
    }
}

/// Where a connection parks the newest session ticket the backend sent, until the pool
/// moves it into its session cache.
fn session_slot() -> boring::ex_data::Index<Ssl, Option<SslSession>> {
    static INDEX: OnceLock<boring::ex_data::Index<Ssl, Option<SslSession>>> = OnceLock::new();
    *INDEX.get_or_init(|| {
        // An ex-data index can only fail to be allocated on memory exhaustion.
        #[allow(clippy::expect_used)]
        Ssl::new_ex_index().expect("allocating an SSL ex-data index")
    })
}

/// Takes the newest session ticket the backend sent on this connection, if any.
pub fn take_new_session(ssl: &mut SslRef) -> Option<SslSession> {
    ssl.ex_data_mut(session_slot()).and_then(Option::take)
}

/// The system trust store (BoringSSL's default paths), loaded once and shared by every
/// client context that uses it (an `X509_STORE` is reference counted and locks itself).
///
/// Each context used to load it for itself: the CA bundle parsed again (about 150
/// certificates, thousands of small allocations) for every new context, i.e. for every
/// certificate upload; under a soak with an upload a second that churn fragmented the heap
/// and RSS kept rising (docs/BENCHMARKS.md, "Hardening"). `None` when it cannot be built
/// (then each context loads the default paths itself, as before).
fn system_store() -> Option<&'static X509Store> {
    static STORE: OnceLock<Option<X509Store>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let mut builder = X509StoreBuilder::new().ok()?;
            builder.set_default_paths().ok()?;
            Some(builder.build())
        })
        .as_ref()
}

/// How a backend's certificate is verified.
#[derive(Clone, Debug, Default)]
pub struct Verification {
    pub validate_chain: bool,
    pub validate_name: bool,
    /// The CA certificates the chain must lead to; `None`: the system trust store.
    pub anchors: Option<Vec<X509>>,
    /// SHA-1 thumbprints one of which the leaf must have; empty: no pin.
    pub pins: Vec<Thumbprint>,
}

/// Builds the client context for one certificate and one way of verifying the backend.
pub fn build_context(
    certificate: Option<&Certificate>,
    verification: &Verification,
) -> Result<SslContext, boring::error::ErrorStack> {
    let mut builder = SslContext::builder(SslMethod::tls())?;
    builder.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    builder.set_alpn_protos(b"\x08http/1.1")?;
    match &verification.anchors {
        // Exactly these CAs: the system store is not consulted.
        Some(anchors) => {
            let mut store = X509StoreBuilder::new()?;
            for anchor in anchors {
                store.add_cert(anchor)?;
            }
            builder.set_cert_store(store.build());
        }
        None => match system_store() {
            Some(store) => builder.set_cert_store_ref(store),
            None => builder.set_default_verify_paths()?,
        },
    }
    let Verification {
        validate_chain,
        validate_name,
        ref pins,
        ..
    } = *verification;
    if validate_chain || validate_name || !pins.is_empty() {
        let pins = pins.clone();
        builder.set_verify_callback(SslVerifyMode::PEER, move |preverified, ctx| {
            let ok = if preverified || validate_chain {
                preverified
            } else {
                // Chain validation is off: only a name mismatch still fails the handshake.
                !matches!(
                    ctx.verify_result(),
                    Err(X509VerifyError::HOSTNAME_MISMATCH | X509VerifyError::IP_ADDRESS_MISMATCH)
                )
            };
            // The leaf is seen last (depth 0) with every other check already done.
            if ok && !pins.is_empty() && ctx.error_depth() == 0 {
                let pinned = ctx
                    .current_cert()
                    .and_then(|leaf| leaf.digest(MessageDigest::sha1()).ok())
                    .is_some_and(|d| pins.iter().any(|p| p.0[..] == d[..]));
                if !pinned {
                    ctx.set_error(Err(X509VerifyError::APPLICATION_VERIFICATION));
                    return false;
                }
            }
            ok
        });
    } else {
        builder.set_verify(SslVerifyMode::NONE);
    }
    if let Some(cert) = certificate {
        builder.set_certificate(&cert.leaf)?;
        builder.set_private_key(&cert.key)?;
        for intermediate in &cert.chain {
            builder.add_extra_chain_cert(intermediate.clone())?;
        }
    }
    capture_new_sessions(&mut builder);
    Ok(builder.build())
}

/// Client-side resumption: BoringSSL hands every new session to a callback (TLS 1.3 tickets
/// arrive after the handshake, with the first records read after it); each connection keeps
/// the newest one until `take_new_session` collects it. Reusing `ssl.session()` would not do.
pub fn capture_new_sessions(builder: &mut boring::ssl::SslContextBuilder) {
    builder.set_session_cache_mode(SslSessionCacheMode::CLIENT);
    let slot = session_slot();
    builder.set_new_session_callback(move |ssl, session| {
        ssl.set_ex_data(slot, Some(session));
    });
}

/// Per-connection settings: SNI for names, the names to verify (`server_names`, else the
/// URL's host), the session to resume.
pub fn new_connection(
    context: &SslContext,
    host: &str,
    validate_name: bool,
    server_names: &[String],
    session: Option<&SslSession>,
) -> Result<Ssl, boring::error::ErrorStack> {
    let mut ssl = Ssl::new(context)?;
    let ip = host.parse::<IpAddr>().ok();
    if ip.is_none() {
        ssl.set_hostname(host)?;
    }
    if validate_name {
        match (server_names.split_first(), ip) {
            (Some((first, others)), _) => {
                let param = ssl.param_mut();
                param.set_host(first)?;
                for name in others {
                    add_host(param, name)?;
                }
            }
            (None, Some(ip)) => ssl.param_mut().set_ip(ip)?,
            (None, None) => ssl.param_mut().set_host(host)?,
        }
    }
    if let Some(session) = session {
        // SAFETY: `set_session` needs a session made under an equivalent context. Sessions
        // are keyed by the pool key (address, SNI, credential identity = thumbprint and chain
        // digest, validation flags); the publisher keeps one context per (credential
        // identity, flags), so one per pool key, and the session store (upstream::sessions)
        // hands out a session only to the very context object it was made under.
        unsafe { ssl.set_session(session)? };
    }
    Ok(ssl)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Contexts on the system store share one loaded store (one CA bundle parse per process,
    /// not per certificate upload); a backend with its own CAs gets a store of its own.
    #[test]
    fn the_system_store_is_loaded_once_and_shared() {
        let system = Verification {
            validate_chain: true,
            validate_name: true,
            ..Verification::default()
        };
        let a = build_context(None, &system).unwrap();
        let b = build_context(None, &system).unwrap();
        assert_eq!(a.cert_store().as_ptr(), b.cert_store().as_ptr());
        let pki = testkit::Pki::new("client-store").unwrap();
        pki.self_signed(
            "ca",
            &testkit::Cert::ca("/CN=Own CA", testkit::KeyType::P256),
        )
        .unwrap();
        let anchor = X509::from_pem(&pki.read("ca.pem").unwrap()).unwrap();
        let own = Verification {
            anchors: Some(vec![anchor]),
            ..system
        };
        let c = build_context(None, &own).unwrap();
        assert_ne!(a.cert_store().as_ptr(), c.cert_store().as_ptr());
    }
}
