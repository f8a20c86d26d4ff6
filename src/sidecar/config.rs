//! The sidecar's configuration file (TOML), for several targets at once.
//! The format is documented in docs/configuration.md; `deploy/sidecar.toml`
//! is a complete example.
//!
//! ```toml
//! [sidecar]
//! listen = "127.0.0.1:7070"
//! data_dir = "/var/lib/leakscope"
//!
//! [[target]]
//! name = "api"
//! match = "my-api"                     # or: pid = 1234
//! pprof_url = "http://127.0.0.1:6060"
//! heap_every_secs = 60
//!
//! # Rules for every target (the format of the rules file), unless a
//! # target names its own `rules_file`.
//! include_defaults = true
//! [[rule]]
//! name = "threads_high"
//! metric = "threads"
//! above = { warning = 500 }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leakscope_agent::client::url::HttpUrl;
use leakscope_agent::watch::config::{rules_from_file, rules_from_table};
use leakscope_agent::watch::rules::default_rules;
use regex::Regex;
use serde::Deserialize;

use super::{Selector, SidecarOptions, TargetSpec};

/// `[sidecar]`: settings of the whole sidecar; command-line flags win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarSection {
    /// API address.
    pub listen: Option<String>,
    /// Data directory (relative to the config file's directory).
    pub data_dir: Option<PathBuf>,
    /// Sampling interval in milliseconds.
    pub interval_ms: Option<u64>,
    /// Webhook URL for alerts.
    pub webhook: Option<String>,
    /// Prometheus Alertmanager's base URL for alerts (`http://host:9093`).
    pub alertmanager: Option<String>,
    /// A PEM file of CA certificates trusted for `https://` (webhook,
    /// Alertmanager, pprof URLs) besides the platform's; relative to the
    /// config file's directory.
    pub ca_file: Option<PathBuf>,
    /// Store retention: most snapshots.
    pub max_snapshots: Option<usize>,
    /// Store retention: most bytes.
    pub max_bytes: Option<u64>,
    /// Store retention: oldest age in hours.
    pub max_age_hours: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetEntry {
    name: String,
    pid: Option<u32>,
    #[serde(rename = "match")]
    pattern: Option<String>,
    pprof_url: Option<String>,
    heap_every_secs: Option<f64>,
    cpu_every_secs: Option<f64>,
    cpu_seconds: Option<u32>,
    counts_every_secs: Option<f64>,
    evidence_every_secs: Option<f64>,
    rules_file: Option<PathBuf>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A parsed configuration file.
#[derive(Debug)]
pub struct ConfigFile {
    /// The `[sidecar]` section.
    pub sidecar: SidecarSection,
    /// The `[[target]]` entries.
    pub targets: Vec<TargetSpec>,
}

/// Seconds as a schedule: `0` turns it off.
fn every(
    secs: Option<f64>,
    default: Option<Duration>,
    at: &str,
) -> Result<Option<Duration>, String> {
    match secs {
        None => Ok(default),
        Some(0.0) => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(format!("{at}: {s} is not a number of seconds >= 0")),
    }
}

/// Reads `path`. Errors name the file and the target or key at fault.
pub fn load(path: &Path) -> Result<ConfigFile, String> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{origin}: {e}"))?;
    parse(&text, &origin, path.parent().unwrap_or(Path::new(".")))
}

