//! The audit log: one JSON line per admin change in `data_dir/audit.log`.
//!
//! A line names what changed and nothing more: the time (RFC 3339, UTC), the operation
//! (`put` or `delete`), the resource kind (`certificate`, `backend`, `api`, `policy`) and id,
//! the thumbprint of the certificate involved where there is one, and for a put whether it
//! created the resource, and the node that made it when the log is given one (fleet mode).
//! It is built from those typed fields only, so a password, a PKCS#12
//! bundle, a private key or a request body can never reach it.
//!
//! Ordering (write-ahead): the control plane appends the line and fsyncs it *before* it
//! commits the change to the store. So every change that took effect is in the log, even if
//! the process dies right after. If the line cannot be written, the change is refused with
//! 500 `AuditLogError` and nothing changes. If the store write then fails, a second line for
//! the same resource with an `"outcome"` (`failed`, `conflict`, `unavailable` or
//! `unconfirmed`, as the store answered) follows it immediately (writes are
//! serialized), best effort.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::model::{ResourceId, Thumbprint};

/// The audit log's file name inside the data directory.
pub const AUDIT_LOG_FILE: &str = "audit.log";

/// What an admin change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Create or replace.
    Put,
    /// Delete.
    Delete,
}

impl Operation {
    /// The label used in the log (and in `edgegw_admin_changes_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Put => "put",
            Self::Delete => "delete",
        }
    }
}

/// The kind of resource an admin change touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// `/certificates/{id}`.
    Certificate,
    /// `/caCertificates/{id}`.
    CaCertificate,
    /// `/backends/{id}`.
    Backend,
    /// `/apis/{id}`.
    Api,
    /// `/apis/{id}/policy` (the id is the API's).
    Policy,
}

impl AuditKind {
    /// The label used in the log (and in `edgegw_admin_changes_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Certificate => "certificate",
            Self::CaCertificate => "caCertificate",
            Self::Backend => "backend",
            Self::Api => "api",
            Self::Policy => "policy",
        }
    }
}

/// One admin change, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Put or delete.
    pub operation: Operation,
    /// The resource kind.
    pub kind: AuditKind,
    /// The resource id (for a policy, the API's id).
    pub id: ResourceId,
    /// The certificate involved: the uploaded or deleted one, the one a backend binds, the
    /// one an API (through its policy or its backend) presents.
    pub thumbprint: Option<Thumbprint>,
    /// For a put: whether it created the resource (false: replaced it).
    pub created: Option<bool>,
}

impl AuditRecord {
    /// The JSON line (without the newline). `outcome` is set only on a failure line.
    pub fn to_json(&self, time: OffsetDateTime, outcome: Option<&str>) -> Value {
        let mut m = Map::new();
        let time = time
            .format(&Rfc3339)
            .unwrap_or_else(|_| time.unix_timestamp().to_string());
        m.insert("time".into(), json!(time));
        m.insert("operation".into(), json!(self.operation.as_str()));
        m.insert("kind".into(), json!(self.kind.as_str()));
        m.insert("id".into(), json!(self.id.as_str()));
        if let Some(t) = self.thumbprint {
            m.insert("thumbprint".into(), json!(t.to_string()));
        }
        if let Some(c) = self.created {
            m.insert("created".into(), json!(c));
        }
        if let Some(o) = outcome {
            m.insert("outcome".into(), json!(o));
        }
        Value::Object(m)
    }
}

