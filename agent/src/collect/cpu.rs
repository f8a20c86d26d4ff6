//! CPU profiles in Go's layout: sample types `samples/count` and
//! `cpu/nanoseconds`, period type `cpu/nanoseconds`, a `thread` label.

use crate::collect::unix_nanos;
use crate::cpu::RawCpuProfile;
use crate::profile::{Profile, ProfileMeta, SampleLabel, StackSample, build_profile};
use crate::symbolize::{ProcessMaps, Symbolizer};

/// Builds the pprof profile of a finished CPU sampling run.
pub fn build(raw: RawCpuProfile, symbolizer: &Symbolizer) -> Profile {
    let period = i64::try_from(raw.period_ns).unwrap_or(i64::MAX);
    let meta = ProfileMeta {
        sample_types: vec![("samples", "count"), ("cpu", "nanoseconds")],
        period_type: ("cpu", "nanoseconds"),
        period,
        default_sample_type: None,
        time_nanos: unix_nanos(raw.start),
        duration_nanos: i64::try_from(raw.duration.as_nanos()).unwrap_or(i64::MAX),
    };
    let samples = raw
        .samples
        .into_iter()
        .map(|s| {
            let count = i64::try_from(s.count).unwrap_or(i64::MAX);
            StackSample {
                stack: adjust_callers(&s.stack),
                values: vec![count, count.saturating_mul(period)],
                labels: vec![SampleLabel::Str("thread", s.thread_name)],
                pseudo: Vec::new(),
            }
        })
        .collect();
    let note = format!(
        "leakscope: {} timer, {} samples lost (buffer full)",
        raw.timer, raw.lost
    );
    // Mappings are read after sampling so that libraries loaded meanwhile are
    // known; a failure leaves addresses unsymbolized rather than failing.
    let maps = ProcessMaps::current().unwrap_or_default();
    let mut profile = build_profile(&meta, samples, &maps, symbolizer, None);
    profile.add_comment(&note);
    profile
}

/// The leaf is the interrupted PC; every other address is a return address,
/// which points after the call: minus one lands inside the call instruction,
/// so file, line and inlining are those of the call site.
pub(crate) fn adjust_callers(stack: &[u64]) -> Vec<u64> {
    stack
        .iter()
        .enumerate()
        .map(|(i, a)| if i == 0 { *a } else { a.saturating_sub(1) })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn leaf_kept_callers_adjusted() {
        assert_eq!(super::adjust_callers(&[100, 200, 300]), vec![100, 199, 299]);
        assert!(super::adjust_callers(&[]).is_empty());
    }
}