/// Parses configuration text; relative paths are taken from `base_dir`.
pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<ConfigFile, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
    let sidecar: SidecarSection = match table.remove("sidecar") {
        Some(v) => v
            .try_into()
            .map_err(|e| format!("{origin}: [sidecar]: {e}"))?,
        None => SidecarSection::default(),
    };
    let entries: Vec<TargetEntry> = match table.remove("target") {
        Some(v) => v
            .try_into()
            .map_err(|e| format!("{origin}: [[target]]: {e}"))?,
        None => Vec::new(),
    };
    let has_rules = table.contains_key("rule") || table.contains_key("include_defaults");
    let shared_rules = if has_rules {
        rules_from_table(table, origin).map_err(|e| e.to_string())?
    } else {
        if let Some(key) = table.keys().next() {
            return Err(format!(
                "{origin}: unknown key `{key}` (expected [sidecar], [[target]], [[rule]] or include_defaults)"
            ));
        }
        default_rules()
    };
    let mut targets = Vec::new();
    for e in entries {
        let at = format!("{origin}: target `{}`", e.name);
        let selector = match (e.pid, e.pattern) {
            (Some(pid), None) => Selector::Pid(pid),
            (None, Some(p)) => Selector::Name(Regex::new(&p).map_err(|err| {
                format!("{at}: match {p:?} is not a valid regular expression: {err}")
            })?),
            _ => return Err(format!("{at}: give exactly one of `pid` or `match`")),
        };
        let mut spec = TargetSpec::new(e.name.clone(), selector);
        spec.pprof_url = e
            .pprof_url
            .map(|u| HttpUrl::parse(&u).map_err(|m| format!("{at}: pprof_url {m}")))
            .transpose()?;
        spec.heap_every = every(
            e.heap_every_secs,
            spec.heap_every,
            &format!("{at}: heap_every_secs"),
        )?;
        spec.cpu_every = every(e.cpu_every_secs, None, &format!("{at}: cpu_every_secs"))?;
        if let Some(s) = e.cpu_seconds {
            spec.cpu_seconds = s;
        }
        spec.counts_every = every(
            e.counts_every_secs,
            Some(spec.counts_every),
            &format!("{at}: counts_every_secs"),
        )?
        .unwrap_or(Duration::ZERO);
        spec.evidence_every = every(
            e.evidence_every_secs,
            Some(spec.evidence_every),
            &format!("{at}: evidence_every_secs"),
        )?
        .unwrap_or(Duration::ZERO);
        spec.rules = match e.rules_file {
            Some(f) => rules_from_file(&base_dir.join(f)).map_err(|err| format!("{at}: {err}"))?,
            None => shared_rules.clone(),
        };
        spec.labels = e.labels;
        targets.push(spec);
    }
    let mut sidecar = sidecar;
    if let Some(d) = &sidecar.data_dir
        && d.is_relative()
    {
        sidecar.data_dir = Some(base_dir.join(d));
    }
    if let Some(f) = &sidecar.ca_file
        && f.is_relative()
    {
        sidecar.ca_file = Some(base_dir.join(f));
    }
    Ok(ConfigFile { sidecar, targets })
}

