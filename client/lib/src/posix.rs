//! Inode-addressed operations of a [`Namespace`], as a POSIX front end (the FUSE mount,
//! later the NFS gateway) calls them: every call names its directory by inode and its
//! entry by name, carries the caller's owner, and returns the attributes the shard
//! applied, so the front end can answer the kernel without a second round trip.

use std::time::Instant;

use kiseki_api::{ReadAnswer, ReadQuery, EXTENTS_READ_BYTES_MAX, READDIR_ENTRIES_MAX};
use kiseki_namespace::{
    AttrChanges, Attributes, CallerIds, Delta, DirEntry, FileKind, InodeId, NamespaceStats, NewAttributes, ReadPiece,
    RenameFlags, WatchEvent, XattrSetMode, MODE_EXECUTE, MODE_WRITE,
};

use crate::namespace::{now, unexpected};

/// The delta creating regular file `name` in `parent`.
fn create_delta(parent: InodeId, name: &[u8], attributes: NewAttributes, exclusive: bool) -> Delta {
    Delta::Create {
        parent,
        name: name.to_vec(),
        attributes,
        exclusive,
    }
}
use crate::{ClientError, Namespace};

/// Who creates an inode, and with which permission bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creator {
    /// Permission bits (the caller has applied its umask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Creator {
    fn attributes(self) -> NewAttributes {
        NewAttributes {
            mode: self.mode & kiseki_namespace::MODE_PERMISSION_BITS_MAX,
            uid: self.uid,
            gid: self.gid,
            time: now(),
        }
    }
}

/// Raw capacity of the cluster's devices, as `statfs` reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Bytes of every device that answered.
    pub total_bytes: u64,
    /// Bytes free on them.
    pub free_bytes: u64,
}

impl Namespace {
    /// Applies `delta` and returns the inode it names and its attributes (read back when
    /// the outcome carries none).
    async fn apply_for_inode(&self, delta: &Delta) -> Result<(InodeId, Attributes), ClientError> {
        let (inode, attributes) = self.propose(delta).await?;
        let inode = inode.ok_or_else(|| ClientError::Invalid("the shard answered without an inode".into()))?;
        match attributes {
            Some(attributes) => Ok((inode, attributes)),
            None => Ok((inode, self.getattr(inode).await?)),
        }
    }

    /// Creates the regular file `name` in `parent`; without `exclusive` an existing file
    /// there is returned as it is (`open(O_CREAT)`), with it that is `AlreadyExists`.
    pub async fn create_at(
        &self,
        parent: InodeId,
        name: &[u8],
        creator: Creator,
        exclusive: bool,
    ) -> Result<(InodeId, Attributes), ClientError> {
        self.apply_for_inode(&create_delta(parent, name, creator.attributes(), exclusive))
            .await
    }

    /// [`create_at`](Self::create_at) for `caller`, who must have write and search
    /// permission on `parent` (`AccessDenied` otherwise): checked by the shard when the
    /// create applies, so a gateway answering for many users needs no read of the
    /// directory before, and no change of its mode can slip in between.
    pub async fn create_as(
        &self,
        caller: CallerIds,
        parent: InodeId,
        name: &[u8],
        creator: Creator,
        exclusive: bool,
    ) -> Result<(InodeId, Attributes), ClientError> {
        self.create_as_at(caller, parent, name, creator.attributes(), exclusive)
            .await
    }

    /// [`create_as`](Self::create_as) with every attribute given, the birth time too
    /// (NFS's exclusive create stores its verifier there).
    pub async fn create_as_at(
        &self,
        caller: CallerIds,
        parent: InodeId,
        name: &[u8],
        attributes: NewAttributes,
        exclusive: bool,
    ) -> Result<(InodeId, Attributes), ClientError> {
        let delta = Delta::AsCaller {
            caller,
            directory: parent,
            mask: MODE_WRITE | MODE_EXECUTE,
            delta: Box::new(create_delta(parent, name, attributes, exclusive)),
        };
        self.apply_for_inode(&delta).await
    }

