//! The durable resource store and the master key.
//!
//! This module owns: the [`Store`] trait (an object-safe store of serialized resource
//! records with revisions and checked transactions, durable before a commit returns), its
//! implementations on redb ([`embedded`]) and on etcd ([`etcd`], shared by a fleet), the
//! [`MasterKey`] that seals private keys at rest (AES-256-GCM), in [`records`] the
//! versioned records it keeps of each resource, and in [`fleet`] the fleet's own sealed
//! records (session-ticket keys, the master-key check).

pub mod cache;
pub mod embedded;
pub mod etcd;
pub mod fleet;
pub mod records;

use std::fmt;
use std::io::{self, Write as _};
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use boring::symm::{decrypt_aead, encrypt_aead, Cipher};

/// The kinds of record in the store. Policies live inside their API's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A client certificate (chain + sealed private key).
    Certificate,
    /// A CA certificate (trust anchors; public).
    CaCertificate,
    /// A backend.
    Backend,
    /// An API, with its policy.
    Api,
}

impl Kind {
    /// Every kind, in load order (certificates before the backends that name them, ...).
    pub const ALL: [Kind; 4] = [
        Kind::Certificate,
        Kind::CaCertificate,
        Kind::Backend,
        Kind::Api,
    ];

    /// A stable name: `certificate`, `caCertificate`, `backend`, `api`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Certificate => "certificate",
            Kind::CaCertificate => "caCertificate",
            Kind::Backend => "backend",
            Kind::Api => "api",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the store and of the master key.
#[derive(Debug)]
pub enum StoreError {
    /// The configured store kind is not available.
    Unsupported(String),
    /// The backing database failed (I/O, lock, corruption detected by the engine).
    Backend(String),
    /// A record could not be decoded; the text names it.
    Corrupt(String),
    /// Sealing or opening a private key failed.
    Crypto(String),
    /// The master key could not be read, parsed or created, or it is not the fleet's.
    MasterKey(String),
    /// File-system error, with the path.
    Io(String),
    /// The file system of the data directory is full (or the quota used up): nothing was
    /// written; the same write can succeed once space is freed (507 `InsufficientStorage`).
    StorageFull(String),
    /// A condition of a [`Transaction`] did not hold (another writer changed what the write
    /// was checked against): nothing was written.
    Conflict(String),
    /// The store could not be reached in time (etcd down): nothing was written.
    Unavailable(String),
    /// A commit was sent but not confirmed in time (the connection broke or the answer did
    /// not come): it may or may not have been applied.
    Unconfirmed(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unsupported(m) => write!(f, "store not supported: {m}"),
            StoreError::Backend(m) => write!(f, "store failure: {m}"),
            StoreError::Corrupt(m) => write!(f, "corrupt store record: {m}"),
            StoreError::Crypto(m) => write!(f, "key sealing failed: {m}"),
            StoreError::MasterKey(m) => write!(f, "master key: {m}"),
            StoreError::Io(m) => write!(f, "{m}"),
            StoreError::StorageFull(m) => write!(f, "no space left for the store: {m}"),
            StoreError::Conflict(m) => write!(f, "write conflict: {m}"),
            StoreError::Unavailable(m) => write!(f, "store unavailable: {m}"),
            StoreError::Unconfirmed(m) => write!(f, "store did not confirm the commit: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// One record as the store holds it: serialized bytes (see [`records`]) and the store
/// revision that last wrote it (what `ETag` shows and `If-Match` compares).
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub id: String,
    pub value: Vec<u8>,
    pub revision: u64,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value of a certificate record holds a sealed key: not worth printing.
        f.debug_struct("Record")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("bytes", &self.value.len())
            .field("revision", &self.revision)
            .finish()
    }
}

/// Every record of a store as of one store revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    /// Certificates first, then backends, then APIs, each sorted by id.
    pub records: Vec<Record>,
    /// Every change up to this revision is in `records`.
    pub revision: u64,
}

/// What a write was checked against; a [`Transaction`] commits only if all still hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The record was last written at `revision`; 0 means it does not exist.
    At {
        kind: Kind,
        id: String,
        revision: u64,
    },
    /// No record of `kind` was created or replaced after `revision`. Deletions do not
    /// count: removing a record cannot create a reference to anything, so no check of a
    /// write (in use, path conflict) can be invalidated by one.
    NoneWrittenAfter { kind: Kind, revision: u64 },
}

