//! A loaded GGUF model: tokenizing, chat templates and generation, the
//! latter handed to the model's decode thread.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use corral_sdk::backend::{
    BackendError, BackendResult, CancelToken, Capabilities, ChatMessage, GenerateRequest,
    GenerateSummary, Model, ModelInfo, TokenEvent,
};
use corral_sdk::chat_template;
use llama_cpp_2::model::LlamaModel as RawModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token_type::LlamaTokenAttr;

use crate::engine::{Engine, Event, Job};

/// Where a model's chat template came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TemplateSource {
    Override,
    File,
    Default,
}

impl TemplateSource {
    fn as_str(self) -> &'static str {
        match self {
            TemplateSource::Override => "override",
            TemplateSource::File => "file",
            TemplateSource::Default => "default",
        }
    }
}

/// A model loaded by llama.cpp, generating on its own decode thread.
pub struct LlamaModel {
    engine: Engine,
    raw: Arc<RawModel>,
    info: ModelInfo,
    template: Option<String>,
    bos_text: String,
    eos_text: String,
    /// Broken in messages before their template renders them.
    controls: chat_template::ControlTexts,
}

pub(crate) struct LoadedParts {
    pub engine: Engine,
    pub raw: Arc<RawModel>,
    pub architecture: String,
    pub slots: u32,
    pub template: Option<(String, TemplateSource)>,
    pub memory_bytes: u64,
}

impl LlamaModel {
    pub(crate) fn new(parts: LoadedParts) -> Self {
        let raw = parts.raw;
        let vocab = raw.vocab();
        let token_text = |token: LlamaToken| {
            if token.0 < 0 {
                return String::new();
            }
            String::from_utf8_lossy(&vocab.token_to_piece(token, true, None)).into_owned()
        };
        let bos_text = token_text(vocab.bos());
        let eos_text = token_text(vocab.eos());
        // Control tokens, and user-defined ones shaped like a marker.
        let controls = chat_template::ControlTexts::new(vocab.tokens().filter_map(|token| {
            let control = vocab.is_control(token);
            if !control && !vocab.attr(token).contains(LlamaTokenAttr::UserDefined) {
                return None;
            }
            let text = token_text(token);
            (control || chat_template::is_marker(&text)).then_some(text)
        }));
        let (template, source) = match parts.template {
            Some((t, s)) => (Some(t), Some(s.as_str().to_string())),
            None => (None, None),
        };
        let info = ModelInfo {
            architecture: parts.architecture,
            capabilities: Capabilities {
                chat: template.is_some(),
                completion: true,
                embeddings: false,
            },
            context_length: parts.engine.limits.context_length,
            trained_context_length: Some(raw.n_ctx_train()),
            slots: parts.slots,
            vocab_size: u32::try_from(raw.n_vocab()).unwrap_or(0),
            embedding_length: None,
            chat_template: template.clone(),
            chat_template_source: source,
            memory_bytes: parts.memory_bytes,
        };
        LlamaModel {
            engine: parts.engine,
            raw,
            info,
            template,
            bos_text,
            eos_text,
            controls,
        }
    }

    fn tokens(&self, text: &str, add_bos: bool) -> BackendResult<Vec<LlamaToken>> {
        let vocab = self.raw.vocab();
        let mut tokens = vocab.tokenize(text.as_bytes(), false, true);
        let bos = vocab.bos();
        if add_bos && bos.0 >= 0 && tokens.first() != Some(&bos) {
            tokens.insert(0, bos);
        }
        let n_vocab = self.raw.n_vocab();
        if let Some(bad) = tokens.iter().find(|t| t.0 < 0 || t.0 >= n_vocab) {
            return Err(BackendError::Internal(format!(
                "the tokenizer produced token {} outside the vocabulary of {n_vocab}",
                bad.0
            )));
        }
        Ok(tokens)
    }
}

/// Raises the job's `abandoned` flag when `generate` returns or unwinds (a
/// panicking sink), so the decode thread frees a slot nobody listens to.
struct AbandonOnDrop(CancelToken);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Model for LlamaModel {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(TokenEvent),
        cancel: &CancelToken,
    ) -> BackendResult<GenerateSummary> {
        let started = Instant::now();
        request
            .sampling
            .validate()
            .map_err(BackendError::InvalidRequest)?;
        let mut tokens = self.tokens(&request.prompt, request.add_bos)?;
        if tokens.is_empty() {
            return Err(BackendError::InvalidRequest(
                "the prompt is empty (and `add_bos` is false)".into(),
            ));
        }
        let prompt_tokens = tokens.len() as u32;
        let keep_first = tokens.first() == Some(&self.raw.vocab().bos());
        let truncated_tokens = request.truncation.apply(
            &mut tokens,
            keep_first,
            self.info.context_length,
            request.sampling.max_tokens,
        )?;
        let (events_tx, events) = mpsc::channel();
        let abandoned = AbandonOnDrop(CancelToken::new());
        self.engine.submit(Job {
            tokens,
            cache_key: request.cache_key.clone(),
            sampling: request.sampling.clone(),
            cancel: cancel.clone(),
            abandoned: abandoned.0.clone(),
            events: events_tx,
        })?;
        let fed_tokens = prompt_tokens - truncated_tokens;
        loop {
            let event = events
                .recv()
                .map_err(|_| BackendError::Internal("the decode thread stopped".into()))?;
            match event {
                Event::Started => sink(TokenEvent::Started {
                    prompt_tokens: fed_tokens,
                }),
                Event::Text(text) => sink(TokenEvent::Text { text }),
                Event::Done(result) => {
                    let finish = result?;
                    let total_time = started.elapsed().as_secs_f64();
                    let time_to_first_token = finish
                        .first_token_at
                        .map_or(total_time, |t| t.duration_since(started).as_secs_f64());
                    return Ok(GenerateSummary {
                        finish_reason: finish.reason,
                        prompt_tokens: fed_tokens,
                        completion_tokens: finish.completion_tokens,
                        truncated_tokens,
                        time_to_first_token,
                        total_time,
                        cached_tokens: finish.cached_tokens,
                    });
                }
            }
        }
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> BackendResult<Vec<u32>> {
        Ok(self
            .tokens(text, add_bos)?
            .into_iter()
            .map(|t| t.0 as u32)
            .collect())
    }

    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> BackendResult<String> {
        let template = self.template.as_deref().ok_or_else(|| {
            BackendError::Unsupported(format!(
                "this {} model has no chat template; set one for it",
                self.info.architecture
            ))
        })?;
        chat_template::render(
            template,
            &self.controls.neutral_messages(messages),
            add_generation_prompt,
            &self.bos_text,
            &self.eos_text,
        )
        .map_err(BackendError::InvalidRequest)
    }
}
