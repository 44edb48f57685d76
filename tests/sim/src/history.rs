//! Client histories and the linearizability checker (I-L4).
//!
//! Wing & Gong's search with Lowe's memoization, one register at a time (a history is
//! linearizable iff each register's sub-history is). Operations whose outcome the client
//! never learned are resolved with the final state: a write whose unique value appears in
//! the register's write history took effect (it must be linearized, with no response
//! bound); any other unknown operation had no effect and is left out. Writes are
//! linearized in the order the final state recorded them (the order the replicas applied
//! them): a stricter check than "some order exists", which keeps the search free of
//! optional operations and of reorderings of writes, and therefore polynomial.

use std::collections::{BTreeMap, BTreeSet};

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Write a value.
    Put(u64),
    /// Read the register.
    Get,
    /// Write `new` if the register holds `expected`.
    Cas {
        /// The value the register must hold.
        expected: Option<u64>,
        /// The value to write.
        new: u64,
    },
}

/// What the client learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not finished yet.
    Pending,
    /// Acknowledged at logical time `response`.
    Ok {
        /// Logical time of the answer.
        response: u64,
        /// For a get, the value read; for a compare-and-set, whether it wrote; nothing
        /// for a put.
        value: Option<u64>,
        /// For a compare-and-set, whether it wrote.
        written: bool,
    },
    /// Refused before it was proposed: it never took effect.
    Failed,
    /// The client gave up without an answer: it may or may not have taken effect.
    Unknown,
}

/// One operation of one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryOp {
    /// The client.
    pub client: u64,
    /// The register.
    pub key: u64,
    /// The operation.
    pub kind: OpKind,
    /// Logical time of the invocation.
    pub invoke: u64,
    /// The outcome.
    pub outcome: Outcome,
}

/// An operation ready for the search.
#[derive(Clone, Debug)]
struct Candidate {
    invoke: u64,
    /// `u64::MAX` for a write that took effect without an answer.
    response: u64,
    kind: OpKind,
    /// The observed result (`None`: unconstrained).
    read: Option<Option<u64>>,
    written: Option<bool>,
    /// Position of the write in the register's write history (writes that took effect).
    rank: Option<usize>,
}

/// Checks every register's history; `writes_of(key)` gives the values that took effect
/// on the register, from the final state. Fails with a description of the first
/// register whose history has no linearization, or when `steps_max` search steps did not
/// settle it.
pub fn check_linearizable(
    ops: &[HistoryOp],
    writes_of: impl Fn(u64) -> Vec<u64>,
    steps_max: u64,
) -> Result<u64, String> {
    let keys: BTreeSet<u64> = ops.iter().map(|op| op.key).collect();
    let mut steps = 0;
    for key in keys {
        let writes: BTreeMap<u64, usize> = writes_of(key)
            .into_iter()
            .enumerate()
            .map(|(rank, value)| (value, rank))
            .collect();
        let candidates: Vec<Candidate> = ops
            .iter()
            .filter(|op| op.key == key)
            .filter_map(|op| candidate(op, &writes))
            .collect();
        let mut search = Search {
            candidates,
            memo: BTreeSet::new(),
            steps: 0,
            steps_max,
        };
        let done = vec![0u64; search.candidates.len().div_ceil(64)];
        let found = search.run(&done, None, 0);
        steps += search.steps;
        match found {
            Some(true) => {}
            Some(false) => return Err(format!("register {key}: no linearization of {:?}", search.candidates)),
            None => return Err(format!("register {key}: search exceeded {steps_max} steps")),
        }
    }
    Ok(steps)
}

fn candidate(op: &HistoryOp, writes: &BTreeMap<u64, usize>) -> Option<Candidate> {
    let written_value = match op.kind {
        OpKind::Put(value) | OpKind::Cas { new: value, .. } => Some(value),
        OpKind::Get => None,
    };
    let rank = written_value.and_then(|value| writes.get(&value).copied());
    match &op.outcome {
        Outcome::Ok {
            response,
            value,
            written,
        } => {
            let read = matches!(op.kind, OpKind::Get).then_some(*value);
            let written = matches!(op.kind, OpKind::Cas { .. }).then_some(*written);
            // An acknowledged failed compare-and-set wrote nothing, whatever its value.
            let rank = rank.filter(|_| written != Some(false));
            Some(Candidate {
                invoke: op.invoke,
                response: *response,
                kind: op.kind.clone(),
                read,
                written,
                rank,
            })
        }
        Outcome::Unknown | Outcome::Pending => rank.map(|rank| Candidate {
            invoke: op.invoke,
            response: u64::MAX,
            kind: op.kind.clone(),
            read: None,
            written: Some(true),
            rank: Some(rank),
        }),
        Outcome::Failed => None,
    }
}

