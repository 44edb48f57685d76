//! The metadata cache of a client: directory entries and attributes of each shard,
//! kept for a bounded time and invalidated by the shard's watch events (design §8,
//! issue 5).
//!
//! **What it holds.** Per shard: `(directory, name) → inode` for entries that exist
//! (never an absence), and `inode → attributes`. Each value carries the log index it
//! was read or written at and the time it was stored; it is served for `ttl_ms` at
//! most.
//!
//! **How it stays right.** Every change a delta makes to an entry or to attributes is
//! named by one of that delta's watch events (I-N11). The cache drops a value when an
//! event of a later index names it, from two sources: the events a proposal's reply
//! carries (so this process reads its own writes at once), and a watcher task that
//! follows the shard's event ring every `watch_interval_ms` (changes made by other
//! processes reach the cache within about that time, and never later than `ttl_ms`).
//! A value read at index `e` is kept only if no event above `e` was applied to its key
//! before it was stored: each key remembers the last sequence that touched it (a mark),
//! and a store checks the mark after inserting, with fences on both sides so that either
//! the store sees the mark or the invalidation sees the stored value. Marks are forgotten
//! after `2 × ttl_ms`, and a value whose read took longer than `ttl_ms` is not stored.
//! When the ring has lost events the watcher has not read (a gap) or a reply cannot name
//! its events, everything is dropped and values read below that point are refused.
//!
//! **Where it runs.** On the tokio threads of the client; the maps are lock-free
//! (`papaya`), so lookups and invalidations never block one another.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kiseki_namespace::{Attributes, InodeId, WatchEvent, WatchKind};

/// Settings of the metadata cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataCacheOptions {
    /// Longest time a value is served after it was read (0 turns the cache off).
    pub ttl_ms: u64,
    /// Pause between two reads of a shard's watch events.
    pub watch_interval_ms: u64,
    /// Nothing is served while the last successful read of the watch events is older
    /// than this (the shard cannot be reached: other clients' changes would go unseen).
    pub watch_silence_max_ms: u64,
    /// Entries and attributes held per shard at most (each map); past it nothing new is
    /// stored until expired values are swept.
    pub values_max: usize,
}

impl Default for MetadataCacheOptions {
    fn default() -> MetadataCacheOptions {
        MetadataCacheOptions {
            ttl_ms: 30_000,
            watch_interval_ms: 20,
            watch_silence_max_ms: 200,
            values_max: 1 << 20,
        }
    }
}

impl MetadataCacheOptions {
    /// No caching.
    pub fn off() -> MetadataCacheOptions {
        MetadataCacheOptions {
            ttl_ms: 0,
            ..MetadataCacheOptions::default()
        }
    }

    /// Whether values are kept at all.
    pub fn enabled(&self) -> bool {
        self.ttl_ms > 0 && self.values_max > 0
    }
}

type EntryKey = (InodeId, Box<[u8]>);

#[derive(Clone, Debug)]
struct Cached<T> {
    value: T,
    index: u64,
    stored_ms: u64,
}

#[derive(Clone, Copy, Debug)]
struct Mark {
    sequence: u64,
    marked_ms: u64,
}

/// Counters of one shard's cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetadataCacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to the shard.
    pub misses: u64,
    /// Values dropped by watch events.
    pub invalidations: u64,
    /// Times everything was dropped (a gap in the events).
    pub resets: u64,
}

/// A read that took longer than this is not stored: the marks that would withdraw it
/// may be gone.
const READ_TIME_MAX_MS: u64 = 1_000;
/// How long a key remembers the last event that named it (twice the longest read).
const MARK_KEEP_MS: u64 = 2 * READ_TIME_MAX_MS;
/// A cache no lookup used for this long is watched at the idle pace.
const IDLE_AFTER_MS: u64 = 5_000;
/// The idle pace of the watcher.
const IDLE_WATCH_INTERVAL_MS: u64 = 500;

