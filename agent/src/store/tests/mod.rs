//! Tests of the snapshot store against real directories under the system
//! temporary directory: the round trip, recovery from damaged and partial
//! files, retention and concurrent puts.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::resource::ResourceSample;

mod recovery;
mod retention;

/// A fresh directory, removed when dropped.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "leakscope-store-{name}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        TestDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn snapshots(&self) -> PathBuf {
        self.0.join("snapshots")
    }

    fn quarantine(&self) -> PathBuf {
        self.0.join("quarantine")
    }

    /// Names of the files in `snapshots/`, sorted.
    fn files(&self) -> Vec<String> {
        names(&self.snapshots())
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Sorted names of the entries of `dir` (none if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `len` pseudo-random bytes from `seed` (xorshift64).
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `now - ago`.
fn ago(ago: Duration) -> Option<SystemTime> {
    Some(SystemTime::now() - ago)
}

/// No limits at all.
fn unlimited() -> StoreOptions {
    StoreOptions::default()
        .max_count(None)
        .max_bytes(None)
        .max_age(None)
}

fn put(store: &Store, target: &str, kind: &str, bytes: &[u8]) -> SnapshotMeta {
    store.put(NewSnapshot::new(target, kind, bytes)).unwrap()
}

fn put_at(store: &Store, time: Option<SystemTime>, bytes: &[u8]) -> SnapshotMeta {
    let mut snap = NewSnapshot::new("api", "heap", bytes);
    snap.time = time;
    store.put(snap).unwrap()
}

fn ids(metas: &[SnapshotMeta]) -> Vec<&str> {
    metas.iter().map(|m| m.id.as_str()).collect()
}

/// Runs `f` and returns what it returned with the messages of the warnings
/// it logged on this thread.
fn warnings_during<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = tracing::subscriber::with_default(Warnings(Arc::clone(&seen)), f);
    let seen = seen.lock().unwrap().clone();
    (out, seen)
}

/// A subscriber that keeps the message of every `WARN` event.
struct Warnings(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut message = Message(String::new());
            event.record(&mut message);
            self.0.lock().unwrap().push(message.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Collects the `message` field of an event.
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[test]
fn store_is_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Store>();
}

#[test]
fn round_trip() {
    let dir = TestDir::new("round-trip");
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.dir(), dir.path());
    assert_eq!(store.stats(), StoreStats::default());

    let heap = data(1, 70_000);
    let mut snap = NewSnapshot::new("api server", "heap", &heap);
    snap.pid = Some(4242);
    snap.trigger = Trigger::Breach;
    snap.labels.insert("rule".into(), "fd_growth".into());
    let meta = store.put(snap).unwrap();
    assert_eq!(meta.target, "api server");
    assert_eq!(meta.pid, Some(4242));
    assert_eq!(meta.kind, "heap");
    assert_eq!(meta.trigger, Trigger::Breach);
    assert_eq!(meta.labels["rule"], "fd_growth");
    assert_eq!(meta.bytes, 70_000);
    assert_eq!(meta.checksum, id::checksum(&heap));
    assert!(meta.id.contains("-api-server-heap-"), "{}", meta.id);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert!((now.as_secs_f64() - meta.time).abs() < 60.0);

    let cpu = data(2, 10);
    let meta2 = put(&store, "api server", "cpu", &cpu);
    assert_eq!(
        ids(&store.list(&ListFilter::default())),
        [&meta.id, &meta2.id]
    );
    assert_eq!(store.get(&meta.id), Some(meta.clone()));
    assert_eq!(store.read(&meta.id).unwrap(), heap);
    assert_eq!(store.read(&meta2.id).unwrap(), cpu);
    assert_eq!(
        store.stats(),
        StoreStats {
            count: 2,
            bytes: 70_010,
            ..StoreStats::default()
        }
    );
    let json: SnapshotMeta = serde_json::from_slice(
        &fs::read(dir.snapshots().join(format!("{}.json", meta.id))).unwrap(),
    )
    .unwrap();
    assert_eq!(json, meta);

    assert!(store.delete(&meta.id).unwrap());
    assert!(!store.delete(&meta.id).unwrap());
    assert!(!store.delete("../../etc/passwd").unwrap());
    assert_eq!(store.get(&meta.id), None);
    assert!(matches!(
        store.read(&meta.id),
        Err(Error::UnknownSnapshot { id }) if id == meta.id
    ));
    assert_eq!(
        dir.files(),
        [format!("{}.json", meta2.id), format!("{}.pb.gz", meta2.id)]
    );
    assert_eq!(store.stats().count, 1);
    assert_eq!(store.stats().bytes, 10);

    // Empty data is a valid snapshot too.
    let empty = put(&store, "api", "goroutine", b"");
    assert_eq!(store.read(&empty.id).unwrap(), b"");
}

#[test]
fn reopen_finds_everything() {
    let dir = TestDir::new("reopen");
    let (before, blobs) = {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let blobs: Vec<Vec<u8>> = (0..5).map(|i| data(i, 1000 + i as usize)).collect();
        for (i, blob) in blobs.iter().enumerate() {
            let mut snap = NewSnapshot::new("api", ["heap", "cpu"][i % 2], blob);
            snap.sample = Some(ResourceSample {
                pid: 7,
                time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
                threads: 3,
                threads_by_name: Some(vec![("tokio-rt".into(), 2)]),
                open_fds: 10,
                fd_limit: None,
                fds_by_kind: None,
                tcp_by_state: Some(vec![(crate::resource::TcpState::CloseWait, 4)]),
                rss_bytes: 1 << 20,
                virtual_bytes: 1 << 30,
                cpu_seconds: 1.5,
                start_time_seconds: 1_699_999_000.0,
            });
            store.put(snap).unwrap();
        }
        (store.list(&ListFilter::default()), blobs)
    };
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.list(&ListFilter::default()), before);
    for (meta, blob) in before.iter().zip(&blobs) {
        assert_eq!(&store.read(&meta.id).unwrap(), blob);
    }
    assert_eq!(store.stats().skipped, 0);
    // New ids continue the sequence instead of reusing it.
    let next = put(&store, "api", "heap", b"x");
    let last_seq = before
        .iter()
        .filter_map(|m| id::seq_of(&m.id))
        .max()
        .unwrap();
    assert!(id::seq_of(&next.id).unwrap() > last_seq);
}

