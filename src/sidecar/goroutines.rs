//! Go's goroutine dump, as `/debug/pprof/goroutine?debug=2` serves it (the
//! text of `runtime.Stack(buf, true)`), read into goroutines, grouped, and
//! compared between a healthy pull and a pull at a breach. Pure code.
//!
//! A dump is a run of blocks separated by blank lines:
//!
//! ```text
//! goroutine 22 [chan receive, 3 minutes]:
//! main.awaitRestock(0x0?, {0xc00008c052, 0x2}, 0x0?)
//!         /srv/inventory/restock.go:34 +0x45
//! created by main.(*shop).reserve
//!         /srv/inventory/handlers.go:45 +0x15f
//! ```
//!
//! The header holds the goroutine's id and its state (a wait reason such as
//! `chan receive`, `select`, `IO wait`, or `running`), then optional marks:
//! `N minutes` blocked, `locked to thread`, ` (scan)`. Each frame is a
//! function line (arguments in parentheses, `(...)` for an inlined call)
//! and a tab-indented `file:line` line (`+0xPC` unless inlined). The runtime
//! hides its own frames, so a parked goroutine's stack starts at the code
//! that waits. `created by F` names the function whose `go` statement
//! started it, with the file:line of that statement; Go 1.21 and later add
//! ` in goroutine N`. Very deep stacks end with `...additional frames
//! elided...`.
//!
//! Goroutines are grouped by where they wait (the first frame of the
//! program's own code from the top, by [`explain::frames`]), who created
//! them, and their state; the minutes blocked are left out of the key, so
//! a group does not split as it ages. Counts are exact: every goroutine is
//! in the dump.
//!
//! [`explain::frames`]: leakscope_agent::explain::frames

use std::collections::HashMap;

use leakscope_agent::explain::counts::{Counted, grown};
use leakscope_agent::explain::frames::{is_go_std_function, own_frame};
use leakscope_agent::explain::{Confidence, Finding, Site};

/// One goroutine of a dump.
#[derive(Debug, Clone, PartialEq)]
pub struct Goroutine {
    /// Its id.
    pub id: u64,
    /// Its state: the wait reason (`chan receive`, `select`, `IO wait`,
    /// `sync.Cond.Wait`, ...) or `running`, `runnable`, `syscall`.
    pub state: String,
    /// Whole minutes it has been blocked, when the runtime says (it only
    /// knows after a garbage collection saw the goroutine blocked).
    pub minutes: Option<u64>,
    /// True when it is locked to its OS thread.
    pub locked: bool,
    /// Its frames, from the top (the innermost call) down.
    pub frames: Vec<Site>,
    /// The `go` statement that started it: the function holding it, and
    /// the statement's file and line. `None` for the main goroutine.
    pub created_by: Option<Site>,
    /// True when the runtime left frames out (a very deep stack).
    pub elided: bool,
}

/// Why a text is not a goroutine dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a goroutine dump (debug=2): {0}; is the URL a Go service's net/http/pprof, or a leakscope agent?"
)]
pub struct ParseError(String);

