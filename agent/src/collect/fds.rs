//! The fds profile: a process's open fds grouped by what they are, as a pprof
//! profile and as text. Pure over an [`FdListing`], so the same code serves
//! this process (`/debug/pprof/fds`) and any pid the caller may read (the
//! sidecar, alert evidence).
//!
//! The profile is shaped like Go's count profiles: sample type and period
//! type `fds/count`, period 1, one sample per [`FdGroup`] whose value is the
//! number of fds in it. A sample's stack is made of pseudo frames (no
//! address), leaf first: the group's text (`tcp ESTABLISHED to
//! 127.0.0.1:9000`), then its kind (`tcp`), so `go tool pprof -top` lists
//! the groups and a flamegraph's roots are the kinds. Groups whose text is
//! the kind (`pipe`, `eventfd`) have the one frame. Labels: `kind`, and
//! `state`, `direction`, `peer`, `local`, `path` where they apply. A comment
//! gives the total, the fd limit and any fds not listed.
//!
//! ## Creation sites
//!
//! When the code that opened some fds is known (a call stack per fd number,
//! from a tracker of open/socket/accept calls), pass it as
//! [`CreationSites`]: the stack's addresses then follow the two pseudo
//! frames, so each sample reads from the leaf `what it is → kind → the
//! function that opened it → ... → main`, and a flamegraph's roots become
//! the programs' entry points with the kinds just above the opening code.
//! The fds of one group are split into one sample per distinct stack; fds
//! with no stack keep the group-only sample. [`build_recorded`],
//! [`capture`] and [`fds_text_recorded`] take the stacks this process
//! recorded with the `fd-sites` feature ([`crate::fdsites`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use crate::collect::unix_nanos;
use crate::explain::Site;
use crate::explain::frames::{is_agent_function, own_frame};
use crate::fdsites::{RecordedSites, SiteCounts};
use crate::profile::{Profile, ProfileMeta, PseudoFrame, SampleLabel, StackSample, build_profile};
use crate::resource::{FdGroup, FdListing, ListOptions, Target, list_fds};
use crate::symbolize::{Frame, ProcessMaps, Symbolizer};

/// Most groups `?debug=1` prints; the rest are summed in one comment line.
pub const MAX_TEXT_GROUPS: usize = 1000;

/// Call stacks of the code that opened some fds (see the module docs).
#[derive(Clone, Copy)]
pub struct CreationSites<'a> {
    /// By fd number: addresses leaf first, already adjusted for
    /// symbolization (every caller's return address minus one), as in
    /// [`StackSample::stack`].
    pub stacks: &'a HashMap<u32, Vec<u64>>,
    /// The mappings of the process the addresses belong to.
    pub maps: &'a ProcessMaps,
    /// The symbolizer to name them with.
    pub symbolizer: &'a Symbolizer,
}

/// Lists the fds of `target` (default bounds) and builds their profile,
/// with the creation sites this process recorded when `target` is this
/// process (see [`build_recorded`]): the one call for a profile of this
/// process or of a pid, from any thread (alert evidence, tests). Takes
/// about a millisecond per thousand fds, plus symbolizing when there are
/// sites; run it off async workers.
pub fn capture(target: Target) -> crate::Result<Profile> {
    let listing = list_fds(target, &ListOptions::default())?;
    Ok(build_recorded(&listing, Symbolizer::global()))
}

/// [`build`] with the creation sites recorded in this process (feature
/// `fd-sites`, see [`crate::fdsites`]) when `listing` is of this process,
/// and a comment counting the fds with and without one; otherwise exactly
/// `build(listing, None)`.
pub fn build_recorded(listing: &FdListing, symbolizer: &Symbolizer) -> Profile {
    let Some((sites, maps)) = recorded(listing) else {
        return build(listing, None);
    };
    let creation = CreationSites {
        stacks: &sites.stacks,
        maps: &maps,
        symbolizer,
    };
    let mut profile = build(listing, Some(&creation));
    profile.add_comment(&sites.counts.to_string());
    profile
}

/// The sites this process recorded for `listing`, cut to mapped code, and
/// the mappings they were checked against.
fn recorded(listing: &FdListing) -> Option<(RecordedSites, ProcessMaps)> {
    let mut sites = crate::fdsites::lookup(listing)?;
    let maps = ProcessMaps::current().unwrap_or_default();
    sites.keep_mapped(&maps);
    Some((sites, maps))
}

