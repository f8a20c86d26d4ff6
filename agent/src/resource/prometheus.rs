//! Prometheus text exposition (format 0.0.4) of a [`ResourceSample`]: the
//! standard `process_*` series every Prometheus process collector exports
//! (CPU seconds as a float, not a step function) and leakscope's own
//! `leakscope_*` series for what they lack: fds by kind, TCP sockets by
//! state, threads by name, tokio and jemalloc figures.

use std::fmt::Write;

use super::ResourceSample;

/// Writes metric families one at a time with their `# HELP` and `# TYPE`.
#[derive(Debug, Default)]
pub struct PromText {
    out: String,
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float the way Prometheus reads it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

impl PromText {
    /// An empty exposition.
    pub fn new() -> PromText {
        PromText::default()
    }

    /// A family of one unlabelled series.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help, &[(Vec::new(), value)]);
    }

    /// A family of series with labels `(name, value)`.
    pub fn family(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        series: &[(Vec<(&str, String)>, f64)],
    ) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, value) in series {
            self.out.push_str(name);
            if !labels.is_empty() {
                self.out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let _ = write!(self.out, "{k}=\"{}\"", escape(v));
                }
                self.out.push('}');
            }
            let _ = writeln!(self.out, " {}", number(*value));
        }
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Writes the process and leakscope series of `s`.
pub fn write_sample(p: &mut PromText, s: &ResourceSample) {
    write_samples(p, &[(Vec::new(), s)]);
}

/// Label pairs of one series.
pub type Labels<'a> = Vec<(&'a str, String)>;
/// Series of one family.
type Series<'a> = Vec<(Labels<'a>, f64)>;
/// Reads labelled values out of a sample (`None`: the sample has none).
type ByLabel<'f> = &'f dyn Fn(&ResourceSample) -> Option<Vec<(String, f64)>>;

/// Writes the process and leakscope series of several samples, each with
/// its own extra labels (the sidecar's `target="api"`), one family at a time
/// as the text format requires.
pub fn write_samples(p: &mut PromText, samples: &[(Labels<'_>, &ResourceSample)]) {
    let plain = |f: &dyn Fn(&ResourceSample) -> Option<f64>| -> Series<'_> {
        samples
            .iter()
            .filter_map(|(labels, s)| f(s).map(|v| (labels.clone(), v)))
            .collect()
    };
    let by = |key: &'static str, f: ByLabel<'_>| -> Series<'_> {
        let mut out = Vec::new();
        for (labels, s) in samples {
            for (k, v) in f(s).unwrap_or_default() {
                let mut l = labels.clone();
                l.push((key, k));
                out.push((l, v));
            }
        }
        out
    };
    let families: [(&str, &str, &str, Series<'_>); 10] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            plain(&|s| Some(s.cpu_seconds)),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            plain(&|s| Some(s.open_fds as f64)),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            plain(&|s| s.fd_limit.map(|l| l as f64)),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            plain(&|s| Some(s.rss_bytes as f64)),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            plain(&|s| Some(s.virtual_bytes as f64)),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            plain(&|s| Some(s.start_time_seconds)),
        ),
        (
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            plain(&|s| Some(s.threads as f64)),
        ),
        (
            "leakscope_open_fds_by_kind",
            "gauge",
            "Open file descriptors by what they refer to.",
            by("kind", &|s| {
                s.fds_by_kind.map(|k| {
                    k.iter()
                        .map(|(kind, n)| (kind.to_owned(), n as f64))
                        .collect()
                })
            }),
        ),
        (
            "leakscope_tcp_sockets",
            "gauge",
            "TCP sockets of the process by state.",
            by("state", &|s| {
                s.tcp_by_state.as_ref().map(|v| {
                    v.iter()
                        .map(|(state, n)| (state.as_str().to_owned(), *n as f64))
                        .collect()
                })
            }),
        ),
        (
            "leakscope_threads_by_name",
            "gauge",
            "OS threads by thread name.",
            by("name", &|s| {
                s.threads_by_name.as_ref().map(|v| {
                    v.iter()
                        .map(|(name, n)| (name.clone(), *n as f64))
                        .collect()
                })
            }),
        ),
    ];
    for (name, kind, help, series) in families {
        if !series.is_empty() {
            p.family(name, kind, help, &series);
        }
    }
}
