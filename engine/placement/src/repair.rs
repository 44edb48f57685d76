//! Repair planning: which fragments a lost device or node takes with it, and how to
//! restore them. Pure functions; the pipeline crate's `repair` module executes plans.

use crate::error::PlacementError;
use crate::locator::Locator;
use crate::place::{place, Placement};
use crate::pool::{DeviceId, DeviceState, NodeId, PoolMap};

/// A chunk and where its fragments are, as recorded by the caller.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChunkPlacement {
    /// The chunk.
    pub locator: Locator,
    /// Its current placement.
    pub placement: Placement,
}

/// What was lost.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Loss {
    /// One device and every fragment on it.
    Device(DeviceId),
    /// Every device of one node.
    Node(NodeId),
}

impl Loss {
    /// Whether `device` is lost. A device unknown to the pool counts as lost when the loss
    /// names it; for a node loss, the pool says which node a device belongs to.
    fn covers(&self, pool: &PoolMap, device: DeviceId) -> bool {
        match *self {
            Loss::Device(lost) => lost == device,
            Loss::Node(node) => pool.device(device).is_some_and(|d| d.node == node),
        }
    }
}

/// Rebuild one lost fragment from the plan's sources and write it to `target`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FragmentRebuild {
    /// Fragment index.
    pub index: usize,
    /// Device to write it to.
    pub target: DeviceId,
}

/// Copy one surviving fragment whose placement changed (a side effect of the node rule)
/// from `source` to `target`, then delete it from `source`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FragmentCopy {
    /// Fragment index.
    pub index: usize,
    /// Device holding it now.
    pub source: DeviceId,
    /// Device it belongs on.
    pub target: DeviceId,
}

/// The repair of one chunk.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChunkRepair {
    /// The chunk.
    pub locator: Locator,
    /// Placement before the loss.
    pub current: Placement,
    /// Placement on the pool with the lost devices out: where fragments belong after repair.
    pub target: Placement,
    /// Surviving fragments to read to rebuild: `(index, device)`, the lowest indices first
    /// (data fragments decode cheapest); exactly the fragments needed, or empty when
    /// nothing is rebuilt.
    pub sources: Vec<(usize, DeviceId)>,
    /// Lost fragments to rebuild.
    pub rebuild: Vec<FragmentRebuild>,
    /// Surviving fragments to move.
    pub copies: Vec<FragmentCopy>,
}

/// A repair plan for one loss.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RepairPlan {
    /// The pool map after the loss: lost devices marked out. Target placements are
    /// computed on it.
    pub pool_after: PoolMap,
    /// One entry per affected chunk that can be repaired.
    pub repairs: Vec<ChunkRepair>,
    /// Affected chunks with fewer readable fragments than needed: data loss to report.
    pub unrecoverable: Vec<Locator>,
}

/// The chunks with at least one fragment on a lost device.
pub fn affected_chunks<'a, I>(pool: &PoolMap, loss: Loss, chunks: I) -> Vec<&'a ChunkPlacement>
where
    I: IntoIterator<Item = &'a ChunkPlacement>,
{
    chunks
        .into_iter()
        .filter(|chunk| {
            chunk
                .placement
                .devices()
                .iter()
                .any(|&device| loss.covers(pool, device))
        })
        .collect()
}

