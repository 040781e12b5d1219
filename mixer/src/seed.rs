//! Every "random" choice of the mixer, drawn from the configured seed (never from the OS).

use crate::ParticipantId;

/// splitmix64: the only source of "randomness" (seeded, deterministic).
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
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
