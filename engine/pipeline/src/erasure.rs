//! Durability schemes: N-copy replication and k+m Reed-Solomon erasure coding.
//!
//! Reed-Solomon is `reed-solomon-erasure` over GF(2^8) with its SIMD kernels (decision
//! record 0003: it is the fastest of the measured candidates at both encode and degraded
//! decode of chunk-sized stripes). A sealed chunk (ciphertext ‖ tag) is split into `k`
//! data shards of equal length (the last one zero-padded), and `m` parity shards are
//! computed over them. A replica is the whole sealed chunk.

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::error::Error;

/// Most data shards of a k+m scheme.
pub const DATA_SHARDS_MAX: usize = 64;
/// Most parity shards of a k+m scheme.
pub const PARITY_SHARDS_MAX: usize = 32;
/// Most copies of a replicated scheme.
pub const REPLICAS_MAX: usize = 16;
/// Shards are padded to a multiple of this (SIMD-friendly, keeps fragment sizes round).
pub const SHARD_ALIGN_BYTES: usize = 64;

/// How a pool stores a chunk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Durability {
    /// `n` full copies; any one reconstructs.
    Replicas(u8),
    /// `data` data shards plus `parity` parity shards; any `data` of them reconstruct.
    ErasureCoded {
        /// k.
        data: u8,
        /// m.
        parity: u8,
    },
}

impl Durability {
    /// Checks the ranges: 1..=16 replicas; k in 1..=64, m in 1..=32.
    pub fn validate(&self) -> Result<(), Error> {
        match *self {
            Durability::Replicas(count) if (1..=REPLICAS_MAX).contains(&usize::from(count)) => {
                Ok(())
            }
            Durability::Replicas(count) => Err(Error::invalid(format!(
                "{count} replicas is not in 1..={REPLICAS_MAX}"
            ))),
            Durability::ErasureCoded { data, parity }
                if (1..=DATA_SHARDS_MAX).contains(&usize::from(data))
                    && (1..=PARITY_SHARDS_MAX).contains(&usize::from(parity)) =>
            {
                Ok(())
            }
            Durability::ErasureCoded { data, parity } => Err(Error::invalid(format!(
                "erasure coding {data}+{parity} is out of range (k in 1..={DATA_SHARDS_MAX}, m in 1..={PARITY_SHARDS_MAX})"
            ))),
        }
    }

    /// Fragments written per chunk (`n`, or `k + m`).
    pub fn fragments_total(&self) -> usize {
        match *self {
            Durability::Replicas(count) => usize::from(count),
            Durability::ErasureCoded { data, parity } => usize::from(data) + usize::from(parity),
        }
    }

    /// Fragments needed to read a chunk (1, or `k`).
    pub fn fragments_needed(&self) -> usize {
        match *self {
            Durability::Replicas(_) => 1,
            Durability::ErasureCoded { data, .. } => usize::from(data),
        }
    }

    /// Fragment losses the chunk survives.
    pub fn losses_tolerated(&self) -> usize {
        self.fragments_total() - self.fragments_needed()
    }

    /// Payload bytes of each fragment for a sealed chunk of `sealed_bytes`.
    pub fn shard_bytes(&self, sealed_bytes: usize) -> usize {
        match *self {
            Durability::Replicas(_) => sealed_bytes,
            Durability::ErasureCoded { data, .. } => {
                let data = usize::from(data).max(1);
                sealed_bytes.div_ceil(data).div_ceil(SHARD_ALIGN_BYTES) * SHARD_ALIGN_BYTES
            }
        }
    }

    /// Wire encoding in fragment headers: (scheme, k, m).
    pub(crate) fn to_wire(self) -> (u8, u8, u8) {
        match self {
            Durability::Replicas(count) => (1, 1, count.saturating_sub(1)),
            Durability::ErasureCoded { data, parity } => (2, data, parity),
        }
    }

    /// Inverse of [`Durability::to_wire`].
    pub(crate) fn from_wire(scheme: u8, data: u8, parity: u8) -> Option<Durability> {
        let durability = match scheme {
            1 if data == 1 => Durability::Replicas(parity.checked_add(1)?),
            2 => Durability::ErasureCoded { data, parity },
            _ => return None,
        };
        durability.validate().ok().map(|()| durability)
    }
}

