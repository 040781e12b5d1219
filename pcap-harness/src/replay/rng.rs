//! A tiny seeded PRNG (SplitMix64 from `rand_xoshiro`): replay runs are reproducible from
//! `--seed`.

use rand_core::SeedableRng;
use rand_xoshiro::SplitMix64;

/// SplitMix64 generator whose state starts at the seed.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::seed_from_u64(seed))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        rand_core::Rng::next_u64(&mut self.0)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// A lowercase hex token of `n` random bytes.
    pub fn token(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| format!("{:02x}", self.next_u64() as u8))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_outputs_as_the_reference_splitmix64() {
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(Rng::new(42).next_u64(), 0xBDD7_3226_2FEB_6E95);
    }
}
