//! A fleet node's local copy of the shared store: `data_dir/fleet-cache.json`, so that a
//! node started while etcd is down serves the configuration it last had instead of none.
//!
//! It holds the records exactly as etcd does (a certificate's private key sealed with the
//! master key, as in every record) with their revisions and the revision the copy is
//! complete up to; it is written whole, mode 0600, to a temporary file that is fsynced and
//! renamed over the old one, so a crash leaves the old copy or the new one, never half of
//! one. It is only ever read at start, and only when etcd cannot be reached.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{Contents, Kind, Record, StoreError};

/// The file name inside the data directory.
pub const FILE_NAME: &str = "fleet-cache.json";

/// Schema of the file this build writes and reads.
const SCHEMA: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    schema: u32,
    revision: u64,
    records: Vec<CachedRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedRecord {
    kind: String,
    id: String,
    revision: u64,
    /// Base64 of the record bytes.
    value: String,
}

/// The local copy in one data directory.
#[derive(Debug, Clone)]
pub struct LocalCopy {
    path: PathBuf,
}

impl LocalCopy {
    /// The copy in `data_dir` (nothing is read or written yet).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(FILE_NAME),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The copy, or `None` when there is none yet.
    pub fn load(&self) -> Result<Option<Contents>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Io(format!(
                    "cannot read {}: {e}",
                    self.path.display()
                )))
            }
        };
        let corrupt = |why: String| StoreError::Corrupt(format!("{}: {why}", self.path.display()));
        let file: File = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.schema != SCHEMA {
            return Err(corrupt(format!(
                "schema {} is not one this edgegw reads ({SCHEMA})",
                file.schema
            )));
        }
        let mut records = Vec::with_capacity(file.records.len());
        for r in file.records {
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.name() == r.kind)
                .ok_or_else(|| corrupt(format!("unknown kind {:?}", r.kind)))?;
            records.push(Record {
                kind,
                value: BASE64
                    .decode(&r.value)
                    .map_err(|_| corrupt(format!("{kind} {}: bad base64", r.id)))?,
                id: r.id,
                revision: r.revision,
            });
        }
        Ok(Some(Contents {
            records,
            revision: file.revision,
        }))
    }

    /// Replaces the copy with `records`, complete up to `revision`, durably.
    pub fn save<'a>(
        &self,
        records: impl Iterator<Item = &'a Record>,
        revision: u64,
    ) -> Result<(), StoreError> {
        let file = File {
            schema: SCHEMA,
            revision,
            records: records
                .map(|r| CachedRecord {
                    kind: r.kind.name().to_owned(),
                    id: r.id.clone(),
                    revision: r.revision,
                    value: BASE64.encode(&r.value),
                })
                .collect(),
        };
        let io = |e: std::io::Error| StoreError::Io(format!("{}: {e}", self.path.display()));
        let bytes = serde_json::to_vec(&file)
            .map_err(|e| StoreError::Corrupt(format!("encoding the local copy: {e}")))?;
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                // Makes the rename durable where the file system supports it.
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_round_trips_and_replaces_itself() {
        let dir = testkit::temp_dir("fleet-cache").unwrap();
        let copy = LocalCopy::new(dir.path());
        assert!(copy.load().unwrap().is_none());
        let records = vec![
            Record {
                kind: Kind::Certificate,
                id: "c1".into(),
                value: b"{\"sealed\":1}".to_vec(),
                revision: 4,
            },
            Record {
                kind: Kind::Api,
                id: "a".into(),
                value: vec![0, 255, 10],
                revision: 9,
            },
        ];
        copy.save(records.iter(), 12).unwrap();
        let back = copy.load().unwrap().unwrap();
        assert_eq!(back.records, records);
        assert_eq!(back.revision, 12);
        copy.save(records[1..].iter(), 13).unwrap();
        assert_eq!(copy.load().unwrap().unwrap().records.len(), 1);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(copy.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(copy.path(), b"{not json").unwrap();
        let e = copy.load().unwrap_err();
        assert!(e.to_string().contains(FILE_NAME), "{e}");
    }
}
