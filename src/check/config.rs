//! A check's configuration file (TOML, `--config leakcheck.toml`), so a
//! repository keeps its leak test next to its code. Every key is optional;
//! flags given on the command line win over the file. A key the file does
//! not know is an error naming the file and the key.
//!
//! ```toml
//! [target]
//! spawn = "./target/release/orders"         # or: pid = 1234, or: name = "orders"
//! health = "http://127.0.0.1:8080/healthz"
//! health_timeout = "30s"
//! pprof_url = "http://127.0.0.1:6060"
//! stop_grace = "5s"
//!
//! [load]                                    # the built-in load generator ...
//! rate = 200                                # requests/s in all (none: closed loop)
//! concurrency = 8
//! [[load.request]]
//! url = "http://127.0.0.1:8080/items/{n}"   # {n}: the request's number
//! weight = 20
//! [[load.request]]
//! method = "POST"
//! url = "http://127.0.0.1:8080/orders"
//! body = '{"customer":"c{n}","items":[{"sku":1,"quantity":2}]}'
//! # ... or a command of your own:
//! # command = "k6 run load.js"
//!
//! [phases]
//! warmup = "10s"
//! duration = "60s"
//! cooldown = "15s"
//!
//! [allow]
//! threads = 2
//! heap = "4MiB"
//!
//! [reports]                                 # paths from where the check runs
//! junit = "leak-check.xml"
//! html = "leak-check.html"
//! ```
//!
//! A file over [`MAX_CONFIG_BYTES`] is refused, naming the file and the
//! limit.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::options::{LoadEntry, parse_duration};

/// The largest configuration file read (a leak test's settings are a few
/// hundred bytes; a file this big is a wrong path).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A duration: `"10s"`, `"2m"`, or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Span {
    Secs(f64),
    Text(String),
}

impl Span {
    fn get(&self, at: &str) -> Result<Duration, String> {
        match self {
            Span::Secs(s) if s.is_finite() && *s >= 0.0 => Ok(Duration::from_secs_f64(*s)),
            Span::Secs(s) => Err(format!("{at}: {s} is not a number of seconds >= 0")),
            Span::Text(t) => parse_duration(t).map_err(|e| format!("{at}: {e}")),
        }
    }
}