/// A Reed-Solomon codec for one k+m, reused across chunks (the pipelines and repair keep
/// one per k+m; public for stage benchmarks).
pub struct Codec {
    data: usize,
    parity: usize,
    inner: ReedSolomon,
}

impl Codec {
    /// A codec for `data` + `parity` shards.
    pub fn new(data: usize, parity: usize) -> Result<Codec, Error> {
        let inner = ReedSolomon::new(data, parity)
            .map_err(|error| Error::invalid(format!("Reed-Solomon {data}+{parity}: {error:?}")))?;
        Ok(Codec { data, parity, inner })
    }

    /// Whether this codec is for `data` + `parity`.
    pub fn matches(&self, data: usize, parity: usize) -> bool {
        self.data == data && self.parity == parity
    }

    /// Computes the parity shards of `shards` (`k + m` shards of `shard_bytes` laid out
    /// back to back: data first, then parity).
    pub fn encode(&self, shards: &mut [u8], shard_bytes: usize) -> Result<(), Error> {
        let (data, parity) = shards.split_at_mut(self.data * shard_bytes);
        let data: Vec<&[u8]> = data.chunks_exact(shard_bytes).collect();
        let mut parity: Vec<&mut [u8]> = parity.chunks_exact_mut(shard_bytes).collect();
        self.inner
            .encode_sep(&data, &mut parity)
            .map_err(|error| Error::invalid(format!("Reed-Solomon encode: {error:?}")))
    }

    /// Rebuilds the shards not marked present in `present` (data only, or all). Shards
    /// are laid out back to back in `shards`.
    pub fn reconstruct(
        &self,
        shards: &mut [u8],
        shard_bytes: usize,
        present: &[bool],
        data_only: bool,
    ) -> Result<(), Error> {
        let mut slots: Vec<(&mut [u8], bool)> = shards
            .chunks_exact_mut(shard_bytes)
            .zip(present.iter().copied())
            .collect();
        let result = if data_only {
            self.inner.reconstruct_data(&mut slots)
        } else {
            self.inner.reconstruct(&mut slots)
        };
        result.map_err(|_| Error::Corrupt {
            reason: "Reed-Solomon reconstruction failed",
        })
    }

    /// Whether the parity shards agree with the data shards.
    pub fn verify(&self, shards: &[u8], shard_bytes: usize) -> bool {
        let slices: Vec<&[u8]> = shards.chunks_exact(shard_bytes).collect();
        self.inner.verify(&slices).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        assert!(Durability::Replicas(0).validate().is_err());
        assert!(Durability::Replicas(3).validate().is_ok());
        assert!(Durability::Replicas(17).validate().is_err());
        assert!(Durability::ErasureCoded { data: 4, parity: 2 }.validate().is_ok());
        assert!(Durability::ErasureCoded { data: 0, parity: 2 }.validate().is_err());
        assert!(Durability::ErasureCoded { data: 4, parity: 0 }.validate().is_err());
        assert!(Durability::ErasureCoded { data: 65, parity: 2 }.validate().is_err());
        assert!(Durability::ErasureCoded { data: 8, parity: 33 }.validate().is_err());
    }

    #[test]
    fn shard_bytes_cover_the_sealed_chunk() {
        let ec = Durability::ErasureCoded { data: 8, parity: 3 };
        for sealed in [1usize, 17, 1000, 1 << 20, (1 << 20) + 16] {
            let shard = ec.shard_bytes(sealed);
            assert!(shard * 8 >= sealed);
            assert_eq!(shard % SHARD_ALIGN_BYTES, 0);
            assert!(shard * 8 < sealed + 8 * SHARD_ALIGN_BYTES);
        }
        assert_eq!(Durability::Replicas(3).shard_bytes(1000), 1000);
    }

    #[test]
    fn wire_round_trip() {
        for durability in [
            Durability::Replicas(1),
            Durability::Replicas(3),
            Durability::ErasureCoded { data: 4, parity: 2 },
            Durability::ErasureCoded { data: 8, parity: 3 },
        ] {
            let (scheme, data, parity) = durability.to_wire();
            assert_eq!(Durability::from_wire(scheme, data, parity), Some(durability));
        }
        assert_eq!(Durability::from_wire(3, 4, 2), None);
        assert_eq!(Durability::from_wire(2, 0, 2), None);
    }
}
