//! The snapshot store survives `kill -9` in the middle of writes.
//!
//! `kill_during_writes` runs this test binary again as a writer (selected by
//! the `LEAKSCOPE_STORE_CRASH_WRITER` variable), whose threads put snapshots
//! of 64-512 KiB in a loop until it is killed with SIGKILL 50-400 ms later. Six
//! rounds on one directory, reopening the store in between; afterwards every
//! listed snapshot must read back, and no temporary or orphan file may be
//! left.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leakscope_agent::store::{ListFilter, NewSnapshot, Store, StoreOptions, Trigger};

/// Set to the store directory in the writer process.
const WRITER_ENV: &str = "LEAKSCOPE_STORE_CRASH_WRITER";

/// Rounds of write-and-kill.
const ROUNDS: usize = 6;

/// Threads putting snapshots at once in the writer.
const WRITER_THREADS: usize = 3;

/// The store limits, low enough that retention removes files while the
/// writer is being killed too.
fn options() -> StoreOptions {
    StoreOptions::default().max_count(24).max_bytes(6 << 20)
}

/// A small xorshift generator: the test needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Kills the writer if the test fails while it runs.
struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kill_during_writes() {
    if let Some(dir) = std::env::var_os(WRITER_ENV) {
        write_forever(Path::new(&dir));
    }
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!(
        "leakscope-store-crash-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut rng = Rng::seeded();
    let mut seen = BTreeSet::new();
    for round in 0..ROUNDS {
        let mut writer = Writer(
            Command::new(&exe)
                .args([
                    "--exact",
                    "kill_during_writes",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(WRITER_ENV, &dir)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start the writer"),
        );
        let delay = Duration::from_millis(rng.range(50, 400));
        std::thread::sleep(delay);
        // `Child::kill` sends SIGKILL: no destructor or flush runs.
        writer.0.kill().expect("SIGKILL the writer");
        let status = writer.0.wait().expect("reap the writer");
        assert!(!status.success(), "the writer stopped by itself: {status}");

        let leftovers = files_ending(&dir, ".tmp").len();
        let orphans = stems(&dir, ".pb.gz")
            .difference(&stems(&dir, ".json"))
            .count();
        let store = Store::open(&dir, options()).expect("reopen after the kill");
        let listed = check(&dir, &store);
        println!(
            "round {round}: killed after {delay:?}, left {leftovers} temporary and {orphans} \
             orphan data file(s); {} snapshot(s), stats {:?}",
            listed.len(),
            store.stats()
        );
        seen.extend(listed);
    }
    assert!(
        !seen.is_empty(),
        "no snapshot was written in {ROUNDS} rounds: is the writer starting?"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Checks the invariants of a freshly opened store and returns its ids.
fn check(dir: &Path, store: &Store) -> Vec<String> {
    let listed = store.list(&ListFilter::default());
    for meta in &listed {
        let data = store
            .read(&meta.id)
            .unwrap_or_else(|e| panic!("snapshot {} does not read back: {e}", meta.id));
        assert_eq!(data.len() as u64, meta.bytes);
    }
    assert_eq!(files_ending(dir, ".tmp"), Vec::<PathBuf>::new());
    let metas = stems(dir, ".json");
    let datas = stems(dir, ".pb.gz");
    assert_eq!(datas, metas, "data files without metadata or the reverse");
    assert_eq!(listed.len(), metas.len());
    // Writes were cut short, nothing was damaged: partial writes are removed,
    // never quarantined.
    assert_eq!(
        fs::read_dir(dir.join("quarantine")).map_or(0, |d| d.count()),
        0,
        "quarantined after a kill"
    );
    listed.into_iter().map(|m| m.id).collect()
}

/// Files of `<dir>/snapshots` whose names end with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir.join("snapshots")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

/// Names without `suffix` of the files ending with it.
fn stems(dir: &Path, suffix: &str) -> BTreeSet<String> {
    files_ending(dir, suffix)
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .strip_suffix(suffix)
                .map(str::to_owned)
        })
        .collect()
}

/// The writer: [`WRITER_THREADS`] threads put snapshots until the process is
/// killed. It gives up after 30 s, or when its parent is gone, so a failed
/// test leaves no process behind.
fn write_forever(dir: &Path) -> ! {
    let store = Store::open(dir, options()).expect("writer opens the store");
    let parent = std::os::unix::process::parent_id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let threads: Vec<_> = (0..WRITER_THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::seeded();
                // Random bytes made once, stamped per snapshot, so the writer
                // spends its time in `put` and the kill lands there.
                let mut buf: Vec<u8> = (0..(512 << 10) / 8)
                    .flat_map(|_| rng.next().to_le_bytes())
                    .collect();
                let mut n = 0u64;
                while Instant::now() < deadline && std::os::unix::process::parent_id() == parent {
                    let len = rng.range(64 << 10, 512 << 10) as usize;
                    buf[..8].copy_from_slice(&n.to_le_bytes());
                    let kind = ["heap", "cpu"][(n % 2) as usize];
                    let target = format!("crash test {t}");
                    let mut snap = NewSnapshot::new(&target, kind, &buf[..len]);
                    snap.trigger = Trigger::Schedule;
                    store.put(snap).expect("put");
                    n += 1;
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    std::process::exit(3);
}