impl ConfigFile {
    /// Applies the `[sidecar]` section to `opts` (flags given on the
    /// command line are applied after, and win).
    pub fn apply(&self, opts: &mut SidecarOptions) -> Result<(), String> {
        let s = &self.sidecar;
        if let Some(l) = &s.listen {
            opts.listen = l
                .parse()
                .map_err(|e| format!("[sidecar] listen {l:?}: {e} (expected IP:PORT)"))?;
        }
        if let Some(d) = &s.data_dir {
            opts.data_dir = d.clone();
        }
        if let Some(ms) = s.interval_ms {
            opts.monitor.interval = Duration::from_millis(ms.max(10));
        }
        if let Some(n) = s.max_snapshots {
            opts.store.max_count = Some(n);
        }
        if let Some(b) = s.max_bytes {
            opts.store.max_bytes = Some(b);
        }
        if let Some(h) = s.max_age_hours {
            opts.store.max_age = Some(Duration::from_secs_f64(h.max(0.0) * 3600.0));
        }
        if let Some(w) = &s.webhook {
            opts.webhook = Some(leakscope_agent::alert::webhook::WebhookOptions::new(
                w.clone(),
            ));
        }
        if let Some(a) = &s.alertmanager {
            HttpUrl::parse(a).map_err(|e| format!("[sidecar] alertmanager: {e}"))?;
            opts.alertmanager =
                Some(leakscope_agent::alert::alertmanager::AlertmanagerOptions::new(a.trim()));
        }
        if let Some(f) = &s.ca_file {
            opts.tls_roots = leakscope_agent::client::TlsRoots::with_pem_file(f)
                .map_err(|e| format!("[sidecar] ca_file: {e}"))?;
            if let Some(w) = &mut opts.webhook {
                w.ca_file = Some(f.clone());
            }
            if let Some(a) = &mut opts.alertmanager {
                a.ca_file = Some(f.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_rules_and_section() {
        let c = parse(
            r#"
[sidecar]
listen = "127.0.0.1:0"
data_dir = "data"

[[target]]
name = "api"
match = "my-api"
pprof_url = "http://127.0.0.1:6060"
heap_every_secs = 0
labels = { team = "pay" }

[[target]]
name = "db"
pid = 42
evidence_every_secs = 0

[[rule]]
name = "threads_high"
metric = "threads"
above = { warning = 10 }
"#,
            "t.toml",
            Path::new("/etc/ls"),
        )
        .unwrap();
        assert_eq!(c.targets.len(), 2);
        assert!(matches!(c.targets[0].selector, Selector::Name(_)));
        assert_eq!(c.targets[0].heap_every, None);
        assert_eq!(c.targets[0].labels["team"], "pay");
        assert!(matches!(c.targets[1].selector, Selector::Pid(42)));
        assert_eq!(
            c.targets[1].heap_every,
            Some(TargetSpec::DEFAULT_HEAP_EVERY)
        );
        assert_eq!(c.targets[1].rules.len(), 1);
        assert_eq!(c.targets[1].evidence_every, Duration::ZERO);
        assert_eq!(
            c.targets[0].evidence_every,
            TargetSpec::DEFAULT_EVIDENCE_EVERY
        );
        assert_eq!(c.targets[1].rules[0].name, "threads_high");
        assert_eq!(c.sidecar.data_dir, Some(PathBuf::from("/etc/ls/data")));
    }

    #[test]
    fn alert_sinks_from_the_section() {
        let text = "[sidecar]\nwebhook = \"http://127.0.0.1:9000/a\"\nalertmanager = \"http://127.0.0.1:9093\"\n";
        let c = parse(text, "t.toml", Path::new(".")).unwrap();
        let mut opts = SidecarOptions::new(Vec::new());
        c.apply(&mut opts).unwrap();
        assert_eq!(
            opts.webhook.map(|w| w.url).as_deref(),
            Some("http://127.0.0.1:9000/a")
        );
        assert_eq!(
            opts.alertmanager.map(|a| a.url).as_deref(),
            Some("http://127.0.0.1:9093")
        );
        let c = parse(
            "[sidecar]\nalertmanager = \"am:9093\"\n",
            "t.toml",
            Path::new("."),
        )
        .unwrap();
        let e = c.apply(&mut SidecarOptions::new(Vec::new())).unwrap_err();
        assert!(e.starts_with("[sidecar] alertmanager: "), "{e}");
        // The CA file is relative to the config's directory, and read.
        let c = parse(
            "[sidecar]\nwebhook = \"https://hooks.example/a\"\nca_file = \"ca.pem\"\n",
            "t.toml",
            Path::new("/nonexistent-leakscope"),
        )
        .unwrap();
        let missing = PathBuf::from("/nonexistent-leakscope/ca.pem");
        assert_eq!(c.sidecar.ca_file.as_ref(), Some(&missing));
        let e = c.apply(&mut SidecarOptions::new(Vec::new())).unwrap_err();
        assert!(e.starts_with("[sidecar] ca_file: "), "{e}");
        assert!(e.contains("/nonexistent-leakscope/ca.pem"), "{e}");
    }

    #[test]
    fn the_shipped_example_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        let c = load(&dir.join("sidecar.toml")).unwrap();
        let names: Vec<&str> = c.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["api", "gateway", "worker"]);
        assert_eq!(c.targets[1].cpu_every, Some(Duration::from_secs(600)));
        // The shared rules: the built-in ones plus threads_high.
        assert_eq!(c.targets[0].rules.len(), default_rules().len() + 1);
        // The worker's own rules file.
        assert!(c.targets[2].rules.iter().any(|r| r.name == "threads_high"));
        assert_eq!(c.sidecar.data_dir, Some(dir.join("leakscope-data")));
    }

    #[test]
    fn errors_name_the_file_and_the_target() {
        for (text, want) in [
            (
                "[[target]]\nname = \"a\"\n",
                "t.toml: target `a`: give exactly one of `pid` or `match`",
            ),
            (
                "[[target]]\nname = \"a\"\nmatch = \"(\"\n",
                "not a valid regular expression",
            ),
            (
                "[[target]]\nname = \"a\"\npid = 1\npprof_url = \"ftp://x\"\n",
                "expected an http:// or https:// URL",
            ),
            (
                "[[target]]\nname = \"a\"\npid = 1\nheap_every_secs = -1\n",
                "heap_every_secs: -1 is not",
            ),
            (
                "[[target]]\nname = \"a\"\npid = 1\ncolour = 1\n",
                "unknown field `colour`",
            ),
            ("bogus = 1\n", "unknown key `bogus`"),
            (
                "[[rule]]\nname = \"r\"\nmetric = \"nope\"\nabove = { warning = 1 }\n",
                "unknown metric `nope`",
            ),
        ] {
            let e = parse(text, "t.toml", Path::new(".")).unwrap_err();
            assert!(e.starts_with("t.toml"), "{e}");
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
