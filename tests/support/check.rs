//! Helpers of the `leakscope check` tests: the binary run as CI runs it,
//! its exit code, its JSON report and terminal text, and free loopback
//! ports for the services it spawns.

#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::Instant;

/// A free loopback port (bound, then released for the service to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// What one `leakscope check` run gave.
pub struct Run {
    /// Exit code.
    pub code: Option<i32>,
    /// Standard output (the JSON report with `--json`).
    pub stdout: String,
    /// Standard error (the human text with `--json`).
    pub stderr: String,
    /// The JSON report, when stdout is one.
    pub json: Option<serde_json::Value>,
    /// How long it took.
    pub secs: f64,
}

impl Run {
    /// Everything it printed, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "exit {:?} after {:.0} s\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.secs, self.stdout, self.stderr
        )
    }

    /// The verdict of `kind` in the JSON report.
    pub fn kind(&self, kind: &str) -> &serde_json::Value {
        self.json
            .as_ref()
            .and_then(|j| j["kinds"].as_array())
            .and_then(|ks| ks.iter().find(|k| k["kind"] == kind))
            .unwrap_or_else(|| panic!("no {kind} verdict in:\n{}", self.output()))
    }
}

/// Runs `leakscope check ARGS` with `envs`, to its end.
pub fn check(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let start = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leakscope"));
    cmd.arg("check").args(args).env_remove("RUST_LOG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run leakscope check");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    Run {
        code: status.code(),
        json: serde_json::from_str(&stdout).ok(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        secs: start.elapsed().as_secs_f64(),
    }
}
