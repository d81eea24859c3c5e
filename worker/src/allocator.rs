//! `worker serve`'s memory goes back to the system after a burst of large requests.
//!
//! glibc's malloc raises its threshold for serving an allocation from its own mapping each time
//! such a mapping is freed (up to 32 MiB), so after a few large requests their buffers come from
//! the heap arenas, which it keeps: six concurrent 14 MB requests left the server at 121 MB
//! (from 41 MB idle). With the threshold fixed at 128 KiB every large buffer (bodies, rows,
//! outputs, answers) is a mapping of its own, returned when freed: the server went back to
//! 37 MB, its peak fell from 348 to 152 MB, and the answer time did not change (`make
//! bench-serve` measures it). mimalloc was tried too: with its defaults it kept 300 MB.

/// Allocations of this many bytes or more are mappings of their own, unmapped when freed.
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Fixes glibc's mmap threshold (which also stops it from growing).
pub fn give_memory_back() {
    // SAFETY: mallopt takes two integers and may be called at any time; it only changes how
    // later allocations are served.
    let done = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if done != 1 {
        tracing::warn!("glibc refused the mmap threshold: memory may stay with the process after large requests");
    }
}
