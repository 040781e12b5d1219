//! Every "random" choice of the switcher, drawn from the configured seed (never from the OS).
//!
//! The same splitmix64 construction as `mixer`'s seed module, with draw numbers of its own
//! (`0x5649_xxxx`, "VI"), so that a room whose audio mixer and video switcher share one seed
//! gets different SSRCs for a participant's audio and video streams (they share a transport
//! under BUNDLE).

use crate::ParticipantId;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::SplitMix64;

const VIDEO: u64 = 0x5649_0000;

pub(crate) fn splitmix64(x: u64) -> u64 {
    SplitMix64::seed_from_u64(x).next_u64()
}

fn draw(seed: u64, id: ParticipantId, k: u64) -> u64 {
    splitmix64(splitmix64(seed ^ splitmix64(id)) ^ (VIDEO | k))
}

/// Where the output video stream a switcher seeded with `seed` sends to participant `id`
/// starts. Pure function of `(seed, id)`, so a backup knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origins {
    /// SSRC of the output stream (never 0); also the sender SSRC of our feedback to `id`.
    pub ssrc: u32,
    /// First sequence number.
    pub seq: u16,
    /// First timestamp.
    pub timestamp: u32,
    /// First picture ID (15 bits).
    pub picture_id: u16,
    /// First TL0PICIDX.
    pub tl0_pic_idx: u8,
}

/// The output stream origins of participant `id` in a switcher seeded with `seed`.
pub fn stream_origins(seed: u64, id: ParticipantId) -> Origins {
    Origins {
        ssrc: (draw(seed, id, 1) as u32).max(1),
        seq: draw(seed, id, 2) as u16,
        timestamp: draw(seed, id, 3) as u32,
        picture_id: draw(seed, id, 4) as u16 & 0x7FFF,
        tl0_pic_idx: draw(seed, id, 5) as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mixer::stream_origins(seed, id).0`, the audio SSRC of the same participant.
    fn mixer_audio_ssrc(seed: u64, id: u64) -> u32 {
        (splitmix64(splitmix64(seed ^ splitmix64(id)) ^ 1) as u32).max(1)
    }

    #[test]
    fn video_ssrc_differs_from_the_audio_one() {
        for id in 0..2000 {
            let v = stream_origins(42, id).ssrc;
            assert_ne!(v, mixer_audio_ssrc(42, id));
            assert_ne!(v, 0);
        }
        assert_eq!(stream_origins(7, 3), stream_origins(7, 3));
    }
}
