//! The shared store of a fleet: etcd v3 (gRPC), behind the same [`Store`] trait as the
//! embedded store.
//!
//! Keys, one per resource, under the configured prefix: `{prefix}certificates/{id}`,
//! `{prefix}backends/{id}`, `{prefix}apis/{id}`; the fleet's own keys under
//! `{prefix}fleet/` (its session-ticket keys and the master-key check, see
//! [`super::fleet`]). Values are the same records as in the embedded store; a record's
//! revision is etcd's `mod_revision`, the store revision etcd's header revision.
//!
//! One connection per process: one gRPC channel to one endpoint at a time (the next
//! endpoint after a failure), shared by every request and by the one watch. Every request
//! is bounded by the configured timeout; a request that does not finish in time, or finds
//! no member, is [`StoreError::Unavailable`] and the next one reconnects.
//!
//! [`EtcdStore::follow`] runs the one watch of the process over the whole prefix, from the
//! revision the node has applied, and hands every change to a [`Follower`] in revision
//! order. It reconnects with backoff and resumes from the last revision it delivered; when
//! etcd has compacted that revision away, it reads everything once and hands over the copy
//! ([`Follower::reload`]), which changes nothing when the data is the same. It never polls.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions,
};
use tokio::runtime::Handle;

use super::{Change, Condition, Contents, Kind, Record, Store, StoreError, Transaction, Update};

/// The HTTP/2 keep-alive ping interval to etcd.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// `http://host:port` client URLs of etcd members.
    pub endpoints: Vec<String>,
    /// Key prefix; ends with `/`.
    pub prefix: String,
    /// The longest one request may take, connecting included.
    pub timeout: Duration,
}

/// The etcd directory of each kind under the prefix.
fn directory(kind: Kind) -> &'static str {
    match kind {
        Kind::Certificate => "certificates/",
        Kind::CaCertificate => "caCertificates/",
        Kind::Backend => "backends/",
        Kind::Api => "apis/",
    }
}

/// Where the fleet's own keys live under the prefix.
pub const FLEET_DIRECTORY: &str = "fleet/";

/// The key of the fleet's session-ticket keys (sealed, see `super::fleet`).
pub const TICKET_KEYS: &str = "fleet/ticket-keys";

/// The key of the master-key check (sealed, see `super::fleet`).
pub const KEY_CHECK: &str = "fleet/key-check";

/// The end of the range of keys that start with `prefix` (etcd's `WithPrefix`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// What a key under the prefix is.
#[derive(Debug, PartialEq, Eq)]
enum Key<'a> {
    Resource(Kind, &'a str),
    TicketKeys,
    /// Another key of ours or someone else's under the prefix: ignored.
    Other,
}

fn classify<'a>(prefix: &str, key: &'a [u8]) -> Key<'a> {
    let Some(rest) = key
        .strip_prefix(prefix.as_bytes())
        .and_then(|r| std::str::from_utf8(r).ok())
    else {
        return Key::Other;
    };
    if rest == TICKET_KEYS {
        return Key::TicketKeys;
    }
    for kind in Kind::ALL {
        if let Some(id) = rest.strip_prefix(directory(kind)) {
            if !id.is_empty() {
                return Key::Resource(kind, id);
            }
        }
    }
    Key::Other
}

fn revision(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Everything under the prefix at one revision: the resources and the fleet's ticket keys.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub contents: Contents,
    /// The sealed ticket-key record and its revision, when the fleet has one.
    pub ticket_keys: Option<(Vec<u8>, u64)>,
}

/// Receives what the watch sees, in revision order. Called on a blocking thread; a call
/// may take as long as it needs (decoding, publishing): the watch waits for it.
pub trait Follower: Send + Sync + 'static {
    /// Resource changes; afterwards the node is complete up to `revision`.
    fn apply(&self, updates: Vec<Update>, revision: u64);
    /// A complete copy, after the watch lost its place (compaction) or on reconnecting.
    fn reload(&self, contents: Contents);
    /// The fleet's sealed ticket-key record changed (or was read with a copy).
    fn ticket_keys(&self, record: Vec<u8>, revision: u64);
    /// Whether etcd is reachable (the watch runs).
    fn connected(&self, connected: bool);
}