/// Builds the fds profile of `listing`; `sites`, when given, appends
/// creation stacks (see the module docs).
pub fn build(listing: &FdListing, sites: Option<&CreationSites<'_>>) -> Profile {
    let meta = ProfileMeta {
        sample_types: vec![("fds", "count")],
        period_type: ("fds", "count"),
        period: 1,
        default_sample_type: None,
        time_nanos: unix_nanos(listing.time),
        duration_nanos: 0,
    };
    let mut samples = Vec::new();
    for group in listing.groups() {
        let pseudo = group_frames(&group);
        let labels: Vec<SampleLabel> = group
            .labels
            .iter()
            .map(|(k, v)| SampleLabel::Str(k, v.clone()))
            .collect();
        // Fds per creation stack (the empty stack: unknown).
        let mut by_stack: BTreeMap<&[u64], i64> = BTreeMap::new();
        for fd in &group.fds {
            let stack = sites
                .and_then(|s| s.stacks.get(fd))
                .map_or(&[][..], Vec::as_slice);
            *by_stack.entry(stack).or_insert(0) += 1;
        }
        for (stack, count) in by_stack {
            samples.push(StackSample {
                stack: stack.to_vec(),
                values: vec![count],
                labels: labels.clone(),
                pseudo: pseudo.clone(),
            });
        }
    }
    let empty = ProcessMaps::default();
    let (maps, symbolizer) = match sites {
        Some(s) => (s.maps, s.symbolizer),
        None => (&empty, Symbolizer::global()),
    };
    let mut profile = build_profile(&meta, samples, maps, symbolizer, None);
    profile.add_comment(&summary(listing));
    profile
}

/// The pseudo frames of a group, leaf first: its text, then its kind (once
/// when they are the same).
fn group_frames(group: &FdGroup) -> Vec<PseudoFrame> {
    let kind = group.kind.as_str();
    if group.text == kind {
        vec![PseudoFrame::named(kind)]
    } else {
        vec![
            PseudoFrame::named(group.text.clone()),
            PseudoFrame::named(kind),
        ]
    }
}

/// `fds profile: total 57 (limit 1024)`, and how many were not listed.
pub fn summary(listing: &FdListing) -> String {
    let limit = listing
        .fd_limit
        .map_or_else(|| "unlimited".to_owned(), |l| l.to_string());
    let mut s = format!("fds profile: total {} (limit {limit})", listing.total());
    if listing.not_listed > 0 {
        let _ = write!(
            s,
            "; {} fds not listed (only the first {} are read)",
            listing.not_listed,
            listing.fds.len()
        );
    }
    s
}

/// `?debug=1`: the summary line, then `COUNT GROUP` lines, largest first
/// (at most [`MAX_TEXT_GROUPS`]; the rest summed in a `#` line).
pub fn groups_text(listing: &FdListing) -> String {
    let groups = listing.groups();
    let mut out = String::with_capacity(64 * groups.len().min(MAX_TEXT_GROUPS) + 128);
    let _ = writeln!(out, "{}", summary(listing));
    for g in groups.iter().take(MAX_TEXT_GROUPS) {
        let _ = writeln!(out, "{} {}", g.count(), g.text);
    }
    if groups.len() > MAX_TEXT_GROUPS {
        let rest = &groups[MAX_TEXT_GROUPS..];
        let fds: u64 = rest.iter().map(FdGroup::count).sum();
        let _ = writeln!(out, "# {} more groups ({fds} fds) not shown", rest.len());
    }
    out
}

/// `?debug=2`: the summary line, then every listed fd by number:
/// `fd 12: tcp ESTABLISHED 127.0.0.1:40112 -> 127.0.0.1:9000 (inode 1234)`.
pub fn fds_text(listing: &FdListing) -> String {
    fds_text_named(listing, None)
}

