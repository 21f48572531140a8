//! The control plane: the in-memory [`Resources`] behind the management REST API
//! (contract §3), kept in step with the durable [`Store`] and published to the data plane.
//!
//! This module owns [`ControlPlane`] (load at start, validated writes with referential
//! rules, publish after every change), the admin token ([`resolve_token`]) and, in
//! [`http`], the axum router.
//!
//! A write runs under the writer lock, on a blocking thread (the handlers of [`http`] hand
//! writes to `spawn_blocking`: fsync, etcd round trips and TLS context building never stall
//! the async thread that also serves reads, `/metrics` and signals): check it against the
//! current [`View`] → state what it checked as store [`Condition`]s → append the [`audit`]
//! line (fsynced; if it fails the change is refused) → commit the transaction (durable; a
//! condition that no longer holds is 409 `Conflict` and nothing changes) → count it in
//! `edgegw_admin_changes_total` → apply it.
//!
//! Applying is one path for every change, local or not ([`ControlPlane::apply`]): decode
//! the records, make the next resources, `publish(&resources)`, swap the next view in. The
//! embedded store has one writer, this process: its commits are applied at once. A shared
//! store (etcd) is written by every node of a fleet: all its changes, this node's included,
//! arrive through its one watch in revision order, and a write returns once the watch has
//! applied it (so a node reads its own writes, and its next write is checked against a
//! view that is complete up to its last one). Reads take no lock: they load the immutable
//! current view.

// Control plane: the writer mutex is held on blocking threads only (see `http::write`).
#![allow(clippy::disallowed_types)]

pub mod audit;
pub mod console;
pub mod error;
pub mod http;
pub mod rest;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use serde_json::json;
use tracing::{error, info, warn};

pub use audit::{AuditKind, AuditLog, AuditRecord, Operation};
pub use error::AdminError;
pub use http::{router, router_with_readiness, NotReady, Readiness};
pub use token::{resolve_token, AdminToken, ADMIN_TOKEN_FILE};

use crate::model::ca::parse_ca_certificate;
use crate::model::certificate::parse_pkcs12;
use crate::model::policy::{parse_policy, EMPTY_POLICY};
use crate::model::{
    Api, Backend, CertificateInfo, CertificateRef, ResourceId, Resources, Thumbprint,
};
use crate::store::{
    records, Condition, Contents, Kind, MasterKey, Store, StoreError, Transaction, Update,
};
use rest::{ApiBody, ApiResource, BackendBody, BackendResource, CaCertificateResource};

/// Called with the complete resources after loading and after every change; builds and
/// swaps in the data plane's next snapshot.
pub type Publish = Box<dyn Fn(&Resources) + Send + Sync>;

/// Whether a PUT created a resource (201) or replaced one (200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The resource did not exist before.
    Created,
    /// An existing resource was replaced.
    Replaced,
}

/// What a request's `If-Match` asks of the resource it writes (RFC 9110 §13.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Expect {
    /// No `If-Match`: write whatever is there.
    #[default]
    Anything,
    /// `If-Match: *`: the resource must exist.
    Exists,
    /// `If-Match: "r1", "r2"`: the resource must be at one of these revisions.
    Revisions(Vec<u64>),
}

impl Expect {
    /// 412 `PreconditionFailed` unless a resource at `current` (None: absent) satisfies it.
    fn check(&self, what: &str, id: &ResourceId, current: Option<u64>) -> Result<(), AdminError> {
        let ok = match (self, current) {
            (Expect::Anything, _) => true,
            (Expect::Exists, found) => found.is_some(),
            (Expect::Revisions(wanted), Some(found)) => wanted.contains(&found),
            (Expect::Revisions(_), None) => false,
        };
        if ok {
            return Ok(());
        }
        Err(AdminError::new(
            axum::http::StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            match current {
                Some(r) => format!(
                    "The {what} {id} is at ETag \"{r}\", not the one If-Match names; nothing was changed. Read it again and retry."
                ),
                None => format!("The {what} {id} does not exist; If-Match needs it to."),
            },
        ))
    }
}

/// The store revision that last wrote each record.
type Revisions = HashMap<(Kind, ResourceId), u64>;

/// What reads see, replaced whole by each applied change, never changed in place.
#[derive(Default)]
pub struct View {
    pub resources: Arc<Resources>,
    revisions: Arc<Revisions>,
    /// Every store change up to this revision is in `resources`.
    pub revision: u64,
}

impl View {
    /// The revision that last wrote a record (its `ETag`), if it exists.
    pub fn revision_of(&self, kind: Kind, id: &ResourceId) -> Option<u64> {
        self.revisions.get(&(kind, id.clone())).copied()
    }

    fn at(&self, kind: Kind, id: &ResourceId) -> Condition {
        Condition::At {
            kind,
            id: id.to_string(),
            revision: self.revision_of(kind, id).unwrap_or(0),
        }
    }

