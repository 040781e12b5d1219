//! Media port numbering: even RTP ports (RTCP on the next one) from a configured range,
//! handed out round robin so that a port just freed is not reused at once (a late packet
//! of the old call would land in the new one).

use std::collections::BTreeSet;

/// The allocator. Which ports are in use is derived from the calls (not replicated); where
/// the next search starts is replicated (`ServerRecord::next_port`).
#[derive(Clone, Debug)]
pub struct Ports {
    min: u16,
    max: u16,
    /// Next port tried.
    pub next: u16,
    in_use: BTreeSet<u16>,
}

impl Ports {
    /// Ports `min..=max` (`min` rounded up to even).
    pub fn new(min: u16, max: u16) -> Self {
        let min = min + (min & 1);
        Ports {
            min,
            max,
            next: min,
            in_use: BTreeSet::new(),
        }
    }

    /// Number of RTP/RTCP pairs in the range.
    pub fn pairs(&self) -> usize {
        if self.max <= self.min {
            return 0;
        }
        (self.max - self.min).div_ceil(2) as usize
    }

    /// The next free pair after the last one handed out, skipping `refused` (ports the OS
    /// would not bind in this attempt).
    pub fn allocate(&mut self, refused: &BTreeSet<u16>) -> Option<u16> {
        for _ in 0..self.pairs() {
            let p = self.next;
            self.next = if p.checked_add(3).is_none_or(|e| e > self.max) {
                self.min
            } else {
                p + 2
            };
            if self.in_use.contains(&p) || refused.contains(&p) {
                continue;
            }
            self.in_use.insert(p);
            return Some(p);
        }
        None
    }

    /// Mark a pair used (a call taken over keeps its port).
    pub fn take(&mut self, p: u16) {
        self.in_use.insert(p);
    }

    /// Free a pair.
    pub fn release(&mut self, p: u16) {
        self.in_use.remove(&p);
    }

    /// Pairs in use.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_skips_used_and_refused_and_wraps() {
        let mut p = Ports::new(20000, 20007);
        assert_eq!(p.pairs(), 4);
        let none = BTreeSet::new();
        assert_eq!(p.allocate(&none), Some(20000));
        assert_eq!(p.allocate(&[20002].into()), Some(20004));
        p.release(20000);
        assert_eq!(p.allocate(&none), Some(20006));
        // Wraps to the freed 20000 before 20002 (never refused twice in a row here).
        assert_eq!(p.allocate(&none), Some(20000));
        assert_eq!(p.allocate(&none), Some(20002));
        assert_eq!(p.allocate(&none), None);
        assert_eq!(p.in_use(), 4);
    }

    #[test]
    fn odd_minimum_and_top_of_range() {
        let mut p = Ports::new(65531, 65535);
        assert_eq!(p.allocate(&BTreeSet::new()), Some(65532));
        assert_eq!(p.allocate(&BTreeSet::new()), Some(65534));
        assert_eq!(p.allocate(&BTreeSet::new()), None);
    }
}
