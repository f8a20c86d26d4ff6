//! A [`Source`] over saved profile files (`leakscope view FILES|DIR`): each
//! readable pprof file is a snapshot; files that are not pprof are named
//! once, with the reason, and the rest keep working.

use std::path::{Path, PathBuf};

use leakscope_agent::profile::Profile;

use super::{SnapshotView, Source, TargetView};

/// Saved profiles, read at start and again on every load.
#[derive(Debug)]
pub struct Files {
    title: String,
    entries: Vec<(SnapshotView, PathBuf)>,
    problems: Vec<String>,
}

/// The kind a profile looks like from its sample types.
fn kind_of(p: &Profile) -> String {
    let types: Vec<&str> = p.sample_type_names().iter().map(|(t, _)| *t).collect();
    if types.contains(&"inuse_space") {
        if p.string(p.default_sample_type) == "alloc_space" {
            "allocs"
        } else {
            "heap"
        }
        .into()
    } else if types.contains(&"cpu") {
        "cpu".into()
    } else if types == ["goroutine"] || types.contains(&"goroutine") {
        "goroutine".into()
    } else {
        types.last().copied().unwrap_or("profile").to_owned()
    }
}

/// Profile files under `paths`: files as given, directories one level deep
/// (`*.pb.gz`, `*.pb`, `*.pprof`, `*.prof`, and files without an extension).
pub fn collect_paths(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => match std::fs::read_dir(p) {
                Ok(dir) => {
                    let mut found: Vec<PathBuf> = dir
                        .flatten()
                        .map(|e| e.path())
                        .filter(|f| f.is_file() && looks_like_profile(f))
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => problems.push(format!("{}: {e}", p.display())),
            },
            Ok(_) => files.push(p.clone()),
            Err(e) => problems.push(format!("{}: {e}", p.display())),
        }
    }
    (files, problems)
}

fn looks_like_profile(f: &Path) -> bool {
    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.ends_with(".pb.gz")
        || name.ends_with(".pb")
        || name.ends_with(".pprof")
        || name.ends_with(".prof")
        || name.ends_with(".gz")
        || !name.contains('.')
}

impl Files {
    /// Reads every file once; unreadable ones go to [`Files::problems`].
    pub fn open(paths: &[PathBuf]) -> Files {
        let (files, mut problems) = collect_paths(paths);
        let mut entries: Vec<(SnapshotView, PathBuf)> = Vec::new();
        for f in files {
            let name = f.file_name().map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let bytes = match std::fs::read(&f) {
                Ok(b) => b,
                Err(e) => {
                    problems.push(format!("{}: {e}", f.display()));
                    continue;
                }
            };
            let p = match Profile::decode_bytes(&bytes, &f.display().to_string()) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(e.to_string());
                    continue;
                }
            };
            let mtime = std::fs::metadata(&f)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            let time = if p.time_nanos > 0 {
                p.time_nanos as f64 / 1e9
            } else {
                mtime
            };
            let mut id = name.clone();
            let mut n = 2;
            while entries.iter().any(|(s, _)| s.id == id) {
                id = format!("{name}~{n}");
                n += 1;
            }
            let target = f
                .parent()
                .and_then(|d| d.file_name())
                .map_or_else(|| "files".to_owned(), |d| d.to_string_lossy().into_owned());
            entries.push((
                SnapshotView {
                    id,
                    target,
                    kind: kind_of(&p),
                    time,
                    trigger: "file".into(),
                    bytes: bytes.len() as u64,
                },
                f,
            ));
        }
        entries.sort_by(|a, b| {
            a.0.time
                .total_cmp(&b.0.time)
                .then_with(|| a.0.id.cmp(&b.0.id))
        });
        let title = format!("{} saved profile(s)", entries.len());
        Files {
            title,
            entries,
            problems,
        }
    }

    /// Files that could not be read, each with its reason.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// How many profiles were read.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no file could be read.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Source for Files {
    fn title(&self) -> String {
        self.title.clone()
    }

    fn targets(&self) -> Vec<TargetView> {
        Vec::new()
    }

    fn snapshots(&self, target: Option<&str>) -> Vec<SnapshotView> {
        self.entries
            .iter()
            .filter(|(s, _)| target.is_none_or(|t| s.target == t))
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn load(&self, id: &str) -> Result<Profile, String> {
        let (_, path) = self
            .entries
            .iter()
            .find(|(s, _)| s.id == id)
            .ok_or_else(|| format!("no file {id:?}"))?;
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Profile::decode_bytes(&bytes, &path.display().to_string()).map_err(|e| e.to_string())
    }

    fn notes(&self) -> Vec<String> {
        self.problems.clone()
    }
}
