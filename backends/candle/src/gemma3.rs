//! Gemma 3 text model over llama.cpp GGUF weights, written for Corral.
//!
//! candle-transformers' `quantized_gemma3` (0.11.1) disagrees with llama.cpp
//! in ways that ruin the text (see MODELS.md); this one follows llama.cpp:
//! GELU-tanh feed-forward, a sliding window of exactly `sliding_window` keys
//! in prefill and decode, RoPE tables only as long as the context in use,
//! the embedding table kept quantized, and prefill in chunks at any position.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::gguf::{Gguf, LoadError};

/// Hyperparameters read from the GGUF metadata.
#[derive(Debug, Clone)]
pub struct Config {
    pub block_count: usize,
    pub embedding_length: usize,
    pub feed_forward_length: usize,
    pub head_count: usize,
    pub head_count_kv: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub sliding_window: usize,
    /// Every `sliding_window_pattern`-th layer attends globally.
    pub sliding_window_pattern: usize,
    pub rope_base_global: f32,
    pub rope_base_local: f32,
    /// Linear RoPE scaling of the global layers (1 when absent).
    pub rope_scale_global: f32,
    pub final_logit_softcap: Option<f32>,
    pub attention_scale: f64,
    pub vocab_size: usize,
}

impl Config {
    pub fn from_gguf(g: &Gguf) -> Result<Self, LoadError> {
        let a = g.architecture.as_str();
        let key = |k: &str| format!("{a}.{k}");
        let head_count = g.u32(&key("attention.head_count"))? as usize;
        let embedding_length = g.u32(&key("embedding_length"))? as usize;
        let head_dim = g
            .u32_opt(&key("attention.key_length"))?
            .map(|v| v as usize)
            .unwrap_or(embedding_length / head_count.max(1));
        let config = Config {
            block_count: g.u32(&key("block_count"))? as usize,
            embedding_length,
            feed_forward_length: g.u32(&key("feed_forward_length"))? as usize,
            head_count,
            head_count_kv: g
                .u32_opt(&key("attention.head_count_kv"))?
                .map(|v| v as usize)
                .unwrap_or(head_count),
            head_dim,
            rms_eps: g
                .f32_opt(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-6) as f64,
            sliding_window: g.u32(&key("attention.sliding_window"))? as usize,
            sliding_window_pattern: g
                .u32_opt(&key("attention.sliding_window_pattern"))?
                .map(|v| v as usize)
                .unwrap_or(6),
            rope_base_global: g.f32_opt(&key("rope.freq_base"))?.unwrap_or(1_000_000.0),
            rope_base_local: g.f32_opt(&key("rope.local_freq_base"))?.unwrap_or(10_000.0),
            rope_scale_global: g.f32_opt(&key("rope.scaling.factor"))?.unwrap_or(1.0),
            final_logit_softcap: g.f32_opt(&key("final_logit_softcapping"))?,
            attention_scale: 1.0 / (head_dim as f64).sqrt(),
            vocab_size: g.vocab_size(),
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), LoadError> {
        let bad = |what: &str| Err(LoadError::Invalid(format!("bad hyperparameter: {what}")));
        if self.block_count == 0 || self.block_count > 1024 {
            return bad("block_count");
        }
        if self.head_count == 0 || self.head_count_kv == 0 {
            return bad("attention.head_count");
        }
        if self.head_count % self.head_count_kv != 0 {
            return bad("attention.head_count is not a multiple of attention.head_count_kv");
        }
        if self.head_dim == 0 || self.head_dim % 2 != 0 || self.head_dim > 4096 {
            return bad("attention.key_length");
        }
        if self.embedding_length == 0 || self.feed_forward_length == 0 {
            return bad("embedding_length");
        }
        if self.sliding_window == 0 || self.sliding_window_pattern == 0 {
            return bad("attention.sliding_window");
        }
        if !(self.rope_base_global > 0.0 && self.rope_base_local > 0.0) {
            return bad("rope.freq_base");
        }
        if !(self.rope_scale_global.is_finite() && self.rope_scale_global > 0.0) {
            return bad("rope.scaling.factor");
        }
        Ok(())
    }

    fn is_sliding(&self, layer: usize) -> bool {
        (layer + 1) % self.sliding_window_pattern != 0
    }

    /// How many positions before a query a sliding layer attends to.
    fn sliding_view(&self) -> usize {
        self.sliding_window - 1
    }

    /// How many positions a sliding layer keeps when its buffer is full:
    /// its view plus half a window, so that a later request may still go
    /// back that far into the cache (a regenerated answer, an edited turn)
    /// and find the keys it needs.
    fn sliding_keep(&self) -> usize {
        self.sliding_view() + self.sliding_window / 2
    }
}

struct Layer {
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    q_norm: Tensor,
    k_norm: Tensor,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    post_ffn_norm: Tensor,
    sliding: bool,
}

/// cos/sin tables for positions `0..len`.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(head_dim: usize, base: f32, scale: f32, len: usize) -> candle_core::Result<Self> {
        let inv_freq: Vec<f32> = (0..head_dim / 2)
            .map(|i| 1.0 / base.powf(2.0 * i as f32 / head_dim as f32))
            .collect();
        let mut angles = Vec::with_capacity(len * inv_freq.len());
        for pos in 0..len {
            let p = pos as f32 / scale;
            angles.extend(inv_freq.iter().map(|f| p * f));
        }
        let angles = Tensor::from_vec(angles, (len, head_dim / 2), &Device::Cpu)?;
        Ok(Rope {
            cos: angles.cos()?,
            sin: angles.sin()?,
        })
    }

    fn apply(&self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        let len = x.dim(2)?;
        let cos = self.cos.narrow(0, pos, len)?;
        let sin = self.sin.narrow(0, pos, len)?;
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
    }
}

