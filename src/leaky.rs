//! A service that leaks on purpose, for the demo, the examples and the tests.
//!
//! Each route leaks one kind of resource per request, from one named place,
//! so that a profile or a counter can be checked against a known answer:
//!
//! | route | leaks | named by |
//! |-------|-------|----------|
//! | `GET /leak/heap?kb=N` | N KiB (default 64) kept alive forever | [`leak_heap_kib`] |
//! | `GET /leak/thread` | a thread that never ends | thread name `leaky-thread` |
//! | `GET /leak/fd` | an open file (with its 8 KiB read buffer) that is never closed | `/dev/null`, [`leak_fd`] |
//! | `POST /leak/fd/close` | nothing: closes every fd leaked so far (the "fix") | |
//! | `GET /leak/task` | a tokio task that never completes | [`leaked_task`] |
//! | `GET /` | nothing: normal work that allocates and frees | |
//!
//! These routes are stable: later tools and tests build on them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::Query;
use axum::routing::{get, post};

/// Memory kept alive by `/leak/heap`.
static HEAP: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());
/// Files kept open by `/leak/fd`.
static FILES: Mutex<Vec<std::io::BufReader<std::fs::File>>> = Mutex::new(Vec::new());
/// Counters of what was leaked, for the `/leak/stats` route.
static LEAKED_KIB: AtomicU64 = AtomicU64::new(0);
static LEAKED_THREADS: AtomicU64 = AtomicU64::new(0);
static LEAKED_FDS: AtomicU64 = AtomicU64::new(0);
static LEAKED_TASKS: AtomicU64 = AtomicU64::new(0);

/// The leaking routes (merge the agent's routes beside them).
pub fn router() -> Router {
    Router::new()
        .route("/", get(normal_work))
        .route("/leak/heap", get(leak_heap))
        .route("/leak/thread", get(leak_thread))
        .route("/leak/fd", get(leak_fd))
        .route("/leak/fd/close", post(close_fds))
        .route("/leak/task", get(leak_task))
        .route("/leak/stats", get(stats))
}

#[derive(serde::Deserialize)]
struct HeapParams {
    kb: Option<u64>,
}

async fn leak_heap(Query(p): Query<HeapParams>) -> String {
    let kb = p.kb.unwrap_or(64).min(1 << 20);
    leak_heap_kib(kb);
    format!("leaked {kb} KiB\n")
}

/// The one allocation site of `/leak/heap`: keeps `kb` KiB alive forever.
#[inline(never)]
pub fn leak_heap_kib(kb: u64) {
    let block = vec![0x5au8; (kb as usize) * 1024].into_boxed_slice();
    HEAP.lock().unwrap_or_else(|e| e.into_inner()).push(block);
    LEAKED_KIB.fetch_add(kb, Ordering::Relaxed);
}

async fn leak_thread() -> String {
    let n = LEAKED_THREADS.fetch_add(1, Ordering::Relaxed) + 1;
    let spawned = std::thread::Builder::new()
        .name("leaky-thread".into())
        .spawn(|| {
            loop {
                std::thread::park();
            }
        });
    match spawned {
        Ok(_) => format!("leaked thread {n}\n"),
        Err(e) => format!("could not spawn a thread: {e}\n"),
    }
}

/// The route `/leak/fd`: opens `/dev/null` and keeps it, buffered, forever.
pub async fn leak_fd() -> String {
    match std::fs::File::open("/dev/null") {
        Ok(f) => {
            // As files usually are: read through a buffer that lives as
            // long as the file.
            let reader = std::io::BufReader::new(f);
            FILES.lock().unwrap_or_else(|e| e.into_inner()).push(reader);
            let n = LEAKED_FDS.fetch_add(1, Ordering::Relaxed) + 1;
            format!("leaked fd {n}\n")
        }
        Err(e) => format!("could not open /dev/null: {e}\n"),
    }
}

/// Closes the files `/leak/fd` kept open, as a fix would.
async fn close_fds() -> String {
    let closed = std::mem::take(&mut *FILES.lock().unwrap_or_else(|e| e.into_inner())).len();
    format!("closed {closed} fds\n")
}

async fn leak_task() -> String {
    let n = LEAKED_TASKS.fetch_add(1, Ordering::Relaxed) + 1;
    tokio::spawn(leaked_task());
    format!("leaked task {n}\n")
}

/// The task `/leak/task` spawns: it waits forever.
pub async fn leaked_task() {
    std::future::pending::<()>().await;
}

/// Normal request work: builds and sorts a small vector, then frees it.
async fn normal_work() -> String {
    let mut v: Vec<u64> = (0..2_000u64)
        .map(|i| i.wrapping_mul(2_654_435_761) % 10_007)
        .collect();
    v.sort_unstable();
    format!("ok {}\n", v[v.len() / 2])
}

async fn stats() -> String {
    format!(
        "heap_kib {}\nthreads {}\nfds {}\ntasks {}\n",
        LEAKED_KIB.load(Ordering::Relaxed),
        LEAKED_THREADS.load(Ordering::Relaxed),
        LEAKED_FDS.load(Ordering::Relaxed),
        LEAKED_TASKS.load(Ordering::Relaxed)
    )
}
