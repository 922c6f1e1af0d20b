//! A tokenizer rebuilt from a GGUF's own vocabulary (no hub, no
//! `tokenizer.json`), matching llama.cpp's SentencePiece-BPE ("llama")
//! tokenizer.
//!
//! llama.cpp merges, at each step, the adjacent pair whose concatenation is
//! the highest-scoring token. A `tokenizers` BPE does the same when its merge
//! list holds every split of every token into two tokens, ranked by the
//! whole token's score.

use candle_core::quantized::gguf_file::Value;
use corral_sdk::chat_template;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::Replace;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, DecoderWrapper, Tokenizer};

use crate::gguf::{Gguf, LoadError};

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// Tokens longer than this get no merges of their own.
const MAX_MERGED_TOKEN_BYTES: usize = 256;
/// Merges per token past which a vocabulary is refused: far more than a
/// real one has.
const MERGES_PER_TOKEN: usize = 32;

/// The tokenizer plus what generation needs to turn ids back into bytes.
pub struct GgufTokenizer {
    tokenizer: Tokenizer,
    /// Bytes each token stands for; empty for control tokens.
    pieces: Vec<Vec<u8>>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Tokens that end a turn: EOS and, when present, `<end_of_turn>`,
    /// `<|im_end|>`, `<|eot_id|>` and the like.
    pub end_of_generation: Vec<u32>,
    /// The texts of control tokens (and user-defined markers), which match
    /// anywhere in a text.
    pub control_texts: Vec<String>,
}

fn strings(g: &Gguf, key: &str) -> Result<Vec<String>, LoadError> {
    match g.value(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(LoadError::Invalid(format!("`{key}` holds a non-string"))),
            })
            .collect(),
        _ => Err(LoadError::Invalid(format!("metadata `{key}` is missing"))),
    }
}

fn numbers(g: &Gguf, key: &str, len: usize, default: f32) -> Result<Vec<f32>, LoadError> {
    match g.value(key) {
        None => Ok(vec![default; len]),
        Some(Value::Array(a)) if a.len() == len => a
            .iter()
            .map(|v| match v {
                Value::F32(x) => Ok(*x),
                Value::I32(x) => Ok(*x as f32),
                Value::U32(x) => Ok(*x as f32),
                Value::I8(x) => Ok(f32::from(*x)),
                Value::U8(x) => Ok(f32::from(*x)),
                _ => Err(LoadError::Invalid(format!("`{key}` holds a non-number"))),
            })
            .collect(),
        Some(_) => Err(LoadError::Invalid(format!(
            "`{key}` does not have one entry per token"
        ))),
    }
}

