//! Fleet mode (`store.kind = "etcd"`): how one node joins the fleet at start, follows the
//! shared store, keeps its local copy, and shares the session-ticket keys.
//!
//! At start the node reads the whole store from etcd, checks that its master key is the
//! fleet's (refusing to start otherwise), makes sure the fleet has ticket keys, and starts
//! the one watch. When etcd cannot be reached it starts from its local copy
//! (`store::cache`) and says so; without one it starts with no configuration (the data
//! plane answers 503 on every path) and takes a full copy as soon as etcd answers. The watch then
//! hands every change to [`FleetNode`]: the control plane applies it (and publishes the
//! next snapshot when something changed), the local copy is rewritten at most once a
//! second, and ticket-key changes are installed in the listener's [`TicketKeys`].
//!
//! Ticket keys: a record of the current and previous secret in etcd, sealed with the master
//! key. Every second each node checks whether the current one is older than
//! `listener.ticket_key_rotation`; if so it tries to replace the record, on the revision it
//! knows: of nodes trying at once exactly one transaction wins, and all of them (the winner
//! too) install the new keys when the watch brings them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::{fail, RunError};
use crate::admin::{self, ControlPlane, Publish};
use crate::metrics;
use crate::store::cache::LocalCopy;
use crate::store::etcd::{EtcdSettings, EtcdStore, Follower, Snapshot, KEY_CHECK, TICKET_KEYS};
use crate::store::fleet::{self, TicketSecrets};
use crate::store::{Contents, Kind, MasterKey, Record, StoreError, Update};
use crate::tls::tickets::TicketKeys;

/// How often the local copy is rewritten at most, and a rotation is checked for.
const TICK: Duration = Duration::from_secs(1);

/// One node of a fleet: the store, the control plane it feeds, the ticket keys.
pub(super) struct FleetNode {
    store: EtcdStore,
    control: Arc<ControlPlane>,
    master_key: MasterKey,
    tickets: TicketKeys,
    rotation: Duration,
    /// The fleet's ticket secrets as last seen, with the record's revision.
    secrets: ArcSwapOption<(TicketSecrets, u64)>,
    /// What the local copy is written from: every record, by kind and id.
    mirror: tokio::sync::Mutex<Mirror>,
    copy: LocalCopy,
    /// Whether this node checked its master key against the fleet's.
    key_checked: AtomicBool,
    /// Whether the node has a configuration to publish (see [`start`]).
    configured: Arc<AtomicBool>,
}

#[derive(Default)]
struct Mirror {
    /// Shared with a copy being written, which takes a cheap clone of the map and writes it
    /// without holding the lock (the watch must never wait for a file write).
    records: BTreeMap<(Kind, String), Arc<Record>>,
    revision: u64,
    dirty: bool,
}

impl Mirror {
    fn of(contents: &Contents) -> Self {
        Self {
            records: contents
                .records
                .iter()
                .map(|r| ((r.kind, r.id.clone()), Arc::new(r.clone())))
                .collect(),
            revision: contents.revision,
            dirty: true,
        }
    }
}

/// What [`start`] needs from the runtime.
pub(super) struct FleetStart<'a> {
    pub settings: EtcdSettings,
    pub runtime: &'a tokio::runtime::Runtime,
    pub data_dir: &'a Path,
    pub node: String,
    pub master_key: &'a dyn Fn() -> Result<MasterKey, RunError>,
    pub publish: Publish,
    pub tickets: TicketKeys,
    pub rotation: Duration,
    /// `listener.client_ca_ids` (the control plane refuses to delete them).
    pub listener_ca_ids: Vec<crate::model::ResourceId>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Joins the fleet (see the module documentation) and starts following it.
