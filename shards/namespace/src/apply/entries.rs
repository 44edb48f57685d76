//! Create, mkdir, symlink, link, unlink and rmdir.

use crate::apply::Context;
use crate::error::{Limit, NamespaceError};
use crate::tables::{DirectoryBody, InodeBody, InodeRecord, Tables, READDIR_COOKIE_FIRST};
use crate::types::{validate_name, FileKind, InodeId, NewAttributes, Timestamp};
use crate::watch::WatchKind;

/// The kind of inode a create makes.
pub(crate) enum NewNode<'a> {
    File { exclusive: bool },
    Directory,
    Symlink { target: &'a [u8] },
    Special { kind: FileKind },
}

impl Tables {
    /// Create, mkdir and symlink.
    pub(crate) fn create(
        &mut self,
        cx: &mut Context<'_>,
        parent: InodeId,
        name: &[u8],
        attributes: &NewAttributes,
        node: NewNode<'_>,
    ) -> Result<(), NamespaceError> {
        validate_name(name)?;
        attributes.validate()?;
        if let NewNode::Special { kind } = node {
            if !kind.is_special() {
                return Err(NamespaceError::invalid(
                    "mknod makes pipes, sockets and device nodes only",
                ));
            }
        }
        if let NewNode::Symlink { target } = node {
            if target.len() > cx.config.symlink_target_bytes_max {
                return Err(NamespaceError::limit(Limit::SymlinkTarget));
            }
            if target.is_empty() || target.contains(&0) {
                return Err(NamespaceError::invalid("symlink target empty or holding NUL"));
            }
        }
        let mut parent_record = self.directory(parent)?.clone();
        if let Some(entry) = self.dentry(parent, name) {
            let existing = self.inode(entry.inode)?;
            return match (&node, existing.kind()) {
                (NewNode::File { exclusive: false }, FileKind::File) => {
                    cx.inode = Some(entry.inode);
                    Ok(())
                }
                (NewNode::File { exclusive: false }, FileKind::Directory) => Err(NamespaceError::IsDirectory),
                _ => Err(NamespaceError::AlreadyExists),
            };
        }
        self.check_new_inode(cx.config)?;
        self.check_new_dentry(cx.config, &parent_record)?;
        let (kind, body) = match node {
            NewNode::File { .. } => (FileKind::File, InodeBody::File { inline: None }),
            NewNode::Directory => {
                if parent_record.attributes.nlink == u32::MAX {
                    return Err(NamespaceError::limit(Limit::Links));
                }
                let body = DirectoryBody {
                    parent,
                    next_cookie: READDIR_COOKIE_FIRST,
                    entry_count: 0,
                };
                (FileKind::Directory, InodeBody::Directory(body))
            }
            NewNode::Symlink { target } => (
                FileKind::Symlink,
                InodeBody::Symlink {
                    target: target.to_vec(),
                },
            ),
            NewNode::Special { kind } => (kind, InodeBody::Special),
        };

        // Commit: nothing below fails.
        let id = self.allocate_inode();
        let record = InodeRecord::new(
            kind,
            body,
            attributes.mode,
            attributes.uid,
            attributes.gid,
            attributes.time,
        );
        self.put_inode(id, record);
        self.add_dentry(parent, &mut parent_record, name, id);
        if kind == FileKind::Directory {
            parent_record.attributes.nlink += 1;
        }
        parent_record.touch_content(attributes.time);
        self.put_inode(parent, parent_record);
        cx.event(id, WatchKind::Created, Some((parent, name)));
        cx.inode = Some(id);
        Ok(())
    }

    /// A new name for an existing file or symlink.
    pub(crate) fn link(
        &mut self,
        cx: &mut Context<'_>,
        inode: InodeId,
        parent: InodeId,
        name: &[u8],
        ctime: Timestamp,
    ) -> Result<(), NamespaceError> {
        validate_name(name)?;
        ctime.validate()?;
        let mut record = self.inode(inode)?.clone();
        if record.kind() == FileKind::Directory {
            return Err(NamespaceError::NotPermitted);
        }
        let mut parent_record = self.directory(parent)?.clone();
        if self.dentry(parent, name).is_some() {
            return Err(NamespaceError::AlreadyExists);
        }
        if record.attributes.nlink >= cx.config.hard_links_max {
            return Err(NamespaceError::limit(Limit::Links));
        }
        self.check_new_dentry(cx.config, &parent_record)?;

        // Commit: nothing below fails.
        record.attributes.nlink += 1;
        record.touch(ctime);
        self.put_inode(inode, record);
        self.add_dentry(parent, &mut parent_record, name, inode);
        parent_record.touch_content(ctime);
        self.put_inode(parent, parent_record);
        cx.event(inode, WatchKind::Linked, Some((parent, name)));
        cx.inode = Some(inode);
        Ok(())
    }

    /// Removes the name of a file or symlink.
    pub(crate) fn unlink(
        &mut self,
        cx: &mut Context<'_>,
        parent: InodeId,
        name: &[u8],
        ctime: Timestamp,
    ) -> Result<(), NamespaceError> {
        validate_name(name)?;
        ctime.validate()?;
        let mut parent_record = self.directory(parent)?.clone();
        let entry = self.dentry(parent, name).ok_or(NamespaceError::NotFound)?;
        if self.inode(entry.inode)?.kind() == FileKind::Directory {
            return Err(NamespaceError::IsDirectory);
        }

        // Commit: nothing below fails.
        self.remove_name(cx, parent, &mut parent_record, name, entry.inode, ctime);
        self.put_inode(parent, parent_record);
        cx.inode = Some(entry.inode);
        Ok(())
    }

    /// Removes an empty directory.
    pub(crate) fn rmdir(
        &mut self,
        cx: &mut Context<'_>,
        parent: InodeId,
        name: &[u8],
        ctime: Timestamp,
    ) -> Result<(), NamespaceError> {
        validate_name(name)?;
        ctime.validate()?;
        let mut parent_record = self.directory(parent)?.clone();
        let entry = self.dentry(parent, name).ok_or(NamespaceError::NotFound)?;
        let target = self.directory(entry.inode)?;
        if target.directory().is_some_and(|directory| directory.entry_count > 0) {
            return Err(NamespaceError::NotEmpty);
        }

        // Commit: nothing below fails.
        self.remove_name(cx, parent, &mut parent_record, name, entry.inode, ctime);
        self.put_inode(parent, parent_record);
        cx.inode = Some(entry.inode);
        Ok(())
    }

    /// Commit helper: removes entry `name` (naming `inode`) from `parent` (the caller's
    /// record copy, which the caller stores), lowers the parent's link count for a
    /// directory, releases the inode's name and records the event.
    pub(crate) fn remove_name(
        &mut self,
        cx: &mut Context<'_>,
        parent: InodeId,
        parent_record: &mut InodeRecord,
        name: &[u8],
        inode: InodeId,
        ctime: Timestamp,
    ) {
        let is_directory = self
            .inodes
            .get(&inode)
            .is_some_and(|record| record.kind() == FileKind::Directory);
        self.remove_dentry(parent, parent_record, name);
        if is_directory {
            parent_record.attributes.nlink -= 1;
        }
        parent_record.touch_content(ctime);
        self.release_name(inode, ctime, cx);
        cx.event(inode, WatchKind::Removed, Some((parent, name)));
    }
}
