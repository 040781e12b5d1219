//! The SIP core's PRNG is replicated to the backup and its tags/branches are compared, so
//! its outputs must stay those of the hand-written splitmix64 it replaced.

use sip_core::state::Rng;

/// The splitmix64 that `Rng` used before it wrapped `rand_xoshiro::SplitMix64`.
fn old_splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn outputs_are_bit_identical_to_the_old_splitmix64() {
    for seed in [0u64, 42, u64::MAX] {
        let mut old = seed;
        let mut rng = Rng::new(seed);
        for _ in 0..1000 {
            assert_eq!(rng.next_u64(), old_splitmix(&mut old), "seed {seed}");
        }
    }
    // Pinned first outputs of the reference splitmix64.
    assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(Rng::new(42).next_u64(), 0xBDD7_3226_2FEB_6E95);
    assert_eq!(Rng::new(0).tag(), "e220a8397b1dcdaf");
    assert_eq!(Rng::new(42).branch(), "z9hG4bKbdd732262feb6e95");
}

#[test]
fn replicated_encoding_is_the_bare_state() {
    let mut rng = Rng::new(42);
    rng.next_u64();
    let mut state = 42u64;
    old_splitmix(&mut state);
    // What the backup receives (postcard) is the same bytes as the old `{ state: u64 }`.
    assert_eq!(
        postcard::to_allocvec(&rng).unwrap(),
        postcard::to_allocvec(&state).unwrap()
    );
    let back: Rng = postcard::from_bytes(&postcard::to_allocvec(&rng).unwrap()).unwrap();
    assert_eq!(back, rng);
    let json = serde_json::to_string(&rng).unwrap();
    let mut again: Rng = serde_json::from_str(&json).unwrap();
    assert_eq!(again.next_u64(), rng.clone().next_u64());
}
