//! Tests of the threshold rules: one behaviour per test.

use super::*;

fn rule(metric: &str) -> Rule {
    default_rules()
        .into_iter()
        .find(|r| r.metric == metric && r.name.ends_with("_growth"))
        .unwrap()
}

/// Feeds `(t, value, limit)` samples one by one, collecting transitions.
fn run(
    rule: &Rule,
    state: &mut RuleState,
    series: &mut Series,
    samples: impl IntoIterator<Item = (f64, f64, Option<f64>)>,
) -> Vec<Transition> {
    let mut out = Vec::new();
    for (t, v, limit) in samples {
        series.push(t, v);
        out.extend(rule.evaluate(state, series, limit, t));
    }
    out
}

fn run_fresh(
    rule: &Rule,
    samples: impl IntoIterator<Item = (f64, f64)>,
) -> (Vec<Transition>, RuleState) {
    let mut state = RuleState::new(0.0);
    let mut series = Series::new(10_000);
    let tr = run(
        rule,
        &mut state,
        &mut series,
        samples.into_iter().map(|(t, v)| (t, v, None)),
    );
    (tr, state)
}

#[test]
fn thread_leak_fires_growth_warning_once_then_recovers_when_flat() {
    let threads = rule("threads");
    // +10/min for 10 min, then flat for 10 min; one sample a second.
    let samples = (0..=1200).map(|s| (s as f64, 10.0 * s.min(600) as f64 / 60.0));
    let (tr, state) = run_fresh(&threads, samples);
    assert_eq!(tr.len(), 2, "{tr:#?}");
    assert_eq!((tr[0].from, tr[0].to), (Level::Ok, Level::Warning));
    // Fires once the history spans half the 5 min window and the growth
    // has held for a tenth of it.
    assert_eq!(tr[0].at, 180.0);
    assert!((tr[0].value - 10.0).abs() < 1e-6);
    assert_eq!(
        tr[0].message,
        "threads growing 10.0/min over 5m, throughout (warning at 5.0/min): suspected leak"
    );
    assert_eq!((tr[1].from, tr[1].to), (Level::Warning, Level::Ok));
    assert!(
        tr[1].at > 600.0 && tr[1].at <= 900.0,
        "recovered at {}",
        tr[1].at
    );
    assert!(tr[1].value < 4.5 && tr[1].threshold == 4.5);
    assert_eq!(state.level, Level::Ok);
}

#[test]
fn value_hovering_at_the_line_enters_warning_once_without_flapping() {
    let r = Rule::new(
        "threads_high",
        "threads",
        Condition::Above {
            warning: Some(80.0),
            critical: None,
        },
    );
    let wobble = [79.5, 80.5, 79.8, 80.2, 79.1, 80.9];
    let samples = (0..1000).map(|i| (i as f64, wobble[i % wobble.len()]));
    let (tr, state) = run_fresh(&r, samples);
    assert_eq!(tr.len(), 1, "{tr:#?}");
    assert_eq!(
        (tr[0].to, tr[0].value, tr[0].at),
        (Level::Warning, 80.5, 1.0)
    );
    assert_eq!(tr[0].message, "threads at 80.5 (warning at 80.0)");
    assert_eq!(state.level, Level::Warning);
}

#[test]
fn ratio_rule_warns_goes_critical_after_for_secs_and_recovers_below_lowered_line() {
    let r = default_rules().remove(0).with_for_secs(10.0);
    assert!(matches!(r.condition, Condition::RatioOf { .. }));
    let (mut state, mut series) = (RuleState::new(0.0), Series::new(100));
    let lim = Some(1000.0);
    let tr = run(
        &r,
        &mut state,
        &mut series,
        (0..=10).map(|t| (t as f64, 850.0, lim)),
    );
    assert_eq!(tr.len(), 1);
    assert_eq!((tr[0].to, tr[0].at), (Level::Warning, 10.0));
    assert_eq!(
        tr[0].message,
        "open fds at 85% of the limit (warning at 80%)"
    );
    let tr = run(
        &r,
        &mut state,
        &mut series,
        (11..=21).map(|t| (t as f64, 970.0, lim)),
    );
    assert_eq!(tr.len(), 1);
    assert_eq!(
        (tr[0].from, tr[0].to, tr[0].at),
        (Level::Warning, Level::Critical, 21.0)
    );
    // Without a limit (or with 0) nothing can be said: the state is kept.
    let tr = run(
        &r,
        &mut state,
        &mut series,
        [(22.0, 10.0, None), (23.0, 10.0, Some(0.0))],
    );
    assert!(tr.is_empty());
    assert_eq!(state.level, Level::Critical);
    // 0.75 is below 0.95 × 0.9 but still above 0.8 × 0.9 = 0.72.
    let tr = run(
        &r,
        &mut state,
        &mut series,
        [(24.0, 750.0, lim), (25.0, 730.0, lim), (26.0, 700.0, lim)],
    );
    let steps: Vec<_> = tr.iter().map(|t| (t.from, t.to, t.at)).collect();
    assert_eq!(
        steps,
        vec![
            (Level::Critical, Level::Warning, 24.0),
            (Level::Warning, Level::Ok, 26.0)
        ]
    );
    assert!((tr[1].threshold - 0.72).abs() < 1e-12);
    assert_eq!(
        tr[1].message,
        "open fds back to 70% of the limit (below 72%, leaving warning): ok"
    );
}

