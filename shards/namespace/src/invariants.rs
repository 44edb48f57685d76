//! The namespace invariants I-N1..I-N8, checked over a whole state (docs/invariants.md).
//!
//! Restores run this check on every snapshot (a snapshot comes from a disk or the network,
//! so it is outside input: a violation is `Corrupt`, never a panic); tests run it after
//! every step. It is O(n log n) in the size of the state.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::NamespaceConfig;
use crate::error::NamespaceError;
use crate::snapshot::{derive, kind_matches};
use crate::tables::{InodeBody, Tables, READDIR_COOKIE_FIRST};
use crate::types::{validate_name, FileKind, InodeId, INLINE_SEAL_SLACK_BYTES, MODE_PERMISSION_BITS_MAX};

fn fail(reason: String) -> Result<(), NamespaceError> {
    Err(NamespaceError::Corrupt { reason })
}

/// Checks every invariant; the first violation found is returned as `Corrupt`.
pub(crate) fn check(tables: &Tables, config: &NamespaceConfig) -> Result<(), NamespaceError> {
    config.validate()?;
    check_inodes(tables, config)?;
    check_entries(tables)?;
    check_tree(tables)?;
    check_extents(tables, config)?;
    check_xattrs_and_uploads(tables, config)?;
    let (cookies, chunk_refs, totals) = derive(tables)?;
    if cookies != tables.cookies {
        return fail("I-N6: the readdir cookie index does not match the entries".into());
    }
    if chunk_refs != tables.chunk_refs {
        return fail("I-N4: chunk reference counts differ from the extents naming them".into());
    }
    if totals != tables.totals {
        return fail("I-N8: totals differ from a recount".into());
    }
    Ok(())
}

/// I-N7 (ids) and I-N8 (bounds) per inode, and the shape of each record.
fn check_inodes(tables: &Tables, config: &NamespaceConfig) -> Result<(), NamespaceError> {
    if tables.inodes.len() as u64 > config.inodes_max || tables.dentries.len() as u64 > config.dentries_max {
        return fail("I-N8: more inodes or entries than the bounds allow".into());
    }
    if tables.next_inode < config.inode_number_first {
        return fail("I-N7: the inode counter is below the first inode number".into());
    }
    for (id, record) in tables.inodes.iter() {
        let in_range = *id == InodeId::ROOT || (config.inode_number_first..tables.next_inode).contains(&id.0);
        if !in_range {
            return fail(format!("I-N7: inode {} is outside the handed-out numbers", id.0));
        }
        if !kind_matches(record) || record.attributes.mode > MODE_PERMISSION_BITS_MAX {
            return fail(format!("I-N8: inode {} has a kind or mode that does not fit", id.0));
        }
        if record.xattr_count > config.xattrs_per_inode_max {
            return fail(format!("I-N8: inode {} has too many xattrs", id.0));
        }
        if record.kind() != FileKind::File && (record.extent_count != 0 || record.object_meta.is_some()) {
            return fail(format!("I-N5: non-file inode {} has extents or object metadata", id.0));
        }
        let size_bytes = record.attributes.size_bytes;
        match &record.body {
            InodeBody::File { inline } => {
                let fits = inline.as_ref().is_none_or(|inline| {
                    inline.length_bytes > 0
                        && inline.length_bytes <= config.inline_bytes_max as u64
                        && inline.length_bytes <= size_bytes
                        && inline.sealed.len() <= config.inline_bytes_max + INLINE_SEAL_SLACK_BYTES
                });
                if !fits || size_bytes > config.file_bytes_max || record.extent_count > config.extents_per_file_max {
                    return fail(format!("I-N5: file {} breaks its size, inline or extent bounds", id.0));
                }
            }
            InodeBody::Special => {
                if size_bytes != 0 {
                    return fail(format!("I-N5: special inode {} has a size", id.0));
                }
            }
            InodeBody::Symlink { target } => {
                let fits = !target.is_empty() && target.len() <= config.symlink_target_bytes_max;
                if !fits || size_bytes != target.len() as u64 {
                    return fail(format!("I-N8: symlink {} has a bad target", id.0));
                }
            }
            InodeBody::Directory(directory) => {
                if directory.next_cookie < READDIR_COOKIE_FIRST {
                    return fail(format!("I-N6: directory {} has a cookie counter below the first", id.0));
                }
            }
        }
    }
    match tables.inodes.get(&InodeId::ROOT).and_then(|root| root.directory()) {
        Some(root) if root.parent == InodeId::ROOT => Ok(()),
        _ => fail("I-N3: the root is missing, not a directory, or not its own parent".into()),
    }
}

