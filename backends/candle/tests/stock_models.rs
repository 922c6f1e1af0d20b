//! The prompt cache with the architectures that run on candle-transformers'
//! own model code (llama, qwen2, qwen3). No such model is small enough to
//! fetch for tests, so each test writes a tiny one: random weights in the
//! architecture's real GGUF layout, and a vocabulary of single characters,
//! so that an answer's text turns back into exactly the tokens generated.
//! Random weights answer nonsense, but greedy nonsense is deterministic:
//! the cache must not change it.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use corral_candle::CandleBackend;
use corral_sdk::backend::{
    Backend, CancelToken, FinishReason, GenerateRequest, GenerateSummary, LoadRequest, Model,
    SamplingParams, TokenEvent, Truncation,
};

const EMBEDDING: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = EMBEDDING / HEADS;
const FEED_FORWARD: usize = 96;
const LAYERS: usize = 2;

/// `</s>` (id 0, both BOS and EOS), the word boundary and single characters.
fn vocabulary() -> Vec<String> {
    let mut v = vec!["</s>".to_string(), "▁".to_string()];
    v.extend(('a'..='z').map(String::from));
    v.extend([".", ","].map(String::from));
    v
}

/// Deterministic values in `[-scale, scale)`.
struct Noise(u64);

impl Noise {
    fn tensor(&mut self, shape: &[usize], scale: f32) -> QTensor {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        let t = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
        QTensor::quantize(&t, GgmlDType::F32).unwrap()
    }

    fn ones(len: usize) -> QTensor {
        let t = Tensor::ones(len, candle_core::DType::F32, &Device::Cpu).unwrap();
        QTensor::quantize(&t, GgmlDType::F32).unwrap()
    }
}

/// Writes a tiny model of `arch` (llama, qwen2 or qwen3) to `dir`.
fn write_model(dir: &Path, arch: &str) -> PathBuf {
    write_model_trained(dir, arch, 512)
}

/// [`write_model`], saying it was trained on `context` tokens.
fn write_model_trained(dir: &Path, arch: &str, context: u32) -> PathBuf {
    write_model_with(dir, arch, context, vocabulary())
}

