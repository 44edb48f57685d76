//! Files and block devices driven through the core's ring.
//!
//! A [`DmaFile`] is opened on the core that uses it and registered in that core's ring
//! file table; reads and writes take an owned [`DmaBuf`] and give it back with the
//! result. Buffers from the registered arena go through `READ_FIXED`/`WRITE_FIXED`.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use io_uring::{opcode, squeue, types};

use crate::dma::{DmaBuf, DMA_ALIGN_BYTES};
use crate::executor::OpBuffer;
use crate::with_current;

/// How to open a [`DmaFile`].
#[derive(Debug, Clone, Copy)]
pub struct OpenMode {
    /// Open for writing too.
    pub write: bool,
    /// Bypass the page cache (`O_DIRECT`): offsets and lengths must be 4 KiB aligned.
    pub direct: bool,
}

impl OpenMode {
    /// Read and write, `O_DIRECT`: how devices are opened.
    pub const DEVICE: OpenMode = OpenMode {
        write: true,
        direct: true,
    };
}

/// A file or block device bound to this core's ring.
#[derive(Debug)]
pub struct DmaFile {
    file: File,
    path: PathBuf,
    fixed_index: Option<u32>,
    direct: bool,
}

/// Builds a read or write SQE for `self`: the `*Fixed` opcode for a buffer in the
/// registered arena, `types::Fixed` for a file registered with the ring.
macro_rules! rw_entry {
    ($file:ident, $fixed_op:ident, $plain_op:ident, $registered:expr, $pointer:expr, $len:expr, $offset:expr) => {
        match ($registered, $file.fixed_index) {
            (true, Some(index)) => opcode::$fixed_op::new(types::Fixed(index), $pointer, $len, 0)
                .offset($offset)
                .build(),
            (true, None) => opcode::$fixed_op::new(types::Fd($file.file.as_raw_fd()), $pointer, $len, 0)
                .offset($offset)
                .build(),
            (false, Some(index)) => opcode::$plain_op::new(types::Fixed(index), $pointer, $len)
                .offset($offset)
                .build(),
            (false, None) => opcode::$plain_op::new(types::Fd($file.file.as_raw_fd()), $pointer, $len)
                .offset($offset)
                .build(),
        }
    };
}

/// An in-flight ring operation.
pub(crate) struct Op {
    slot: u32,
    completed: bool,
    /// Ask the kernel to cancel the op when its future is dropped early.
    cancel_on_drop: bool,
}

impl Op {
    /// Cancel the kernel op if this future is dropped before it completes (sockets).
    pub(crate) fn cancel_on_drop(mut self) -> Op {
        self.cancel_on_drop = true;
        self
    }
}

impl Future for Op {
    type Output = (i32, Option<OpBuffer>);

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = self.slot;
        match with_current(|executor| executor.poll_op(slot, context)) {
            Ok(Poll::Ready(output)) => {
                self.completed = true;
                Poll::Ready(output)
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => {
                self.completed = true;
                Poll::Ready((-libc::EBADF, None))
            }
        }
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if !self.completed {
            let slot = self.slot;
            let cancel = self.cancel_on_drop;
            let _ = with_current(|executor| executor.abandon_op(slot, cancel));
        }
    }
}

/// Submits `entry`, keeping `buffer` alive until its completion.
///
/// # Safety
/// `entry` may only point into `buffer` (or into memory that outlives the op).
pub(crate) unsafe fn submit(entry: squeue::Entry, buffer: Option<OpBuffer>) -> io::Result<Op> {
    // SAFETY: forwarded from the caller; the op slot owns `buffer`.
    let slot = with_current(|executor| unsafe { executor.submit_op(entry, buffer) })
        .map_err(|error| io::Error::other(error.to_string()))?;
    Ok(Op {
        slot,
        completed: false,
        cancel_on_drop: false,
    })
}

/// The DMA buffer an op gave back (a fresh one-byte buffer if it lost it).
fn dma_of(buffer: Option<OpBuffer>) -> DmaBuf {
    match buffer {
        Some(OpBuffer::Dma(buffer)) => buffer,
        _ => DmaBuf::allocate(None, 1),
    }
}

pub(crate) fn result_of(result: i32) -> io::Result<usize> {
    if result < 0 {
        Err(io::Error::from_raw_os_error(-result))
    } else {
        Ok(result as usize)
    }
}

