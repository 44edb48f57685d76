//! [`Namespace`]: files and directories of one namespace, with client-side chunking,
//! encryption and erasure coding.
//!
//! **Write path** ([`Namespace::write_file`]): the input is read in pieces of at most
//! 1 MiB into a FastCDC window (bounded memory: the window plus the chunks in flight);
//! each chunk is keyed, sealed and encoded by the [`WritePipeline`], its fragments are
//! placed by rendezvous hashing over every device of the cluster and written to their
//! owner cores in parallel, and up to `chunks_in_flight_max` chunks are in flight at once.
//! Extents are committed to the file's shard in file order, in deltas of at most
//! `extents_per_delta_max` chunks, and only once every fragment they reference is durable
//! (I-L5): a crash before the commit leaves only unreferenced fragments.
//!
//! **Read path** ([`Namespace::read_file`]): the file's pieces come from its shard (a
//! linearizable read); each chunk is fetched data fragments first, with parity only
//! when a data fragment is missing (degraded read), verified, decoded and decrypted by
//! the [`ReadPipeline`]; the next chunks are fetched while one is decoded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiseki_api::{DeltaOutcome, ReadAnswer, ReadQuery, EXTENTS_READ_BYTES_MAX};
use kiseki_namespace::{
    Attributes, Delta, DirEntry, Extent, FileKind, InodeId, NamespaceError, NamespaceId, NewAttributes, ReadPiece,
    RenameFlags, Timestamp,
};
use kiseki_pipeline::{Durability, ReadPipeline, StreamChunker, WriteConfig, WritePipeline};
use kiseki_placement::place;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::chunk_record::ChunkRecord;
use crate::metadata::ShardMetadataCache;
use crate::{Client, ClientError, KeyMaterial};

/// Settings of a [`Namespace`].
#[derive(Clone, Copy, Debug)]
pub struct NamespaceOptions {
    /// Hash, durability and chunking of new chunks.
    pub write: WriteConfig,
    /// Chunks whose fragments are being written at once, per file.
    pub chunks_in_flight_max: usize,
    /// Chunks fetched ahead of the one being decoded, per file.
    pub chunks_read_ahead_max: usize,
    /// Extents one delta commits at most.
    pub extents_per_delta_max: usize,
    /// How long a chunk's last fragments may take once its write quorum is durable
    /// before the chunk is committed without them (degraded).
    pub straggler_ms: u64,
    /// Files whose bytes all lie below this keep them inline in the inode, sealed, rather
    /// than in chunks (design §5; the shard's `inline_bytes_max` bounds it too, and a
    /// write past the shard's bound falls back to chunks). 0 turns inline data off.
    pub inline_bytes_max: usize,
}

impl Default for NamespaceOptions {
    fn default() -> NamespaceOptions {
        NamespaceOptions {
            write: WriteConfig::default(),
            chunks_in_flight_max: 4,
            chunks_read_ahead_max: 4,
            extents_per_delta_max: 64,
            straggler_ms: 3_000,
            inline_bytes_max: 4096,
        }
    }
}

impl NamespaceOptions {
    /// The default options with `durability`.
    pub fn with_durability(durability: Durability) -> NamespaceOptions {
        let mut options = NamespaceOptions::default();
        options.write.durability = durability;
        options
    }
}

/// What a write stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    /// The file.
    pub inode: InodeId,
    /// Bytes written.
    pub bytes: u64,
    /// Chunks written.
    pub chunks: u64,
}

/// What a read returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadSummary {
    /// Bytes returned.
    pub bytes: u64,
    /// Chunks decoded.
    pub chunks: u64,
    /// Chunks that needed parity or another replica (a fragment was missing or corrupt).
    pub degraded_chunks: u64,
}