/// Weights and tables shared by every sequence slot.
pub struct Weights {
    config: Config,
    /// Kept quantized: rows are dequantized on lookup.
    embed: Arc<QTensor>,
    output: QMatMul,
    output_norm: Tensor,
    layers: Vec<Layer>,
    rope_local: Rope,
    rope_global: Rope,
    context_length: usize,
}

impl Weights {
    /// Reads the weights, calling `progress` with the fraction done; a
    /// `progress` that returns false abandons the load.
    pub fn load(
        g: &mut Gguf,
        config: Config,
        context_length: usize,
        progress: &mut dyn FnMut(f32) -> bool,
    ) -> Result<Self, LoadError> {
        let c = &config;
        let (d, hd) = (c.embedding_length, c.head_dim);
        let embed = g.qtensor("token_embd.weight", &[c.vocab_size, d])?;
        let embed = Arc::new(requantize(embed)?);
        let output = if g.has_tensor("output.weight") {
            QMatMul::from_arc(Arc::new(requantize(
                g.qtensor("output.weight", &[c.vocab_size, d])?,
            )?))?
        } else {
            QMatMul::from_arc(embed.clone())?
        };
        let output_norm = g.vector("output_norm.weight", d)?;
        let mut layers = Vec::with_capacity(c.block_count);
        for i in 0..c.block_count {
            let mut mm = |name: &str, shape: &[usize]| -> Result<QMatMul, LoadError> {
                let t = g.qtensor(&format!("blk.{i}.{name}.weight"), shape)?;
                Ok(QMatMul::from_arc(Arc::new(requantize(t)?))?)
            };
            let wq = mm("attn_q", &[c.head_count * hd, d])?;
            let wk = mm("attn_k", &[c.head_count_kv * hd, d])?;
            let wv = mm("attn_v", &[c.head_count_kv * hd, d])?;
            let wo = mm("attn_output", &[d, c.head_count * hd])?;
            let gate = mm("ffn_gate", &[c.feed_forward_length, d])?;
            let up = mm("ffn_up", &[c.feed_forward_length, d])?;
            let down = mm("ffn_down", &[d, c.feed_forward_length])?;
            let mut v = |name: &str, len: usize| g.vector(&format!("blk.{i}.{name}.weight"), len);
            layers.push(Layer {
                attn_norm: v("attn_norm", d)?,
                q_norm: v("attn_q_norm", hd)?,
                k_norm: v("attn_k_norm", hd)?,
                post_attn_norm: v("post_attention_norm", d)?,
                ffn_norm: v("ffn_norm", d)?,
                post_ffn_norm: v("post_ffw_norm", d)?,
                wq,
                wk,
                wv,
                wo,
                gate,
                up,
                down,
                sliding: c.is_sliding(i),
            });
            if !progress(0.1 + 0.85 * (i + 1) as f32 / c.block_count as f32) {
                return Err(LoadError::Cancelled);
            }
        }
        let rope_local = Rope::new(hd, c.rope_base_local, 1.0, context_length)?;
        let rope_global = Rope::new(hd, c.rope_base_global, c.rope_scale_global, context_length)?;
        Ok(Weights {
            config,
            embed,
            output,
            output_norm,
            layers,
            rope_local,
            rope_global,
            context_length,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Approximate bytes held by the weights and tables.
    pub fn memory_bytes(&self) -> u64 {
        let tensor = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        let qmm = |m: &QMatMul| match m {
            QMatMul::QTensor(q) => q.storage_size_in_bytes() as u64,
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => tensor(t),
        };
        let mut total = self.embed.storage_size_in_bytes() as u64;
        if !matches!(&self.output, QMatMul::QTensor(q) if Arc::ptr_eq(q, &self.embed)) {
            total += qmm(&self.output);
        }
        for l in &self.layers {
            total += [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]
                .iter()
                .map(|m| qmm(m))
                .sum::<u64>();
        }
        total + 2 * (tensor(&self.rope_local.cos) + tensor(&self.rope_global.cos))
    }
}

/// Q5_0, Q5_1 and Q4_1 have only scalar kernels in candle on x86; Q8_0
/// computes several times faster at a small cost in precision.
fn requantize(t: QTensor) -> Result<QTensor, LoadError> {
    match t.dtype() {
        GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q4_1 => {
            let f = t.dequantize(&Device::Cpu)?;
            Ok(QTensor::quantize(&f, GgmlDType::Q8_0)?)
        }
        _ => Ok(t),
    }
}

/// One layer's keys and values of a sequence.
struct LayerCache {
    /// `(1, kv_heads, capacity, head_dim)`; only `len` positions are valid.
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
    /// Absolute position of the first cached key.
    start: usize,
}

impl LayerCache {
    fn new() -> Self {
        LayerCache {
            k: None,
            v: None,
            len: 0,
            start: 0,
        }
    }

    /// Appends new keys and values and returns all cached ones, the first at
    /// absolute position `start`. When the buffer is full it is reallocated;
    /// with `keep` (sliding-window layers) only the last `keep` cached
    /// positions are carried over, so the buffer stays bounded. The buffer
    /// never holds more than `limit` positions (the context length).
    ///
    /// Kept positions are copied into a new buffer, never shifted within the
    /// old one: with one key head a narrowed cache is contiguous and shares
    /// its storage, which `slice_set` refuses to read from and write to.
    fn append(
        &mut self,
        k: &Tensor,
        v: &Tensor,
        keep: Option<usize>,
        limit: usize,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let add = k.dim(2)?;
        let capacity = self.k.as_ref().map(|t| t.dim(2)).transpose()?.unwrap_or(0);
        if self.len + add > capacity {
            let drop = keep.map_or(0, |keep| self.len.saturating_sub(keep));
            let kept = self.len - drop;
            let need = kept + add;
            // Twice what is needed, so that the next reallocation is at
            // least as many positions away as were kept: a sliding layer
            // must not copy its whole window for every new token.
            let new_capacity = if need * 2 > capacity {
                (need * 2).max(64).min(limit.max(need))
            } else {
                capacity
            };
            let (_, h, _, d) = k.dims4()?;
            let moved = |old: &Option<Tensor>| -> candle_core::Result<Tensor> {
                let t = Tensor::zeros((1, h, new_capacity, d), DType::F32, &Device::Cpu)?;
                if let Some(old) = old {
                    if kept > 0 {
                        t.slice_set(&old.narrow(2, drop, kept)?.contiguous()?, 2, 0)?;
                    }
                }
                Ok(t)
            };
            let (nk, nv) = (moved(&self.k)?, moved(&self.v)?);
            self.k = Some(nk);
            self.v = Some(nv);
            self.len = kept;
            self.start += drop;
        }
        let (kc, vc) = match (&self.k, &self.v) {
            (Some(kc), Some(vc)) => (kc, vc),
            _ => candle_core::bail!("kv cache missing"),
        };
        kc.slice_set(&k.contiguous()?, 2, self.len)?;
        vc.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += add;
        Ok((kc.narrow(2, 0, self.len)?, vc.narrow(2, 0, self.len)?))
    }

    /// Whether the first `p` positions are all cached from `needed` on.
    fn holds(&self, needed: usize, p: usize) -> bool {
        self.start <= needed && p <= self.start + self.len
    }

    /// Forgets every position from `p` on; `p` must be at least `start`.
    fn truncate(&mut self, p: usize) {
        self.len = p.saturating_sub(self.start).min(self.len);
    }
}

/// One sequence: shared weights plus its own key/value cache.
pub struct Gemma3 {
    w: Arc<Weights>,
    caches: Vec<LayerCache>,
    /// Tokens already in the cache.
    pos: usize,
}

/// Longest chunk read in one forward pass during prefill.
const PREFILL_CHUNK: usize = 512;

impl Gemma3 {
    pub fn new(w: Arc<Weights>) -> Self {
        let caches = (0..w.layers.len()).map(|_| LayerCache::new()).collect();
        Gemma3 { w, caches, pos: 0 }
    }

    pub fn reset(&mut self) {
        for c in &mut self.caches {
            *c = LayerCache::new();
        }
        self.pos = 0;
    }

    /// How many tokens the cache holds.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Whether the cache can be cut back to its first `p` tokens and read
    /// on from there. Full-attention layers keep every position; a sliding
    /// layer needs the `sliding_window - 1` positions before `p`, which it
    /// may have dropped to stay bounded.
    pub fn can_rewind(&self, p: usize) -> bool {
        let c = &self.w.config;
        p <= self.pos
            && self
                .w
                .layers
                .iter()
                .zip(&self.caches)
                .all(|(layer, cache)| {
                    let needed = if layer.sliding {
                        p.saturating_sub(c.sliding_view())
                    } else {
                        0
                    };
                    cache.holds(needed, p)
                })
    }

    /// Cuts the cache back to its first `p` tokens, or empties it when that
    /// is not possible (see `can_rewind`). Returns the tokens kept.
    pub fn rewind(&mut self, p: usize) -> usize {
        if p == 0 || !self.can_rewind(p) {
            self.reset();
            return 0;
        }
        for cache in &mut self.caches {
            cache.truncate(p);
        }
        self.pos = p;
        p
    }

    /// Feeds `tokens` after those already cached and returns the logits
    /// (`vocab_size`, f32) after the last one.
    pub fn forward(&mut self, tokens: &[u32]) -> candle_core::Result<Tensor> {
        if tokens.is_empty() {
            candle_core::bail!("no tokens to read");
        }
        if self.pos + tokens.len() > self.w.context_length {
            candle_core::bail!(
                "{} tokens exceed the context of {}",
                self.pos + tokens.len(),
                self.w.context_length
            );
        }
        let vocab = self.w.config.vocab_size as u32;
        if let Some(bad) = tokens.iter().find(|&&t| t >= vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary");
        }
        let mut logits = None;
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            logits = Some(self.forward_chunk(chunk)?);
        }
        logits.ok_or_else(|| candle_core::Error::Msg("no tokens".into()))
    }

    fn forward_chunk(&mut self, tokens: &[u32]) -> candle_core::Result<Tensor> {
        let w = self.w.clone();
        let c = &w.config;
        let n = tokens.len();
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        let mut x = w
            .embed
            .embedding(&ids)?
            .reshape((1, n, c.embedding_length))?;
        x = (x * (c.embedding_length as f64).sqrt())?;
        for (layer, cache) in w.layers.iter().zip(self.caches.iter_mut()) {
            let h = rms_norm(&x, &layer.attn_norm, c.rms_eps)?;
            let h = attention(c, &w, layer, cache, &h, self.pos)?;
            let h = rms_norm(&h, &layer.post_attn_norm, c.rms_eps)?;
            x = (x + h)?;
            let h = rms_norm(&x, &layer.ffn_norm, c.rms_eps)?;
            let gate = layer.gate.forward(&h)?.gelu()?;
            let h = layer.down.forward(&(gate * layer.up.forward(&h)?)?)?;
            let h = rms_norm(&h, &layer.post_ffn_norm, c.rms_eps)?;
            x = (x + h)?;
        }
        self.pos += n;
        let last = x.narrow(1, n - 1, 1)?;
        let last = rms_norm(&last, &w.output_norm, c.rms_eps)?;
        let mut logits = w.output.forward(&last)?.flatten_all()?;
        if let Some(cap) = c.final_logit_softcap {
            logits = ((logits / cap as f64)?.tanh()? * cap as f64)?;
        }
        Ok(logits)
    }
}

fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32)
}

