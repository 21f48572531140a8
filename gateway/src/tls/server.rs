//! The downstream TLS context: one `SslAcceptor` shared by every worker (so session tickets
//! issued by one worker resume on any other), its certificate, groups and ticket keys.

use std::io;
use std::path::{Path, PathBuf};

use boring::asn1::Asn1Time;
use boring::bn::{BigNum, MsbOption};
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::ssl::{
    AlpnError, SslAcceptor, SslMethod, SslOptions, SslRef, SslSessionCacheMode, SslVerifyMode,
    SslVersion,
};
use boring::x509::extension::{BasicConstraints, SubjectAlternativeName};
use boring::x509::store::{X509Store, X509StoreBuilder};
use boring::x509::verify::X509VerifyFlags;
use boring::x509::{X509NameBuilder, X509};
use foreign_types::ForeignTypeRef as _;

use super::tickets::TicketKeys;
use crate::config::ClientCertificates;
use crate::secret::Secret;

/// What the listener's TLS needs from the configuration.
pub struct ServerTlsSettings<'a> {
    pub certificate: Option<&'a Path>,
    pub private_key: Option<&'a Path>,
    pub data_dir: &'a Path,
    pub session_tickets: bool,
    pub key_exchange_groups: &'a [String],
    /// `listener.alpn`: protocols offered by ALPN, server preference first (validated
    /// names: "h2", "http/1.1").
    pub alpn: &'a [String],
    /// Whether callers are asked for a certificate (`listener.client_certificates`).
    pub client_certificates: ClientCertificates,
}

#[derive(Debug)]
pub struct ServerTlsError(pub String);

impl std::fmt::Display for ServerTlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerTlsError {}

fn err(context: &str, e: impl std::fmt::Display) -> ServerTlsError {
    ServerTlsError(format!("{context}: {e}"))
}

/// The ALPN wire form (length-prefixed names) of `protocols`, in order.
fn alpn_wire(protocols: &[String]) -> Result<Vec<u8>, ServerTlsError> {
    let mut wire = Vec::new();
    for p in protocols {
        let len = u8::try_from(p.len())
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| ServerTlsError(format!("listener.alpn: invalid protocol {p:?}")))?;
        wire.push(len);
        wire.extend_from_slice(p.as_bytes());
    }
    Ok(wire)
}

/// The first of our protocols (server preference order, RFC 7301 §3.2) that the client
/// offered, as a slice of the client's list.
fn select_alpn<'c>(ours: &[u8], client: &'c [u8]) -> Option<&'c [u8]> {
    let mut rest = ours;
    while let Some((&len, tail)) = rest.split_first() {
        let (name, after) = tail.split_at_checked(usize::from(len))?;
        rest = after;
        let mut theirs = client;
        while let Some((&clen, ctail)) = theirs.split_first() {
            let (cname, cafter) = ctail.split_at_checked(usize::from(clen))?;
            if cname == name {
                return Some(cname);
            }
            theirs = cafter;
        }
    }
    None
}

/// Builds the shared acceptor. Ticket keys are installed when tickets are on.
pub fn build_acceptor(
    settings: &ServerTlsSettings<'_>,
    tickets: &TicketKeys,
) -> Result<SslAcceptor, ServerTlsError> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
        .map_err(|e| err("creating the TLS context", e))?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(|e| err("setting the TLS version", e))?;
    let (cert_path, key_path) = match (settings.certificate, settings.private_key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        _ => ensure_self_signed(settings.data_dir)?,
    };
    builder
        .set_certificate_chain_file(&cert_path)
        .map_err(|e| {
            err(
                &format!("loading listener.certificate {}", cert_path.display()),
                e,
            )
        })?;
    builder
        .set_private_key_file(&key_path, boring::ssl::SslFiletype::PEM)
        .map_err(|e| {
            err(
                &format!("loading listener.private_key {}", key_path.display()),
                e,
            )
        })?;
    builder.check_private_key().map_err(|e| {
        err(
            "listener.private_key does not match listener.certificate",
            e,
        )
    })?;
    let groups = settings.key_exchange_groups.join(":");
    builder
        .set_curves_list(&groups)
        .map_err(|e| err(&format!("listener.key_exchange_groups {groups:?}"), e))?;
    prefer_cheap_tls13_ciphers(&mut builder)?;
    // Our order wins (boring's `select_next_proto` would follow the client's): with
    // `listener.alpn = ["h2", "http/1.1"]` a client offering both gets h2.
    let alpn = alpn_wire(settings.alpn)?;
    builder.set_alpn_select_callback(move |_, client| {
        select_alpn(&alpn, client).ok_or(AlpnError::NOACK)
    });
    match settings.client_certificates {
        ClientCertificates::Off => {}
        // The CAs are the connection's (`ClientTrust::apply`): they change without a
        // restart. Optional: any certificate passes the handshake, its verdict is kept
        // (`SSL_get_verify_result`, in the session too) for the APIs' policies to judge.
        ClientCertificates::Optional => {
            builder.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
        }
        ClientCertificates::Required => {
            builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
    }
    if settings.session_tickets {
        tickets.install(&mut builder);
        // Tickets only: no server-side session cache shared across cores.
        builder.set_session_cache_mode(SslSessionCacheMode::OFF);
    } else {
        builder.set_options(SslOptions::NO_TICKET);
        builder.set_session_cache_mode(SslSessionCacheMode::OFF);
    }
    Ok(builder.build())
}

