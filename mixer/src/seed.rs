//! Every "random" choice of the mixer, drawn from the configured seed (never from the OS).

use crate::ParticipantId;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::SplitMix64;

/// splitmix64: the only source of "randomness" (seeded, deterministic). The first output
/// of `rand_xoshiro`'s SplitMix64 whose state is `x`, i.e. the reference finalizer of
/// `x + golden gamma`.
pub(crate) fn splitmix64(x: u64) -> u64 {
    SplitMix64::seed_from_u64(x).next_u64()
}

/// Deterministic draw number `k` for participant `id` in a room seeded with `seed`.
pub(crate) fn draw(seed: u64, id: ParticipantId, k: u64) -> u64 {
    splitmix64(splitmix64(seed ^ splitmix64(id)) ^ k)
}

/// The output stream origins a mixer seeded with `seed` gives participant `id`:
/// `(ssrc, first sequence number, timestamp origin)`. Pure function, so a backup knows them.
pub fn stream_origins(seed: u64, id: ParticipantId) -> (u32, u16, u32) {
    let ssrc = (draw(seed, id, 1) as u32).max(1);
    (ssrc, draw(seed, id, 2) as u16, draw(seed, id, 3) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written splitmix64 this module used before `rand_xoshiro`: SSRCs, origins
    /// and CNAMEs are compared across primary and backup, so they must not change.
    fn old_splitmix64(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    #[test]
    fn bit_identical_to_the_old_splitmix64() {
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(42), 0xBDD7_3226_2FEB_6E95);
        let mut x = 0x1234_5678_9ABC_DEF0u64;
        for _ in 0..1000 {
            assert_eq!(splitmix64(x), old_splitmix64(x));
            x = old_splitmix64(x);
        }
        assert_eq!(splitmix64(u64::MAX), old_splitmix64(u64::MAX));
    }
}
