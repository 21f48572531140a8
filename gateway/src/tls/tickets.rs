//! Session-ticket keys for downstream resumption, with rotation.
//!
//! One `TicketKeys` serves the one `SslContext` all workers share, so a ticket issued by one
//! worker resumes on any other. Rotation makes a new key current every period; the previous
//! key still decrypts (and the client gets a fresh ticket), so no client loses resumption at a
//! rotation. Keys live only in memory, never reach a log or `Debug` output, and are wiped
//! when dropped (see [`TicketKey`]'s `Drop`).

use std::sync::Arc;

use arc_swap::ArcSwap;
use boring::hash::MessageDigest;
use boring::hmac::HmacCtxRef;
use boring::ssl::{SslContextBuilder, SslRef, TicketKeyCallbackResult};
use boring::symm::{Cipher, CipherCtxRef};
use zeroize::Zeroize as _;

use crate::secret::Secret;

/// BoringSSL's EVP_MAX_IV_LENGTH: the size of the IV buffer the ticket callback receives.
const IV_LEN: usize = 16;

/// The format of [`TicketKeys::export`].
const EXPORT_VERSION: u8 = 1;
/// One exported key: name, AES key, HMAC key.
const KEY_BYTES: usize = 16 + 32 + 32;

/// One ticket key: a public name that goes into each ticket, and its secrets. `Debug`
/// shows only the name.
struct TicketKey {
    name: [u8; 16],
    aes_key: [u8; 32],
    hmac_key: [u8; 32],
}

/// Why wipe: whoever has a ticket key and a recorded connection that carried a ticket
/// decrypts the ticket, i.e. the session's resumption secret, and with it every resumed
/// connection of that session: a leaked ticket key breaks forward secrecy after the fact,
/// for as long as its tickets were accepted. Every rotation drops the old key ring (its
/// previous key, and its current key, of which the new ring keeps a copy), and the last
/// `TicketKeys` clone drops the rest; without the wipe those bytes would stay in freed
/// heap memory for a later memory disclosure or core dump to find.
impl Drop for TicketKey {
    fn drop(&mut self) {
        self.aes_key.zeroize();
        self.hmac_key.zeroize();
        self.name.zeroize();
    }
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The name is public (every ticket carries it in clear) and tells keys apart.
        f.debug_struct("TicketKey")
            .field("name", &hex::encode(self.name))
            .field("aes_key", &"<redacted>")
            .field("hmac_key", &"<redacted>")
            .finish()
    }
}

impl TicketKey {
    fn random() -> Result<Self, boring::error::ErrorStack> {
        let mut key = Self {
            name: [0; 16],
            aes_key: [0; 32],
            hmac_key: [0; 32],
        };
        boring::rand::rand_bytes(&mut key.name)?;
        boring::rand::rand_bytes(&mut key.aes_key)?;
        boring::rand::rand_bytes(&mut key.hmac_key)?;
        Ok(key)
    }

    /// A key derived from a shared secret (e.g. a key file given to several processes):
    /// each part is SHA-256 over a label and the secret.
    fn derive(secret: &[u8]) -> Result<Self, boring::error::ErrorStack> {
        let part = |label: &[u8]| -> Result<[u8; 32], boring::error::ErrorStack> {
            let mut hasher = boring::hash::Hasher::new(MessageDigest::sha256())?;
            hasher.update(label)?;
            hasher.update(secret)?;
            let mut digest = hasher.finish()?;
            let mut out = [0u8; 32];
            out.copy_from_slice(&digest);
            (*digest).zeroize();
            Ok(out)
        };
        let mut key = Self {
            name: [0; 16],
            aes_key: part(b"edgegw ticket aes")?,
            hmac_key: part(b"edgegw ticket hmac")?,
        };
        key.name
            .copy_from_slice(&part(b"edgegw ticket name")?[..16]);
        Ok(key)
    }
}

#[derive(Debug)]
struct KeyRing {
    current: TicketKey,
    previous: Option<TicketKey>,
}

/// The rotating set of ticket keys. Cheap to clone; all clones share the keys.
#[derive(Clone)]
pub struct TicketKeys {
    ring: Arc<ArcSwap<KeyRing>>,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TicketKeys")
            .field(&**self.ring.load())
            .finish()
    }
}