/// "No watch position yet": nothing is stored.
const UNARMED: u64 = u64::MAX;

/// The cache of one shard. Clock readings come in as arguments (`now`), so the rules
/// are tested without time passing.
#[derive(Debug)]
pub struct ShardMetadataCache {
    options: MetadataCacheOptions,
    epoch: Instant,
    entries: papaya::HashMap<EntryKey, Cached<InodeId>>,
    attributes: papaya::HashMap<InodeId, Cached<Attributes>>,
    entry_marks: papaya::HashMap<EntryKey, Mark>,
    inode_marks: papaya::HashMap<InodeId, Mark>,
    /// Values read below this index are refused (`UNARMED` before the first index is
    /// known: the watch starts there).
    floor: AtomicU64,
    /// The next sequence the watcher asks for.
    watched: AtomicU64,
    watcher_started: AtomicBool,
    /// When the watcher last read the events (or the cache was armed).
    heard_ms: AtomicU64,
    /// When a lookup last asked the cache.
    used_ms: AtomicU64,
    last_sweep_ms: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    resets: AtomicU64,
}

impl ShardMetadataCache {
    /// An empty cache; `epoch` is the instant `now` arguments are measured from.
    pub fn new(options: MetadataCacheOptions, epoch: Instant) -> ShardMetadataCache {
        ShardMetadataCache {
            options,
            epoch,
            entries: papaya::HashMap::new(),
            attributes: papaya::HashMap::new(),
            entry_marks: papaya::HashMap::new(),
            inode_marks: papaya::HashMap::new(),
            floor: AtomicU64::new(UNARMED),
            watched: AtomicU64::new(0),
            watcher_started: AtomicBool::new(false),
            heard_ms: AtomicU64::new(0),
            used_ms: AtomicU64::new(0),
            last_sweep_ms: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        }
    }

    /// The options.
    pub fn options(&self) -> &MetadataCacheOptions {
        &self.options
    }

    fn millis(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn fresh(&self, stored_ms: u64, now_ms: u64) -> bool {
        now_ms < stored_ms.saturating_add(self.options.ttl_ms)
    }

    /// Whether the watcher heard from the shard recently enough to serve anything.
    fn listening(&self, now_ms: u64) -> bool {
        let silence_max_ms = self
            .options
            .watch_silence_max_ms
            .max(self.options.watch_interval_ms.saturating_mul(4));
        now_ms < self.heard_ms.load(Ordering::Relaxed).saturating_add(silence_max_ms)
    }

    /// The inode `(parent, name)` names, if cached and fresh.
    pub fn entry(&self, parent: InodeId, name: &[u8], now: Instant) -> Option<InodeId> {
        let now_ms = self.millis(now);
        if !self.listening(now_ms) {
            return None;
        }
        let key: EntryKey = (parent, name.into());
        let entries = self.entries.pin();
        entries
            .get(&key)
            .filter(|cached| self.fresh(cached.stored_ms, now_ms))
            .map(|cached| cached.value)
    }

    /// `inode`'s attributes, if cached and fresh.
    pub fn attributes(&self, inode: InodeId, now: Instant) -> Option<Attributes> {
        let now_ms = self.millis(now);
        if !self.listening(now_ms) {
            return None;
        }
        let attributes = self.attributes.pin();
        attributes
            .get(&inode)
            .filter(|cached| self.fresh(cached.stored_ms, now_ms))
            .map(|cached| cached.value.clone())
    }

    /// The inode `(parent, name)` names and its attributes, if both are cached and fresh.
    pub fn entry_with_attributes(&self, parent: InodeId, name: &[u8], now: Instant) -> Option<(InodeId, Attributes)> {
        let inode = self.entry(parent, name, now)?;
        Some((inode, self.attributes(inode, now)?))
    }

    /// Stores that `(parent, name)` named `inode` with `attributes` at `index` (a read
    /// that began at `asked`).
    pub fn store_entry_with_attributes(
        &self,
        parent: InodeId,
        name: &[u8],
        (inode, attributes): (InodeId, &Attributes),
        index: u64,
        asked: Instant,
        now: Instant,
    ) {
        self.store_entry(parent, name, inode, index, asked, now);
        self.store_attributes(inode, attributes, index, asked, now);
    }

    /// Counts a lookup answered here (`hit`) or by the shard.
    pub fn count(&self, hit: bool, now: Instant) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        self.used_ms.fetch_max(self.millis(now), Ordering::Relaxed);
    }

