//! What the S3 gateway needs beyond files: data stored as extents without a commit (an
//! object's bytes become visible only with the one delta that names them), S3 metadata,
//! multipart uploads and parts, and directory listings in name order.

use kiseki_api::{DeltaOutcome, ListedEntry, NameBound, ReadAnswer, ReadQuery};
use kiseki_namespace::{Delta, Extent, InodeId, ObjectMeta, PartInfo, UploadId, UploadInfo};

use crate::namespace::{unexpected, FileWriter};
use crate::{ClientError, Namespace};

/// Streams bytes into sealed, durable chunks and hands back their extents, uncommitted:
/// the caller commits them in one delta (`ObjectPut`, `MultipartPart`). Memory is bounded
/// by the chunker's window and the chunks in flight, whatever the object's size. Dropped
/// before [`ObjectWriter::finish`], it leaves only unreferenced fragments, which garbage
/// collection reclaims.
pub struct ObjectWriter<'n> {
    writer: FileWriter<'n>,
}

/// What an [`ObjectWriter`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredData {
    /// The data, end to end from offset 0.
    pub extents: Vec<Extent>,
    /// Bytes stored.
    pub bytes: u64,
    /// Chunks written.
    pub chunks: u64,
}

impl ObjectWriter<'_> {
    /// Adds the next bytes of the object.
    pub async fn push(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.writer.push(data).await
    }

    /// Waits until every chunk is durable and returns the extents.
    pub async fn finish(self) -> Result<StoredData, ClientError> {
        let (extents, summary) = self.writer.finish_collected().await?;
        Ok(StoredData {
            extents,
            bytes: summary.bytes,
            chunks: summary.chunks,
        })
    }
}

impl Namespace {
    /// A writer of object data (chunked, sealed and encoded as files are).
    pub fn object_writer(&self) -> Result<ObjectWriter<'_>, ClientError> {
        let mut writer = FileWriter::new(self, InodeId::ROOT, 0)?;
        writer.collect();
        Ok(ObjectWriter { writer })
    }

    /// Up to `limit` entries of `dir` whose names start with `prefix`, in byte order of
    /// the names, from `start`, with their attributes and ETags.
    pub async fn list_names(
        &self,
        dir: InodeId,
        prefix: &[u8],
        start: NameBound,
        limit: u32,
    ) -> Result<Vec<ListedEntry>, ClientError> {
        let query = ReadQuery::ListNames {
            dir,
            prefix: prefix.to_vec(),
            start,
            limit,
        };
        match self.read(&query).await? {
            ReadAnswer::Listing(entries) => Ok(entries),
            other => Err(unexpected(&other)),
        }
    }

    /// The S3 metadata of a file (`None` for one not written as an object).
    pub async fn object_meta(&self, inode: InodeId) -> Result<Option<ObjectMeta>, ClientError> {
        match self.read(&ReadQuery::ObjectMeta { inode }).await? {
            ReadAnswer::Object(meta) => Ok(meta),
            other => Err(unexpected(&other)),
        }
    }

    /// Applies a `MultipartBegin` and returns the new upload's id.
    pub async fn begin_upload(&self, delta: &Delta) -> Result<UploadId, ClientError> {
        if !matches!(delta, Delta::MultipartBegin { .. }) {
            return Err(ClientError::Invalid("begin_upload takes a MultipartBegin".into()));
        }
        match self.client().propose(self.id().0, delta).await?.1 {
            DeltaOutcome::UploadBegun { upload_id } => Ok(upload_id),
            DeltaOutcome::Refused(error) => Err(ClientError::Namespace(error)),
            other => Err(ClientError::Invalid(format!("a multipart begin answered {other:?}"))),
        }
    }

    /// Up to `limit` multipart uploads in progress with an id above `after`.
    pub async fn uploads(&self, after: Option<UploadId>, limit: u32) -> Result<Vec<UploadInfo>, ClientError> {
        match self.read(&ReadQuery::Uploads { after, limit }).await? {
            ReadAnswer::Uploads(uploads) => Ok(uploads),
            other => Err(unexpected(&other)),
        }
    }

    /// Up to `limit` parts of an upload with a number above `after_part`.
    pub async fn parts(&self, upload_id: UploadId, after_part: u32, limit: u32) -> Result<Vec<PartInfo>, ClientError> {
        let query = ReadQuery::Parts {
            upload_id,
            after_part,
            limit,
        };
        match self.read(&query).await? {
            ReadAnswer::Parts(parts) => Ok(parts),
            other => Err(unexpected(&other)),
        }
    }

    /// Every part of an upload, in part-number order.
    pub async fn all_parts(&self, upload_id: UploadId) -> Result<Vec<PartInfo>, ClientError> {
        let mut parts: Vec<PartInfo> = Vec::new();
        loop {
            let after = parts.last().map_or(0, |part| part.part_number);
            let page = self.parts(upload_id, after, kiseki_api::READDIR_ENTRIES_MAX).await?;
            if page.is_empty() {
                return Ok(parts);
            }
            parts.extend(page);
        }
    }
}
