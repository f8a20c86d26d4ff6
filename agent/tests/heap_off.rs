//! jemalloc as the global allocator but without `prof:true`: heap profiling
//! reports itself off.

use leakscope_agent::Error;
use leakscope_agent::heap::{self, HeapState};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[test]
fn state_is_disabled() {
    assert_eq!(heap::state(), HeapState::Disabled);
}

#[test]
fn dump_says_disabled() {
    match heap::dump() {
        Err(Error::HeapProfilingDisabled) => {}
        other => panic!("expected HeapProfilingDisabled, got {other:?}"),
    }
}
