//! A GGUF file opened for loading: its metadata, and tensors checked
//! against the shapes the model code expects.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use crate::error::describe;

/// Why a load failed.
#[derive(Debug)]
pub enum LoadError {
    /// The file is not a usable model; the text says why.
    Invalid(String),
    /// The caller abandoned the load.
    Cancelled,
}

impl From<candle_core::Error> for LoadError {
    fn from(e: candle_core::Error) -> Self {
        LoadError::Invalid(crate::error::describe(&e))
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Invalid(why) => f.write_str(why),
            LoadError::Cancelled => f.write_str("the load was cancelled"),
        }
    }
}

pub struct Gguf {
    content: Content,
    reader: BufReader<File>,
    pub architecture: String,
}

impl Gguf {
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let file = File::open(path)
            .map_err(|e| LoadError::Invalid(format!("cannot open {}: {e}", path.display())))?;
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader)
            .map_err(|e| LoadError::Invalid(format!("not a valid GGUF file: {}", describe(&e))))?;
        let architecture = match content.metadata.get("general.architecture") {
            Some(Value::String(a)) => a.clone(),
            _ => {
                return Err(LoadError::Invalid(
                    "the GGUF metadata has no `general.architecture`".into(),
                ))
            }
        };
        Ok(Gguf {
            content,
            reader,
            architecture,
        })
    }

    /// For candle-transformers' loaders, which take the content by value.
    pub fn into_parts(self) -> (Content, BufReader<File>) {
        (self.content, self.reader)
    }

    pub fn value(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn u32_opt(&self, key: &str) -> Result<Option<u32>, LoadError> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::U8(n) => Some(u32::from(*n)),
            Value::U16(n) => Some(u32::from(*n)),
            Value::U32(n) => Some(*n),
            Value::U64(n) => u32::try_from(*n).ok(),
            Value::I32(n) => u32::try_from(*n).ok(),
            Value::I64(n) => u32::try_from(*n).ok(),
            _ => None,
        };
        n.map(Some)
            .ok_or_else(|| LoadError::Invalid(format!("metadata `{key}` is not a count")))
    }

    pub fn u32(&self, key: &str) -> Result<u32, LoadError> {
        self.u32_opt(key)?
            .ok_or_else(|| LoadError::Invalid(format!("metadata `{key}` is missing")))
    }

    pub fn f32_opt(&self, key: &str) -> Result<Option<f32>, LoadError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::F32(v)) if v.is_finite() => Ok(Some(*v)),
            Some(Value::F64(v)) if v.is_finite() => Ok(Some(*v as f32)),
            Some(_) => Err(LoadError::Invalid(format!(
                "metadata `{key}` is not a number"
            ))),
        }
    }

    pub fn string_opt(&self, key: &str) -> Option<&str> {
        match self.value(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self.value("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => a.len(),
            _ => 0,
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Reads a tensor whose shape, outermost dimension first, must be `shape`.
    pub fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor, LoadError> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| LoadError::Invalid(format!("tensor `{name}` is missing")))?;
        if info.shape.dims() != shape {
            return Err(LoadError::Invalid(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                info.shape.dims()
            )));
        }
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| LoadError::Invalid(format!("tensor `{name}`: {}", describe(&e))))
    }

    /// Reads a one-dimensional tensor (a norm's weights) as f32.
    pub fn vector(&mut self, name: &str, len: usize) -> Result<Tensor, LoadError> {
        Ok(self.qtensor(name, &[len])?.dequantize(&Device::Cpu)?)
    }
}