/// Reads a `debug=2` goroutine dump. Lines it does not understand inside a
/// block are skipped (a newer Go may add some); a text with no goroutine
/// header at all is an error.
pub fn parse(text: &str) -> Result<Vec<Goroutine>, ParseError> {
    let mut out: Vec<Goroutine> = Vec::new();
    let mut current: Option<Goroutine> = None;
    // The function of a frame (or of `created by`) waiting for its
    // file:line line.
    let mut pending: Option<(String, bool)> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(g) = header(line) {
            if let Some(done) = current.take() {
                out.push(done);
            }
            current = Some(g);
            pending = None;
            continue;
        }
        let Some(g) = current.as_mut() else {
            continue;
        };
        if line.trim().is_empty() {
            if let Some(done) = current.take() {
                out.push(done);
            }
            pending = None;
            continue;
        }
        if let Some(rest) = line.strip_prefix('\t') {
            if let Some((function, created)) = pending.take() {
                let (file, number) = location(rest);
                let site = Site {
                    function,
                    file,
                    line: number,
                };
                if created {
                    g.created_by = Some(site);
                } else {
                    g.frames.push(site);
                }
            }
            continue;
        }
        // A function line: one waiting for its location that never came is
        // kept without one.
        if let Some((function, created)) = pending.take() {
            let site = Site {
                function,
                file: String::new(),
                line: 0,
            };
            if created {
                g.created_by = Some(site);
            } else {
                g.frames.push(site);
            }
        }
        if line.starts_with("...") && line.contains("elided") {
            g.elided = true;
        } else if let Some(rest) = line.strip_prefix("created by ") {
            // Go 1.21+: `created by main.start in goroutine 7`.
            let name = rest.split(" in goroutine ").next().unwrap_or(rest);
            pending = Some((name.trim().to_owned(), true));
        } else {
            pending = Some((function_name(line).to_owned(), false));
        }
    }
    if let Some(mut g) = current.take() {
        if let Some((function, created)) = pending.take() {
            let site = Site {
                function,
                file: String::new(),
                line: 0,
            };
            if created {
                g.created_by = Some(site);
            } else {
                g.frames.push(site);
            }
        }
        out.push(g);
    }
    if out.is_empty() && !text.trim().is_empty() {
        let first = opening(text);
        return Err(ParseError(format!(
            "no `goroutine N [...]:` line; it starts {first:?}"
        )));
    }
    Ok(out)
}

/// The first 80 characters of a text's first line, for an error saying what
/// a text that is not a dump starts with.
pub(super) fn opening(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(80)
        .collect()
}

/// A block's header: `goroutine 22 [chan receive, 3 minutes, locked to thread]:`.
fn header(line: &str) -> Option<Goroutine> {
    let rest = line.strip_prefix("goroutine ")?;
    let (id, rest) = rest.split_once(' ')?;
    let id = id.parse().ok()?;
    // Newer runtimes may put more between the id and the brackets.
    let open = rest.find('[')?;
    let close = rest.rfind("]:")?;
    if close < open {
        return None;
    }
    let inside = &rest[open + 1..close];
    let mut parts = inside.split(", ");
    let state = parts.next().unwrap_or_default();
    let state = state.strip_suffix(" (scan)").unwrap_or(state).trim();
    let mut g = Goroutine {
        id,
        state: state.to_owned(),
        minutes: None,
        locked: false,
        frames: Vec::new(),
        created_by: None,
        elided: false,
    };
    for part in parts {
        if let Some(n) = part.strip_suffix(" minutes") {
            g.minutes = n.trim().parse().ok();
        } else if part == "locked to thread" {
            g.locked = true;
        }
    }
    Some(g)
}

/// The function of a frame line: the line without its argument list
/// (`main.(*shop).reserve(0xc000, {0x1, 0x2})` → `main.(*shop).reserve`).
fn function_name(line: &str) -> &str {
    let line = line.trim();
    if !line.ends_with(')') {
        return line;
    }
    // The '(' that opens the last, outermost group.
    let mut depth = 0usize;
    for (i, c) in line.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return if i == 0 { line } else { &line[..i] };
                }
            }
            _ => {}
        }
    }
    line
}

/// A location line without its tab: `/src/x.go:34 +0x45` → (file, line).
fn location(rest: &str) -> (String, i64) {
    let rest = rest.trim();
    let rest = match rest.rfind(" +0x") {
        Some(i) => &rest[..i],
        None => rest,
    };
    match rest.rsplit_once(':') {
        Some((file, line)) => match line.trim().parse() {
            Ok(n) => (file.to_owned(), n),
            Err(_) => (rest.to_owned(), 0),
        },
        None => (rest.to_owned(), 0),
    }
}

/// Goroutines alike: where they wait, who made them, their state.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Their state (wait reason), without the minutes.
    pub state: String,
    /// The first frame of the program's own code from the top, if any.
    pub site: Option<Site>,
    /// The `go` statement that started them.
    pub created_by: Option<Site>,
    /// How many.
    pub count: f64,
}

