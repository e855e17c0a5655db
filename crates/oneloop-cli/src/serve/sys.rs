//! The one thing `serve` needs that neither the ring nor a crate offers safely: SIGINT and
//! SIGTERM delivered to a descriptor.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread it starts later)
/// and returns a non-blocking `signalfd` that turns readable when either is pending.
pub fn block_and_open_signalfd() -> io::Result<OwnedFd> {
    // SAFETY: `set` is a local `sigset_t` initialised by `sigemptyset` before use; the calls
    // get valid pointers to it and a null old-mask pointer, which they allow.
    let fd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `signalfd` just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
