//! DMA buffers: 4 KiB-aligned memory that the kernel reads and writes directly.
//!
//! Each core owns one [`DmaArena`], allocated and registered with its ring at start-up
//! (`IORING_REGISTER_BUFFERS`), so reads and writes from it skip the per-I/O page pinning
//! of ordinary O_DIRECT. The arena is carved into runs of 4 KiB pages, first fit, with
//! neighbours coalesced on free. When the arena is exhausted a buffer falls back to an
//! ordinary aligned heap allocation (still usable for O_DIRECT, just not pre-registered),
//! so pressure slows I/O down instead of failing it.
//!
//! Buffers are owned (`DmaBuf`), never borrowed across an await: an I/O operation takes
//! the buffer and hands it back on completion (see monoio's "rent" model). The arena is
//! core-local (`Rc`), which the type system enforces: a `DmaBuf` is not `Send`.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::rc::Rc;

/// Alignment and granule of DMA memory, in bytes (the logical block size we require).
pub const DMA_ALIGN_BYTES: usize = 4096;

/// Rounds `bytes` up to a multiple of [`DMA_ALIGN_BYTES`].
pub const fn align_up(bytes: usize) -> usize {
    (bytes + DMA_ALIGN_BYTES - 1) & !(DMA_ALIGN_BYTES - 1)
}

/// One core's registered DMA memory.
pub struct DmaArena {
    base: NonNull<u8>,
    bytes: usize,
    /// Free runs: first page -> page count. Kept coalesced.
    free_runs: RefCell<BTreeMap<usize, usize>>,
    free_pages: std::cell::Cell<usize>,
    /// Recently freed small runs by page count (index = pages - 1): O(1) reuse for the
    /// 4–16 KiB buffers of small reads. Bounded by `SMALL_RUNS_CACHED_MAX` per class.
    small_runs: RefCell<[Vec<usize>; SMALL_RUN_PAGES_MAX]>,
}

/// Largest run, in pages, kept in the small-run cache.
const SMALL_RUN_PAGES_MAX: usize = 4;
/// Runs cached per size class at most.
const SMALL_RUNS_CACHED_MAX: usize = 128;

impl std::fmt::Debug for DmaArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaArena")
            .field("bytes", &self.bytes)
            .field("free_pages", &self.free_pages.get())
            .finish()
    }
}

impl DmaArena {
    /// Allocates an arena of `bytes` (rounded up to 4 KiB; at least one page).
    pub fn new(bytes: usize) -> DmaArena {
        let bytes = align_up(bytes.max(DMA_ALIGN_BYTES));
        let layout = Layout::from_size_align(bytes, DMA_ALIGN_BYTES).expect("arena layout: size rounded to alignment");
        // SAFETY: the layout has a non-zero size; a null return is handled below.
        let pointer = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(pointer).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        let pages = bytes / DMA_ALIGN_BYTES;
        let mut free_runs = BTreeMap::new();
        free_runs.insert(0, pages);
        DmaArena {
            base,
            bytes,
            free_runs: RefCell::new(free_runs),
            free_pages: std::cell::Cell::new(pages),
            small_runs: RefCell::new(Default::default()),
        }
    }

    /// The `iovec` to register with the ring (buffer index 0).
    pub fn iovec(&self) -> libc::iovec {
        libc::iovec {
            iov_base: self.base.as_ptr().cast(),
            iov_len: self.bytes,
        }
    }

    /// Total bytes of the arena.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes currently free.
    pub fn free_bytes(&self) -> usize {
        self.free_pages.get() * DMA_ALIGN_BYTES
    }

    /// Returns cached small runs to the coalescing map (when a large allocation fails).
    fn flush_small_runs(&self) -> bool {
        let cached: Vec<(usize, usize)> = self
            .small_runs
            .borrow_mut()
            .iter_mut()
            .enumerate()
            .flat_map(|(class, starts)| starts.drain(..).map(move |start| (start, class + 1)))
            .collect();
        let any = !cached.is_empty();
        for (start, pages) in cached {
            self.free_pages.set(self.free_pages.get() - pages);
            self.coalesce_run(start, pages);
        }
        any
    }

    fn allocate_pages(&self, pages: usize) -> Option<usize> {
        let found = self.allocate_run(pages);
        if found.is_none() && pages > SMALL_RUN_PAGES_MAX && self.flush_small_runs() {
            return self.allocate_run(pages);
        }
        found
    }