/// The CAs callers' certificates are verified against, as one connection applies them:
/// the verify store, and the session id context that ties a session (and the verdict kept
/// in it) to this set of CAs, so that a session verified under another set never resumes.
pub struct ClientTrust {
    store: X509Store,
    session_context: [u8; 32],
}

impl ClientTrust {
    /// The trust for `mode` from the CA certificates' certificates and identities (in
    /// `listener.client_ca_ids` order). In optional mode the store leaves validity dates to
    /// the policy (`validate-not-before`/`-after` may turn them off); required mode checks
    /// them in the handshake.
    pub fn new(
        mode: ClientCertificates,
        cas: &[(&[u8; 32], &[X509])],
    ) -> Result<ClientTrust, boring::error::ErrorStack> {
        let mut store = X509StoreBuilder::new()?;
        let mut context = boring::sha::Sha256::new();
        context.update(mode.as_str().as_bytes());
        for (digest, certificates) in cas {
            context.update(&digest[..]);
            for certificate in certificates.iter() {
                store.add_cert(certificate)?;
            }
        }
        if mode == ClientCertificates::Optional {
            // `boring`'s flag set lacks BoringSSL's X509_V_FLAG_NO_CHECK_TIME.
            let no_check_time = boring_sys::X509_V_FLAG_NO_CHECK_TIME as _;
            store.try_set_flags(X509VerifyFlags::from_bits_retain(no_check_time))?;
        }
        Ok(ClientTrust {
            store: store.build(),
            session_context: context.finish(),
        })
    }

    /// Sets the store and session context on a new server connection.
    pub fn apply(&self, ssl: &mut SslRef) -> Result<(), boring::error::ErrorStack> {
        ssl.set_verify_cert_store(self.store.clone())?;
        // SAFETY: a live SSL the caller owns; BoringSSL copies the (at most 32) bytes.
        let ok = unsafe {
            boring_sys::SSL_set_session_id_context(
                ssl.as_ptr(),
                self.session_context.as_ptr(),
                self.session_context.len(),
            )
        };
        if ok == 1 {
            Ok(())
        } else {
            Err(boring::error::ErrorStack::get())
        }
    }
}

/// True when a failed client handshake failed over the caller's certificate: none was sent
/// where one is required, or it did not verify.
pub fn refused_client_certificate(error: &boring::ssl::Error) -> bool {
    let ssl_library = boring_sys::ERR_LIB_SSL.0 as std::os::raw::c_int;
    let reasons = [
        boring_sys::SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE,
        boring_sys::SSL_R_CERTIFICATE_VERIFY_FAILED,
    ];
    error.ssl_error().is_some_and(|stack| {
        stack
            .errors()
            .iter()
            .any(|e| e.library_code() == ssl_library && reasons.contains(&e.reason_code()))
    })
}