/// [`write_model`] with its own figure for the context and vocabulary.
fn write_model_with(dir: &Path, arch: &str, context: u32, vocab: Vec<String>) -> PathBuf {
    let key = |k: &str| format!("{arch}.{k}");
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (key("block_count"), Value::U32(LAYERS as u32)),
        (key("embedding_length"), Value::U32(EMBEDDING as u32)),
        (key("feed_forward_length"), Value::U32(FEED_FORWARD as u32)),
        (key("context_length"), Value::U32(context)),
        (key("attention.head_count"), Value::U32(HEADS as u32)),
        (key("attention.head_count_kv"), Value::U32(KV_HEADS as u32)),
        (key("attention.key_length"), Value::U32(HEAD_DIM as u32)),
        (key("rope.dimension_count"), Value::U32(HEAD_DIM as u32)),
        (key("rope.freq_base"), Value::F32(10_000.0)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
        ("general.dtype".into(), Value::U32(0)),
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(vocab.iter().map(|t| Value::String(t.clone())).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(
                (0..vocab.len())
                    .map(|i| Value::I32(if i == 0 { 3 } else { 1 }))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(0)),
    ];
    metadata.sort_by(|a, b| a.0.cmp(&b.0));

    let mut noise = Noise(arch.len() as u64 * 7919);
    let (d, kv) = (EMBEDDING, KV_HEADS * HEAD_DIM);
    let linear = |noise: &mut Noise, out: usize, inp: usize| {
        noise.tensor(&[out, inp], 2.0 / (inp as f32).sqrt())
    };
    let mut tensors: Vec<(String, QTensor)> = vec![
        (
            "token_embd.weight".into(),
            noise.tensor(&[vocab.len(), d], 1.0),
        ),
        ("output.weight".into(), linear(&mut noise, vocab.len(), d)),
        ("output_norm.weight".into(), Noise::ones(d)),
    ];
    for i in 0..LAYERS {
        let name = |n: &str| format!("blk.{i}.{n}");
        tensors.extend([
            (name("attn_norm.weight"), Noise::ones(d)),
            (name("ffn_norm.weight"), Noise::ones(d)),
            (
                name("attn_q.weight"),
                linear(&mut noise, HEADS * HEAD_DIM, d),
            ),
            (name("attn_k.weight"), linear(&mut noise, kv, d)),
            (name("attn_v.weight"), linear(&mut noise, kv, d)),
            (
                name("attn_output.weight"),
                linear(&mut noise, d, HEADS * HEAD_DIM),
            ),
            (name("ffn_gate.weight"), linear(&mut noise, FEED_FORWARD, d)),
            (name("ffn_up.weight"), linear(&mut noise, FEED_FORWARD, d)),
            (name("ffn_down.weight"), linear(&mut noise, d, FEED_FORWARD)),
        ]);
        if arch == "qwen2" {
            tensors.extend([
                (name("attn_q.bias"), noise.tensor(&[HEADS * HEAD_DIM], 0.1)),
                (name("attn_k.bias"), noise.tensor(&[kv], 0.1)),
                (name("attn_v.bias"), noise.tensor(&[kv], 0.1)),
            ]);
        }
        if arch == "qwen3" {
            tensors.extend([
                (name("attn_q_norm.weight"), Noise::ones(HEAD_DIM)),
                (name("attn_k_norm.weight"), Noise::ones(HEAD_DIM)),
            ]);
        }
    }

    let path = dir.join(format!("tiny-{arch}-{context}-{}.gguf", vocab.len()));
    let mut file = std::fs::File::create(&path).unwrap();
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
    path
}

fn load(path: &Path, prompt_cache: bool) -> Box<dyn Model> {
    load_with(path, prompt_cache, 256).expect("the tiny model loads")
}

fn load_with(
    path: &Path,
    prompt_cache: bool,
    context_length: u32,
) -> Result<Box<dyn Model>, corral_sdk::backend::BackendError> {
    load_slots(path, prompt_cache, context_length, 1)
}

fn load_slots(
    path: &Path,
    prompt_cache: bool,
    context_length: u32,
    slots: u32,
) -> Result<Box<dyn Model>, corral_sdk::backend::BackendError> {
    let request = LoadRequest {
        path: path.to_str().unwrap().into(),
        context_length,
        threads: 1,
        slots,
        chat_template: None,
        prompt_cache,
    };
    CandleBackend.load(&request, &mut |_| true)
}

struct Answer {
    text: String,
    summary: GenerateSummary,
}

fn run(model: &dyn Model, prompt: &str) -> Answer {
    let request = GenerateRequest {
        prompt: prompt.into(),
        add_bos: true,
        sampling: SamplingParams {
            temperature: 0.0,
            repeat_penalty: 1.0,
            max_tokens: 8,
            ..SamplingParams::default()
        },
        truncation: Truncation::Error,
        cache_key: Some("k".into()),
    };
    let mut text = String::new();
    let summary = model
        .generate(
            &request,
            &mut |e| {
                if let TokenEvent::Text { text: piece } = e {
                    text.push_str(&piece);
                }
            },
            &CancelToken::new(),
        )
        .expect("generation succeeds");
    Answer { text, summary }
}

/// Runs `prompt` on both models and checks that they agree.
fn same_answer(cached: &dyn Model, fresh: &dyn Model, prompt: &str) -> Answer {
    let with_cache = run(cached, prompt);
    let without = run(fresh, prompt);
    assert_eq!(
        with_cache.text, without.text,
        "the cache changed the answer to {prompt:?}"
    );
    assert_eq!(
        with_cache.summary.completion_tokens,
        without.summary.completion_tokens
    );
    assert_eq!(without.summary.cached_tokens, 0, "the cache is off");
    with_cache
}

/// Tokens a finished request left in the cache: its prompt and every
/// answer token but one sampled last and never read (unless the end of
/// generation was sampled, which is neither counted nor read).
fn left_in_cache(a: &Answer) -> u32 {
    let s = &a.summary;
    let unread = u32::from(s.finish_reason != FinishReason::Stop && s.completion_tokens > 0);
    s.prompt_tokens + s.completion_tokens - unread
}

/// A folder of this test process's own for `name`'s model files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corral-candle-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Three turns of a conversation, a regenerate and an unrelated prompt.
/// `appends` says whether the architecture reads on from its cache.
fn conversation(arch: &str, appends: bool) {
    let dir = scratch(&format!("stock-{arch}"));
    let path = write_model(&dir, arch);
    let cached = load(&path, true);
    let fresh = load(&path, false);
    let (cached, fresh) = (cached.as_ref(), fresh.as_ref());

    let mut prompt = "the quick brown fox jumps over the lazy dog.".to_string();
    let first = same_answer(cached, fresh, &prompt);
    assert_eq!(first.summary.cached_tokens, 0);
    assert!(first.summary.completion_tokens > 0);
    let mut previous = first;
    for more in [" and then,", " so it ran away."] {
        prompt = format!("{prompt}{}{more}", previous.text);
        let next = same_answer(cached, fresh, &prompt);
        if appends {
            assert_eq!(
                next.summary.cached_tokens,
                left_in_cache(&previous),
                "{arch}: the next turn reads on from all that the cache holds"
            );
        } else {
            assert_eq!(next.summary.cached_tokens, 0, "{arch}");
        }
        previous = next;
    }

    // A regenerate would have to drop the last answer from the cache,
    // which these models cannot do: the prompt is read whole.
    let again = same_answer(cached, fresh, &prompt);
    assert_eq!(again.text, previous.text);
    assert_eq!(again.summary.cached_tokens, 0, "{arch}");

    let other = same_answer(cached, fresh, "pack my box with five dozen jugs.");
    assert_eq!(other.summary.cached_tokens, 0, "{arch}");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn llama_reads_on_from_its_cache() {
    conversation("llama", true);
}

#[test]
fn qwen2_reads_every_prompt_whole() {
    conversation("qwen2", false);
}

#[test]
fn qwen3_reads_every_prompt_whole() {
    conversation("qwen3", false);
}

/// A file that claims a context no model has is refused before any table
/// is sized from it (the allocation would abort the process); llama's
/// fixed position table bounds its context.
#[test]
fn contexts_no_model_has_are_refused() {
    let dir = scratch("context");
    for arch in ["llama", "qwen2", "qwen3"] {
        let path = write_model_trained(&dir, arch, u32::MAX);
        let err = load_with(&path, true, 0).err().expect("refused");
        assert!(err.to_string().contains("not believable"), "{arch}: {err}");
    }
    let path = write_model_trained(&dir, "llama", 131_072);
    let model = load_with(&path, true, 0).expect("loads");
    assert_eq!(model.info().context_length, 4096);
    let err = load_with(&path, true, 8192).err().expect("refused");
    assert!(err.to_string().contains("above the 4096"), "{err}");
    let path = write_model_trained(&dir, "qwen3", 4096);
    let err = load_with(&path, true, 8192).err().expect("refused");
    assert!(err.to_string().contains("above the 4096"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A vocabulary made so that its tokens split into others in very many
/// ways (`a`, `aa`, `aaa`, ...) would build merges whose size grows with
/// the cube of the tokens' length (tens of GB for tokens up to 4,000
/// bytes). Long tokens get no merges, and a vocabulary with far more
/// merges than tokens is refused.
#[test]
fn a_vocabulary_made_of_merges_cannot_blow_up() {
    let dir = scratch("merges");
    let mut long = vocabulary();
    long.extend((2..=4000).map(|n| "a".repeat(n)));
    let path = write_model_with(&dir, "llama", 512, long);
    let model = load_with(&path, true, 0).expect("loads");
    assert!(model.tokenize("aaaa", false).is_ok());

    let mut dense = vocabulary();
    dense.extend((2..=256).map(|n| "a".repeat(n)));
    let path = write_model_with(&dir, "llama", 512, dense);
    let err = load_with(&path, true, 0).err().expect("refused");
    assert!(err.to_string().contains("no real tokenizer"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The slots of a llama or qwen3 model share one copy of the weights, each
/// with a cache of its own: streams side by side answer as each would alone,
/// and the model counts its file once.
#[test]
fn slots_share_the_weights_and_keep_their_own_caches() {
    let dir = scratch("slots");
    let prompts = [
        "the quick brown fox jumps over the lazy dog.",
        "pack my box with five dozen jugs.",
        "how vexingly quick daft zebras jump.",
    ];
    for arch in ["llama", "qwen3"] {
        let path = write_model(&dir, arch);
        let alone: Vec<String> = prompts
            .iter()
            .map(|p| run(load(&path, true).as_ref(), p).text)
            .collect();
        let shared = load_slots(&path, true, 256, 3).expect("loads");
        let file = std::fs::metadata(&path).unwrap().len();
        assert_eq!(shared.info().memory_bytes, file, "{arch}: one copy");
        for _ in 0..2 {
            let together: Vec<String> = std::thread::scope(|scope| {
                let handles: Vec<_> = prompts
                    .iter()
                    .map(|p| scope.spawn(|| run(shared.as_ref(), p).text))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(together, alone, "{arch}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
