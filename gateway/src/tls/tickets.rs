//! Session-ticket keys for downstream resumption, with rotation.
//!
//! One `TicketKeys` serves the one `SslContext` all workers share, so a ticket issued by one
//! worker resumes on any other. Rotation makes a new key current every period; the previous
//! key still decrypts (and the client gets a fresh ticket), so no client loses resumption at a
//! rotation. Keys live only in memory and never reach a log or `Debug` output.

use std::sync::Arc;

use arc_swap::ArcSwap;
use boring::hash::MessageDigest;
use boring::hmac::HmacCtxRef;
use boring::ssl::{SslContextBuilder, SslRef, TicketKeyCallbackResult};
use boring::symm::{Cipher, CipherCtxRef};

/// BoringSSL's EVP_MAX_IV_LENGTH: the size of the IV buffer the ticket callback receives.
const IV_LEN: usize = 16;

/// One ticket key: a public name that goes into each ticket, and its secrets.
struct TicketKey {
    name: [u8; 16],
    aes_key: [u8; 32],
    hmac_key: [u8; 32],
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
            let digest = hasher.finish()?;
            let mut out = [0u8; 32];
            out.copy_from_slice(&digest);
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
        f.write_str("TicketKeys(<redacted>)")
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