/// TLS 1.3 cipher suites in the server's order: AES-128-GCM-SHA256, then AES-256-GCM-SHA384,
/// then ChaCha20-Poly1305, and one session ticket per handshake instead of two.
///
/// BoringSSL's server default lets the client choose between the AES suites, and OpenSSL
/// clients (curl, wrk, h2load, s_time) put AES-256-GCM-SHA384 first: every handshake then
/// hashes its transcript and derives its keys with SHA-384, which has no CPU instructions
/// on x86 (SHA-256 does), and a profile of resumed wrk connections showed
/// `sha512_block_data_order_nohw` as the hottest function (9 % of edgegw's CPU). Both AES
/// suites give 128-bit security or more; the measurement is in docs/BENCHMARKS.md.
/// A client sends one ticket per new connection, and every resumption brings a fresh ticket,
/// so the second ticket of each handshake (BoringSSL's default) was encrypted and sent for
/// nothing.
fn prefer_cheap_tls13_ciphers(
    builder: &mut boring::ssl::SslAcceptorBuilder,
) -> Result<(), ServerTlsError> {
    let order = [
        boring_sys::SSL_CIPHER_AES_128_GCM_SHA256 as u16,
        boring_sys::SSL_CIPHER_AES_256_GCM_SHA384 as u16,
        boring_sys::SSL_CIPHER_CHACHA20_POLY1305_SHA256 as u16,
    ];
    let ctx = builder.as_ptr();
    // SAFETY: `ctx` is the live SSL_CTX the builder owns; the call copies `order` (a valid
    // array of `order.len()` ids; NULL flags = a strict order) into the context and keeps
    // no pointer to it. SSL_CTX_set_num_tickets only stores a number in the context.
    let (ciphers_ok, tickets_ok) = unsafe {
        (
            boring_sys::SSL_CTX_set1_tls13_ciphers(
                ctx,
                order.as_ptr(),
                std::ptr::null(),
                order.len(),
            ),
            boring_sys::SSL_CTX_set_num_tickets(ctx, 1),
        )
    };
    if ciphers_ok != 1 || tickets_ok != 1 {
        return Err(ServerTlsError(
            "setting the TLS 1.3 cipher order and ticket count failed".into(),
        ));
    }
    Ok(())
}

/// The generated listener certificate: made once into the data dir, reused afterwards.
fn ensure_self_signed(data_dir: &Path) -> Result<(PathBuf, PathBuf), ServerTlsError> {
    let cert_path = data_dir.join("listener.crt");
    let key_path = data_dir.join("listener.key");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let key = generate_p256_key().map_err(|e| err("generating the listener key", e))?;
    let cert = self_signed_cert(&key, "localhost")
        .map_err(|e| err("generating the listener certificate", e))?;
    // Wiped after writing: the key file is the only copy this process needs.
    let key_pem = Secret::new(
        key.private_key_to_pem_pkcs8()
            .map_err(|e| err("encoding the key", e))?,
    );
    let cert_pem = cert
        .to_pem()
        .map_err(|e| err("encoding the certificate", e))?;
    crate::files::create_private_dir_all(data_dir)
        .map_err(|e| err(&format!("creating {}", data_dir.display()), e))?;
    write_private(&key_path, key_pem.expose())
        .map_err(|e| err(&format!("writing {}", key_path.display()), e))?;
    // Public, but in the data dir like everything else: owner only.
    write_private(&cert_path, &cert_pem)
        .map_err(|e| err(&format!("writing {}", cert_path.display()), e))?;
    tracing::info!(path = %cert_path.display(), "generated a self-signed P-256 listener certificate");
    Ok((cert_path, key_path))
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut file = crate::files::private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

pub(crate) fn generate_p256_key() -> Result<PKey<Private>, boring::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

pub(crate) fn self_signed_cert(
    key: &PKey<Private>,
    host: &str,
) -> Result<X509, boring::error::ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", host)?;
    let name = name.build();
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(key)?;
    let not_before = Asn1Time::days_from_now(0)?;
    let not_after = Asn1Time::days_from_now(825)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    let constraints = BasicConstraints::new().build()?;
    builder.append_extension(&constraints)?;
    let san = SubjectAlternativeName::new()
        .dns(host)
        .ip("127.0.0.1")
        .build(&builder.x509v3_context(None, None))?;
    builder.append_extension(&san)?;
    builder.sign(key, MessageDigest::sha256())?;
    Ok(builder.build())
}

#[cfg(test)]
mod alpn_tests {
    use super::{alpn_wire, select_alpn};

    fn wire(names: &[&str]) -> Vec<u8> {
        alpn_wire(&names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn the_servers_order_wins() {
        let ours = wire(&["h2", "http/1.1"]);
        let both = wire(&["http/1.1", "h2"]);
        assert_eq!(select_alpn(&ours, &both), Some(&b"h2"[..]));
        let ours = wire(&["http/1.1", "h2"]);
        assert_eq!(
            select_alpn(&ours, &wire(&["h2", "http/1.1"])),
            Some(&b"http/1.1"[..])
        );
        assert_eq!(select_alpn(&ours, &wire(&["h2"])), Some(&b"h2"[..]));
    }

    #[test]
    fn no_common_protocol_or_a_broken_list_selects_none() {
        let ours = wire(&["http/1.1"]);
        assert_eq!(select_alpn(&ours, &wire(&["h2"])), None);
        assert_eq!(select_alpn(&ours, b"\x09http/1.1"), None);
        assert_eq!(select_alpn(&ours, b""), None);
    }
}