struct Search {
    candidates: Vec<Candidate>,
    memo: BTreeSet<(Vec<u64>, Option<u64>)>,
    steps: u64,
    steps_max: u64,
}

impl Search {
    /// `Some(found)`, or `None` when the step budget ran out. `writes_done` writes of the
    /// write history are linearized; only the next one may come next.
    fn run(&mut self, done: &[u64], value: Option<u64>, writes_done: usize) -> Option<bool> {
        let is_done = |index: usize| done[index / 64] & (1 << (index % 64)) != 0;
        let open: Vec<usize> = (0..self.candidates.len()).filter(|index| !is_done(*index)).collect();
        if open.is_empty() {
            return Some(true);
        }
        let first_response = open
            .iter()
            .map(|index| self.candidates[*index].response)
            .min()
            .unwrap_or(u64::MAX);
        for index in open {
            let candidate = &self.candidates[index];
            if candidate.invoke >= first_response || candidate.rank.is_some_and(|rank| rank != writes_done) {
                continue;
            }
            let is_write = candidate.rank.is_some();
            self.steps += 1;
            if self.steps > self.steps_max {
                return None;
            }
            let Some(next_value) = step(candidate, value) else {
                continue;
            };
            let mut next_done = done.to_vec();
            next_done[index / 64] |= 1 << (index % 64);
            if !self.memo.insert((next_done.clone(), next_value)) {
                continue;
            }
            match self.run(&next_done, next_value, writes_done + usize::from(is_write)) {
                Some(false) => {}
                other => return other,
            }
        }
        Some(false)
    }
}

/// The register after `candidate` runs on `value`, or `None` if its observed result
/// contradicts `value`.
fn step(candidate: &Candidate, value: Option<u64>) -> Option<Option<u64>> {
    match candidate.kind {
        OpKind::Put(new) => Some(Some(new)),
        OpKind::Get => (candidate.read.is_none_or(|read| read == value)).then_some(value),
        OpKind::Cas { expected, new } => {
            let matches = expected == value;
            if candidate.written.is_some_and(|written| written != matches) {
                return None;
            }
            Some(if matches { Some(new) } else { value })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, kind: OpKind, invoke: u64, response: u64, value: Option<u64>, written: bool) -> HistoryOp {
        HistoryOp {
            client,
            key: 1,
            kind,
            invoke,
            outcome: Outcome::Ok {
                response,
                value,
                written,
            },
        }
    }

    #[test]
    fn a_stale_read_is_caught_and_a_concurrent_one_is_not() {
        let write = op(1, OpKind::Put(5), 1, 2, None, true);
        let stale = op(2, OpKind::Get, 3, 4, None, false);
        let writes = |_| vec![5];
        assert!(check_linearizable(&[write.clone(), stale], writes, 1000).is_err());
        let concurrent = op(2, OpKind::Get, 1, 4, None, false);
        assert!(check_linearizable(&[write.clone(), concurrent], writes, 1000).is_ok());
        let fresh = op(2, OpKind::Get, 3, 4, Some(5), false);
        assert!(check_linearizable(&[write, fresh], writes, 1000).is_ok());
    }

    #[test]
    fn compare_and_set_results_must_match_the_register() {
        let write = op(1, OpKind::Put(5), 1, 2, None, true);
        let lying_cas = op(
            2,
            OpKind::Cas {
                expected: Some(5),
                new: 6,
            },
            3,
            4,
            None,
            false,
        );
        assert!(check_linearizable(&[write.clone(), lying_cas], |_| vec![5], 1000).is_err());
        let cas = op(
            2,
            OpKind::Cas {
                expected: Some(5),
                new: 6,
            },
            3,
            4,
            None,
            true,
        );
        let read = op(3, OpKind::Get, 5, 6, Some(6), false);
        assert!(check_linearizable(&[write, cas, read], |_| vec![5, 6], 1000).is_ok());
    }

    #[test]
    fn an_unknown_write_counts_only_if_it_took_effect() {
        let unknown = HistoryOp {
            client: 1,
            key: 1,
            kind: OpKind::Put(7),
            invoke: 1,
            outcome: Outcome::Unknown,
        };
        let read = op(2, OpKind::Get, 10, 11, Some(7), false);
        assert!(check_linearizable(&[unknown.clone(), read.clone()], |_| vec![7], 1000).is_ok());
        assert!(check_linearizable(&[unknown, read], |_| vec![], 1000).is_err());
    }
}
