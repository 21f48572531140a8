//! A per-worker pool of idle connections, generic over the key and the connection so it holds
//! no TLS or socket logic and can be tested alone. Newest first: the most recently used
//! connection is the one least likely to have been closed by the peer.

use std::collections::VecDeque;
use std::hash::Hash;
use std::time::{Duration, Instant};

pub struct Pool<K, C> {
    idle: rustc_hash::FxHashMap<K, VecDeque<Idle<C>>>,
    max_idle_per_key: usize,
    idle_timeout: Duration,
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

/// Why a connection left the pool without serving a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// Idle past `upstream.idle_timeout`.
    Expired,
    /// The key already holds `max_idle_per_key` idle connections.
    Full,
    /// Found closed by the peer (or otherwise unusable) when taken out.
    Stale,
}

impl Eviction {
    /// The `reason` label of `edgegw_upstream_pool_evictions_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::Expired => "expired",
            Eviction::Full => "full",
            Eviction::Stale => "stale",
        }
    }
}

impl<K: Eq + Hash + Clone, C> Pool<K, C> {
    pub fn new(max_idle_per_key: usize, idle_timeout: Duration) -> Self {
        Self {
            idle: Default::default(),
            max_idle_per_key,
            idle_timeout,
        }
    }

    /// The newest idle connection for `key` that has not expired; expired ones are dropped
    /// and reported through `on_evict`.
    pub fn checkout(
        &mut self,
        key: &K,
        now: Instant,
        mut on_evict: impl FnMut(Eviction),
    ) -> Option<C> {
        let queue = self.idle.get_mut(key)?;
        let mut found = None;
        while let Some(idle) = queue.pop_back() {
            if now.duration_since(idle.since) < self.idle_timeout {
                found = Some(idle.conn);
                break;
            }
            on_evict(Eviction::Expired);
        }
        // Everything older than an expired entry has expired too.
        if found.is_none() {
            queue.clear();
        }
        if queue.is_empty() {
            self.idle.remove(key);
        }
        found
    }

    /// Returns a connection for reuse. When the key is full the oldest idle one is dropped.
    pub fn checkin(&mut self, key: K, conn: C, now: Instant, mut on_evict: impl FnMut(Eviction)) {
        if self.max_idle_per_key == 0 {
            on_evict(Eviction::Full);
            return;
        }
        let queue = self.idle.entry(key).or_default();
        while queue.len() >= self.max_idle_per_key {
            queue.pop_front();
            on_evict(Eviction::Full);
        }
        queue.push_back(Idle { conn, since: now });
    }

    /// Drops every connection idle past the timeout (run periodically).
    pub fn evict_expired(&mut self, now: Instant, mut on_evict: impl FnMut(Eviction)) {
        let timeout = self.idle_timeout;
        self.idle.retain(|_, queue| {
            while queue
                .front()
                .is_some_and(|idle| now.duration_since(idle.since) >= timeout)
            {
                queue.pop_front();
                on_evict(Eviction::Expired);
            }
            !queue.is_empty()
        });
    }

    /// Drops every idle connection.
    pub fn clear(&mut self) {
        self.idle.clear();
    }

    pub fn idle_count(&self) -> usize {
        self.idle.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max: usize) -> Pool<&'static str, u32> {
        Pool::new(max, Duration::from_secs(10))
    }

    #[test]
    fn checkout_returns_the_newest_connection_of_the_key() {
        let mut p = pool(4);
        let t = Instant::now();
        p.checkin("a", 1, t, |_| {});
        p.checkin("a", 2, t, |_| {});
        p.checkin("b", 3, t, |_| {});
        assert_eq!(p.checkout(&"a", t, |_| {}), Some(2));
        assert_eq!(p.checkout(&"a", t, |_| {}), Some(1));
        assert_eq!(p.checkout(&"a", t, |_| {}), None);
        assert_eq!(p.checkout(&"b", t, |_| {}), Some(3));
    }

    #[test]
    fn keys_never_share_connections() {
        let mut p = pool(4);
        let t = Instant::now();
        p.checkin("cert-1", 1, t, |_| {});
        assert_eq!(p.checkout(&"cert-2", t, |_| {}), None);
        assert_eq!(p.idle_count(), 1);
    }

    #[test]
    fn expired_connections_are_dropped_and_reported() {
        let mut p = pool(4);
        let t = Instant::now();
        p.checkin("a", 1, t, |_| {});
        p.checkin("a", 2, t + Duration::from_secs(5), |_| {});
        let mut evicted = Vec::new();
        let later = t + Duration::from_secs(12);
        assert_eq!(p.checkout(&"a", later, |e| evicted.push(e)), Some(2));
        assert!(evicted.is_empty());
        assert_eq!(p.checkout(&"a", later, |e| evicted.push(e)), None);
        assert_eq!(evicted, vec![Eviction::Expired]);
        assert_eq!(p.idle_count(), 0);
    }

    #[test]
    fn a_full_key_drops_its_oldest_connection() {
        let mut p = pool(2);
        let t = Instant::now();
        let mut evicted = 0;
        for c in 1..=3 {
            p.checkin("a", c, t, |_| evicted += 1);
        }
        assert_eq!(evicted, 1);
        assert_eq!(p.checkout(&"a", t, |_| {}), Some(3));
        assert_eq!(p.checkout(&"a", t, |_| {}), Some(2));
        assert_eq!(p.checkout(&"a", t, |_| {}), None);
    }

    #[test]
    fn evict_expired_sweeps_every_key() {
        let mut p = pool(4);
        let t = Instant::now();
        p.checkin("a", 1, t, |_| {});
        p.checkin("b", 2, t + Duration::from_secs(9), |_| {});
        let mut n = 0;
        p.evict_expired(t + Duration::from_secs(11), |_| n += 1);
        assert_eq!(n, 1);
        assert_eq!(p.idle_count(), 1);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut p = pool(0);
        let t = Instant::now();
        let mut n = 0;
        p.checkin("a", 1, t, |_| n += 1);
        assert_eq!(n, 1);
        assert_eq!(p.idle_count(), 0);
    }
}
