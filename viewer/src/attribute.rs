//! Naming where leaked threads, tasks and file descriptors come from.
//!
//! Creating a thread, a tokio task or a file allocates (the thread's
//! handle and name, the task's cell, the path's C string), so the heap
//! profile holds the stack of every creation that is still alive. Between
//! two heap profiles, the stacks that grew and pass through a *marker*
//! (`std::thread::Builder::spawn`, tokio's task spawning, `File::open`)
//! name the code that keeps creating them: the first frame from the leaf
//! in the program's own code, past the standard library and dependencies.

use std::collections::HashMap;

use leakscope_agent::profile::Profile;

use crate::analysis::{AnalysisError, Growth};
use crate::fold::{FoldOptions, Frame, fold};

/// A kind of resource and the frames that create it.
#[derive(Debug, Clone)]
pub struct Kind {
    /// Name shown (`threads`, `tasks`, `fds`).
    pub name: String,
    /// Substrings of function names; a stack with a frame containing one
    /// creates this kind.
    pub markers: Vec<String>,
}

impl Kind {
    /// A kind named `name` created by frames containing any of `markers`.
    pub fn new(name: &str, markers: &[&str]) -> Kind {
        Kind {
            name: name.to_owned(),
            markers: markers.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    /// Threads, tokio tasks and file descriptors, by the standard library's
    /// and tokio's creating functions.
    pub fn defaults() -> Vec<Kind> {
        vec![
            Kind::new(
                "threads",
                &[
                    "std::thread::lifecycle::spawn",
                    "std::thread::Builder::spawn",
                    "std::thread::spawn",
                ],
            ),
            Kind::new(
                "tasks",
                &[
                    "tokio::task::spawn::spawn",
                    "tokio::runtime::task::core::Cell",
                    "tokio::runtime::handle::Handle::spawn",
                ],
            ),
            Kind::new(
                "fds",
                &[
                    "std::fs::File::open",
                    "std::fs::File::create",
                    "std::fs::OpenOptions",
                    "std::net::tcp::TcpStream::connect",
                    "std::os::unix::net",
                ],
            ),
        ]
    }
}

/// True for a file of the standard library or of a dependency: a frame
/// that is not the program's own code.
pub fn is_library_file(file: &str) -> bool {
    leakscope_agent::explain::frames::is_library_file(file)
}

/// Index (root first) of the first frame from the leaf in the program's
/// own code, else of the leaf.
fn own_site(frames: &[Frame]) -> Option<usize> {
    frames
        .iter()
        .rposition(|f| !is_library_file(&f.file))
        .or_else(|| frames.len().checked_sub(1))
}

/// True when a frame between the own site and the leaf is one of `kind`'s
/// creating functions: the program's code called it, and it allocated.
/// (The entry closure of every spawned thread or task is on the root side
/// and does not count.)
fn creates(kind: &Kind, frames: &[Frame], site: usize) -> bool {
    frames[site + 1..].iter().any(|f| {
        !f.function.contains("{closure")
            && kind.markers.iter().any(|m| f.function.contains(m.as_str()))
    })
}

/// For each kind, the site whose stacks through the kind's markers grew
/// most from `base` to `new` in `sample_type`; `None` when no such stack
/// grew.
///
/// The default sample type is `alloc_objects` (cumulative allocations),
/// not `inuse_*`: what marks a creation is often freed at once (the C
/// string of a path given to `open`), so the sites that *created* the most
/// during the window are counted, which is what names the code behind a
/// count that keeps rising. Profiles without it use their default type.
pub fn creation_sites(
    base: &Profile,
    new: &Profile,
    kinds: &[Kind],
    sample_type: Option<&str>,
) -> Result<Vec<(String, Option<Growth>)>, AnalysisError> {
    let has = |p: &Profile, t: &str| p.sample_type_names().iter().any(|(n, _)| *n == t);
    let wanted = match sample_type {
        Some(t) => Some(t.to_owned()),
        None if has(base, "alloc_objects") && has(new, "alloc_objects") => {
            Some("alloc_objects".to_owned())
        }
        None => None,
    };
    let opts = FoldOptions {
        sample_type: wanted,
    };
    let fnew = fold(new, &opts)?;
    let fb = fold(
        base,
        &FoldOptions::default().with_sample_type(&fnew.sample_type),
    )?;
    // (kind index, site) -> (base, new)
    let mut sums: HashMap<(usize, Frame), (i64, i64)> = HashMap::new();
    for (folded, is_new) in [(&fb, false), (&fnew, true)] {
        for (frames, v) in &folded.stacks {
            let Some(site) = own_site(frames) else {
                continue;
            };
            let Some(k) = kinds.iter().position(|k| creates(k, frames, site)) else {
                continue;
            };
            let e = sums.entry((k, frames[site].clone())).or_default();
            if is_new {
                e.1 += v;
            } else {
                e.0 += v;
            }
        }
    }
    Ok(kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let best = sums
                .iter()
                .filter(|((ki, _), (b, n))| *ki == i && n > b)
                .max_by(|a, b| {
                    (a.1.1 - a.1.0)
                        .cmp(&(b.1.1 - b.1.0))
                        .then_with(|| b.0.1.function.cmp(&a.0.1.function))
                })
                .map(|((_, f), (b, n))| Growth {
                    function: f.function.to_string(),
                    file: f.file.to_string(),
                    line: f.line,
                    base: *b,
                    new: *n,
                });
            (k.name.clone(), best)
        })
        .collect())
}

