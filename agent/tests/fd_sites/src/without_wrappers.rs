//! Linked with the `--wrap` argument but without the agent's wrappers (as
//! a binary whose agent lacks the `fd-sites` feature): the link fails with
//! `undefined symbol: __wrap_...`.

fn main() {
    let file = std::fs::File::open("/proc/self/status");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0");
    println!("{} {}", file.is_ok(), socket.is_ok());
}
