//! Content-defined chunking: FastCDC v2020 (the `fastcdc` crate's `v2020` module).
//!
//! [`chunk_slice`] cuts an in-memory buffer with the crate's own iterator. [`StreamChunker`]
//! cuts a stream (a `Read`, or buffers pushed by the caller) in bounded memory: one window
//! of `chunk_bytes_max + read_buffer_bytes`, never the whole object. Its cut search is
//! resumable (it keeps the gear hash and position between reads, so each byte is scanned
//! once however small the reads are) and is the same algorithm as the crate's `cut_gear`,
//! with the crate's gear tables and masks; a property test holds the two to identical cut
//! points.

use std::io::{ErrorKind, Read};

use fastcdc::v2020;

use crate::error::Error;

/// Chunk size parameters of a namespace. Defaults: min 256 KiB, average 1 MiB, max 4 MiB,
/// normalization level 1.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChunkingParams {
    /// Smallest chunk (except the last chunk of an object).
    pub chunk_bytes_min: u32,
    /// Target average chunk size; rounded down to a power of two for the cut mask.
    pub chunk_bytes_avg: u32,
    /// Largest chunk.
    pub chunk_bytes_max: u32,
    /// FastCDC normalization level, 0..=3 (higher: sizes closer to the average).
    pub normalization_level: u8,
}

impl Default for ChunkingParams {
    fn default() -> ChunkingParams {
        ChunkingParams {
            chunk_bytes_min: 256 << 10,
            chunk_bytes_avg: 1 << 20,
            chunk_bytes_max: 4 << 20,
            normalization_level: 1,
        }
    }
}

impl ChunkingParams {
    /// Checks the FastCDC bounds and their order; an error names the offending value.
    pub fn validate(&self) -> Result<(), Error> {
        let in_range = |value: u32, low: u32, high: u32, name: &str| {
            if value < low || value > high {
                Err(Error::invalid(format!("{name} = {value} is not in {low}..={high}")))
            } else {
                Ok(())
            }
        };
        in_range(
            self.chunk_bytes_min,
            v2020::MINIMUM_MIN,
            v2020::MINIMUM_MAX,
            "chunk_bytes_min",
        )?;
        in_range(
            self.chunk_bytes_avg,
            v2020::AVERAGE_MIN,
            v2020::AVERAGE_MAX,
            "chunk_bytes_avg",
        )?;
        in_range(
            self.chunk_bytes_max,
            v2020::MAXIMUM_MIN,
            v2020::MAXIMUM_MAX,
            "chunk_bytes_max",
        )?;
        if self.chunk_bytes_min > self.chunk_bytes_avg || self.chunk_bytes_avg > self.chunk_bytes_max {
            return Err(Error::invalid(format!(
                "chunk sizes must satisfy min <= avg <= max, got {} / {} / {}",
                self.chunk_bytes_min, self.chunk_bytes_avg, self.chunk_bytes_max
            )));
        }
        if self.normalization_level > 3 {
            return Err(Error::invalid(format!(
                "normalization_level = {} is not in 0..=3",
                self.normalization_level
            )));
        }
        Ok(())
    }

    fn level(&self) -> v2020::Normalization {
        match self.normalization_level {
            0 => v2020::Normalization::Level0,
            1 => v2020::Normalization::Level1,
            2 => v2020::Normalization::Level2,
            _ => v2020::Normalization::Level3,
        }
    }
}

/// Cuts `data` into chunks with the `fastcdc` crate's v2020 iterator; yields each chunk as
/// a sub-slice of `data` (no copy). An empty `data` yields nothing.
pub fn chunk_slice<'a>(params: &ChunkingParams, data: &'a [u8]) -> Result<impl Iterator<Item = &'a [u8]> + 'a, Error> {
    params.validate()?;
    let cuts = v2020::FastCDC::with_level(
        data,
        params.chunk_bytes_min,
        params.chunk_bytes_avg,
        params.chunk_bytes_max,
        params.level(),
    );
    Ok(cuts.map(move |chunk| &data[chunk.offset..chunk.offset + chunk.length]))
}

/// Where a resumable cut search stands within the current chunk.
#[derive(Clone, Copy, Debug)]
struct ScanState {
    /// Next two-byte step (byte position `2 * index`) relative to the chunk start.
    index: usize,
    /// Gear hash so far.
    hash: u64,
}

