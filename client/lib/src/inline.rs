//! Inline small files (design §5): a file whose bytes all lie below
//! `NamespaceOptions::inline_bytes_max` (4 KiB by default) keeps them in its inode, sealed
//! under the tenant KEK ([`kiseki_pipeline::seal_inline`]), instead of in a chunk. A write
//! of such a file is one delta (no fragment writes), a read is the shard read alone.
//!
//! The shard stores a seal as opaque bytes and replaces it whole, so a writer merges:
//! it reads what the file holds below the bound, opens the old seal, writes its bytes over
//! it and proposes the new seal with the generation it read; a concurrent writer makes
//! the shard refuse (`PreconditionFailed`) and the writer reads again. A file with an
//! extent below the end of the write (it was large once) takes the chunk path instead.

use kiseki_namespace::{Attributes, Delta, FileKind, InodeId, Limit, NamespaceError, ReadPiece, SealedInline};

use crate::namespace::now;
use crate::{ClientError, Namespace, WriteSummary};

/// The scope inline seals are bound to: the tenant (through its KEK) and file data, not a
/// namespace's shard, which may change.
const INLINE_SCOPE: &[u8] = b"file";

/// Merge attempts before a write that keeps losing races takes the chunk path.
const INLINE_ATTEMPTS_MAX: usize = 8;

impl Namespace {
    /// Seals `plaintext` as a file's inline bytes.
    pub fn seal_inline(&self, plaintext: &[u8]) -> Result<SealedInline, ClientError> {
        let sealed = kiseki_pipeline::seal_inline(&self.keys().tenant.kek, INLINE_SCOPE, plaintext)?;
        Ok(SealedInline {
            length_bytes: plaintext.len() as u64,
            sealed,
        })
    }

    /// Opens inline bytes and returns `[offset_bytes, offset_bytes + length_bytes)` of
    /// them (`DataUnavailable` if the seal is short of that range, `Pipeline` if it does
    /// not open: wrong key, tampered, or shredded).
    pub fn open_inline(
        &self,
        data: &SealedInline,
        offset_bytes: u64,
        length_bytes: u64,
    ) -> Result<Vec<u8>, ClientError> {
        let mut plaintext = kiseki_pipeline::open_inline(&self.keys().tenant.kek, INLINE_SCOPE, &data.sealed)?;
        let end = offset_bytes
            .checked_add(length_bytes)
            .filter(|end| *end <= data.length_bytes && *end <= plaintext.len() as u64)
            .ok_or_else(|| ClientError::DataUnavailable("inline data is shorter than its file range".into()))?;
        plaintext.truncate(end as usize);
        plaintext.drain(..offset_bytes as usize);
        Ok(plaintext)
    }

    /// The bytes of a [`ReadPiece::Inline`] (opened and cut), `None` for other pieces.
    pub fn inline_piece(&self, piece: &ReadPiece) -> Result<Option<Vec<u8>>, ClientError> {
        match piece {
            ReadPiece::Inline {
                offset_bytes,
                length_bytes,
                data,
            } => self.open_inline(data, *offset_bytes, *length_bytes).map(Some),
            _ => Ok(None),
        }
    }

    /// Writes `data` at `offset_bytes` of the file `inode` as inline bytes when the file
    /// allows it (everything below the write's end is inline or a hole, and the end is
    /// within `inline_bytes_max`): `Ok(None)` when the write must go to chunks instead.
    /// `known` are the file's attributes if the caller has them; when they say the file
    /// is empty the merge needs no read.
    pub async fn write_inline(
        &self,
        inode: InodeId,
        offset_bytes: u64,
        data: &[u8],
        known: Option<&Attributes>,
    ) -> Result<Option<(WriteSummary, Attributes)>, ClientError> {
        let bound = self.options().inline_bytes_max as u64;
        let Some(end) = offset_bytes.checked_add(data.len() as u64) else {
            return Ok(None);
        };
        if data.is_empty() || end > bound {
            return Ok(None);
        }
        for attempt in 0..INLINE_ATTEMPTS_MAX {
            let (generation, mut plaintext) = match known {
                Some(attributes) if attempt == 0 && attributes.size_bytes == 0 && attributes.kind == FileKind::File => {
                    (attributes.generation, Vec::new())
                }
                _ => match self.inline_base(inode, end, bound).await? {
                    Some(base) => base,
                    None => return Ok(None),
                },
            };
            if plaintext.len() < end as usize {
                plaintext.resize(end as usize, 0);
            }
            plaintext[offset_bytes as usize..end as usize].copy_from_slice(data);
            let delta = Delta::WriteInline {
                inode,
                data: self.seal_inline(&plaintext)?,
                mtime: now(),
                expected_generation: Some(generation),
            };
            match self.propose(&delta).await {
                Ok((_, Some(attributes))) => {
                    let summary = WriteSummary {
                        inode,
                        bytes: data.len() as u64,
                        chunks: 0,
                    };
                    return Ok(Some((summary, attributes)));
                }
                Ok((_, None)) => {
                    return Err(ClientError::Invalid(
                        "an inline write answered without attributes".into(),
                    ))
                }
                Err(ClientError::Namespace(NamespaceError::PreconditionFailed)) => continue,
                // The shard's bound is lower than ours, or an extent arrived below the end
                // since the read: the chunk path handles both.
                Err(ClientError::Namespace(
                    NamespaceError::LimitExceeded {
                        limit: Limit::InlineBytes,
                    }
                    | NamespaceError::InvalidArgument { .. },
                )) => return Ok(None),
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    /// The file's generation and its inline plaintext (what a new seal starts from), or
    /// `None` if an extent starts below `end` (the write must go to chunks).
    async fn inline_base(&self, inode: InodeId, end: u64, bound: u64) -> Result<Option<(u64, Vec<u8>)>, ClientError> {
        let (attributes, pieces) = self.read_with_attributes(inode, 0, bound).await?;
        if attributes.kind != FileKind::File {
            // The chunk path's delta gets the shard's typed refusal.
            return Ok(None);
        }
        let mut base = Vec::new();
        for piece in &pieces {
            match piece {
                ReadPiece::Inline {
                    offset_bytes: 0,
                    length_bytes,
                    data,
                } => base = self.open_inline(data, 0, *length_bytes)?,
                ReadPiece::Extent { offset_bytes, .. } if *offset_bytes < end.max(base.len() as u64) => {
                    return Ok(None)
                }
                _ => {}
            }
        }
        Ok(Some((attributes.generation, base)))
    }
}
