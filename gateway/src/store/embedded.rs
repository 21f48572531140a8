//! The embedded store: one redb file (`<data_dir>/edgegw.redb`), one table per [`Kind`],
//! plus the revisions: the store revision of every record and of the store, and the last
//! revision that wrote each kind (what [`Condition::NoneWrittenAfter`] compares). Every
//! commit is one redb write transaction committed with `Durability::Immediate` (fsync);
//! its conditions are checked inside it.
//!
//! A file of edgegw 0.1 has no revisions: at open, every record without one gets
//! revision 1 (so every `ETag` is defined) and the store revision becomes 1.
//!
//! The file is created 0600 (its directory 0700). A write that fails because the file
//! system is full is [`StoreError::StorageFull`] with nothing written (redb commits by
//! switching to the new tree only once all of it is on disk), and the handle is opened
//! again before the next operation (see [`EmbeddedStore`]).

// Control plane only: the lock is taken at start and on the blocking threads admin writes
// run on (see `admin::http::write`); the data plane never reaches the store.
#![allow(clippy::disallowed_types)]

use std::fmt::Display;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};

use super::{Change, Condition, Contents, Kind, Record, Store, StoreError, Transaction};

/// The database file name inside the data directory.
pub const FILE_NAME: &str = "edgegw.redb";

const CERTIFICATES: TableDefinition<&str, &[u8]> = TableDefinition::new("certificates");
const CA_CERTIFICATES: TableDefinition<&str, &[u8]> = TableDefinition::new("ca_certificates");
const BACKENDS: TableDefinition<&str, &[u8]> = TableDefinition::new("backends");
const APIS: TableDefinition<&str, &[u8]> = TableDefinition::new("apis");
/// `"<kind>/<id>"` → the revision that last wrote the record.
const REVISIONS: TableDefinition<&str, u64> = TableDefinition::new("revisions");
/// [`STORE_REVISION`] and `"written/<kind>"` → revisions.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STORE_REVISION: &str = "revision";

fn table(kind: Kind) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match kind {
        Kind::Certificate => CERTIFICATES,
        Kind::CaCertificate => CA_CERTIFICATES,
        Kind::Backend => BACKENDS,
        Kind::Api => APIS,
    }
}

fn revision_key(kind: Kind, id: &str) -> String {
    format!("{kind}/{id}")
}

fn written_key(kind: Kind) -> String {
    format!("written/{kind}")
}

fn failed<E: Into<redb::Error>>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |e| classify(what, e.into())
}

/// A redb error as a [`StoreError`]: a full file system (ENOSPC, EDQUOT) is
/// [`StoreError::StorageFull`], anything else [`StoreError::Backend`].
fn classify(what: impl Display, e: redb::Error) -> StoreError {
    match &e {
        redb::Error::Io(io) if crate::files::is_storage_full(io) => {
            StoreError::StorageFull(format!("{what}: {e}"))
        }
        _ => StoreError::Backend(format!("{what}: {e}")),
    }
}

/// An I/O error outside redb (creating the directory or the file) as a [`StoreError`].
fn io_error(what: impl Display, e: &std::io::Error) -> StoreError {
    if crate::files::is_storage_full(e) {
        StoreError::StorageFull(format!("{what}: {e}"))
    } else {
        StoreError::Io(format!("{what}: {e}"))
    }
}

/// Opens the database: at start, and again after a failed operation.
type Opener = Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