#[test]
fn saturating_cache_returns_to_ok_after_plateau() {
    let tasks = rule("tokio_tasks");
    // Logistic: plateau at 5000, steepest (1500/min) around t = 600 s.
    let logistic = |t: f64| 5000.0 / (1.0 + (-(t - 600.0) / 200.0).exp());
    let (tr, state) = run_fresh(&tasks, (0..3600).map(|s| (s as f64, logistic(s as f64))));
    assert!(tr.len() <= 2, "{tr:#?}");
    assert_eq!(state.level, Level::Ok);
    if let Some(last) = tr.last() {
        assert_eq!(last.to, Level::Ok);
        assert!(last.at < 2400.0, "recovered late: {}", last.at);
    }
}

#[test]
fn sawtooth_pool_never_fires() {
    // A pool filling from 8 to 16 threads over 20 s, emptying within 10 s.
    let saw = |s: u32| {
        8.0 + 0.4 * (s % 30).min(20) as f64
            - if s % 30 > 20 {
                0.8 * ((s % 30) - 20) as f64
            } else {
                0.0
            }
    };
    let (tr, _) = run_fresh(&rule("threads"), (0..7200).map(|s| (s as f64, saw(s))));
    assert!(tr.is_empty(), "{tr:#?}");
    // Bursts of 100 tokio tasks every minute, back to a baseline of 20.
    let burst = |s: u32| 20.0 + 100.0 * ((s % 60) as f64 / 60.0);
    let (tr, _) = run_fresh(
        &rule("tokio_tasks"),
        (0..7200).map(|s| (s as f64, burst(s))),
    );
    assert!(tr.is_empty(), "{tr:#?}");
}

#[test]
fn spike_shorter_than_for_secs_does_not_fire() {
    let r = Rule::new(
        "rss_high",
        "rss_bytes",
        Condition::Above {
            warning: Some(1e9),
            critical: None,
        },
    )
    .with_for_secs(30.0);
    let v = |s: u32| if (100..120).contains(&s) { 2e9 } else { 5e8 };
    let (tr, state) = run_fresh(&r, (0..300).map(|s| (s as f64, v(s))));
    assert!(tr.is_empty(), "{tr:#?}");
    assert_eq!(state, RuleState::new(0.0));
}

#[test]
fn condition_held_for_for_secs_fires() {
    let r = Rule::new(
        "rss_high",
        "rss_bytes",
        Condition::Above {
            warning: Some(1e9),
            critical: None,
        },
    )
    .with_for_secs(30.0);
    let (tr, _) = run_fresh(
        &r,
        (0..300).map(|s| (s as f64, if s >= 100 { 2e9 } else { 5e8 })),
    );
    assert_eq!(tr.len(), 1);
    assert_eq!(tr[0].at, 130.0);
    assert_eq!(tr[0].message, "RSS at 1.9 GiB (warning at 953.7 MiB)");
}

#[test]
fn escalation_enters_a_matured_warning_before_pending_critical() {
    let cond = Condition::Above {
        warning: Some(10.0),
        critical: Some(20.0),
    };
    let r = Rule::new("x", "x", cond).with_for_secs(5.0);
    // Sparse samples: warning pending from 0 has matured when critical is
    // first seen at 6, so warning is entered then and critical at 6 + 5.
    let samples = [(0.0, 15.0), (6.0, 25.0), (9.0, 25.0), (11.0, 25.0)];
    let (tr, _) = run_fresh(&r, samples);
    let steps: Vec<_> = tr.iter().map(|t| (t.to, t.at)).collect();
    assert_eq!(steps, vec![(Level::Warning, 6.0), (Level::Critical, 11.0)]);
}