impl Group {
    /// What the group is, for a finding's groups:
    /// `[chan receive] created by main.(*shop).reserve (/src/handlers.go:45)`.
    pub fn what(&self) -> String {
        match &self.created_by {
            Some(c) => format!("[{}] created by {c}", self.state),
            None => format!("[{}]", self.state),
        }
    }

    fn counted(&self) -> Counted {
        Counted {
            what: self.what(),
            site: self.site.clone(),
            count: self.count,
            agent: false,
        }
    }
}

/// The goroutines of a dump in groups, largest first.
pub fn group(goroutines: &[Goroutine]) -> Vec<Group> {
    let mut sums: HashMap<(String, Option<Site>, Option<Site>), f64> = HashMap::new();
    for g in goroutines {
        let site = g.frames.iter().find(|f| is_own(f)).cloned();
        *sums
            .entry((g.state.clone(), site, g.created_by.clone()))
            .or_default() += 1.0;
    }
    let mut groups: Vec<Group> = sums
        .into_iter()
        .map(|((state, site, created_by), count)| Group {
            state,
            site,
            created_by,
            count,
        })
        .collect();
    groups.sort_by(|a, b| {
        b.count
            .total_cmp(&a.count)
            .then_with(|| a.site.cmp(&b.site))
            .then_with(|| a.created_by.cmp(&b.created_by))
            .then_with(|| a.state.cmp(&b.state))
    });
    groups
}

/// True when `site` is the program's own code (not Go's standard library
/// or runtime). Go's name test applies whatever the file: the runtime's
/// assembly (`runtime.goexit` in `asm_amd64.s`) is not a `.go` file.
fn is_own(site: &Site) -> bool {
    own_frame([(site.function.as_str(), site.file.as_str())]).is_some()
        && !is_go_std_function(&site.function)
}

