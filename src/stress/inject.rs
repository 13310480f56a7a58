//! Failure injection chosen from a seed: whether event `seq` fails is a pure function of
//! `(seed, seq, ratio)`, so the same seed fails the same events in every run.

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether the event with payload `seq` fails under `seed`, for a failing fraction `ratio`.
pub fn fails(seed: u64, seq: u64, ratio: f64) -> bool {
    let u = (mix(mix(seed) ^ seq) >> 11) as f64 / (1u64 << 53) as f64;
    u < ratio
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_choice_and_the_ratio_holds() {
        let pick = |seed| {
            (0..100_000)
                .filter(|&s| fails(seed, s, 0.05))
                .collect::<Vec<_>>()
        };
        let a = pick(42);
        assert_eq!(a, pick(42));
        assert_ne!(a, pick(43));
        // 5,000 expected; a binomial's standard deviation here is about 69.
        assert!((4_700..5_300).contains(&a.len()), "{}", a.len());
        assert!(!fails(1, 1, 0.0) && fails(1, 1, 1.0));
    }
}
