//! A text model's folder as the Hugging Face hub ships it, in sentence-transformers' layout:
//! `model.onnx` (or `onnx/model.onnx`), `tokenizer.json`, `modules.json` naming the modules that
//! follow the transformer (`1_Pooling/config.json`, a `Normalize` module) and
//! `sentence_bert_config.json` (`max_seq_length`). A model with a task head is read as optimum
//! exports one: `config.json` names its classes (`id2label`) and how its logits become scores
//! (`problem_type`), `tokenizer_config.json` its maximum length; a cross-encoder saved by
//! sentence-transformers names its activation in `config_sentence_transformers.json`. Plus,
//! optionally, sluice's own configuration `sluice.json` (which column holds the text, what
//! passes through).

use std::path::Path;

use serde::Deserialize;

use super::head::Activation;
use super::pooling::Pooling;
use crate::model_config::ModelConfig;

/// The folder's files, read.
#[derive(Debug, Clone, Default)]
pub struct TextFolder {
    pub model: Vec<u8>,
    pub tokenizer: Vec<u8>,
    pub layout: Layout,
    pub config: Option<ModelConfig>,
    pub hub: HubConfig,
}

/// What `config.json` (transformers') and `config_sentence_transformers.json` say of a model's
/// head.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HubConfig {
    /// The class names by label id (`id2label`), in id order.
    pub labels: Option<Vec<String>>,
    /// `single_label_classification`, `multi_label_classification` or `regression`.
    pub problem_type: Option<String>,
    /// A cross-encoder's activation, as sentence-transformers saved it.
    pub activation: Option<Activation>,
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

#[derive(Deserialize)]
struct TransformersConfig {
    id2label: Option<std::collections::BTreeMap<String, String>>,
    problem_type: Option<String>,
    max_position_embeddings: Option<usize>,
    /// Where sentence-transformers before version 6 kept a cross-encoder's settings.
    sentence_transformers: Option<SentenceTransformersConfig>,
}

#[derive(Deserialize)]
struct SentenceTransformersConfig {
    activation_fn: Option<String>,
}

#[derive(Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
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
        let (hub, max_positions) = Self::hub(&path, read)?;
        let layout = Self::layout(&path, read, max_positions)?;
        let config = read("sluice.json")?
            .map(|bytes| ModelConfig::from_json(&bytes))
            .transpose()
            .map_err(|e| FolderError { file: path("sluice.json"), problem: e.to_string() })?;
        Ok(Self { model, tokenizer, layout, config, hub })
    }

    /// The head's settings, and the model's maximum length (`max_position_embeddings`).
    fn hub(path: &dyn Fn(&str) -> String, read: ReadFile) -> Result<(HubConfig, Option<usize>), FolderError> {
        let mut hub = HubConfig::default();
        let mut activation_fn = None;
        let mut max_positions = None;
        if let Some(bytes) = read("config.json")? {
            let config: TransformersConfig =
                serde_json::from_slice(&bytes).map_err(|e| invalid(path, "config.json", e))?;
            if let Some(id2label) = config.id2label {
                let mut labels: Vec<(usize, String)> = id2label
                    .into_iter()
                    .map(|(id, label)| {
                        id.parse().map(|id| (id, label)).map_err(|_| FolderError {
                            file: path("config.json"),
                            problem: format!("id2label has the key {id:?}, not a label id"),
                        })
                    })
                    .collect::<Result<_, _>>()?;
                labels.sort();
                if labels.iter().enumerate().any(|(i, (id, _))| i != *id) {
                    return Err(FolderError {
                        file: path("config.json"),
                        problem: "id2label does not name the labels 0, 1, … in turn".into(),
                    });
                }
                hub.labels = Some(labels.into_iter().map(|(_, label)| label).collect());
            }
            hub.problem_type = config.problem_type;
            max_positions = config.max_position_embeddings;
            activation_fn = config.sentence_transformers.and_then(|st| st.activation_fn);
        }
        if let Some(bytes) = read("config_sentence_transformers.json")? {
            let config: SentenceTransformersConfig =
                serde_json::from_slice(&bytes).map_err(|e| invalid(path, "config_sentence_transformers.json", e))?;
            activation_fn = config.activation_fn.or(activation_fn);
        }
        hub.activation = match activation_fn.as_deref() {
            None => None,
            Some(name) if name.ends_with(".Sigmoid") => Some(Activation::Sigmoid),
            Some(name) if name.ends_with(".Identity") => Some(Activation::Identity),
            Some(name) => {
                return Err(FolderError {
                    file: path("config_sentence_transformers.json"),
                    problem: format!("activation_fn {name:?}: sluice applies Sigmoid or Identity"),
                });
            }
        };
        Ok((hub, max_positions))
    }

    /// What follows the transformer, and the maximum length: sentence-transformers'
    /// `max_seq_length`, else the tokenizer's `model_max_length`, else the model's positions.
    fn layout(
        path: &dyn Fn(&str) -> String,
        read: ReadFile,
        max_positions: Option<usize>,
    ) -> Result<Layout, FolderError> {
        let invalid = |file: &str, e: serde_json::Error| invalid(path, file, e);
        let mut layout = Layout::default();
        // transformers writes a very large number when the tokenizer sets no maximum.
        let tokenizer_max = match read("tokenizer_config.json")? {
            Some(bytes) => serde_json::from_slice::<TokenizerConfig>(&bytes)
                .map_err(|e| invalid("tokenizer_config.json", e))?
                .model_max_length
                .filter(|&n| (1.0..1e6).contains(&n))
                .map(|n| n as usize),
            None => None,
        };
        layout.max_length = tokenizer_max.or(max_positions).unwrap_or(DEFAULT_MAX_LENGTH);
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
            if let Some(max) = config.max_seq_length {
                layout.max_length = max.max(1);
            }
        }
        Ok(layout)
    }
}

fn invalid(path: &dyn Fn(&str) -> String, file: &str, e: serde_json::Error) -> FolderError {
    FolderError { file: path(file), problem: format!("not valid JSON of its kind: {e}") }
}

/// The bytes of `file` in `dir`, or `None` when there is no such file.
fn read_optional(dir: &Path, file: &str) -> Result<Option<Vec<u8>>, FolderError> {
    match std::fs::read(dir.join(file)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FolderError { file: dir.join(file).display().to_string(), problem: e.to_string() }),
    }
}