fn byte_value(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

impl GgufTokenizer {
    pub fn from_gguf(g: &Gguf) -> Result<Self, LoadError> {
        let model = g.string_opt("tokenizer.ggml.model").unwrap_or("");
        if model != "llama" {
            return Err(LoadError::Invalid(format!(
                "tokenizer `{model}` is not supported (only SentencePiece `llama`)"
            )));
        }
        let tokens = strings(g, "tokenizer.ggml.tokens")?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize {
            return Err(LoadError::Invalid("the vocabulary is empty".into()));
        }
        let scores = numbers(g, "tokenizer.ggml.scores", n, 0.0)?;
        let types: Vec<i32> = numbers(g, "tokenizer.ggml.token_type", n, NORMAL as f32)?
            .into_iter()
            .map(|t| t as i32)
            .collect();
        let id = |key: &str| -> Result<Option<u32>, LoadError> {
            Ok(g.u32_opt(key)?.filter(|&i| (i as usize) < n))
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let unk = id("tokenizer.ggml.unknown_token_id")?;

        let mut vocab = Vocab::default();
        vocab.reserve(n);
        for (i, t) in tokens.iter().enumerate() {
            // Later duplicates would shadow earlier ids; llama.cpp keeps the first.
            vocab.entry(t.clone()).or_insert(i as u32);
        }
        // The respelled user-defined tokens (below) must resolve to their ids.
        for (i, t) in tokens.iter().enumerate() {
            if types[i] == USER_DEFINED && t.contains(' ') {
                vocab.entry(t.replace(' ', "▁")).or_insert(i as u32);
            }
        }

        let mut order: Vec<usize> = (0..n).filter(|&i| types[i] != BYTE).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        // Every split of a token into two others is a merge. A vocabulary
        // made to have many (`a`, `aa`, `aaa`, ...) would take time and
        // memory growing with the cube of its tokens' length: long tokens
        // get no merges (they are still matched whole), and a vocabulary
        // with far more merges than tokens is refused.
        let most_merges = MERGES_PER_TOKEN * n + 4096;
        let mut merges = Vec::new();
        for &i in order
            .iter()
            .filter(|&&i| tokens[i].len() <= MAX_MERGED_TOKEN_BYTES)
        {
            let t = &tokens[i];
            for (split, _) in t.char_indices().skip(1) {
                let (left, right) = t.split_at(split);
                let piece_ok = |p: &str| vocab.get(p).is_some_and(|&j| types[j as usize] != BYTE);
                if piece_ok(left) && piece_ok(right) {
                    merges.push((left.to_string(), right.to_string()));
                }
            }
            if merges.len() > most_merges {
                return Err(LoadError::Invalid(format!(
                    "the vocabulary's tokens split into more than {most_merges} pairs of \
                     tokens; that is no real tokenizer"
                )));
            }
        }

        let mut builder = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .byte_fallback(true)
            .fuse_unk(true);
        if let Some(u) = unk {
            builder = builder.unk_token(tokens[u as usize].clone());
        }
        let bpe = builder
            .build()
            .map_err(|e| LoadError::Invalid(format!("cannot build the tokenizer: {e}")))?;

        let mut tokenizer = Tokenizer::new(bpe);
        let normalizer = Replace::new(" ", "▁")
            .map_err(|e| LoadError::Invalid(format!("tokenizer normalizer: {e}")))?;
        tokenizer
            .with_normalizer(Some(normalizer))
            .map_err(|e| LoadError::Invalid(format!("tokenizer normalizer: {e}")))?;
        let space = Replace::new("▁", " ")
            .map_err(|e| LoadError::Invalid(format!("tokenizer decoder: {e}")))?;
        tokenizer.with_decoder(Some(Sequence::new(vec![
            DecoderWrapper::Replace(space),
            DecoderWrapper::ByteFallback(ByteFallback::new()),
            DecoderWrapper::Fuse(Fuse::new()),
        ])));
        if let Some(b) = bos {
            let bos_text = tokens[b as usize].clone();
            let template = TemplateProcessing::builder()
                .try_single(format!("{bos_text} $A"))
                .and_then(|t| {
                    t.special_tokens(vec![(bos_text.as_str(), b)])
                        .build()
                        .map_err(|e| e.to_string())
                })
                .map_err(|e| LoadError::Invalid(format!("tokenizer template: {e}")))?;
            tokenizer.with_post_processor(Some(template));
        }

        // Control tokens, and user-defined ones shaped like a marker.
        let control_texts: Vec<String> = (0..n)
            .filter(|&i| {
                types[i] == CONTROL
                    || (types[i] == USER_DEFINED && chat_template::is_marker(&tokens[i]))
            })
            .map(|i| tokens[i].clone())
            .collect();
        let control: Vec<AddedToken> = (0..n)
            .filter(|&i| types[i] == CONTROL)
            .map(|i| AddedToken::from(tokens[i].clone(), true).normalized(false))
            .collect();
        // User-defined tokens are matched in the normalized text, where a
        // space is already "▁".
        let user: Vec<AddedToken> = (0..n)
            .filter(|&i| types[i] == USER_DEFINED)
            .map(|i| AddedToken::from(tokens[i].replace(' ', "▁"), false).normalized(true))
            .collect();
        tokenizer
            .add_special_tokens(control)
            .and_then(|_| tokenizer.add_tokens(user))
            .map_err(|e| LoadError::Invalid(format!("tokenizer added tokens: {e}")))?;

        let pieces = tokens
            .iter()
            .zip(&types)
            .map(|(t, &ty)| match ty {
                CONTROL => Vec::new(),
                BYTE => byte_value(t).map(|b| vec![b]).unwrap_or_default(),
                _ => t.replace('▁', " ").into_bytes(),
            })
            .collect();

        let mut end_of_generation: Vec<u32> = eos.into_iter().collect();
        for name in [
            "<end_of_turn>",
            "<|im_end|>",
            "<|eot_id|>",
            "<|endoftext|>",
            "<|end|>",
        ] {
            if let Some(i) = tokens.iter().position(|t| t == name) {
                if types[i] == CONTROL && !end_of_generation.contains(&(i as u32)) {
                    end_of_generation.push(i as u32);
                }
            }
        }

        Ok(GgufTokenizer {
            tokenizer,
            pieces,
            bos,
            eos,
            end_of_generation,
            control_texts,
        })
    }

    /// Token ids of `text`; control tokens written in it are parsed as such.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, String> {
        let enc = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| format!("cannot tokenize: {e}"))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The bytes a token contributes to the text (none for control tokens).
    pub fn piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map_or(&[], Vec::as_slice)
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }
}