    fn none_written_after(&self, kind: Kind) -> Condition {
        Condition::NoneWrittenAfter {
            kind,
            revision: self.revision,
        }
    }

    /// The condition that the certificate a reference resolves to is still the one seen.
    fn certificate_at(&self, r: &CertificateRef) -> Option<Condition> {
        self.resources
            .find_certificate(r)
            .map(|c| self.at(Kind::Certificate, &c.id))
    }
}

/// What only a writer touches (behind the writer lock).
struct Writer {
    store: Box<dyn Store>,
    /// `data_dir/audit.log`; `None` only where no data dir exists (unit tests).
    audit: Option<AuditLog>,
}

impl Writer {
    /// Commits one change durably: the audit line first (write-ahead, fsynced; if it cannot
    /// be written the change is refused and nothing changes), then the store transaction.
    /// A failed commit is followed by an audit line with its `"outcome"` (`failed`,
    /// `conflict`, `unavailable`, `unconfirmed`). Returns the
    /// store revision of the change.
    fn durable(
        &mut self,
        record: &AuditRecord,
        transaction: &Transaction,
    ) -> Result<u64, AdminError> {
        if let Some(log) = self.audit.as_mut() {
            log.append(record, None).map_err(|e| {
                error!(
                    error = %e,
                    path = %log.path().display(),
                    kind = record.kind.as_str(),
                    id = %record.id,
                    "audit log write failed; the change is refused"
                );
                if crate::files::is_storage_full(&e) {
                    return AdminError::insufficient_storage();
                }
                AdminError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "AuditLogError",
                    "The change could not be written to the audit log; nothing was changed.",
                )
            })?;
        }
        match self.store.commit(transaction) {
            Ok(revision) => {
                crate::metrics::record_admin_change(
                    record.kind.as_str(),
                    record.operation.as_str(),
                );
                Ok(revision)
            }
            Err(e) => {
                if let Some(log) = self.audit.as_mut() {
                    let outcome = match e {
                        StoreError::Conflict(_) => "conflict",
                        StoreError::Unavailable(_) => "unavailable",
                        StoreError::Unconfirmed(_) => "unconfirmed",
                        _ => "failed",
                    };
                    if let Err(ae) = log.append(record, Some(outcome)) {
                        error!(error = %ae, path = %log.path().display(), "audit log write failed");
                    }
                }
                Err(e.into())
            }
        }
    }
}

