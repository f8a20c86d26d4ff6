//! Uses the agent (built with `fd-sites`) but is linked without the
//! `--wrap` argument: the link fails with `undefined symbol: __real_...`.

fn main() {
    let total = leakscope_agent::resource::list_fds(
        leakscope_agent::resource::Target::SelfProcess,
        &leakscope_agent::resource::ListOptions::default(),
    )
    .map(|l| l.total());
    println!("{total:?}");
}