/// One change of a [`Transaction`].
#[derive(Clone, PartialEq, Eq)]
pub enum Change {
    Put {
        kind: Kind,
        id: String,
        value: Vec<u8>,
    },
    Delete {
        kind: Kind,
        id: String,
    },
}

impl Change {
    /// The kind and id the change is about.
    pub fn key(&self) -> (Kind, &str) {
        match self {
            Change::Put { kind, id, .. } | Change::Delete { kind, id } => (*kind, id),
        }
    }
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Put { kind, id, value } => {
                write!(f, "Put({kind}/{id}, {} bytes)", value.len())
            }
            Change::Delete { kind, id } => write!(f, "Delete({kind}/{id})"),
        }
    }
}

/// One change as the control plane applies it to what it holds in memory: from its own
/// commit (embedded store) or from the store's watch (etcd), in revision order.
#[derive(Clone, PartialEq, Eq)]
pub struct Update {
    pub kind: Kind,
    pub id: String,
    /// The new record; `None`: deleted.
    pub value: Option<Vec<u8>>,
    /// The store revision of the change.
    pub revision: u64,
}

impl fmt::Debug for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.value.is_some() {
            "put"
        } else {
            "delete"
        };
        write!(
            f,
            "Update({what} {}/{} @{})",
            self.kind, self.id, self.revision
        )
    }
}

impl Transaction {
    /// A put of one record, if `conditions` hold.
    pub fn put(
        conditions: Vec<Condition>,
        kind: Kind,
        id: impl Into<String>,
        value: Vec<u8>,
    ) -> Self {
        Self {
            conditions,
            changes: vec![Change::Put {
                kind,
                id: id.into(),
                value,
            }],
        }
    }

    /// A delete of one record, if `conditions` hold.
    pub fn delete(conditions: Vec<Condition>, kind: Kind, id: impl Into<String>) -> Self {
        Self {
            conditions,
            changes: vec![Change::Delete {
                kind,
                id: id.into(),
            }],
        }
    }

    /// The updates this transaction made, once committed at `revision`.
    pub fn updates(&self, revision: u64) -> Vec<Update> {
        self.changes
            .iter()
            .map(|c| {
                let (kind, id) = c.key();
                Update {
                    kind,
                    id: id.to_owned(),
                    value: match c {
                        Change::Put { value, .. } => Some(value.clone()),
                        Change::Delete { .. } => None,
                    },
                    revision,
                }
            })
            .collect()
    }
}

/// Changes applied together, if and only if every condition holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    pub conditions: Vec<Condition>,
    pub changes: Vec<Change>,
}

/// A durable store of serialized resource records, keyed by kind and id, with a store-wide
/// revision that grows with every committed transaction.
///
/// Object safe; every commit is durable (fsynced, or in etcd: replicated to a quorum)
/// before it returns `Ok`. The control plane checks a write against what it has in memory
/// and states what it checked as [`Condition`]s, so a concurrent writer (another node of a
/// fleet) can never slip in between the check and the write.
pub trait Store: Send + Sync {
    /// Every record, with the revision it was read at.
    fn load(&self) -> Result<Contents, StoreError>;
    /// Applies `transaction` atomically if all its conditions hold: returns the new store
    /// revision; [`StoreError::Conflict`] (nothing written) when one does not.
    fn commit(&self, transaction: &Transaction) -> Result<u64, StoreError>;
    /// Whether other processes write to this store too (etcd). Then the control plane learns
    /// of every change, its own included, from the store's watch, in revision order; else
    /// it applies its own commits directly.
    fn shared(&self) -> bool {
        false
    }
}

