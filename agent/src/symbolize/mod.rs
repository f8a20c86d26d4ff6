//! One symbolizer for every profile the agent writes.
//!
//! Addresses become frames (demangled function name, mangled name, file,
//! line), with inlined frames expanded innermost first, the order pprof's
//! `Location.line` uses. The symbolizer is synchronous and meant to run on a
//! blocking thread, never on an async worker.
//!
//! Memory is bounded on purpose (other projects lost 100 MB to 1 GB here):
//! results go into a cache with a fixed number of entries that is emptied when
//! full, names are interned, debug info is read through `mmap` (file-backed
//! pages the kernel can drop), and the parsed debug info (line tables and
//! function ranges: tens of MB for a large binary) is released after every
//! batch unless [`SymbolizerOptions::keep_debug_info`] is set. Parsing it
//! again costs ~15 ms per profile; keeping it would make the agent's own
//! memory the biggest item in the heap profiles it serves. `benches/symbolizer.rs`
//! measures both.

mod maps;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

pub use maps::{MapEntry, ObjectInfo, ProcessMaps};

/// One (possibly inlined) function frame at an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Demangled name without the hash suffix, e.g. `my_app::handler`.
    pub name: Arc<str>,
    /// The linker's (mangled) name; equals `name` when there is none.
    pub system_name: Arc<str>,
    /// Source file, when debug info has it.
    pub file: Option<Arc<str>>,
    /// Source line, 0 when unknown.
    pub line: u32,
}

/// True for a source file of the standard library or of a dependency from
/// a registry: a frame that is not the program's own code. Paths relative
/// to the workspace (`src/jobs.rs`, `agent/src/...`) are the program's own.
pub fn is_library_file(file: &str) -> bool {
    file.is_empty()
        || file.starts_with("/rustc/")
        || file.contains("/.cargo/registry/")
        || file.contains("/cargo/registry/")
        || file.starts_with("/rust/deps/")
        || file.contains("/rustlib/")
}

/// What one address resolved to.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Index into [`ProcessMaps::entries`] of the mapping holding the address.
    pub mapping: Option<usize>,
    /// Frames, innermost inlined frame first; empty when nothing is known.
    pub frames: Arc<[Frame]>,
}

/// Limits of the symbolizer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SymbolizerOptions {
    /// Most addresses kept in the result cache before it is emptied.
    pub cache_entries: usize,
    /// Keep parsed debug info between batches (faster, much more memory).
    pub keep_debug_info: bool,
}

impl SymbolizerOptions {
    /// Default for [`SymbolizerOptions::cache_entries`].
    pub const DEFAULT_CACHE_ENTRIES: usize = 16_384;
}

impl SymbolizerOptions {
    /// Sets [`SymbolizerOptions::keep_debug_info`].
    #[must_use]
    pub fn keep_debug_info(mut self, keep: bool) -> Self {
        self.keep_debug_info = keep;
        self
    }

    /// Sets [`SymbolizerOptions::cache_entries`].
    #[must_use]
    pub fn cache_entries(mut self, entries: usize) -> Self {
        self.cache_entries = entries;
        self
    }
}

impl Default for SymbolizerOptions {
    fn default() -> Self {
        SymbolizerOptions {
            cache_entries: Self::DEFAULT_CACHE_ENTRIES,
            keep_debug_info: false,
        }
    }
}

/// Counters describing the symbolizer's work, for tests and benches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SymbolizerStats {
    /// Addresses asked for.
    pub lookups: u64,
    /// Of those, answered from the cache.
    pub cache_hits: u64,
    /// Debug-info loads of an object file.
    pub loads: u64,
    /// Times parsed debug info was released.
    pub unloads: u64,
    /// Entries in the cache now.
    pub cached: usize,
}

/// Turns addresses into frames. See the module docs.
pub struct Symbolizer {
    options: SymbolizerOptions,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    objects: HashMap<String, ObjectSlot>,
    cache: HashMap<(Arc<str>, u64), Arc<[Frame]>>,
    names: HashSet<Arc<str>>,
    stats: SymbolizerStats,
}

#[derive(Default)]
struct ObjectSlot {
    path: Option<Arc<str>>,
    info: Option<ObjectInfo>,
    loader: Option<addr2line::Loader>,
    load_failed: bool,
}

impl Symbolizer {
    /// A symbolizer with the given limits.
    pub fn new(options: SymbolizerOptions) -> Symbolizer {
        Symbolizer {
            options,
            state: Mutex::new(State::default()),
        }
    }