pub(super) fn start(s: FleetStart<'_>) -> Result<Arc<FleetNode>, RunError> {
    let store = EtcdStore::new(s.settings.clone(), s.runtime.handle().clone())
        .map_err(|e| fail("store", e))?;
    let copy = LocalCopy::new(s.data_dir);
    let master_key = (s.master_key)()?;
    // Each endpoint once (a failed request moves the store to the next one).
    let mut read = s.runtime.block_on(store.read_all());
    for _ in 1..s.settings.endpoints.len() {
        if !matches!(read, Err(StoreError::Unavailable(_))) {
            break;
        }
        read = s.runtime.block_on(store.read_all());
    }
    let (snapshot, online) = match read {
        Ok(snapshot) => {
            check_master_key(&store, &master_key)?;
            (snapshot, true)
        }
        Err(StoreError::Unavailable(why)) => {
            match copy
                .load()
                .map_err(|e| fail("the local copy of the fleet's store", e))?
            {
                Some(contents) => {
                    tracing::warn!(
                        error = %why,
                        revision = contents.revision,
                        copy = %copy.path().display(),
                        "etcd cannot be reached: starting from this node's local copy of the fleet's configuration; changes apply when etcd is back"
                    );
                    let snapshot = Snapshot {
                        contents,
                        ticket_keys: None,
                    };
                    (snapshot, false)
                }
                None => {
                    tracing::warn!(
                        error = %why,
                        endpoints = ?s.settings.endpoints,
                        "etcd cannot be reached and this node has no local copy of the fleet's configuration yet: serving 503 on every route until etcd answers"
                    );
                    (Snapshot::default(), false)
                }
            }
        }
        Err(e) => return Err(fail("reading the fleet's store", e)),
    };
    metrics::record_store_connected(online);
    let contents = snapshot.contents;
    // Without any configuration (no etcd, no local copy) nothing is published: the data
    // plane's first snapshot says "not configured" (503) until the first copy from etcd.
    let configured = Arc::new(AtomicBool::new(online || contents.revision > 0));
    let publish: Publish = {
        let (configured, publish) = (configured.clone(), s.publish);
        Box::new(move |resources| {
            if configured.load(Ordering::Relaxed) {
                publish(resources);
            }
        })
    };
    let control = Arc::new(
        ControlPlane::from_contents(
            Box::new(store.clone()),
            contents.clone(),
            (s.master_key)()?,
            publish,
        )
        .map_err(|e| fail("loading the fleet's store", e))?
        .with_listener_ca_ids(s.listener_ca_ids.clone())
        .with_audit_log(
            admin::AuditLog::open(s.data_dir)
                .map_err(|e| fail("audit log", e))?
                .with_node(s.node.clone()),
        ),
    );
    let node = Arc::new(FleetNode {
        store: store.clone(),
        control,
        master_key,
        tickets: s.tickets,
        rotation: s.rotation,
        secrets: ArcSwapOption::empty(),
        mirror: tokio::sync::Mutex::new(Mirror::of(&contents)),
        copy,
        key_checked: AtomicBool::new(online),
        configured,
    });
    if online {
        let (record, revision) = node.ensure_ticket_keys(snapshot.ticket_keys)?;
        node.install_ticket_keys(&record, revision, false);
        node.save_copy();
    }
    tracing::info!(
        node = %s.node,
        revision = contents.revision,
        online,
        "fleet node started: following the shared store"
    );
    store.follow(contents.revision, node.clone());
    let writer = node.clone();
    s.runtime.spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            let w = writer.clone();
            let _ = tokio::task::spawn_blocking(move || {
                w.save_copy();
                w.rotate_if_due();
            })
            .await;
        }
    });
    Ok(node)
}

/// Refuses a node whose master key is not the fleet's; the first node writes the check.
fn check_master_key(store: &EtcdStore, key: &MasterKey) -> Result<(), RunError> {
    let refuse = |e: StoreError| fail("store.master_key_file / EDGEGW_MASTER_KEY", e);
    match store
        .get_fleet_key(KEY_CHECK)
        .map_err(|e| fail("etcd", e))?
    {
        Some((record, _)) => fleet::verify_key_check(key, &record).map_err(refuse),
        None => {
            let record = fleet::key_check(key).map_err(refuse)?;
            if store
                .put_fleet_key(KEY_CHECK, record, 0)
                .map_err(|e| fail("etcd", e))?
            {
                tracing::info!(
                    "this node is the first of the fleet: it wrote the master-key check"
                );
                return Ok(());
            }
            // Another node wrote it at the same moment: check against theirs.
            check_master_key(store, key)
        }
    }
}

impl FleetNode {
    /// Whether the node has a configuration (from etcd or its local copy): shared, so that
    /// `GET /readyz` can ask.
    pub(super) fn configured(&self) -> Arc<AtomicBool> {
        self.configured.clone()
    }

    /// The control plane this node feeds.
    pub(super) fn control(&self) -> Arc<ControlPlane> {
        self.control.clone()
    }

    /// The fleet's ticket-key record, creating the first one when there is none.
    fn ensure_ticket_keys(
        &self,
        found: Option<(Vec<u8>, u64)>,
    ) -> Result<(Vec<u8>, u64), RunError> {
        if let Some(found) = found {
            return Ok(found);
        }
        let first = TicketSecrets::first(now())
            .and_then(|t| t.seal(&self.master_key))
            .map_err(|e| fail("ticket keys", e))?;
        // Won or lost to another node starting at once: read what the fleet has now.
        self.store
            .put_fleet_key(TICKET_KEYS, first, 0)
            .map_err(|e| fail("etcd", e))?;
        self.store
            .get_fleet_key(TICKET_KEYS)
            .map_err(|e| fail("etcd", e))?
            .ok_or_else(|| {
                RunError("etcd: the fleet's ticket keys vanished after they were written".into())
            })
    }