/// One namespace (for now: one shard, decision 0007) seen by one tenant.
#[derive(Clone)]
pub struct Namespace {
    client: Client,
    shard: u64,
    keys: Arc<KeyMaterial>,
    options: NamespaceOptions,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

/// Now, as the namespace stamps times.
pub(crate) fn now() -> Timestamp {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp::new(elapsed.as_secs() as i64, elapsed.subsec_nanos())
}

/// The components of an absolute or relative path; `.`, `..` and NUL are refused.
pub fn path_components(path: &str) -> Result<Vec<&[u8]>, ClientError> {
    let mut components = Vec::new();
    for component in path.split('/') {
        match component {
            "" => {}
            "." | ".." => {
                return Err(ClientError::Invalid(format!(
                    "{path}: `.` and `..` are not allowed in a path"
                )))
            }
            name if name.contains('\0') => return Err(ClientError::Invalid(format!("{path}: NUL in a name"))),
            name => components.push(name.as_bytes()),
        }
    }
    Ok(components)
}

pub(crate) fn applied(outcome: DeltaOutcome) -> Result<(Option<InodeId>, Option<Attributes>), ClientError> {
    match outcome {
        DeltaOutcome::Done { inode, attributes } => Ok((inode, attributes)),
        DeltaOutcome::UploadBegun { .. } => Ok((None, None)),
        DeltaOutcome::Refused(error) => Err(ClientError::Namespace(error)),
    }
}

impl Namespace {
    /// The namespace held by `shard`, read and written with `keys`.
    pub fn new(
        client: Client,
        shard: u64,
        keys: Arc<KeyMaterial>,
        options: NamespaceOptions,
    ) -> Result<Namespace, ClientError> {
        options.write.durability.validate()?;
        options.write.chunking.validate()?;
        if shard == 0 || shard > client.map().shards {
            return Err(ClientError::Invalid(format!(
                "namespace {shard} does not exist (the cluster has {})",
                client.map().shards
            )));
        }
        let fragments = options.write.durability.fragments_total();
        if client.pool().devices().len() < fragments {
            return Err(ClientError::Invalid(format!(
                "{:?} needs {fragments} devices; the cluster has {}",
                options.write.durability,
                client.pool().devices().len()
            )));
        }
        Ok(Namespace {
            client,
            shard,
            keys,
            options,
        })
    }

    /// Connects to the cluster at `seed` and opens the namespace held by `shard` with
    /// `keys`; new chunks get `durability`, or by default [`default_durability`] for the
    /// cluster's devices.
    pub async fn connect(
        seed: std::net::SocketAddr,
        shard: u64,
        keys: KeyMaterial,
        durability: Option<Durability>,
    ) -> Result<Namespace, ClientError> {
        Namespace::connect_with(seed, shard, keys, durability, crate::ClientOptions::default()).await
    }

    /// [`Self::connect`] through a client with `client_options`.
    pub async fn connect_with(
        seed: std::net::SocketAddr,
        shard: u64,
        keys: KeyMaterial,
        durability: Option<Durability>,
        client_options: crate::ClientOptions,
    ) -> Result<Namespace, ClientError> {
        let client = Client::connect(seed, client_options).await?;
        let durability = durability.unwrap_or_else(|| default_durability(client.pool().devices().len()));
        Namespace::new(
            client,
            shard,
            Arc::new(keys),
            NamespaceOptions::with_durability(durability),
        )
    }

    /// The client this namespace talks through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The options new chunks are written with.
    pub fn options(&self) -> &NamespaceOptions {
        &self.options
    }

    /// The key material this namespace seals and opens with.
    pub(crate) fn keys(&self) -> &KeyMaterial {
        &self.keys
    }

    /// The namespace's id as the shards know it.
    pub fn id(&self) -> NamespaceId {
        NamespaceId(self.shard)
    }

    /// Proposes `delta` to the namespace's shard: the inode it created or changed and
    /// that inode's attributes, or the shard's typed refusal (`ClientError::Namespace`).
    pub async fn propose(&self, delta: &Delta) -> Result<(Option<InodeId>, Option<Attributes>), ClientError> {
        let (_, outcome) = self.client.propose(self.shard, delta).await?;
        applied(outcome)
    }

    pub(crate) async fn read(&self, query: &ReadQuery) -> Result<ReadAnswer, ClientError> {
        Ok(self.read_at(query).await?.1)
    }

    /// [`Self::read`] with the log index the answer reflects.
    pub(crate) async fn read_at(&self, query: &ReadQuery) -> Result<(u64, ReadAnswer), ClientError> {
        match self.client.read_at(self.shard, query).await? {
            (_, ReadAnswer::Failed(error)) => Err(ClientError::Namespace(error)),
            answer => Ok(answer),
        }
    }

    /// The shard's metadata cache, when the client keeps one.
    pub(crate) fn metadata(&self) -> Option<&ShardMetadataCache> {
        self.client
            .metadata(self.shard)
            .filter(|cache| cache.options().enabled())
    }

    /// `lookup(parent, name)`.
    pub async fn lookup(&self, parent: InodeId, name: &[u8]) -> Result<(InodeId, Attributes), ClientError> {
        if let Some(cache) = self.metadata() {
            let now = Instant::now();
            let hit = cache.entry_with_attributes(parent, name, now);
            cache.count(hit.is_some(), now);
            if let Some(hit) = hit {
                return Ok(hit);
            }
        }
        let query = ReadQuery::Lookup {
            parent,
            name: name.to_vec(),
        };
        let asked = Instant::now();
        match self.read_at(&query).await? {
            (index, ReadAnswer::Entry { inode, attributes }) => {
                if let Some(cache) = self.metadata() {
                    cache.store_entry_with_attributes(parent, name, (inode, &attributes), index, asked, Instant::now());
                }
                Ok((inode, attributes))
            }
            (_, other) => Err(unexpected(&other)),
        }
    }