    /// Creates the directory `name` in `parent`.
    pub async fn mkdir_at(
        &self,
        parent: InodeId,
        name: &[u8],
        creator: Creator,
    ) -> Result<(InodeId, Attributes), ClientError> {
        let delta = Delta::Mkdir {
            parent,
            name: name.to_vec(),
            attributes: creator.attributes(),
        };
        self.apply_for_inode(&delta).await
    }

    /// Creates the symlink `name` in `parent`, pointing at `target`.
    pub async fn symlink_at(
        &self,
        parent: InodeId,
        name: &[u8],
        target: &[u8],
        creator: Creator,
    ) -> Result<(InodeId, Attributes), ClientError> {
        let delta = Delta::Symlink {
            parent,
            name: name.to_vec(),
            target: target.to_vec(),
            attributes: creator.attributes(),
        };
        self.apply_for_inode(&delta).await
    }

    /// Creates the named pipe, socket or device node `name` in `parent` (`mknod(2)`).
    pub async fn mknod_at(
        &self,
        parent: InodeId,
        name: &[u8],
        kind: FileKind,
        creator: Creator,
    ) -> Result<(InodeId, Attributes), ClientError> {
        let delta = Delta::Mknod {
            parent,
            name: name.to_vec(),
            kind,
            attributes: creator.attributes(),
        };
        self.apply_for_inode(&delta).await
    }

    /// Adds the name `name` in `parent` for `inode` (a hard link).
    pub async fn link_at(&self, inode: InodeId, parent: InodeId, name: &[u8]) -> Result<Attributes, ClientError> {
        let delta = Delta::Link {
            source_namespace: self.id(),
            inode,
            parent,
            name: name.to_vec(),
            ctime: now(),
        };
        let (_, attributes) = self.propose(&delta).await?;
        match attributes {
            Some(attributes) => Ok(attributes),
            None => self.getattr(inode).await,
        }
    }

    /// Removes the file or symlink name `name` of `parent`.
    pub async fn unlink_at(&self, parent: InodeId, name: &[u8]) -> Result<(), ClientError> {
        let delta = Delta::Unlink {
            parent,
            name: name.to_vec(),
            ctime: now(),
        };
        self.propose(&delta).await.map(|_| ())
    }

    /// Removes the empty directory `name` of `parent`.
    pub async fn rmdir_at(&self, parent: InodeId, name: &[u8]) -> Result<(), ClientError> {
        let delta = Delta::Rmdir {
            parent,
            name: name.to_vec(),
            ctime: now(),
        };
        self.propose(&delta).await.map(|_| ())
    }

    /// Renames `from_name` of `from_parent` to `to_name` of `to_parent`, atomically, as
    /// `renameat2(2)` with `flags`.
    pub async fn rename_at(
        &self,
        from_parent: InodeId,
        from_name: &[u8],
        to_parent: InodeId,
        to_name: &[u8],
        flags: RenameFlags,
    ) -> Result<(), ClientError> {
        let delta = Delta::Rename {
            source_namespace: self.id(),
            from_parent,
            from_name: from_name.to_vec(),
            to_parent,
            to_name: to_name.to_vec(),
            flags,
            ctime: now(),
        };
        self.propose(&delta).await.map(|_| ())
    }

    /// Changes attributes of `inode` (a size change truncates or extends with a hole).
    pub async fn setattr(&self, inode: InodeId, changes: AttrChanges) -> Result<Attributes, ClientError> {
        let delta = Delta::SetAttr {
            inode,
            changes,
            ctime: now(),
            guard: None,
        };
        let (_, attributes) = self.propose(&delta).await?;
        match attributes {
            Some(attributes) => Ok(attributes),
            None => self.getattr(inode).await,
        }
    }

    /// A symlink's target.
    pub async fn readlink(&self, inode: InodeId) -> Result<Vec<u8>, ClientError> {
        match self.read(&ReadQuery::ReadLink { inode }).await? {
            ReadAnswer::Bytes(target) => Ok(target),
            other => Err(unexpected(&other)),
        }
    }