/// A budget: a count, or a size for the heap (`"4MiB"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Amount {
    Number(f64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSection {
    spawn: Option<String>,
    pid: Option<u32>,
    name: Option<String>,
    health: Option<String>,
    health_timeout: Option<Span>,
    pprof_url: Option<String>,
    stop_grace: Option<Span>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestEntry {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadSection {
    #[serde(default)]
    request: Vec<RequestEntry>,
    rate: Option<f64>,
    concurrency: Option<usize>,
    command: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhasesSection {
    warmup: Option<Span>,
    duration: Option<Span>,
    cooldown: Option<Span>,
    interval: Option<Span>,
    heap_every: Option<Span>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportsSection {
    junit: Option<PathBuf>,
    html: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    target: TargetSection,
    #[serde(default)]
    load: LoadSection,
    #[serde(default)]
    phases: PhasesSection,
    #[serde(default)]
    allow: BTreeMap<String, Amount>,
    #[serde(default)]
    reports: ReportsSection,
}

/// What a configuration file sets; `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileSettings {
    /// `[target] spawn`.
    pub spawn: Option<String>,
    /// `[target] pid`.
    pub pid: Option<u32>,
    /// `[target] name`.
    pub name: Option<String>,
    /// `[target] health`.
    pub health: Option<String>,
    /// `[target] health_timeout`.
    pub health_timeout: Option<Duration>,
    /// `[target] pprof_url`.
    pub pprof_url: Option<String>,
    /// `[target] stop_grace`.
    pub stop_grace: Option<Duration>,
    /// `[[load.request]]`.
    pub requests: Vec<LoadEntry>,
    /// `[load] rate`.
    pub rate: Option<f64>,
    /// `[load] concurrency`.
    pub concurrency: Option<usize>,
    /// `[load] command`.
    pub load_cmd: Option<String>,
    /// `[phases] warmup`.
    pub warmup: Option<Duration>,
    /// `[phases] duration`.
    pub duration: Option<Duration>,
    /// `[phases] cooldown`.
    pub cooldown: Option<Duration>,
    /// `[phases] interval`.
    pub interval: Option<Duration>,
    /// `[phases] heap_every`.
    pub heap_every: Option<Duration>,
    /// `[allow]`, as `KIND=AMOUNT` items.
    pub allow: Vec<String>,
    /// `[reports] junit`.
    pub junit: Option<PathBuf>,
    /// `[reports] html`.
    pub html: Option<PathBuf>,
}

/// Reads `path`.
pub fn load(path: &Path) -> Result<FileSettings, String> {
    let origin = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| format!("{origin}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{origin}: {e}"))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "{origin}: larger than the {} KiB a configuration file may be",
            MAX_CONFIG_BYTES / 1024
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| format!("{origin}: not UTF-8 text: {e}"))?;
    parse(&text, &origin)
}

/// Parses configuration text; errors start with `origin` (the file).
pub fn parse(text: &str, origin: &str) -> Result<FileSettings, String> {
    let shape: FileShape = toml::from_str(text).map_err(|e| {
        // toml's message spans lines (with the offending line quoted):
        // keep it, after the file's name.
        format!("{origin}: {}", e.to_string().trim_end())
    })?;
    let at = |key: &str| format!("{origin}: {key}");
    let t = shape.target;
    let span = |s: Option<Span>, key: &str| s.map(|s| s.get(&at(key))).transpose();
    let mut requests = Vec::new();
    for (i, r) in shape.load.request.into_iter().enumerate() {
        let method = r
            .method
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        let weight = r.weight.unwrap_or(1);
        let spec = format!("{method} {}={weight}", r.url);
        let e = super::options::parse_load(&spec, r.body.as_deref())
            .map_err(|e| format!("{}: {e}", at(&format!("[[load.request]] #{}", i + 1))))?;
        requests.push(e);
    }
    let allow = shape
        .allow
        .into_iter()
        .map(|(k, v)| match v {
            Amount::Number(n) => format!("{k}={n}"),
            Amount::Text(t) => format!("{k}={t}"),
        })
        .collect();
    Ok(FileSettings {
        spawn: t.spawn,
        pid: t.pid,
        name: t.name,
        health: t.health,
        health_timeout: span(t.health_timeout, "[target] health_timeout")?,
        pprof_url: t.pprof_url,
        stop_grace: span(t.stop_grace, "[target] stop_grace")?,
        requests,
        rate: shape.load.rate,
        concurrency: shape.load.concurrency,
        load_cmd: shape.load.command,
        warmup: span(shape.phases.warmup, "[phases] warmup")?,
        duration: span(shape.phases.duration, "[phases] duration")?,
        cooldown: span(shape.phases.cooldown, "[phases] cooldown")?,
        interval: span(shape.phases.interval, "[phases] interval")?,
        heap_every: span(shape.phases.heap_every, "[phases] heap_every")?,
        allow,
        junit: shape.reports.junit,
        html: shape.reports.html,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the module docs.
    const EXAMPLE: &str = r#"
[target]
spawn = "./target/release/orders"
health = "http://127.0.0.1:8080/healthz"
health_timeout = "30s"
pprof_url = "http://127.0.0.1:6060"
stop_grace = 5

[load]
rate = 200
concurrency = 8
[[load.request]]
url = "http://127.0.0.1:8080/items/{n}"
weight = 20
[[load.request]]
method = "POST"
url = "http://127.0.0.1:8080/orders"
body = '{"customer":"c{n}","items":[{"sku":1,"quantity":2}]}'

[phases]
warmup = "10s"
duration = "1m"
cooldown = "15s"

[allow]
threads = 2
heap = "4MiB"

[reports]
junit = "leak-check.xml"
html = "leak-check.html"
"#;

    #[test]
    fn reads_every_section() {
        let s = parse(EXAMPLE, "leakcheck.toml").unwrap();
        assert_eq!(s.spawn.as_deref(), Some("./target/release/orders"));
        assert_eq!(s.health_timeout, Some(Duration::from_secs(30)));
        assert_eq!(s.stop_grace, Some(Duration::from_secs(5)));
        assert_eq!(s.duration, Some(Duration::from_secs(60)));
        assert_eq!((s.rate, s.concurrency), (Some(200.0), Some(8)));
        assert_eq!(s.requests.len(), 2);
        assert_eq!(s.requests[0].weight, 20);
        assert_eq!(s.requests[1].method, "POST");
        assert!(s.requests[1].body.as_deref().unwrap().contains("c{n}"));
        assert_eq!(s.allow, ["heap=4MiB", "threads=2"]);
        assert_eq!(s.junit, Some(PathBuf::from("leak-check.xml")));
        assert_eq!(s.html, Some(PathBuf::from("leak-check.html")));
    }

    #[test]
    fn a_huge_file_is_refused_by_name() {
        let path = std::env::temp_dir().join(format!("leakscope-huge-{}.toml", std::process::id()));
        let line = "# a comment line that fills the file\n";
        let text = line.repeat(MAX_CONFIG_BYTES as usize / line.len() + 2);
        std::fs::write(&path, text).unwrap();
        let e = load(&path).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(e.contains("1024 KiB"), "{e}");
    }

    #[test]
    fn unknown_keys_name_the_file_and_the_key() {
        for (text, key) in [
            ("[phases]\nwarmpu = \"5s\"\n", "warmpu"),
            ("[target]\nspwan = \"x\"\n", "spwan"),
            ("[budgets]\nthreads = 1\n", "budgets"),
            (
                "[[load.request]]\nurl = \"http://h:1/\"\nwieght = 2\n",
                "wieght",
            ),
        ] {
            let e = parse(text, "ci/leakcheck.toml").unwrap_err();
            assert!(e.starts_with("ci/leakcheck.toml: "), "{e}");
            assert!(e.contains(&format!("unknown field `{key}`")), "{e}");
        }
        let e = parse("[phases]\nwarmup = \"5 parsecs\"\n", "f.toml").unwrap_err();
        assert!(e.contains("f.toml: [phases] warmup"), "{e}");
        let e = parse("[[load.request]]\nurl = \"ftp://x\"\n", "f.toml").unwrap_err();
        assert!(e.contains("f.toml: [[load.request]] #1"), "{e}");
    }
}