    /// The inode and attributes `path` names (the root for `/` or an empty path).
    pub async fn resolve(&self, path: &str) -> Result<(InodeId, Attributes), ClientError> {
        let mut inode = InodeId::ROOT;
        let mut attributes = self.getattr(inode).await?;
        for name in path_components(path)? {
            (inode, attributes) = self.lookup(inode, name).await?;
        }
        Ok((inode, attributes))
    }

    /// The directory holding `path`'s last component, and that component.
    async fn parent_of<'p>(&self, path: &'p str) -> Result<(InodeId, &'p [u8]), ClientError> {
        let components = path_components(path)?;
        let Some((name, parents)) = components.split_last() else {
            return Err(ClientError::Invalid(format!("{path}: names the root")));
        };
        let mut parent = InodeId::ROOT;
        for component in parents {
            let (inode, attributes) = self.lookup(parent, component).await?;
            if attributes.kind != FileKind::Directory {
                return Err(ClientError::Namespace(NamespaceError::NotDirectory));
            }
            parent = inode;
        }
        Ok((parent, name))
    }

    /// `getattr(inode)`.
    pub async fn getattr(&self, inode: InodeId) -> Result<Attributes, ClientError> {
        if let Some(cache) = self.metadata() {
            let now = Instant::now();
            let hit = cache.attributes(inode, now);
            cache.count(hit.is_some(), now);
            if let Some(hit) = hit {
                return Ok(hit);
            }
        }
        let asked = Instant::now();
        match self.read_at(&ReadQuery::GetAttr { inode }).await? {
            (index, ReadAnswer::Attributes(attributes)) => {
                if let Some(cache) = self.metadata() {
                    cache.store_attributes(inode, &attributes, index, asked, Instant::now());
                }
                Ok(attributes)
            }
            (_, other) => Err(unexpected(&other)),
        }
    }

    /// Creates the directory `path` (its parent must exist).
    pub async fn mkdir(&self, path: &str, mode: u32) -> Result<InodeId, ClientError> {
        let (parent, name) = self.parent_of(path).await?;
        let delta = Delta::Mkdir {
            parent,
            name: name.to_vec(),
            attributes: self.new_attributes(mode),
        };
        let (inode, _) = self.propose(&delta).await?;
        inode.ok_or_else(|| ClientError::Invalid("mkdir answered without an inode".into()))
    }

    /// Creates `path` and every missing directory above it; an existing directory is fine.
    pub async fn mkdir_all(&self, path: &str, mode: u32) -> Result<InodeId, ClientError> {
        let mut parent = InodeId::ROOT;
        for name in path_components(path)? {
            parent = match self.lookup(parent, name).await {
                Ok((inode, attributes)) if attributes.kind == FileKind::Directory => inode,
                Ok(_) => return Err(ClientError::Namespace(NamespaceError::NotDirectory)),
                Err(ClientError::Namespace(NamespaceError::NotFound)) => {
                    let delta = Delta::Mkdir {
                        parent,
                        name: name.to_vec(),
                        attributes: self.new_attributes(mode),
                    };
                    match self.propose(&delta).await {
                        Ok((Some(inode), _)) => inode,
                        // Made by someone else meanwhile.
                        Err(ClientError::Namespace(NamespaceError::AlreadyExists)) => {
                            self.lookup(parent, name).await?.0
                        }
                        Ok((None, _)) => return Err(ClientError::Invalid("mkdir answered without an inode".into())),
                        Err(error) => return Err(error),
                    }
                }
                Err(error) => return Err(error),
            };
        }
        Ok(parent)
    }

    /// The entries of the directory `path`, in cookie order.
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>, ClientError> {
        let (dir, attributes) = self.resolve(path).await?;
        if attributes.kind != FileKind::Directory {
            return Err(ClientError::Namespace(NamespaceError::NotDirectory));
        }
        self.client.read_dir(self.shard, dir).await
    }

    /// Removes the file, symlink or empty directory `path`.
    pub async fn remove(&self, path: &str) -> Result<(), ClientError> {
        let (parent, name) = self.parent_of(path).await?;
        let (_, attributes) = self.lookup(parent, name).await?;
        let delta = if attributes.kind == FileKind::Directory {
            Delta::Rmdir {
                parent,
                name: name.to_vec(),
                ctime: now(),
            }
        } else {
            Delta::Unlink {
                parent,
                name: name.to_vec(),
                ctime: now(),
            }
        };
        self.propose(&delta).await.map(|_| ())
    }

