//! The control plane: the in-memory [`Resources`] behind the management REST API
//! (contract §3), kept in step with the durable [`Store`] and published to the data plane.
//!
//! This module owns [`ControlPlane`] (load at start, validated writes with referential
//! rules, publish after every change), the admin token ([`resolve_token`]) and, in
//! [`http`], the axum router. Every write runs: validate → append the [`audit`] line
//! (fsynced; if it fails the change is refused) → write to the store (durable) → count it in
//! `edgegw_admin_changes_total` → make the next resources → `publish(&resources)` → swap them
//! in → respond. Writes are serialized by one mutex and run on a blocking thread (the
//! handlers of [`http`] hand them to `spawn_blocking`: fsync, DNS and TLS context building
//! never stall the async thread that also serves `/metrics` and signals). Reads take no
//! lock: they load the immutable current [`Resources`], swapped in whole by each write. A
//! failed store write leaves memory unchanged.

// Control plane: the writer mutex is held on blocking threads only (see `http::write`).
#![allow(clippy::disallowed_types)]

pub mod audit;
pub mod error;
pub mod http;
pub mod rest;
pub mod token;

use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use serde_json::json;
use tracing::{error, info, warn};

pub use audit::{AuditKind, AuditLog, AuditRecord, Operation};
pub use error::AdminError;
pub use http::router;
pub use token::{resolve_token, AdminToken, ADMIN_TOKEN_FILE};

use crate::model::certificate::parse_pkcs12;
use crate::model::policy::{parse_policy, EMPTY_POLICY};
use crate::model::{
    Api, Backend, CertificateInfo, CertificateRef, ResourceId, Resources, Thumbprint,
};
use crate::store::{records, Kind, MasterKey, Store, StoreError};
use rest::{ApiBody, ApiResource, BackendBody, BackendResource};

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

/// What only a writer touches (behind the write mutex).
struct State {
    store: Box<dyn Store>,
    master_key: MasterKey,
    publish: Publish,
    /// `data_dir/audit.log`; `None` only where no data dir exists (unit tests).
    audit: Option<AuditLog>,
}

impl State {
    /// Commits one change durably: the audit line first (write-ahead, fsynced; if it cannot
    /// be written the change is refused and nothing changes), then the store write `commit`.
    /// A failed store write is followed by an `"outcome": "failed"` audit line.
    fn durable(
        &mut self,
        record: &AuditRecord,
        commit: impl FnOnce(&dyn Store) -> Result<(), StoreError>,
    ) -> Result<(), AdminError> {
        if let Some(log) = self.audit.as_mut() {
            log.append(record, None).map_err(|e| {
                error!(
                    error = %e,
                    path = %log.path().display(),
                    kind = record.kind.as_str(),
                    id = %record.id,
                    "audit log write failed; the change is refused"
                );
                AdminError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "AuditLogError",
                    "The change could not be written to the audit log; nothing was changed.",
                )
            })?;
        }
        if let Err(e) = commit(&*self.store) {
            if let Some(log) = self.audit.as_mut() {
                if let Err(ae) = log.append(record, Some("failed")) {
                    error!(error = %ae, path = %log.path().display(), "audit log write failed");
                }
            }
            return Err(e.into());
        }
        crate::metrics::record_admin_change(record.kind.as_str(), record.operation.as_str());
        Ok(())
    }
}