/// How long a write on a shared store waits for the watch to bring its own change back.
/// Past it the write still answers success (it is committed) and logs that the watch lags.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// The control plane: resources in memory, their durable store, and the publish hook.
pub struct ControlPlane {
    /// Held by one writer at a time, on a blocking thread.
    writer: Mutex<Writer>,
    /// Opens certificate records (every applied change decodes its records).
    master_key: MasterKey,
    /// Held while a change is applied: applications (own commits, the watch) are serialized
    /// and publish in revision order.
    publish: Mutex<Publish>,
    current: ArcSwap<View>,
    /// Signalled after each application; writers on a shared store wait on it.
    applied: Condvar,
    applied_lock: Mutex<()>,
    /// Whether the store is shared (see the module documentation).
    shared: bool,
    /// The CA certificates `listener.client_ca_ids` names (the config file's, fixed for the
    /// life of the process): they cannot be deleted.
    listener_ca_ids: Vec<ResourceId>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

/// A lock whose holder panicked is still consistent here: every change builds the next
/// view first and swaps it in whole, so there is never a half-changed state behind it.
fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ControlPlane {
    /// Loads every record from the store (a record that fails to decode is an error naming
    /// it, never silently dropped), then calls `publish` once.
    pub fn open(
        store: Box<dyn Store>,
        master_key: MasterKey,
        publish: Publish,
    ) -> Result<Self, StoreError> {
        let contents = store.load()?;
        Self::from_contents(store, contents, master_key, publish)
    }

    /// Starts from `contents` (read from `store`, or from a node's local copy of a shared
    /// store while that store cannot be reached), then calls `publish` once.
    pub fn from_contents(
        store: Box<dyn Store>,
        contents: Contents,
        master_key: MasterKey,
        publish: Publish,
    ) -> Result<Self, StoreError> {
        let resources = records::load(&contents, &master_key)?;
        warn_dangling(&resources);
        info!(
            certificates = resources.certificates.len(),
            backends = resources.backends.len(),
            apis = resources.apis.len(),
            revision = contents.revision,
            "control plane loaded the store"
        );
        publish(&resources);
        crate::metrics::record_store_revision(contents.revision);
        let mut revisions = Revisions::new();
        for r in &contents.records {
            if let Ok(id) = ResourceId::parse(&r.id) {
                revisions.insert((r.kind, id), r.revision);
            }
        }
        let shared = store.shared();
        Ok(Self {
            writer: Mutex::new(Writer { store, audit: None }),
            master_key,
            publish: Mutex::new(publish),
            current: ArcSwap::from_pointee(View {
                resources: Arc::new(resources),
                revisions: Arc::new(revisions),
                revision: contents.revision,
            }),
            applied: Condvar::new(),
            applied_lock: Mutex::new(()),
            shared,
            listener_ca_ids: Vec::new(),
        })
    }

    /// The CA certificates the listener checks callers against (`listener.client_ca_ids`):
    /// a delete of one of them is refused, naming the setting.
    #[must_use]
    pub fn with_listener_ca_ids(mut self, ids: Vec<ResourceId>) -> Self {
        self.listener_ca_ids = ids;
        self
    }

    /// Records every later change in `log` (see [`audit`]): one JSON line, fsynced before
    /// the change is committed.
    #[must_use]
    pub fn with_audit_log(self, log: AuditLog) -> Self {
        relock(&self.writer).audit = Some(log);
        self
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        relock(&self.writer)
    }

    /// Runs `f` on the current resources (for reads; no lock is taken).
    pub fn with_resources<R>(&self, f: impl FnOnce(&Resources) -> R) -> R {
        f(&self.current.load().resources)
    }

    /// The current resources (an immutable copy that later writes do not change).
    pub fn resources(&self) -> Arc<Resources> {
        self.current.load().resources.clone()
    }

    /// The current view (resources, their revisions, the revision it is complete up to).
    pub fn view(&self) -> Arc<View> {
        self.current.load_full()
    }

    /// Publishes the current resources again (after a backend's address changed in DNS).
    pub fn republish(&self) {
        let publish = relock(&self.publish);
        publish(&self.current.load().resources);
    }

    /// Applies store changes in revision order (one path for this node's commits and for
    /// the watch of a shared store): an update the view already has (its revision is not
    /// newer than the one the view holds for that record) is skipped, so a change that
    /// arrives twice (a watch resumed after a reconnect) changes nothing. Publishes once,
    /// and only when something changed; the view is then complete up to `revision`. A record
    /// that does not decode (written by a newer edgegw, or damaged) is logged and skipped:
    /// the node keeps what it had for it. Returns whether anything changed.
    pub fn apply(&self, updates: &[Update], revision: u64) -> bool {
        let publish = relock(&self.publish);
        let view = self.current.load_full();
        let mut next: Option<(Resources, Revisions)> = None;
        for u in updates {
            let Ok(id) = ResourceId::parse(&u.id) else {
                error!(kind = %u.kind, id = %u.id, "the store holds a record with an invalid id; ignored");
                continue;
            };
            let known = view.revisions.get(&(u.kind, id.clone())).copied();
            if known.is_some_and(|k| k >= u.revision) {
                continue;
            }
            match &u.value {
                Some(value) => match records::decode(u.kind, &u.id, value, &self.master_key) {
                    Ok((id, resource)) => {
                        let (resources, revisions) = next.get_or_insert_with(|| {
                            ((*view.resources).clone(), (*view.revisions).clone())
                        });
                        revisions.insert((u.kind, id.clone()), u.revision);
                        resource.insert_into(resources, id);
                    }
                    Err(e) => {
                        error!(error = %e, revision = u.revision, "a changed record cannot be read; keeping the previous one");
                        crate::metrics::record_store_rejected_record();
                    }
                },
                None if known.is_some() => {
                    let (resources, revisions) = next.get_or_insert_with(|| {
                        ((*view.resources).clone(), (*view.revisions).clone())
                    });
                    revisions.remove(&(u.kind, id.clone()));
                    records::remove_from(resources, u.kind, &id);
                }
                None => {}
            }
        }
        let changed = next.is_some();
        let revision = revision.max(view.revision);
        let next_view = match next {
            Some((resources, revisions)) => {
                publish(&resources);
                View {
                    resources: Arc::new(resources),
                    revisions: Arc::new(revisions),
                    revision,
                }
            }
            None => View {
                resources: view.resources.clone(),
                revisions: view.revisions.clone(),
                revision,
            },
        };
        self.current.store(Arc::new(next_view));
        crate::metrics::record_store_revision(revision);
        drop(publish);
        let _guard = relock(&self.applied_lock);
        self.applied.notify_all();
        changed
    }

    /// Brings the view to `contents`, a complete copy of the store (after the watch lost
    /// its place, e.g. to a compaction): only records whose revision differs are decoded,
    /// and when nothing differs nothing is published. Returns whether anything changed.
    pub fn reload(&self, contents: &Contents) -> bool {
        let view = self.current.load_full();
        let mut present = std::collections::HashSet::new();
        let mut updates = Vec::new();
        for r in &contents.records {
            if let Ok(id) = ResourceId::parse(&r.id) {
                if view.revisions.get(&(r.kind, id.clone())) != Some(&r.revision) {
                    updates.push(Update {
                        kind: r.kind,
                        id: r.id.clone(),
                        value: Some(r.value.clone()),
                        revision: r.revision,
                    });
                }
                present.insert((r.kind, id));
            }
        }
        for (kind, id) in view.revisions.keys() {
            if !present.contains(&(*kind, id.clone())) {
                updates.push(Update {
                    kind: *kind,
                    id: id.to_string(),
                    value: None,
                    revision: contents.revision,
                });
            }
        }
        self.apply(&updates, contents.revision)
    }

    /// After this node's commit at `revision`: apply it (the only writer), or wait until
    /// the shared store's watch has.
    fn follow(&self, transaction: &Transaction, revision: u64) {
        if !self.shared {
            self.apply(&transaction.updates(revision), revision);
            return;
        }
        let deadline = Instant::now() + APPLY_WAIT;
        let mut guard = relock(&self.applied_lock);
        while self.current.load().revision < revision {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(
                    revision,
                    "the change is committed, but the store's watch has not brought it back within {APPLY_WAIT:?}; it applies when the watch catches up"
                );
                return;
            }
            guard = match self.applied.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Commits one checked change and applies it; returns its store revision.
    fn write(
        &self,
        writer: &mut Writer,
        audit: &AuditRecord,
        transaction: Transaction,
    ) -> Result<u64, AdminError> {
        let revision = writer.durable(audit, &transaction)?;
        self.follow(&transaction, revision);
        Ok(revision)
    }

    /// The public description of a certificate.
    pub fn certificate(&self, id: &ResourceId) -> Option<CertificateInfo> {
        self.with_resources(|r| r.certificates.get(id).map(|c| c.info.clone()))
    }

    /// Every certificate, sorted by id.
    pub fn certificates(&self) -> Vec<(ResourceId, CertificateInfo)> {
        self.with_resources(|r| {
            r.certificates
                .iter()
                .map(|(id, c)| (id.clone(), c.info.clone()))
                .collect()
        })
    }

    /// A CA certificate's resource.
    pub fn ca_certificate(&self, id: &ResourceId) -> Option<CaCertificateResource> {
        self.with_resources(|r| {
            r.ca_certificates
                .get(id)
                .map(|c| CaCertificateResource::new(id, &c.info, c.certificates.len()))
        })
    }

    /// Every CA certificate, sorted by id.
    pub fn ca_certificates(&self) -> Vec<CaCertificateResource> {
        self.with_resources(|r| {
            r.ca_certificates
                .iter()
                .map(|(id, c)| CaCertificateResource::new(id, &c.info, c.certificates.len()))
                .collect()
        })
    }

    /// Uploads (or replaces) a CA certificate. A replacement applies from the next new
    /// upstream connection of every backend that trusts it (its identity changes, so does
    /// the pool key: connections verified under the old one are not reused).
    pub fn put_ca_certificate(
        &self,
        id: ResourceId,
        data: &[u8],
        expect: &Expect,
    ) -> Result<(Written, CaCertificateResource, u64), AdminError> {
        let ca = parse_ca_certificate(id.clone(), data)
            .map_err(|e| AdminError::bad_request(e.code(), e.to_string()))?;
        let mut writer = self.lock();
        let view = self.view();
        expect.check(
            "CA certificate",
            &id,
            view.revision_of(Kind::CaCertificate, &id),
        )?;
        let written = if view.resources.ca_certificates.contains_key(&id) {
            Written::Replaced
        } else {
            Written::Created
        };
        let record = records::encode_ca_certificate(&ca)?;
        let audit = AuditRecord {
            operation: Operation::Put,
            kind: AuditKind::CaCertificate,
            id: id.clone(),
            thumbprint: Some(ca.info.thumbprint),
            created: Some(written == Written::Created),
        };
        let conditions = vec![view.at(Kind::CaCertificate, &id)];
        let transaction = Transaction::put(conditions, Kind::CaCertificate, id.as_str(), record);
        let revision = self.write(&mut writer, &audit, transaction)?;
        info!(
            kind = "caCertificate",
            id = %id,
            thumbprint = %ca.info.thumbprint,
            subject = %ca.info.subject,
            replaced = written == Written::Replaced,
            revision,
            "CA certificate stored"
        );
        Ok((
            written,
            CaCertificateResource::new(&id, &ca.info, ca.certificates.len()),
            revision,
        ))
    }

    /// Deletes a CA certificate unless a backend trusts it or the listener checks callers
    /// against it.
    pub fn delete_ca_certificate(
        &self,
        id: &ResourceId,
        expect: &Expect,
    ) -> Result<(), AdminError> {
        let mut writer = self.lock();
        let view = self.view();
        let resources = &view.resources;
        let Some(ca) = resources.ca_certificates.get(id) else {
            return Err(AdminError::not_found("CA certificate", id));
        };
        expect.check(
            "CA certificate",
            id,
            view.revision_of(Kind::CaCertificate, id),
        )?;
        let mut dependents: Vec<serde_json::Value> = resources
            .backends
            .values()
            .filter(|b| b.trust.ca_ids.contains(id))
            .map(|b| json!({"kind": "backend", "id": b.id.as_str()}))
            .collect();
        if self.listener_ca_ids.contains(id) {
            dependents.push(json!({"kind": "listener", "setting": "listener.client_ca_ids"}));
        }
        if !dependents.is_empty() {
            return Err(AdminError::conflict(
                "CertificateInUse",
                format!(
                    "CA certificate {id} is in use; remove the references listed in details first."
                ),
                dependents,
            ));
        }
        let audit = AuditRecord {
            operation: Operation::Delete,
            kind: AuditKind::CaCertificate,
            id: id.clone(),
            thumbprint: Some(ca.info.thumbprint),
            created: None,
        };
        // No backend may have started trusting it since the view was complete.
        let transaction = Transaction::delete(
            vec![
                view.at(Kind::CaCertificate, id),
                view.none_written_after(Kind::Backend),
            ],
            Kind::CaCertificate,
            id.as_str(),
        );
        self.write(&mut writer, &audit, transaction)?;
        info!(kind = "caCertificate", id = %id, "CA certificate deleted");
        Ok(())
    }

    /// A backend's resource.
    pub fn backend(&self, id: &ResourceId) -> Option<BackendResource> {
        self.with_resources(|r| r.backends.get(id).map(BackendResource::from))
    }

    /// Every backend, sorted by id.
    pub fn backends(&self) -> Vec<BackendResource> {
        self.with_resources(|r| r.backends.values().map(BackendResource::from).collect())
    }

    /// An API's resource.
    pub fn api(&self, id: &ResourceId) -> Option<ApiResource> {
        self.with_resources(|r| r.apis.get(id).map(ApiResource::from))
    }

    /// Every API, sorted by id.
    pub fn apis(&self) -> Vec<ApiResource> {
        self.with_resources(|r| r.apis.values().map(ApiResource::from).collect())
    }

    /// An API's policy XML as stored, or [`EMPTY_POLICY`] when it has none.
    pub fn policy(&self, id: &ResourceId) -> Result<String, AdminError> {
        self.with_resources(|r| match r.apis.get(id) {
            Some(api) => Ok(api
                .policy
                .as_ref()
                .map_or_else(|| EMPTY_POLICY.to_owned(), |p| p.xml.clone())),
            None => Err(AdminError::not_found("API", id)),
        })
    }

    /// Uploads (or replaces) a certificate from PKCS#12 bytes and its password.
    ///
    /// A replacement that changes the thumbprint is refused (409 `CertificateInUse`) while
    /// a backend or policy names the old thumbprint and no other certificate has it.
    pub fn put_certificate(
        &self,
        id: ResourceId,
        pkcs12: &[u8],
        password: &str,
        expect: &Expect,
    ) -> Result<(Written, CertificateInfo, u64), AdminError> {
        let cert = parse_pkcs12(id.clone(), pkcs12, password)?;
        let mut writer = self.lock();
        let view = self.view();
        let resources = &view.resources;
        expect.check("certificate", &id, view.revision_of(Kind::Certificate, &id))?;
        let mut conditions = vec![view.at(Kind::Certificate, &id)];
        let written = match resources.certificates.get(&id) {
            Some(old) => {
                if old.info.thumbprint != cert.info.thumbprint {
                    let dependents =
                        certificate_dependents(resources, &id, old.info.thumbprint, true);
                    if !dependents.is_empty() {
                        return Err(AdminError::conflict(
                            "CertificateInUse",
                            format!(
                                "Certificate {id} is referred to by its thumbprint {}; a replacement with another thumbprint would leave those references dangling.",
                                old.info.thumbprint
                            ),
                            dependents,
                        ));
                    }
                    conditions.extend(in_use_conditions(&view, &id, old.info.thumbprint));
                }
                Written::Replaced
            }
            None => Written::Created,
        };
        let record = records::encode_certificate(&cert, &self.master_key)?;
        let audit = AuditRecord {
            operation: Operation::Put,
            kind: AuditKind::Certificate,
            id: id.clone(),
            thumbprint: Some(cert.info.thumbprint),
            created: Some(written == Written::Created),
        };
        let transaction = Transaction::put(conditions, Kind::Certificate, id.as_str(), record);
        let revision = self.write(&mut writer, &audit, transaction)?;
        let info = cert.info.clone();
        info!(
            kind = "certificate",
            id = %id,
            thumbprint = %info.thumbprint,
            subject = %info.subject,
            replaced = written == Written::Replaced,
            revision,
            "certificate stored"
        );
        Ok((written, info, revision))
    }

    /// Deletes a certificate unless a backend or API policy refers to it.
    pub fn delete_certificate(&self, id: &ResourceId, expect: &Expect) -> Result<(), AdminError> {
        let mut writer = self.lock();
        let view = self.view();
        let resources = &view.resources;
        let Some(cert) = resources.certificates.get(id) else {
            return Err(AdminError::not_found("certificate", id));
        };
        expect.check("certificate", id, view.revision_of(Kind::Certificate, id))?;
        let thumbprint = cert.info.thumbprint;
        let dependents = certificate_dependents(resources, id, thumbprint, false);
        if !dependents.is_empty() {
            return Err(AdminError::conflict(
                "CertificateInUse",
                format!(
                    "Certificate {id} is in use; remove the references listed in details first."
                ),
                dependents,
            ));
        }
        let mut conditions = vec![view.at(Kind::Certificate, id)];
        conditions.extend(in_use_conditions(&view, id, thumbprint));
        let audit = AuditRecord {
            operation: Operation::Delete,
            kind: AuditKind::Certificate,
            id: id.clone(),
            thumbprint: Some(thumbprint),
            created: None,
        };
        let transaction = Transaction::delete(conditions, Kind::Certificate, id.as_str());
        self.write(&mut writer, &audit, transaction)?;
        info!(kind = "certificate", id = %id, thumbprint = %thumbprint, "certificate deleted");
        Ok(())
    }

    /// Creates or replaces a backend.
    pub fn put_backend(
        &self,
        id: ResourceId,
        body: &BackendBody,
        expect: &Expect,
    ) -> Result<(Written, BackendResource, u64), AdminError> {
        let backend = Backend::try_from((id.clone(), body))?;
        let mut writer = self.lock();
        let view = self.view();
        let resources = &view.resources;
        expect.check("backend", &id, view.revision_of(Kind::Backend, &id))?;
        let mut conditions = vec![view.at(Kind::Backend, &id)];
        for ca in &backend.trust.ca_ids {
            if !resources.ca_certificates.contains_key(ca) {
                return Err(AdminError::bad_request(
                    "CaCertificateNotFound",
                    format!("CA certificate {ca} (in tls.trustedCaCertificateIds) does not exist."),
                ));
            }
            conditions.push(view.at(Kind::CaCertificate, ca));
        }
        let thumbprint = match &backend.credential {
            Some(r) => {
                let t = resolve_certificate(resources, r)?;
                conditions.extend(view.certificate_at(r));
                Some(t)
            }
            None => None,
        };
        let written = if resources.backends.contains_key(&id) {
            Written::Replaced
        } else {
            Written::Created
        };
        let record = records::encode_backend(&backend)?;
        let audit = AuditRecord {
            operation: Operation::Put,
            kind: AuditKind::Backend,
            id: id.clone(),
            thumbprint,
            created: Some(written == Written::Created),
        };
        let transaction = Transaction::put(conditions, Kind::Backend, id.as_str(), record);
        let revision = self.write(&mut writer, &audit, transaction)?;
        let resource = BackendResource::from(&backend);
        info!(
            kind = "backend",
            id = %id,
            url = %resource.url,
            thumbprint = %thumbprint.map(|t| t.to_string()).unwrap_or_default(),
            replaced = written == Written::Replaced,
            revision,
            "backend stored"
        );
        Ok((written, resource, revision))
    }

    /// Deletes a backend unless an API uses it.
    pub fn delete_backend(&self, id: &ResourceId, expect: &Expect) -> Result<(), AdminError> {
        let mut writer = self.lock();
        let view = self.view();
        let resources = &view.resources;
        let Some(backend) = resources.backends.get(id) else {
            return Err(AdminError::not_found("backend", id));
        };
        expect.check("backend", id, view.revision_of(Kind::Backend, id))?;
        let thumbprint = backend
            .credential
            .as_ref()
            .and_then(|r| resources.find_certificate(r))
            .map(|c| c.info.thumbprint);
        let dependents: Vec<serde_json::Value> = resources
            .apis
            .values()
            .filter(|a| &a.backend_id == id)
            .map(|a| json!({"kind": "api", "id": a.id.as_str()}))
            .collect();
        if !dependents.is_empty() {
            return Err(AdminError::conflict(
                "BackendInUse",
                format!("Backend {id} is used by the APIs listed in details."),
                dependents,
            ));
        }
        let audit = AuditRecord {
            operation: Operation::Delete,
            kind: AuditKind::Backend,
            id: id.clone(),
            thumbprint,
            created: None,
        };
        // No API may have started using it since the view was complete.
        let transaction = Transaction::delete(
            vec![
                view.at(Kind::Backend, id),
                view.none_written_after(Kind::Api),
            ],
            Kind::Backend,
            id.as_str(),
        );
        self.write(&mut writer, &audit, transaction)?;
        info!(kind = "backend", id = %id, "backend deleted");
        Ok(())
    }

    /// Creates or replaces an API (its policy, if any, is kept).
    pub fn put_api(
        &self,
        id: ResourceId,
        body: &ApiBody,
        expect: &Expect,
    ) -> Result<(Written, ApiResource, u64), AdminError> {
        let mut api = Api::try_from((id.clone(), body))?;
        let mut writer = self.lock();
        let view = self.view();
        let resources = &view.resources;
        expect.check("API", &id, view.revision_of(Kind::Api, &id))?;
        if !resources.backends.contains_key(&api.backend_id) {
            return Err(AdminError::bad_request(
                "BackendNotFound",
                format!("Backend {} does not exist.", api.backend_id),
            ));
        }
        if let Some(other) = resources
            .apis
            .values()
            .find(|a| a.id != id && a.path == api.path)
        {
            return Err(AdminError::conflict(
                "PathConflict",
                format!("API {} already serves the path {}.", other.id, api.path),
                vec![json!({"kind": "api", "id": other.id.as_str()})],
            ));
        }
        let written = match resources.apis.get(&id) {
            Some(old) => {
                api.policy = old.policy.clone();
                Written::Replaced
            }
            None => Written::Created,
        };
        // The backend it routes to must still be there, and no other API may have taken the
        // path since the view was complete.
        let conditions = vec![
            view.at(Kind::Backend, &api.backend_id),
            view.none_written_after(Kind::Api),
        ];
        self.save_api(
            &mut writer,
            &view,
            api,
            written,
            AuditKind::Api,
            conditions,
            "API stored",
        )
    }

    /// Deletes an API (and its policy).
    pub fn delete_api(&self, id: &ResourceId, expect: &Expect) -> Result<(), AdminError> {
        let mut writer = self.lock();
        let view = self.view();
        let resources = &view.resources;
        let Some(api) = resources.apis.get(id) else {
            return Err(AdminError::not_found("API", id));
        };
        expect.check("API", id, view.revision_of(Kind::Api, id))?;
        let audit = AuditRecord {
            operation: Operation::Delete,
            kind: AuditKind::Api,
            id: id.clone(),
            thumbprint: effective_thumbprint(resources, api),
            created: None,
        };
        let transaction = Transaction::delete(vec![view.at(Kind::Api, id)], Kind::Api, id.as_str());
        self.write(&mut writer, &audit, transaction)?;
        info!(kind = "api", id = %id, "API deleted");
        Ok(())
    }

    /// Sets an API's policy from XML; 201 when the API had none, else 200.
    pub fn put_policy(
        &self,
        id: &ResourceId,
        xml: &str,
        expect: &Expect,
    ) -> Result<(Written, u64), AdminError> {
        let mut writer = self.lock();
        let view = self.view();
        let resources = &view.resources;
        let Some(existing) = resources.apis.get(id) else {
            return Err(AdminError::not_found("API", id));
        };
        expect.check("API", id, view.revision_of(Kind::Api, id))?;
        let policy = parse_policy(xml)?;
        let mut conditions = Vec::new();
        if let Some(r) = &policy.authentication_certificate {
            resolve_certificate(resources, r)?;
            conditions.extend(view.certificate_at(r));
        }
        let written = if existing.policy.is_some() {
            Written::Replaced
        } else {
            Written::Created
        };
        let mut api = existing.clone();
        api.policy = Some(policy);
        let (_, _, revision) = self.save_api(
            &mut writer,
            &view,
            api,
            written,
            AuditKind::Policy,
            conditions,
            "API policy stored",
        )?;
        Ok((written, revision))
    }

    /// Removes an API's policy (the API then uses its backend's credentials).
    pub fn delete_policy(&self, id: &ResourceId, expect: &Expect) -> Result<(), AdminError> {
        let mut writer = self.lock();
        let view = self.view();
        let Some(existing) = view.resources.apis.get(id).cloned() else {
            return Err(AdminError::not_found("API", id));
        };
        expect.check("API", id, view.revision_of(Kind::Api, id))?;
        let mut api = existing;
        api.policy = None;
        self.save_api(
            &mut writer,
            &view,
            api,
            Written::Replaced,
            AuditKind::Policy,
            Vec::new(),
            "API policy removed",
        )?;
        Ok(())
    }

    /// Writes an API record (route or policy change); `conditions` are what the caller
    /// checked besides the API record itself.
    #[allow(clippy::too_many_arguments)]
    fn save_api(
        &self,
        writer: &mut Writer,
        view: &View,
        api: Api,
        written: Written,
        kind: AuditKind,
        mut conditions: Vec<Condition>,
        what: &'static str,
    ) -> Result<(Written, ApiResource, u64), AdminError> {
        let resources = &view.resources;
        let record = records::encode_api(&api)?;
        let tp = effective_thumbprint(resources, &api);
        let audit = match kind {
            AuditKind::Policy if api.policy.is_none() => AuditRecord {
                operation: Operation::Delete,
                kind,
                id: api.id.clone(),
                // The certificate the removed policy named.
                thumbprint: resources
                    .apis
                    .get(&api.id)
                    .and_then(|old| old.policy.as_ref())
                    .and_then(|p| p.authentication_certificate.as_ref())
                    .and_then(|r| resources.find_certificate(r))
                    .map(|c| c.info.thumbprint),
                created: None,
            },
            _ => AuditRecord {
                operation: Operation::Put,
                kind,
                id: api.id.clone(),
                thumbprint: tp,
                created: Some(written == Written::Created),
            },
        };
        conditions.push(view.at(Kind::Api, &api.id));
        let transaction = Transaction::put(conditions, Kind::Api, api.id.as_str(), record);
        let revision = self.write(writer, &audit, transaction)?;
        let resource = ApiResource::from(&api);
        let thumbprint = tp.map(|t| t.to_string()).unwrap_or_default();
        info!(
            kind = "api",
            id = %resource.id,
            path = %resource.path,
            backend = %resource.backend_id,
            thumbprint = %thumbprint,
            revision,
            "{what}"
        );
        Ok((written, resource, revision))
    }
}

/// What a check "nothing refers to certificate `id` (thumbprint `thumbprint`)" relied on:
/// no backend and no API was written since the view was complete (a new reference would be
/// one), and the other certificates with the same thumbprint, which keep references by
/// thumbprint valid, are still the ones seen (a concurrent delete of one of them on another
/// node must not pass too).
fn in_use_conditions(view: &View, id: &ResourceId, thumbprint: Thumbprint) -> Vec<Condition> {
    let mut conditions = vec![
        view.none_written_after(Kind::Backend),
        view.none_written_after(Kind::Api),
    ];
    conditions.extend(
        view.resources
            .certificates
            .iter()
            .filter(|(other, c)| *other != id && c.info.thumbprint == thumbprint)
            .map(|(other, _)| view.at(Kind::Certificate, other)),
    );
    conditions
}

/// The thumbprint of the certificate an API presents (its policy's, else its backend's).
fn effective_thumbprint(res: &Resources, api: &Api) -> Option<Thumbprint> {
    res.effective_credential(api)
        .and_then(|r| res.find_certificate(r))
        .map(|c| c.info.thumbprint)
}

/// The thumbprint of the certificate a reference names, or 400 `CertificateNotFound`.
fn resolve_certificate(res: &Resources, r: &CertificateRef) -> Result<Thumbprint, AdminError> {
    match res.find_certificate(r) {
        Some(c) => Ok(c.info.thumbprint),
        None => Err(AdminError::bad_request(
            "CertificateNotFound",
            match r {
                CertificateRef::Id(id) => format!("Certificate {id} does not exist."),
                CertificateRef::Thumbprint(t) => {
                    format!("No certificate has the thumbprint {t}.")
                }
            },
        )),
    }
}

/// Backends and API policies whose reference would dangle without certificate `id`
/// (thumbprint `thumbprint`): references by id, and references by thumbprint when no other
/// certificate has that thumbprint. With `thumbprint_only`, references by id are ignored
/// (they follow a replacement).
fn certificate_dependents(
    res: &Resources,
    id: &ResourceId,
    thumbprint: Thumbprint,
    thumbprint_only: bool,
) -> Vec<serde_json::Value> {
    let shared = res
        .certificates
        .iter()
        .any(|(other, c)| other != id && c.info.thumbprint == thumbprint);
    let refers = |r: &CertificateRef| match r {
        CertificateRef::Id(x) => !thumbprint_only && x == id,
        CertificateRef::Thumbprint(t) => *t == thumbprint && !shared,
    };
    let backends = res
        .backends
        .values()
        .filter(|b| b.credential.as_ref().is_some_and(refers))
        .map(|b| json!({"kind": "backend", "id": b.id.as_str()}));
    let apis = res
        .apis
        .values()
        .filter(|a| {
            a.policy
                .as_ref()
                .and_then(|p| p.authentication_certificate.as_ref())
                .is_some_and(refers)
        })
        .map(|a| json!({"kind": "api", "id": a.id.as_str()}));
    backends.chain(apis).collect()
}

/// Logs references that point nowhere after loading (possible only when the store was
/// edited by hand or by another writer).
fn warn_dangling(res: &Resources) {
    for b in res.backends.values() {
        if let Some(r) = &b.credential {
            if res.find_certificate(r).is_none() {
                warn!(kind = "backend", id = %b.id, "backend names a certificate that does not exist");
            }
        }
    }
    for a in res.apis.values() {
        if !res.backends.contains_key(&a.backend_id) {
            warn!(kind = "api", id = %a.id, backend = %a.backend_id, "API names a backend that does not exist");
        }
        if let Some(r) = a
            .policy
            .as_ref()
            .and_then(|p| p.authentication_certificate.as_ref())
        {
            if res.find_certificate(r).is_none() {
                warn!(kind = "api", id = %a.id, "API policy names a certificate that does not exist");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