/// The site of the program's own code whose live objects grew (the
/// `inuse_objects` growth from `base` to `new`) by about `count`, the growth
/// of a counter (fds that are open and hold a buffer, say): the one whose
/// ratio to `count` is closest to 1, within 0.5–2. Leaked resources keep
/// their owners alive; work that merely allocates and frees does not count. Sites named in
/// `taken` are skipped. For resources whose creation calls no known
/// function that allocates (a small `File::open` allocates nothing), this
/// finds the code that creates one object per resource, such as its buffer
/// or the struct that owns it. `None` when nothing matches.
pub fn site_by_count(
    base: &Profile,
    new: &Profile,
    count: i64,
    taken: &[&str],
) -> Result<Option<Growth>, AnalysisError> {
    if count <= 0 {
        return Ok(None);
    }
    let opts = FoldOptions::default().with_sample_type("inuse_objects");
    let (fb, fnew) = (fold(base, &opts)?, fold(new, &opts)?);
    let mut sums: HashMap<Frame, (i64, i64)> = HashMap::new();
    for (folded, is_new) in [(&fb, false), (&fnew, true)] {
        for (frames, v) in &folded.stacks {
            let Some(site) = own_site(frames) else {
                continue;
            };
            if is_library_file(&frames[site].file) || taken.contains(&&*frames[site].function) {
                continue;
            }
            let e = sums.entry(frames[site].clone()).or_default();
            if is_new {
                e.1 += v;
            } else {
                e.0 += v;
            }
        }
    }
    let distance = |d: i64| (d as f64 / count as f64).ln().abs();
    Ok(sums
        .into_iter()
        .filter(|(_, (b, n))| {
            let d = n - b;
            d > 0 && (0.5..=2.0).contains(&(d as f64 / count as f64))
        })
        .min_by(|a, b| {
            distance(a.1.1 - a.1.0)
                .total_cmp(&distance(b.1.1 - b.1.0))
                .then_with(|| a.0.function.cmp(&b.0.function))
        })
        .map(|(f, (b, n))| Growth {
            function: f.function.to_string(),
            file: f.file.to_string(),
            line: f.line,
            base: b,
            new: n,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::test_profiles::ProfileBuilder;

    #[test]
    fn library_files_are_recognised() {
        assert!(is_library_file("/rustc/abc/library/std/src/thread/mod.rs"));
        assert!(is_library_file(
            "/root/.cargo/registry/src/index.crates.io-x/tokio-1/src/lib.rs"
        ));
        assert!(is_library_file(""));
        assert!(!is_library_file("/work/app/src/main.rs"));
        assert!(!is_library_file("src/leaky.rs"));
    }

    const STD: &str = "/rustc/0123/library/std/src/thread/mod.rs";
    const TOKIO: &str = "/root/.cargo/registry/src/index.crates.io-1/tokio-1.0/src/task/spawn.rs";
    const APP: &str = "/work/app/src/handlers.rs";

    /// A profile with `threads` thread spawns from `handlers::spawn_worker`,
    /// `tasks` task spawns from `handlers::start_job`, `fds` opens from
    /// `handlers::open_log`, and a plain allocation of `other` bytes.
    fn profile(threads: i64, tasks: i64, fds: i64, other: i64) -> Profile {
        let mut b = ProfileBuilder::inuse();
        let alloc = b.location(
            0x10,
            &[(
                "alloc::alloc::alloc",
                "/rustc/0123/library/alloc/src/alloc.rs",
                1,
            )],
        );
        let spawn = b.location(
            0x20,
            &[
                ("std::thread::Builder::spawn_unchecked", STD, 2),
                ("std::thread::Builder::spawn", STD, 3),
            ],
        );
        let worker = b.location(0x30, &[("app::handlers::spawn_worker", APP, 10)]);
        let task = b.location(
            0x40,
            &[
                ("tokio::runtime::task::core::Cell::new", TOKIO, 4),
                ("tokio::task::spawn::spawn", TOKIO, 5),
            ],
        );
        let job = b.location(0x50, &[("app::handlers::start_job::{{closure}}", APP, 20)]);
        let open = b.location(
            0x60,
            &[(
                "std::fs::File::open",
                "/rustc/0123/library/std/src/fs.rs",
                6,
            )],
        );
        let log = b.location(0x70, &[("app::handlers::open_log", APP, 30)]);
        let cache = b.location(
            0x80,
            &[("app::cache::insert", "/work/app/src/cache.rs", 40)],
        );
        b.sample(&[alloc, spawn, worker], &[threads])
            .sample(&[alloc, task, job], &[tasks])
            .sample(&[alloc, open, log], &[fds])
            .sample(&[alloc, cache], &[other])
            .build()
    }

    #[test]
    fn spawn_sites_are_named_by_the_callers_own_code() {
        let base = profile(100, 100, 100, 1000);
        let new = profile(5100, 900, 100, 90_000);
        let sites = creation_sites(&base, &new, &Kind::defaults(), Some("inuse_space")).unwrap();
        type Named<'a> = (&'a str, Option<(&'a str, i64, i64)>);
        let named: Vec<Named<'_>> = sites
            .iter()
            .map(|(k, g)| {
                (
                    k.as_str(),
                    g.as_ref().map(|g| (g.function.as_str(), g.line, g.delta())),
                )
            })
            .collect();
        assert_eq!(
            named,
            [
                ("threads", Some(("app::handlers::spawn_worker", 10, 5000))),
                (
                    "tasks",
                    Some(("app::handlers::start_job::{{closure}}", 20, 800))
                ),
                // The fd site did not grow: not named.
                ("fds", None),
            ]
        );
    }

    /// `inuse_objects` profiles: `n` live objects from each own-code site.
    fn objects(sites: &[(&str, i64)]) -> Profile {
        let mut b = ProfileBuilder::new(&[("inuse_objects", "count")]);
        for (i, (name, n)) in sites.iter().enumerate() {
            let alloc = b.location(
                0x100 + i as u64,
                &[(
                    "alloc::alloc::alloc",
                    "/rustc/1/library/alloc/src/alloc.rs",
                    1,
                )],
            );
            let own = b.location(0x200 + i as u64, &[(name, APP, 10 + i as i64)]);
            b = b.sample(&[alloc, own], &[*n]);
        }
        b.build()
    }

    #[test]
    fn a_counter_is_matched_to_the_site_creating_as_many_objects() {
        let base = objects(&[
            ("app::open_log", 10),
            ("app::handle", 1000),
            ("app::spawn", 10),
        ]);
        let new = objects(&[
            ("app::open_log", 104),
            ("app::handle", 5000),
            ("app::spawn", 150),
        ]);
        // 94 more fds: open_log made 94 more objects; handle 4000, spawn 140.
        let g = site_by_count(&base, &new, 94, &[])
            .unwrap()
            .expect("a site");
        assert_eq!((g.function.as_str(), g.delta()), ("app::open_log", 94));
        // Already named elsewhere: skipped; spawn's 140 is the next within
        // 0.5–2x (1.49), handle's 4000 never is.
        let g = site_by_count(&base, &new, 94, &["app::open_log"])
            .unwrap()
            .expect("a site");
        assert_eq!((g.function.as_str(), g.delta()), ("app::spawn", 140));
        assert_eq!(
            site_by_count(&base, &new, 94, &["app::open_log", "app::spawn"]).unwrap(),
            None
        );
        assert_eq!(site_by_count(&base, &new, 0, &[]).unwrap(), None);
    }
}
