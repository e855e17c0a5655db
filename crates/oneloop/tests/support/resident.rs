//! Which pages of a file are in the page cache (`mincore` on a mapping of it): what the
//! pool tests judge each read by, since `POSIX_FADV_DONTNEED` is only advice.

/// A read-only shared mapping of a file, to ask which pages are resident (`mincore`).
pub struct Mapped {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapped {
    pub fn new(fd: i32, len: usize) -> Mapped {
        // SAFETY: a fresh read-only mapping of `len` bytes of an open file; unmapped on drop.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(
            addr,
            libc::MAP_FAILED,
            "{}",
            std::io::Error::last_os_error()
        );
        Mapped { addr, len }
    }

    /// Whether the page at `offset` is in the page cache (the mapping itself faults nothing in).
    pub fn resident(&self, offset: usize) -> bool {
        let mut vec = 0u8;
        // SAFETY: one page inside the mapping; `vec` has room for its one status byte.
        let res =
            unsafe { libc::mincore(self.addr.cast::<u8>().add(offset).cast(), 4096, &mut vec) };
        assert_eq!(res, 0, "{}", std::io::Error::last_os_error());
        vec & 1 == 1
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}