    /// Installs the fleet's ticket keys from their sealed record.
    fn install_ticket_keys(&self, record: &[u8], revision: u64, count: bool) {
        let secrets = match TicketSecrets::open(&self.master_key, record) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "the fleet's ticket keys cannot be opened; keeping the current ones");
                return;
            }
        };
        if self
            .secrets
            .load()
            .as_ref()
            .is_some_and(|known| known.1 >= revision)
        {
            return;
        }
        let previous = secrets.previous.as_ref().map(|p| p.expose().as_slice());
        match self
            .tickets
            .install_shared(secrets.current.expose(), previous)
        {
            Ok(changed) => {
                if changed && count {
                    metrics::record_ticket_rotation();
                    tracing::info!(
                        revision,
                        "installed the fleet's rotated session ticket keys"
                    );
                }
                self.secrets.store(Some(Arc::new((secrets, revision))));
            }
            Err(e) => tracing::error!(error = %e, "installing the fleet's ticket keys failed"),
        }
    }

    /// Rotates the fleet's ticket keys when the current one is older than the rotation
    /// period; another node may win the race, which is just as good.
    fn rotate_if_due(&self) {
        let Some(known) = self.secrets.load_full() else {
            return;
        };
        let (secrets, revision) = &*known;
        let period = i64::try_from(self.rotation.as_secs()).unwrap_or(i64::MAX);
        let now = now();
        if now < secrets.rotated_at.saturating_add(period) {
            return;
        }
        let next = match secrets.rotated(now).and_then(|n| n.seal(&self.master_key)) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "preparing a ticket-key rotation failed");
                return;
            }
        };
        match self.store.put_fleet_key(TICKET_KEYS, next, *revision) {
            Ok(true) => tracing::info!("this node rotated the fleet's session ticket keys"),
            Ok(false) => tracing::debug!("another node rotated the ticket keys first"),
            Err(e) => tracing::warn!(error = %e, "ticket-key rotation postponed: etcd unavailable"),
        }
    }

    /// Rewrites the local copy when it changed since the last write.
    fn save_copy(&self) {
        let (records, revision) = {
            let mut mirror = self.mirror.blocking_lock();
            if !mirror.dirty {
                return;
            }
            mirror.dirty = false;
            (mirror.records.clone(), mirror.revision)
        };
        if let Err(e) = self.copy.save(records.values().map(|r| &**r), revision) {
            tracing::warn!(error = %e, "the local copy of the fleet's configuration could not be written; retrying");
            self.mirror.blocking_lock().dirty = true;
        }
    }

    fn check_key_once(&self) {
        if self.key_checked.load(Ordering::Relaxed) {
            return;
        }
        match check_master_key(&self.store, &self.master_key) {
            Ok(()) => self.key_checked.store(true, Ordering::Relaxed),
            Err(e) => {
                // Started from the local copy with a key the fleet does not use: going on
                // would serve a configuration this node can no longer follow.
                tracing::error!(error = %e, "refusing to go on as a member of this fleet");
                std::process::exit(1);
            }
        }
    }
}

impl Follower for FleetNode {
    fn apply(&self, updates: Vec<Update>, revision: u64) {
        {
            let mut mirror = self.mirror.blocking_lock();
            for u in &updates {
                let key = (u.kind, u.id.clone());
                match &u.value {
                    Some(value) => {
                        mirror.records.insert(
                            key,
                            Arc::new(Record {
                                kind: u.kind,
                                id: u.id.clone(),
                                value: value.clone(),
                                revision: u.revision,
                            }),
                        );
                    }
                    None => {
                        mirror.records.remove(&key);
                    }
                }
            }
            mirror.revision = mirror.revision.max(revision);
            mirror.dirty = true;
        }
        self.control.apply(&updates, revision);
    }

    fn reload(&self, contents: Contents) {
        let first = !self.configured.swap(true, Ordering::Relaxed);
        let changed = self.control.reload(&contents);
        if first && !changed {
            // The first configuration of a node that had none, even an empty one.
            self.control.republish();
        }
        metrics::record_store_reload(changed);
        tracing::info!(
            revision = contents.revision,
            changed,
            "reloaded the fleet's store"
        );
        *self.mirror.blocking_lock() = Mirror::of(&contents);
    }

    fn ticket_keys(&self, record: Vec<u8>, revision: u64) {
        self.install_ticket_keys(&record, revision, true);
    }

    fn connected(&self, connected: bool) {
        metrics::record_store_connected(connected);
        if connected {
            self.check_key_once();
            if self.secrets.load().is_none() {
                // Started from the local copy: take the fleet's ticket keys now.
                match self.store.get_fleet_key(TICKET_KEYS) {
                    Ok(found) => match self.ensure_ticket_keys(found) {
                        Ok((record, revision)) => {
                            self.install_ticket_keys(&record, revision, false)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the fleet's ticket keys are not available yet")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "the fleet's ticket keys are not available yet")
                    }
                }
            }
        }
    }
}
