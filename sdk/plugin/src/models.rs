//! Capabilities `generate` and `embed`: models through Corral's scheduler,
//! counted against the calling user's allowance.
//!
//! ```no_run
//! use corral_plugin::{models, Message};
//! let summary = models::generate(vec![Message::user("Summarize: ...")])?;
//! let vectors = models::embed(&["a passage", "another"])?;
//! # Ok::<(), corral_plugin::Error>(())
//! ```

use crate::types::{Message, Sampling};
use crate::Error;

/// A request for a whole answer from a model.
pub type GenerateRequest = crate::__private::wit::corral::plugin::models::GenerateRequest;

impl GenerateRequest {
    /// A request to the model of the current generation with default
    /// sampling.
    pub fn new(messages: Vec<Message>) -> Self {
        GenerateRequest {
            model: None,
            messages,
            sampling: Sampling::default(),
        }
    }

    /// Asks `model` instead of the current generation's model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sampling settings for this request.
    pub fn sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = sampling;
        self
    }

    /// Sends the request (capability `generate`).
    pub fn send(&self) -> Result<String, Error> {
        #[cfg(target_arch = "wasm32")]
        let answer = crate::__private::wit::corral::plugin::models::generate(self);
        #[cfg(not(target_arch = "wasm32"))]
        let answer = crate::testing::models_generate(self);
        answer.map_err(Error::from)
    }
}

/// A whole answer to `messages` from the current generation's model
/// (capability `generate`). Plugins' hooks do not run on it.
pub fn generate(messages: Vec<Message>) -> Result<String, Error> {
    GenerateRequest::new(messages).send()
}

/// One vector per text, from the embedding model the plugin's
/// configuration names, else the first one the user may use (capability
/// `embed`).
pub fn embed<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Vec<f32>>, Error> {
    embed_with(None, texts)
}

/// One vector per text from `model` (`None`: as [`embed`]).
pub fn embed_with<S: AsRef<str>>(model: Option<&str>, texts: &[S]) -> Result<Vec<Vec<f32>>, Error> {
    let texts: Vec<String> = texts.iter().map(|t| t.as_ref().to_owned()).collect();
    #[cfg(target_arch = "wasm32")]
    let vectors = crate::__private::wit::corral::plugin::models::embed(model, &texts);
    #[cfg(not(target_arch = "wasm32"))]
    let vectors = crate::testing::models_embed(model, &texts);
    let vectors = vectors.map_err(Error::from)?;
    if vectors.len() != texts.len() {
        return Err(Error::new(format!(
            "the embedding model returned {} vectors for {} texts",
            vectors.len(),
            texts.len()
        )));
    }
    Ok(vectors)
}
