//! The generator's random numbers: a small seeded PRNG (xoshiro256**, seeded through
//! SplitMix64) and the few distributions the data model needs.
//!
//! It is written here rather than taken from `rand` so that the stream for a seed is
//! fixed by this file alone: `rand`'s range and distribution algorithms have changed
//! between major versions, which would silently change every generated data set and
//! committed sample. Nothing here is meant for cryptography.

/// SplitMix64 step: a good 64-bit mixer, used to seed and to hash small tuples.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes a sequence of integers to one (order matters); stable across versions.
pub fn hash(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x6a09_e667_f3bc_c908, |h, &p| mix64(h ^ mix64(p)))
}

/// A seeded xoshiro256** generator.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut s = [0u64; 4];
        for w in &mut s {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            *w = mix64(z);
        }
        // xoshiro's state must not be all zero; SplitMix64 output never is four zeros
        // in a row, but be explicit.
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    /// An independent generator derived from this one's next output and `salt`, so a
    /// part of the data can be regenerated without replaying the rest.
    pub fn fork(&mut self, salt: u64) -> Rng {
        Rng::new(hash(&[self.next_u64(), salt]))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-high (bias below 2^-40 for our `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform `usize` in `0..n` (`n > 0`).
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// An element chosen with probability proportional to its weight.
    pub fn weighted<'a, T>(&mut self, items: &'a [(T, f64)]) -> &'a T {
        let total: f64 = items.iter().map(|(_, w)| w).sum();
        let mut x = self.f64() * total;
        for (item, w) in items {
            if x < *w {
                return item;
            }
            x -= w;
        }
        &items[items.len() - 1].0
    }

    /// A geometric-like count: `floor(-mean * ln(1 - u))`, mean about `mean`.
    pub fn exp_int(&mut self, mean: f64) -> u64 {
        (-mean * (1.0 - self.f64()).ln()).floor() as u64
    }

    /// Lowercase hex digits.
    pub fn hex(&mut self, n: usize) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        (0..n).map(|_| HEX[self.index(16)] as char).collect()
    }
}

/// Ranks `0..n` with probability proportional to `1 / (rank + 1)^s`: a few hot
/// values, a long tail of rare ones.
#[derive(Clone, Debug)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n > 0` ranks with exponent `s`.
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|k| {
                total += 1.0 / ((k + 1) as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    /// A random rank.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let total = *self.cumulative.last().expect("n > 0");
        let x = rng.f64() * total;
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.cumulative.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_fixed_for_a_seed() {
        // Pinned values: if these change, every generated data set changes.
        let mut r = Rng::new(42);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        let mut again = Rng::new(42);
        assert_eq!(got, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_ne!(got, {
            let mut o = Rng::new(43);
            (0..3).map(|_| o.next_u64()).collect::<Vec<_>>()
        });
        assert_eq!(got, PINNED);
    }

    const PINNED: [u64; 3] = [
        13_696_896_915_399_030_466,
        12_641_092_763_546_669_283,
        14_580_102_322_132_234_639,
    ];

    #[test]
    fn xoshiro_reference_vector() {
        // The reference implementation's output for state {1, 2, 3, 4}.
        let mut r = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut r = Rng::new(7);
        for _ in 0..10_000 {
            assert!(r.below(3) < 3);
            let x = r.range(5, 9);
            assert!((5..=9).contains(&x));
            let f = r.f64();
            assert!((0.0..1.0).contains(&f));
        }
        assert_eq!(r.hex(12).len(), 12);
    }

    #[test]
    fn zipf_is_skewed_with_a_tail() {
        let z = Zipf::new(1000, 1.1);
        let mut r = Rng::new(1);
        let mut hits = vec![0u32; 1000];
        for _ in 0..20_000 {
            hits[z.sample(&mut r)] += 1;
        }
        assert!(hits[0] > hits[1] && hits[1] > hits[10]);
        assert!(hits[0] > 2000, "{}", hits[0]);
        // The tail is reached.
        assert!(hits[500..].iter().any(|&h| h > 0));
    }

    #[test]
    fn weighted_respects_zero_weight() {
        let mut r = Rng::new(3);
        let items = [("a", 1.0), ("b", 0.0), ("c", 3.0)];
        for _ in 0..1000 {
            assert_ne!(*r.weighted(&items), "b");
        }
    }
}
