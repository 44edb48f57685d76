//! Who a caller is after squashing, and what the permission bits let it do — the checks
//! the kernel makes for a local file system (owner, group or other bits; root passes all
//! but execute on files without an execute bit), with the NFS server's owner override
//! for reads and writes of a file the caller owns (as Linux's nfsd allows, so a file
//! created read-only can still be written through its open handle).

use kiseki_namespace::{Attributes, FileKind};

use super::exports::{ExportOptions, Squash};
use super::rpc::Credentials;

pub use kiseki_namespace::{MODE_EXECUTE as EXECUTE, MODE_READ as READ, MODE_WRITE as WRITE};

/// A caller, after its export's squashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// User.
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups.
    pub gids: Vec<u32>,
}

impl Caller {
    /// The caller of an AUTH_SYS (or AUTH_NONE: anonymous) credential on an export.
    pub fn new(credentials: &Credentials, options: &ExportOptions) -> Caller {
        let anonymous = Caller {
            uid: options.anon_uid,
            gid: options.anon_gid,
            gids: Vec::new(),
        };
        let Credentials::Sys { uid, gid, gids } = credentials else {
            return anonymous;
        };
        match options.squash {
            Squash::All => anonymous,
            Squash::Root => {
                let map = |id: u32, anon: u32| if id == 0 { anon } else { id };
                Caller {
                    uid: map(*uid, options.anon_uid),
                    gid: map(*gid, options.anon_gid),
                    gids: gids.iter().map(|gid| map(*gid, options.anon_gid)).collect(),
                }
            }
            Squash::None => Caller {
                uid: *uid,
                gid: *gid,
                gids: gids.clone(),
            },
        }
    }

    /// The ids a shard checks a [`Delta::AsCaller`](kiseki_namespace::Delta::AsCaller) with.
    pub fn ids(&self) -> kiseki_namespace::CallerIds {
        kiseki_namespace::CallerIds {
            uid: self.uid,
            gid: self.gid,
            gids: self.gids.clone(),
        }
    }

    /// Whether the caller is root (after squashing).
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the caller is in group `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.gids.contains(&gid)
    }

    /// Whether the mode bits of `attributes` grant every bit of `mask` (`READ`, `WRITE`,
    /// `EXECUTE`).
    pub fn may(&self, attributes: &Attributes, mask: u32) -> bool {
        kiseki_namespace::mode_grants(self.uid, self.gid, &self.gids, attributes, mask)
    }

    /// Whether the caller may read (`READ`) or write (`WRITE`) the data of a file: the
    /// mode bits, or ownership (the owner override).
    pub fn may_access_data(&self, attributes: &Attributes, mask: u32) -> bool {
        self.may(attributes, mask) || (attributes.kind == FileKind::File && self.uid == attributes.uid)
    }

    /// Whether the caller may remove or rename away `entry` from directory `dir`: write
    /// and search on the directory, and with the sticky bit, owning the entry or the
    /// directory.
    pub fn may_unlink(&self, dir: &Attributes, entry: &Attributes) -> bool {
        if !self.may(dir, WRITE | EXECUTE) {
            return false;
        }
        dir.mode & 0o1000 == 0 || self.is_root() || self.uid == entry.uid || self.uid == dir.uid
    }

    /// Whether the caller may change an inode's mode or times to given values (`chmod`,
    /// `utimes` with times): only its owner or root.
    pub fn owns(&self, attributes: &Attributes) -> bool {
        self.is_root() || self.uid == attributes.uid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiseki_namespace::Timestamp;

    fn attributes(kind: FileKind, mode: u32, uid: u32, gid: u32) -> Attributes {
        Attributes {
            kind,
            mode,
            uid,
            gid,
            size_bytes: 0,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            nlink: 1,
            generation: 1,
        }
    }

    fn sys(uid: u32, gid: u32, gids: &[u32]) -> Credentials {
        Credentials::Sys {
            uid,
            gid,
            gids: gids.to_vec(),
        }
    }

    #[test]
    fn squashing_maps_ids_as_the_export_says() {
        let mut options = ExportOptions::default();
        assert_eq!(Caller::new(&sys(0, 0, &[0, 5]), &options).uid, 65534);
        assert_eq!(Caller::new(&sys(0, 0, &[0, 5]), &options).gids, vec![65534, 5]);
        assert_eq!(Caller::new(&sys(1000, 100, &[]), &options).uid, 1000);
        assert_eq!(Caller::new(&Credentials::None, &options).uid, 65534);
        options.squash = Squash::All;
        assert_eq!(Caller::new(&sys(1000, 100, &[]), &options).uid, 65534);
        options.squash = Squash::None;
        assert!(Caller::new(&sys(0, 0, &[]), &options).is_root());
    }

    #[test]
    fn mode_bits_decide_like_the_kernel() {
        let file = attributes(FileKind::File, 0o640, 1000, 100);
        let owner = Caller::new(&sys(1000, 1, &[]), &ExportOptions::default());
        let member = Caller::new(&sys(2000, 1, &[100]), &ExportOptions::default());
        let other = Caller::new(&sys(3000, 3, &[]), &ExportOptions::default());
        let root = Caller {
            uid: 0,
            gid: 0,
            gids: vec![],
        };
        assert!(owner.may(&file, READ | WRITE) && !owner.may(&file, EXECUTE));
        assert!(member.may(&file, READ) && !member.may(&file, WRITE));
        assert!(!other.may(&file, READ));
        assert!(root.may(&file, READ | WRITE) && !root.may(&file, EXECUTE));
        let read_only = attributes(FileKind::File, 0o444, 1000, 100);
        assert!(!owner.may(&read_only, WRITE) && owner.may_access_data(&read_only, WRITE));
        assert!(!member.may_access_data(&read_only, WRITE));
        let sticky = attributes(FileKind::Directory, 0o1777, 0, 0);
        let mine = attributes(FileKind::File, 0o644, 1000, 100);
        assert!(owner.may_unlink(&sticky, &mine));
        assert!(!other.may_unlink(&sticky, &mine));
        assert!(root.may_unlink(&sticky, &mine));
    }
}