struct Inner {
    settings: EtcdSettings,
    runtime: Handle,
    /// The one client; `None` after a failure, until the next request connects again.
    client: tokio::sync::Mutex<Option<Client>>,
    /// Which endpoint the next connection tries.
    next_endpoint: AtomicUsize,
    /// Whether the last request or watch reached etcd.
    connected: AtomicBool,
    /// Connections made (the benchmark checks there is one per process while etcd stays up).
    connections: AtomicUsize,
}

/// A [`Store`] on etcd. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.settings.endpoints)
            .field("prefix", &self.inner.settings.prefix)
            .finish_non_exhaustive()
    }
}

/// Whether a request failed before it reached etcd: tonic answers a channel that cannot
/// connect with `Unavailable` "tcp connect error" (nothing was sent, so trying another
/// member is safe even for a write).
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && status.message() == "tcp connect error"
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

impl EtcdStore {
    /// A store on `settings`, whose requests and watch run on `runtime` (a tokio runtime
    /// that outlives the store). Connects on first use.
    pub fn new(settings: EtcdSettings, runtime: Handle) -> Result<Self, StoreError> {
        if settings.endpoints.is_empty() {
            return Err(StoreError::Unsupported(
                "store.etcd_endpoints is empty".into(),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                runtime,
                client: tokio::sync::Mutex::new(None),
                next_endpoint: AtomicUsize::new(0),
                connected: AtomicBool::new(false),
                connections: AtomicUsize::new(0),
            }),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.settings.prefix
    }

    /// Whether the last request or the watch reached etcd.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// How many connections this store has made so far.
    pub fn connections_made(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    fn key(&self, kind: Kind, id: &str) -> Vec<u8> {
        format!("{}{}{id}", self.inner.settings.prefix, directory(kind)).into_bytes()
    }

    /// The full key of one of the fleet's own keys ([`TICKET_KEYS`], [`KEY_CHECK`]).
    pub fn fleet_key(&self, name: &str) -> Vec<u8> {
        format!("{}{name}", self.inner.settings.prefix).into_bytes()
    }

    /// Runs `f` to completion on the store's runtime, from a thread that is not async
    /// (a blocking thread of the control plane, the start-up, the migrate command).
    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.inner.runtime.block_on(f)
    }

    /// The client, connecting (to the next endpoint after a failure) when there is none.
    async fn client(&self) -> Result<Client, StoreError> {
        let mut slot = self.inner.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let endpoints = &self.inner.settings.endpoints;
        let i = self.inner.next_endpoint.load(Ordering::Relaxed) % endpoints.len();
        let timeout = self.inner.settings.timeout;
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            // Tells a dead connection from an idle one while the watch waits for events.
            // Not more often than every 5 s: etcd closes connections that ping more often
            // (its --grpc-keepalive-min-time) with "too many pings".
            .with_keep_alive(KEEPALIVE, timeout)
            .with_keep_alive_while_idle(true);
        let client = tokio::time::timeout(
            timeout,
            Client::connect([endpoints[i].as_str()], Some(options)),
        )
        .await
        .map_err(|_| unavailable(&format!("connecting to {}", endpoints[i]), "timed out"))?
        .map_err(|e| unavailable(&format!("connecting to {}", endpoints[i]), e))?;
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// After a failed request: drop the connection; the next request tries the next
    /// endpoint.
    async fn failed(&self) {
        self.inner.connected.store(false, Ordering::Relaxed);
        let mut slot = self.inner.client.lock().await;
        if slot.take().is_some() {
            self.inner.next_endpoint.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One request, bounded by the timeout; a failure to reach etcd drops the connection.
    /// A request that never left (no member answered the connection) is tried once more on
    /// each other endpoint, so losing the member a node talks to costs no failed request.
    /// A request that was sent but not answered is `Unavailable` for a read and
    /// `Unconfirmed` for a write (`sent_is_unconfirmed`): it may have been applied.
    async fn request<T, F, Fut>(
        &self,
        what: &str,
        sent_is_unconfirmed: bool,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let timeout = self.inner.settings.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempts = self.inner.settings.endpoints.len();
        loop {
            attempts -= 1;
            let outcome = match self.client().await {
                Ok(client) => match tokio::time::timeout_at(deadline, f(client)).await {
                    Ok(Ok(value)) => Ok(value),
                    Ok(Err(e)) if never_sent(&e) => Err((true, unavailable(what, e))),
                    Ok(Err(e)) if sent_is_unconfirmed => {
                        Err((false, StoreError::Unconfirmed(format!("{what}: {e}"))))
                    }
                    Ok(Err(e)) => Err((false, unavailable(what, e))),
                    Err(_) if sent_is_unconfirmed => Err((
                        false,
                        StoreError::Unconfirmed(format!("{what}: no answer within {timeout:?}")),
                    )),
                    Err(_) => Err((
                        false,
                        unavailable(what, format!("no answer within {timeout:?}")),
                    )),
                },
                Err(e) => Err((true, e)),
            };
            match outcome {
                Ok(value) => {
                    self.inner.connected.store(true, Ordering::Relaxed);
                    return Ok(value);
                }
                Err((retry, e)) => {
                    self.failed().await;
                    if !retry || attempts == 0 || tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Every key under the prefix at one revision, read in pages (a store of many
    /// certificates is larger than one gRPC message).
    pub async fn read_all(&self) -> Result<Snapshot, StoreError> {
        const PAGE: i64 = 500;
        let prefix = self.inner.settings.prefix.clone();
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        let mut at = 0i64;
        let mut snapshot = Snapshot::default();
        let mut records: Vec<Record> = Vec::new();
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(at);
            let key = from.clone();
            let page = self
                .request("reading the store", false, |mut c| {
                    let (key, options) = (key.clone(), options.clone());
                    async move { c.get(key, Some(options)).await }
                })
                .await?;
            if at == 0 {
                at = page.header().map_or(0, |h| h.revision());
            }
            for kv in page.kvs() {
                match classify(&prefix, kv.key()) {
                    Key::Resource(kind, id) => records.push(Record {
                        kind,
                        id: id.to_owned(),
                        value: kv.value().to_vec(),
                        revision: revision(kv.mod_revision()),
                    }),
                    Key::TicketKeys => {
                        snapshot.ticket_keys =
                            Some((kv.value().to_vec(), revision(kv.mod_revision())));
                    }
                    Key::Other => {}
                }
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        // The order of the embedded store: by kind, then by id.
        records.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
        snapshot.contents = Contents {
            records,
            revision: revision(at),
        };
        Ok(snapshot)
    }

    /// One of the fleet's own keys and its revision.
    pub fn get_fleet_key(&self, name: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let key = self.fleet_key(name);
        self.block_on(async {
            let response = self
                .request("reading the store", false, |mut c| {
                    let key = key.clone();
                    async move { c.get(key, None).await }
                })
                .await?;
            Ok(response
                .kvs()
                .first()
                .map(|kv| (kv.value().to_vec(), revision(kv.mod_revision()))))
        })
    }

    /// Writes one of the fleet's own keys if it is still at `expected` (0: absent). Returns
    /// whether this write won (false: another node wrote it first).
    pub fn put_fleet_key(
        &self,
        name: &str,
        value: Vec<u8>,
        expected: u64,
    ) -> Result<bool, StoreError> {
        let key = self.fleet_key(name);
        self.block_on(async {
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    signed(expected),
                )])
                .and_then([TxnOp::put(key, value, None)]);
            let response = self
                .request("writing the store", true, |mut c| {
                    let txn = txn.clone();
                    async move { c.txn(txn).await }
                })
                .await?;
            Ok(response.succeeded())
        })
    }

    /// Copies records into an empty store (the migrate command): in transactions of at most
    /// 100 records, each record written only if its key does not exist yet.
    pub fn import(&self, records: &[Record]) -> Result<(), StoreError> {
        for chunk in records.chunks(100) {
            let conditions = chunk
                .iter()
                .map(|r| Condition::At {
                    kind: r.kind,
                    id: r.id.clone(),
                    revision: 0,
                })
                .collect();
            let changes = chunk
                .iter()
                .map(|r| Change::Put {
                    kind: r.kind,
                    id: r.id.clone(),
                    value: r.value.clone(),
                })
                .collect();
            self.commit(&Transaction {
                conditions,
                changes,
            })?;
        }
        Ok(())
    }

    /// Starts the one watch of this process over the whole prefix, from `applied` + 1,
    /// handing every change to `follower` (see the module documentation). Runs until the
    /// runtime stops.
    pub fn follow(&self, applied: u64, follower: Arc<dyn Follower>) {
        let store = self.clone();
        self.inner
            .runtime
            .spawn(async move { store.watch_loop(applied, follower).await });
    }

    async fn watch_loop(self, mut applied: u64, follower: Arc<dyn Follower>) {
        let mut backoff = Duration::from_millis(100);
        // The node's view may be older than what etcd still has (a start from the local
        // copy): a compaction in between is found by the watch itself.
        loop {
            let started = tokio::time::Instant::now();
            let result = self.watch_once(&mut applied, &follower).await;
            // A watch that ran for a while was healthy: its failure starts a new series of
            // retries from the shortest wait.
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            if let Err(e) = result {
                tracing::warn!(error = %e, retry_in = ?backoff, "etcd watch interrupted; the node keeps serving its current configuration");
            }
            self.failed().await;
            let f = follower.clone();
            let _ = tokio::task::spawn_blocking(move || f.connected(false)).await;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One watch stream, until it fails. Returns `Ok` when the stream ended normally.
    async fn watch_once(
        &self,
        applied: &mut u64,
        follower: &Arc<dyn Follower>,
    ) -> Result<(), StoreError> {
        let prefix = self.inner.settings.prefix.clone();
        if *applied == 0 {
            // A node with nothing yet (no local copy): a full copy first, not the history.
            let snapshot = self.read_all().await?;
            *applied = snapshot.contents.revision;
            self.hand_over_copy(snapshot, follower).await;
        }
        let mut client = self.client().await?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(signed(*applied + 1))
            .with_progress_notify();
        let watch = tokio::time::timeout(
            self.inner.settings.timeout,
            client.watch(prefix.clone().into_bytes(), Some(options)),
        )
        .await
        .map_err(|_| unavailable("starting the watch", "timed out"))?
        .map_err(|e| unavailable("starting the watch", e))?;
        let (_requests, mut responses) = watch.split();
        loop {
            let Some(response) = responses
                .message()
                .await
                .map_err(|e| unavailable("watching", e))?
            else {
                return Ok(());
            };
            if response.created() {
                tracing::info!(from = *applied + 1, "etcd watch started");
                self.inner.connected.store(true, Ordering::Relaxed);
                let f = follower.clone();
                let _ = tokio::task::spawn_blocking(move || f.connected(true)).await;
            }
            if response.compact_revision() > 0 || response.canceled() {
                // Our revision is gone: read everything once and go on from there.
                tracing::warn!(
                    compacted = response.compact_revision(),
                    applied = *applied,
                    reason = response.cancel_reason(),
                    "etcd watch lost its place (compaction); reloading the whole store once"
                );
                let snapshot = self.read_all().await?;
                *applied = snapshot.contents.revision;
                self.hand_over_copy(snapshot, follower).await;
                return Ok(());
            }
            let mut updates = Vec::new();
            let mut tickets = None;
            let mut newest = 0u64;
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let at = revision(kv.mod_revision());
                newest = newest.max(at);
                let deleted = event.event_type() == EventType::Delete;
                match classify(&prefix, kv.key()) {
                    Key::Resource(kind, id) => updates.push(Update {
                        kind,
                        id: id.to_owned(),
                        value: (!deleted).then(|| kv.value().to_vec()),
                        revision: at,
                    }),
                    Key::TicketKeys if !deleted => tickets = Some((kv.value().to_vec(), at)),
                    _ => {}
                }
            }
            if response.events().is_empty() && !response.created() {
                // A progress notification: everything up to the header's revision is here.
                // Not the "created" answer: its header has etcd's current revision while
                // the events from our start revision are still to come.
                newest = response.header().map_or(0, |h| revision(h.revision()));
            }
            if newest <= *applied {
                continue;
            }
            *applied = newest;
            let f = follower.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some((record, at)) = tickets {
                    f.ticket_keys(record, at);
                }
                f.apply(updates, newest);
            })
            .await;
        }
    }

    async fn hand_over_copy(&self, snapshot: Snapshot, follower: &Arc<dyn Follower>) {
        let f = follower.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some((record, at)) = snapshot.ticket_keys {
                f.ticket_keys(record, at);
            }
            f.reload(snapshot.contents);
        })
        .await;
    }

    fn compare(&self, condition: &Condition) -> Compare {
        match condition {
            Condition::At { kind, id, revision } => {
                Compare::mod_revision(self.key(*kind, id), CompareOp::Equal, signed(*revision))
            }
            // Every key of the kind: mod_revision < revision + 1. A range with no key
            // compares as one key at revision 0, so an empty kind passes.
            Condition::NoneWrittenAfter { kind, revision } => Compare::mod_revision(
                format!("{}{}", self.inner.settings.prefix, directory(*kind)),
                CompareOp::Less,
                signed(*revision + 1),
            )
            .with_prefix(),
        }
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Contents, StoreError> {
        self.block_on(self.read_all()).map(|s| s.contents)
    }

    fn commit(&self, transaction: &Transaction) -> Result<u64, StoreError> {
        let compares: Vec<Compare> = transaction
            .conditions
            .iter()
            .map(|c| self.compare(c))
            .collect();
        let operations: Vec<TxnOp> = transaction
            .changes
            .iter()
            .map(|change| match change {
                Change::Put { kind, id, value } => {
                    TxnOp::put(self.key(*kind, id), value.clone(), None)
                }
                Change::Delete { kind, id } => TxnOp::delete(self.key(*kind, id), None),
            })
            .collect();
        let txn = Txn::new().when(compares).and_then(operations);
        let response = self.block_on(self.request("committing a change", true, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        }))?;
        if !response.succeeded() {
            return Err(StoreError::Conflict(
                "a record this write was checked against changed in etcd first".into(),
            ));
        }
        Ok(response.header().map_or(0, |h| revision(h.revision())))
    }

    fn shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classified_by_directory() {
        let p = "/edgegw/";
        assert_eq!(
            classify(p, b"/edgegw/certificates/c1"),
            Key::Resource(Kind::Certificate, "c1")
        );
        assert_eq!(
            classify(p, b"/edgegw/apis/a.b-c"),
            Key::Resource(Kind::Api, "a.b-c")
        );
        assert_eq!(classify(p, b"/edgegw/fleet/ticket-keys"), Key::TicketKeys);
        assert_eq!(classify(p, b"/edgegw/fleet/key-check"), Key::Other);
        assert_eq!(classify(p, b"/edgegw/backends/"), Key::Other);
        assert_eq!(classify(p, b"/other/backends/b1"), Key::Other);
        assert_eq!(prefix_end(b"/edgegw/"), b"/edgegw0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
    }
}
