//! The one line `leakscope-agent`'s `fd-sites` feature asks of a binary:
//! the linker wraps the functions that open fds, so the agent records which
//! code opened each one (README of leakscope: "Building for profiling").

fn main() {
    println!(
        "cargo::rustc-link-arg=-Wl,--wrap=socket,--wrap=socketpair,--wrap=accept,--wrap=accept4,\
         --wrap=open,--wrap=open64,--wrap=openat,--wrap=openat64,--wrap=creat,--wrap=pipe,--wrap=pipe2,\
         --wrap=epoll_create1,--wrap=eventfd,--wrap=timerfd_create,--wrap=dup,--wrap=fcntl,--wrap=close"
    );
}