#[test]
fn growth_without_enough_history_keeps_state() {
    let threads = rule("threads");
    let mut state = RuleState {
        level: Level::Warning,
        since: 0.0,
        pending: None,
        clearing: None,
    };
    let mut series = Series::new(10);
    let tr = run(
        &threads,
        &mut state,
        &mut series,
        (0..10).map(|s| (s as f64, 0.0, None)),
    );
    assert!(tr.is_empty());
    assert_eq!(state.level, Level::Warning);
}

#[test]
fn a_step_or_a_ramp_that_stopped_never_fires() {
    // 40 threads started at once at minute 3 (a pool at start-up), flat
    // before and after.
    let step = |s: u32| if s < 180 { 20.0 } else { 60.0 };
    let (tr, _) = run_fresh(&rule("threads"), (0..1800).map(|s| (s as f64, step(s))));
    assert!(tr.is_empty(), "{tr:#?}");
    // Connections ramping up over 40 s under load, then steady.
    let ramp = |s: u32| 30.0 + 2.0 * (s.saturating_sub(100).min(40)) as f64;
    let (tr, _) = run_fresh(&rule("open_fds"), (0..1800).map(|s| (s as f64, ramp(s))));
    assert!(tr.is_empty(), "{tr:#?}");
    // A cache of 64 MiB filling over two minutes, then full.
    let mib = 1024.0 * 1024.0;
    let cache = |s: u32| 40.0 * mib + 64.0 * mib * (s.min(120) as f64 / 120.0);
    let (tr, _) = run_fresh(&rule("heap_bytes"), (0..1800).map(|s| (s as f64, cache(s))));
    assert!(tr.is_empty(), "{tr:#?}");
}

#[test]
fn a_heap_leak_of_one_mib_a_minute_fires_within_five_minutes() {
    let mib = 1024.0 * 1024.0;
    // 10 minutes of a quiet service, then 1 MiB/min on top of a sawtooth of
    // request buffers (±2 MiB every 7 s).
    let heap = |s: u32| {
        let noise = 2.0 * mib * ((s % 7) as f64 / 7.0 - 0.5);
        let leak = (s.saturating_sub(600)) as f64 / 60.0 * mib;
        100.0 * mib + noise + leak
    };
    let (tr, state) = run_fresh(&rule("heap_bytes"), (0..1800).map(|s| (s as f64, heap(s))));
    assert_eq!(tr.len(), 1, "{tr:#?}");
    assert_eq!(tr[0].rule, "heap_growth");
    assert_eq!(state.level, Level::Warning);
    let after = tr[0].at - 600.0;
    eprintln!("1 MiB/min heap leak: alert {after} s after it started");
    assert!(
        (150.0..=300.0).contains(&after),
        "fired {after} s after the leak started"
    );
    assert!(
        tr[0].message.starts_with("heap in use growing ")
            && tr[0].message.ends_with(
                " KiB/min over 5m, throughout (warning at 512.0 KiB/min): suspected leak"
            ),
        "{}",
        tr[0].message
    );
}

#[test]
fn a_sawtooth_gives_one_alert_per_episode() {
    // RSS rising 10 MiB over 90 s then dropping back, again and again for
    // 20 minutes, then quiet: growth in every window while it lasts, but
    // the rule must not flip between ok and warning on each tooth.
    let mib = 1024.0 * 1024.0;
    let r = Rule::new(
        "rss_fast",
        "rss_bytes",
        Condition::Growth {
            per_minute: mib,
            critical_per_minute: None,
            window_secs: 120.0,
        },
    );
    let saw = |s: u32| {
        let leak = s.min(1200) as f64 / 60.0 * 2.0 * mib;
        let tooth = if s < 1200 {
            10.0 * mib * ((s % 90) as f64 / 90.0)
        } else {
            0.0
        };
        200.0 * mib + leak + tooth
    };
    let (tr, state) = run_fresh(&r, (0..2400).map(|s| (s as f64, saw(s))));
    let ups = tr.iter().filter(|t| t.to > t.from).count();
    assert_eq!(ups, 1, "{tr:#?}");
    assert_eq!(state.level, Level::Ok, "cleared once the growth stopped");
}
