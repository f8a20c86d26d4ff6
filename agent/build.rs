//! With the `fd-sites` feature, links this package's own tests, benches
//! and examples with the `--wrap` flags the feature needs (a library's
//! build script cannot pass link arguments to the binaries of the
//! packages that use it: those add the same line to their own build.rs).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_FD_SITES").is_some() {
        println!("cargo::rustc-link-arg={}", LINK_ARG);
    }
}

/// `leakscope_agent::fdsites::LINK_ARG` (a unit test keeps them equal).
const LINK_ARG: &str = "-Wl,--wrap=socket,--wrap=socketpair,--wrap=accept,--wrap=accept4,\
--wrap=open,--wrap=open64,--wrap=openat,--wrap=openat64,--wrap=creat,--wrap=pipe,--wrap=pipe2,\
--wrap=epoll_create1,--wrap=eventfd,--wrap=timerfd_create,--wrap=dup,--wrap=fcntl,--wrap=close";
