//! The fd limit is read from /proc/PID/limits at most every few seconds on
//! the count-only path (it is half the cost of a sample), and always afresh
//! when the slower breakdown is asked for. Alone in its binary: it changes
//! this process's RLIMIT_NOFILE.

use leakscope_agent::resource::{SampleOptions, Target, sample};

fn soft_limit() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
    r
}

fn set_soft(r: &libc::rlimit, soft: u64) {
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: r.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we pass; lowering the soft limit
    // below the hard one is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) }, 0);
}

#[test]
fn fd_limit_is_cached_on_the_fast_path_and_fresh_with_the_breakdown() {
    let r = soft_limit();
    let count_only = SampleOptions::default();
    let before = sample(Target::SelfProcess, &count_only)
        .expect("sample")
        .fd_limit;
    assert_eq!(before, Some(r.rlim_cur));

    let lowered = r.rlim_cur - 1;
    set_soft(&r, lowered);
    let cached = sample(Target::SelfProcess, &count_only)
        .expect("sample")
        .fd_limit;
    let full = SampleOptions {
        fd_breakdown: true,
        ..SampleOptions::default()
    };
    let fresh = sample(Target::SelfProcess, &full).expect("sample").fd_limit;
    let after = sample(Target::SelfProcess, &count_only)
        .expect("sample")
        .fd_limit;
    set_soft(&r, r.rlim_cur);

    assert_eq!(cached, before, "count-only samples reuse the recent limit");
    assert_eq!(fresh, Some(lowered), "the breakdown reads the limit afresh");
    assert_eq!(after, Some(lowered), "and refreshes the cache");
}