/// FastCDC v2020 cut search with the crate's tables and masks, resumable across input.
struct Cutter {
    bytes_min: usize,
    bytes_avg: usize,
    bytes_max: usize,
    mask_s: u64,
    mask_l: u64,
    mask_s_ls: u64,
    mask_l_ls: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Cutter {
    fn new(params: &ChunkingParams) -> Result<Cutter, Error> {
        params.validate()?;
        // Same mask selection as `v2020::FastCDC::with_level_and_seed`.
        let bits = v2020::logarithm2(params.chunk_bytes_avg);
        let level = u32::from(params.normalization_level);
        let mask_s = v2020::MASKS[(bits + level) as usize];
        let mask_l = v2020::MASKS[(bits - level) as usize];
        let (gear, gear_ls) = v2020::get_gear_with_seed(0);
        Ok(Cutter {
            bytes_min: params.chunk_bytes_min as usize,
            bytes_avg: params.chunk_bytes_avg as usize,
            bytes_max: params.chunk_bytes_max as usize,
            mask_s,
            mask_l,
            mask_s_ls: mask_s << 1,
            mask_l_ls: mask_l << 1,
            gear,
            gear_ls,
        })
    }

    fn start(&self) -> ScanState {
        ScanState {
            index: self.bytes_min / 2,
            hash: 0,
        }
    }

    /// Continues the cut search over `window` (the current chunk's bytes so far). Returns
    /// the chunk length once it is certain: a cut point, `bytes_max`, or the end of input.
    /// `None` means more input is needed; `state` then holds where to resume.
    fn resume(&self, window: &[u8], state: &mut ScanState, end_of_input: bool) -> Option<usize> {
        if window.len() <= self.bytes_min {
            return if end_of_input { Some(window.len()) } else { None };
        }
        let limit = window.len().min(self.bytes_max);
        // Positions below the average use the strict mask, later ones the loose mask:
        // `cut_gear` switches at `center = min(avg, remaining)`, which is the same split.
        let switch = self.bytes_avg / 2;
        let mut index = state.index;
        let mut hash = state.hash;
        let steps_end = limit / 2;
        while index < steps_end.min(switch) {
            let a = index * 2;
            hash = (hash << 2).wrapping_add(self.gear_ls[window[a] as usize]);
            if hash & self.mask_s_ls == 0 {
                return Some(a);
            }
            hash = hash.wrapping_add(self.gear[window[a + 1] as usize]);
            if hash & self.mask_s == 0 {
                return Some(a + 1);
            }
            index += 1;
        }
        while index < steps_end {
            let a = index * 2;
            hash = (hash << 2).wrapping_add(self.gear_ls[window[a] as usize]);
            if hash & self.mask_l_ls == 0 {
                return Some(a);
            }
            hash = hash.wrapping_add(self.gear[window[a + 1] as usize]);
            if hash & self.mask_l == 0 {
                return Some(a + 1);
            }
            index += 1;
        }
        state.index = index;
        state.hash = hash;
        if window.len() >= self.bytes_max {
            Some(self.bytes_max)
        } else if end_of_input {
            Some(window.len())
        } else {
            None
        }
    }
}

/// A streaming FastCDC chunker with bounded memory.
///
/// Memory: one window of `chunk_bytes_max + read_buffer_bytes`, allocated once. Input is
/// copied into the window once (from a `Read` or [`StreamChunker::push`]); chunks are
/// handed out as slices of the window, valid until the next call. The bytes after the
/// last cut move to the window's front only when the window's tail is full.
///
/// Two ways to drive it:
/// - [`StreamChunker::next_chunk_from`] with a `Read`, until it returns `None`;
/// - [`StreamChunker::push`] input, draining [`StreamChunker::next_chunk`] whenever `push`
///   takes less than offered, then [`StreamChunker::finish`] and drain again.
pub struct StreamChunker {
    cutter: Cutter,
    window: Vec<u8>,
    /// Start of the current chunk in `window`.
    start: usize,
    /// End of the input held in `window`.
    end: usize,
    /// Length of the chunk handed out last; released at the next call.
    handed_out: usize,
    scan: ScanState,
    end_of_input: bool,
    read_buffer_bytes: usize,
    offset: u64,
}

impl StreamChunker {
    /// Default read size: 1 MiB.
    pub const READ_BUFFER_BYTES_DEFAULT: usize = 1 << 20;