/// The append-only audit file. Not shared: the control plane holds it under its write lock.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// The node that makes the changes (fleet mode: several nodes change one store).
    node: Option<String>,
    /// The last append failed midway: start the next one on a fresh line.
    broken_line: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating, mode 0600) `data_dir/audit.log` for appending. A new file's directory
    /// entry is fsynced too, so the file itself survives a crash.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = data_dir.join(AUDIT_LOG_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)?;
        if !existed {
            File::open(data_dir)?.sync_all()?;
        }
        Ok(Self {
            path,
            file,
            node: None,
            broken_line: false,
        })
    }

    /// Names the node on every line (`"node": ...`), so that the audit logs of a fleet's
    /// nodes say which one made a change.
    #[must_use]
    pub fn with_node(mut self, node: String) -> Self {
        self.node = Some(node);
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line for `record` and waits until it is on disk (`fdatasync`).
    pub fn append(&mut self, record: &AuditRecord, outcome: Option<&str>) -> io::Result<()> {
        let mut line = Vec::with_capacity(192);
        if self.broken_line {
            line.push(b'\n');
        }
        let mut json = record.to_json(OffsetDateTime::now_utc(), outcome);
        if let (Some(node), Value::Object(map)) = (&self.node, &mut json) {
            map.insert("node".into(), json!(node));
        }
        serde_json::to_writer(&mut line, &json).map_err(io::Error::other)?;
        line.push(b'\n');
        // One write(2) of the whole line with O_APPEND: concurrent readers (tail -f) never
        // see two lines interleaved.
        let result = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        self.broken_line = result.is_err();
        result
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;

    use super::*;
    use crate::admin::rest::ApiBody;
    use crate::admin::rest::BackendBody;
    use crate::admin::{ControlPlane, Expect};
    use crate::model::certificate::tests::Fixtures;
    use crate::store::embedded::{EmbeddedStore, FILE_NAME};
    use crate::store::{Contents, MasterKey, Store, StoreError, Transaction};
    use testkit::temp_dir;

    const PASSWORD: &str = "s3cret-Pa55";

    fn control(dir: &Path, store: Box<dyn Store>) -> ControlPlane {
        ControlPlane::open(store, MasterKey::from_bytes([42u8; 32]), Box::new(|_| {}))
            .unwrap()
            .with_audit_log(AuditLog::open(dir).unwrap())
    }

    fn lines(dir: &Path) -> Vec<Value> {
        std::fs::read_to_string(dir.join(AUDIT_LOG_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    fn id(s: &str) -> ResourceId {
        ResourceId::parse(s).unwrap()
    }

    #[test]
    fn every_change_is_one_line_and_no_secret_reaches_the_log() {
        let dir = temp_dir("audit").unwrap();
        let files = Fixtures::new();
        let store = EmbeddedStore::open(&dir.path().join(FILE_NAME)).unwrap();
        let cp = control(dir.path(), Box::new(store));
        let p12 = files.read("modern.p12");
        let (_, info, _) = cp
            .put_certificate(id("c1"), &p12, PASSWORD, &Expect::Anything)
            .unwrap();
        // A failed upload (wrong password) is no change: no line.
        assert!(cp
            .put_certificate(id("c2"), &p12, "wrong-pass", &Expect::Anything)
            .is_err());
        let backend: BackendBody = serde_json::from_value(json!({
            "url": "https://127.0.0.1:9443/api",
            "credentials": {"certificateId": "c1"}
        }))
        .unwrap();
        cp.put_backend(id("b1"), &backend, &Expect::Anything)
            .unwrap();
        cp.put_backend(id("b1"), &backend, &Expect::Anything)
            .unwrap();
        let api: ApiBody =
            serde_json::from_value(json!({"path": "/orders", "backendId": "b1"})).unwrap();
        cp.put_api(id("orders"), &api, &Expect::Anything).unwrap();
        let policy = r#"<policies><inbound><base /><authentication-certificate certificate-id="c1" /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#;
        cp.put_policy(&id("orders"), policy, &Expect::Anything)
            .unwrap();
        // Refused by a reference rule: no line.
        assert!(cp.delete_certificate(&id("c1"), &Expect::Anything).is_err());
        cp.delete_policy(&id("orders"), &Expect::Anything).unwrap();
        cp.delete_api(&id("orders"), &Expect::Anything).unwrap();
        cp.delete_backend(&id("b1"), &Expect::Anything).unwrap();
        cp.delete_certificate(&id("c1"), &Expect::Anything).unwrap();

        let got = lines(dir.path());
        let tp = info.thumbprint.to_string();
        let summary: Vec<(String, String, String, bool)> = got
            .iter()
            .map(|v| {
                (
                    v["operation"].as_str().unwrap().to_owned(),
                    v["kind"].as_str().unwrap().to_owned(),
                    v["id"].as_str().unwrap().to_owned(),
                    v["thumbprint"].as_str() == Some(tp.as_str()),
                )
            })
            .collect();
        let want = [
            ("put", "certificate", "c1", true),
            ("put", "backend", "b1", true),
            ("put", "backend", "b1", true),
            ("put", "api", "orders", true),
            ("put", "policy", "orders", true),
            ("delete", "policy", "orders", true),
            ("delete", "api", "orders", true),
            ("delete", "backend", "b1", true),
            ("delete", "certificate", "c1", true),
        ];
        let want: Vec<(String, String, String, bool)> = want
            .iter()
            .map(|(o, k, i, t)| ((*o).into(), (*k).into(), (*i).into(), *t))
            .collect();
        assert_eq!(summary, want, "{got:#?}");
        assert_eq!(got[1]["created"], json!(true));
        assert_eq!(got[2]["created"], json!(false));
        for v in &got {
            let t = v["time"].as_str().unwrap();
            OffsetDateTime::parse(t, &Rfc3339).unwrap_or_else(|e| panic!("{t}: {e}"));
            assert!(v.get("outcome").is_none(), "{v}");
        }

        // No secret: the password, the PKCS#12 bytes, the private key (DER, hex, base64
        // slices, PEM lines), the master key.
        let raw = std::fs::read(dir.path().join(AUDIT_LOG_FILE)).unwrap();
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(
            !text.contains(PASSWORD) && !text.contains("s3cret"),
            "{text}"
        );
        assert!(!text.contains("wrong-pass"), "{text}");
        let key_pem = String::from_utf8(files.read("rsa.key")).unwrap();
        for l in key_pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!text.contains(l), "PEM line of the key in the audit log");
        }
        let key_der = files.pki.key_der("rsa").unwrap();
        for chunk in key_der.chunks(24).filter(|c| c.len() == 24) {
            assert!(!text.contains(&hex::encode(chunk)));
            assert!(!text.contains(&hex::encode_upper(chunk)));
            assert!(!text.contains(&BASE64.encode(chunk)));
            assert!(!raw.windows(chunk.len()).any(|w| w == chunk));
        }
        for chunk in p12.chunks(24).filter(|c| c.len() == 24) {
            assert!(!text.contains(&BASE64.encode(chunk)));
        }
        assert!(!text.contains(&hex::encode([42u8; 32])));
        assert!(!text.contains(&BASE64.encode([42u8; 32])));
    }

    /// A store whose writes always fail.
    struct FailingStore;

    impl Store for FailingStore {
        fn load(&self) -> Result<Contents, StoreError> {
            Ok(Contents::default())
        }
        fn commit(&self, _: &Transaction) -> Result<u64, StoreError> {
            Err(StoreError::Backend("disk full".into()))
        }
    }

    #[test]
    fn a_failed_store_write_is_followed_by_a_failure_line() {
        let dir = temp_dir("audit-fail").unwrap();
        let cp = control(dir.path(), Box::new(FailingStore));
        let backend: BackendBody = serde_json::from_value(json!({"url": "https://h"})).unwrap();
        let err = cp
            .put_backend(id("b1"), &backend, &Expect::Anything)
            .unwrap_err();
        assert_eq!(err.code, "StoreError");
        let got = lines(dir.path());
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0]["kind"], "backend");
        assert!(got[0].get("outcome").is_none());
        assert_eq!(got[1]["kind"], "backend");
        assert_eq!(got[1]["id"], "b1");
        assert_eq!(got[1]["outcome"], "failed");
    }

    #[test]
    fn an_unwritable_audit_log_refuses_the_change() {
        let dir = temp_dir("audit-ro").unwrap();
        let store = EmbeddedStore::open(&dir.path().join(FILE_NAME)).unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        // Replace the file handle by a read-only one: every append fails.
        let ro = File::open(log.path()).unwrap();
        let log = AuditLog { file: ro, ..log };
        let cp = ControlPlane::open(
            Box::new(store),
            MasterKey::from_bytes([42u8; 32]),
            Box::new(|_| {}),
        )
        .unwrap()
        .with_audit_log(log);
        let backend: BackendBody = serde_json::from_value(json!({"url": "https://h"})).unwrap();
        let err = cp
            .put_backend(id("b1"), &backend, &Expect::Anything)
            .unwrap_err();
        assert_eq!(err.code, "AuditLogError");
        assert_eq!(err.status.as_u16(), 500);
        assert!(cp.backend(&id("b1")).is_none(), "nothing changed");
        let cp = Arc::new(cp);
        assert!(cp.backends().is_empty());
    }

    #[test]
    fn open_creates_a_private_file_and_appends() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = temp_dir("audit-open").unwrap();
        let rec = AuditRecord {
            operation: Operation::Delete,
            kind: AuditKind::Api,
            id: id("a"),
            thumbprint: None,
            created: None,
        };
        AuditLog::open(dir.path())
            .unwrap()
            .append(&rec, None)
            .unwrap();
        AuditLog::open(dir.path())
            .unwrap()
            .append(&rec, None)
            .unwrap();
        assert_eq!(lines(dir.path()).len(), 2);
        let mode = std::fs::metadata(dir.path().join(AUDIT_LOG_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