/// Plans the repair of `loss` for the chunks in `chunks` (chunks without a fragment on a
/// lost device are skipped). `fragments_needed` is how many fragments reconstruct a chunk
/// (`k` for k+m erasure coding, 1 for replicas).
///
/// Readable survivors are fragments on devices that are not lost and are up; a down
/// device's fragments are neither read nor moved (a moved fragment whose source is down
/// is rebuilt instead).
pub fn plan_repair(
    pool: &PoolMap,
    loss: Loss,
    fragments_needed: usize,
    chunks: &[ChunkPlacement],
) -> Result<RepairPlan, PlacementError> {
    let mut pool_after = pool.clone();
    match loss {
        Loss::Device(device) => pool_after.set_state(device, DeviceState::Out)?,
        Loss::Node(node) => pool_after.set_node_state(node, DeviceState::Out),
    }
    let mut repairs = Vec::new();
    let mut unrecoverable = Vec::new();
    for chunk in affected_chunks(pool, loss, chunks) {
        let current = &chunk.placement;
        if fragments_needed == 0 || fragments_needed > current.len() {
            return Err(PlacementError::InvalidParams {
                reason: format!(
                    "{fragments_needed} fragments needed of a {}-fragment placement",
                    current.len()
                ),
            });
        }
        let readable = |device: DeviceId| {
            !loss.covers(pool, device) && pool_after.device(device).is_some_and(|d| d.state == DeviceState::Up)
        };
        let survivors: Vec<(usize, DeviceId)> = current
            .devices()
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, device)| readable(device))
            .collect();
        if survivors.len() < fragments_needed {
            unrecoverable.push(chunk.locator);
            continue;
        }
        let target = place(&pool_after, &chunk.locator, current.len())?;
        let mut rebuild = Vec::new();
        let mut copies = Vec::new();
        for (index, (&source, &destination)) in current.devices().iter().zip(target.devices()).enumerate() {
            if loss.covers(pool, source) || (source != destination && !readable(source)) {
                rebuild.push(FragmentRebuild {
                    index,
                    target: destination,
                });
            } else if source != destination {
                copies.push(FragmentCopy {
                    index,
                    source,
                    target: destination,
                });
            }
        }
        let sources = if rebuild.is_empty() {
            Vec::new()
        } else {
            survivors[..fragments_needed].to_vec()
        };
        repairs.push(ChunkRepair {
            locator: chunk.locator,
            current: current.clone(),
            target,
            sources,
            rebuild,
            copies,
        });
    }
    Ok(RepairPlan {
        pool_after,
        repairs,
        unrecoverable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Device;

    fn pool(nodes: u32, per_node: u32) -> PoolMap {
        PoolMap::new(
            (0..nodes * per_node)
                .map(|i| Device::new(DeviceId(i), NodeId(i / per_node)))
                .collect(),
        )
        .unwrap()
    }

    fn chunks(pool: &PoolMap, count: u8, fragments: usize) -> Vec<ChunkPlacement> {
        (0..count)
            .map(|i| {
                let locator = Locator([i; 32]);
                ChunkPlacement {
                    locator,
                    placement: place(pool, &locator, fragments).unwrap(),
                }
            })
            .collect()
    }

    #[test]
    fn device_loss_rebuilds_exactly_the_lost_fragments() {
        let pool = pool(8, 2);
        let chunks = chunks(&pool, 200, 6);
        let lost = DeviceId(5);
        let plan = plan_repair(&pool, Loss::Device(lost), 4, &chunks).unwrap();
        let affected = affected_chunks(&pool, Loss::Device(lost), &chunks);
        assert!(!affected.is_empty());
        assert_eq!(plan.repairs.len(), affected.len());
        assert!(plan.unrecoverable.is_empty());
        for repair in &plan.repairs {
            let lost_index = repair.current.index_of(lost).unwrap();
            assert!(repair.rebuild.iter().any(|r| r.index == lost_index));
            assert_eq!(repair.rebuild.len(), 1);
            assert_eq!(repair.sources.len(), 4);
            assert!(repair.sources.iter().all(|&(_, d)| d != lost));
            assert!(repair.target.index_of(lost).is_none());
            assert_eq!(repair.target, place(&plan.pool_after, &repair.locator, 6).unwrap());
        }
        // Fragments that stay put are the vast majority.
        let copies: usize = plan.repairs.iter().map(|r| r.copies.len()).sum();
        assert!(copies <= plan.repairs.len(), "{copies} copies");
    }

    #[test]
    fn node_loss_beyond_parity_is_unrecoverable() {
        // 2 nodes x 3 devices with 4+2: each node holds 3 fragments; losing a node leaves 3 < 4.
        let pool = pool(2, 3);
        let chunks = chunks(&pool, 20, 6);
        let plan = plan_repair(&pool, Loss::Node(NodeId(0)), 4, &chunks).unwrap();
        assert!(plan.repairs.is_empty());
        assert_eq!(plan.unrecoverable.len(), 20);
    }

    #[test]
    fn node_loss_within_parity_is_planned() {
        let pool = pool(8, 2);
        let chunks = chunks(&pool, 100, 6);
        let plan = plan_repair(&pool, Loss::Node(NodeId(3)), 4, &chunks).unwrap();
        assert!(plan.unrecoverable.is_empty());
        for repair in &plan.repairs {
            for rebuild in &repair.rebuild {
                let device = plan.pool_after.device(rebuild.target).unwrap();
                assert_ne!(device.node, NodeId(3));
            }
        }
    }

    #[test]
    fn rejects_needed_above_fragments() {
        let pool = pool(8, 1);
        let chunks = chunks(&pool, 10, 6);
        assert!(matches!(
            plan_repair(&pool, Loss::Device(DeviceId(0)), 7, &chunks),
            Err(PlacementError::InvalidParams { .. })
        ));
    }
}
