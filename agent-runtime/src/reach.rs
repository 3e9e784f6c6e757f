//! Reachability between states, for joins of a fully known graph.
//!
//! Invariant: `reaches(a, b)` is true exactly when a path of one or more edges leads from
//! `a` to `b` (so `reaches(a, a)` only when `a` is on a cycle).

/// A dense transitive closure, one bit per pair.
#[derive(Clone, Debug)]
pub(crate) struct Reach {
    n: usize,
    words: usize,
    bits: Vec<u64>,
}

impl Reach {
    /// The closure of `edges` over `n` states (Floyd–Warshall on bitsets: O(n³/64)).
    pub(crate) fn new(n: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let words = n.div_ceil(64).max(1);
        let mut bits = vec![0u64; n * words];
        for (a, b) in edges {
            bits[a * words + b / 64] |= 1 << (b % 64);
        }
        for k in 0..n {
            let (kw, kb) = (k / 64, 1u64 << (k % 64));
            let row_k: Vec<u64> = bits[k * words..(k + 1) * words].to_vec();
            for i in 0..n {
                if bits[i * words + kw] & kb != 0 {
                    for w in 0..words {
                        bits[i * words + w] |= row_k[w];
                    }
                }
            }
        }
        Reach { n, words, bits }
    }

    #[inline]
    pub(crate) fn reaches(&self, a: usize, b: usize) -> bool {
        debug_assert!(a < self.n && b < self.n);
        self.bits[a * self.words + b / 64] & (1 << (b % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::Reach;

    #[test]
    fn closure_follows_paths_and_cycles() {
        // 0 -> 1 -> 2, 3 -> 3, 4 isolated
        let r = Reach::new(5, [(0, 1), (1, 2), (3, 3)]);
        assert!(r.reaches(0, 2));
        assert!(!r.reaches(2, 0));
        assert!(!r.reaches(0, 0));
        assert!(r.reaches(3, 3));
        assert!(!r.reaches(4, 4));
    }

    #[test]
    fn works_past_one_word() {
        let edges: Vec<_> = (0..199).map(|i| (i, i + 1)).collect();
        let r = Reach::new(200, edges);
        assert!(r.reaches(0, 199));
        assert!(r.reaches(70, 130));
        assert!(!r.reaches(130, 70));
    }
}
