//! A text model's folder as the Hugging Face hub ships it, in sentence-transformers' layout:
//! `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`, `modules.json` naming the modules that
//! follow the transformer (`1_Pooling/config.json`, a `Normalize` module) and
//! `sentence_bert_config.json` (`max_seq_length`). Plus, optionally, sluice's own configuration
//! `sluice.json` (which column holds the text, what passes through).

use std::path::Path;

use serde::Deserialize;

use super::pooling::Pooling;
use crate::model_config::ModelConfig;

/// The folder's files, read.
#[derive(Debug, Clone, Default)]
pub struct TextFolder {
    pub model: Vec<u8>,
    pub tokenizer: Vec<u8>,
    pub layout: Layout,
    pub config: Option<ModelConfig>,
}

/// What follows the transformer, and how long a text may be.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub pooling: Pooling,
    pub normalize: bool,
    /// Tokens a text is truncated to (special tokens included).
    pub max_length: usize,
}

impl Default for Layout {
    /// A transformer with no sentence-transformers modules is pooled by the mean of its tokens,
    /// as `SentenceTransformer` pools such a model.
    fn default() -> Self {
        Self { pooling: Pooling::Mean, normalize: false, max_length: DEFAULT_MAX_LENGTH }
    }
}

/// BERT's maximum, for a folder that says none.
pub const DEFAULT_MAX_LENGTH: usize = 512;

/// Why a folder is not a text model sluice can run; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct FolderError {
    pub file: String,
    pub problem: String,
}

#[derive(Deserialize)]
struct Module {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// Reads a file of the folder by its path in it (`1_Pooling/config.json`): its bytes, or `None`
/// when there is no such file.
pub type ReadFile<'a> = &'a dyn Fn(&str) -> Result<Option<Vec<u8>>, FolderError>;

impl TextFolder {
    /// Reads the folder at `dir`.
    pub fn read(dir: &Path) -> Result<Self, FolderError> {
        let optional = |file: &str| read_optional(dir, file);
        let model = match (optional("model.onnx")?, optional("onnx/model.onnx")?) {
            (Some(model), _) | (None, Some(model)) => model,
            (None, None) => {
                return Err(FolderError {
                    file: dir.display().to_string(),
                    problem: "the folder has no model.onnx (nor onnx/model.onnx): export the model to ONNX first (optimum-cli export onnx, or sentence-transformers' backend=\"onnx\")".into(),
                });
            }
        };
        Self::from_files(model, &dir.display().to_string(), &optional)
    }

    /// The folder `name` (a path or a URI, for messages) of the model `model`, its other files
    /// read by `read`.
    pub fn from_files(model: Vec<u8>, name: &str, read: ReadFile) -> Result<Self, FolderError> {
        let path = |file: &str| format!("{}/{file}", name.trim_end_matches('/'));
        let tokenizer = read("tokenizer.json")?.ok_or_else(|| FolderError {
            file: path("tokenizer.json"),
            problem:
                "the folder has no tokenizer.json (the fast tokenizer's file, which the hub ships beside the model)"
                    .into(),
        })?;
        let layout = Self::layout(&path, read)?;
        let config = read("sluice.json")?
            .map(|bytes| ModelConfig::from_json(&bytes))
            .transpose()
            .map_err(|e| FolderError { file: path("sluice.json"), problem: e.to_string() })?;
        Ok(Self { model, tokenizer, layout, config })
    }

    fn layout(path: &dyn Fn(&str) -> String, read: ReadFile) -> Result<Layout, FolderError> {
        let invalid = |file: &str, e: serde_json::Error| FolderError {
            file: path(file),
            problem: format!("not valid JSON of its kind: {e}"),
        };
        let mut layout = Layout::default();
        if let Some(bytes) = read("modules.json")? {
            let modules: Vec<Module> = serde_json::from_slice(&bytes).map_err(|e| invalid("modules.json", e))?;
            layout.normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
            if let Some(pooling) = modules.iter().find(|m| m.kind.ends_with(".Pooling")) {
                let file = format!("{}/config.json", pooling.path);
                let bytes = read(&file)?.ok_or_else(|| FolderError {
                    file: path(&file),
                    problem: "modules.json names a Pooling module whose config.json is missing".into(),
                })?;
                let config: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| invalid(&file, e))?;
                layout.pooling =
                    Pooling::from_config(&config).map_err(|problem| FolderError { file: path(&file), problem })?;
            }
        }
        if let Some(bytes) = read("sentence_bert_config.json")? {
            let config: SentenceBertConfig =
                serde_json::from_slice(&bytes).map_err(|e| invalid("sentence_bert_config.json", e))?;
            layout.max_length = config.max_seq_length.unwrap_or(DEFAULT_MAX_LENGTH).max(1);
        }
        Ok(layout)
    }
}

/// The bytes of `file` in `dir`, or `None` when there is no such file.
fn read_optional(dir: &Path, file: &str) -> Result<Option<Vec<u8>>, FolderError> {
    match std::fs::read(dir.join(file)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FolderError { file: dir.join(file).display().to_string(), problem: e.to_string() }),
    }
}