#[test]
fn second_open_is_refused_until_the_first_is_dropped() {
    let dir = TestDir::new("locked");
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::StoreLocked { ref path } if path == dir.path()),
        "{err}"
    );
    drop(store);
    Store::open(dir.path(), StoreOptions::default()).unwrap();
}

#[test]
fn filters_and_latest() {
    let dir = TestDir::new("filters");
    let store = Store::open(dir.path(), unlimited()).unwrap();
    let base = SystemTime::now() - Duration::from_secs(3600);
    let mut made = Vec::new();
    for i in 0..9u64 {
        let target = ["api", "worker", "api"][i as usize % 3];
        let kind = if i % 2 == 0 { "heap" } else { "cpu" };
        let blob = data(i, 16);
        let mut snap = NewSnapshot::new(target, kind, &blob);
        snap.time = Some(base + Duration::from_secs(i * 10));
        made.push(store.put(snap).unwrap());
    }
    let all = store.list(&ListFilter::default());
    assert_eq!(all, made, "oldest first");

    let api = store.list(&ListFilter::default().target("api"));
    assert_eq!(api.len(), 6);
    assert!(api.iter().all(|m| m.target == "api"));

    let api_heap = store.list(&ListFilter::default().target("api").kind("heap"));
    assert_eq!(
        ids(&api_heap),
        [&made[0].id, &made[2].id, &made[6].id, &made[8].id]
    );

    let since = made[5].time;
    assert_eq!(store.list(&ListFilter::default().since(since)), made[5..]);

    let newest = store.list(&ListFilter::default().target("api").limit(2));
    assert_eq!(ids(&newest), [&made[6].id, &made[8].id]);
    assert!(store.list(&ListFilter::default().limit(0)).is_empty());
    assert!(
        store
            .list(&ListFilter::default().target("nobody"))
            .is_empty()
    );

    let latest = store.latest("api", "heap", 3);
    assert_eq!(ids(&latest), [&made[2].id, &made[6].id, &made[8].id]);
    assert_eq!(store.latest("api", "heap", 100).len(), 4);
    assert!(store.latest("api", "heap", 0).is_empty());
}

#[test]
fn invalid_snapshots_are_refused() {
    let dir = TestDir::new("invalid");
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    for kind in ["", "Heap", "heap/../x", "a b"] {
        let err = store.put(NewSnapshot::new("api", kind, b"x")).unwrap_err();
        assert!(
            matches!(err, Error::InvalidSnapshot { field: "kind", .. }),
            "{err}"
        );
    }
    let mut snap = NewSnapshot::new("api", "heap", b"x");
    snap.time = Some(UNIX_EPOCH - Duration::from_secs(1));
    let err = store.put(snap).unwrap_err();
    assert!(
        matches!(err, Error::InvalidSnapshot { field: "time", .. }),
        "{err}"
    );

    let mut snap = NewSnapshot::new("api", "heap", b"x");
    let mut sample = sample_of(1);
    sample.cpu_seconds = f64::NAN;
    snap.sample = Some(sample);
    let err = store.put(snap).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidSnapshot {
                field: "metadata",
                ..
            }
        ),
        "{err}"
    );

    assert_eq!(store.stats().count, 0);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