    /// A chunker for `params` reading at most `read_buffer_bytes` per read (at least 4 KiB).
    pub fn new(params: &ChunkingParams, read_buffer_bytes: usize) -> Result<StreamChunker, Error> {
        let cutter = Cutter::new(params)?;
        let read_buffer_bytes = read_buffer_bytes.max(4 << 10);
        let scan = cutter.start();
        Ok(StreamChunker {
            window: vec![0; params.chunk_bytes_max as usize + read_buffer_bytes],
            cutter,
            start: 0,
            end: 0,
            handed_out: 0,
            scan,
            end_of_input: false,
            read_buffer_bytes,
            offset: 0,
        })
    }

    /// Bytes of memory the chunker holds (its window).
    pub fn memory_bytes(&self) -> usize {
        self.window.len()
    }

    /// Object offset of the chunk handed out last (0 before the first).
    pub fn chunk_offset(&self) -> u64 {
        self.offset
    }

    /// Starts a new object: forgets any input held and clears end-of-input.
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.handed_out = 0;
        self.scan = self.cutter.start();
        self.end_of_input = false;
        self.offset = 0;
    }

    fn release(&mut self) {
        self.start += self.handed_out;
        self.offset += self.handed_out as u64;
        self.handed_out = 0;
    }

    /// Makes room at the window's tail by moving the current chunk's bytes to the front,
    /// when the tail has less than a quarter read left.
    fn make_room(&mut self) {
        let free = self.window.len() - self.end;
        if free < self.read_buffer_bytes / 4 && self.start > 0 {
            self.window.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Length of the next chunk if it is certain now.
    fn find_cut(&mut self) -> Option<usize> {
        let found = self
            .cutter
            .resume(&self.window[self.start..self.end], &mut self.scan, self.end_of_input);
        match found {
            Some(0) | None => None,
            Some(length) => {
                self.scan = self.cutter.start();
                self.handed_out = length;
                Some(length)
            }
        }
    }

    /// Copies as much of `data` as fits and returns how many bytes it took. Fewer than
    /// offered (possibly 0) means a chunk is complete: drain [`StreamChunker::next_chunk`]
    /// and push the rest. Input after [`StreamChunker::finish`] is refused (returns 0).
    pub fn push(&mut self, data: &[u8]) -> usize {
        if self.end_of_input {
            return 0;
        }
        self.release();
        self.make_room();
        let taken = data.len().min(self.window.len() - self.end);
        self.window[self.end..self.end + taken].copy_from_slice(&data[..taken]);
        self.end += taken;
        taken
    }

    /// Declares the end of the pushed input; the remaining bytes become the last chunk.
    pub fn finish(&mut self) {
        self.end_of_input = true;
    }

    /// The next chunk of pushed input, if one is complete.
    pub fn next_chunk(&mut self) -> Option<&[u8]> {
        self.release();
        let length = self.find_cut()?;
        Some(&self.window[self.start..self.start + length])
    }

    /// The next chunk read from `reader`; `None` at the end of input. Reads of
    /// `ErrorKind::Interrupted` are retried; other read errors are returned.
    pub fn next_chunk_from<R: Read>(&mut self, reader: &mut R) -> Result<Option<&[u8]>, Error> {
        self.release();
        let length = loop {
            if let Some(length) = self.find_cut() {
                break length;
            }
            if self.end_of_input {
                return Ok(None);
            }
            self.make_room();
            let read_end = self.window.len().min(self.end + self.read_buffer_bytes);
            match reader.read(&mut self.window[self.end..read_end]) {
                Ok(0) => self.end_of_input = true,
                Ok(read) => self.end += read,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(Error::Io(error)),
            }
        };
        Ok(Some(&self.window[self.start..self.start + length]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pseudo_random(length: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..length)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    fn small_params() -> ChunkingParams {
        ChunkingParams {
            chunk_bytes_min: 2 << 10,
            chunk_bytes_avg: 8 << 10,
            chunk_bytes_max: 32 << 10,
            normalization_level: 1,
        }
    }

    fn crate_lengths(params: &ChunkingParams, data: &[u8]) -> Vec<usize> {
        chunk_slice(params, data).unwrap().map(<[u8]>::len).collect()
    }

    /// Pushes `data` in pieces of `piece` bytes and returns the chunk lengths.
    fn pushed_lengths(params: &ChunkingParams, data: &[u8], piece: usize, read: usize) -> Vec<usize> {
        let mut chunker = StreamChunker::new(params, read).unwrap();
        let mut lengths = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let end = piece.min(rest.len());
            let taken = chunker.push(&rest[..end]);
            rest = &rest[taken..];
            while let Some(chunk) = chunker.next_chunk() {
                lengths.push(chunk.len());
            }
        }
        chunker.finish();
        while let Some(chunk) = chunker.next_chunk() {
            lengths.push(chunk.len());
        }
        lengths
    }

    #[test]
    fn default_params_are_valid_and_bad_ones_rejected() {
        ChunkingParams::default().validate().unwrap();
        let mut bad = ChunkingParams::default();
        bad.chunk_bytes_min = bad.chunk_bytes_max + 1;
        assert!(matches!(bad.validate(), Err(Error::InvalidParams { .. })));
        let bad = ChunkingParams {
            chunk_bytes_max: 100 << 20,
            ..ChunkingParams::default()
        };
        assert!(bad.validate().is_err());
        let bad = ChunkingParams {
            normalization_level: 4,
            ..ChunkingParams::default()
        };
        assert!(bad.validate().is_err());
        assert!(StreamChunker::new(&bad, 1 << 20).is_err());
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let params = ChunkingParams::default();
        assert_eq!(chunk_slice(&params, &[]).unwrap().count(), 0);
        assert!(pushed_lengths(&params, &[], 1, 4096).is_empty());
        let mut chunker = StreamChunker::new(&params, 1 << 20).unwrap();
        assert!(chunker.next_chunk_from(&mut &[][..]).unwrap().is_none());
    }

    #[test]
    fn stream_matches_crate_on_default_params() {
        let params = ChunkingParams::default();
        let data = pseudo_random(24 << 20, 7);
        let expected = crate_lengths(&params, &data);
        assert!(expected.len() > 10);
        let mut chunker = StreamChunker::new(&params, 1 << 20).unwrap();
        // A reader that returns odd-sized reads.
        let mut reader = std::io::BufReader::with_capacity(123_457, &data[..]);
        let mut lengths = Vec::new();
        let mut rebuilt = Vec::new();
        while let Some(chunk) = chunker.next_chunk_from(&mut reader).unwrap() {
            lengths.push(chunk.len());
            rebuilt.extend_from_slice(chunk);
        }
        assert_eq!(lengths, expected);
        assert_eq!(rebuilt, data);
        assert!(chunker.memory_bytes() <= (4 << 20) + (1 << 20));
    }

    #[test]
    fn zeros_cut_at_max() {
        let params = small_params();
        let data = vec![0u8; 100 << 10];
        let lengths = pushed_lengths(&params, &data, 5000, 4096);
        assert_eq!(lengths, crate_lengths(&params, &data));
        assert_eq!(lengths[0], 32 << 10);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The resumable stream cutter finds exactly the crate's cut points, whatever the
        /// piece and read sizes.
        #[test]
        fn stream_cuts_equal_crate_cuts(
            seed in any::<u64>(),
            length in 0usize..400_000,
            piece in 1usize..70_000,
            read in 4096usize..40_000,
            level in 0u8..4,
        ) {
            let params = ChunkingParams { normalization_level: level, ..small_params() };
            let data = pseudo_random(length, seed);
            prop_assert_eq!(pushed_lengths(&params, &data, piece, read), crate_lengths(&params, &data));
        }

        /// Inserting bytes early in a file leaves most later boundaries where they were.
        #[test]
        fn boundaries_stable_under_early_insertion(
            seed in any::<u64>(),
            insert_at in 0usize..20_000,
            insert in proptest::collection::vec(any::<u8>(), 1..200),
        ) {
            let params = small_params();
            let data = pseudo_random(1 << 20, seed);
            let mut edited = data[..insert_at].to_vec();
            edited.extend_from_slice(&insert);
            edited.extend_from_slice(&data[insert_at..]);
            let ends = |data: &[u8]| {
                let mut end = 0;
                crate_lengths(&params, data).into_iter().map(|length| { end += length; end }).collect::<Vec<_>>()
            };
            let before = ends(&data);
            let after: std::collections::HashSet<usize> = ends(&edited).into_iter().collect();
            // Boundaries well after the insertion, shifted by its length.
            let later: Vec<usize> = before.iter().copied().filter(|&end| end > insert_at + (64 << 10)).collect();
            let kept = later.iter().filter(|&&end| after.contains(&(end + insert.len()))).count();
            prop_assert!(kept * 10 >= later.len() * 9, "kept {} of {}", kept, later.len());
        }
    }
}