impl TicketKeys {
    pub fn random() -> Result<Self, boring::error::ErrorStack> {
        Ok(Self::with_current(TicketKey::random()?))
    }

    /// Fixed keys from a shared secret: processes given the same secret resume each
    /// other's sessions (used by the test backend; the basis for fleets).
    pub fn from_secret(secret: &[u8]) -> Result<Self, boring::error::ErrorStack> {
        Ok(Self::with_current(TicketKey::derive(secret)?))
    }

    fn with_current(current: TicketKey) -> Self {
        let ring = KeyRing {
            current,
            previous: None,
        };
        Self {
            ring: Arc::new(ArcSwap::from_pointee(ring)),
        }
    }

    /// Installs the keys derived from a fleet's shared secrets (every node given the same
    /// secrets derives the same keys): `current` issues tickets, `previous` still decrypts.
    /// Returns whether the current key changed (a rotation, or the first shared keys).
    pub fn install_shared(
        &self,
        current: &[u8],
        previous: Option<&[u8]>,
    ) -> Result<bool, boring::error::ErrorStack> {
        let ring = KeyRing {
            current: TicketKey::derive(current)?,
            previous: previous.map(TicketKey::derive).transpose()?,
        };
        let changed = self.ring.load().current.name != ring.current.name;
        self.ring.store(Arc::new(ring));
        Ok(changed)
    }

    /// The key ring as bytes, for the restart handover to the next process (so that no
    /// client pays a full handshake for a restart): a version byte, then for the current
    /// key and the previous one (when there is one) the name, the AES and the HMAC key.
    /// Wiped when dropped.
    pub fn export(&self) -> Secret<Vec<u8>> {
        let ring = self.ring.load();
        let mut out = vec![EXPORT_VERSION];
        for key in std::iter::once(&ring.current).chain(ring.previous.as_ref()) {
            out.extend_from_slice(&key.name);
            out.extend_from_slice(&key.aes_key);
            out.extend_from_slice(&key.hmac_key);
        }
        Secret::new(out)
    }

    /// A key ring from [`TicketKeys::export`]'s bytes; `None` when they are not such bytes.
    pub fn import(bytes: &[u8]) -> Option<Self> {
        let (&version, keys) = bytes.split_first()?;
        if version != EXPORT_VERSION || keys.is_empty() || keys.len() % KEY_BYTES != 0 {
            return None;
        }
        let mut parsed = keys.chunks(KEY_BYTES).map(|k| {
            let mut key = TicketKey {
                name: [0; 16],
                aes_key: [0; 32],
                hmac_key: [0; 32],
            };
            key.name.copy_from_slice(&k[..16]);
            key.aes_key.copy_from_slice(&k[16..48]);
            key.hmac_key.copy_from_slice(&k[48..]);
            key
        });
        let current = parsed.next()?;
        let previous = parsed.next();
        if parsed.next().is_some() {
            return None;
        }
        Some(Self {
            ring: Arc::new(ArcSwap::from_pointee(KeyRing { current, previous })),
        })
    }

    /// Makes a new random key current; the current one becomes the previous one.
    pub fn rotate(&self) -> Result<(), boring::error::ErrorStack> {
        let fresh = TicketKey::random()?;
        // Only the control plane rotates, so load-then-store cannot race another writer.
        let old = self.ring.load();
        let ring = KeyRing {
            current: fresh,
            previous: Some(copy_key(&old.current)),
        };
        self.ring.store(Arc::new(ring));
        Ok(())
    }

    /// The secret bytes of the current and previous keys, for tests that check they never
    /// appear in output.
    #[cfg(test)]
    pub(crate) fn secrets_for_test(&self) -> Vec<[u8; 32]> {
        let ring = self.ring.load();
        std::iter::once(&ring.current)
            .chain(ring.previous.as_ref())
            .flat_map(|k| [k.aes_key, k.hmac_key])
            .collect()
    }

