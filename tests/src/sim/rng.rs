//! The simulation's one source of randomness: splitmix64, written here so
//! a seed means the same run whatever version of a crate is built.

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.next_u64() % 100 < u64::from(percent)
    }

    /// A seed for something derived from this run (a raft node's election
    /// timeouts), so adding a draw elsewhere does not shift it.
    pub fn derive(seed: u64, a: u64, b: u64, c: u64) -> u64 {
        let mut r = Rng::new(seed ^ a.rotate_left(17) ^ b.rotate_left(34) ^ c.rotate_left(51));
        r.next_u64()
    }
}