    /// Renames `from` to `to` (replacing a file there), atomically.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), ClientError> {
        let (from_parent, from_name) = self.parent_of(from).await?;
        let (to_parent, to_name) = self.parent_of(to).await?;
        self.rename_at(from_parent, from_name, to_parent, to_name, RenameFlags::default())
            .await
    }

    fn new_attributes(&self, mode: u32) -> NewAttributes {
        NewAttributes {
            mode,
            uid: 0,
            gid: 0,
            time: now(),
        }
    }

    /// Creates `path` (or opens the file there) and empties it; its attributes after.
    async fn create_empty(&self, path: &str, mode: u32) -> Result<(InodeId, Option<Attributes>), ClientError> {
        let (parent, name) = self.parent_of(path).await?;
        let delta = Delta::Create {
            parent,
            name: name.to_vec(),
            attributes: self.new_attributes(mode),
            exclusive: false,
        };
        let (inode, attributes) = self.propose(&delta).await?;
        let inode = inode.ok_or_else(|| ClientError::Invalid("create answered without an inode".into()))?;
        if attributes.as_ref().is_some_and(|attributes| attributes.size_bytes > 0) {
            let truncate = Delta::Truncate {
                inode,
                size_bytes: 0,
                mtime: now(),
                expected_generation: None,
            };
            let (_, attributes) = self.propose(&truncate).await?;
            return Ok((inode, attributes));
        }
        Ok((inode, attributes))
    }

    /// Writes everything `reader` yields to `path`, replacing what the file held.
    pub async fn write_file<R>(&self, path: &str, mut reader: R, mode: u32) -> Result<WriteSummary, ClientError>
    where
        R: AsyncRead + Unpin,
    {
        let (inode, attributes) = self.create_empty(path, mode).await?;
        let mut input = vec![0u8; 1 << 20];
        // Read past the inline bound first: a file that ends within it is stored inline.
        let bound = self.options.inline_bytes_max.min(input.len() - 1);
        let mut head = 0;
        let mut ended = false;
        while head <= bound && !ended {
            let read = reader.read(&mut input[head..]).await?;
            ended = read == 0;
            head += read;
        }
        if ended && head > 0 {
            if let Some((summary, _)) = self.write_inline(inode, 0, &input[..head], attributes.as_ref()).await? {
                return Ok(summary);
            }
        }
        let mut writer = FileWriter::new(self, inode, 0)?;
        writer.push(&input[..head]).await?;
        if !ended {
            loop {
                let read = reader.read(&mut input).await?;
                if read == 0 {
                    break;
                }
                writer.push(&input[..read]).await?;
            }
        }
        writer.finish().await
    }

    /// Writes `data` at `offset_bytes` of the file `inode` and commits it: inline when the
    /// file allows it ([`Namespace::write_inline`]), else chunked, sealed and encoded as
    /// [`Namespace::write_file`] does. The file grows to at least the end of the range,
    /// and what the range covered before is replaced.
    pub async fn write_at(&self, inode: InodeId, offset_bytes: u64, data: &[u8]) -> Result<WriteSummary, ClientError> {
        if let Some((summary, _)) = self.write_inline(inode, offset_bytes, data, None).await? {
            return Ok(summary);
        }
        self.write_chunks_at(inode, offset_bytes, data).await
    }

    /// [`Namespace::write_at`] without the inline attempt: the bytes go to chunks.
    pub async fn write_chunks_at(
        &self,
        inode: InodeId,
        offset_bytes: u64,
        data: &[u8],
    ) -> Result<WriteSummary, ClientError> {
        let mut writer = FileWriter::new(self, inode, offset_bytes)?;
        for piece in data.chunks(1 << 20) {
            writer.push(piece).await?;
        }
        writer.finish().await
    }

    /// Appends `data` at the end of the file `inode` as it is when the append commits
    /// (`O_APPEND`): appends from other writers never overwrite it, nor it them. The
    /// bytes land contiguously when their extents fit in one delta
    /// (`extents_per_delta_max`), else in that many contiguous runs, in order.
    pub async fn append(&self, inode: InodeId, data: &[u8]) -> Result<WriteSummary, ClientError> {
        let mut writer = FileWriter::new(self, inode, 0)?;
        writer.append = true;
        for piece in data.chunks(1 << 20) {
            writer.push(piece).await?;
        }
        writer.finish().await
    }

    /// The whole plaintext of the chunk an extent points into (fetched, verified,
    /// decoded and decrypted); the extent's bytes are
    /// `[chunk_offset_bytes, chunk_offset_bytes + length_bytes)` of it.
    pub async fn load_chunk(&self, extent: &Extent) -> Result<Vec<u8>, ClientError> {
        let fragments = self.fetch_fragments(extent).await?;
        self.decode_fragments(extent, &fragments)
    }

    /// The sealed fragments of the chunk an extent points into, as the nodes hold them
    /// (ciphertext; a slot per fragment index, `None` where none was fetched): the ones a
    /// healthy read decodes from, more when some of those are missing.
    pub async fn fetch_fragments(&self, extent: &Extent) -> Result<Vec<Option<Vec<u8>>>, ClientError> {
        let record = ChunkRecord::decode(extent.chunk_locator, &extent.wrapped_key)?;
        Ok(fetch_chunk(self.client.clone(), record).await)
    }

    /// The whole plaintext of the chunk an extent points into, decoded from `fragments`
    /// (from [`Namespace::fetch_fragments`] or a cache of them): verified and decrypted.
    pub fn decode_fragments(&self, extent: &Extent, fragments: &[Option<Vec<u8>>]) -> Result<Vec<u8>, ClientError> {
        let record = ChunkRecord::decode(extent.chunk_locator, &extent.wrapped_key)?;
        let mut reader = ChunkReader::new(self);
        reader.decode(&record, fragments, &mut ReadSummary::default())?;
        Ok(reader.plaintext)
    }

    /// Writes the whole file `path` to `out`.
    pub async fn read_file<W>(&self, path: &str, out: &mut W) -> Result<ReadSummary, ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        let (inode, attributes) = self.resolve(path).await?;
        if attributes.kind == FileKind::Directory {
            return Err(ClientError::Namespace(NamespaceError::IsDirectory));
        }
        self.read_range(inode, 0, attributes.size_bytes, out).await
    }

    /// Writes `[offset_bytes, offset_bytes + length_bytes)` of `inode` (cut at its size)
    /// to `out`: holes as zeros.
    pub async fn read_range<W>(
        &self,
        inode: InodeId,
        offset_bytes: u64,
        length_bytes: u64,
        out: &mut W,
    ) -> Result<ReadSummary, ClientError>
    where
        W: AsyncWrite + Unpin,
    {
        let mut reader = ChunkReader::new(self);
        let end = offset_bytes.saturating_add(length_bytes);
        let mut position = offset_bytes;
        let mut summary = ReadSummary::default();
        while position < end {
            let query = ReadQuery::Extents {
                inode,
                offset_bytes: position,
                length_bytes: (end - position).min(EXTENTS_READ_BYTES_MAX),
            };
            let pieces = match self.read(&query).await? {
                ReadAnswer::Pieces(pieces) => pieces,
                other => return Err(unexpected(&other)),
            };
            let Some(last_end) = pieces.last().map(ReadPiece::end_bytes) else {
                break;
            };
            reader.write_pieces(pieces, out, &mut summary).await?;
            position = last_end;
        }
        out.flush().await?;
        Ok(summary)
    }
}