    /// Installs the ticket callback on a server context.
    pub fn install(&self, builder: &mut SslContextBuilder) {
        let ring = self.ring.clone();
        let callback = move |_ssl: &SslRef,
                             name: &mut [u8; 16],
                             iv: &mut [u8; IV_LEN],
                             cipher: &mut CipherCtxRef,
                             hmac: &mut HmacCtxRef,
                             encrypt: bool|
              -> TicketKeyCallbackResult {
            let ring = ring.load();
            if encrypt {
                if boring::rand::rand_bytes(&mut iv[..]).is_err() {
                    return TicketKeyCallbackResult::Error;
                }
                *name = ring.current.name;
                return init_contexts(&ring.current, iv, cipher, hmac, true)
                    .unwrap_or(TicketKeyCallbackResult::Error);
            }
            let (key, outcome) = if *name == ring.current.name {
                (&ring.current, TicketKeyCallbackResult::Success)
            } else {
                match &ring.previous {
                    Some(previous) if *name == previous.name => {
                        (previous, TicketKeyCallbackResult::DecryptSuccessRenew)
                    }
                    // Unknown key: fall back to a full handshake.
                    _ => return TicketKeyCallbackResult::Noop,
                }
            };
            init_contexts(key, iv, cipher, hmac, false)
                .map(|_| outcome)
                .unwrap_or(TicketKeyCallbackResult::Error)
        };
        // SAFETY: the callback sets the key name, IV, cipher and HMAC contexts exactly as
        // SSL_CTX_set_tlsext_ticket_key_cb requires (AES-256-CBC + HMAC-SHA256, 16-byte IV).
        unsafe { builder.set_ticket_key_callback(callback) };
    }
}

fn copy_key(key: &TicketKey) -> TicketKey {
    TicketKey {
        name: key.name,
        aes_key: key.aes_key,
        hmac_key: key.hmac_key,
    }
}

fn init_contexts(
    key: &TicketKey,
    iv: &[u8; IV_LEN],
    cipher: &mut CipherCtxRef,
    hmac: &mut HmacCtxRef,
    encrypt: bool,
) -> Result<TicketKeyCallbackResult, boring::error::ErrorStack> {
    hmac.init(&key.hmac_key, &MessageDigest::sha256())?;
    if encrypt {
        cipher.init_encrypt(&Cipher::aes_256_cbc(), &key.aes_key, iv)?;
    } else {
        cipher.init_decrypt(&Cipher::aes_256_cbc(), &key.aes_key, iv)?;
    }
    Ok(TicketKeyCallbackResult::Success)
}

#[cfg(test)]
// A test with blocking sockets on plain threads, not an event loop: a Mutex is fine.
#[allow(clippy::disallowed_types)]
mod tests {
    use super::*;
    use crate::tls::server::{build_acceptor, ServerTlsSettings};
    use boring::ssl::{SslConnector, SslMethod, SslSession, SslSessionCacheMode, SslVerifyMode};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Mutex;