fn attention(
    c: &Config,
    w: &Weights,
    layer: &Layer,
    cache: &mut LayerCache,
    x: &Tensor,
    pos: usize,
) -> candle_core::Result<Tensor> {
    let n = x.dim(1)?;
    let (h, kvh, hd) = (c.head_count, c.head_count_kv, c.head_dim);
    let group = h / kvh;
    let q = layer.wq.forward(x)?.reshape((1, n, h, hd))?;
    let k = layer.wk.forward(x)?.reshape((1, n, kvh, hd))?;
    let v = layer.wv.forward(x)?.reshape((1, n, kvh, hd))?;
    let q = rms_norm(&q, &layer.q_norm, c.rms_eps)?.transpose(1, 2)?;
    let k = rms_norm(&k, &layer.k_norm, c.rms_eps)?.transpose(1, 2)?;
    let v = v.transpose(1, 2)?.contiguous()?;
    let rope = if layer.sliding {
        &w.rope_local
    } else {
        &w.rope_global
    };
    let q = (rope.apply(&q, pos)? * c.attention_scale)?;
    let k = rope.apply(&k, pos)?;

    // A sliding layer's query at position p sees keys p - window + 1 ..= p:
    // the chunk's first query needs the `window - 1` positions before it.
    let keep = layer.sliding.then(|| c.sliding_keep());
    let (k, v) = cache.append(&k, &v, keep, w.context_length)?;
    let first = if layer.sliding {
        pos.saturating_sub(c.sliding_view()).max(cache.start)
    } else {
        cache.start
    };
    let skip = first - cache.start;
    let keys = k.dim(2)? - skip;
    let (k, v) = (k.narrow(2, skip, keys)?, v.narrow(2, skip, keys)?);
    let key_start = first;

    // Query heads that share a key head are stacked, so no copy of the keys
    // per head is needed: (1, kvh, group * n, hd).
    let q = q.reshape((1, kvh, group * n, hd))?;
    let scores = q.matmul(&k.t()?)?;
    let scores = if n > 1 {
        let mask = mask(
            n,
            pos,
            key_start,
            keys,
            layer.sliding.then_some(c.sliding_window),
        )?;
        scores
            .reshape((1, kvh, group, n, keys))?
            .broadcast_add(&mask)?
            .reshape((1, kvh, group * n, keys))?
    } else {
        scores
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let out = probs.matmul(&v.contiguous()?)?;
    let out = out
        .reshape((1, h, n, hd))?
        .transpose(1, 2)?
        .reshape((1, n, h * hd))?;
    layer.wo.forward(&out)
}

/// Additive mask `(n, keys)`: query `i` sits at `pos + i`, key `j` at
/// `key_start + j`; a key is visible when it is not in the future and, in a
/// sliding layer, fewer than `window` positions back (llama.cpp's rule).
fn mask(
    n: usize,
    pos: usize,
    key_start: usize,
    keys: usize,
    window: Option<usize>,
) -> candle_core::Result<Tensor> {
    let mut m = Vec::with_capacity(n * keys);
    for i in 0..n {
        let qp = pos + i;
        for j in 0..keys {
            let kp = key_start + j;
            let visible = kp <= qp && window.is_none_or(|w| qp - kp < w);
            m.push(if visible { 0f32 } else { f32::NEG_INFINITY });
        }
    }
    Tensor::from_vec(m, (n, keys), &Device::Cpu)
}

/// Reads hyperparameters and weights of a `gemma3` GGUF.
pub fn load(
    g: &mut Gguf,
    context_length: usize,
    progress: &mut dyn FnMut(f32) -> bool,
) -> Result<Arc<Weights>, LoadError> {
    let config = Config::from_gguf(g)?;
    Ok(Arc::new(Weights::load(
        g,
        config,
        context_length,
        progress,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_mask_admits_exactly_window_keys() {
        let m = mask(4, 0, 0, 4, Some(2)).unwrap();
        let m: Vec<Vec<f32>> = m.to_vec2().unwrap();
        let visible: Vec<usize> = m
            .iter()
            .map(|row| row.iter().filter(|v| **v == 0.0).count())
            .collect();
        assert_eq!(visible, vec![1, 2, 2, 2]);
        assert_eq!(m[3][2], 0.0);
        assert_eq!(m[3][1], f32::NEG_INFINITY);
    }

    /// `(1, heads, n, 3)` keys whose values are their positions.
    fn positions(heads: usize, from: usize, n: usize) -> Tensor {
        let v: Vec<f32> = (0..heads)
            .flat_map(|_| (from..from + n).flat_map(|p| [p as f32; 3]))
            .collect();
        Tensor::from_vec(v, (1, heads, n, 3), &Device::Cpu).unwrap()
    }

    #[test]
    fn sliding_cache_keeps_the_positions_still_in_view() {
        for heads in [1, 2] {
            let mut cache = LayerCache::new();
            let mut pos = 0;
            for n in [40, 30, 1, 1, 50, 1, 1, 100, 1] {
                let t = positions(heads, pos, n);
                let (k, v) = cache.append(&t, &t, Some(7), 1000).unwrap();
                // Every cached position from `start`, in order, in each head,
                // and at least the 7 before this chunk.
                assert!(
                    cache.start <= pos.saturating_sub(7),
                    "{heads} heads at {pos}"
                );
                pos += n;
                let want: Vec<f32> = (cache.start..pos).map(|p| p as f32).collect();
                for t in [&k, &v] {
                    assert_eq!(cached(t, heads), want, "{heads} heads at {pos}");
                }
            }
            let capacity = cache.k.as_ref().unwrap().dim(2).unwrap();
            assert!(capacity <= 2 * (7 + 100), "capacity {capacity}");
        }
    }

    /// Feature 2 of every cached position in the last head of `t` (the
    /// tests write each position's index there).
    fn cached(t: &Tensor, heads: usize) -> Vec<f32> {
        t.narrow(1, heads - 1, 1)
            .unwrap()
            .narrow(3, 2, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn sliding_cache_reallocates_once_per_kept_span() {
        let mut cache = LayerCache::new();
        let mut reallocations = 0;
        let mut buffer = None;
        for pos in 0..400 {
            let t = positions(1, pos, 1);
            cache.append(&t, &t, Some(63), 4096).unwrap();
            let id = cache.k.as_ref().unwrap().id();
            if buffer != Some(id) {
                reallocations += 1;
                buffer = Some(id);
            }
        }
        // The first buffer (64) and one growth (128); after that every
        // reallocation frees as many positions as it keeps (63), rather
        // than one per token.
        assert!(reallocations <= 2 + 400 / 63, "{reallocations}");
        let capacity = cache.k.as_ref().unwrap().dim(2).unwrap();
        assert_eq!(capacity, 128);
    }

    #[test]
    fn full_cache_stays_within_its_limit() {
        let mut cache = LayerCache::new();
        for pos in (0..300).step_by(100) {
            let t = positions(1, pos, 100);
            cache.append(&t, &t, None, 300).unwrap();
        }
        assert_eq!(cache.k.as_ref().unwrap().dim(2).unwrap(), 300);
        assert_eq!(cache.len, 300);
    }

    #[test]
    fn a_truncated_cache_reads_on_from_the_cut() {
        for heads in [1, 2] {
            let mut cache = LayerCache::new();
            let mut pos = 0;
            for n in [60, 1, 1, 1, 70, 1] {
                let t = positions(heads, pos, n);
                cache.append(&t, &t, Some(7), 1000).unwrap();
                pos += n;
            }
            assert!(cache.start > 0, "the test needs a cache that dropped keys");
            // Far back: the positions before the cut are gone.
            assert!(!cache.holds(cache.start - 1, cache.start + 6));
            // Within the cache: cut and read on, as a new request would.
            let cut = pos - 5;
            assert!(cache.holds(cut - 7, cut));
            cache.truncate(cut);
            let t = positions(heads, cut, 3);
            let (k, _) = cache.append(&t, &t, Some(7), 1000).unwrap();
            let want: Vec<f32> = (cache.start..cut + 3).map(|p| p as f32).collect();
            assert_eq!(cached(&k, heads), want, "{heads} heads");
        }
    }

    #[test]
    fn mask_at_nonzero_position_sees_the_cache() {
        let m: Vec<Vec<f32>> = mask(2, 5, 3, 4, None).unwrap().to_vec2().unwrap();
        // keys at 3,4,5,6; queries at 5,6
        assert_eq!(m[0], vec![0.0, 0.0, 0.0, f32::NEG_INFINITY]);
        assert_eq!(m[1], vec![0.0; 4]);
    }
}
