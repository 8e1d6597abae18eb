//! Per-session state with bounded memory: sessions idle past a time-to-live are expired, and
//! past `max_sessions` the least recently active one is evicted.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

/// A session that left the store: its name and its state.
pub type Ended<V> = (Arc<str>, V);

struct Entry<V> {
    value: V,
    last_seen: i64,
    seq: u64,
}

/// Sessions keyed by a string, with last-activity order kept in a touch log (a queue of
/// `(key, seq)` where only an entry's latest seq counts), so expiry and eviction are O(1)
/// amortized instead of a scan.
pub struct SessionStore<V> {
    map: HashMap<Arc<str>, Entry<V>>,
    order: VecDeque<(Arc<str>, u64)>,
    seq: u64,
    ttl_secs: i64,
    max_sessions: usize,
}

impl<V> SessionStore<V> {
    /// A store expiring sessions idle for more than `ttl_secs` and holding at most
    /// `max_sessions`.
    pub fn new(ttl_secs: i64, max_sessions: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            ttl_secs,
            max_sessions: max_sessions.max(1),
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every live session's state, in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.map.values_mut().map(|e| &mut e.value)
    }

    /// The session `key` (and its shared name), created with `init` if new, marked active at
    /// `now`. When creating it exceeds `max_sessions`, the least recently active other session
    /// is evicted and returned.
    pub fn touch(
        &mut self,
        key: &str,
        now: i64,
        init: impl FnOnce() -> V,
    ) -> (&mut V, Arc<str>, Option<Ended<V>>) {
        self.seq += 1;
        let seq = self.seq;
        let mut evicted = None;
        let shared: Arc<str> = match self.map.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => {
                if self.map.len() >= self.max_sessions {
                    evicted = self.pop_oldest();
                }
                let k: Arc<str> = Arc::from(key);
                self.map.insert(
                    k.clone(),
                    Entry {
                        value: init(),
                        last_seen: now,
                        seq,
                    },
                );
                k
            }
        };
        self.order.push_back((shared.clone(), seq));
        if self.order.len() > 2 * self.map.len() + 1024 {
            self.compact();
        }
        let entry = self.map.get_mut(&*shared).expect("inserted above");
        entry.seq = seq;
        entry.last_seen = entry.last_seen.max(now);
        (&mut entry.value, shared, evicted)
    }

    /// Removes and returns the least recently active session.
    fn pop_oldest(&mut self) -> Option<(Arc<str>, V)> {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|e| e.seq == seq) {
                let entry = self.map.remove(&key).expect("checked");
                return Some((key, entry.value));
            }
        }
        None
    }

    /// Removes and returns (oldest first) every session idle for more than the TTL at `now`.
    pub fn expire(&mut self, now: i64) -> Vec<(Arc<str>, V)> {
        let mut expired = Vec::new();
        while let Some((key, seq)) = self.order.front() {
            match self.map.get(key) {
                Some(e) if e.seq == *seq => {
                    if now - e.last_seen <= self.ttl_secs {
                        break;
                    }
                    let key = key.clone();
                    self.order.pop_front();
                    let entry = self.map.remove(&key).expect("checked");
                    expired.push((key, entry.value));
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
        expired
    }

    /// Removes and returns every session, least recently active first (end of input).
    pub fn drain(&mut self) -> Vec<(Arc<str>, V)> {
        self.drain_oldest(usize::MAX)
    }

    /// Removes and returns up to `max` sessions, least recently active first: the end of
    /// input a chunk at a time, so ending many sessions does not hold all their events at
    /// once.
    pub fn drain_oldest(&mut self, max: usize) -> Vec<(Arc<str>, V)> {
        let mut some = Vec::with_capacity(self.map.len().min(max));
        while some.len() < max {
            match self.pop_oldest() {
                Some(oldest) => some.push(oldest),
                None => break,
            }
        }
        if self.map.is_empty() {
            self.order.clear();
        }
        some
    }

    fn compact(&mut self) {
        let mut live: Vec<(Arc<str>, u64)> =
            self.map.iter().map(|(k, e)| (k.clone(), e.seq)).collect();
        live.sort_by_key(|(_, seq)| *seq);
        self.order = live.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_idle_sessions_oldest_first() {
        let mut store = SessionStore::new(10, 100);
        *store.touch("a", 0, || 0).0 += 1;
        *store.touch("b", 5, || 0).0 += 1;
        *store.touch("a", 8, || 0).0 += 1;
        assert!(store.expire(15).is_empty());
        let expired = store.expire(16);
        assert_eq!(expired.len(), 1);
        assert_eq!((&*expired[0].0, expired[0].1), ("b", 1));
        let expired = store.expire(19);
        assert_eq!((&*expired[0].0, expired[0].1), ("a", 2));
        assert!(store.is_empty());
    }

    #[test]
    fn evicts_the_least_recent_past_the_limit() {
        let mut store = SessionStore::new(1000, 2);
        store.touch("a", 0, || 1);
        store.touch("b", 1, || 2);
        store.touch("a", 2, || 0);
        let (_, _, evicted) = store.touch("c", 3, || 3);
        assert_eq!(
            evicted.map(|(k, v)| (k.to_string(), v)),
            Some(("b".into(), 2))
        );
        assert_eq!(store.len(), 2);
        let drained: Vec<_> = store
            .drain()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(drained, ["a", "c"]);
    }

    #[test]
    fn memory_stays_bounded_with_many_sessions() {
        let mut store = SessionStore::new(1_000_000, 1000);
        let mut evicted = 0;
        for i in 0..100_000 {
            let (_, _, e) = store.touch(&format!("s{i}"), i, || ());
            evicted += usize::from(e.is_some());
            store.touch("hot", i, || ());
        }
        assert_eq!(store.len(), 1000);
        assert_eq!(evicted, 100_000 + 1 - 1000);
        assert!(store.order.len() <= 2 * store.map.len() + 1024);
    }
}
