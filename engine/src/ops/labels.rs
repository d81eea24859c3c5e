//! The class labels a classifier declares, and its label output.

use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// The class labels a classifier declares.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl Labels {
    /// `classlabels_<ints_name>` or `classlabels_strings`.
    pub fn parse(node: &NodeProto, ints_name: &str) -> TractResult<Self> {
        let ints = node.get_attr_opt_vec::<i64>(ints_name)?.filter(|v| !v.is_empty());
        let strings = node.get_attr_opt_vec::<String>("classlabels_strings")?.filter(|v| !v.is_empty());
        match (ints, strings) {
            (Some(ints), None) => Ok(Self::Ints(ints)),
            (None, Some(strings)) => Ok(Self::Strings(strings)),
            (None, None) => bail!("the classifier declares no class labels ({ints_name} or classlabels_strings)"),
            (Some(_), Some(_)) => bail!("the classifier declares both {ints_name} and classlabels_strings"),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Ints(labels) => labels.len(),
            Self::Strings(labels) => labels.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn datum_type(&self) -> DatumType {
        match self {
            Self::Ints(_) => i64::datum_type(),
            Self::Strings(_) => String::datum_type(),
        }
    }

    /// The label output for rows whose labels are these indices into the declared labels; an
    /// index past them stands for the literal label `index - len` (onnxruntime's binary classifiers answer the literal labels 1 and 0 in some cases).
    pub fn tensor(&self, indices: &[usize]) -> TractResult<Tensor> {
        let n = self.len();
        Ok(match self {
            Self::Ints(labels) => {
                tensor1(&indices.iter().map(|&i| if i < n { labels[i] } else { (i - n) as i64 }).collect::<Vec<_>>())
            }
            Self::Strings(labels) => {
                tensor1(&indices.iter().map(|&i| labels[if i < n { i } else { i - n }].clone()).collect::<Vec<_>>())
            }
        })
    }
}
