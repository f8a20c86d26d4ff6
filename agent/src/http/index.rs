//! The `/debug/pprof/` index page and the redirect to it.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::{HttpState, nosniff};

/// `/debug/pprof` → `/debug/pprof/`, with the permanent redirect Go's mux sends.
pub(crate) async fn redirect() -> Response {
    let mut res = (
        StatusCode::MOVED_PERMANENTLY,
        Html("<a href=\"/debug/pprof/\">Moved Permanently</a>.\n"),
    )
        .into_response();
    res.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/debug/pprof/"));
    res
}

struct Entry {
    name: &'static str,
    count: Option<usize>,
    about: &'static str,
}

/// The index: each profile with its count, a `?debug=1` link and a line on
/// what it shows.
pub(crate) async fn index(State(state): State<HttpState>) -> Response {
    let (heap_count, thread_count, fd_count) = state
        .heavy(|| (heap_stack_count(), thread_count(), open_fd_count()))
        .await
        .unwrap_or((None, None, None));
    let tasks_count = tokio::runtime::Handle::try_current()
        .ok()
        .map(|h| h.metrics().num_alive_tasks());
    let entries = [
        Entry {
            name: "allocs",
            count: heap_count,
            about: "Every sampled allocation since the process started (jemalloc prof_accum), by call stack. Open with -sample_index=alloc_space to see who allocates most.",
        },
        Entry {
            name: "cmdline",
            count: None,
            about: "The command line of this process, arguments separated by NUL bytes.",
        },
        Entry {
            name: "fds",
            count: fd_count,
            about: "Open file descriptors grouped by what they are: files by path, TCP by state and peer (inbound by listening port), unix sockets, pipes, ... debug=2 lists every fd.",
        },
        Entry {
            name: "goroutine",
            count: tasks_count,
            about: "The tasks profile under Go's name, for tools that scrape Go services (?debug=1 starts with goroutine profile: total N).",
        },
        Entry {
            name: "heap",
            count: heap_count,
            about: "Memory in use now, sampled by jemalloc, by allocating call stack. Add ?seconds=N for what changed over N seconds.",
        },
        Entry {
            name: "profile",
            count: None,
            about: "CPU profile. ?seconds=N sets the duration (default 30); download it, then run go tool pprof on the file.",
        },
        Entry {
            name: "symbol",
            count: None,
            about: "Resolves program counters to function names (Go's symbol protocol), for pprof clients.",
        },
        Entry {
            name: "tasks",
            count: tasks_count,
            about: "Live tokio tasks by spawn site (file:line and the spawning function), with --cfg tokio_unstable and leakscope_agent::tasks::install_hooks; otherwise only their count. ?debug=2 gives one block per site.",
        },
        Entry {
            name: "threads",
            count: thread_count,
            about: "Stack traces of all current OS threads, grouped by stack and thread name (each thread is interrupted once with SIGURG). Diff two snapshots to find the code that starts threads that never end.",
        },
    ];
    let mut rows = String::new();
    for e in &entries {
        let count = e.count.map_or(String::new(), |c| c.to_string());
        rows.push_str(&format!(
            "<tr><td>{count}</td><td><a href=\"{name}?debug=1\">{name}</a></td><td>{about}</td></tr>\n",
            name = e.name,
            about = e.about
        ));
    }
    let heap_note = if heap_count.is_none() {
        "<p><b>Heap profiling is off</b> in this process: see the heap link for how to turn it on.</p>\n"
    } else {
        ""
    };
    nosniff(
        Html(format!(
            "<html>\n<head>\n<title>/debug/pprof/</title>\n\
             <style>body{{font-family:sans-serif}} td{{padding:0 1em 0 0;vertical-align:top}}</style>\n\
             </head>\n<body>\n/debug/pprof/\n<br>\n\
             <p>Served by leakscope. Profiles are in pprof format: \
             <code>go tool pprof http://HOST/debug/pprof/heap</code>. \
             Add debug=1 to a link for the legacy text form.</p>\n{heap_note}\
             Types of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td><td></td></thead>\n\
             {rows}</table>\n</body>\n</html>\n"
        ))
        .into_response(),
    )
}

/// Number of threads of this process now, `None` if /proc cannot say.
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count)
}

/// Open fds of this process (a `stat` of `/proc/self/fd`).
fn open_fd_count() -> Option<usize> {
    let s = crate::resource::sample(
        crate::resource::Target::SelfProcess,
        &crate::resource::SampleOptions::default(),
    );
    s.ok().and_then(|s| usize::try_from(s.open_fds).ok())
}

/// Number of stacks in the heap profile, `None` when heap profiling is off.
fn heap_stack_count() -> Option<usize> {
    #[cfg(feature = "heap")]
    {
        crate::collect::heap::dump()
            .ok()
            .map(|raw| raw.samples.len())
    }
    #[cfg(not(feature = "heap"))]
    {
        None
    }
}
