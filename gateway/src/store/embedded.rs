//! The embedded store: one redb file (`<data_dir>/edgegw.redb`), one table per [`Kind`].
//! Every write is its own transaction committed with `Durability::Immediate` (fsync).

use std::fmt::Display;
use std::path::Path;

use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::{Kind, Store, StoreError};

/// The database file name inside the data directory.
pub const FILE_NAME: &str = "edgegw.redb";

const CERTIFICATES: TableDefinition<&str, &[u8]> = TableDefinition::new("certificates");
const BACKENDS: TableDefinition<&str, &[u8]> = TableDefinition::new("backends");
const APIS: TableDefinition<&str, &[u8]> = TableDefinition::new("apis");

fn table(kind: Kind) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match kind {
        Kind::Certificate => CERTIFICATES,
        Kind::Backend => BACKENDS,
        Kind::Api => APIS,
    }
}

fn failed<E: Display>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Backend(format!("{what}: {e}"))
}

/// A [`Store`] on a local redb file.
pub struct EmbeddedStore {
    db: Database,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the database at `path`, creating its directory and tables.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Io(format!(
                    "cannot create data directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let db = Database::create(path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        let store = Self { db };
        store.write(|tx| {
            for kind in Kind::ALL {
                tx.open_table(table(kind))
                    .map_err(failed("creating a table"))?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(failed("starting a write"))?;
        tx.set_durability(Durability::Immediate);
        f(&tx)?;
        tx.commit().map_err(failed("committing"))
    }
}

impl Store for EmbeddedStore {
    fn load_all(&self) -> Result<Vec<(Kind, String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(failed("starting a read"))?;
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let t = tx
                .open_table(table(kind))
                .map_err(failed("opening a table"))?;
            for item in t.iter().map_err(failed("reading"))? {
                let (k, v) = item.map_err(failed("reading"))?;
                out.push((kind, k.value().to_owned(), v.value().to_vec()));
            }
        }
        Ok(out)
    }

    fn put(&self, kind: Kind, id: &str, record: &[u8]) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut t = tx
                .open_table(table(kind))
                .map_err(failed("opening a table"))?;
            t.insert(id, record).map_err(failed("writing"))?;
            Ok(())
        })
    }

    fn delete(&self, kind: Kind, id: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut t = tx
                .open_table(table(kind))
                .map_err(failed("opening a table"))?;
            t.remove(id).map_err(failed("deleting"))?;
            Ok(())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{open, StoreKind, StoreSettings};
    use testkit::temp_dir;

    #[test]
    fn reopen_keeps_data() {
        let dir = temp_dir("redb").unwrap();
        let settings = StoreSettings {
            kind: StoreKind::Embedded,
            data_dir: dir.path().join("nested"),
            etcd_endpoints: vec![],
            etcd_prefix: String::new(),
        };
        {
            let s = open(&settings).unwrap();
            assert!(s.load_all().unwrap().is_empty());
            s.put(Kind::Api, "a1", b"api-1").unwrap();
            s.put(Kind::Certificate, "c1", b"cert-1").unwrap();
            s.put(Kind::Backend, "b1", b"backend-1").unwrap();
            s.put(Kind::Backend, "b0", b"backend-0").unwrap();
            s.put(Kind::Backend, "b0", b"backend-0b").unwrap();
            s.put(Kind::Backend, "gone", b"x").unwrap();
            s.delete(Kind::Backend, "gone").unwrap();
            s.delete(Kind::Backend, "never-there").unwrap();
        }
        let s = open(&settings).unwrap();
        let all = s.load_all().unwrap();
        assert_eq!(
            all,
            vec![
                (Kind::Certificate, "c1".to_owned(), b"cert-1".to_vec()),
                (Kind::Backend, "b0".to_owned(), b"backend-0b".to_vec()),
                (Kind::Backend, "b1".to_owned(), b"backend-1".to_vec()),
                (Kind::Api, "a1".to_owned(), b"api-1".to_vec()),
            ]
        );
        assert!(dir.path().join("nested").join(FILE_NAME).exists());
    }
}
