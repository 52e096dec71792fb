//! One worker's cache shard: a byte-budgeted SIEVE cache of complete responses, plus the
//! stampede control (one upstream fill per key, later askers wait for it).
//!
//! Single-threaded by design (one shard per worker, usually in an `Rc<RefCell<_>>`): no
//! locks, no atomics. Entries live in a slot arena linked into a FIFO queue (newest at the
//! head). SIEVE (Zhang et al., NSDI '24): a hit only sets the entry's `visited` bit; eviction
//! moves a hand from the oldest entry toward newer ones, clearing visited bits, and evicts the
//! first entry that was not visited (or has expired). Hits never reorder the queue, so a hit
//! costs one hash lookup and a bit store.
//!
//! Expired entries are reclaimed lazily (a lookup that finds one removes it), preferentially
//! by the eviction hand, and by [`CacheShard::sweep_some`] / [`CacheShard::sweep`] from a
//! timer, which [`CacheShard::next_expiry`] tells when there is something to reclaim.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::mem::size_of;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use fulcrum_util::push_decimal;

use super::CacheKey;

/// End of a link.
const NIL: usize = usize::MAX;

/// A stored response.
#[derive(Debug)]
pub struct CachedResponse {
    /// The response head exactly as sent to clients, status line included, every line ending
    /// in CRLF, but without `Connection`, `X-Cache` and `Age` and without the empty line that
    /// ends the head.
    pub head: Box<[u8]>,
    /// The body. The `Rc` lets the proxy hand monoio an owned write buffer (`Rc<T: IoBuf>`
    /// is an `IoBuf`) without copying it and without atomics.
    pub body: Rc<Box<[u8]>>,
    /// When it was stored.
    pub stored_at: Instant,
    /// How long after `stored_at` it may be served.
    pub fresh_for: Duration,
    /// The upstream `Age` at reception, added to the resident time in the hit's `Age`.
    pub base_age: Duration,
}

impl CachedResponse {
    /// A response stored at `stored_at`, fresh for `fresh_for`, with no upstream age.
    pub fn new(
        head: impl Into<Box<[u8]>>,
        body: impl Into<Box<[u8]>>,
        stored_at: Instant,
        fresh_for: Duration,
    ) -> CachedResponse {
        CachedResponse {
            head: head.into(),
            body: Rc::new(body.into()),
            stored_at,
            fresh_for,
            base_age: Duration::ZERO,
        }
    }

    /// Sets the upstream `Age` reported at reception.
    pub fn with_base_age(mut self, age: Duration) -> CachedResponse {
        self.base_age = age;
        self
    }

    /// When it stops being fresh (`None`: too far away to represent).
    pub fn expires_at(&self) -> Option<Instant> {
        self.stored_at.checked_add(self.fresh_for)
    }

    /// Whether it may still be served at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.stored_at) < self.fresh_for
    }

    /// The `Age` to report at `now`: upstream age plus time in the cache.
    pub fn age(&self, now: Instant) -> Duration {
        self.base_age + now.saturating_duration_since(self.stored_at)
    }

    /// Head plus body bytes.
    pub fn stored_bytes(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Appends the head of a hit to `out`: the stored head, `age: N`, `x-cache: HIT`, then
    /// `connection: close` when `close`, then the empty line. The body follows unchanged.
    pub fn render_head(&self, now: Instant, close: bool, out: &mut Vec<u8>) {
        out.reserve(self.head.len() + 64);
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"age: ");
        push_decimal(out, self.age(now).as_secs());
        out.extend_from_slice(b"\r\nx-cache: HIT\r\n");
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Counters of one shard (sum them over workers for the admin API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that found nothing fresh.
    pub misses: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes charged now (see [`CacheShard::entry_cost`]).
    pub bytes: u64,
    /// Entries stored.
    pub inserts: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Expired entries reclaimed (by lookup, eviction or sweep).
    pub expired: u64,
    /// Inserts refused because one entry would exceed the whole budget.
    pub rejected: u64,
    /// Misses that waited for another request's fill instead of going upstream.
    pub coalesced: u64,
}

/// What [`CacheShard::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored (replacing any entry under the same key), after evicting this many entries.
    Stored {
        /// Entries evicted (or expired ones reclaimed) to make room.
        evicted: usize,
    },
    /// Not stored: the entry alone costs more than the shard's budget.
    TooLarge,
}

