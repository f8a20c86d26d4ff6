//! Threshold rules from a TOML file (the sidecar's configuration, and any
//! service that prefers a file to code). The format is documented in
//! docs/configuration.md; `deploy/leakscope.toml` is a complete example.
//!
//! ```toml
//! include_defaults = false
//!
//! [[rule]]
//! name = "threads_growth"
//! metric = "threads"
//! growth = { per_minute = 5, window_secs = 300 }
//!
//! [[rule]]
//! name = "fds_near_limit"
//! metric = "open_fds"
//! ratio = { warning = 0.8, critical = 0.95 }
//! for_secs = 30
//! ```

use std::path::Path;

use serde::Deserialize;

use super::rules::{Condition, Rule, default_rules};
use crate::error::{Error, Result};

pub use super::monitor::METRICS;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    include_defaults: bool,
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    metric: String,
    above: Option<Levels>,
    ratio: Option<Levels>,
    growth: Option<GrowthSpec>,
    hysteresis: Option<f64>,
    for_secs: Option<f64>,
    clear_secs: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Levels {
    warning: Option<f64>,
    critical: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrowthSpec {
    per_minute: f64,
    critical_per_minute: Option<f64>,
    window_secs: f64,
}

fn bad(origin: &str, message: String) -> Error {
    Error::ConfigFile {
        origin: origin.to_owned(),
        message,
    }
}

/// Parses rules from TOML text; `origin` (a file name) is named in errors.
pub fn rules_from_toml(text: &str, origin: &str) -> Result<Vec<Rule>> {
    let file: File = toml::from_str(text).map_err(|e| bad(origin, e.to_string()))?;
    rules_from_parsed(file, origin)
}

/// Parses rules from an already parsed TOML table holding only
/// `include_defaults` and `[[rule]]` (the sidecar's configuration file takes
/// its own sections out first).
pub fn rules_from_table(table: toml::Table, origin: &str) -> Result<Vec<Rule>> {
    let file: File = table
        .try_into()
        .map_err(|e: toml::de::Error| bad(origin, e.to_string()))?;
    rules_from_parsed(file, origin)
}

fn rules_from_parsed(file: File, origin: &str) -> Result<Vec<Rule>> {
    let mut rules = if file.include_defaults {
        default_rules()
    } else {
        Vec::new()
    };
    for spec in file.rule {
        let at = format!("rule `{}`", spec.name);
        if !METRICS.contains(&spec.metric.as_str()) {
            return Err(bad(
                origin,
                format!(
                    "{at}: unknown metric `{}` (known: {})",
                    spec.metric,
                    METRICS.join(", ")
                ),
            ));
        }
        let condition = match (spec.above, spec.ratio, spec.growth) {
            (Some(l), None, None) => Condition::Above {
                warning: l.warning,
                critical: l.critical,
            },
            (None, Some(l), None) => Condition::RatioOf {
                warning: l.warning,
                critical: l.critical,
            },
            (None, None, Some(g)) => {
                if g.window_secs <= 0.0 || g.per_minute <= 0.0 {
                    return Err(bad(
                        origin,
                        format!("{at}: growth needs per_minute > 0 and window_secs > 0"),
                    ));
                }
                Condition::Growth {
                    per_minute: g.per_minute,
                    critical_per_minute: g.critical_per_minute,
                    window_secs: g.window_secs,
                }
            }
            _ => {
                return Err(bad(
                    origin,
                    format!("{at}: give exactly one of `above`, `ratio` or `growth`"),
                ));
            }
        };
        if matches!(
            condition,
            Condition::Above {
                warning: None,
                critical: None,
            } | Condition::RatioOf {
                warning: None,
                critical: None,
            }
        ) {
            return Err(bad(
                origin,
                format!("{at}: set `warning`, `critical` or both"),
            ));
        }
        let mut rule = Rule::new(spec.name.clone(), spec.metric, condition);
        if let Some(h) = spec.hysteresis {
            if !(0.0..1.0).contains(&h) {
                return Err(bad(
                    origin,
                    format!("{at}: hysteresis {h} is not in [0, 1)"),
                ));
            }
            rule = rule.with_hysteresis(h);
        }
        if let Some(f) = spec.for_secs {
            if f < 0.0 {
                return Err(bad(origin, format!("{at}: for_secs {f} is negative")));
            }
            rule = rule.with_for_secs(f);
        }
        if let Some(c) = spec.clear_secs {
            if c < 0.0 || !c.is_finite() {
                return Err(bad(
                    origin,
                    format!("{at}: clear_secs {c} is not a duration"),
                ));
            }
            rule = rule.with_clear_secs(c);
        }
        if rules.iter().any(|r: &Rule| r.name == rule.name) {
            return Err(bad(
                origin,
                format!("{at}: a rule of that name is already defined"),
            ));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// Reads and parses a rules file.
pub fn rules_from_file(path: &Path) -> Result<Vec<Rule>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::File {
        path: path.to_path_buf(),
        source,
    })?;
    rules_from_toml(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_condition_and_options() {
        let rules = rules_from_toml(
            r#"
            [[rule]]
            name = "threads_growth"
            metric = "threads"
            growth = { per_minute = 5, window_secs = 300 }

            [[rule]]
            name = "fds"
            metric = "open_fds"
            ratio = { warning = 0.8, critical = 0.95 }
            for_secs = 30
            hysteresis = 0.2

            [[rule]]
            name = "rss_high"
            metric = "rss_bytes"
            above = { critical = 3e9 }
            "#,
            "test.toml",
        )
        .expect("valid");
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules[0].condition,
            Condition::Growth {
                per_minute: 5.0,
                critical_per_minute: None,
                window_secs: 300.0
            }
        );
        assert_eq!((rules[1].for_secs, rules[1].hysteresis), (30.0, 0.2));
        assert_eq!(
            rules[2].condition,
            Condition::Above {
                warning: None,
                critical: Some(3e9)
            }
        );
    }

    #[test]
    fn defaults_can_be_included_and_names_must_be_unique() {
        let rules = rules_from_toml("include_defaults = true", "t.toml").expect("valid");
        assert_eq!(rules.len(), default_rules().len());
        let e = rules_from_toml(
            "include_defaults = true\n[[rule]]\nname = \"threads_growth\"\nmetric = \"threads\"\nabove = { warning = 1 }",
            "t.toml",
        )
        .expect_err("duplicate");
        assert!(e.to_string().contains("already defined"), "{e}");
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let cases = [
            (
                "[[rule]]\nname = \"x\"\nmetric = \"sockets\"\nabove = { warning = 1 }",
                "unknown metric `sockets`",
            ),
            (
                "[[rule]]\nname = \"x\"\nmetric = \"threads\"",
                "exactly one of",
            ),
            (
                "[[rule]]\nname = \"x\"\nmetric = \"threads\"\nabove = {}",
                "set `warning`",
            ),
            (
                "[[rule]]\nname = \"x\"\nmetric = \"threads\"\nabove = { warning = 1 }\ncolour = 1",
                "colour",
            ),
            (
                "[[rule]]\nname = \"x\"\nmetric = \"threads\"\ngrowth = { per_minute = 0, window_secs = 60 }",
                "per_minute > 0",
            ),
            ("[[rule]\n", "rules.toml"),
        ];
        for (text, expected) in cases {
            let e = rules_from_toml(text, "rules.toml")
                .expect_err(text)
                .to_string();
            assert!(e.starts_with("rules.toml: "), "{e}");
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/leakscope.toml");
        let rules = rules_from_file(&path).expect("deploy/leakscope.toml");
        assert!(rules.len() >= 5, "{rules:?}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = rules_from_file(Path::new("/nonexistent/rules.toml")).expect_err("missing");
        assert!(
            e.to_string().starts_with("/nonexistent/rules.toml: "),
            "{e}"
        );
    }
}
