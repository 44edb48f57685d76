//! Quotas and maintenance: `SetQuota` limits what deltas may add, `SetReadOnly` refuses
//! every change; both survive snapshots and leave refused deltas without effect (I-N9).

mod common;

use common::{attributes, extent, time, Harness, ROOT};
use kiseki_namespace::{Delta, NamespaceError, NamespaceSnapshot, NamespaceState, QuotaResource};

fn quota(bytes_max: Option<u64>, files_max: Option<u64>) -> Delta {
    Delta::SetQuota { bytes_max, files_max }
}

fn create(name: &str) -> Delta {
    Delta::Create {
        parent: ROOT,
        name: name.as_bytes().to_vec(),
        attributes: attributes(1),
        exclusive: true,
    }
}

#[test]
fn a_file_quota_refuses_the_inode_past_it_and_frees_room_on_delete() {
    let mut harness = Harness::new();
    harness.ok(quota(None, Some(2)));
    harness.create(ROOT, "a");
    harness.mkdir(ROOT, "d");
    let digest = harness.state.state_digest();
    let refused = harness.apply(create("b")).unwrap_err();
    assert_eq!(
        refused,
        NamespaceError::QuotaExceeded {
            resource: QuotaResource::Files,
            usage: 3,
            limit: 2
        }
    );
    assert_eq!(refused.errno(), libc::EDQUOT);
    assert_eq!(harness.state.state_digest(), digest, "a refused delta changes nothing");
    assert!(harness.state.lookup(ROOT, b"b").is_err());
    harness.ok(Delta::Unlink {
        parent: ROOT,
        name: b"a".to_vec(),
        ctime: time(2),
    });
    harness.create(ROOT, "b");
    let stats = harness.state.statfs();
    assert_eq!(stats.quota_files_used, 2);
    assert_eq!(stats.policy.quota_files_max, Some(2));
}

#[test]
fn a_byte_quota_refuses_writes_that_grow_usage_but_allows_shrinking() {
    let mut harness = Harness::new();
    let file = harness.create(ROOT, "f");
    harness.write(file, 0, vec![extent(1, 0, 1000)]);
    // A limit below what is stored already: nothing is taken away, growth is refused.
    harness.ok(quota(Some(500), None));
    let grow = Delta::WriteExtents {
        inode: file,
        offset_bytes: 1000,
        extents: vec![extent(2, 0, 10)],
        size_bytes: 1010,
        mtime: time(3),
        expected_generation: None,
    };
    assert!(matches!(
        harness.apply(grow.clone()),
        Err(NamespaceError::QuotaExceeded {
            resource: QuotaResource::Bytes,
            ..
        })
    ));
    // Overwriting in place keeps usage as it is: allowed.
    harness.ok(Delta::WriteExtents {
        inode: file,
        offset_bytes: 0,
        extents: vec![extent(3, 0, 10)],
        size_bytes: 10,
        mtime: time(4),
        expected_generation: None,
    });
    harness.ok(Delta::Truncate {
        inode: file,
        size_bytes: 100,
        mtime: time(5),
        expected_generation: None,
    });
    assert_eq!(harness.state.statfs().quota_bytes_used, 100);
    harness.ok(grow);
    harness.ok(quota(None, None));
    harness.write(file, 2000, vec![extent(4, 0, 4000)]);
}

#[test]
fn maintenance_refuses_every_change_until_it_ends() {
    let mut harness = Harness::new();
    let file = harness.create(ROOT, "f");
    harness.ok(Delta::SetReadOnly { read_only: true });
    let digest = harness.state.state_digest();
    for delta in [
        create("g"),
        quota(Some(1), None),
        Delta::Unlink {
            parent: ROOT,
            name: b"f".to_vec(),
            ctime: time(2),
        },
        Delta::Truncate {
            inode: file,
            size_bytes: 0,
            mtime: time(2),
            expected_generation: None,
        },
    ] {
        let error = harness.apply(delta).unwrap_err();
        assert_eq!(error, NamespaceError::ReadOnly);
        assert_eq!(error.errno(), libc::EROFS);
    }
    harness.ok(Delta::Noop);
    assert_eq!(harness.state.state_digest(), digest);
    assert!(harness.state.statfs().policy.read_only);
    assert!(harness.state.lookup(ROOT, b"f").is_ok(), "reads go on");
    harness.ok(Delta::SetReadOnly { read_only: false });
    harness.create(ROOT, "g");
}

#[test]
fn the_policy_survives_a_snapshot_and_old_snapshots_still_decode() {
    let mut harness = Harness::new();
    harness.create(ROOT, "f");
    let old_encoding = harness.state.snapshot().encode();
    harness.ok(quota(Some(10), Some(20)));
    harness.ok(Delta::SetReadOnly { read_only: true });
    let snapshot = NamespaceSnapshot::decode(&harness.state.snapshot().encode()).unwrap();
    let restored = NamespaceState::restore(snapshot).unwrap();
    assert_eq!(restored.state_digest(), harness.state.state_digest());
    let policy = restored.statfs().policy;
    assert_eq!(
        (policy.quota_bytes_max, policy.quota_files_max, policy.read_only),
        (Some(10), Some(20), true)
    );
    // A version-1 encoding is this one without the trailing policy: it decodes, unlimited.
    let mut version_one = old_encoding.clone();
    let policy_bytes = postcard_policy_len();
    version_one.truncate(version_one.len() - policy_bytes);
    version_one[0] = 1;
    let decoded = NamespaceSnapshot::decode(&version_one).unwrap();
    let restored = NamespaceState::restore(decoded).unwrap();
    assert_eq!(restored.statfs().policy, Default::default());
    assert!(restored.lookup(ROOT, b"f").is_ok());
    let mut trailing = version_one;
    trailing.push(0);
    assert!(NamespaceSnapshot::decode(&trailing).is_err());
}

/// Bytes of the default policy in postcard: two `None`s and a `false`.
fn postcard_policy_len() -> usize {
    3
}