/// A [`Store`] on a local redb file.
///
/// After an I/O error (a full disk, typically) redb refuses every later operation on the
/// same handle (`PreviousIo`) until the database is opened again; opening runs redb's
/// repair, which falls back to the last commit that completed. So the operation after a
/// failed one opens the file again first (if that fails too, e.g. because the disk is
/// still full, it fails with that error, and the next one tries again): a write refused for
/// lack of space succeeds once space is freed, without a restart.
pub struct EmbeddedStore {
    open: Opener,
    /// `None` only after opening it again failed.
    db: RwLock<Option<Database>>,
    /// The last operation failed in the database: open it again before the next one.
    reopen: AtomicBool,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates, mode 0600) the database at `path`, creating its directory (0700)
    /// and tables, and gives revisions to records of a 0.1 file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_private_dir_all(dir).map_err(|e| {
                io_error(
                    format_args!("cannot create data directory {}", dir.display()),
                    &e,
                )
            })?;
        }
        let path = path.to_path_buf();
        Self::with_opener(Box::new(move || {
            let what = || format!("cannot open {}", path.display());
            // Created here, 0600: redb would create it with the umask's mode.
            let file = crate::files::open_private_rw(&path).map_err(|e| io_error(what(), &e))?;
            Database::builder()
                .create_file(file)
                .map_err(|e| classify(what(), e.into()))
        }))
    }

    /// Opens the database with `open` (kept to open it again after a failed operation) and
    /// creates its tables.
    fn with_opener(open: Opener) -> Result<Self, StoreError> {
        let db = open()?;
        let store = Self {
            open,
            db: RwLock::new(Some(db)),
            reopen: AtomicBool::new(false),
        };
        store.write(|tx| {
            let mut revisions = tx
                .open_table(REVISIONS)
                .map_err(failed("creating a table"))?;
            let mut meta = tx.open_table(META).map_err(failed("creating a table"))?;
            let mut legacy = false;
            for kind in Kind::ALL {
                let t = tx
                    .open_table(table(kind))
                    .map_err(failed("creating a table"))?;
                for item in t.iter().map_err(failed("reading"))? {
                    let (id, _) = item.map_err(failed("reading"))?;
                    let key = revision_key(kind, id.value());
                    if revisions
                        .get(key.as_str())
                        .map_err(failed("reading"))?
                        .is_none()
                    {
                        revisions
                            .insert(key.as_str(), 1)
                            .map_err(failed("writing"))?;
                        meta.insert(written_key(kind).as_str(), 1)
                            .map_err(failed("writing"))?;
                        legacy = true;
                    }
                }
            }
            let current = meta
                .get(STORE_REVISION)
                .map_err(failed("reading"))?
                .map(|v| v.value());
            if legacy && current.is_none() {
                meta.insert(STORE_REVISION, 1).map_err(failed("writing"))?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `f` on the database, opening it again first when the last operation failed in
    /// it, and marking it for that when `f` fails in it (a failed condition does not count).
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.reopen.load(Ordering::Acquire) {
            self.reopen_now()?;
        }
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_ref() else {
            self.reopen.store(true, Ordering::Release);
            return Err(StoreError::Backend(
                "the database is not open (opening it again failed)".to_owned(),
            ));
        };
        let result = f(db);
        if matches!(
            result,
            Err(StoreError::Backend(_) | StoreError::StorageFull(_))
        ) {
            self.reopen.store(true, Ordering::Release);
        }
        result
    }

    fn reopen_now(&self) -> Result<(), StoreError> {
        let mut guard = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if !self.reopen.load(Ordering::Acquire) && guard.is_some() {
            return Ok(()); // Another caller did it meanwhile.
        }
        // The old handle goes first: it holds the file's lock.
        *guard = None;
        let db = (self.open)()?;
        *guard = Some(db);
        self.reopen.store(false, Ordering::Release);
        tracing::info!("embedded store opened again after a failed operation");
        Ok(())
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_db(|db| {
            let mut tx = db.begin_write().map_err(failed("starting a write"))?;
            tx.set_durability(Durability::Immediate);
            match f(&tx) {
                Ok(value) => {
                    tx.commit().map_err(failed("committing"))?;
                    Ok(value)
                }
                Err(e) => {
                    // The first error is the one to report (after an I/O error the abort
                    // fails too, with "previous I/O error").
                    if let Err(abort) = tx.abort() {
                        tracing::debug!(error = %abort, "aborting a failed store write");
                    }
                    Err(e)
                }
            }
        })
    }

    /// Writes records exactly as given, revisions included, replacing everything of the
    /// same kind and id, and sets the store revision to at least `revision`. For copies of
    /// another store (the fleet's local cache, `edgegw store migrate`); not a checked write.
    pub fn import(&self, contents: &Contents, remove: &[(Kind, String)]) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut revisions = tx
                .open_table(REVISIONS)
                .map_err(failed("opening a table"))?;
            let mut meta = tx.open_table(META).map_err(failed("opening a table"))?;
            for (kind, id) in remove {
                let mut t = tx
                    .open_table(table(*kind))
                    .map_err(failed("opening a table"))?;
                t.remove(id.as_str()).map_err(failed("deleting"))?;
                revisions
                    .remove(revision_key(*kind, id).as_str())
                    .map_err(failed("deleting"))?;
            }
            for r in &contents.records {
                let mut t = tx
                    .open_table(table(r.kind))
                    .map_err(failed("opening a table"))?;
                t.insert(r.id.as_str(), r.value.as_slice())
                    .map_err(failed("writing"))?;
                revisions
                    .insert(revision_key(r.kind, &r.id).as_str(), r.revision)
                    .map_err(failed("writing"))?;
                let key = written_key(r.kind);
                let written = meta
                    .get(key.as_str())
                    .map_err(failed("reading"))?
                    .map_or(0, |v| v.value());
                meta.insert(key.as_str(), written.max(r.revision))
                    .map_err(failed("writing"))?;
            }
            let current = meta
                .get(STORE_REVISION)
                .map_err(failed("reading"))?
                .map_or(0, |v| v.value());
            meta.insert(STORE_REVISION, current.max(contents.revision))
                .map_err(failed("writing"))?;
            Ok(())
        })
    }

    /// Removes every record (the fleet cache before it takes a full copy).
    pub fn clear(&self) -> Result<(), StoreError> {
        let all = self.load()?;
        let remove: Vec<(Kind, String)> = all.records.into_iter().map(|r| (r.kind, r.id)).collect();
        self.import(&Contents::default(), &remove)
    }
}

