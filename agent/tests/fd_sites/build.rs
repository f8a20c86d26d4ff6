//! The one line a service adds for `leakscope-agent/fd-sites` (README:
//! "Building for profiling"), here per binary so that `without_link_arg`
//! can show the link error.

/// `leakscope_agent::fdsites::LINK_ARG`.
const LINK_ARG: &str = "-Wl,--wrap=socket,--wrap=socketpair,--wrap=accept,--wrap=accept4,\
--wrap=open,--wrap=open64,--wrap=openat,--wrap=openat64,--wrap=creat,--wrap=pipe,--wrap=pipe2,\
--wrap=epoll_create1,--wrap=eventfd,--wrap=timerfd_create,--wrap=dup,--wrap=fcntl,--wrap=close";

fn main() {
    println!("cargo::rustc-link-arg-bin=fd_sites_service={LINK_ARG}");
    println!("cargo::rustc-link-arg-bin=without_wrappers={LINK_ARG}");
}
