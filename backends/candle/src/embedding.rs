//! Sentence embeddings with a BERT model (all-MiniLM-L6-v2 and kin): a
//! directory with `config.json`, `model.safetensors` and `tokenizer.json`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use corral_sdk::backend::{
    BackendError, BackendResult, CancelToken, Capabilities, ChatMessage, GenerateRequest,
    GenerateSummary, Model, ModelInfo, TokenEvent,
};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::describe;
use crate::gguf::LoadError;

/// Inputs per forward pass.
const BATCH: usize = 32;

pub struct EmbeddingModel {
    model: BertModel,
    tokenizer: Tokenizer,
    info: ModelInfo,
}

/// Whether `dir` looks like a BERT embedding model directory.
pub fn is_model_dir(dir: &Path) -> bool {
    ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
}

impl EmbeddingModel {
    pub fn load(dir: &Path, progress: &mut dyn FnMut(f32) -> bool) -> Result<Self, LoadError> {
        let invalid =
            |what: &str, e: &dyn std::fmt::Display| LoadError::Invalid(format!("{what}: {e}"));
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| invalid("cannot read config.json", &e))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| invalid("bad config.json", &e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| invalid("bad tokenizer.json", &e))?;
        // The shipped file pads every input to 128 tokens; padding to the
        // longest input of the batch is ~10x faster on short sentences.
        let pad_id = tokenizer
            .get_padding()
            .map(|p| (p.pad_id, p.pad_token.clone()))
            .unwrap_or((0, "[PAD]".into()));
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id: pad_id.0,
            pad_token: pad_id.1,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_position_embeddings.min(512),
                ..TruncationParams::default()
            }))
            .map_err(|e| invalid("tokenizer truncation", &e))?;
        if !progress(0.2) {
            return Err(LoadError::Cancelled);
        }
        // SAFETY: the file is mapped read-only; Corral does not modify model
        // files while they are loaded (the registry replaces them by rename).
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &Device::Cpu,
            )
        }
        .map_err(|e| invalid("bad model.safetensors", &describe(&e)))?;
        let model =
            BertModel::load(vb, &config).map_err(|e| invalid("bad BERT weights", &describe(&e)))?;
        let memory_bytes = std::fs::metadata(dir.join("model.safetensors"))
            .map(|m| m.len())
            .unwrap_or(0);
        let info = ModelInfo {
            architecture: "bert".into(),
            capabilities: Capabilities {
                chat: false,
                completion: false,
                embeddings: true,
            },
            context_length: config.max_position_embeddings as u32,
            trained_context_length: Some(config.max_position_embeddings as u32),
            slots: 1,
            vocab_size: config.vocab_size as u32,
            embedding_length: Some(config.hidden_size as u32),
            chat_template: None,
            chat_template_source: None,
            memory_bytes,
        };
        progress(1.0);
        Ok(EmbeddingModel {
            model,
            tokenizer,
            info,
        })
    }

    fn embed_batch(&self, inputs: &[String]) -> candle_core::Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(inputs.to_vec(), true)
            .map_err(|e| candle_core::Error::Msg(format!("cannot tokenize: {e}")))?;
        let rows = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> candle_core::Result<Tensor> {
            let rows = encodings
                .iter()
                .map(|e| Tensor::new(f(e), &Device::Cpu))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::stack(&rows, 0)
        };
        let ids = rows(&|e| e.get_ids())?;
        let type_ids = rows(&|e| e.get_type_ids())?;
        let mask = rows(&|e| e.get_attention_mask())?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?;
        // Mean over the real tokens only, then unit length.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norm)?.to_vec2::<f32>()
    }
}

impl Model for EmbeddingModel {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn generate(
        &self,
        _request: &GenerateRequest,
        _sink: &mut dyn FnMut(TokenEvent),
        _cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        Err(BackendError::Unsupported(
            "this is an embedding model; it does not generate text".into(),
        ))
    }

    fn embed(&self, inputs: &[String]) -> BackendResult<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(inputs.len());
        for batch in inputs.chunks(BATCH) {
            out.extend(self.embed_batch(batch).map_err(|e| {
                BackendError::Internal(format!("embedding failed: {}", describe(&e)))
            })?);
        }
        Ok(out)
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> BackendResult<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode_fast(text, add_bos)
            .map_err(|e| BackendError::InvalidRequest(format!("cannot tokenize: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    fn apply_chat_template(
        &self,
        _messages: &[ChatMessage],
        _add_generation_prompt: bool,
    ) -> BackendResult<String> {
        Err(BackendError::Unsupported(
            "an embedding model has no chat template".into(),
        ))
    }
}
