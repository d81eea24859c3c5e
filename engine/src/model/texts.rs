//! A text model ([`crate::text`]) as a [`Model`]: its folder loaded, and its rows' texts run
//! through the tokenizer, the plan and the head.

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use super::{
    Classes, ColumnInput, ColumnType, Element, Model, ModelError, OutputKind, OutputSpec, OutputValues, operators,
    unsupported_operator,
};
use crate::batch::Batch;
use crate::ops;
use crate::text::folder::HubConfig;
use crate::text::head::{self, Activation, Head};
use crate::text::{Embeddings, Feed, RUN_TEXTS, TextEncoder, TextFolder, TextRow};

/// The columns a text model reads by default: the text, and a cross-encoder's second text (the
/// names transformers' pipelines take).
pub const TEXT_COLUMNS: [&str; 2] = ["text", "text_pair"];

impl Model {
    /// Prepares a text encoder from its folder ([`crate::text`]): one text column in (`text`,
    /// unless the folder's `sluice.json` names another), one embedding a row out.
    pub fn load_text(folder: TextFolder) -> Result<Self, ModelError> {
        let onnx = ops::onnx();
        let proto =
            onnx.proto_model_for_read(&mut &folder.model[..]).map_err(|e| ModelError::Unreadable(format!("{e:#}")))?;
        let graph = proto.graph.as_ref().ok_or_else(|| ModelError::Unreadable("it has no graph".into()))?;
        unsupported_operator(graph, &onnx)?;
        let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let feeds = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(&i.name.as_str()))
            .map(|input| {
                Feed::from_name(&input.name).ok_or_else(|| {
                    ModelError::Unsupported(format!(
                        "input {:?}: a text encoder takes input_ids, attention_mask and token_type_ids",
                        input.name
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !feeds.contains(&Feed::InputIds) {
            return Err(ModelError::Unsupported("a text encoder takes input_ids, and this model does not".into()));
        }
        let names: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        let chosen = ["sentence_embedding", "token_embeddings", "last_hidden_state", "logits"]
            .iter()
            .find_map(|wanted| names.iter().position(|n| n == wanted))
            .ok_or_else(|| {
                ModelError::Unsupported(format!(
                    "its outputs are {names:?}: a text model has last_hidden_state, token_embeddings or sentence_embedding (an encoder), or logits (a classifier)"
                ))
            })?;
        let operators = operators(graph);

        let cannot_run = |e: TractError| ModelError::Unsupported(format!("tract cannot run it: {e:#}"));
        let model = onnx.model_for_proto_model(&proto).map_err(|e| ModelError::Unsupported(format!("{e:#}")))?;
        let (rows, length): (TDim, TDim) = (model.sym("N").into(), model.sym("T").into());
        let model = (0..feeds.len()).try_fold(model, |model, i| {
            model.with_input_fact(i, i64::datum_type().fact([rows.clone(), length.clone()]).into())
        });
        let mut typed = model.and_then(|m| m.into_typed()).map_err(cannot_run)?;
        let outlet = typed.output_outlets().map_err(cannot_run)?[chosen];
        typed.select_output_outlets(&[outlet]).map_err(cannot_run)?;
        let typed = typed.into_decluttered().and_then(|m| m.into_optimized()).map_err(cannot_run)?;
        let fact = typed.output_fact(0).map_err(cannot_run)?;
        let width = fact.shape.last().and_then(|d| d.as_i64()).map(|d| d as usize);
        let head = text_head(names[chosen], fact.rank(), width, &folder.hub).ok_or_else(|| {
            ModelError::Unsupported(format!(
                "output {:?} is {:?}: a text encoder's is [batch, tokens, width] (or [batch, width] for sentence_embedding), a classifier's logits [batch, labels] or [batch, tokens, labels]",
                names[chosen], fact.shape
            ))
        })?;
        let width = width.unwrap_or_default();
        let plan = typed.into_runnable().map_err(|e| ModelError::Unsupported(format!("{e:#}")))?;
        let config = folder.config.unwrap_or_default();
        // A cross-encoder scores pairs, unless the configuration names one text column.
        let pairs = matches!(head, Head::Score { activation } if activation != Activation::Identity)
            && config.features.as_ref().is_none_or(|f| f.len() == 2);
        let outputs = text_outputs(&head, width);
        let encoder = TextEncoder::new(&folder.tokenizer, folder.layout, feeds, head, width, pairs)
            .map_err(ModelError::Unsupported)?;
        let column_inputs: Vec<ColumnInput> = TEXT_COLUMNS[..if pairs { 2 } else { 1 }]
            .iter()
            .map(|&name| ColumnInput { name: name.into(), kind: ColumnType::Text })
            .collect();
        Ok(Self {
            plan,
            input_name: "text".into(),
            n_features: column_inputs.len(),
            input_shape: vec![column_inputs.len()],
            image: None,
            column_inputs,
            matrix: ColumnType::Float,
            outputs,
            config,
            operators,
            handles_missing: false,
            sha256: hex::encode(Sha256::digest(&folder.model)),
            text: Some(encoder),
        })
    }

    /// Runs a text model on a batch's texts (or pairs): in runs of similar lengths, each row's
    /// answer in its place; and how many rows were cut to the model's maximum length.
    pub(super) fn run_texts(
        &self,
        encoder: &TextEncoder,
        batch: &Batch,
    ) -> Result<(Vec<OutputValues>, usize), ModelError> {
        let rows = batch.rows;
        let failed = |message: String| ModelError::Inference { rows, message };
        let per_row = if encoder.pairs { 2 } else { 1 };
        let text = |i: usize| std::str::from_utf8(batch.text.get(i)).map_err(|_| failed("a text is not UTF-8".into()));
        let texts = (0..rows)
            .map(|r| Ok((text(r * per_row)?, if encoder.pairs { Some(text(r * per_row + 1)?) } else { None })))
            .collect::<Result<Vec<TextRow>, _>>()?;
        let width = encoder.answer_width();
        let mut floats = vec![0f32; rows * width];
        let mut json = vec![String::new(); if width == 0 { rows } else { 0 }];
        let mut answers = vec![0f32; RUN_TEXTS * width];
        let mut truncated = 0;
        for run in TextEncoder::run_order(&texts).chunks(RUN_TEXTS) {
            let run_texts: Vec<TextRow> = run.iter().map(|&i| texts[i]).collect();
            let tokens = encoder.tokens(&run_texts).map_err(failed)?;
            truncated += tokens.truncated;
            let shape = [run.len(), tokens.length];
            let inputs = encoder
                .feeds
                .iter()
                .map(|feed| {
                    let values = match feed {
                        Feed::InputIds => &tokens.ids,
                        Feed::AttentionMask => &tokens.mask,
                        Feed::TokenTypeIds => &tokens.type_ids,
                    };
                    Tensor::from_shape(&shape, values).map(|t| t.into_tvalue())
                })
                .collect::<TractResult<TVec<_>>>()
                .map_err(|e| failed(format!("{e:#}")))?;
            let results = self.run_plan(inputs).map_err(|e| failed(format!("{e:#}")))?;
            let output = results[0]
                .try_as_plain_ram()
                .and_then(|r| r.as_slice::<f32>())
                .map_err(|e| failed(format!("{e:#}")))?;
            if width == 0 {
                for (&row, entities) in run.iter().zip(encoder.entities(output, &tokens, run.len())) {
                    json[row] = entities;
                }
                continue;
            }
            let run_answers = &mut answers[..run.len() * width];
            encoder.finish(output, &tokens, run.len(), run_answers);
            for (k, &row) in run.iter().enumerate() {
                floats[row * width..(row + 1) * width].copy_from_slice(&run_answers[k * width..(k + 1) * width]);
            }
        }
        let outputs = match &encoder.head {
            Head::Entities { .. } => vec![OutputValues::Text(json)],
            Head::Classify { .. } => {
                let labels = floats.chunks(width).map(|row| head::argmax(row) as i64).collect();
                vec![OutputValues::Int(labels), OutputValues::Float(floats)]
            }
            Head::Embed(_) | Head::Score { .. } => vec![OutputValues::Float(floats)],
        };
        Ok((outputs, truncated))
    }
}

/// What a text model's output `name` of `rank` and last dimension `width` is, by what its
/// folder's `config.json` says of its head; `None` when it is none of them.
fn text_head(name: &str, rank: usize, width: Option<usize>, hub: &HubConfig) -> Option<Head> {
    let width = width.filter(|&w| w > 0)?;
    let labels = || match &hub.labels {
        Some(labels) if labels.len() == width => labels.clone(),
        _ => (0..width).map(|i| format!("LABEL_{i}")).collect(),
    };
    Some(match (name, rank) {
        ("sentence_embedding", 2) => Head::Embed(Embeddings::Sentence),
        ("token_embeddings" | "last_hidden_state", 3) => Head::Embed(Embeddings::Tokens),
        ("logits", 3) => Head::Entities { labels: labels() },
        // transformers' pipeline: sigmoid for one label or multi-label, softmax for several.
        ("logits", 2) => match (width, hub.problem_type.as_deref()) {
            (_, Some("regression")) if width == 1 => Head::Score { activation: Activation::Identity },
            (1, _) => Head::Score { activation: hub.activation.unwrap_or(Activation::Sigmoid) },
            (_, Some("regression")) => Head::Classify { labels: labels(), activation: Activation::Identity },
            (_, Some("multi_label_classification")) => {
                Head::Classify { labels: labels(), activation: Activation::Sigmoid }
            }
            _ => Head::Classify { labels: labels(), activation: Activation::Softmax },
        },
        _ => return None,
    })
}

/// The output columns of a text model's answers.
fn text_outputs(head: &Head, width: usize) -> Vec<OutputSpec> {
    let values = |name: &str, columns: Vec<String>, list: bool| OutputSpec {
        name: name.into(),
        kind: OutputKind::Values { width: columns.len() },
        columns,
        rank: 2,
        element: Element::Float32,
        list,
    };
    match head {
        Head::Embed(_) => vec![values("embedding", (0..width).map(|i| format!("embedding_{i}")).collect(), true)],
        Head::Score { .. } => vec![values("score", vec!["score".into()], false)],
        Head::Classify { labels, .. } => vec![
            OutputSpec {
                name: "label".into(),
                kind: OutputKind::Label { classes: Some(Classes::new(labels.clone(), None)) },
                columns: vec!["label".into()],
                rank: 1,
                // Run as the class's index, named back (as a classifier of string labels).
                element: Element::String,
                list: false,
            },
            values("probabilities", labels.iter().map(|l| format!("probabilities_{l}")).collect(), false),
        ],
        Head::Entities { .. } => vec![OutputSpec {
            name: "entities".into(),
            kind: OutputKind::Label { classes: None },
            columns: vec!["entities".into()],
            rank: 1,
            element: Element::String,
            list: true,
        }],
    }
}
