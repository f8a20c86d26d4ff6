//! The tasks profile and its text forms, built from censuses of real
//! stacks and real code addresses of this test binary (no tokio hooks
//! needed): the fallback, sites with spawner stacks, dumps split by
//! parked-at frame.

use super::*;
use crate::profile::Profile;
use crate::symbolize::Symbolizer;

fn site(line: u32) -> SpawnSite {
    SpawnSite {
        file: "src/jobs.rs",
        line,
        column: 9,
    }
}

/// `(name, file, line)` of each frame of sample `i`, leaf first.
fn frames(p: &Profile, i: usize) -> Vec<(String, String, i64)> {
    p.sample[i]
        .location_id
        .iter()
        .flat_map(|id| {
            let loc = p.location.iter().find(|l| l.id == *id).expect("location");
            loc.line.iter().map(|ln| {
                let f = p
                    .function
                    .iter()
                    .find(|f| f.id == ln.function_id)
                    .expect("function");
                (
                    p.string(f.name).to_owned(),
                    p.string(f.filename).to_owned(),
                    ln.line,
                )
            })
        })
        .collect()
}

fn label(p: &Profile, i: usize, key: &str) -> Option<String> {
    p.sample[i]
        .label
        .iter()
        .find(|l| p.string(l.key) == key)
        .map(|l| {
            if l.str != 0 {
                p.string(l.str).to_owned()
            } else {
                l.num.to_string()
            }
        })
}

