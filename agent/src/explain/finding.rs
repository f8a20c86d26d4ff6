//! What an alert says about its leak: a [`Finding`].

use serde::{Deserialize, Serialize};

/// A place in the program's code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Site {
    /// Function name.
    pub function: String,
    /// Source file, "" when unknown.
    pub file: String,
    /// Source line, 0 when unknown.
    pub line: i64,
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.function)?;
        match (self.file.is_empty(), self.line) {
            (true, _) => Ok(()),
            (false, 0) => write!(f, " ({})", self.file),
            (false, line) => write!(f, " ({}:{line})", self.file),
        }
    }
}

/// How sure a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Counted, not sampled: every thread, task or fd of the group was
    /// seen, with the code it runs in or was created by.
    Exact,
    /// From sampled heap profiles, growing clearly above the sampling noise
    /// across the snapshots.
    Clear,
    /// From sampled heap profiles: the site that grew most, but not yet
    /// clearly above the noise (the detail says by how much).
    Likely,
    /// What grew is known (fds to an upstream, threads by name), not the
    /// code that made them.
    WhatOnly,
    /// Nothing could be named; the detail says why.
    Unknown,
}

impl Confidence {
    /// The confidence in words.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Exact => "exact",
            Confidence::Clear => "clear",
            Confidence::Likely => "likely",
            Confidence::WhatOnly => "what only",
            Confidence::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Confidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One group of what grew: threads in one function, fds to one peer,
/// bytes allocated at one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// What the group is (`tcp ESTABLISHED to 127.0.0.1:9000`, a thread
    /// name), "" when the site says it all.
    pub what: String,
    /// The program's own code behind it, when known.
    pub site: Option<Site>,
    /// Amount in the base (healthy) capture.
    pub base: f64,
    /// Amount in the new capture.
    pub new: f64,
}

impl Group {
    /// `new − base`.
    pub fn delta(&self) -> f64 {
        self.new - self.base
    }
}

/// What grew and where, attached to an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The profile it comes from: `threads`, `tasks`, `fds`, `heap`,
    /// `goroutine`.
    pub kind: String,
    /// Unit of the groups' amounts: `threads`, `tasks`, `fds`, `bytes`,
    /// `goroutines`.
    pub unit: String,
    /// One line: what grew, by how much, and where.
    pub summary: String,
    /// The code named, when there is one.
    pub site: Option<Site>,
    /// How sure the naming is.
    pub confidence: Confidence,
    /// How it was named, and its limits.
    pub detail: String,
    /// The groups that grew most, largest first (at most
    /// [`Finding::MAX_GROUPS`]).
    pub groups: Vec<Group>,
    /// Id of the base capture, for the viewer's diff.
    pub base: Option<String>,
    /// Id of the new capture.
    pub new: Option<String>,
    /// Where the diff of the two can be seen (a path of the viewer, or a
    /// full URL when the server's address is known).
    pub url: Option<String>,
}

impl Finding {
    /// Most groups a finding lists.
    pub const MAX_GROUPS: usize = 5;

    /// A finding that names nothing, saying why.
    pub fn unknown(kind: &str, unit: &str, why: impl Into<String>) -> Finding {
        let why = why.into();
        Finding {
            kind: kind.to_owned(),
            unit: unit.to_owned(),
            summary: why.clone(),
            site: None,
            confidence: Confidence::Unknown,
            detail: why,
            groups: Vec::new(),
            base: None,
            new: None,
            url: None,
        }
    }
}