/// The control plane: resources in memory, their durable store, and the publish hook.
pub struct ControlPlane {
    /// Held by one writer at a time, on a blocking thread.
    state: Mutex<State>,
    /// What reads see: replaced whole by each committed write, never changed in place.
    current: ArcSwap<Resources>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Loads every record from the store (a record that fails to decode is an error naming
    /// it, never silently dropped), then calls `publish` once.
    pub fn open(
        store: Box<dyn Store>,
        master_key: MasterKey,
        publish: Publish,
    ) -> Result<Self, StoreError> {
        let resources = records::load(&*store, &master_key)?;
        warn_dangling(&resources);
        info!(
            certificates = resources.certificates.len(),
            backends = resources.backends.len(),
            apis = resources.apis.len(),
            "control plane loaded the store"
        );
        publish(&resources);
        Ok(Self {
            state: Mutex::new(State {
                store,
                master_key,
                publish,
                audit: None,
            }),
            current: ArcSwap::from_pointee(resources),
        })
    }

    /// Records every later change in `log` (see [`audit`]): one JSON line, fsynced before
    /// the change is committed.
    #[must_use]
    pub fn with_audit_log(self, log: AuditLog) -> Self {
        self.lock().audit = Some(log);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave memory half-changed: every write
        // builds the next resources first and swaps them in whole after the store write,
        // so the state behind a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the current resources (for reads; no lock is taken).
    pub fn with_resources<R>(&self, f: impl FnOnce(&Resources) -> R) -> R {
        f(&self.current.load())
    }

    /// The current resources (an immutable copy that later writes do not change).
    pub fn resources(&self) -> Arc<Resources> {
        self.current.load_full()
    }

    /// The one commit step of a write (under the write lock, after the store write): a copy
    /// of `base` (the resources the write was checked against) with `change` applied is
    /// published to the data plane and becomes what reads see.
    fn commit(&self, state: &State, base: &Resources, change: impl FnOnce(&mut Resources)) {
        let mut next = base.clone();
        change(&mut next);
        (state.publish)(&next);
        self.current.store(Arc::new(next));
    }

    /// Publishes the current resources again (after a backend's address changed in DNS).
    pub fn republish(&self) {
        let state = self.lock();
        (state.publish)(&self.current.load());
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
    ) -> Result<(Written, CertificateInfo), AdminError> {
        let cert = parse_pkcs12(id.clone(), pkcs12, password)?;
        let mut state = self.lock();
        let state = &mut *state;
        let resources = self.current.load();
        let written = match resources.certificates.get(&id) {
            Some(old) => {
                if old.info.thumbprint != cert.info.thumbprint {
                    let dependents =
                        certificate_dependents(&resources, &id, old.info.thumbprint, true);
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
                }
                Written::Replaced
            }
            None => Written::Created,
        };
        let record = records::encode_certificate(&cert, &state.master_key)?;
        let audit = AuditRecord {
            operation: Operation::Put,
            kind: AuditKind::Certificate,
            id: id.clone(),
            thumbprint: Some(cert.info.thumbprint),
            created: Some(written == Written::Created),
        };
        state.durable(&audit, |s| s.put(Kind::Certificate, id.as_str(), &record))?;
        let info = cert.info.clone();
        self.commit(state, &resources, |next| {
            next.certificates.insert(id.clone(), Arc::new(cert));
        });
        info!(
            kind = "certificate",
            id = %id,
            thumbprint = %info.thumbprint,
            subject = %info.subject,
            replaced = written == Written::Replaced,
            "certificate stored"
        );
        Ok((written, info))
    }

    /// Deletes a certificate unless a backend or API policy refers to it.
    pub fn delete_certificate(&self, id: &ResourceId) -> Result<(), AdminError> {
        let mut state = self.lock();
        let state = &mut *state;
        let resources = self.current.load();
        let Some(cert) = resources.certificates.get(id) else {
            return Err(AdminError::not_found("certificate", id));
        };
        let thumbprint = cert.info.thumbprint;
        let dependents = certificate_dependents(&resources, id, thumbprint, false);
        if !dependents.is_empty() {
            return Err(AdminError::conflict(
                "CertificateInUse",
                format!(
                    "Certificate {id} is in use; remove the references listed in details first."
                ),
                dependents,
            ));
        }
        let audit = AuditRecord {
            operation: Operation::Delete,
            kind: AuditKind::Certificate,
            id: id.clone(),
            thumbprint: Some(thumbprint),
            created: None,
        };
        state.durable(&audit, |s| s.delete(Kind::Certificate, id.as_str()))?;
        self.commit(state, &resources, |next| {
            next.certificates.remove(id);
        });
        info!(kind = "certificate", id = %id, thumbprint = %thumbprint, "certificate deleted");
        Ok(())
    }

    /// Creates or replaces a backend.
    pub fn put_backend(
        &self,
        id: ResourceId,
        body: &BackendBody,
    ) -> Result<(Written, BackendResource), AdminError> {
        let backend = Backend::try_from((id.clone(), body))?;
        let mut state = self.lock();
        let state = &mut *state;
        let resources = self.current.load();
        let thumbprint = match &backend.credential {
            Some(r) => Some(resolve_certificate(&resources, r)?),
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
        state.durable(&audit, |s| s.put(Kind::Backend, id.as_str(), &record))?;
        let resource = BackendResource::from(&backend);
        self.commit(state, &resources, |next| {
            next.backends.insert(id.clone(), backend);
        });
        info!(
            kind = "backend",
            id = %id,
            url = %resource.url,
            thumbprint = %thumbprint.map(|t| t.to_string()).unwrap_or_default(),
            replaced = written == Written::Replaced,
            "backend stored"
        );
        Ok((written, resource))
    }

    /// Deletes a backend unless an API uses it.
    pub fn delete_backend(&self, id: &ResourceId) -> Result<(), AdminError> {
        let mut state = self.lock();
        let state = &mut *state;
        let resources = self.current.load();
        let Some(backend) = resources.backends.get(id) else {
            return Err(AdminError::not_found("backend", id));
        };
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
        state.durable(&audit, |s| s.delete(Kind::Backend, id.as_str()))?;
        self.commit(state, &resources, |next| {
            next.backends.remove(id);
        });
        info!(kind = "backend", id = %id, "backend deleted");
        Ok(())
    }

    /// Creates or replaces an API (its policy, if any, is kept).
    pub fn put_api(
        &self,
        id: ResourceId,
        body: &ApiBody,
    ) -> Result<(Written, ApiResource), AdminError> {
        let mut api = Api::try_from((id.clone(), body))?;
        let mut state = self.lock();
        let state = &mut *state;
        let resources = self.current.load();
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
        self.save_api(state, api, written, AuditKind::Api, "API stored")
    }

    /// Deletes an API (and its policy).
    pub fn delete_api(&self, id: &ResourceId) -> Result<(), AdminError> {
        let mut state = self.lock();
        let state = &mut *state;
        let resources = self.current.load();
        let Some(api) = resources.apis.get(id) else {
            return Err(AdminError::not_found("API", id));
        };
        let audit = AuditRecord {
            operation: Operation::Delete,
            kind: AuditKind::Api,
            id: id.clone(),
            thumbprint: effective_thumbprint(&resources, api),
            created: None,
        };
        state.durable(&audit, |s| s.delete(Kind::Api, id.as_str()))?;
        self.commit(state, &resources, |next| {
            next.apis.remove(id);
        });
        info!(kind = "api", id = %id, "API deleted");
        Ok(())
    }

    /// Sets an API's policy from XML; 201 when the API had none, else 200.
    pub fn put_policy(&self, id: &ResourceId, xml: &str) -> Result<Written, AdminError> {
        let mut state = self.lock();
        let state = &mut *state;
        let resources = self.current.load();
        let Some(existing) = resources.apis.get(id) else {
            return Err(AdminError::not_found("API", id));
        };
        let policy = parse_policy(xml)?;
        if let Some(r) = &policy.authentication_certificate {
            resolve_certificate(&resources, r)?;
        }
        let written = if existing.policy.is_some() {
            Written::Replaced
        } else {
            Written::Created
        };
        let mut api = existing.clone();
        api.policy = Some(policy);
        self.save_api(state, api, written, AuditKind::Policy, "API policy stored")?;
        Ok(written)
    }

    /// Removes an API's policy (the API then uses its backend's credentials).
    pub fn delete_policy(&self, id: &ResourceId) -> Result<(), AdminError> {
        let mut state = self.lock();
        let state = &mut *state;
        let Some(existing) = self.current.load().apis.get(id).cloned() else {
            return Err(AdminError::not_found("API", id));
        };
        let mut api = existing;
        api.policy = None;
        self.save_api(
            state,
            api,
            Written::Replaced,
            AuditKind::Policy,
            "API policy removed",
        )?;
        Ok(())
    }

    fn save_api(
        &self,
        state: &mut State,
        api: Api,
        written: Written,
        kind: AuditKind,
        what: &'static str,
    ) -> Result<(Written, ApiResource), AdminError> {
        let resources = self.current.load();
        let record = records::encode_api(&api)?;
        let tp = effective_thumbprint(&resources, &api);
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
        state.durable(&audit, |s| s.put(Kind::Api, api.id.as_str(), &record))?;
        let resource = ApiResource::from(&api);
        let thumbprint = tp.map(|t| t.to_string()).unwrap_or_default();
        self.commit(state, &resources, |next| {
            next.apis.insert(api.id.clone(), api);
        });
        info!(
            kind = "api",
            id = %resource.id,
            path = %resource.path,
            backend = %resource.backend_id,
            thumbprint = %thumbprint,
            "{what}"
        );
        Ok((written, resource))
    }
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