fn comments(p: &Profile) -> String {
    p.comment
        .iter()
        .map(|c| p.string(*c))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn without_hooks_one_honest_sample_counts_the_alive_tasks() {
    let census = TaskCensus::from_parts(Some(7), false, Counts::default());
    assert_eq!(census.total(), 7);
    for name in [ProfileName::Tasks, ProfileName::Goroutine] {
        let p = census.profile(name, Symbolizer::global());
        p.validate().expect("valid");
        assert_eq!(p.sample_type_names(), vec![(name.as_str(), "count")]);
        let period = p.period_type.as_ref().expect("period type");
        assert_eq!(
            (p.string(period.r#type), p.string(period.unit), p.period),
            (name.as_str(), "count", 1)
        );
        assert_eq!(p.sample.len(), 1);
        assert_eq!(p.sample[0].value, vec![7]);
        let f = frames(&p, 0);
        assert!(
            f[0].0.starts_with("<tokio tasks: spawn sites unknown"),
            "{f:?}"
        );
        assert!(p.mapping.is_empty(), "no addresses, no mappings");
        let c = comments(&p);
        assert!(c.contains("install_hooks"), "{c}");
        assert!(c.contains("7 alive tasks"), "{c}");
        if !cfg!(tokio_unstable) {
            assert!(c.contains("--cfg tokio_unstable"), "{c}");
            assert!(c.contains(".cargo/config.toml"), "{c}");
        }
    }
    let text = census.text(ProfileName::Goroutine, 1, Symbolizer::global());
    assert!(
        text.starts_with("goroutine profile: total 7\n7 @ 0x1\n"),
        "{text}"
    );
}

/// Takes a stack here, as the spawn hook would in code that spawns.
#[inline(never)]
fn spawn_jobs_here() -> Vec<u64> {
    std::hint::black_box(super::stack::spawner_stack(Registry::MAX_STACK))
}

#[test]
fn sites_with_live_tasks_name_the_spawn_site_and_the_spawning_function() {
    let stack = spawn_jobs_here();
    let counts = Counts {
        sites: vec![
            SiteCount {
                site: site(42),
                live: 50,
                spawned: 53,
                stack: stack.clone(),
            },
            SiteCount {
                site: site(77),
                live: 0,
                spawned: 9,
                stack: Vec::new(),
            },
        ],
        other_live: 2,
        other_spawned: 4,
        full: true,
    };
    let census = TaskCensus::from_parts(Some(60), true, counts);
    assert_eq!(census.total(), 60);
    let p = census.profile(ProfileName::Tasks, Symbolizer::global());
    p.validate().expect("valid");
    let values: Vec<i64> = p.sample.iter().map(|s| s.value[0]).collect();
    // The site, other, and the 8 alive tasks no site accounts for; the
    // site with no live tasks is not there.
    assert_eq!(values, vec![50, 2, 8]);
    let f = frames(&p, 0);
    assert_eq!(
        f[0],
        (
            "tokio::spawn at src/jobs.rs:42:9".into(),
            "src/jobs.rs".into(),
            42
        )
    );
    if cfg!(all(
        feature = "cpu",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )) {
        assert!(
            f[1].0.ends_with("tasks::tests::spawn_jobs_here"),
            "the spawning function right after the site: {f:?}"
        );
        assert!(f[1].1.ends_with("tasks/tests.rs"), "{f:?}");
        assert!(
            f.iter().any(|x| x.0.contains("sites_with_live_tasks_name")),
            "its caller too: {f:?}"
        );
    }
    assert_eq!(
        label(&p, 0, "spawned_at").as_deref(),
        Some("src/jobs.rs:42:9")
    );
    assert_eq!(label(&p, 0, "spawned").as_deref(), Some("53"));
    assert_eq!(label(&p, 0, "owner"), None);
    assert!(frames(&p, 1)[0].0.contains("other spawn sites"));
    assert!(frames(&p, 2)[0].0.contains("not recorded"));
    let c = comments(&p);
    assert!(c.contains("registry is full"), "{c}");
    assert!(
        c.contains("8 alive tasks have no recorded spawn site"),
        "{c}"
    );

    // Go's count-profile text: header, records by count, labels, frames.
    let text = census.text(ProfileName::Goroutine, 1, Symbolizer::global());
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("goroutine profile: total 60"));
    let first = lines.next().expect("a record");
    assert!(first.starts_with("50 @"), "{text}");
    let addrs: Vec<&str> = first.split(' ').skip(2).collect();
    assert_eq!(addrs.len(), stack.len(), "one address per spawner frame");
    assert_eq!(
        addrs[0],
        format!("{:#x}", stack[0]),
        "return addresses as Go prints them"
    );
    assert_eq!(
        lines.next(),
        Some(r#"# labels: {"spawned_at":"src/jobs.rs:42:9"}"#)
    );
    assert_eq!(
        lines.next(),
        Some("#\t0x0\ttokio::spawn at src/jobs.rs:42:9\tsrc/jobs.rs:42")
    );
    assert!(
        text.contains("\n2 @ 0x1\n#\t0x0\t<tokio tasks: other spawn sites"),
        "{text}"
    );

    let blocks = census.text(ProfileName::Tasks, 2, Symbolizer::global());
    assert!(
        blocks.starts_with(
            "50 tasks [spawned at src/jobs.rs:42:9, 53 spawned there in all]:\n\
             tokio::spawn at src/jobs.rs:42:9\n\tsrc/jobs.rs:42\n"
        ),
        "{blocks}"
    );
}

#[test]
fn the_agents_own_sites_are_labelled() {
    let own = SpawnSite {
        file: file!(),
        line: 1,
        column: 1,
    };
    let counts = Counts {
        sites: vec![SiteCount {
            site: own,
            live: 1,
            spawned: 1,
            stack: Vec::new(),
        }],
        ..Counts::default()
    };
    let p = TaskCensus::from_parts(Some(1), true, counts)
        .profile(ProfileName::Tasks, Symbolizer::global());
    assert_eq!(label(&p, 0, "owner").as_deref(), Some("leakscope"));
}

#[inline(never)]
fn parked_in_a() -> u64 {
    std::hint::black_box(1)
}

#[inline(never)]
fn parked_in_b() -> u64 {
    std::hint::black_box(2)
}

/// A trace as a task dump gives it: return addresses, innermost first; a
/// standard-library frame on top, then the program's own.
fn trace(own: fn() -> u64) -> Vec<Vec<u64>> {
    let library = std::thread::yield_now as fn() as usize as u64;
    vec![vec![library + 1, own as usize as u64 + 1]]
}

#[test]
fn dumped_tasks_are_split_by_where_they_are_parked() {
    let counts = Counts {
        sites: vec![SiteCount {
            site: site(42),
            live: 4,
            spawned: 4,
            stack: Vec::new(),
        }],
        ..Counts::default()
    };
    let task = |id, own, site| DumpedTask {
        id,
        site,
        traces: trace(own),
    };
    let dump = vec![
        task(1, parked_in_a as fn() -> u64, Some(site(42))),
        task(2, parked_in_a, Some(site(42))),
        task(3, parked_in_b, Some(site(42))),
        task(4, parked_in_b, None),
    ];
    let census =
        TaskCensus::from_parts(Some(5), true, counts).with_dump(TaskDumpState::Taken(dump));
    // 4 at the site (one of them not in the dump), 1 of no recorded site.
    assert_eq!(census.total(), 5);
    let p = census.profile(ProfileName::Tasks, Symbolizer::global());
    p.validate().expect("valid");
    let rows: Vec<(i64, String, String)> = (0..p.sample.len())
        .map(|i| {
            let f = frames(&p, i);
            (
                p.sample[i].value[0],
                f[0].0.clone(),
                f.get(1).map(|x| x.0.clone()).unwrap_or_default(),
            )
        })
        .collect();
    let a = rows
        .iter()
        .find(|r| r.1.ends_with("parked_in_a"))
        .expect("parked at a");
    assert_eq!(
        (a.0, a.2.as_str()),
        (2, "tokio::spawn at src/jobs.rs:42:9"),
        "{rows:?}"
    );
    let b: Vec<_> = rows
        .iter()
        .filter(|r| r.1.ends_with("parked_in_b"))
        .collect();
    assert_eq!(b.len(), 2, "{rows:?}");
    assert!(
        b.iter()
            .any(|r| r.0 == 1 && r.2.starts_with("tokio::spawn at"))
    );
    assert!(b.iter().any(|r| r.0 == 1 && r.2.contains("not recorded")));
    let rest = rows
        .iter()
        .find(|r| r.1.starts_with("tokio::spawn at"))
        .expect("not dumped");
    assert_eq!(rest.0, 1, "{rows:?}");
    let i = rows
        .iter()
        .position(|r| r.1.ends_with("parked_in_a"))
        .expect("a");
    let parked = label(&p, i, "parked_at").expect("parked_at label");
    assert!(
        parked.contains("parked_in_a") && parked.contains("tasks/tests.rs:"),
        "{parked}"
    );
    assert!(comments(&p).contains("task dump of 4 tasks"));

    let blocks = census.text(ProfileName::Tasks, 2, Symbolizer::global());
    assert!(
        blocks.contains("task 1 [spawned at src/jobs.rs:42:9]:\n"),
        "{blocks}"
    );
    assert!(
        blocks.contains("task 4 [spawn site not recorded]:\n"),
        "{blocks}"
    );
    assert!(blocks.contains("parked_in_b\n\t"), "{blocks}");
}