    fn allocate_run(&self, pages: usize) -> Option<usize> {
        if (1..=SMALL_RUN_PAGES_MAX).contains(&pages) {
            if let Some(start) = self.small_runs.borrow_mut()[pages - 1].pop() {
                self.free_pages.set(self.free_pages.get() - pages);
                return Some(start);
            }
        }
        let mut runs = self.free_runs.borrow_mut();
        let (&start, &count) = runs.iter().find(|(_, &count)| count >= pages)?;
        runs.remove(&start);
        if count > pages {
            runs.insert(start + pages, count - pages);
        }
        self.free_pages.set(self.free_pages.get() - pages);
        Some(start)
    }

    fn free_pages_run(&self, start: usize, pages: usize) {
        if (1..=SMALL_RUN_PAGES_MAX).contains(&pages) {
            let mut small_runs = self.small_runs.borrow_mut();
            if small_runs[pages - 1].len() < SMALL_RUNS_CACHED_MAX {
                small_runs[pages - 1].push(start);
                self.free_pages.set(self.free_pages.get() + pages);
                return;
            }
        }
        self.coalesce_run(start, pages);
    }

    fn coalesce_run(&self, start: usize, pages: usize) {
        self.free_pages.set(self.free_pages.get() + pages);
        let mut runs = self.free_runs.borrow_mut();
        let mut start = start;
        let mut pages = pages;
        // Coalesce with the run before.
        if let Some((&before_start, &before_count)) = runs.range(..start).next_back() {
            assert!(
                before_start + before_count <= start,
                "DMA arena double free or overlap at page {start}"
            );
            if before_start + before_count == start {
                runs.remove(&before_start);
                start = before_start;
                pages += before_count;
            }
        }
        // Coalesce with the run after.
        if let Some((&after_start, &after_count)) = runs.range(start + pages..).next() {
            if after_start == start + pages {
                runs.remove(&after_start);
                pages += after_count;
            }
        }
        if let Some((&overlap_start, _)) = runs.range(start..start + pages).next() {
            panic!("DMA arena double free: run at page {overlap_start} inside freed run");
        }
        runs.insert(start, pages);
    }
}

impl Drop for DmaArena {
    fn drop(&mut self) {
        let layout =
            Layout::from_size_align(self.bytes, DMA_ALIGN_BYTES).expect("arena layout: size rounded to alignment");
        // SAFETY: `base` came from `alloc_zeroed` with this same layout, and every DmaBuf
        // holds an `Rc` to the arena, so none outlives it.
        unsafe { alloc::dealloc(self.base.as_ptr(), layout) }
    }
}

enum Backing {
    /// Pages `[page_start, page_start + pages)` of a registered arena.
    Arena { arena: Rc<DmaArena>, page_start: usize },
    /// An aligned heap allocation of its own (not registered).
    Heap,
}

/// An owned, 4 KiB-aligned buffer whose capacity is a multiple of 4 KiB.
pub struct DmaBuf {
    pointer: NonNull<u8>,
    capacity_bytes: usize,
    len_bytes: usize,
    backing: Backing,
}

impl std::fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuf")
            .field("capacity_bytes", &self.capacity_bytes)
            .field("len_bytes", &self.len_bytes)
            .field("registered", &self.is_registered())
            .finish()
    }
}

impl DmaBuf {
    /// Allocates at least `bytes` (rounded up to 4 KiB) from `arena`, or from the heap when
    /// the arena has no run that large. The content is unspecified; `len` starts at 0.
    pub fn allocate(arena: Option<&Rc<DmaArena>>, bytes: usize) -> DmaBuf {
        let capacity_bytes = align_up(bytes.max(1));
        let pages = capacity_bytes / DMA_ALIGN_BYTES;
        if let Some(arena) = arena {
            if let Some(page_start) = arena.allocate_pages(pages) {
                // SAFETY: page_start + pages lies inside the arena (the allocator only hands
                // out runs it holds), so the offset stays within the allocation.
                let pointer = unsafe { NonNull::new_unchecked(arena.base.as_ptr().add(page_start * DMA_ALIGN_BYTES)) };
                return DmaBuf {
                    pointer,
                    capacity_bytes,
                    len_bytes: 0,
                    backing: Backing::Arena {
                        arena: Rc::clone(arena),
                        page_start,
                    },
                };
            }
        }
        let layout =
            Layout::from_size_align(capacity_bytes, DMA_ALIGN_BYTES).expect("DMA layout: size rounded to alignment");
        // SAFETY: non-zero size; null handled.
        let pointer = unsafe { alloc::alloc_zeroed(layout) };
        let pointer = NonNull::new(pointer).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        DmaBuf {
            pointer,
            capacity_bytes,
            len_bytes: 0,
            backing: Backing::Heap,
        }
    }