/// The finding for goroutines, from the groups of a healthy pull to those
/// of a pull at the breach: the group that grew most, named by where its
/// goroutines wait and what created them.
pub fn finding(base: &[Group], new: &[Group]) -> Finding {
    let as_counted = |gs: &[Group]| gs.iter().map(Group::counted).collect::<Vec<_>>();
    let (b, n) = (as_counted(base), as_counted(new));
    let before: f64 = base.iter().map(|g| g.count).sum();
    let after: f64 = new.iter().map(|g| g.count).sum();
    let grew = grown(&b, &n);
    let Some(top) = grew.first() else {
        return Finding::unknown(
            "goroutine",
            "goroutines",
            format!(
                "goroutines {before} -> {after}, and no group of them grew between the two \
                 goroutine dumps (what grew was gone again by the second pull)"
            ),
        );
    };
    // The group behind the top entry, for its parts.
    let parts = new
        .iter()
        .find(|g| g.site == top.site && g.what() == top.what);
    let (state, creator) = parts.map_or((String::new(), None), |g| {
        (g.state.clone(), g.created_by.clone())
    });
    let change = format!("goroutines {before} -> {after} ({:+})", after - before);
    let created = creator
        .as_ref()
        .map_or(String::new(), |c| format!(", created by {c}"));
    let (summary, site, confidence) = match &top.site {
        Some(site) => (
            format!("{change}; +{} [{state}] in {site}{created}", top.delta()),
            Some(site.clone()),
            Confidence::Exact,
        ),
        // Library code only on the stack: the creator may still be the
        // program's own.
        None => {
            let named = creator.clone().filter(is_own);
            let confidence = if named.is_some() {
                Confidence::Exact
            } else {
                Confidence::WhatOnly
            };
            (
                format!(
                    "{change}; +{} [{state}] in library code only{created}",
                    top.delta()
                ),
                named,
                confidence,
            )
        }
    };
    let detail = format!(
        "counted in goroutine dumps (debug=2: every goroutine, not sampled): {} in this group \
         now, {} in the base pull; grouped by the first frame of the program's own code from \
         the top, the `go` statement that created them and their state",
        top.new, top.base
    );
    Finding {
        kind: "goroutine".into(),
        unit: "goroutines".into(),
        summary,
        site,
        confidence,
        detail,
        groups: grew.into_iter().take(Finding::MAX_GROUPS).collect(),
        base: None,
        new: None,
        url: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPES: &str = include_str!("../../tests/data/go-profiles/shapes.debug2.txt");
    const HEALTHY: &str = include_str!("../../tests/data/go-profiles/inventory-healthy.debug2.txt");
    const LEAKING: &str = include_str!("../../tests/data/go-profiles/inventory-leaking.debug2.txt");

    #[test]
    fn reads_every_shape_of_a_real_dump() {
        let gs = parse(SHAPES).unwrap();
        assert_eq!(gs.len(), 10, "{gs:#?}");
        // The goroutine writing the dump: running, no creator (main).
        let main = &gs[0];
        assert_eq!((main.id, main.state.as_str()), (1, "running"));
        assert_eq!(main.created_by, None);
        assert_eq!(
            main.frames[0].function,
            "runtime/pprof.writeGoroutineStacks"
        );
        assert_eq!(main.frames.last().unwrap().function, "main.main");
        // Minutes and the thread lock are marks, not part of the state.
        let locked = gs.iter().find(|g| g.locked).expect("locked goroutine");
        assert_eq!(locked.state, "chan receive");
        assert_eq!(locked.minutes, Some(1));
        assert_eq!(locked.frames[0].function, "main.lockedToThread");
        assert!(locked.frames[0].file.ends_with("shapes.go"));
        let created = locked.created_by.as_ref().expect("creator");
        assert_eq!(created.function, "main.main");
        assert!(created.line > 0);
        let states: Vec<&str> = gs.iter().map(|g| g.state.as_str()).collect();
        for s in ["select", "semacquire", "sync.Cond.Wait", "sleep"] {
            assert!(states.contains(&s), "{s} in {states:?}");
        }
        // Library frames first, then the program's: sync.(*WaitGroup).Wait.
        let wg = gs.iter().find(|g| g.state == "semacquire").unwrap();
        assert_eq!(wg.frames[1].function, "sync.(*WaitGroup).Wait");
        // A deep stack keeps every frame printed.
        let deep = gs.iter().max_by_key(|g| g.frames.len()).unwrap();
        assert!(deep.frames.len() > 50, "{}", deep.frames.len());
        assert!(deep.frames.iter().all(|f| f.function == "main.descend"));
        // Generic functions keep their brackets, closures their suffix.
        assert!(
            gs.iter()
                .any(|g| g.frames[0].function == "main.holdBox[...]")
        );
        assert!(
            gs.iter()
                .any(|g| g.frames.iter().any(|f| f.function == "main.main.func1"))
        );
    }

    #[test]
    fn groups_by_own_frame_creator_and_state() {
        let gs = parse(SHAPES).unwrap();
        let groups = group(&gs);
        // Two goroutines park in the same function but were started by two
        // `go` statements: two groups.
        let park: Vec<&Group> = groups
            .iter()
            .filter(|g| {
                g.site
                    .as_ref()
                    .is_some_and(|s| s.function == "main.parkOnChannel")
            })
            .collect();
        assert_eq!(park.len(), 2, "{park:#?}");
        // The WaitGroup waiter is named by its own frame, not sync's.
        let wg = groups.iter().find(|g| g.state == "semacquire").unwrap();
        assert_eq!(wg.site.as_ref().unwrap().function, "main.waitForGroup");
        // time.Sleep is the standard library's: the closure is the site.
        // The runtime's assembly is never a site.
        let goexit = Goroutine {
            frames: vec![Site {
                function: "runtime.goexit".into(),
                file: "/usr/lib/go-1.19/src/runtime/asm_amd64.s".into(),
                line: 1594,
            }],
            ..gs[0].clone()
        };
        assert_eq!(group(&[goexit])[0].site, None);
        let sleep = groups.iter().find(|g| g.state == "sleep").unwrap();
        assert_eq!(sleep.site.as_ref().unwrap().function, "main.main.func1");
        assert_eq!(groups.iter().map(|g| g.count).sum::<f64>(), gs.len() as f64);
    }

    #[test]
    fn names_the_waiting_function_and_its_creator_between_real_dumps() {
        let base = group(&parse(HEALTHY).unwrap());
        let new = group(&parse(LEAKING).unwrap());
        let f = finding(&base, &new);
        assert_eq!(f.confidence, Confidence::Exact, "{f:#?}");
        let site = f.site.as_ref().unwrap();
        assert_eq!(site.function, "main.awaitRestock");
        assert!(site.file.ends_with("inventory/restock.go"), "{}", site.file);
        let line = LEAKING
            .lines()
            .find(|l| l.contains("restock.go:"))
            .and_then(|l| l.rsplit_once(':'))
            .and_then(|(_, r)| r.split(' ').next())
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap();
        assert_eq!(site.line, line);
        assert_eq!(f.groups[0].delta(), 40.0, "{f:#?}");
        assert!(
            f.summary
                .contains("+40 [chan receive] in main.awaitRestock ("),
            "{}",
            f.summary
        );
        assert!(
            f.summary.contains(", created by main.(*shop).reserve (")
                && f.summary.contains("handlers.go:"),
            "{}",
            f.summary
        );
        assert!(
            f.summary.starts_with("goroutines 3 -> 43 (+40)"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn nothing_grown_and_library_only_stacks() {
        let base = group(&parse(HEALTHY).unwrap());
        let f = finding(&base, &base);
        assert_eq!(f.confidence, Confidence::Unknown);
        // Goroutines in library code only, made by the program's own code:
        // the creator is named.
        let text = "goroutine 5 [IO wait]:\ninternal/poll.runtime_pollWait(0x1, 0x72)\n\t/usr/lib/go/src/runtime/netpoll.go:305 +0x89\ncreated by main.startPollers in goroutine 1\n\t/srv/app/poll.go:12 +0x2a\n";
        let one = parse(text).unwrap();
        assert_eq!(
            one[0].created_by.as_ref().unwrap().function,
            "main.startPollers"
        );
        let f = finding(&[], &group(&one));
        assert_eq!(f.confidence, Confidence::Exact);
        assert_eq!(
            f.site.as_ref().unwrap().to_string(),
            "main.startPollers (/srv/app/poll.go:12)"
        );
        assert!(
            f.summary
                .contains("in library code only, created by main.startPollers"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn odd_lines() {
        assert_eq!(
            function_name("main.(*T).m(0xc000, {0x1, 0x2})"),
            "main.(*T).m"
        );
        assert_eq!(function_name("main.f(...)"), "main.f");
        assert_eq!(function_name("main.main()"), "main.main");
        assert_eq!(function_name("weird"), "weird");
        assert_eq!(location("/a/b.go:12 +0x1f"), ("/a/b.go".into(), 12));
        assert_eq!(location("/a/b.go:12"), ("/a/b.go".into(), 12));
        assert_eq!(location("C:/x/b.go:7 +0x1"), ("C:/x/b.go".into(), 7));
        let g = header("goroutine 9 [chan receive (nil chan) (scan), 12 minutes]:").unwrap();
        assert_eq!(
            (g.state.as_str(), g.minutes),
            ("chan receive (nil chan)", Some(12))
        );
        assert!(header("goroutine x [y]:").is_none());
        // Elided frames, a frame whose location never came, CRLF.
        let text = "goroutine 3 [select]:\r\nmain.deep()\r\n\t/a.go:1 +0x1\r\n...additional frames elided...\r\nmain.cut()\r\n";
        let gs = parse(text).unwrap();
        assert!(gs[0].elided);
        assert_eq!(gs[0].frames.len(), 2);
        assert_eq!(gs[0].frames[1].line, 0);
        assert!(parse("").unwrap().is_empty());
        let e = parse("<html>404</html>").unwrap_err();
        assert!(e.to_string().contains("not a goroutine dump"), "{e}");
    }
}