/// A queue slot.
#[derive(Debug)]
struct Node {
    key: CacheKey,
    /// `None` while the slot is free.
    value: Option<Rc<CachedResponse>>,
    cost: usize,
    visited: bool,
    /// Toward the head (newest); `NIL` at the head.
    newer: usize,
    /// Toward the tail (oldest); `NIL` at the tail.
    older: usize,
}

/// Keyed hash for digests: a folded multiply of two digest words with per-shard secrets.
/// SipHash would be wasted on a SHA-256 output; the secrets keep an attacker who can choose
/// digests (by brute force) from aiming at one bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHashBuilder {
    k0: u64,
    k1: u64,
}

impl KeyHashBuilder {
    fn random() -> KeyHashBuilder {
        KeyHashBuilder { k0: fastrand::u64(..), k1: fastrand::u64(..) | 1 }
    }
}

impl BuildHasher for KeyHashBuilder {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher { h: self.k0, k: self.k1 }
    }
}

/// The hasher built by [`KeyHashBuilder`].
#[derive(Debug)]
pub(crate) struct KeyHasher {
    h: u64,
    k: u64,
}

fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.h = folded_multiply(self.h ^ x, self.k);
    }

    fn finish(&self) -> u64 {
        self.h
    }
}

/// Shared state of one in-flight fill.
#[derive(Debug, Default)]
struct FillState {
    outcome: Cell<Option<FillOutcome>>,
    wakers: RefCell<Vec<Waker>>,
}

type Fills = RefCell<HashMap<CacheKey, Rc<FillState>, KeyHashBuilder>>;

/// How a fill ended, as seen by its waiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillOutcome {
    /// The leader stored the response: look up again.
    Stored,
    /// The leader's response was not storable, or the leader failed or went away: go
    /// upstream without waiting again.
    NotStored,
}

/// The role of a missing request in filling its key.
#[derive(Debug)]
pub enum FillRole {
    /// Go upstream; store the response if allowed, then complete (or drop) the guard.
    Leader(FillGuard),
    /// Another request is filling this key: await it (bounded), then act on the outcome.
    Waiter(FillWait),
}

/// The leader's duty: while it lives, later misses for the key wait. Dropping it without
/// [`FillGuard::complete`] wakes them with [`FillOutcome::NotStored`].
#[derive(Debug)]
#[must_use = "dropping the guard ends the fill at once"]
pub struct FillGuard {
    key: CacheKey,
    state: Rc<FillState>,
    fills: Rc<Fills>,
}

impl FillGuard {
    /// The key being filled.
    pub fn key(&self) -> CacheKey {
        self.key
    }

    /// Ends the fill and wakes the waiters. Call it after [`CacheShard::insert`], so that
    /// waiters told [`FillOutcome::Stored`] find the entry.
    pub fn complete(self, outcome: FillOutcome) {
        self.state.outcome.set(Some(outcome));
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        if self.state.outcome.get().is_none() {
            self.state.outcome.set(Some(FillOutcome::NotStored));
        }
        if let Ok(mut fills) = self.fills.try_borrow_mut()
            && fills.get(&self.key).is_some_and(|s| Rc::ptr_eq(s, &self.state))
        {
            fills.remove(&self.key);
        }
        // (If the map was busy, the finished state is replaced by the next begin_fill.)
        let wakers = std::mem::take(&mut *self.state.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }
}

/// A future resolving when the leader's fill ends. Bound it with a timeout (see
/// [`FillWait::wait`]); after a timeout, go upstream.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct FillWait {
    state: Rc<FillState>,
    /// This waiter's slot in `state.wakers`, once registered.
    slot: Option<usize>,
}

impl FillWait {
    /// Waits at most `limit` (monoio timer; the runtime needs one): `None` on timeout.
    pub async fn wait(self, limit: Duration) -> Option<FillOutcome> {
        monoio::time::timeout(limit, self).await.ok()
    }
}

