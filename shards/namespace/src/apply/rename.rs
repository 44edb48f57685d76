//! Rename, as `renameat2(2)` with `RENAME_NOREPLACE` and `RENAME_EXCHANGE`.

use crate::apply::Context;
use crate::delta::RenameFlags;
use crate::error::{Limit, NamespaceError};
use crate::tables::{CookieRecord, DentryRecord, InodeRecord, Tables};
use crate::types::{validate_name, FileKind, InodeId, Timestamp};
use crate::watch::WatchKind;

/// The fields of a rename delta.
pub(crate) struct RenameRequest<'a> {
    pub from_parent: InodeId,
    pub from_name: &'a [u8],
    pub to_parent: InodeId,
    pub to_name: &'a [u8],
    pub flags: RenameFlags,
    pub ctime: Timestamp,
}

impl Tables {
    /// Whether directory `dir` is `ancestor` or lies below it.
    fn is_within(&self, dir: InodeId, ancestor: InodeId) -> bool {
        let mut current = dir;
        // Every step climbs one level; more steps than inodes would mean a cycle (I-N3).
        for _ in 0..=self.inodes.len() {
            if current == ancestor {
                return true;
            }
            if current == InodeId::ROOT {
                return false;
            }
            let parent = self
                .inodes
                .get(&current)
                .and_then(|record| record.directory())
                .map(|dir| dir.parent);
            match parent {
                Some(parent) => current = parent,
                None => panic!("I-N3: directory {} has no live parent chain", current.0),
            }
        }
        panic!("I-N3: the directory tree holds a cycle above {}", dir.0);
    }

    /// Renames an entry.
    pub(crate) fn rename(&mut self, cx: &mut Context<'_>, request: &RenameRequest<'_>) -> Result<(), NamespaceError> {
        let RenameRequest {
            from_parent,
            from_name,
            to_parent,
            to_name,
            flags,
            ctime,
        } = *request;
        validate_name(from_name)?;
        validate_name(to_name)?;
        ctime.validate()?;
        if flags.no_replace && flags.exchange {
            return Err(NamespaceError::invalid("no-replace and exchange together"));
        }
        self.directory(from_parent)?;
        let to_record = self.directory(to_parent)?;
        let source = self.dentry(from_parent, from_name).ok_or(NamespaceError::NotFound)?;
        let source_kind = self.inode(source.inode)?.kind();
        let target = self.dentry(to_parent, to_name);
        if let Some(target) = target {
            if target.inode == source.inode {
                // The same entry, or two names of one file: POSIX says do nothing.
                cx.inode = Some(source.inode);
                return Ok(());
            }
            if flags.no_replace {
                return Err(NamespaceError::AlreadyExists);
            }
        } else if flags.exchange {
            return Err(NamespaceError::NotFound);
        }
        if source_kind == FileKind::Directory && self.is_within(to_parent, source.inode) {
            return Err(NamespaceError::invalid("a directory cannot move into its own subtree"));
        }
        if let (Some(target), true) = (target, flags.exchange) {
            let target_kind = self.inode(target.inode)?.kind();
            if target_kind == FileKind::Directory && self.is_within(from_parent, target.inode) {
                return Err(NamespaceError::invalid("a directory cannot move into its own subtree"));
            }
            let moves_directory_across = from_parent != to_parent
                && (source_kind == FileKind::Directory) != (target_kind == FileKind::Directory);
            let from_nlink = self.inode(from_parent)?.attributes.nlink;
            if moves_directory_across && (from_nlink == u32::MAX || to_record.attributes.nlink == u32::MAX) {
                return Err(NamespaceError::limit(Limit::Links));
            }
            self.exchange(cx, request, source, target);
            return Ok(());
        }
        if let Some(target) = target {
            let target_record = self.inode(target.inode)?;
            match (
                source_kind == FileKind::Directory,
                target_record.kind() == FileKind::Directory,
            ) {
                (true, false) => return Err(NamespaceError::NotDirectory),
                (false, true) => return Err(NamespaceError::IsDirectory),
                _ => {}
            }
            if target_record
                .directory()
                .is_some_and(|directory| directory.entry_count > 0)
            {
                return Err(NamespaceError::NotEmpty);
            }
        }
        if to_record
            .directory()
            .is_some_and(|directory| directory.next_cookie == u64::MAX)
        {
            return Err(NamespaceError::limit(Limit::Counter));
        }
        if source_kind == FileKind::Directory && from_parent != to_parent && to_record.attributes.nlink == u32::MAX {
            return Err(NamespaceError::limit(Limit::Links));
        }

        // Commit: nothing below fails.
        self.move_entry(
            cx,
            request,
            source.inode,
            source_kind,
            target.map(|target| target.inode),
        );
        Ok(())
    }