/// [`fds_text`] with the creation sites recorded in this process, when
/// there are (see [`build_recorded`]): a `# creation sites: ...` line
/// after the summary, and after each fd that has one `, opened in
/// FUNCTION (FILE:LINE)`, the first frame of the program's own code (see
/// [`site_names`]).
pub fn fds_text_recorded(listing: &FdListing, symbolizer: &Symbolizer) -> String {
    let Some((sites, maps)) = recorded(listing) else {
        return fds_text(listing);
    };
    let names = site_names(&CreationSites {
        stacks: &sites.stacks,
        maps: &maps,
        symbolizer,
    });
    fds_text_named(listing, Some((&sites.counts, &names)))
}

fn fds_text_named(
    listing: &FdListing,
    sites: Option<(&SiteCounts, &HashMap<u32, String>)>,
) -> String {
    let mut out = String::with_capacity(96 * listing.fds.len() + 256);
    let _ = writeln!(out, "{}", summary(listing));
    if let Some((counts, _)) = sites {
        let _ = writeln!(out, "# {counts}");
    }
    for f in &listing.fds {
        let _ = write!(out, "fd {}: {}", f.fd, f.object);
        if let Some(name) = sites.and_then(|(_, names)| names.get(&f.fd)) {
            let _ = write!(out, ", opened {name}");
        }
        out.push('\n');
    }
    out
}