impl Future for FillWait {
    type Output = FillOutcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FillOutcome> {
        let this = self.get_mut();
        if let Some(outcome) = this.state.outcome.get() {
            return Poll::Ready(outcome);
        }
        let mut wakers = this.state.wakers.borrow_mut();
        match this.slot.and_then(|i| wakers.get_mut(i)) {
            Some(w) => {
                if !w.will_wake(cx.waker()) {
                    w.clone_from(cx.waker());
                }
            }
            None => {
                this.slot = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// One worker's cache: entries, byte budget, eviction, counters and in-flight fills.
#[derive(Debug)]
pub struct CacheShard {
    map: HashMap<CacheKey, usize, KeyHashBuilder>,
    nodes: Vec<Node>,
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
    /// SIEVE hand: next candidate for eviction; `NIL` means start at the oldest.
    hand: usize,
    bytes: usize,
    budget: usize,
    stats: CacheStats,
    sweep_cursor: usize,
    /// No entry expires before this (a lower bound: exact after a sweep pass, lowered by
    /// inserts); `None` while no entry can expire.
    earliest_expiry: Option<Instant>,
    /// The same bound over the entries the current sweep pass has seen (and those inserted
    /// meanwhile); becomes `earliest_expiry` when the pass completes.
    pass_expiry: Option<Instant>,
    /// Sweep passes completed.
    passes: u64,
    fills: Rc<Fills>,
}

/// The earlier of two optional instants (`None` = never).
fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl CacheShard {
    /// Fixed bytes charged per entry on top of key, head and body: the queue slot and the map
    /// slot (each counted twice, for vector and table growth slack), the `CachedResponse`
    /// allocation with its `Rc` counts, the body's `Rc<Box>` and allocator headers. An upper
    /// estimate, so that the budget bounds real memory.
    pub const ENTRY_OVERHEAD: usize = 2 * size_of::<Node>()
        + 2 * (size_of::<(CacheKey, usize)>() + 1)
        + size_of::<usize>()
        + size_of::<CachedResponse>()
        + 2 * size_of::<usize>()
        + size_of::<Box<[u8]>>()
        + 2 * size_of::<usize>()
        + 4 * 16;

    /// An empty shard holding at most `budget` bytes (see [`CacheShard::entry_cost`]).
    pub fn new(budget: usize) -> CacheShard {
        let hasher = KeyHashBuilder::random();
        CacheShard {
            map: HashMap::with_hasher(hasher),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            hand: NIL,
            bytes: 0,
            budget,
            stats: CacheStats::default(),
            sweep_cursor: 0,
            earliest_expiry: None,
            pass_expiry: None,
            passes: 0,
            fills: Rc::new(RefCell::new(HashMap::with_hasher(hasher))),
        }
    }

    /// Bytes charged for an entry with this head and body: key + head + body +
    /// [`CacheShard::ENTRY_OVERHEAD`].
    pub fn entry_cost(head_len: usize, body_len: usize) -> usize {
        size_of::<CacheKey>()
            .saturating_add(head_len)
            .saturating_add(body_len)
            .saturating_add(Self::ENTRY_OVERHEAD)
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes charged now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held now (some may have expired and not been reclaimed yet).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the shard holds no entry.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The counters, with `entries` and `bytes` as of now.
    pub fn stats(&self) -> CacheStats {
        CacheStats { entries: self.map.len() as u64, bytes: self.bytes as u64, ..self.stats }
    }

    /// Looks `key` up at `now`: a fresh entry is a hit (a cheap `Rc` clone); an expired one is
    /// removed and counts as a miss.
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Rc<CachedResponse>> {
        let Some(&i) = self.map.get(key) else {
            self.stats.misses += 1;
            return None;
        };
        let node = &mut self.nodes[i];
        match &node.value {
            Some(v) if v.is_fresh(now) => {
                node.visited = true;
                self.stats.hits += 1;
                Some(Rc::clone(v))
            }
            _ => {
                self.remove_index(i);
                self.stats.expired += 1;
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Whether a fresh entry exists, without touching counters or visited bits.
    pub fn contains(&self, key: &CacheKey, now: Instant) -> bool {
        self.map
            .get(key)
            .and_then(|&i| self.nodes[i].value.as_ref())
            .is_some_and(|v| v.is_fresh(now))
    }

    /// Stores `response` under `key`, replacing any previous entry, evicting (expired entries
    /// first where the hand meets them, then by SIEVE) until it fits. `response.stored_at`
    /// serves as "now" for expiry.
    pub fn insert(&mut self, key: CacheKey, response: Rc<CachedResponse>) -> InsertOutcome {
        let cost = Self::entry_cost(response.head.len(), response.body.len());
        if let Some(&i) = self.map.get(&key) {
            self.remove_index(i);
        }
        if cost > self.budget {
            self.stats.rejected += 1;
            return InsertOutcome::TooLarge;
        }
        let now = response.stored_at;
        let expires = response.expires_at();
        self.earliest_expiry = earlier(self.earliest_expiry, expires);
        self.pass_expiry = earlier(self.pass_expiry, expires);
        let mut evicted = 0;
        while self.bytes + cost > self.budget && self.evict_one(Some(now)) {
            evicted += 1;
        }
        let node =
            Node { key, value: Some(response), cost, visited: false, newer: NIL, older: NIL };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        self.push_newest(i);
        self.map.insert(key, i);
        self.bytes += cost;
        self.stats.inserts += 1;
        InsertOutcome::Stored { evicted }
    }

    /// Removes the entry under `key`; whether there was one.
    pub fn remove(&mut self, key: &CacheKey) -> bool {
        match self.map.get(key) {
            Some(&i) => {
                self.remove_index(i);
                true
            }
            None => false,
        }
    }

    /// Reclaims every expired entry; returns how many. O(slots): prefer
    /// [`CacheShard::sweep_some`] on a worker.
    pub fn sweep(&mut self, now: Instant) -> usize {
        self.sweep_cursor = 0;
        self.sweep_some(now, self.nodes.len())
    }

    /// Examines up to `max_slots` slots, continuing where the previous call stopped (wrapping
    /// around), and reclaims the expired entries among them; returns how many. A pass that
    /// reaches the last slot makes [`next_expiry`](Self::next_expiry) exact.
    pub fn sweep_some(&mut self, now: Instant, max_slots: usize) -> usize {
        let mut removed = 0;
        let n = self.nodes.len();
        for _ in 0..max_slots.min(n) {
            if self.sweep_cursor >= n {
                self.end_pass();
            }
            if self.sweep_cursor == 0 {
                // A new pass: nothing is behind the cursor yet.
                self.pass_expiry = None;
            }
            let i = self.sweep_cursor;
            self.sweep_cursor += 1;
            match &self.nodes[i].value {
                Some(v) if !v.is_fresh(now) => {
                    self.remove_index(i);
                    self.stats.expired += 1;
                    removed += 1;
                }
                Some(v) => self.pass_expiry = earlier(self.pass_expiry, v.expires_at()),
                None => {}
            }
        }
        if self.sweep_cursor >= n {
            self.end_pass();
        }
        removed
    }

    /// A sweep pass saw every slot: its bound is exact.
    fn end_pass(&mut self) {
        self.sweep_cursor = 0;
        self.earliest_expiry = self.pass_expiry.take();
        self.passes += 1;
    }

    /// Sweep passes completed so far (a caller sweeping in steps sees when one ends).
    pub fn sweep_passes(&self) -> u64 {
        self.passes
    }

    /// No entry expires before this; `None` when none can. After a sweep pass (and until
    /// entries are inserted) it is the earliest expiry of the entries held, so a timer set to
    /// it wakes only when a sweep has something to reclaim.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.earliest_expiry
    }

    /// Drops every entry and frees the shard's memory (responses being sent keep their own
    /// `Rc` until done). Counters other than `entries`/`bytes` and in-flight fills are kept.
    pub fn clear(&mut self) {
        let hasher = *self.map.hasher();
        self.map = HashMap::with_hasher(hasher);
        self.nodes = Vec::new();
        self.free = Vec::new();
        self.newest = NIL;
        self.oldest = NIL;
        self.hand = NIL;
        self.bytes = 0;
        self.sweep_cursor = 0;
        self.earliest_expiry = None;
        self.pass_expiry = None;
    }

    /// Changes the budget, evicting by SIEVE until the shard fits the new one.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
        while self.bytes > self.budget && self.evict_one(None) {}
    }

    /// Claims the fill of `key` after a miss: the first caller leads, later callers for the
    /// same key (while the leader's guard lives) wait.
    pub fn begin_fill(&mut self, key: CacheKey) -> FillRole {
        let mut fills = self.fills.borrow_mut();
        if let Some(state) = fills.get(&key)
            && state.outcome.get().is_none()
        {
            self.stats.coalesced += 1;
            return FillRole::Waiter(FillWait { state: Rc::clone(state), slot: None });
        }
        let state = Rc::new(FillState::default());
        fills.insert(key, Rc::clone(&state));
        FillRole::Leader(FillGuard { key, state, fills: Rc::clone(&self.fills) })
    }

    /// Keys being filled now.
    pub fn fills_in_flight(&self) -> usize {
        self.fills.borrow().len()
    }

    /// Evicts one entry: the first the hand meets that is expired or was not visited since
    /// the hand last passed. `false` when empty.
    fn evict_one(&mut self, now: Option<Instant>) -> bool {
        if self.oldest == NIL {
            return false;
        }
        let mut i = if self.hand == NIL { self.oldest } else { self.hand };
        let expired = loop {
            let node = &mut self.nodes[i];
            let expired = now.is_some_and(|t| node.value.as_ref().is_some_and(|v| !v.is_fresh(t)));
            if expired || !node.visited {
                break expired;
            }
            node.visited = false;
            i = if node.newer == NIL { self.oldest } else { node.newer };
        };
        if expired {
            self.stats.expired += 1;
        } else {
            self.stats.evictions += 1;
        }
        // The hand rests on the victim; removing it moves the hand to the next newer entry.
        self.hand = i;
        self.remove_index(i);
        true
    }

    /// Unlinks and frees slot `i` (which must hold an entry).
    fn remove_index(&mut self, i: usize) {
        let (newer, older) = (self.nodes[i].newer, self.nodes[i].older);
        if self.hand == i {
            self.hand = newer;
        }
        match newer {
            NIL => self.newest = older,
            n => self.nodes[n].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.nodes[o].newer = newer,
        }
        let node = &mut self.nodes[i];
        self.map.remove(&node.key);
        self.bytes -= node.cost;
        node.value = None;
        node.cost = 0;
        node.visited = false;
        node.newer = NIL;
        node.older = NIL;
        self.free.push(i);
    }

    /// Links slot `i` at the head of the queue.
    fn push_newest(&mut self, i: usize) {
        self.nodes[i].older = self.newest;
        self.nodes[i].newer = NIL;
        match self.newest {
            NIL => self.oldest = i,
            n => self.nodes[n].newer = i,
        }
        self.newest = i;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn k(n: u64) -> CacheKey {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_le_bytes());
        b[31] = 0x5a;
        CacheKey::from_bytes(b)
    }

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n";

    fn resp(at: Instant, ttl_s: u64, body_len: usize) -> Rc<CachedResponse> {
        Rc::new(CachedResponse::new(HEAD, vec![b'x'; body_len], at, Duration::from_secs(ttl_s)))
    }

    /// Checks the queue links and byte accounting against the map.
    fn check_invariants(s: &CacheShard) {
        let mut count = 0;
        let mut bytes = 0;
        let mut prev = NIL;
        let mut i = s.oldest;
        while i != NIL {
            let n = &s.nodes[i];
            assert_eq!(n.older, prev);
            assert!(n.value.is_some());
            assert_eq!(s.map.get(&n.key), Some(&i));
            bytes += n.cost;
            count += 1;
            prev = i;
            i = n.newer;
        }
        assert_eq!(prev, s.newest);
        assert_eq!(count, s.map.len());
        assert_eq!(bytes, s.bytes);
        assert!(s.bytes <= s.budget);
    }

    #[test]
    fn hit_miss_and_stats() {
        let t0 = Instant::now();
        let mut s = CacheShard::new(1 << 20);
        assert!(s.get(&k(1), t0).is_none());
        assert_eq!(s.insert(k(1), resp(t0, 60, 5)), InsertOutcome::Stored { evicted: 0 });
        let hit = s.get(&k(1), t0).unwrap();
        assert_eq!(&hit.body[..], b"xxxxx");
        assert!(s.get(&k(2), t0).is_none());
        let st = s.stats();
        assert_eq!((st.hits, st.misses, st.entries, st.inserts), (1, 2, 1, 1));
        assert_eq!(st.bytes as usize, CacheShard::entry_cost(HEAD.len(), 5));
        assert!(s.contains(&k(1), t0));
        // Replacing a key does not double-charge.
        s.insert(k(1), resp(t0, 60, 7));
        assert_eq!(s.bytes(), CacheShard::entry_cost(HEAD.len(), 7));
        assert_eq!(s.len(), 1);
        assert!(s.remove(&k(1)) && !s.remove(&k(1)));
        assert_eq!((s.len(), s.bytes()), (0, 0));
        check_invariants(&s);
    }

    #[test]
    fn cost_counts_key_stored_bytes_and_overhead() {
        const { assert!(CacheShard::ENTRY_OVERHEAD >= 128) };
        assert_eq!(CacheShard::entry_cost(10, 20), 32 + 30 + CacheShard::ENTRY_OVERHEAD);
    }

    #[test]
    fn render_head_adds_age_and_x_cache() {
        let t0 = Instant::now();
        let r = CachedResponse::new(HEAD, &b"hello"[..], t0, Duration::from_secs(60));
        let mut out = Vec::new();
        r.render_head(t0 + Duration::from_millis(2500), false, &mut out);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nage: 2\r\nx-cache: HIT\r\n\r\n");
        out.clear();
        let r = r.with_base_age(Duration::from_secs(100));
        r.render_head(t0, true, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nage: 100\r\nx-cache: HIT\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn ttl_expiry_with_injected_now() {
        let t0 = Instant::now();
        let mut s = CacheShard::new(1 << 20);
        s.insert(k(1), resp(t0, 10, 5));
        s.insert(k(2), resp(t0, 20, 5));
        assert!(s.get(&k(1), t0 + Duration::from_millis(9_999)).is_some());
        assert!(s.get(&k(1), t0 + Duration::from_secs(10)).is_none(), "expired at ttl");
        assert_eq!(s.len(), 1, "reclaimed by the lookup");
        assert_eq!(s.stats().expired, 1);
        // The sweep reclaims entries nobody asks for.
        s.insert(k(3), resp(t0, 30, 5));
        assert_eq!(s.sweep(t0 + Duration::from_secs(25)), 1);
        assert!(!s.contains(&k(2), t0) && s.contains(&k(3), t0));
        assert_eq!(s.sweep(t0 + Duration::from_secs(60)), 1);
        assert!(s.is_empty());
        assert_eq!(s.bytes(), 0);
        check_invariants(&s);
    }

    #[test]
    fn incremental_sweep_wraps_around() {
        let t0 = Instant::now();
        let mut s = CacheShard::new(1 << 24);
        for n in 0..100 {
            s.insert(k(n), resp(t0, 1 + n % 2, 1));
        }
        let later = t0 + Duration::from_millis(1500);
        let mut removed = 0;
        for _ in 0..10 {
            removed += s.sweep_some(later, 30);
        }
        assert_eq!(removed, 50);
        assert_eq!(s.len(), 50);
        check_invariants(&s);
    }

    #[test]
    fn next_expiry_is_a_bound_made_exact_by_a_pass() {
        let t0 = Instant::now();
        let mut s = CacheShard::new(1 << 24);
        assert_eq!(s.next_expiry(), None);
        s.insert(k(1), resp(t0, 1, 1));
        s.insert(k(2), resp(t0, 5, 1));
        s.insert(k(3), resp(t0, 9, 1));
        assert_eq!(s.next_expiry(), Some(t0 + Duration::from_secs(1)));
        // Removing the earliest leaves the bound low until a pass looks again.
        assert!(s.remove(&k(1)));
        assert_eq!(s.next_expiry(), Some(t0 + Duration::from_secs(1)));
        s.sweep_some(t0, 1);
        assert_eq!(s.next_expiry(), Some(t0 + Duration::from_secs(1)), "pass not done");
        s.sweep_some(t0, 10);
        assert_eq!(s.next_expiry(), Some(t0 + Duration::from_secs(5)), "exact after the pass");
        // An insert during a pass counts for that pass.
        s.sweep_some(t0, 1);
        s.insert(k(4), resp(t0, 2, 1));
        assert_eq!(s.next_expiry(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(s.sweep(t0 + Duration::from_secs(6)), 2, "k(2) and k(4) expired");
        assert_eq!(s.next_expiry(), Some(t0 + Duration::from_secs(9)));
        s.clear();
        assert_eq!(s.next_expiry(), None);
    }

    #[test]
    fn eviction_prefers_expired_entries() {
        let t0 = Instant::now();
        let cost = CacheShard::entry_cost(HEAD.len(), 10);
        let mut s = CacheShard::new(cost * 3);
        s.insert(k(1), resp(t0, 60, 10));
        s.insert(k(2), resp(t0, 1, 10));
        s.insert(k(3), resp(t0, 60, 10));
        // The oldest entry was visited, so the hand passes it and meets the expired one.
        assert!(s.get(&k(1), t0).is_some());
        let later = t0 + Duration::from_secs(2);
        assert_eq!(s.insert(k(4), resp(later, 60, 10)), InsertOutcome::Stored { evicted: 1 });
        assert!(s.contains(&k(1), later) && !s.contains(&k(2), later));
        assert_eq!(s.stats().expired, 1);
        assert_eq!(s.stats().evictions, 0);
    }

    #[test]
    fn sieve_keeps_visited_entries() {
        let t0 = Instant::now();
        let cost = CacheShard::entry_cost(HEAD.len(), 10);
        let mut s = CacheShard::new(cost * 4);
        for n in 1..=4 {
            s.insert(k(n), resp(t0, 60, 10));
        }
        // 1 and 3 are hot; 2 is the first unvisited from the tail, then 4.
        assert!(s.get(&k(1), t0).is_some() && s.get(&k(3), t0).is_some());
        s.insert(k(5), resp(t0, 60, 10));
        assert!(!s.contains(&k(2), t0));
        s.insert(k(6), resp(t0, 60, 10));
        assert!(!s.contains(&k(4), t0));
        assert!(s.contains(&k(1), t0) && s.contains(&k(3), t0));
        // The hand cleared 1's and 3's bits on its way: next come 5 ... then 1.
        s.insert(k(7), resp(t0, 60, 10));
        assert!(!s.contains(&k(5), t0));
        assert_eq!(s.stats().evictions, 3);
        check_invariants(&s);
    }

    #[test]
    fn bounded_under_a_flood_of_distinct_keys() {
        let t0 = Instant::now();
        let budget = 1 << 20;
        let mut s = CacheShard::new(budget);
        for n in 0..100_000u64 {
            let body = (n % 700) as usize;
            s.insert(k(n), resp(t0, 60, body));
            assert!(s.bytes() <= budget);
            // Some hot keys get looked up.
            if n % 10 == 0 {
                s.get(&k(n / 2), t0);
            }
        }
        check_invariants(&s);
        let st = s.stats();
        assert_eq!(st.inserts, 100_000);
        assert_eq!(st.evictions + st.entries, 100_000);
        assert!(st.entries > 1000, "{st:?}");
        // Slots are recycled: the arena is bounded by what the budget can hold.
        assert!(s.nodes.len() <= budget / CacheShard::ENTRY_OVERHEAD + 1);
    }

    #[test]
    fn too_large_is_refused_and_budget_shrinks() {
        let t0 = Instant::now();
        let mut s = CacheShard::new(10_000);
        assert_eq!(s.insert(k(1), resp(t0, 60, 20_000)), InsertOutcome::TooLarge);
        assert_eq!(s.stats().rejected, 1);
        for n in 0..20 {
            s.insert(k(n), resp(t0, 60, 100));
        }
        let before = s.len();
        s.set_budget(s.bytes() / 2);
        assert!(s.bytes() <= s.budget());
        assert!(s.len() < before);
        check_invariants(&s);
        s.set_budget(0);
        assert!(s.is_empty());
    }

    #[test]
    fn clear_frees_everything_but_keeps_counters() {
        let t0 = Instant::now();
        let mut s = CacheShard::new(1 << 20);
        for n in 0..100 {
            s.insert(k(n), resp(t0, 60, 10));
        }
        s.get(&k(1), t0);
        let held = s.get(&k(2), t0).unwrap();
        s.clear();
        assert_eq!((s.len(), s.bytes(), s.nodes.capacity(), s.map.capacity()), (0, 0, 0, 0));
        assert_eq!(&held.body[..], &[b'x'; 10], "a response being sent survives clear");
        let st = s.stats();
        assert_eq!((st.hits, st.entries, st.bytes), (2, 0, 0));
        assert!(s.get(&k(1), t0).is_none());
        s.insert(k(1), resp(t0, 60, 10));
        assert!(s.get(&k(1), t0).is_some());
        check_invariants(&s);
    }

    #[test]
    fn hasher_spreads_and_is_keyed() {
        let a = KeyHashBuilder::random();
        let b = KeyHashBuilder::random();
        assert_ne!(a.hash_one(k(1)), b.hash_one(k(1)));
        assert_ne!(a.hash_one(k(1)), a.hash_one(k(2)));
        assert_eq!(a.hash_one(k(1)), a.hash_one(k(1)));
    }

    #[test]
    fn fill_roles_without_a_runtime() {
        let mut s = CacheShard::new(1 << 20);
        let FillRole::Leader(guard) = s.begin_fill(k(1)) else { panic!("first is leader") };
        assert!(matches!(s.begin_fill(k(1)), FillRole::Waiter(_)));
        assert!(matches!(s.begin_fill(k(2)), FillRole::Leader(_)), "other key, own leader");
        assert_eq!(s.fills_in_flight(), 1, "k(2)'s guard was dropped at once");
        guard.complete(FillOutcome::Stored);
        assert_eq!(s.fills_in_flight(), 0);
        assert!(matches!(s.begin_fill(k(1)), FillRole::Leader(_)), "next miss leads again");
        assert_eq!(s.stats().coalesced, 1);
    }

    /// Runs the stampede scenario: 100 concurrent identical misses; the leader takes
    /// `upstream` and stores (or not); waiters wait at most `wait`.
    fn stampede(store: bool, upstream: Duration, wait: Duration) -> (u32, u32, CacheStats) {
        let mut rt =
            fulcrum_util::build_runtime(fulcrum_util::IoDriverChoice::Auto).unwrap().runtime;
        rt.block_on(async move {
            let shard = Rc::new(RefCell::new(CacheShard::new(1 << 20)));
            let upstream_calls = Rc::new(Cell::new(0u32));
            let served_from_cache = Rc::new(Cell::new(0u32));
            let key = k(42);
            let mut tasks = Vec::new();
            for _ in 0..100 {
                let shard = Rc::clone(&shard);
                let upstream_calls = Rc::clone(&upstream_calls);
                let served = Rc::clone(&served_from_cache);
                tasks.push(monoio::spawn(async move {
                    let go_upstream = || async {
                        upstream_calls.set(upstream_calls.get() + 1);
                        monoio::time::sleep(upstream).await;
                    };
                    if shard.borrow_mut().get(&key, Instant::now()).is_some() {
                        served.set(served.get() + 1);
                        return;
                    }
                    let role = shard.borrow_mut().begin_fill(key);
                    match role {
                        FillRole::Leader(guard) => {
                            go_upstream().await;
                            if store {
                                let r = resp(Instant::now(), 60, 5);
                                shard.borrow_mut().insert(key, r);
                                guard.complete(FillOutcome::Stored);
                            }
                            // else: dropped, waiters told NotStored.
                        }
                        FillRole::Waiter(w) => match w.wait(wait).await {
                            Some(FillOutcome::Stored) => {
                                let hit = shard.borrow_mut().get(&key, Instant::now());
                                assert!(hit.is_some());
                                served.set(served.get() + 1);
                            }
                            Some(FillOutcome::NotStored) | None => go_upstream().await,
                        },
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
            let stats = shard.borrow().stats();
            assert_eq!(shard.borrow().fills_in_flight(), 0);
            (upstream_calls.get(), served_from_cache.get(), stats)
        })
    }

    #[test]
    fn stampede_of_100_identical_misses_makes_one_upstream_request() {
        let (upstream, served, stats) =
            stampede(true, Duration::from_millis(20), Duration::from_secs(5));
        assert_eq!(upstream, 1);
        assert_eq!(served, 99);
        assert_eq!(stats.coalesced, 99);
        assert_eq!(stats.inserts, 1);
    }

    #[test]
    fn stampede_waiters_go_upstream_when_the_leader_does_not_store() {
        let (upstream, served, _) =
            stampede(false, Duration::from_millis(20), Duration::from_secs(5));
        assert_eq!((upstream, served), (100, 0));
    }

    #[test]
    fn stampede_wait_is_bounded() {
        let started = Instant::now();
        let (upstream, served, _) =
            stampede(true, Duration::from_millis(500), Duration::from_millis(20));
        assert_eq!((upstream, served), (100, 0), "waiters gave up and went upstream");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
