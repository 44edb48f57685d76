//! Deterministic rendezvous scores.
//!
//! A score must be bit-identical on every machine, or two clients would disagree on where a
//! fragment lives. Draws are integer hashes; weights enter through `-ln(u) / weight`, with
//! `ln` computed from IEEE-754 basic operations (exact on every conforming platform; Rust
//! never fuses multiply-add on its own) instead of the platform's `libm`.

use crate::locator::Locator;
use crate::pool::DeviceId;

/// SplitMix64 finalizer: a bijective 64-bit mix.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous draw of one device for one fragment position of one chunk.
pub(crate) fn draw(locator: &Locator, position: usize, device: DeviceId) -> u64 {
    let bytes = locator.as_bytes();
    let mut low = [0u8; 8];
    let mut high = [0u8; 8];
    low.copy_from_slice(&bytes[0..8]);
    high.copy_from_slice(&bytes[8..16]);
    let salt = ((position as u64) << 32) | u64::from(device.0);
    mix64(u64::from_le_bytes(low) ^ mix64(u64::from_le_bytes(high) ^ mix64(salt ^ 0x9e37_79b9_7f4a_7c15)))
}

/// Weighted rendezvous key: `-ln(u) / weight` with `u` uniform in (0, 1) from the draw.
/// Lower keys win; a device of weight `w` wins with probability `w / Σw`.
pub(crate) fn weighted_key(draw: u64, weight: u32) -> f64 {
    // 53 bits of the draw, centred in its interval so that u is never 0 or 1.
    let unit = ((draw >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -ln_deterministic(unit) / f64::from(weight)
}

/// Natural logarithm of a positive, normal `x` from basic IEEE-754 operations only.
fn ln_deterministic(x: f64) -> f64 {
    const LN_2: f64 = std::f64::consts::LN_2;
    const SQRT_2: f64 = std::f64::consts::SQRT_2;
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut mantissa = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | (1023u64 << 52));
    if mantissa > SQRT_2 {
        mantissa /= 2.0;
        exponent += 1;
    }
    // ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716: 11 odd terms reach 1e-17.
    let s = (mantissa - 1.0) / (mantissa + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut denominator = 1.0;
    for _ in 0..12 {
        sum += term / denominator;
        term *= s2;
        denominator += 2.0;
    }
    exponent as f64 * LN_2 + 2.0 * sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_matches_std_closely() {
        let mut x = 1e-16;
        while x < 1.0 {
            let ours = ln_deterministic(x);
            let reference = x.ln();
            assert!((ours - reference).abs() <= 1e-12 * reference.abs().max(1.0), "{x}");
            x *= 1.37;
        }
    }

    #[test]
    fn draws_differ_by_position_and_device() {
        let locator = Locator([7; 32]);
        let a = draw(&locator, 0, DeviceId(1));
        assert_ne!(a, draw(&locator, 1, DeviceId(1)));
        assert_ne!(a, draw(&locator, 0, DeviceId(2)));
        assert_eq!(a, draw(&locator, 0, DeviceId(1)));
    }
}