    /// The process-wide symbolizer shared by CPU and heap profiles.
    pub fn global() -> &'static Symbolizer {
        static GLOBAL: OnceLock<Symbolizer> = OnceLock::new();
        GLOBAL.get_or_init(|| Symbolizer::new(SymbolizerOptions::default()))
    }

    /// Resolves `addrs` (already adjusted: callers' return addresses minus
    /// one) against the mappings `maps`.
    pub fn resolve(&self, maps: &ProcessMaps, addrs: &[u64]) -> HashMap<u64, Resolved> {
        let mut state = self.lock();
        let mut out = HashMap::with_capacity(addrs.len());
        for &addr in addrs {
            if out.contains_key(&addr) {
                continue;
            }
            let mapping = maps.find(addr);
            let frames = match mapping {
                Some(i) => state.frames_for(&maps.entries[i], addr, &self.options),
                None => Arc::from(Vec::new()),
            };
            out.insert(addr, Resolved { mapping, frames });
        }
        if !self.options.keep_debug_info {
            state.release_debug_info();
        }
        out
    }

    /// Build ID and debug-info facts of the object at `path`, read once and
    /// remembered.
    pub fn object_info(&self, path: &str) -> Option<ObjectInfo> {
        let mut state = self.lock();
        state.slot(path).info.clone()
    }

    /// Runs `f` while no batch is being symbolized, so that `f` never sees
    /// the symbolizer's transient memory (parsed debug info, tens of MB):
    /// heap dumps taken this way do not show the agent's own work.
    pub fn while_idle<T>(&self, f: impl FnOnce() -> T) -> T {
        let _idle = self.lock();
        f()
    }

    /// Releases parsed debug info and the cache now.
    pub fn unload(&self) {
        self.lock().unload();
    }

    /// Counters of work done so far.
    pub fn stats(&self) -> SymbolizerStats {
        let state = self.lock();
        SymbolizerStats {
            cached: state.cache.len(),
            ..state.stats
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while symbolizing leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn unload(&mut self) {
        self.release_debug_info();
        self.cache = HashMap::new();
        self.names = HashSet::new();
    }

    fn release_debug_info(&mut self) {
        let mut released = false;
        for slot in self.objects.values_mut() {
            released |= slot.loader.take().is_some();
            slot.load_failed = false;
        }
        if released {
            self.stats.unloads += 1;
            // The parsed debug info was tens of MB of short-lived heap: hand
            // the pages back now instead of after jemalloc's decay time.
            #[cfg(feature = "heap")]
            crate::heap::purge();
        }
    }

    fn slot(&mut self, path: &str) -> &mut ObjectSlot {
        self.objects
            .entry(path.to_owned())
            .or_insert_with(|| ObjectSlot {
                path: Some(Arc::from(path)),
                info: ObjectInfo::read(Path::new(path)),
                ..ObjectSlot::default()
            })
    }

    fn frames_for(
        &mut self,
        map: &MapEntry,
        addr: u64,
        options: &SymbolizerOptions,
    ) -> Arc<[Frame]> {
        self.stats.lookups += 1;
        let slot = self.slot(&map.path);
        let Some(info) = &slot.info else {
            return Arc::from(Vec::new());
        };
        let svma = info.to_svma(map, addr);
        let key_path = slot
            .path
            .clone()
            .unwrap_or_else(|| Arc::from(map.path.as_str()));
        let key = (key_path, svma);
        if let Some(hit) = self.cache.get(&key) {
            self.stats.cache_hits += 1;
            return hit.clone();
        }
        let raw = self.lookup(&map.path, svma);
        let frames: Arc<[Frame]> = raw
            .into_iter()
            .map(|(name, system_name, file, line)| Frame {
                name: intern(&mut self.names, &name),
                system_name: intern(&mut self.names, &system_name),
                file: file.map(|f| intern(&mut self.names, &f)),
                line,
            })
            .collect();
        if self.cache.len() >= options.cache_entries {
            self.cache.clear();
            self.names.retain(|n| Arc::strong_count(n) > 1);
        }
        self.cache.insert(key, frames.clone());
        frames
    }

    /// Raw frames (name, system name, file, line) from the object's debug
    /// info, falling back to its symbol table.
    fn lookup(&mut self, path: &str, svma: u64) -> Vec<(String, String, Option<String>, u32)> {
        let slot = self.objects.entry(path.to_owned()).or_default();
        if slot.loader.is_none() && !slot.load_failed {
            match addr2line::Loader::new(path) {
                Ok(loader) => {
                    slot.loader = Some(loader);
                    self.stats.loads += 1;
                }
                Err(_) => slot.load_failed = true,
            }
        }
        let Some(loader) = &slot.loader else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Ok(mut frames) = loader.find_frames(svma) {
            while let Ok(Some(frame)) = frames.next() {
                let raw = frame
                    .function
                    .as_ref()
                    .and_then(|f| f.raw_name().ok())
                    .map(|n| n.into_owned());
                let Some(raw) = raw.or_else(|| loader.find_symbol(svma).map(str::to_owned)) else {
                    continue;
                };
                let (file, line) = frame
                    .location
                    .map(|l| (l.file.map(str::to_owned), l.line.unwrap_or(0)))
                    .unwrap_or((None, 0));
                out.push((demangle(&raw), raw, file, line));
            }
        }
        match (out.last_mut(), loader.find_symbol(svma)) {
            (None, Some(sym)) => out.push((demangle(sym), sym.to_owned(), None, 0)),
            // The outermost frame is the real function, which the symbol
            // table names in full even when the debug info only has a short
            // name (line-tables-only builds).
            (Some(outer), Some(sym)) if !outer.0.contains("::") => {
                outer.0 = demangle(sym);
                outer.1 = sym.to_owned();
            }
            _ => {}
        }
        out
    }
}

fn intern(names: &mut HashSet<Arc<str>>, s: &str) -> Arc<str> {
    if let Some(n) = names.get(s) {
        return n.clone();
    }
    let n: Arc<str> = Arc::from(s);
    names.insert(n.clone());
    n
}

/// Demangles a Rust symbol without its hash suffix; other names pass through.
pub fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(d) => format!("{d:#}"),
        Err(_) => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbolizer() -> u64 {
        std::hint::black_box(41) + 1
    }

    #[test]
    fn resolves_own_function_with_file_and_line() {
        let maps = ProcessMaps::current().expect("maps");
        let addr = marker_function_for_symbolizer as *const () as usize as u64;
        let sym = Symbolizer::new(SymbolizerOptions::default());
        let out = sym.resolve(&maps, &[addr]);
        let r = &out[&addr];
        assert_eq!(r.mapping, Some(0), "own code is in the main binary mapping");
        let outer = r.frames.last().expect("frames");
        assert!(
            outer.name.ends_with("marker_function_for_symbolizer"),
            "{:?}",
            r.frames
        );
        assert!(
            outer
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with("symbolize/mod.rs")),
            "{:?}",
            r.frames
        );
        assert!(outer.line > 0);
        assert!(outer.system_name.starts_with("_R") || outer.system_name.starts_with("_ZN"));
    }

    #[test]
    fn cache_is_bounded_and_unload_releases() {
        let maps = ProcessMaps::current().expect("maps");
        let options = SymbolizerOptions {
            cache_entries: 8,
            keep_debug_info: true,
        };
        let sym = Symbolizer::new(options);
        let base = marker_function_for_symbolizer as *const () as usize as u64;
        let addrs: Vec<u64> = (0..40).map(|i| base + i).collect();
        sym.resolve(&maps, &addrs);
        assert!(sym.stats().cached <= 8, "{:?}", sym.stats());
        sym.resolve(&maps, &addrs[39..]);
        assert_eq!(sym.stats().cache_hits, 1);
        sym.unload();
        let s = sym.stats();
        assert_eq!((s.cached, s.unloads), (0, 1));
    }

    #[test]
    fn debug_info_is_released_after_each_batch_by_default() {
        let maps = ProcessMaps::current().expect("maps");
        let sym = Symbolizer::new(SymbolizerOptions::default());
        let base = marker_function_for_symbolizer as *const () as usize as u64;
        sym.resolve(&maps, &[base]);
        sym.resolve(&maps, &[base + 1]);
        let s = sym.stats();
        assert_eq!((s.loads, s.unloads), (2, 2), "{s:?}");
        // Results stay cached: asking again needs no load.
        sym.resolve(&maps, &[base]);
        assert_eq!(sym.stats().loads, 2);
    }

    #[test]
    fn unknown_address_resolves_to_nothing() {
        let maps = ProcessMaps::current().expect("maps");
        let sym = Symbolizer::new(SymbolizerOptions::default());
        let out = sym.resolve(&maps, &[8]);
        assert!(out[&8].mapping.is_none() && out[&8].frames.is_empty());
    }

    #[test]
    fn demangles_without_hash() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("writev"), "writev");
    }
}