    /// The value of the extended attribute `name` of `inode` (`NoData` if missing).
    pub async fn getxattr(&self, inode: InodeId, name: &[u8]) -> Result<Vec<u8>, ClientError> {
        let query = ReadQuery::GetXattr {
            inode,
            name: name.to_vec(),
        };
        match self.read(&query).await? {
            ReadAnswer::Bytes(value) => Ok(value),
            other => Err(unexpected(&other)),
        }
    }

    /// The names of `inode`'s extended attributes.
    pub async fn listxattr(&self, inode: InodeId) -> Result<Vec<Vec<u8>>, ClientError> {
        match self.read(&ReadQuery::ListXattr { inode }).await? {
            ReadAnswer::Names(names) => Ok(names),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets the extended attribute `name` of `inode`.
    pub async fn setxattr(
        &self,
        inode: InodeId,
        name: &[u8],
        value: &[u8],
        mode: XattrSetMode,
    ) -> Result<(), ClientError> {
        let delta = Delta::SetXattr {
            inode,
            name: name.to_vec(),
            value: value.to_vec(),
            mode,
            ctime: now(),
        };
        self.propose(&delta).await.map(|_| ())
    }

    /// Removes the extended attribute `name` of `inode` (`NoData` if missing).
    pub async fn removexattr(&self, inode: InodeId, name: &[u8]) -> Result<(), ClientError> {
        let delta = Delta::RemoveXattr {
            inode,
            name: name.to_vec(),
            ctime: now(),
        };
        self.propose(&delta).await.map(|_| ())
    }

    /// The directory holding directory `dir` (the root's is the root), with its
    /// attributes.
    pub async fn parent(&self, dir: InodeId) -> Result<(InodeId, Attributes), ClientError> {
        match self.read(&ReadQuery::Parent { dir }).await? {
            ReadAnswer::Entry { inode, attributes } => Ok((inode, attributes)),
            other => Err(unexpected(&other)),
        }
    }

    /// A directory's attributes and, if present, its entry `name` (inode and attributes),
    /// in one read.
    pub async fn lookup_in(
        &self,
        parent: InodeId,
        name: &[u8],
    ) -> Result<(Attributes, Option<(InodeId, Attributes)>), ClientError> {
        if let Some(cache) = self.metadata() {
            let now = Instant::now();
            let hit = cache
                .attributes(parent, now)
                .and_then(|directory| Some((directory, Some(cache.entry_with_attributes(parent, name, now)?))));
            cache.count(hit.is_some(), now);
            if let Some(hit) = hit {
                return Ok(hit);
            }
        }
        let query = ReadQuery::LookupIn {
            parent,
            name: name.to_vec(),
        };
        let asked = Instant::now();
        match self.read_at(&query).await? {
            (
                index,
                ReadAnswer::LookedUp {
                    parent: directory,
                    entry,
                },
            ) => {
                if let Some(cache) = self.metadata() {
                    let now = Instant::now();
                    cache.store_attributes(parent, &directory, index, asked, now);
                    if let Some((inode, attributes)) = &entry {
                        cache.store_entry_with_attributes(parent, name, (*inode, attributes), index, asked, now);
                    }
                }
                Ok((directory, entry))
            }
            (_, other) => Err(unexpected(&other)),
        }
    }

    /// A file's attributes and the pieces of `[offset_bytes, offset_bytes +
    /// length_bytes)`, in one read.
    pub async fn read_with_attributes(
        &self,
        inode: InodeId,
        offset_bytes: u64,
        length_bytes: u64,
    ) -> Result<(Attributes, Vec<ReadPiece>), ClientError> {
        let query = ReadQuery::Read {
            inode,
            offset_bytes,
            length_bytes,
        };
        match self.read(&query).await? {
            ReadAnswer::Read { attributes, pieces } => Ok((attributes, pieces)),
            other => Err(unexpected(&other)),
        }
    }

    /// Up to `limit` entries of `dir` after `after_cookie`, in cookie order.
    pub async fn read_dir_page(
        &self,
        dir: InodeId,
        after_cookie: u64,
        limit: u32,
    ) -> Result<Vec<DirEntry>, ClientError> {
        let query = ReadQuery::ReadDir {
            dir,
            after_cookie,
            limit: limit.min(READDIR_ENTRIES_MAX),
        };
        match self.read(&query).await? {
            ReadAnswer::Entries(entries) => Ok(entries),
            other => Err(unexpected(&other)),
        }
    }

    /// Up to `limit` entries of `dir` after `after_cookie`, with their attributes.
    pub async fn read_dir_plus(
        &self,
        dir: InodeId,
        after_cookie: u64,
        limit: u32,
    ) -> Result<Vec<(DirEntry, Attributes)>, ClientError> {
        let query = ReadQuery::ReadDirPlus {
            dir,
            after_cookie,
            limit: limit.min(READDIR_ENTRIES_MAX),
        };
        let asked = Instant::now();
        match self.read_at(&query).await? {
            (index, ReadAnswer::EntriesPlus(entries)) => {
                if let Some(cache) = self.metadata() {
                    let now = Instant::now();
                    for (entry, attributes) in &entries {
                        cache.store_entry_with_attributes(
                            dir,
                            &entry.name,
                            (entry.inode, attributes),
                            index,
                            asked,
                            now,
                        );
                    }
                }
                Ok(entries)
            }
            (_, other) => Err(unexpected(&other)),
        }
    }

    /// The pieces (inline bytes, extents, holes) of `[offset_bytes, offset_bytes +
    /// length_bytes)` of `inode`, cut at its size.
    pub async fn pieces(
        &self,
        inode: InodeId,
        offset_bytes: u64,
        length_bytes: u64,
    ) -> Result<Vec<ReadPiece>, ClientError> {
        let query = ReadQuery::Extents {
            inode,
            offset_bytes,
            length_bytes,
        };
        match self.read(&query).await? {
            ReadAnswer::Pieces(pieces) => Ok(pieces),
            other => Err(unexpected(&other)),
        }
    }

    /// Every piece of the first `size_bytes` of `inode` (cut at its size), read from the
    /// shard a window at a time.
    pub async fn all_pieces(&self, inode: InodeId, size_bytes: u64) -> Result<Vec<ReadPiece>, ClientError> {
        let mut pieces = Vec::new();
        let mut position = 0;
        while position < size_bytes {
            let window = self.pieces(inode, position, EXTENTS_READ_BYTES_MAX).await?;
            let Some(end) = window.last().map(ReadPiece::end_bytes) else {
                break;
            };
            pieces.extend(window);
            position = end;
        }
        Ok(pieces)
    }

    /// Up to `limit` watch events with a sequence at or above `sequence` (`WatchGap`
    /// when the shard no longer holds them all).
    pub async fn watch_since(&self, sequence: u64, limit: u32) -> Result<Vec<WatchEvent>, ClientError> {
        match self.read(&ReadQuery::WatchSince { sequence, limit }).await? {
            ReadAnswer::Events(events) => Ok(events),
            other => Err(unexpected(&other)),
        }
    }

    /// Counts of the namespace.
    pub async fn stats(&self) -> Result<NamespaceStats, ClientError> {
        match self.read(&ReadQuery::StatFs).await? {
            ReadAnswer::Stats(stats) => Ok(stats),
            other => Err(unexpected(&other)),
        }
    }

    /// The capacity of every device of the cluster that answers (a node that is down
    /// counts for nothing).
    pub async fn capacity(&self) -> Capacity {
        let client = self.client();
        let mut capacity = Capacity::default();
        for node in &client.map().nodes {
            for core in 0..usize::from(node.cores) {
                let Ok(reply) = client.devices(node.id, core).await else {
                    break;
                };
                for device in reply.devices.iter().filter(|device| device.failure.is_none()) {
                    capacity.total_bytes += device.total_bytes;
                    capacity.free_bytes += device.free_bytes;
                }
            }
        }
        capacity
    }
}