impl DmaFile {
    /// Opens `path` and registers it with this core's ring (when on an executor).
    pub fn open(path: &Path, mode: OpenMode) -> io::Result<DmaFile> {
        let mut options = OpenOptions::new();
        options.read(true).write(mode.write);
        if mode.direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let file = options.open(path)?;
        let fixed_index = with_current(|executor| executor.register_file(file.as_raw_fd()))
            .ok()
            .and_then(Result::ok);
        Ok(DmaFile {
            file,
            path: path.to_path_buf(),
            fixed_index,
            direct: mode.direct,
        })
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The standard file, for metadata and set-up calls off the data path.
    pub fn std_file(&self) -> &File {
        &self.file
    }

    /// Size in bytes (works for block devices too).
    pub fn size_bytes(&self) -> io::Result<u64> {
        Ok(rustix::fs::seek(&self.file, rustix::fs::SeekFrom::End(0))?)
    }

    fn check_alignment(&self, offset: u64, len: usize) -> io::Result<()> {
        if self.direct && (!offset.is_multiple_of(DMA_ALIGN_BYTES as u64) || !len.is_multiple_of(DMA_ALIGN_BYTES)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unaligned direct I/O: offset {offset}, length {len}"),
            ));
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `offset` into the start of `buffer` (one submission).
    pub async fn read_at(&self, mut buffer: DmaBuf, offset: u64, len: usize) -> (io::Result<usize>, DmaBuf) {
        if len > buffer.capacity() {
            return (
                Err(io::Error::new(io::ErrorKind::InvalidInput, "read longer than buffer")),
                buffer,
            );
        }
        if let Err(error) = self.check_alignment(offset, len) {
            return (Err(error), buffer);
        }
        let pointer = buffer.as_mut_ptr();
        let entry = rw_entry!(
            self,
            ReadFixed,
            Read,
            buffer.is_registered(),
            pointer,
            len as u32,
            offset
        );
        // SAFETY: the entry points only into `buffer`, which the op owns until completion.
        let op = match unsafe { submit(entry, Some(OpBuffer::Dma(buffer))) } {
            Ok(op) => op,
            Err(error) => return (Err(error), DmaBuf::allocate(None, 1)),
        };
        let (result, buffer) = op.await;
        let mut buffer = dma_of(buffer);
        let result = result_of(result);
        if let Ok(read) = result {
            buffer.set_len(read);
        }
        (result, buffer)
    }

    /// Reads exactly `len` bytes at `offset`, retrying short reads; `UnexpectedEof` at the end.
    pub async fn read_exact_at(&self, buffer: DmaBuf, offset: u64, len: usize) -> (io::Result<()>, DmaBuf) {
        let (result, mut buffer) = self.read_at(buffer, offset, len).await;
        match result {
            Ok(read) if read == len => (Ok(()), buffer),
            Ok(read) => {
                // Short read (end of device or a partial transfer): finish with a plain
                // read into a temporary buffer at the aligned remainder.
                if read == 0 || read % DMA_ALIGN_BYTES != 0 {
                    return (
                        Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("short read at {offset}: {read} of {len} bytes"),
                        )),
                        buffer,
                    );
                }
                let rest = DmaBuf::allocate(None, len - read);
                let (result, rest) = Box::pin(self.read_exact_at(rest, offset + read as u64, len - read)).await;
                if let Err(error) = result {
                    return (Err(error), buffer);
                }
                buffer.full_mut()[read..len].copy_from_slice(rest.as_slice());
                buffer.set_len(len);
                (Ok(()), buffer)
            }
            Err(error) => (Err(error), buffer),
        }
    }

    /// Writes `buffer.len()` bytes at `offset` (one submission).
    pub async fn write_at(&self, buffer: DmaBuf, offset: u64) -> (io::Result<usize>, DmaBuf) {
        let len = buffer.len();
        self.write_range_at(buffer, 0, len, offset).await
    }

    /// Writes `len` bytes of `buffer` starting at `buffer_start` (4 KiB aligned for direct
    /// files) to `offset` (one submission).
    pub async fn write_range_at(
        &self,
        mut buffer: DmaBuf,
        buffer_start: usize,
        len: usize,
        offset: u64,
    ) -> (io::Result<usize>, DmaBuf) {
        if buffer_start + len > buffer.capacity() {
            return (
                Err(io::Error::new(io::ErrorKind::InvalidInput, "write range beyond buffer")),
                buffer,
            );
        }
        if let Err(error) = self
            .check_alignment(offset, len)
            .and_then(|()| self.check_alignment(buffer_start as u64, 0))
        {
            return (Err(error), buffer);
        }
        // SAFETY: buffer_start + len lies within the buffer's capacity (checked above).
        let pointer = unsafe { buffer.as_mut_ptr().add(buffer_start) }.cast_const();
        let entry = rw_entry!(
            self,
            WriteFixed,
            Write,
            buffer.is_registered(),
            pointer,
            len as u32,
            offset
        );
        // SAFETY: the entry points only into `buffer`, which the op owns until completion.
        let op = match unsafe { submit(entry, Some(OpBuffer::Dma(buffer))) } {
            Ok(op) => op,
            Err(error) => return (Err(error), DmaBuf::allocate(None, 1)),
        };
        let (result, buffer) = op.await;
        let buffer = dma_of(buffer);
        (result_of(result), buffer)
    }

    /// Writes `len` bytes of `buffer` from `buffer_start` at `offset`; short writes are errors.
    pub async fn write_range_all_at(
        &self,
        buffer: DmaBuf,
        buffer_start: usize,
        len: usize,
        offset: u64,
    ) -> (io::Result<()>, DmaBuf) {
        let (result, buffer) = self.write_range_at(buffer, buffer_start, len, offset).await;
        match result {
            Ok(written) if written == len => (Ok(()), buffer),
            Ok(written) => (
                Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write at {offset}: {written} of {len} bytes"),
                )),
                buffer,
            ),
            Err(error) => (Err(error), buffer),
        }
    }

    /// Writes all of `buffer.len()` bytes at `offset`; a short write is an error.
    pub async fn write_all_at(&self, buffer: DmaBuf, offset: u64) -> (io::Result<()>, DmaBuf) {
        let len = buffer.len();
        self.write_range_all_at(buffer, 0, len, offset).await
    }

    /// Makes every completed write durable (`fdatasync` through the ring).
    pub async fn sync_data(&self) -> io::Result<()> {
        let entry = match self.fixed_index {
            Some(index) => opcode::Fsync::new(types::Fixed(index))
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            None => opcode::Fsync::new(types::Fd(self.file.as_raw_fd()))
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        // SAFETY: fsync refers to no memory.
        let op = unsafe { submit(entry, None) }?;
        let (result, _) = op.await;
        result_of(result).map(|_| ())
    }
}

impl Drop for DmaFile {
    fn drop(&mut self) {
        if let Some(index) = self.fixed_index {
            let _ = with_current(|executor| executor.unregister_file(index));
        }
    }
}