fn check(tx: &WriteTransaction, condition: &Condition) -> Result<Option<String>, StoreError> {
    match condition {
        Condition::At { kind, id, revision } => {
            let revisions = tx
                .open_table(REVISIONS)
                .map_err(failed("opening a table"))?;
            let found = revisions
                .get(revision_key(*kind, id).as_str())
                .map_err(failed("reading"))?
                .map_or(0, |v| v.value());
            Ok((found != *revision).then(|| {
                format!("{kind} {id} is at revision {found}, the write expected {revision}")
            }))
        }
        Condition::NoneWrittenAfter { kind, revision } => {
            let meta = tx.open_table(META).map_err(failed("opening a table"))?;
            let written = meta
                .get(written_key(*kind).as_str())
                .map_err(failed("reading"))?
                .map_or(0, |v| v.value());
            Ok((written > *revision)
                .then(|| format!("a {kind} was written at revision {written}, after {revision}")))
        }
    }
}

fn load_from(db: &Database) -> Result<Contents, StoreError> {
    let tx = db.begin_read().map_err(failed("starting a read"))?;
    let revisions = tx
        .open_table(REVISIONS)
        .map_err(failed("opening a table"))?;
    let meta = tx.open_table(META).map_err(failed("opening a table"))?;
    let mut out = Contents {
        records: Vec::new(),
        revision: meta
            .get(STORE_REVISION)
            .map_err(failed("reading"))?
            .map_or(0, |v| v.value()),
    };
    for kind in Kind::ALL {
        let t = tx
            .open_table(table(kind))
            .map_err(failed("opening a table"))?;
        for item in t.iter().map_err(failed("reading"))? {
            let (k, v) = item.map_err(failed("reading"))?;
            let id = k.value().to_owned();
            let revision = revisions
                .get(revision_key(kind, &id).as_str())
                .map_err(failed("reading"))?
                .map_or(0, |v| v.value());
            out.records.push(Record {
                kind,
                id,
                value: v.value().to_vec(),
                revision,
            });
        }
    }
    Ok(out)
}

impl Store for EmbeddedStore {
    fn load(&self) -> Result<Contents, StoreError> {
        self.with_db(load_from)
    }

