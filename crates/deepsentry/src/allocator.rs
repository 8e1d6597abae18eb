//! The process's memory allocator: jemalloc on Linux, configured when the binary is built.
//!
//! Events are allocated on one thread and freed on another (a source or the transform
//! builds them, a sink drops them), and the transform's two stages allocate side by
//! side. glibc's malloc serves that from shared arenas behind locks, and there the second
//! stage bought nothing; jemalloc's per-thread caches let it pay. `benches/score.sh`, same
//! machine, glibc then jemalloc: demo 390k → 660k lines/s, HDFS keyed 240k → 445k, every
//! window new 130k → 169k, at the same peak memory (46-60 MB).
//!
//! The options, and why each:
//! - `narenas:1`: one arena for all threads. The threads' caches already keep them apart;
//!   more arenas only multiply the memory kept for reuse.
//! - `thp:always`: the detector's matrix products `calloc` their outputs, a few hundred KB
//!   each, every scoring round. To zero a reused block jemalloc hands its pages back to the
//!   kernel unless transparent huge pages are on, so each round paid a page fault per 4 KB
//!   page (100,000 faults, a third of the run, when every window is new). With this option it
//!   zeroes them in place. The price is the huge pages it then asks the kernel for: about
//!   5 MB more peak RSS on a plain file -> blackhole run, 10 MB on a scoring run. On a
//!   kernel whose huge pages are off it changes nothing else.
//!
//! `MALLOC_CONF`-style overrides still work through the `_RJEM_MALLOC_CONF` environment
//! variable, read after these.

#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compile-time options (see the module's documentation). jemalloc reads this
/// symbol at its first allocation, before `main`, so it must be a constant.
#[cfg(target_os = "linux")]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: Option<&'static std::ffi::c_char> =
    // SAFETY: the pointer is to the first byte of a static C string, valid for the program's
    // whole life; jemalloc reads the string up to its terminating zero.
    Some(unsafe { &*c"narenas:1,thp:always".as_ptr() });