/// Each fd's creation site in words, by fd number: `in FUNCTION
/// (FILE:LINE)` for the first frame of the program's own code from the
/// leaf ([`own_frame`]), inlined frames included; `by leakscope in
/// FUNCTION` when the stack passes through leakscope's own code first;
/// `in FUNCTION (FILE:LINE), library code only` when no frame is the
/// program's. Fds with an empty stack are left out.
pub fn site_names(sites: &CreationSites<'_>) -> HashMap<u32, String> {
    let mut addrs: Vec<u64> = sites.stacks.values().flatten().copied().collect();
    addrs.sort_unstable();
    addrs.dedup();
    let resolved = sites.symbolizer.resolve(sites.maps, &addrs);
    let mut names = HashMap::with_capacity(sites.stacks.len());
    for (fd, stack) in sites.stacks {
        let frames: Vec<&Frame> = stack
            .iter()
            .filter_map(|a| resolved.get(a))
            .flat_map(|r| r.frames.iter())
            .collect();
        let site = |f: &Frame| Site {
            function: f.name.to_string(),
            file: f.file.as_deref().unwrap_or("").to_owned(),
            line: i64::from(f.line),
        };
        let own = own_frame(
            frames
                .iter()
                .map(|f| (&*f.name, f.file.as_deref().unwrap_or(""))),
        );
        let agent = frames.iter().position(|f| is_agent_function(&f.name));
        let name = match (own, agent) {
            (_, Some(a)) if own.is_none_or(|o| a < o) => {
                format!("by leakscope in {}", frames[a].name)
            }
            (Some(o), _) => format!("in {}", site(frames[o])),
            (None, _) => match frames.first() {
                Some(f) => format!("in {}, library code only", site(f)),
                None => continue,
            },
        };
        names.insert(*fd, name);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::procfs::{InetProto, InetSocket};
    use crate::resource::{FdObject, OpenFd, TcpState};

    fn listing(fds: Vec<OpenFd>) -> FdListing {
        FdListing {
            pid: 1,
            time: std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5),
            fds,
            not_listed: 0,
            fd_limit: Some(1024),
        }
    }

    fn outbound(fd: u32, port: u16) -> OpenFd {
        OpenFd {
            fd,
            object: FdObject::Inet(
                InetProto::Tcp,
                InetSocket {
                    state_code: TcpState::Established.code(),
                    inode: 500 + u64::from(fd),
                    local: format!("127.0.0.1:{}", 40000 + fd).parse().unwrap(),
                    peer: format!("127.0.0.1:{port}").parse().unwrap(),
                },
            ),
        }
    }

    fn pipe(fd: u32) -> OpenFd {
        OpenFd {
            fd,
            object: FdObject::Pipe(9),
        }
    }

    /// Leaf-first frame names, value and labels of a sample.
    type Shown = (Vec<String>, i64, Vec<(String, String)>);

    /// Every sample as [`Shown`].
    fn samples(p: &Profile) -> Vec<Shown> {
        p.sample
            .iter()
            .map(|s| {
                let names = s
                    .location_id
                    .iter()
                    .map(|id| {
                        let loc = &p.location[*id as usize - 1];
                        let f = &p.function[loc.line[0].function_id as usize - 1];
                        p.string(f.name).to_owned()
                    })
                    .collect();
                let labels = s
                    .label
                    .iter()
                    .map(|l| (p.string(l.key).to_owned(), p.string(l.str).to_owned()))
                    .collect();
                (names, s.value[0], labels)
            })
            .collect()
    }

    #[test]
    fn one_sample_per_group_text_then_kind() {
        let l = listing(vec![
            outbound(5, 9000),
            outbound(6, 9000),
            pipe(7),
            pipe(8),
            pipe(9),
        ]);
        let p = build(&l, None);
        p.validate().unwrap();
        assert_eq!(p.string(p.sample_type[0].r#type), "fds");
        assert_eq!(p.string(p.sample_type[0].unit), "count");
        let period = p.period_type.as_ref().unwrap();
        assert_eq!(
            (p.string(period.r#type), p.string(period.unit)),
            ("fds", "count")
        );
        assert_eq!(p.period, 1);
        assert_eq!(p.time_nanos, 5_000_000_000);
        let got = samples(&p);
        assert_eq!(got[0].0, vec!["pipe".to_owned()]);
        assert_eq!(got[0].1, 3);
        assert_eq!(
            got[1].0,
            vec![
                "tcp ESTABLISHED to 127.0.0.1:9000".to_owned(),
                "tcp".to_owned()
            ]
        );
        assert_eq!(got[1].1, 2);
        assert!(got[1].2.contains(&("peer".into(), "127.0.0.1:9000".into())));
        assert!(got[1].2.contains(&("direction".into(), "outbound".into())));
        let comments: Vec<&str> = p.comment.iter().map(|c| p.string(*c)).collect();
        assert_eq!(comments, vec!["fds profile: total 5 (limit 1024)"]);
    }

    #[test]
    fn creation_stacks_split_a_group_and_follow_the_pseudo_frames() {
        let l = listing(vec![
            outbound(5, 9000),
            outbound(6, 9000),
            outbound(7, 9000),
        ]);
        let stacks = HashMap::from([(5, vec![0x1000, 0x2000]), (6, vec![0x1000, 0x2000])]);
        let maps = ProcessMaps::default();
        let sites = CreationSites {
            stacks: &stacks,
            maps: &maps,
            symbolizer: Symbolizer::global(),
        };
        let p = build(&l, Some(&sites));
        p.validate().unwrap();
        let values: Vec<i64> = p.sample.iter().map(|s| s.value[0]).collect();
        assert_eq!(values, vec![1, 2], "no stack first, then the shared one");
        let with_stack = &p.sample[1].location_id;
        assert_eq!(with_stack.len(), 4);
        let addrs: Vec<u64> = with_stack
            .iter()
            .map(|id| p.location[*id as usize - 1].address)
            .collect();
        assert_eq!(addrs, vec![0, 0, 0x1000, 0x2000]);
        assert_eq!(&p.sample[0].location_id[..], &with_stack[..2]);
    }

    #[test]
    fn text_forms() {
        let mut l = listing(vec![outbound(5, 9000), pipe(3), outbound(6, 9000)]);
        l.fds.sort_by_key(|f| f.fd);
        l.not_listed = 4;
        l.fd_limit = None;
        assert_eq!(
            groups_text(&l),
            "fds profile: total 7 (limit unlimited); 4 fds not listed (only the first 3 are read)\n\
             2 tcp ESTABLISHED to 127.0.0.1:9000\n\
             1 pipe\n"
        );
        let text = fds_text(&l);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[1], "fd 3: pipe (inode 9)");
        assert_eq!(
            lines[2],
            "fd 5: tcp ESTABLISHED 127.0.0.1:40005 -> 127.0.0.1:9000 (inode 505)"
        );
    }

    #[test]
    fn group_text_is_bounded() {
        let fds = (0..MAX_TEXT_GROUPS as u32 + 5)
            .map(|i| OpenFd {
                fd: i,
                object: FdObject::File(format!("/tmp/f{i:05}")),
            })
            .collect();
        let text = groups_text(&listing(fds));
        assert_eq!(text.lines().count(), MAX_TEXT_GROUPS + 2);
        assert!(
            text.ends_with("# 5 more groups (5 fds) not shown\n"),
            "{text}"
        );
    }
}
