//! Whose code is a frame: the program's own, a library's (the standard
//! library, a dependency, the Go runtime), or leakscope's own.
//!
//! A leak is named by the program's own code: the first frame from the
//! leaf that is neither a library nor leakscope. Libraries are recognised by
//! their file (the paths rustc, cargo and Go put their sources under), and
//! by name where there is no file (Go's standard packages, C functions).
//! leakscope's own frames are recognised by crate and module name, so the
//! agent's work (encoding profiles, its threads) is never taken for the
//! service's: a stack with any such frame is the agent's.

/// True for a file of a library: Rust's standard library (`/rustc/...`),
/// a crate from a registry or a git checkout, code a build script generated
/// or compiled (`target/*/build/PKG-HASH/out/`: jemalloc's C sources, for
/// one), Go module sources (`/pkg/mod/`); and for no file at all (code
/// without debug info, pseudo frames).
pub fn is_library_file(file: &str) -> bool {
    file.is_empty()
        || (file.contains("/build/") && file.contains("/out/"))
        || file.starts_with("/rustc/")
        || file.contains("/.cargo/registry/")
        || file.contains("/cargo/registry/")
        || file.contains("/.cargo/git/checkouts/")
        || file.starts_with("/rust/deps/")
        || file.contains("/rustlib/")
        || file.contains("/pkg/mod/")
}

/// True for a Go function of the standard library or the runtime: its
/// package path's first element has no dot and is not `main`
/// (`runtime.gopark`, `net/http.(*conn).serve`, `sync.(*Mutex).Lock`).
pub fn is_go_std_function(name: &str) -> bool {
    if name.contains("::") {
        return false;
    }
    // The package path ends at the first '.' after the last '/'.
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let Some(dot) = name[slash..].find('.') else {
        return false;
    };
    let package = &name[..slash + dot];
    let first = package.split('/').next().unwrap_or(package);
    !first.contains('.') && first != "main"
}

/// Module paths of leakscope's own code in stacks.
const AGENT_PREFIXES: &[&str] = &[
    "leakscope_agent::",
    "leakscope_viewer::",
    "leakscope::ui::",
    "leakscope::sidecar::",
    "leakscope::load::",
    "leakscope::leakcheck::",
    "leakscope::cli::",
];

/// True for a frame of leakscope's own code (the agent, the viewer, the
/// sidecar, the CLI), also as an impl (`<leakscope_agent::... as ...>`).
pub fn is_agent_function(name: &str) -> bool {
    let name = name.trim_start_matches(['<', '&']);
    let name = name.strip_prefix("mut ").unwrap_or(name);
    AGENT_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The global allocator's shims and jemalloc's entry points: generated in
/// the program's crate (by `#[global_allocator]` and
/// `enable_heap_profiling!`), yet never the code that asked for memory.
const ALLOCATOR_PREFIXES: &[&str] = &[
    "__rustc::",
    "__rust_alloc",
    "__rust_realloc",
    "__rust_dealloc",
    "__rdl_",
    "__rg_",
    "_rjem_",
];

/// True for a frame of library code, by file and name (a Go standard
/// function is one whatever its file: `runtime.goexit` is in assembly; the
/// allocator's shims are, though their code is generated in the program).
pub fn is_library_frame(function: &str, file: &str) -> bool {
    is_library_file(file)
        || is_go_std_function(function)
        || ALLOCATOR_PREFIXES.iter().any(|p| function.starts_with(p))
}

/// Index, from the leaf, of the first frame of the program's own code:
/// not a library's, not leakscope's. `frames` go leaf first as
/// `(function, file)`.
pub fn own_frame<'a>(frames: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<usize> {
    frames.into_iter().position(|(function, file)| {
        !is_library_frame(function, file) && !is_agent_function(function)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_files() {
        for file in [
            "",
            "/rustc/0123/library/std/src/thread/mod.rs",
            "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/task/spawn.rs",
            "/home/ci/.cargo/git/checkouts/hyper-abc/src/lib.rs",
            "/home/me/go/pkg/mod/github.com/x/y@v1.2.3/z.go",
            "/work/app/target/release/build/tikv-jemalloc-sys-0f81aa2f6ab1f711/out/build/src/prof_sys.c",
        ] {
            assert!(is_library_file(file), "{file}");
        }
        for file in [
            "/work/app/src/main.rs",
            "src/leaky.rs",
            "/srv/orders/main.go",
        ] {
            assert!(!is_library_file(file), "{file}");
        }
    }

    #[test]
    fn go_standard_packages() {
        for name in [
            "runtime.gopark",
            "runtime.chanrecv1",
            "net/http.(*conn).serve",
            "sync.(*WaitGroup).Wait",
            "internal/poll.(*FD).Read",
        ] {
            assert!(is_go_std_function(name), "{name}");
        }
        for name in [
            "main.worker",
            "main.(*Pool).keep",
            "github.com/acme/orders/internal/jobs.run",
            "example.com/shop.Handle",
            "order_api::jobs::run",
            "start_thread",
        ] {
            assert!(!is_go_std_function(name), "{name}");
        }
    }

    #[test]
    fn agent_frames() {
        for name in [
            "leakscope_agent::profile::build::build_profile",
            "<leakscope_agent::watch::evidence::Evidence as leakscope_agent::watch::monitor::WatchHook>::on_sample",
            "leakscope_viewer::fold::fold",
            "leakscope::sidecar::pull::snapshot::{{closure}}",
            "&leakscope_agent::x",
        ] {
            assert!(is_agent_function(name), "{name}");
        }
        for name in [
            "leakscope::leaky::leak_heap_kib",
            "order_api::jobs::run",
            "<tokio::task::JoinHandle<T> as core::future::Future>::poll",
        ] {
            assert!(!is_agent_function(name), "{name}");
        }
    }

    #[test]
    fn own_frame_skips_libraries_and_the_agent() {
        let std = "/rustc/1/library/std/src/sync/mpsc.rs";
        let frames = [
            ("std::sys::pal::unix::futex::futex_wait", std),
            ("std::sync::mpsc::Receiver<T>::recv", std),
            (
                "order_api::workers::start::{{closure}}",
                "/srv/app/src/workers.rs",
            ),
            ("std::thread::Builder::spawn_unchecked_", std),
        ];
        assert_eq!(own_frame(frames.iter().copied()), Some(2));
        let agent = [
            (
                "alloc::raw_vec::finish_grow",
                "/rustc/1/library/alloc/src/raw_vec.rs",
            ),
            (
                "leakscope_agent::profile::build::build_profile",
                "/work/agent/src/profile/build.rs",
            ),
            ("order_api::main", "/srv/app/src/main.rs"),
        ];
        // The agent's frame is skipped; the caller's own frame is found.
        assert_eq!(own_frame(agent.iter().copied()), Some(2));
        let go = [
            ("runtime.gopark", "/usr/lib/go-1.19/src/runtime/proc.go"),
            ("runtime.chanrecv1", "/usr/lib/go-1.19/src/runtime/chan.go"),
            ("main.worker", "/srv/orders/main.go"),
        ];
        assert_eq!(own_frame(go.iter().copied()), Some(2));
        let shim = [
            ("__rustc::__rust_alloc", "/work/app/agent/src/lib.rs"),
            ("orders::audit::remember", "/work/app/src/audit.rs"),
        ];
        assert_eq!(own_frame(shim.iter().copied()), Some(1));
        let goexit = [("runtime.goexit", "/usr/lib/go-1.19/src/runtime/asm_amd64.s")];
        assert_eq!(own_frame(goexit.iter().copied()), None);
        assert_eq!(own_frame([("clone3", "")]), None);
    }
}