    /// Runs one blocking TLS 1.3 connection against `acceptor`, offering `session`; returns
    /// whether it resumed and the newest ticket the server sent.
    fn connect(
        acceptor: &boring::ssl::SslAcceptor,
        session: Option<&SslSession>,
    ) -> (bool, Option<SslSession>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = acceptor.clone();
        let server = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let mut tls = acceptor.accept(tcp).unwrap();
            tls.write_all(b"x").unwrap();
            let mut buf = [0u8; 1];
            let _ = tls.read(&mut buf);
        });
        let latest: Arc<Mutex<Option<SslSession>>> = Arc::default();
        let mut builder = SslConnector::builder(SslMethod::tls()).unwrap();
        builder.set_verify(SslVerifyMode::NONE);
        builder.set_session_cache_mode(SslSessionCacheMode::CLIENT);
        let sink = latest.clone();
        builder.set_new_session_callback(move |_, s| *sink.lock().unwrap() = Some(s));
        let connector = builder.build();
        let mut ssl = connector
            .configure()
            .unwrap()
            .into_ssl("localhost")
            .unwrap();
        if let Some(s) = session {
            unsafe { ssl.set_session(s).unwrap() };
        }
        let mut tls = boring::ssl::SslStream::new(ssl, TcpStream::connect(addr).unwrap()).unwrap();
        tls.connect().unwrap();
        let mut buf = [0u8; 1];
        tls.read_exact(&mut buf).unwrap(); // the ticket arrives with the first read
        let resumed = tls.ssl().session_reused();
        tls.write_all(b"y").unwrap();
        server.join().unwrap();
        let ticket = latest.lock().unwrap().take();
        (resumed, ticket)
    }

    fn acceptor(keys: &TicketKeys, dir: &std::path::Path) -> boring::ssl::SslAcceptor {
        let groups = vec!["X25519".to_owned()];
        let settings = ServerTlsSettings {
            certificate: None,
            private_key: None,
            data_dir: dir,
            session_tickets: true,
            key_exchange_groups: &groups,
            alpn: &["http/1.1".to_owned()],
            client_certificates: crate::config::ClientCertificates::Off,
        };
        build_acceptor(&settings, keys).unwrap()
    }

    #[test]
    fn a_ticket_survives_one_rotation_but_not_two() {
        let dir = testkit::temp_dir("tickets-rotate").unwrap();
        let keys = TicketKeys::random().unwrap();
        let acceptor = acceptor(&keys, dir.path());
        let (resumed, ticket) = connect(&acceptor, None);
        assert!(!resumed);
        let ticket = ticket.expect("server sent a ticket");

        keys.rotate().unwrap();
        let (resumed, renewed) = connect(&acceptor, Some(&ticket));
        assert!(resumed, "the previous key still decrypts");
        assert!(renewed.is_some(), "a renewed ticket is issued");

        keys.rotate().unwrap();
        keys.rotate().unwrap();
        let (resumed, _) = connect(&acceptor, Some(&ticket));
        assert!(!resumed, "a ticket two rotations old is refused");
    }

    #[test]
    fn shared_keys_installed_after_a_rotation_resume_the_previous_keys_tickets() {
        let tmp = testkit::temp_dir("tickets-install").unwrap();
        let (a_keys, b_keys) = (TicketKeys::random().unwrap(), TicketKeys::random().unwrap());
        assert!(a_keys.install_shared(b"one", None).unwrap());
        assert!(
            !a_keys.install_shared(b"one", None).unwrap(),
            "same keys: no change"
        );
        let a = acceptor(&a_keys, tmp.path());
        let b = acceptor(&b_keys, tmp.path());
        let (_, ticket) = connect(&a, None);
        let ticket = ticket.unwrap();
        assert!(!connect(&b, Some(&ticket)).0, "b has other keys");
        // The fleet rotates: b learns the new secret with the previous one.
        assert!(b_keys.install_shared(b"two", Some(b"one")).unwrap());
        assert!(
            connect(&b, Some(&ticket)).0,
            "a ticket of the previous key resumes"
        );
    }

    #[test]
    fn an_exported_ring_resumes_its_tickets_in_the_next_process() {
        let tmp = testkit::temp_dir("tickets-export").unwrap();
        let old = TicketKeys::random().unwrap();
        let (_, before_rotation) = connect(&acceptor(&old, tmp.path()), None);
        old.rotate().unwrap();
        let (_, after_rotation) = connect(&acceptor(&old, tmp.path()), None);
        let next = TicketKeys::import(old.export().expose()).unwrap();
        let next_acceptor = acceptor(&next, tmp.path());
        assert!(
            connect(&next_acceptor, before_rotation.as_ref()).0,
            "previous key"
        );
        assert!(
            connect(&next_acceptor, after_rotation.as_ref()).0,
            "current key"
        );
        for bad in [&[][..], &[1], &[2; 81], &[1; 80], &[1; 242]] {
            assert!(TicketKeys::import(bad).is_none(), "{} bytes", bad.len());
        }
    }

    #[test]
    fn processes_sharing_a_secret_resume_each_others_tickets() {
        let tmp = testkit::temp_dir("tickets-shared").unwrap();
        let dir = tmp.path();
        let a = acceptor(&TicketKeys::from_secret(b"fleet secret").unwrap(), dir);
        let b = acceptor(&TicketKeys::from_secret(b"fleet secret").unwrap(), dir);
        let c = acceptor(&TicketKeys::from_secret(b"another secret").unwrap(), dir);
        let (_, ticket) = connect(&a, None);
        let ticket = ticket.unwrap();
        assert!(connect(&b, Some(&ticket)).0);
        assert!(!connect(&c, Some(&ticket)).0);
    }
}