fn sample_of(pid: u32) -> ResourceSample {
    ResourceSample {
        pid,
        time: UNIX_EPOCH,
        threads: 1,
        threads_by_name: None,
        open_fds: 3,
        fd_limit: Some(1024),
        fds_by_kind: None,
        tcp_by_state: None,
        rss_bytes: 1,
        virtual_bytes: 1,
        cpu_seconds: 0.0,
        start_time_seconds: 0.0,
    }
}

#[test]
fn ids_are_valid_and_sort_by_time() {
    let dir = TestDir::new("ids");
    let store = Store::open(dir.path(), unlimited()).unwrap();
    let base = SystemTime::now() - Duration::from_secs(1000);
    let mut made = Vec::new();
    // Out of order in time, several per millisecond, odd target names.
    for (i, offset_ms) in [500u64, 0, 999_000, 500, 500, 1, 86_400]
        .into_iter()
        .enumerate()
    {
        let mut snap = NewSnapshot::new(["Api/Prod", "worker #2", "", "ünï"][i % 4], "heap", b"x");
        snap.time = Some(base + Duration::from_millis(offset_ms));
        made.push(store.put(snap).unwrap());
    }
    for m in &made {
        assert!(id::is_valid_id(&m.id), "{}", m.id);
        assert!(
            m.id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "{}",
            m.id
        );
    }
    let mut by_id = made.clone();
    by_id.sort_by(|a, b| a.id.cmp(&b.id));
    // Text order is time order, to the millisecond the id spells.
    for w in by_id.windows(2) {
        assert!(
            w[0].time <= w[1].time || w[0].id[..20] == w[1].id[..20],
            "{w:#?}"
        );
    }
    let listed = store.list(&ListFilter::default());
    assert!(listed.windows(2).all(|w| w[0].time <= w[1].time));
    let unique: std::collections::BTreeSet<&str> = made.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(unique.len(), made.len());
    assert!(made[0].id.contains("-api-prod-heap-"), "{}", made[0].id);
    assert!(made[2].id.contains("-target-heap-"), "{}", made[2].id);
}

#[test]
fn concurrent_puts() {
    let dir = TestDir::new("concurrent");
    let store = Store::open(dir.path(), unlimited().max_count(50)).unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..25u64)
                    .map(|i| {
                        let blob = data(t * 1000 + i, 1000 + (i as usize * 37) % 5000);
                        let meta = put(&store, &format!("t{t}"), "heap", &blob);
                        (meta.id, blob)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let written: Vec<(String, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(written.len(), 100);
    let listed = store.list(&ListFilter::default());
    assert_eq!(listed.len(), 50);
    assert_eq!(store.stats().removed_by_retention, 50);
    assert_eq!(
        store.stats().bytes,
        listed.iter().map(|m| m.bytes).sum::<u64>()
    );
    for meta in &listed {
        let blob = &written.iter().find(|(id, _)| *id == meta.id).unwrap().1;
        assert_eq!(&store.read(&meta.id).unwrap(), blob);
    }
    assert_eq!(dir.files().len(), 100);
    drop(store);
    let store = Store::open(dir.path(), unlimited()).unwrap();
    assert_eq!(store.list(&ListFilter::default()), listed);
}

#[test]
fn unusable_directory_is_named() {
    let dir = TestDir::new("unusable");
    fs::create_dir_all(dir.path()).unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, b"").unwrap();
    let inside = file.join("store");
    let err = Store::open(&inside, StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::StoreDir { ref path, .. } if *path == inside),
        "{err}"
    );
    assert!(
        err.to_string().contains(&inside.display().to_string()),
        "{err}"
    );
}

#[test]
fn triggers() {
    for t in [Trigger::Schedule, Trigger::Breach, Trigger::Manual] {
        assert_eq!(t.to_string().parse::<Trigger>().unwrap(), t);
        assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{t}\""));
    }
    assert_eq!("breach".parse::<Trigger>().unwrap(), Trigger::Breach);
    let err = "Breach".parse::<Trigger>().unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidSnapshot {
                field: "trigger",
                ..
            }
        ),
        "{err}"
    );
}