pub(crate) fn unexpected(answer: &ReadAnswer) -> ClientError {
    ClientError::Invalid(format!("unexpected answer from the shard: {answer:?}"))
}

/// A chunk whose fragments are being written.
type ChunkWrite = JoinHandle<Result<Extent, ClientError>>;

/// Streams one file's bytes into chunks, fragments and extent commits.
pub(crate) struct FileWriter<'n> {
    namespace: &'n Namespace,
    inode: InodeId,
    chunker: StreamChunker,
    pipeline: WritePipeline,
    in_flight: VecDeque<ChunkWrite>,
    /// Extents durable but not yet committed, starting at file offset `committed_bytes`.
    uncommitted: Vec<Extent>,
    committed_bytes: u64,
    written_bytes: u64,
    chunks: u64,
    /// Commit as appends at the file's end, wherever it is then.
    append: bool,
    /// Keep durable extents here instead of committing them (objects: the gateway commits
    /// them whole in one delta).
    collected: Option<Vec<Extent>>,
}

impl<'n> FileWriter<'n> {
    pub(crate) fn new(
        namespace: &'n Namespace,
        inode: InodeId,
        offset_bytes: u64,
    ) -> Result<FileWriter<'n>, ClientError> {
        let config = namespace.options.write;
        Ok(FileWriter {
            namespace,
            inode,
            chunker: StreamChunker::new(&config.chunking, StreamChunker::READ_BUFFER_BYTES_DEFAULT)?,
            pipeline: WritePipeline::new(config)?,
            in_flight: VecDeque::new(),
            uncommitted: Vec::new(),
            committed_bytes: offset_bytes,
            written_bytes: 0,
            chunks: 0,
            append: false,
            collected: None,
        })
    }

    pub(crate) async fn push(&mut self, mut data: &[u8]) -> Result<(), ClientError> {
        while !data.is_empty() {
            let taken = self.chunker.push(data);
            data = &data[taken..];
            self.drain_chunks().await?;
        }
        Ok(())
    }

    pub(crate) async fn finish(mut self) -> Result<WriteSummary, ClientError> {
        self.flush_all().await?;
        Ok(self.summary())
    }

    /// Finishes a collecting writer: the extents of everything pushed, end to end, every
    /// one durable, none committed.
    pub(crate) async fn finish_collected(mut self) -> Result<(Vec<Extent>, WriteSummary), ClientError> {
        self.collected.get_or_insert_with(Vec::new);
        self.flush_all().await?;
        let summary = self.summary();
        Ok((self.collected.take().unwrap_or_default(), summary))
    }

    async fn flush_all(&mut self) -> Result<(), ClientError> {
        self.chunker.finish();
        self.drain_chunks().await?;
        while let Some(write) = self.in_flight.pop_front() {
            self.chunk_durable(write).await?;
        }
        self.commit().await
    }

    fn summary(&self) -> WriteSummary {
        WriteSummary {
            inode: self.inode,
            bytes: self.written_bytes,
            chunks: self.chunks,
        }
    }

    /// Makes this writer keep its extents for [`FileWriter::finish_collected`].
    pub(crate) fn collect(&mut self) {
        self.collected = Some(Vec::new());
    }

    /// Encodes every complete chunk and starts writing its fragments.
    async fn drain_chunks(&mut self) -> Result<(), ClientError> {
        loop {
            if self.in_flight.len() >= self.namespace.options.chunks_in_flight_max.max(1) {
                if let Some(write) = self.in_flight.pop_front() {
                    self.chunk_durable(write).await?;
                }
            }
            let keys = &self.namespace.keys;
            let Some(chunk) = self.chunker.next_chunk() else {
                return Ok(());
            };
            let system_key = keys
                .system
                .current()
                .ok_or_else(|| ClientError::Keys("no system key to seal new chunks with".into()))?;
            let hash = self.pipeline.config().hash;
            let encoded = self.pipeline.encode_chunk(chunk, &keys.tenant, system_key)?;
            let record = ChunkRecord {
                chunk: encoded.chunk_ref(),
                durability: encoded.durability(),
                hash,
            };
            let fragments: Vec<Vec<u8>> = encoded.fragments().map(|fragment| fragment.to_vec()).collect();
            self.written_bytes += u64::from(record.chunk.chunk_bytes);
            self.chunks += 1;
            let client = self.namespace.client.clone();
            let straggler_ms = self.namespace.options.straggler_ms;
            self.in_flight.push_back(tokio::spawn(async move {
                write_chunk(client, record, fragments, straggler_ms).await
            }));
        }
    }

    /// Waits for a chunk's fragments; commits when a delta's worth of extents is durable.
    async fn chunk_durable(&mut self, write: ChunkWrite) -> Result<(), ClientError> {
        let extent = write
            .await
            .map_err(|error| ClientError::Invalid(format!("chunk writer task: {error}")))??;
        self.uncommitted.push(extent);
        if self.uncommitted.len() >= self.namespace.options.extents_per_delta_max.max(1) {
            self.commit().await?;
        }
        Ok(())
    }

    /// Commits the durable extents not yet committed, in file order (I-L5: every
    /// fragment they reference is durable).
    async fn commit(&mut self) -> Result<(), ClientError> {
        if self.uncommitted.is_empty() {
            return Ok(());
        }
        let extents = std::mem::take(&mut self.uncommitted);
        if let Some(collected) = &mut self.collected {
            collected.extend(extents);
            return Ok(());
        }
        let length: u64 = extents.iter().map(|extent| extent.length_bytes).sum();
        if self.append {
            let delta = Delta::AppendExtents {
                inode: self.inode,
                extents,
                mtime: now(),
            };
            self.namespace.propose(&delta).await?;
            return Ok(());
        }
        let delta = Delta::WriteExtents {
            inode: self.inode,
            offset_bytes: self.committed_bytes,
            extents,
            size_bytes: self.committed_bytes + length,
            mtime: now(),
            expected_generation: None,
        };
        self.namespace.propose(&delta).await?;
        self.committed_bytes += length;
        Ok(())
    }
}

