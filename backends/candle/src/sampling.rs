//! Picking the next token from logits, in llama.cpp's default order:
//! repeat penalty, top-k, top-p, min-p, temperature, then a draw.

use corral_sdk::backend::SamplingParams;

/// SplitMix64: small, seedable and good enough for drawing tokens.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: &SamplingParams) -> Self {
        Sampler {
            params: params.clone(),
            rng: Rng(params.seed.unwrap_or_else(random_seed)),
        }
    }

    /// Chooses the next token; `history` is every token so far (prompt and
    /// generated), for the repeat penalty.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = &self.params;
        if p.repeat_penalty != 1.0 && p.repeat_last_n > 0 {
            let start = history.len().saturating_sub(p.repeat_last_n as usize);
            let mut seen = std::collections::HashSet::new();
            for &t in &history[start..] {
                if let Some(l) = logits.get_mut(t as usize) {
                    if seen.insert(t) {
                        *l = if *l > 0.0 {
                            *l / p.repeat_penalty
                        } else {
                            *l * p.repeat_penalty
                        };
                    }
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(logits);
        }

        let mut cands: Vec<(u32, f32)> = if p.min_p > 0.0 && p.top_k == 0 {
            // Cheap pre-filter so the sort below does not see the whole
            // vocabulary: min-p would drop these anyway.
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let floor = max + p.min_p.ln();
            logits
                .iter()
                .enumerate()
                .filter(|(_, &l)| l >= floor)
                .map(|(i, &l)| (i as u32, l))
                .collect()
        } else {
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l))
                .collect()
        };
        let desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        let k = p.top_k as usize;
        if k > 0 && k < cands.len() {
            cands.select_nth_unstable_by(k - 1, desc);
            cands.truncate(k);
        }
        cands.sort_unstable_by(desc);
        if cands.is_empty() {
            return argmax(logits);
        }

        let probs = softmax(cands.iter().map(|c| c.1));
        let mut keep = cands.len();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, pr) in probs.iter().enumerate() {
                cum += pr;
                if cum >= p.top_p {
                    keep = keep.min(i + 1);
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            keep = keep.min(probs.iter().take_while(|&&pr| pr >= floor).count().max(1));
        }
        cands.truncate(keep);

        let probs = softmax(cands.iter().map(|c| c.1 / p.temperature));
        let mut r = self.rng.next_f32();
        for (c, pr) in cands.iter().zip(&probs) {
            if r < *pr {
                return c.0;
            }
            r -= pr;
        }
        cands[cands.len() - 1].0
    }
}

fn softmax(logits: impl Iterator<Item = f32> + Clone) -> Vec<f32> {
    let max = logits.clone().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Index of the largest logit; the first one on ties, as llama.cpp.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            seed: Some(seed),
            ..SamplingParams::default()
        }
    }

    #[test]
    fn greedy_takes_the_largest() {
        let mut s = Sampler::new(&params(0.0, 1));
        let mut logits = vec![0.1, 3.0, 2.0, 3.0];
        assert_eq!(s.sample(&mut logits, &[]), 1);
    }

    #[test]
    fn repeat_penalty_moves_greedy_away() {
        let mut p = params(0.0, 1);
        p.repeat_penalty = 2.0;
        let mut s = Sampler::new(&p);
        let mut logits = vec![0.0, 3.0, 2.0];
        assert_eq!(s.sample(&mut logits, &[1]), 2);
    }

    #[test]
    fn same_seed_same_draws_and_top_k_one_is_greedy() {
        let logits = vec![1.0, 1.1, 0.9, 1.05, 0.2];
        let draw = |seed| {
            let mut s = Sampler::new(&params(1.0, seed));
            (0..20)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let mut p = params(1.5, 3);
        p.top_k = 1;
        let mut s = Sampler::new(&p);
        assert_eq!(s.sample(&mut logits.clone(), &[]), 1);
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let mut p = params(1.0, 5);
        p.top_k = 0;
        p.top_p = 1.0;
        p.min_p = 0.5;
        p.repeat_penalty = 1.0;
        let mut s = Sampler::new(&p);
        for _ in 0..50 {
            let t = s.sample(&mut [5.0, 4.9, -3.0, -10.0], &[]);
            assert!(t < 2);
        }
    }
}