    fn commit(&self, transaction: &Transaction) -> Result<u64, StoreError> {
        self.write(|tx| {
            for condition in &transaction.conditions {
                if let Some(why) = check(tx, condition)? {
                    return Err(StoreError::Conflict(why));
                }
            }
            let mut meta = tx.open_table(META).map_err(failed("opening a table"))?;
            let mut revisions = tx
                .open_table(REVISIONS)
                .map_err(failed("opening a table"))?;
            let current = meta
                .get(STORE_REVISION)
                .map_err(failed("reading"))?
                .map_or(0, |v| v.value());
            if transaction.changes.is_empty() {
                // As in etcd: a transaction that changes nothing makes no revision.
                return Ok(current);
            }
            let revision = current + 1;
            for change in &transaction.changes {
                let (kind, id) = change.key();
                let mut t = tx
                    .open_table(table(kind))
                    .map_err(failed("opening a table"))?;
                match change {
                    Change::Put { value, .. } => {
                        t.insert(id, value.as_slice()).map_err(failed("writing"))?;
                        revisions
                            .insert(revision_key(kind, id).as_str(), revision)
                            .map_err(failed("writing"))?;
                        meta.insert(written_key(kind).as_str(), revision)
                            .map_err(failed("writing"))?;
                    }
                    Change::Delete { .. } => {
                        t.remove(id).map_err(failed("deleting"))?;
                        revisions
                            .remove(revision_key(kind, id).as_str())
                            .map_err(failed("deleting"))?;
                    }
                }
            }
            meta.insert(STORE_REVISION, revision)
                .map_err(failed("writing"))?;
            Ok(revision)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use testkit::temp_dir;

    fn put(kind: Kind, id: &str, value: &[u8]) -> Change {
        Change::Put {
            kind,
            id: id.into(),
            value: value.to_vec(),
        }
    }

    fn commit(s: &EmbeddedStore, changes: Vec<Change>) -> u64 {
        s.commit(&Transaction {
            conditions: vec![],
            changes,
        })
        .unwrap()
    }

    #[test]
    fn reopen_keeps_data_and_revisions() {
        let dir = temp_dir("redb").unwrap();
        let path = dir.path().join("nested").join(FILE_NAME);
        {
            let s = EmbeddedStore::open(&path).unwrap();
            assert_eq!(s.load().unwrap(), Contents::default());
            assert_eq!(commit(&s, vec![put(Kind::Api, "a1", b"api-1")]), 1);
            commit(&s, vec![put(Kind::Certificate, "c1", b"cert-1")]);
            commit(&s, vec![put(Kind::Backend, "b1", b"backend-1")]);
            commit(&s, vec![put(Kind::Backend, "b0", b"backend-0")]);
            commit(&s, vec![put(Kind::Backend, "b0", b"backend-0b")]);
            commit(&s, vec![put(Kind::Backend, "gone", b"x")]);
            let del = |id: &str| Change::Delete {
                kind: Kind::Backend,
                id: id.into(),
            };
            assert_eq!(commit(&s, vec![del("gone"), del("never-there")]), 7);
        }
        let s = EmbeddedStore::open(&path).unwrap();
        let all = s.load().unwrap();
        let r = |kind, id: &str, value: &[u8], revision| Record {
            kind,
            id: id.into(),
            value: value.to_vec(),
            revision,
        };
        assert_eq!(
            all,
            Contents {
                records: vec![
                    r(Kind::Certificate, "c1", b"cert-1", 2),
                    r(Kind::Backend, "b0", b"backend-0b", 5),
                    r(Kind::Backend, "b1", b"backend-1", 3),
                    r(Kind::Api, "a1", b"api-1", 1),
                ],
                revision: 7,
            }
        );
    }

    #[test]
    fn conditions_are_checked_inside_the_commit() {
        let dir = temp_dir("redb-cond").unwrap();
        let s = EmbeddedStore::open(&dir.path().join(FILE_NAME)).unwrap();
        let at = |kind, id: &str, revision| Condition::At {
            kind,
            id: id.into(),
            revision,
        };
        let txn = |conditions, changes| Transaction {
            conditions,
            changes,
        };
        // Create only if absent.
        let r1 = s
            .commit(&txn(
                vec![at(Kind::Backend, "b", 0)],
                vec![put(Kind::Backend, "b", b"1")],
            ))
            .unwrap();
        let again = s.commit(&txn(
            vec![at(Kind::Backend, "b", 0)],
            vec![put(Kind::Backend, "b", b"2")],
        ));
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        // Replace at the revision read.
        let r2 = s
            .commit(&txn(
                vec![at(Kind::Backend, "b", r1)],
                vec![put(Kind::Backend, "b", b"3")],
            ))
            .unwrap();
        assert_eq!(r2, r1 + 1);
        let stale = s.commit(&txn(vec![at(Kind::Backend, "b", r1)], vec![]));
        assert!(matches!(stale, Err(StoreError::Conflict(_))));
        // A kind written after the revision a check read fails it; another kind does not.
        let unchanged = |kind, revision| Condition::NoneWrittenAfter { kind, revision };
        assert!(s
            .commit(&txn(
                vec![unchanged(Kind::Backend, r1)],
                vec![put(Kind::Api, "a", b"x")]
            ))
            .is_err());
        let r3 = s
            .commit(&txn(
                vec![unchanged(Kind::Backend, r2)],
                vec![put(Kind::Api, "a", b"x")],
            ))
            .unwrap();
        assert!(s
            .commit(&txn(vec![unchanged(Kind::Certificate, 0)], vec![]))
            .is_ok());
        // A failed condition writes nothing, not even the changes before it.
        let failed = s.commit(&txn(
            vec![at(Kind::Api, "a", r3), at(Kind::Api, "zz", 5)],
            vec![put(Kind::Api, "a", b"lost")],
        ));
        assert!(failed.is_err());
        let contents = s.load().unwrap();
        assert_eq!(contents.revision, r3);
        assert!(contents
            .records
            .iter()
            .any(|r| r.id == "a" && r.value == b"x"));
    }

    #[test]
    fn a_0_1_file_gets_revisions_at_open() {
        let dir = temp_dir("redb-legacy").unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            // What edgegw 0.1 wrote: the three tables and nothing else.
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(BACKENDS).unwrap();
                t.insert("b1", b"old".as_slice()).unwrap();
            }
            tx.commit().unwrap();
        }
        let s = EmbeddedStore::open(&path).unwrap();
        let contents = s.load().unwrap();
        assert_eq!(contents.revision, 1);
        assert_eq!(contents.records[0].revision, 1);
        assert_eq!(commit(&s, vec![put(Kind::Api, "a", b"x")]), 2);
    }

    /// redb's file backend with a switch that makes every write fail like a full disk.
    #[derive(Debug)]
    struct FillableDisk {
        inner: redb::backends::FileBackend,
        full: Arc<AtomicBool>,
    }

    impl redb::StorageBackend for FillableDisk {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, std::io::Error> {
            self.inner.read(offset, len)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.inner.set_len(len)
        }
        fn sync_data(&self, eventual: bool) -> Result<(), std::io::Error> {
            self.inner.sync_data(eventual)
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            if self.full.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.inner.write(offset, data)
        }
    }

    #[test]
    fn a_full_disk_fails_the_write_with_nothing_written_and_the_next_one_works_once_freed() {
        let dir = temp_dir("redb-full").unwrap();
        let path = dir.path().join(FILE_NAME);
        let full = Arc::new(AtomicBool::new(false));
        let (p, f) = (path.clone(), full.clone());
        let s = EmbeddedStore::with_opener(Box::new(move || {
            let file = crate::files::open_private_rw(&p).map_err(|e| io_error("open", &e))?;
            let backend = FillableDisk {
                inner: redb::backends::FileBackend::new(file)
                    .map_err(|e| classify("open", e.into()))?,
                full: f.clone(),
            };
            Database::builder()
                .create_with_backend(backend)
                .map_err(|e| classify("open", e.into()))
        }))
        .unwrap();
        assert_eq!(commit(&s, vec![put(Kind::Backend, "b1", b"v1")]), 1);

        full.store(true, Ordering::SeqCst);
        for value in [b"v2", b"v3"] {
            // The first fails in the commit; the next one in opening the file again
            // (redb refuses a handle after an I/O error), for the same reason.
            let e = s
                .commit(&Transaction::put(
                    vec![],
                    Kind::Backend,
                    "b1",
                    value.to_vec(),
                ))
                .unwrap_err();
            assert!(matches!(e, StoreError::StorageFull(_)), "{e:?}");
            assert!(e.to_string().contains("No space left on device"), "{e}");
        }
        // Conditions are still checked first, whatever the disk: a conflict stays a conflict.
        full.store(false, Ordering::SeqCst);
        let stale = s.commit(&Transaction::put(
            vec![Condition::At {
                kind: Kind::Backend,
                id: "b1".into(),
                revision: 0,
            }],
            Kind::Backend,
            "b1",
            b"x".to_vec(),
        ));
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
        // Space freed: the next write works on the same store, and nothing of the failed
        // ones is there.
        assert_eq!(commit(&s, vec![put(Kind::Api, "a1", b"api")]), 2);
        let expected = Contents {
            records: vec![
                Record {
                    kind: Kind::Backend,
                    id: "b1".into(),
                    value: b"v1".to_vec(),
                    revision: 1,
                },
                Record {
                    kind: Kind::Api,
                    id: "a1".into(),
                    value: b"api".to_vec(),
                    revision: 2,
                },
            ],
            revision: 2,
        };
        assert_eq!(s.load().unwrap(), expected);
        drop(s);
        assert_eq!(
            EmbeddedStore::open(&path).unwrap().load().unwrap(),
            expected
        );
    }

    #[test]
    fn the_file_is_created_for_its_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = temp_dir("redb-mode").unwrap();
        let path = dir.path().join("new-dir").join(FILE_NAME);
        EmbeddedStore::open(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
}