/// Parses `3x` or `4+2`.
pub fn parse_durability(text: &str) -> Result<Durability, String> {
    let durability = if let Some(copies) = text.strip_suffix('x') {
        Durability::Replicas(copies.parse().map_err(|_| format!("{text}: expected Nx or K+M"))?)
    } else if let Some((data, parity)) = text.split_once('+') {
        Durability::ErasureCoded {
            data: data.parse().map_err(|_| format!("{text}: expected Nx or K+M"))?,
            parity: parity.parse().map_err(|_| format!("{text}: expected Nx or K+M"))?,
        }
    } else {
        return Err(format!("{text}: expected Nx or K+M"));
    };
    durability.validate().map_err(|error| error.to_string())?;
    Ok(durability)
}

/// The default durability for a cluster of `devices` devices.
pub fn default_durability(devices: usize) -> Durability {
    if devices >= 6 {
        Durability::ErasureCoded { data: 4, parity: 2 }
    } else {
        Durability::Replicas(devices.clamp(1, 3) as u8)
    }
}

/// Fragments of a chunk that must be durable before its extent may be committed: every
/// fragment but those the code can lose while keeping one spare for erasure coding with
/// fewer parity than data fragments (`k` of `k+m`, as MinIO's write quorum), `k+1` when
/// parity is as large as the data, and a majority of replicas.
pub fn write_quorum(durability: Durability) -> usize {
    match durability {
        Durability::Replicas(copies) => usize::from(copies) / 2 + 1,
        Durability::ErasureCoded { data, parity } if parity < data => usize::from(data),
        Durability::ErasureCoded { data, .. } => usize::from(data) + 1,
    }
}

