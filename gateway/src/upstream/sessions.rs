//! Upstream TLS sessions shared by every worker: a new upstream connection on any worker
//! offers the newest session that any worker obtained for the same pool key, so a worker
//! that never talked to a backend (or talks to it again after a backend restart) still
//! resumes instead of doing a full mTLS handshake.
//!
//! Reads take no lock: the key-to-slot map is an `ArcSwap` replaced whole (copy on write)
//! only when a key is seen for the first time, and each slot is an `ArcSwapOption` that a
//! worker swaps when the backend sends a new ticket. Both happen per new upstream
//! connection, never per request. TLS 1.3 tickets may be offered more than once unless the
//! backend forbids it (nginx, HAProxy and the loadtest backend accept reuse; one that does
//! not simply answers with a full handshake, counted as `rejected`).
//!
//! A session is kept with the `SslContext` it was made under and only offered to a
//! connection made from that same context object (the snapshot keeps one context per
//! binding): a re-uploaded certificate gets a new context, and the old session is not
//! offered to it (`boring`'s `set_session` requires a session of an equivalent context).

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use boring::ssl::{SslContext, SslSession};

use super::PoolKey;

/// Keys kept at most; past it the map starts afresh (stale keys of old bindings go with it;
/// live keys get a session again from their next handshake).
const MAX_KEYS: usize = 4096;

/// A session and the context it belongs to.
struct Entry {
    context: SslContext,
    session: SslSession,
}

type Slot = ArcSwapOption<Entry>;
type Slots = rustc_hash::FxHashMap<PoolKey, Arc<Slot>>;

/// The process-wide session store (one per gateway, shared by the workers through an `Arc`).
#[derive(Default)]
pub struct SharedSessions {
    slots: ArcSwap<Slots>,
}

impl std::fmt::Debug for SharedSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSessions")
            .field("keys", &self.slots.load().len())
            .finish_non_exhaustive()
    }
}

/// Why a new upstream TLS connection did not resume (`edgegw_upstream_resumption_misses_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResumeMiss {
    /// No worker had a session for the key (first connection, or a new binding).
    NoSession,
    /// A session was offered and was past its lifetime.
    Expired,
    /// A session was offered and the backend answered with a full handshake.
    Rejected,
}

impl ResumeMiss {
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeMiss::NoSession => "no_session",
            ResumeMiss::Expired => "expired",
            ResumeMiss::Rejected => "rejected",
        }
    }

    /// Why a handshake that offered `offered` did not resume; `now_unix` in seconds.
    pub fn of(offered: Option<&SslSession>, now_unix: u64) -> ResumeMiss {
        match offered {
            None => ResumeMiss::NoSession,
            Some(s) if s.time().saturating_add(u64::from(s.timeout())) <= now_unix => {
                ResumeMiss::Expired
            }
            Some(_) => ResumeMiss::Rejected,
        }
    }
}

impl SharedSessions {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The newest session for `key` made under `context`, if any (a reference-counted
    /// handle: cheap).
    pub fn get(&self, key: &PoolKey, context: &SslContext) -> Option<SslSession> {
        let slots = self.slots.load();
        let entry = slots.get(key)?.load_full()?;
        // Same context object: a `SslContextRef` is the C `SSL_CTX` itself, so equal
        // addresses are the same context (the entry's handle keeps it alive: no reuse).
        std::ptr::eq::<boring::ssl::SslContextRef>(&*entry.context, &**context)
            .then(|| entry.session.clone())
    }

    /// Keeps `session` (made under `context`) as the newest for `key`.
    pub fn put(&self, key: &PoolKey, context: SslContext, session: SslSession) {
        let entry = Arc::new(Entry { context, session });
        if let Some(slot) = self.slots.load().get(key) {
            slot.store(Some(entry));
            return;
        }
        let slot = Arc::new(ArcSwapOption::from(Some(entry)));
        self.slots.rcu(|slots| {
            let mut next = if slots.len() >= MAX_KEYS {
                Slots::default()
            } else {
                Slots::clone(slots)
            };
            // Two workers racing on a new key: the last one's session wins, both are valid.
            next.insert(key.clone(), slot.clone());
            next
        });
    }

    /// Drops the session of `key` (its handshake failed: the next one starts afresh).
    pub fn forget(&self, key: &PoolKey) {
        if let Some(slot) = self.slots.load().get(key) {
            slot.store(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn miss_reasons() {
        assert_eq!(ResumeMiss::of(None, 0), ResumeMiss::NoSession);
        assert_eq!(ResumeMiss::NoSession.as_str(), "no_session");
        assert_eq!(ResumeMiss::Expired.as_str(), "expired");
        assert_eq!(ResumeMiss::Rejected.as_str(), "rejected");
    }
}
