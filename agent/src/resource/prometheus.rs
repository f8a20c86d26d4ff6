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
    p.single(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        s.cpu_seconds,
    );
    p.single(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        s.open_fds as f64,
    );
    if let Some(limit) = s.fd_limit {
        p.single(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            limit as f64,
        );
    }
    p.single(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        s.rss_bytes as f64,
    );
    p.single(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        s.virtual_bytes as f64,
    );
    p.single(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        s.start_time_seconds,
    );
    p.single(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        s.threads as f64,
    );
    if let Some(kinds) = &s.fds_by_kind {
        let series: Vec<_> = kinds
            .iter()
            .map(|(kind, n)| (vec![("kind", kind.to_owned())], n as f64))
            .collect();
        p.family(
            "leakscope_open_fds_by_kind",
            "gauge",
            "Open file descriptors by what they refer to.",
            &series,
        );
    }
    if let Some(states) = &s.tcp_by_state {
        let series: Vec<_> = states
            .iter()
            .map(|(state, n)| (vec![("state", state.as_str().to_owned())], *n as f64))
            .collect();
        p.family(
            "leakscope_tcp_sockets",
            "gauge",
            "TCP sockets of the process by state.",
            &series,
        );
    }
    if let Some(names) = &s.threads_by_name {
        let series: Vec<_> = names
            .iter()
            .map(|(name, n)| (vec![("name", name.clone())], *n as f64))
            .collect();
        p.family(
            "leakscope_threads_by_name",
            "gauge",
            "OS threads by thread name.",
            &series,
        );
    }
}