    /// Commit of a plain rename: drops the target (if any) and moves the source entry.
    fn move_entry(
        &mut self,
        cx: &mut Context<'_>,
        request: &RenameRequest<'_>,
        source: InodeId,
        source_kind: FileKind,
        target: Option<InodeId>,
    ) {
        let RenameRequest {
            from_parent,
            from_name,
            to_parent,
            to_name,
            ctime,
            ..
        } = *request;
        let same_parent = from_parent == to_parent;
        let mut from_record = self.record_copy(from_parent);
        let mut to_record = if same_parent {
            None
        } else {
            Some(self.record_copy(to_parent))
        };
        if let Some(target) = target {
            let record = to_record.as_mut().unwrap_or(&mut from_record);
            self.remove_name(cx, to_parent, record, to_name, target, ctime);
        }
        self.remove_dentry(from_parent, &mut from_record, from_name);
        from_record.touch_content(ctime);
        let mut source_record = self.record_copy(source);
        match to_record.as_mut() {
            Some(to_record) => {
                self.add_dentry(to_parent, to_record, to_name, source);
                to_record.touch_content(ctime);
                if source_kind == FileKind::Directory {
                    from_record.attributes.nlink -= 1;
                    to_record.attributes.nlink += 1;
                    source_record.directory_mut().parent = to_parent;
                }
            }
            None => self.add_dentry(from_parent, &mut from_record, to_name, source),
        }
        source_record.touch(ctime);
        self.put_inode(source, source_record);
        self.put_inode(from_parent, from_record);
        if let Some(to_record) = to_record {
            self.put_inode(to_parent, to_record);
        }
        let kind = WatchKind::Renamed {
            from_parent,
            from_name: from_name.to_vec(),
        };
        cx.event(source, kind, Some((to_parent, to_name)));
        cx.inode = Some(source);
    }

    /// Commit of an exchange: the two entries swap inodes (and keep their cookies).
    fn exchange(
        &mut self,
        cx: &mut Context<'_>,
        request: &RenameRequest<'_>,
        source: DentryRecord,
        target: DentryRecord,
    ) {
        let RenameRequest {
            from_parent,
            from_name,
            to_parent,
            to_name,
            ctime,
            ..
        } = *request;
        // Commit: nothing below fails.
        self.point_entry(from_parent, from_name, target.inode, source.cookie);
        self.point_entry(to_parent, to_name, source.inode, target.cookie);
        let mut source_record = self.record_copy(source.inode);
        let mut target_record = self.record_copy(target.inode);
        let source_is_directory = source_record.kind() == FileKind::Directory;
        let target_is_directory = target_record.kind() == FileKind::Directory;
        if source_is_directory {
            source_record.directory_mut().parent = to_parent;
        }
        if target_is_directory {
            target_record.directory_mut().parent = from_parent;
        }
        source_record.touch(ctime);
        target_record.touch(ctime);
        self.put_inode(source.inode, source_record);
        self.put_inode(target.inode, target_record);
        let mut from_record = self.record_copy(from_parent);
        if from_parent == to_parent {
            from_record.touch_content(ctime);
            self.put_inode(from_parent, from_record);
        } else {
            let mut to_record = self.record_copy(to_parent);
            if source_is_directory && !target_is_directory {
                from_record.attributes.nlink -= 1;
                to_record.attributes.nlink += 1;
            } else if target_is_directory && !source_is_directory {
                to_record.attributes.nlink -= 1;
                from_record.attributes.nlink += 1;
            }
            from_record.touch_content(ctime);
            to_record.touch_content(ctime);
            self.put_inode(from_parent, from_record);
            self.put_inode(to_parent, to_record);
        }
        let source_kind = WatchKind::Renamed {
            from_parent,
            from_name: from_name.to_vec(),
        };
        cx.event(source.inode, source_kind, Some((to_parent, to_name)));
        let target_kind = WatchKind::Renamed {
            from_parent: to_parent,
            from_name: to_name.to_vec(),
        };
        cx.event(target.inode, target_kind, Some((from_parent, from_name)));
        cx.inode = Some(source.inode);
    }

    /// Points the existing entry `(parent, name)` with `cookie` at `inode`.
    fn point_entry(&mut self, parent: InodeId, name: &[u8], inode: InodeId, cookie: u64) {
        self.dentries
            .insert((parent, name.to_vec()), DentryRecord { inode, cookie });
        self.cookies.insert(
            (parent, cookie),
            CookieRecord {
                name: name.to_vec(),
                inode,
            },
        );
    }

    /// A copy of a record the checks found live.
    pub(crate) fn record_copy(&self, id: InodeId) -> InodeRecord {
        match self.inodes.get(&id) {
            Some(record) => (**record).clone(),
            None => panic!("inode {} vanished between check and commit", id.0),
        }
    }
}
