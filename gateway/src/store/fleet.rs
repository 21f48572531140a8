//! The fleet's own records in the shared store, both sealed with the master key like
//! private keys (AES-256-GCM, a fixed associated-data label each):
//!
//! - the **master-key check**: a known text sealed by the first node. A node whose master
//!   key cannot open it has another key than the fleet's: it refuses to start and writes
//!   nothing (its certificates would be unreadable to the others, and theirs to it);
//! - the **session-ticket keys**: the current and the previous secret from which every node
//!   derives the same ticket keys, and when the current one became current. One node
//!   rotates (a transaction on the record's revision decides which); every node installs
//!   what the watch brings.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{MasterKey, StoreError};
use crate::secret::Secret;

const KEY_CHECK_AAD: &[u8] = b"edgegw fleet master-key check";
const KEY_CHECK_TEXT: &[u8] = b"edgegw: this fleet's master key";
const TICKET_KEYS_AAD: &[u8] = b"edgegw fleet ticket keys";

/// Schema of the ticket-key record this build writes and reads.
pub const TICKET_KEYS_SCHEMA: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Sealed {
    nonce: String,
    sealed: String,
}

impl Sealed {
    fn seal(key: &MasterKey, aad: &[u8], plaintext: &[u8]) -> Result<Self, StoreError> {
        let (nonce, sealed) = key.seal(aad, plaintext)?;
        Ok(Self {
            nonce: BASE64.encode(nonce),
            sealed: BASE64.encode(sealed),
        })
    }

    fn open(&self, key: &MasterKey, aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        let bad = || StoreError::Corrupt("a sealed fleet record is not valid base64".into());
        let nonce = BASE64.decode(&self.nonce).map_err(|_| bad())?;
        let sealed = BASE64.decode(&self.sealed).map_err(|_| bad())?;
        key.open(aad, &nonce, &sealed)
    }
}

/// The master-key check record, sealed with `key`.
pub fn key_check(key: &MasterKey) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(&Sealed::seal(key, KEY_CHECK_AAD, KEY_CHECK_TEXT)?)
        .map_err(|e| StoreError::Corrupt(format!("encoding the key check: {e}")))
}

/// Whether `key` opens the fleet's key check (a clear error when it does not).
pub fn verify_key_check(key: &MasterKey, record: &[u8]) -> Result<(), StoreError> {
    let sealed: Sealed = serde_json::from_slice(record)
        .map_err(|e| StoreError::Corrupt(format!("the fleet's master-key check: {e}")))?;
    match sealed.open(key, KEY_CHECK_AAD) {
        Ok(text) if text == KEY_CHECK_TEXT => Ok(()),
        _ => Err(StoreError::MasterKey(
            "this node's master key is not the fleet's: the store's records were sealed with another key. Give every node of the fleet the same key (store.master_key_file or EDGEGW_MASTER_KEY); this node writes nothing until it has it".into(),
        )),
    }
}

/// The fleet's ticket-key secrets.
pub struct TicketSecrets {
    /// The secret new tickets are issued under.
    pub current: Secret<Vec<u8>>,
    /// The one before it: its tickets still resume (and get a fresh ticket).
    pub previous: Option<Secret<Vec<u8>>>,
    /// When `current` became current (Unix seconds).
    pub rotated_at: i64,
}

impl std::fmt::Debug for TicketSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketSecrets")
            .field("rotated_at", &self.rotated_at)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StoredTicketKeys {
    schema: u32,
    rotated_at: i64,
    current: Sealed,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<Sealed>,
}

fn random_secret() -> Result<Secret<Vec<u8>>, StoreError> {
    let mut bytes = vec![0u8; 32];
    boring::rand::rand_bytes(&mut bytes)
        .map_err(|e| StoreError::Crypto(format!("random ticket secret: {e}")))?;
    Ok(Secret::new(bytes))
}

impl TicketSecrets {
    /// A first secret, current from `now`.
    pub fn first(now: i64) -> Result<Self, StoreError> {
        Ok(Self {
            current: random_secret()?,
            previous: None,
            rotated_at: now,
        })
    }

    /// The next rotation: a new current secret; this one's current becomes the previous.
    pub fn rotated(&self, now: i64) -> Result<Self, StoreError> {
        Ok(Self {
            current: random_secret()?,
            previous: Some(Secret::new(self.current.expose().clone())),
            rotated_at: now,
        })
    }

    /// The sealed record.
    pub fn seal(&self, key: &MasterKey) -> Result<Vec<u8>, StoreError> {
        let record = StoredTicketKeys {
            schema: TICKET_KEYS_SCHEMA,
            rotated_at: self.rotated_at,
            current: Sealed::seal(key, TICKET_KEYS_AAD, self.current.expose())?,
            previous: self
                .previous
                .as_ref()
                .map(|p| Sealed::seal(key, TICKET_KEYS_AAD, p.expose()))
                .transpose()?,
        };
        serde_json::to_vec(&record)
            .map_err(|e| StoreError::Corrupt(format!("encoding the ticket keys: {e}")))
    }

    /// Opens a sealed record.
    pub fn open(key: &MasterKey, record: &[u8]) -> Result<Self, StoreError> {
        let stored: StoredTicketKeys = serde_json::from_slice(record)
            .map_err(|e| StoreError::Corrupt(format!("the fleet's ticket keys: {e}")))?;
        if stored.schema != TICKET_KEYS_SCHEMA {
            return Err(StoreError::Corrupt(format!(
                "the fleet's ticket keys have schema {}, this edgegw reads {TICKET_KEYS_SCHEMA}",
                stored.schema
            )));
        }
        Ok(Self {
            current: Secret::new(stored.current.open(key, TICKET_KEYS_AAD)?),
            previous: stored
                .previous
                .map(|p| p.open(key, TICKET_KEYS_AAD).map(Secret::new))
                .transpose()?,
            rotated_at: stored.rotated_at,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_key_check_tells_keys_apart() {
        let a = MasterKey::from_bytes([1; 32]);
        let b = MasterKey::from_bytes([2; 32]);
        let record = key_check(&a).unwrap();
        verify_key_check(&a, &record).unwrap();
        let e = verify_key_check(&b, &record).unwrap_err();
        assert!(e.to_string().contains("not the fleet's"), "{e}");
    }

    #[test]
    fn ticket_secrets_rotate_and_stay_sealed() {
        let key = MasterKey::from_bytes([3; 32]);
        let first = TicketSecrets::first(100).unwrap();
        let second = first.rotated(200).unwrap();
        assert_eq!(
            second.previous.as_ref().unwrap().expose(),
            first.current.expose()
        );
        assert_ne!(second.current.expose(), first.current.expose());
        let record = second.seal(&key).unwrap();
        let text = String::from_utf8(record.clone()).unwrap();
        for secret in [second.current.expose(), first.current.expose()] {
            assert!(!text.contains(&BASE64.encode(secret)));
        }
        let opened = TicketSecrets::open(&key, &record).unwrap();
        assert_eq!(opened.current.expose(), second.current.expose());
        assert_eq!(opened.rotated_at, 200);
        assert!(TicketSecrets::open(&MasterKey::from_bytes([4; 32]), &record).is_err());
        assert!(!format!("{opened:?}").contains("current:"));
    }
}