/// Writes every fragment of one chunk to its device, in parallel; the extent once they
/// are all durable, or once the write quorum is and the others did not follow within
/// `straggler_ms` (a node down: the chunk is then degraded until `kiseki repair`).
async fn write_chunk(
    client: Client,
    record: ChunkRecord,
    fragments: Vec<Vec<u8>>,
    straggler_ms: u64,
) -> Result<Extent, ClientError> {
    let locator = record.chunk.locator;
    let total = fragments.len();
    let quorum = write_quorum(record.durability).min(total);
    let placement = place(client.pool(), &locator, total)?;
    let mut puts = tokio::task::JoinSet::new();
    for (index, fragment) in fragments.into_iter().enumerate() {
        let device = placement
            .device(index)
            .ok_or_else(|| ClientError::Invalid("placement has fewer devices than fragments".into()))?;
        let client = client.clone();
        puts.spawn(async move { client.put_fragment(device.0, &locator.0, fragment).await });
    }
    let mut durable = 0;
    let mut first_failure = None;
    let mut stragglers_until = None;
    loop {
        let next = match stragglers_until {
            None => puts.join_next().await,
            Some(until) => match tokio::time::timeout_at(until, puts.join_next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        let Some(result) = next else { break };
        match result {
            Ok(Ok(())) => durable += 1,
            Ok(Err(error)) => {
                first_failure.get_or_insert(error);
            }
            Err(error) => {
                first_failure.get_or_insert(ClientError::Invalid(format!("fragment writer task: {error}")));
            }
        }
        if durable + puts.len() < quorum {
            break;
        }
        if durable >= quorum && stragglers_until.is_none() {
            stragglers_until = Some(tokio::time::Instant::now() + Duration::from_millis(straggler_ms));
        }
    }
    // A put still running may yet land: the fragment is then simply present.
    puts.abort_all();
    if durable < quorum {
        return Err(first_failure
            .unwrap_or_else(|| ClientError::Unavailable(format!("{durable} of {total} fragments written"))));
    }
    if durable < total {
        tracing::warn!(
            chunk = %locator,
            durable,
            total,
            "chunk written degraded: a device did not answer; `kiseki repair` restores it"
        );
    }
    Ok(Extent {
        chunk_locator: locator.0,
        wrapped_key: record.encode(),
        chunk_offset_bytes: 0,
        length_bytes: u64::from(record.chunk.chunk_bytes),
    })
}

/// The fragments of one chunk as fetched: one slot per fragment index.
type FetchedChunk = JoinHandle<Vec<Option<Vec<u8>>>>;

/// Reads chunks for one file: fetches ahead, decodes one at a time.
struct ChunkReader<'n> {
    namespace: &'n Namespace,
    pipeline: ReadPipeline,
    plaintext: Vec<u8>,
    /// Locator of the chunk now in `plaintext`.
    decoded: Option<[u8; 32]>,
}

impl<'n> ChunkReader<'n> {
    fn new(namespace: &'n Namespace) -> ChunkReader<'n> {
        ChunkReader {
            namespace,
            pipeline: ReadPipeline::new(namespace.options.write.hash),
            plaintext: Vec::new(),
            decoded: None,
        }
    }

    async fn write_pieces<W: AsyncWrite + Unpin>(
        &mut self,
        pieces: Vec<ReadPiece>,
        out: &mut W,
        summary: &mut ReadSummary,
    ) -> Result<(), ClientError> {
        let ahead = self.namespace.options.chunks_read_ahead_max.max(1);
        let mut fetches: VecDeque<FetchedChunk> = VecDeque::new();
        let mut next_fetch = 0usize;
        let extents: Vec<Option<ChunkRecord>> = pieces
            .iter()
            .map(|piece| match piece {
                ReadPiece::Extent { extent, .. } => {
                    ChunkRecord::decode(extent.chunk_locator, &extent.wrapped_key).map(Some)
                }
                _ => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        for (index, piece) in pieces.iter().enumerate() {
            // Keep `ahead` fetches running for the extents at and after this piece.
            while next_fetch < pieces.len() && fetches.len() < ahead {
                if let Some(record) = extents[next_fetch] {
                    fetches.push_back(tokio::spawn(fetch_chunk(self.namespace.client.clone(), record)));
                }
                next_fetch += 1;
            }
            match piece {
                ReadPiece::Inline { .. } => {
                    let bytes = self.namespace.inline_piece(piece)?.unwrap_or_default();
                    out.write_all(&bytes).await?;
                    summary.bytes += bytes.len() as u64;
                }
                ReadPiece::Hole { length_bytes, .. } => {
                    write_zeros(out, *length_bytes).await?;
                    summary.bytes += length_bytes;
                }
                ReadPiece::Extent { extent, .. } => {
                    let Some(record) = extents[index] else { continue };
                    let fetched = fetches
                        .pop_front()
                        .ok_or_else(|| ClientError::Invalid("read-ahead lost a chunk".into()))?
                        .await
                        .map_err(|error| ClientError::Invalid(format!("fragment reader task: {error}")))?;
                    self.decode(&record, &fetched, summary)?;
                    let start = extent.chunk_offset_bytes as usize;
                    let end = start + extent.length_bytes as usize;
                    let bytes = self
                        .plaintext
                        .get(start..end)
                        .ok_or_else(|| ClientError::DataUnavailable("an extent reaches past its chunk".into()))?;
                    out.write_all(bytes).await?;
                    summary.bytes += extent.length_bytes;
                }
            }
        }
        Ok(())
    }

    fn decode(
        &mut self,
        record: &ChunkRecord,
        fetched: &[Option<Vec<u8>>],
        summary: &mut ReadSummary,
    ) -> Result<(), ClientError> {
        let locator = record.chunk.locator.0;
        if self.decoded == Some(locator) {
            return Ok(());
        }
        self.decoded = None;
        self.plaintext.resize(record.chunk.chunk_bytes as usize, 0);
        let slots: Vec<Option<&[u8]>> = fetched.iter().map(|fragment| fragment.as_deref()).collect();
        let keys = &self.namespace.keys;
        let outcome = self
            .pipeline
            .read_chunk(
                &record.chunk,
                record.durability,
                &keys.tenant,
                &keys.system,
                &slots,
                &mut self.plaintext,
            )
            .map_err(|error| match error {
                kiseki_pipeline::Error::TooManyLost { .. } => {
                    ClientError::DataUnavailable(format!("chunk {}: {error}", record.chunk.locator))
                }
                other => ClientError::Pipeline(other),
            })?;
        summary.chunks += 1;
        if outcome.degraded {
            summary.degraded_chunks += 1;
        }
        self.decoded = Some(locator);
        Ok(())
    }
}

/// Fetches the fragments of one chunk: the ones a healthy read decodes from first (the
/// data fragments, or the first replica), the others only if some of those are missing.
async fn fetch_chunk(client: Client, record: ChunkRecord) -> Vec<Option<Vec<u8>>> {
    let total = record.durability.fragments_total();
    let needed = record.durability.fragments_needed();
    let mut slots: Vec<Option<Vec<u8>>> = vec![None; total];
    let Ok(placement) = place(client.pool(), &record.chunk.locator, total) else {
        return slots;
    };
    let locator = record.chunk.locator.0;
    let fetch = |indexes: Vec<usize>| {
        let mut gets = tokio::task::JoinSet::new();
        for index in indexes {
            if let Some(device) = placement.device(index) {
                let client = client.clone();
                gets.spawn(async move { (index, client.get_fragment(device.0, &locator).await) });
            }
        }
        gets
    };
    let mut gets = fetch((0..needed).collect());
    while let Some(Ok((index, fragment))) = gets.join_next().await {
        slots[index] = fragment;
    }
    // Too few: the others, then (a node restarting, a core shedding load) the missing
    // ones again after a pause, a few times, before the chunk counts as unavailable.
    for pause_ms in [0u64, 200, 600, 1_500] {
        let missing: Vec<usize> = (0..total).filter(|index| slots[*index].is_none()).collect();
        if total - missing.len() >= needed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
        let mut gets = fetch(missing);
        while let Some(Ok((index, fragment))) = gets.join_next().await {
            slots[index] = fragment;
        }
    }
    slots
}

async fn write_zeros<W: AsyncWrite + Unpin>(out: &mut W, mut length: u64) -> Result<(), ClientError> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    while length > 0 {
        let step = length.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..step]).await?;
        length -= step as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_quorum_keeps_the_chunk_readable() {
        let ec = |data, parity| Durability::ErasureCoded { data, parity };
        assert_eq!(write_quorum(ec(4, 2)), 4);
        assert_eq!(write_quorum(ec(8, 3)), 8);
        assert_eq!(write_quorum(ec(2, 2)), 3);
        assert_eq!(write_quorum(ec(1, 1)), 2);
        assert_eq!(write_quorum(Durability::Replicas(1)), 1);
        assert_eq!(write_quorum(Durability::Replicas(2)), 2);
        assert_eq!(write_quorum(Durability::Replicas(3)), 2);
        for data in 1..=16u8 {
            for parity in 0..=4u8 {
                let durability = ec(data, parity);
                let quorum = write_quorum(durability);
                assert!(quorum >= durability.fragments_needed(), "{durability:?}");
                assert!(quorum <= durability.fragments_total(), "{durability:?}");
            }
        }
    }
}
