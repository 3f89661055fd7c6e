//! Build-time probes of the host, so that tests needing a kernel feature are reported as
//! *ignored* where the feature is missing, instead of returning early and passing.
//!
//! - `statesync_uring`: an io_uring instance can be created here (not disabled by sysctl,
//!   seccomp or `STATESYNC_NO_URING`).
//! - `statesync_ipv6`: an IPv6 loopback socket can be bound.
//!
//! With `STATESYNC_REQUIRE_URING=1` `statesync_uring` is set whatever the probe says, so a host
//! that should have io_uring fails those tests rather than skipping them (`.ci/run` sets it
//! where io_uring works).

fn uring_works() -> bool {
    // io_uring_setup(2) with one entry; `params` is the kernel's 120-byte struct, zeroed.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes at most `sizeof(struct io_uring_params)` (120
    // bytes) at the pointer, which points to a live, writable buffer of that size.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` is a file descriptor this function just opened and owns.
    unsafe { libc::close(fd as i32) };
    true
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(statesync_uring)");
    println!("cargo::rustc-check-cfg=cfg(statesync_ipv6)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=STATESYNC_REQUIRE_URING");
    println!("cargo::rerun-if-env-changed=STATESYNC_NO_URING");
    let required = std::env::var_os("STATESYNC_REQUIRE_URING").is_some_and(|v| v != "0");
    let disabled =
        std::env::var_os("STATESYNC_NO_URING").is_some_and(|v| !v.is_empty() && v != "0");
    if required || (!disabled && uring_works()) {
        println!("cargo::rustc-cfg=statesync_uring");
    } else {
        println!("cargo::warning=io_uring unavailable here: its transport tests will be ignored");
    }
    if std::net::UdpSocket::bind("[::1]:0").is_ok() {
        println!("cargo::rustc-cfg=statesync_ipv6");
    }
}