/// Opens the embedded store in `data_dir` (creating the directory and database when needed).
pub fn open_embedded(data_dir: &Path) -> Result<embedded::EmbeddedStore, StoreError> {
    embedded::EmbeddedStore::open(&data_dir.join(embedded::FILE_NAME))
}

/// The 32-byte key that seals private keys at rest (AES-256-GCM). `Debug` never shows it.
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// The file name of a generated master key inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

impl MasterKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Decodes base64 of exactly 32 bytes (surrounding whitespace ignored). `source`
    /// names where the text came from, for the error message.
    pub fn from_base64(text: &str, source: &str) -> Result<Self, StoreError> {
        let mut raw = BASE64
            .decode(text.trim())
            .map_err(|_| StoreError::MasterKey(format!("{source} is not valid base64")))?;
        let result = if raw.len() == 32 {
            let mut bytes = [0u8; 32];
            bytes.copy_from_slice(&raw);
            Ok(Self(bytes))
        } else {
            Err(StoreError::MasterKey(format!(
                "{source} must be base64 of exactly 32 bytes, it decodes to {} bytes",
                raw.len()
            )))
        };
        raw.fill(0);
        result
    }

    /// Resolves the master key: the value of `EDGEGW_MASTER_KEY` wins (when set and not
    /// empty), then `key_file` (when given and not empty), else `data_dir/master.key`,
    /// generated once (mode 0600) and reused afterwards.
    pub fn resolve(
        env_value: Option<String>,
        key_file: Option<&Path>,
        data_dir: &Path,
    ) -> Result<MasterKey, StoreError> {
        if let Some(v) = env_value.filter(|v| !v.trim().is_empty()) {
            return Self::from_base64(&v, "EDGEGW_MASTER_KEY");
        }
        if let Some(path) = key_file.filter(|p| !p.as_os_str().is_empty()) {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StoreError::MasterKey(format!("cannot read {}: {e}", path.display()))
            })?;
            return Self::from_base64(&text, &format!("the master key file {}", path.display()));
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        let text = read_or_create_secret(&path, || {
            let mut bytes = [0u8; 32];
            boring::rand::rand_bytes(&mut bytes).map_err(io::Error::other)?;
            let text = BASE64.encode(bytes);
            bytes.fill(0);
            Ok(text)
        })
        .map_err(|e| StoreError::MasterKey(format!("{}: {e}", path.display())))?;
        Self::from_base64(&text, &format!("the master key file {}", path.display()))
    }

    /// Encrypts `plaintext` with a fresh random 12-byte nonce; returns the nonce and the
    /// ciphertext followed by the 16-byte tag.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<([u8; 12], Vec<u8>), StoreError> {
        let mut nonce = [0u8; 12];
        boring::rand::rand_bytes(&mut nonce)
            .map_err(|e| StoreError::Crypto(format!("random nonce: {e}")))?;
        let mut tag = [0u8; 16];
        let mut out = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.0,
            Some(&nonce),
            aad,
            plaintext,
            &mut tag,
        )
        .map_err(|e| StoreError::Crypto(format!("AES-256-GCM: {e}")))?;
        out.extend_from_slice(&tag);
        Ok((nonce, out))
    }

    /// Decrypts what [`MasterKey::seal`] produced; fails when the key, nonce, AAD or data
    /// do not match.
    pub fn open(&self, aad: &[u8], nonce: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if nonce.len() != 12 || sealed.len() < 16 {
            return Err(StoreError::Crypto("sealed data too short".to_owned()));
        }
        let (data, tag) = sealed.split_at(sealed.len() - 16);
        decrypt_aead(Cipher::aes_256_gcm(), &self.0, Some(nonce), aad, data, tag).map_err(|_| {
            StoreError::Crypto(
                "cannot decrypt the private key (wrong master key or damaged record)".to_owned(),
            )
        })
    }
}

