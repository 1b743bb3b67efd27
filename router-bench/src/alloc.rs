//! The process's global allocator, chosen by cargo feature: jemalloc (the
//! default feature `jemalloc`, with background threads returning freed pages
//! after its decay time), mimalloc with `--features mimalloc` (it takes
//! precedence), glibc's malloc with `--no-default-features`. The router child
//! reports [`NAME`], so `router-soak memory` can label what it measured.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The global allocator this binary was built with.
#[cfg(feature = "mimalloc")]
pub const NAME: &str = "mimalloc";
/// The global allocator this binary was built with.
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
pub const NAME: &str = "jemalloc";
/// The global allocator this binary was built with.
#[cfg(not(any(feature = "mimalloc", feature = "jemalloc")))]
pub const NAME: &str = "glibc";