    /// Whether this buffer lies in the core's registered arena.
    pub fn is_registered(&self) -> bool {
        matches!(self.backing, Backing::Arena { .. })
    }

    /// Capacity in bytes (a multiple of 4 KiB).
    pub fn capacity(&self) -> usize {
        self.capacity_bytes
    }

    /// Length of valid data in bytes.
    pub fn len(&self) -> usize {
        self.len_bytes
    }

    /// Whether no data is held.
    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// Sets the length of valid data. Panics if beyond capacity (a caller bug).
    pub fn set_len(&mut self, len_bytes: usize) {
        assert!(
            len_bytes <= self.capacity_bytes,
            "DmaBuf length {len_bytes} beyond capacity {}",
            self.capacity_bytes
        );
        self.len_bytes = len_bytes;
    }

    /// The valid bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.full()[..self.len_bytes]
    }

    /// The whole capacity, readable.
    pub fn full(&self) -> &[u8] {
        // SAFETY: `pointer` addresses `capacity_bytes` initialized (zeroed at allocation)
        // bytes owned exclusively by this buffer; the kernel only writes them while an
        // operation owns the buffer, and operations take it by value.
        unsafe { std::slice::from_raw_parts(self.pointer.as_ptr(), self.capacity_bytes) }
    }

    /// The whole capacity, writable.
    pub fn full_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `full`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.pointer.as_ptr(), self.capacity_bytes) }
    }

    /// Raw pointer for submission to the kernel.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.pointer.as_ptr()
    }

    /// Copies `data` in at the start and sets the length; the tail up to the next 4 KiB
    /// boundary is zeroed so padded writes never leak old memory to the device.
    pub fn fill_from(&mut self, data: &[u8]) {
        assert!(data.len() <= self.capacity_bytes, "DmaBuf fill beyond capacity");
        let padded = align_up(data.len()).min(self.capacity_bytes);
        let full = self.full_mut();
        full[..data.len()].copy_from_slice(data);
        full[data.len()..padded].fill(0);
        self.len_bytes = data.len();
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        match &self.backing {
            Backing::Arena { arena, page_start } => {
                arena.free_pages_run(*page_start, self.capacity_bytes / DMA_ALIGN_BYTES);
            }
            Backing::Heap => {
                let layout = Layout::from_size_align(self.capacity_bytes, DMA_ALIGN_BYTES)
                    .expect("DMA layout: size rounded to alignment");
                // SAFETY: allocated in `allocate` with exactly this layout.
                unsafe { alloc::dealloc(self.pointer.as_ptr(), layout) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_allocates_coalesces_and_falls_back() {
        let arena = Rc::new(DmaArena::new(16 * DMA_ALIGN_BYTES));
        let a = DmaBuf::allocate(Some(&arena), 4 * DMA_ALIGN_BYTES);
        let b = DmaBuf::allocate(Some(&arena), 8 * DMA_ALIGN_BYTES);
        let c = DmaBuf::allocate(Some(&arena), 4 * DMA_ALIGN_BYTES);
        assert!(a.is_registered() && b.is_registered() && c.is_registered());
        assert_eq!(arena.free_bytes(), 0);
        let d = DmaBuf::allocate(Some(&arena), 1);
        assert!(!d.is_registered(), "exhausted arena falls back to the heap");
        drop(a);
        drop(c);
        assert_eq!(arena.free_bytes(), 8 * DMA_ALIGN_BYTES);
        let e = DmaBuf::allocate(Some(&arena), 5 * DMA_ALIGN_BYTES);
        assert!(!e.is_registered(), "free space is fragmented into two runs of 4");
        drop(b);
        let f = DmaBuf::allocate(Some(&arena), 16 * DMA_ALIGN_BYTES);
        assert!(f.is_registered(), "all runs coalesced back into one");
        assert_eq!(f.full().as_ptr() as usize % DMA_ALIGN_BYTES, 0);
    }

    #[test]
    fn fill_pads_with_zeros() {
        let mut buffer = DmaBuf::allocate(None, 10);
        buffer.full_mut().fill(0xAA);
        buffer.fill_from(b"hello");
        assert_eq!(buffer.as_slice(), b"hello");
        assert!(buffer.full()[5..].iter().all(|&byte| byte == 0));
    }
}
