//! Unit tests of `check::run`'s pure helpers.

use super::*;

#[test]
fn medians_ignore_a_moment() {
    let p = [
        (1.0, 20.0),
        (2.0, 21.0),
        (3.0, 20.0),
        (4.0, 35.0),
        (5.0, 20.0),
    ];
    assert_eq!(median_in(&p, 1.0, 5.0), Some(20.0));
    assert_eq!(median_in(&p, 10.0, 12.0), Some(20.0));
    assert_eq!(median_in(&p, 0.0, 0.5), None);
    assert_eq!(peak(&p, 1.0, 2.0), 35.0);
}

#[test]
fn settings_say_what_shapes_the_verdicts() {
    let opts = CheckOptions::new(TargetChoice::Pid(1), LoadChoice::Command("true".into()));
    let s = settings(&opts);
    let get = |k: &str| s.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("warm-up"), Some("10 s"));
    assert_eq!(get("cool-down"), Some("15 s"));
    assert_eq!(
        get("budgets"),
        Some("heap 4.0 MiB, threads 2, tasks 4, fds 4, goroutines 4")
    );
}
