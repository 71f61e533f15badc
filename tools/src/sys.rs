//! The only unsafe code in this crate: two Linux knobs that neither std nor socket2 expose.

use std::io;
use std::os::fd::AsRawFd;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the new soft limit.
///
/// Idle mode holds 10,000+ sockets and a load run plus its backends can exceed the usual
/// soft limit of 1024, so every load run calls this first.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit` that outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= lim.rlim_max {
        return Ok(lim.rlim_cur);
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid, initialised `rlimit` that outlives the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` so that binding a client socket to a source IP defers
/// choosing the port to `connect`, where the kernel can reuse a port for different
/// destinations instead of reserving one per bound socket.
pub fn set_bind_address_no_port(sock: &impl AsRawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .expect("size_of::<c_int>() fits in socklen_t");
    // SAFETY: the fd is owned by `sock` and open for the duration of the call; the option
    // value points to a live `c_int` whose size is passed as `len`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast::<libc::c_void>(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