/// I-N1 (entries point at live inodes in live directories), I-N2 (link counts) and the
/// single-parent half of I-N3.
fn check_entries(tables: &Tables) -> Result<(), NamespaceError> {
    let mut names: BTreeMap<InodeId, u64> = BTreeMap::new();
    let mut entries: BTreeMap<InodeId, u64> = BTreeMap::new();
    let mut subdirectories: BTreeMap<InodeId, u64> = BTreeMap::new();
    let mut directory_parent: BTreeMap<InodeId, InodeId> = BTreeMap::new();
    for ((parent, name), entry) in tables.dentries.iter() {
        if validate_name(name).is_err() {
            return fail(format!("I-N1: directory {} holds an invalid name", parent.0));
        }
        let Some(directory) = tables.inodes.get(parent).and_then(|record| record.directory()) else {
            return fail(format!("I-N1: an entry's parent {} is not a live directory", parent.0));
        };
        if entry.cookie < READDIR_COOKIE_FIRST || entry.cookie >= directory.next_cookie {
            return fail(format!("I-N6: an entry of {} has a cookie never handed out", parent.0));
        }
        let Some(target) = tables.inodes.get(&entry.inode) else {
            return fail(format!(
                "I-N1: an entry of {} names dead inode {}",
                parent.0, entry.inode.0
            ));
        };
        *names.entry(entry.inode).or_insert(0) += 1;
        *entries.entry(*parent).or_insert(0) += 1;
        if target.kind() == FileKind::Directory {
            *subdirectories.entry(*parent).or_insert(0) += 1;
            if entry.inode == InodeId::ROOT || directory_parent.insert(entry.inode, *parent).is_some() {
                return fail(format!("I-N3: directory {} has more than one name", entry.inode.0));
            }
        }
    }
    for (id, record) in tables.inodes.iter() {
        let name_count = names.get(id).copied().unwrap_or(0);
        let nlink = u64::from(record.attributes.nlink);
        match record.directory() {
            None => {
                if name_count == 0 || nlink != name_count {
                    return fail(format!("I-N2: inode {} has nlink {nlink} but {name_count} names", id.0));
                }
            }
            Some(directory) => {
                let subdirectory_count = subdirectories.get(id).copied().unwrap_or(0);
                let entry_count = entries.get(id).copied().unwrap_or(0);
                if nlink != 2 + subdirectory_count || directory.entry_count != entry_count {
                    return fail(format!("I-N2: directory {} link or entry count is off", id.0));
                }
                let named_in = directory_parent.get(id).copied();
                let expected = if *id == InodeId::ROOT {
                    None
                } else {
                    Some(directory.parent)
                };
                if named_in != expected {
                    return fail(format!(
                        "I-N3: directory {} is not named exactly once in its parent",
                        id.0
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The no-cycle half of I-N3: every directory reaches the root by its parents.
fn check_tree(tables: &Tables) -> Result<(), NamespaceError> {
    let mut reaches_root: BTreeSet<InodeId> = BTreeSet::from([InodeId::ROOT]);
    for (id, record) in tables.inodes.iter() {
        if record.kind() != FileKind::Directory {
            continue;
        }
        let mut path = Vec::new();
        let mut current = *id;
        while !reaches_root.contains(&current) {
            if path.len() > tables.inodes.len() {
                return fail(format!("I-N3: directory {} does not reach the root", id.0));
            }
            path.push(current);
            match tables.inodes.get(&current).and_then(|record| record.directory()) {
                Some(directory) => current = directory.parent,
                None => return fail(format!("I-N3: directory {} has a dead parent", id.0)),
            }
        }
        reaches_root.extend(path);
    }
    Ok(())
}

/// I-N5: each file's extents are non-empty, disjoint, within its size and above its inline
/// bytes; counts match.
fn check_extents(tables: &Tables, config: &NamespaceConfig) -> Result<(), NamespaceError> {
    let mut counts: BTreeMap<InodeId, u64> = BTreeMap::new();
    let mut previous_end: Option<(InodeId, u64)> = None;
    for ((file, offset), extent) in tables.extents.iter() {
        let Some(record) = tables.inodes.get(file).filter(|record| record.kind() == FileKind::File) else {
            return fail(format!("I-N5: extents under {} which is not a live file", file.0));
        };
        let end = offset.checked_add(extent.length_bytes);
        let valid = extent.length_bytes > 0
            && extent.wrapped_key.len() <= config.wrapped_key_bytes_max
            && extent.chunk_offset_bytes.checked_add(extent.length_bytes).is_some()
            && end.is_some_and(|end| end <= record.attributes.size_bytes)
            && *offset >= record.inline_bytes();
        let overlaps = previous_end.is_some_and(|(owner, previous)| owner == *file && previous > *offset);
        if !valid || overlaps {
            return fail(format!("I-N5: file {} has a bad extent at {offset}", file.0));
        }
        previous_end = end.map(|end| (*file, end));
        *counts.entry(*file).or_insert(0) += 1;
    }
    for (id, record) in tables.inodes.iter() {
        if record.extent_count != counts.get(id).copied().unwrap_or(0) {
            return fail(format!("I-N5: file {} extent count is off", id.0));
        }
    }
    Ok(())
}

/// I-N7 and I-N8 for xattrs, uploads and parts.
fn check_xattrs_and_uploads(tables: &Tables, config: &NamespaceConfig) -> Result<(), NamespaceError> {
    let mut counts: BTreeMap<InodeId, u32> = BTreeMap::new();
    for ((inode, name), value) in tables.xattrs.iter() {
        let name_ok = !name.is_empty() && name.len() <= crate::types::XATTR_NAME_BYTES_MAX;
        if !tables.inodes.contains_key(inode) || !name_ok || value.len() > config.xattr_value_bytes_max {
            return fail(format!("I-N8: bad xattr on inode {}", inode.0));
        }
        *counts.entry(*inode).or_insert(0) += 1;
    }
    for (id, record) in tables.inodes.iter() {
        if record.xattr_count != counts.get(id).copied().unwrap_or(0) {
            return fail(format!("I-N8: inode {} xattr count is off", id.0));
        }
    }
    if tables.uploads.len() as u64 > config.multipart_uploads_max {
        return fail("I-N8: more uploads than the bound".into());
    }
    let mut part_counts: BTreeMap<u64, u32> = BTreeMap::new();
    for ((upload, number), part) in tables.parts.iter() {
        let size_bytes = part
            .extents
            .iter()
            .try_fold(0u64, |sum, extent| sum.checked_add(extent.length_bytes));
        let valid = tables.uploads.contains_key(upload)
            && (1..=config.multipart_part_number_max).contains(number)
            && part.extents.iter().all(|extent| extent.length_bytes > 0)
            && size_bytes == Some(part.size_bytes);
        if !valid {
            return fail(format!("I-N8: bad part {number} of upload {}", upload.0));
        }
        *part_counts.entry(upload.0).or_insert(0) += 1;
    }
    for (id, upload) in tables.uploads.iter() {
        if id.0 == 0 || id.0 >= tables.next_upload || upload.part_count != part_counts.get(&id.0).copied().unwrap_or(0)
        {
            return fail(format!("I-N7: upload {} has a bad id or part count", id.0));
        }
    }
    Ok(())
}