/// Reads a secret text file, or creates it (mode 0600, fsynced, atomically renamed into
/// place) with `generate()` when it does not exist. The content is returned trimmed; an
/// existing but empty file is an error.
pub fn read_or_create_secret(
    path: &Path,
    generate: impl FnOnce() -> io::Result<String>,
) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim().to_owned();
            if text.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the file exists but is empty",
                ));
            }
            return Ok(text);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::files::create_private_dir_all(dir)?;
    let text = generate()?;
    let tmp = path.with_extension("tmp");
    // A leftover of an interrupted start may have any mode: a fresh file gets 0600.
    let _ = std::fs::remove_file(&tmp);
    {
        let mut file = crate::files::private_options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Make the rename durable; not every file system supports fsync on a directory.
        let _ = d.sync_all();
    }
    Ok(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use testkit::temp_dir;

    #[test]
    fn master_key_resolution_order_and_errors() {
        let dir = temp_dir("mk").unwrap();
        let env_key = BASE64.encode([1u8; 32]);
        let file_key = BASE64.encode([2u8; 32]);
        let file = dir.path().join("given.key");
        std::fs::write(&file, format!("{file_key}\n")).unwrap();
        let seal = |k: &MasterKey| k.seal(b"a", b"hello").unwrap();
        let opens = |k: &MasterKey, s: &([u8; 12], Vec<u8>)| k.open(b"a", &s.0, &s.1).is_ok();

        let k = MasterKey::resolve(Some(env_key.clone()), Some(&file), dir.path()).unwrap();
        assert!(opens(&MasterKey::from_bytes([1; 32]), &seal(&k)));
        let k = MasterKey::resolve(None, Some(&file), dir.path()).unwrap();
        assert!(opens(&MasterKey::from_bytes([2; 32]), &seal(&k)));
        let k = MasterKey::resolve(Some(String::new()), Some(&file), dir.path()).unwrap();
        assert!(opens(&MasterKey::from_bytes([2; 32]), &seal(&k)));

        // Generated once, 0600, reused.
        let gen = dir.path().join("data");
        let k1 = MasterKey::resolve(None, None, &gen).unwrap();
        let k2 = MasterKey::resolve(None, Some(Path::new("")), &gen).unwrap();
        assert!(opens(&k2, &seal(&k1)));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(gen.join(MASTER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let e = MasterKey::resolve(Some("not base64!".into()), None, dir.path()).unwrap_err();
        assert!(
            e.to_string()
                .contains("EDGEGW_MASTER_KEY is not valid base64"),
            "{e}"
        );
        let e = MasterKey::resolve(Some(BASE64.encode([0u8; 16])), None, dir.path()).unwrap_err();
        assert!(e.to_string().contains("exactly 32 bytes"), "{e}");
        let e =
            MasterKey::resolve(None, Some(&dir.path().join("missing")), dir.path()).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        assert_eq!(format!("{k1:?}"), "MasterKey(<redacted>)");
    }

    #[test]
    fn sealing_detects_tampering() {
        let k = MasterKey::from_bytes([9; 32]);
        let (nonce, mut sealed) = k.seal(b"id", b"secret bytes").unwrap();
        assert_eq!(k.open(b"id", &nonce, &sealed).unwrap(), b"secret bytes");
        assert!(k.open(b"other", &nonce, &sealed).is_err());
        sealed[0] ^= 1;
        assert!(k.open(b"id", &nonce, &sealed).is_err());
        assert!(k.open(b"id", &nonce[..4], &sealed).is_err());
        assert!(k.open(b"id", &nonce, &[]).is_err());
        let (n2, _) = k.seal(b"id", b"secret bytes").unwrap();
        assert_ne!(nonce, n2);
    }
}