    /// How long the watcher waits before its next read: `watch_interval_ms` while
    /// lookups use the cache, [`IDLE_WATCH_INTERVAL_MS`] once none did for
    /// [`IDLE_AFTER_MS`] (then values may go unserved, as the watch falls silent, and
    /// lookups go to the shard until the watch is back to its pace).
    pub fn watch_pause(&self, now: Instant) -> Duration {
        let now_ms = self.millis(now);
        let idle = now_ms >= self.used_ms.load(Ordering::Relaxed).saturating_add(IDLE_AFTER_MS);
        let interval_ms = if idle {
            self.options.watch_interval_ms.max(IDLE_WATCH_INTERVAL_MS)
        } else {
            self.options.watch_interval_ms
        };
        Duration::from_millis(interval_ms.max(1))
    }

    /// The counters.
    pub fn stats(&self) -> MetadataCacheStats {
        MetadataCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
        }
    }

    /// Whether a value read at `index`, whose read began at `asked`, may be stored.
    fn admits(&self, index: u64, asked: Instant, now: Instant) -> bool {
        self.options.enabled()
            && index >= self.floor.load(Ordering::SeqCst)
            && now.saturating_duration_since(asked) < Duration::from_millis(READ_TIME_MAX_MS)
    }

    /// Stores that `(parent, name)` named `inode` at `index` (a read that began at
    /// `asked`).
    pub fn store_entry(&self, parent: InodeId, name: &[u8], inode: InodeId, index: u64, asked: Instant, now: Instant) {
        // `.` and `..` are not entries the events name.
        if self.admits(index, asked, now) && name != b"." && name != b".." {
            let key: EntryKey = (parent, name.into());
            self.store(&self.entries, &self.entry_marks, key, inode, index, now);
        }
    }

    /// Stores `inode`'s attributes as of `index` (a read that began at `asked`).
    pub fn store_attributes(&self, inode: InodeId, attributes: &Attributes, index: u64, asked: Instant, now: Instant) {
        if self.admits(index, asked, now) {
            self.store(
                &self.attributes,
                &self.inode_marks,
                inode,
                attributes.clone(),
                index,
                now,
            );
        }
    }

    /// Stores `value` of `key` as of `index` unless a newer one is there, then withdraws
    /// it again if an event above `index` marked the key meanwhile.
    fn store<K, V>(
        &self,
        values: &papaya::HashMap<K, Cached<V>>,
        marks: &papaya::HashMap<K, Mark>,
        key: K,
        value: V,
        index: u64,
        now: Instant,
    ) where
        K: std::hash::Hash + Eq + Clone,
        V: Clone,
    {
        let values = values.pin();
        if values.len() >= self.options.values_max && !values.contains_key(&key) {
            return;
        }
        let cached = Cached {
            value,
            index,
            stored_ms: self.millis(now),
        };
        values.update_or_insert(
            key.clone(),
            |old| {
                if old.index <= index {
                    cached.clone()
                } else {
                    old.clone()
                }
            },
            cached.clone(),
        );
        // Pairs with the fence in `invalidate`: either its mark is seen here or it sees
        // (and drops) the value just stored.
        fence(Ordering::SeqCst);
        let marked = marks.pin().get(&key).map(|mark| mark.sequence);
        if marked.is_some_and(|sequence| sequence > index) || index < self.floor.load(Ordering::SeqCst) {
            values.remove_if(&key, |_, cached| cached.index == index).ok();
        }
    }

    /// Marks `key` as changed at `sequence` and drops its value if older.
    fn invalidate<K, V>(
        &self,
        values: &papaya::HashMap<K, Cached<V>>,
        marks: &papaya::HashMap<K, Mark>,
        key: K,
        sequence: u64,
        now_ms: u64,
    ) where
        K: std::hash::Hash + Eq + Clone,
    {
        let mark = Mark {
            sequence,
            marked_ms: now_ms,
        };
        marks.pin().update_or_insert(
            key.clone(),
            |old| if old.sequence >= sequence { *old } else { mark },
            mark,
        );
        fence(Ordering::SeqCst);
        if values
            .pin()
            .remove_if(&key, |_, cached| cached.index < sequence)
            .is_ok_and(|removed| removed.is_some())
        {
            self.invalidations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops every value an event names, unless it was stored at or after the event.
    pub fn apply_events(&self, events: &[WatchEvent], now: Instant) {
        let now_ms = self.millis(now);
        for event in events {
            for inode in event.changed_inodes() {
                self.invalidate(&self.attributes, &self.inode_marks, inode, event.sequence, now_ms);
            }
            for (parent, name) in event.changed_entries() {
                let key: EntryKey = (parent, name.into());
                self.invalidate(&self.entries, &self.entry_marks, key, event.sequence, now_ms);
            }
        }
    }

    /// What a proposal applied at `index` changed: its events (`None`: unknown) and the
    /// inode it created or changed with its attributes. Its own changes are stored.
    pub fn applied(
        &self,
        index: u64,
        events: Option<&[WatchEvent]>,
        changed: Option<(InodeId, &Attributes)>,
        asked: Instant,
        now: Instant,
    ) {
        let Some(events) = events else {
            self.reset(index.saturating_add(1));
            return;
        };
        self.apply_events(events, now);
        // The entries the delta left pointing at an inode, last event first.
        let mut named: Vec<(InodeId, &[u8], Option<InodeId>)> = Vec::new();
        for event in events.iter().rev() {
            let inode = match event.kind {
                WatchKind::Created | WatchKind::Linked | WatchKind::Renamed { .. } => Some(event.inode),
                WatchKind::Removed => None,
                _ => continue,
            };
            if let (Some(parent), Some(name)) = (event.parent, event.name.as_deref()) {
                if !named.iter().any(|(p, n, _)| *p == parent && *n == name) {
                    named.push((parent, name, inode));
                }
            }
        }
        for (parent, name, inode) in named {
            if let Some(inode) = inode {
                self.store_entry(parent, name, inode, index, asked, now);
            }
        }
        if let Some((inode, attributes)) = changed {
            self.store_attributes(inode, attributes, index, asked, now);
        }
    }

    /// Drops everything and refuses values read below `floor`.
    pub fn reset(&self, floor: u64) {
        self.floor.fetch_max(floor, Ordering::SeqCst);
        self.resets.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.entries.pin().clear();
        self.attributes.pin().clear();
    }

    /// Starts following the shard at `index` (the first index this client learned);
    /// true for the one caller that must start the watcher.
    pub fn arm(&self, index: u64, now: Instant) -> bool {
        if !self.options.enabled() {
            return false;
        }
        if self
            .floor
            .compare_exchange(UNARMED, index, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.watched.store(index, Ordering::SeqCst);
            self.heard_ms.store(self.millis(now), Ordering::Relaxed);
        }
        !self.watcher_started.load(Ordering::Relaxed) && !self.watcher_started.swap(true, Ordering::SeqCst)
    }

    /// The next sequence the watcher asks for.
    pub fn watched(&self) -> u64 {
        self.watched.load(Ordering::SeqCst)
    }

    /// The watcher read `events` (asked from [`Self::watched`]; `truncated`: the read
    /// stopped at its limit, maybe inside one delta's events): apply them and move on.
    pub fn watch_read(&self, events: &[WatchEvent], truncated: bool, now: Instant) {
        self.apply_events(events, now);
        self.heard_ms.fetch_max(self.millis(now), Ordering::Relaxed);
        if let (Some(first), Some(last)) = (events.first(), events.last()) {
            let next = if !truncated {
                last.sequence.saturating_add(1)
            } else if first.sequence < last.sequence {
                // Read the last delta again, whole, next time.
                last.sequence
            } else {
                // One delta fills a whole read: its other events cannot be read.
                self.reset(last.sequence.saturating_add(1));
                last.sequence.saturating_add(1)
            };
            self.watched.fetch_max(next, Ordering::SeqCst);
        }
        self.sweep(now);
    }

    /// The ring lost events from the watch position: drop everything, go on from
    /// `oldest_available`.
    pub fn watch_gap(&self, oldest_available: u64, now: Instant) {
        self.reset(oldest_available);
        self.heard_ms.fetch_max(self.millis(now), Ordering::Relaxed);
        self.watched.fetch_max(oldest_available, Ordering::SeqCst);
    }

    /// Forgets expired values and old marks (at most once per `ttl_ms`).
    fn sweep(&self, now: Instant) {
        let now_ms = self.millis(now);
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now_ms < last.saturating_add(MARK_KEEP_MS / 2) {
            return;
        }
        self.last_sweep_ms.store(now_ms, Ordering::Relaxed);
        if now_ms / self.options.ttl_ms.max(1) != last / self.options.ttl_ms.max(1) {
            self.entries
                .pin()
                .retain(|_, cached| self.fresh(cached.stored_ms, now_ms));
            self.attributes
                .pin()
                .retain(|_, cached| self.fresh(cached.stored_ms, now_ms));
        }
        let keep_marks_ms = MARK_KEEP_MS;
        self.entry_marks
            .pin()
            .retain(|_, mark| now_ms < mark.marked_ms.saturating_add(keep_marks_ms));
        self.inode_marks
            .pin()
            .retain(|_, mark| now_ms < mark.marked_ms.saturating_add(keep_marks_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiseki_namespace::{FileKind, Timestamp};

    fn attributes(size_bytes: u64) -> Attributes {
        Attributes {
            kind: FileKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size_bytes,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            nlink: 1,
            generation: 1,
        }
    }

    fn event(sequence: u64, inode: u64, kind: WatchKind, entry: Option<(u64, &[u8])>) -> WatchEvent {
        WatchEvent {
            sequence,
            inode: InodeId(inode),
            kind,
            parent: entry.map(|(parent, _)| InodeId(parent)),
            name: entry.map(|(_, name)| name.to_vec()),
        }
    }

    fn cache() -> (ShardMetadataCache, Instant) {
        let epoch = Instant::now();
        let cache = ShardMetadataCache::new(MetadataCacheOptions::default(), epoch);
        cache.arm(10, epoch);
        (cache, epoch)
    }

    #[test]
    fn a_value_is_served_until_its_ttl_while_the_watcher_hears_from_the_shard() {
        let (cache, t0) = cache();
        cache.store_attributes(InodeId(5), &attributes(1), 10, t0, t0);
        cache.store_entry(InodeId(1), b"a", InodeId(5), 10, t0, t0);
        assert_eq!(cache.attributes(InodeId(5), t0), Some(attributes(1)));
        let heard = t0 + Duration::from_millis(150);
        assert_eq!(cache.attributes(InodeId(5), heard), Some(attributes(1)));
        assert_eq!(cache.entry(InodeId(1), b"a", t0), Some(InodeId(5)));
        // The watcher has been silent for longer than `watch_silence_max_ms`.
        let silent = t0 + Duration::from_millis(300);
        assert_eq!(cache.attributes(InodeId(5), silent), None);
        assert_eq!(cache.entry(InodeId(1), b"a", silent), None);
        cache.watch_read(&[], false, silent);
        assert_eq!(cache.attributes(InodeId(5), silent), Some(attributes(1)));
        // Past the TTL, even with a watcher that hears.
        let later = t0 + Duration::from_millis(30_000);
        cache.watch_read(&[], false, later);
        assert_eq!(cache.attributes(InodeId(5), later), None);
        assert_eq!(cache.entry(InodeId(1), b"a", later), None);
    }

    #[test]
    fn an_unused_cache_is_watched_at_the_idle_pace() {
        let (cache, t0) = cache();
        assert_eq!(cache.watch_pause(t0), Duration::from_millis(20));
        let later = t0 + Duration::from_millis(6_000);
        assert_eq!(cache.watch_pause(later), Duration::from_millis(500));
        cache.count(false, later);
        assert_eq!(cache.watch_pause(later), Duration::from_millis(20));
    }

    #[test]
    fn nothing_is_stored_before_the_watch_starts_or_below_it() {
        let epoch = Instant::now();
        let cache = ShardMetadataCache::new(MetadataCacheOptions::default(), epoch);
        cache.store_attributes(InodeId(5), &attributes(1), 10, epoch, epoch);
        assert_eq!(cache.attributes(InodeId(5), epoch), None);
        assert!(cache.arm(10, epoch));
        assert!(!cache.arm(12, epoch), "one watcher per shard");
        cache.store_attributes(InodeId(5), &attributes(1), 9, epoch, epoch);
        assert_eq!(cache.attributes(InodeId(5), epoch), None);
    }

    #[test]
    fn a_later_event_drops_what_it_names_and_an_older_one_does_not() {
        let (cache, t0) = cache();
        cache.store_attributes(InodeId(5), &attributes(1), 12, t0, t0);
        cache.store_attributes(InodeId(1), &attributes(0), 12, t0, t0);
        cache.store_entry(InodeId(1), b"a", InodeId(5), 12, t0, t0);
        cache.apply_events(&[event(12, 5, WatchKind::DataModified, None)], t0);
        assert!(
            cache.attributes(InodeId(5), t0).is_some(),
            "the value already reflects 12"
        );
        cache.apply_events(&[event(13, 5, WatchKind::Removed, Some((1, b"a")))], t0);
        assert_eq!(cache.attributes(InodeId(5), t0), None);
        assert_eq!(cache.attributes(InodeId(1), t0), None, "the directory changed too");
        assert_eq!(cache.entry(InodeId(1), b"a", t0), None);
    }

    #[test]
    fn a_read_older_than_an_applied_event_is_not_stored() {
        let (cache, t0) = cache();
        // The watcher (or a reply) applied 14 before the read of 13 came back.
        cache.apply_events(
            &[event(
                14,
                6,
                WatchKind::Renamed {
                    from_parent: InodeId(1),
                    from_name: b"old".to_vec(),
                },
                Some((2, b"new")),
            )],
            t0,
        );
        cache.store_entry(InodeId(1), b"old", InodeId(6), 13, t0, t0);
        cache.store_attributes(InodeId(2), &attributes(0), 13, t0, t0);
        assert_eq!(cache.entry(InodeId(1), b"old", t0), None);
        assert_eq!(cache.attributes(InodeId(2), t0), None);
        // A read at 14 or later is fine.
        cache.store_attributes(InodeId(2), &attributes(0), 14, t0, t0);
        assert!(cache.attributes(InodeId(2), t0).is_some());
    }

    #[test]
    fn an_own_create_is_stored_from_its_reply() {
        let (cache, t0) = cache();
        cache.store_attributes(InodeId(1), &attributes(0), 11, t0, t0);
        let events = [event(15, 7, WatchKind::Created, Some((1, b"f")))];
        cache.applied(15, Some(&events), Some((InodeId(7), &attributes(0))), t0, t0);
        assert_eq!(cache.entry(InodeId(1), b"f", t0), Some(InodeId(7)));
        assert_eq!(cache.attributes(InodeId(7), t0), Some(attributes(0)));
        assert_eq!(cache.attributes(InodeId(1), t0), None, "the directory's times moved");
        // The watcher later reads the same event: the values stay.
        cache.watch_read(&events, false, t0);
        assert_eq!(cache.entry(InodeId(1), b"f", t0), Some(InodeId(7)));
        assert_eq!(cache.watched(), 16);
    }

    #[test]
    fn a_replaced_name_points_at_the_new_inode() {
        let (cache, t0) = cache();
        cache.store_entry(InodeId(1), b"f", InodeId(7), 11, t0, t0);
        let events = [
            event(16, 7, WatchKind::Removed, Some((1, b"f"))),
            event(16, 8, WatchKind::Created, Some((1, b"f"))),
        ];
        cache.applied(16, Some(&events), Some((InodeId(8), &attributes(3))), t0, t0);
        assert_eq!(cache.entry(InodeId(1), b"f", t0), Some(InodeId(8)));
        let events = [event(17, 8, WatchKind::Removed, Some((1, b"f")))];
        cache.applied(17, Some(&events), None, t0, t0);
        assert_eq!(cache.entry(InodeId(1), b"f", t0), None);
        assert_eq!(cache.attributes(InodeId(8), t0), None);
    }

    #[test]
    fn a_gap_or_unknown_events_drop_everything_and_older_reads() {
        let (cache, t0) = cache();
        cache.store_attributes(InodeId(5), &attributes(1), 12, t0, t0);
        cache.watch_gap(40, t0);
        assert_eq!(cache.attributes(InodeId(5), t0), None);
        assert_eq!(cache.watched(), 40);
        cache.store_attributes(InodeId(5), &attributes(1), 39, t0, t0);
        assert_eq!(cache.attributes(InodeId(5), t0), None);
        cache.store_attributes(InodeId(5), &attributes(1), 40, t0, t0);
        assert!(cache.attributes(InodeId(5), t0).is_some());
        cache.applied(41, None, None, t0, t0);
        assert_eq!(cache.attributes(InodeId(5), t0), None);
        assert_eq!(cache.stats().resets, 2);
    }

    #[test]
    fn a_slow_read_is_not_stored_and_a_disabled_cache_stores_nothing() {
        let (cache, t0) = cache();
        let late = t0 + Duration::from_millis(1_100);
        cache.watch_read(&[], false, late);
        cache.store_attributes(InodeId(5), &attributes(1), 12, t0, late);
        assert_eq!(cache.attributes(InodeId(5), late), None);
        let off = ShardMetadataCache::new(MetadataCacheOptions::off(), t0);
        assert!(!off.arm(1, t0));
        off.store_attributes(InodeId(5), &attributes(1), 12, t0, t0);
        assert_eq!(off.attributes(InodeId(5), t0), None);
    }

    #[test]
    fn concurrent_stores_and_invalidations_never_leave_a_stale_value() {
        // Readers store what they read at index i while a writer applies events at i+1:
        // after both, a value older than the last event is never left behind.
        let (cache, t0) = cache();
        let cache = std::sync::Arc::new(cache);
        for round in 0..200u64 {
            let index = 100 + 2 * round;
            let reader = {
                let cache = std::sync::Arc::clone(&cache);
                std::thread::spawn(move || {
                    cache.store_attributes(InodeId(9), &attributes(index), index, t0, t0);
                    cache.store_entry(InodeId(1), b"x", InodeId(9), index, t0, t0);
                })
            };
            cache.apply_events(&[event(index + 1, 9, WatchKind::Removed, Some((1, b"x")))], t0);
            reader.join().unwrap();
            assert_eq!(cache.attributes(InodeId(9), t0), None, "round {round}");
            assert_eq!(cache.entry(InodeId(1), b"x", t0), None, "round {round}");
        }
    }
}
