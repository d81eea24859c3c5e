//! Text operators, as scikit-learn's `CountVectorizer` and `TfidfVectorizer` export (skl2onnx):
//! `StringNormalizer` (case, stop words), `Tokenizer` (onnxruntime's `com.microsoft` operator:
//! words by a regular expression, by separators, or characters) and `TfIdfVectorizer` (counts of
//! the n-grams, with skips, of a vocabulary; IDF weights). onnxruntime's kernels define the
//! answers, where they say more than the specification: the layout of marks and padding, which
//! tokens `mincharnum` drops, and RE2's ASCII `\w`, `\d`, `\s` and `\b`.

use std::collections::HashMap;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceOp, InferenceResult, IntoExp, Solver, TensorProxy, check_input_arity, check_output_arity,
    expand,
};

pub fn register(register: &mut OnnxOpRegister) {
    register.insert("StringNormalizer", string_normalizer);
    register.insert("Tokenizer", tokenizer);
    register.insert("TfIdfVectorizer", tfidf_vectorizer);
    register.insert("Flatten", flatten);
}

// ---------------------------------------------------------------------------------------------
// Flatten, of shapes of several symbols
// ---------------------------------------------------------------------------------------------

/// ONNX's `Flatten`, as tract's but for a shape of several symbols, which tract's refuses:
/// skl2onnx flattens the tokenizer's `[N, T]` tokens (both depend on the data), and torch's
/// export of a transformer flattens its `[N, T]` attention mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flatten {
    axis: i64,
}

fn flatten(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let axis: i64 = node.get_attr_opt("axis")?.unwrap_or(1);
    Ok((expand(Flatten { axis }), vec![]))
}

impl Flatten {
    /// `[product of the dimensions before the axis, product of the rest]`.
    fn output_shape(&self, shape: &[TDim]) -> TractResult<TVec<TDim>> {
        let axis = if self.axis < 0 { self.axis + shape.len() as i64 } else { self.axis };
        ensure!((0..=shape.len() as i64).contains(&axis), "Flatten axis {} of a rank-{} input", self.axis, shape.len());
        let (before, after) = shape.split_at(axis as usize);
        Ok(tvec![before.iter().cloned().product(), after.iter().cloned().product()])
    }
}

impl Expansion for Flatten {
    fn name(&self) -> StaticName {
        "Flatten".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.given(&inputs[0].shape, move |s, shape| {
            s.equals(
                &outputs[0].shape,
                tract_onnx::tract_hir::infer::ShapeFactoid::from(self.output_shape(&shape)?.to_vec()),
            )
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let shape = model.outlet_fact(inputs[0])?.shape.to_tvec();
        let flat = self.output_shape(&shape)?;
        if flat == shape {
            return Ok(inputs.into());
        }
        model.wire_node(prefix, AxisOp::Reshape(0, shape, flat), inputs)
    }
}

/// The strings of a string tensor.
fn strings(tensor: &Tensor) -> TractResult<&[String]> {
    ensure!(tensor.datum_type() == String::datum_type(), "a string tensor is expected, not {:?}", tensor.datum_type());
    tensor.try_as_plain_ram()?.as_slice::<String>()
}

fn string_tensor(shape: &[usize], values: Vec<String>) -> TractResult<Tensor> {
    Ok(tract_ndarray::ArrayD::from_shape_vec(shape, values)?.into())
}

// ---------------------------------------------------------------------------------------------
// StringNormalizer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CaseChange {
    Lower,
    Upper,
    Keep,
}

/// Drops stop words, then changes case. Without stop words the shape is kept (onnxruntime only
/// takes `[C]` and `[1, C]`); with them, what is left of a `[C]` or `[1, C]` input, or one empty
/// string when nothing is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringNormalizer {
    case: CaseChange,
    case_sensitive: bool,
    /// Lower-cased unless `case_sensitive`.
    stopwords: Vec<String>,
    /// The length of what is left, when stop words make it depend on the strings.
    left: Option<Symbol>,
}

fn string_normalizer(ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let case = match node.get_attr_opt::<String>("case_change_action")?.as_deref().unwrap_or("NONE") {
        "LOWER" => CaseChange::Lower,
        "UPPER" => CaseChange::Upper,
        "NONE" => CaseChange::Keep,
        other => bail!("StringNormalizer: case_change_action {other:?} is not LOWER, UPPER or NONE"),
    };
    let case_sensitive = node.get_attr_opt::<i64>("is_case_sensitive")?.unwrap_or(0) != 0;
    let stopwords: Vec<String> = node.get_attr_opt_vec::<String>("stopwords")?.unwrap_or_default();
    let stopwords = stopwords.iter().map(|w| if case_sensitive { w.clone() } else { lower(w) }).collect::<Vec<_>>();
    let left = (!stopwords.is_empty()).then(|| ctx.template.symbols.new_with_prefix("left"));
    Ok((expand(StringNormalizer { case, case_sensitive, stopwords, left }), vec![]))
}

/// Lower case as the C library's `towlower` gives it: one character for one (`İ` is `i`).
fn lower(text: &str) -> String {
    text.chars().map(|c| c.to_lowercase().next().unwrap_or(c)).collect()
}

/// Upper case as `towupper` gives it: a character with no one-character capital stays (`ß`).
fn upper(text: &str) -> String {
    text.chars()
        .map(|c| {
            let mut capital = c.to_uppercase();
            match (capital.next(), capital.next()) {
                (Some(one), None) => one,
                _ => c,
            }
        })
        .collect()
}

impl StringNormalizer {
    fn normalize(&self, text: &str) -> String {
        match self.case {
            CaseChange::Lower => lower(text),
            CaseChange::Upper => upper(text),
            CaseChange::Keep => text.to_owned(),
        }
    }

    fn is_stopword(&self, text: &str) -> bool {
        match self.case_sensitive {
            true => self.stopwords.iter().any(|w| w == text),
            false => self.stopwords.contains(&lower(text)),
        }
    }
}

impl Expansion for StringNormalizer {
    fn name(&self) -> StaticName {
        "StringNormalizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, String::datum_type())?;
        s.equals(&outputs[0].datum_type, String::datum_type())?;
        s.equals(&outputs[0].rank, &inputs[0].rank)?;
        if self.left.is_none() {
            s.equals(&outputs[0].shape, &inputs[0].shape)?;
        }
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for StringNormalizer {
    fn name(&self) -> StaticName {
        "StringNormalizer".into()
    }

    fn mints_runtime_symbols(&self) -> bool {
        self.left.is_some()
    }

    op_as_typed_op!();
}

impl EvalOp for StringNormalizer {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let texts = strings(&input)?;
        if self.stopwords.is_empty() {
            let normalized = texts.iter().map(|t| self.normalize(t)).collect();
            return Ok(tvec![string_tensor(input.shape(), normalized)?.into_tvalue()]);
        }
        let shape = input.shape();
        ensure!(
            shape.len() == 1 || (shape.len() == 2 && shape[0] == 1),
            "StringNormalizer with stop words takes [C] or [1, C] strings, not {shape:?}"
        );
        let mut kept: Vec<String> = texts.iter().filter(|t| !self.is_stopword(t)).map(|t| self.normalize(t)).collect();
        if kept.is_empty() {
            kept.push(String::new());
        }
        let shape = if shape.len() == 1 { vec![kept.len()] } else { vec![1, kept.len()] };
        Ok(tvec![string_tensor(&shape, kept)?.into_tvalue()])
    }
}

impl TypedOp for StringNormalizer {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        if let (Some(left), Some(last)) = (&self.left, shape.last_mut()) {
            *last = left.to_dim();
        }
        Ok(tvec![String::fact(shape)])
    }

    as_op!();
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

/// How a string is cut into tokens.
#[derive(Debug, Clone)]
enum Cut {
    /// The matches of an expression (RE2's syntax), empty ones aside.
    Matches(regex::Regex),
    /// The text between separators (the earlier separator where two start at one place).
    Separators(Vec<String>),
    /// Each character.
    Characters,
}

impl PartialEq for Cut {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Cut::Matches(a), Cut::Matches(b)) => a.as_str() == b.as_str(),
            (Cut::Separators(a), Cut::Separators(b)) => a == b,
            (Cut::Characters, Cut::Characters) => true,
            _ => false,
        }
    }
}

impl Eq for Cut {}

/// `[C]` or `[N, C]` strings to `[C, T]` or `[N, C, T]` tokens: each string's tokens of at least
/// `mincharnum` characters, between the marks `\x02` and `\x03` when `mark` is set, then padded
/// to the longest. When no string has a token, the last axis is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenizer {
    cut: Cut,
    mark: bool,
    mincharnum: usize,
    pad: String,
    /// The longest string's token count (marks included): it depends on the strings.
    tokens: Symbol,
}

fn tokenizer(ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let mark = node.get_attr_opt::<i64>("mark")?.unwrap_or(0) != 0;
    let mincharnum = node.get_attr_opt::<i64>("mincharnum")?.unwrap_or(1).max(0) as usize;
    let pad = node.get_attr_opt::<String>("pad_value")?.unwrap_or_else(|| "#".into());
    let expression = node.get_attr_opt::<String>("tokenexp")?.filter(|e| !e.is_empty());
    let separators = node.get_attr_opt_vec::<String>("separators")?.unwrap_or_default();
    let cut = match (expression, separators.as_slice()) {
        (Some(expression), _) => Cut::Matches(
            regex::Regex::new(&re2_classes(&expression))
                .map_err(|e| format_err!("Tokenizer: tokenexp {expression:?} is not a regular expression: {e}"))?,
        ),
        (None, [only]) if only.is_empty() => Cut::Characters,
        (None, []) => bail!("Tokenizer has neither tokenexp nor separators"),
        (None, separators) => {
            ensure!(separators.iter().all(|s| !s.is_empty()), "Tokenizer: an empty separator among others");
            Cut::Separators(separators.to_vec())
        }
    };
    let tokens = ctx.template.symbols.new_with_prefix("tokens");
    Ok((expand(Tokenizer { cut, mark, mincharnum, pad, tokens }), vec![]))
}

/// An RE2 expression for Rust's `regex`: RE2's `\w`, `\d`, `\s` and `\b` are ASCII, Rust's are
/// Unicode; everything else this tokenizer meets reads the same in both.
fn re2_classes(expression: &str) -> String {
    let mut out = String::with_capacity(expression.len() + 16);
    let (mut chars, mut in_class) = (expression.chars(), false);
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(class @ ('w' | 'W' | 'd' | 'D' | 's' | 'S')) => {
                    let ascii = match class.to_ascii_lowercase() {
                        'w' => "0-9A-Za-z_",
                        'd' => "0-9",
                        _ => "\\t\\n\\x0C\\r ",
                    };
                    match (in_class, class.is_ascii_lowercase()) {
                        (true, true) => out.push_str(ascii),
                        (false, true) => out.push_str(&format!("[{ascii}]")),
                        (false, false) => out.push_str(&format!("[^{ascii}]")),
                        // A negated class inside a class: kept (Unicode); RE2 users rarely write it.
                        (true, false) => out.extend(['\\', class]),
                    }
                }
                Some(boundary @ ('b' | 'B')) if !in_class => out.push_str(&format!("(?-u:\\{boundary})")),
                Some(other) => out.extend(['\\', other]),
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // A `]` (or `^]`) first in a class is a character, not its end.
                let mut rest = chars.clone();
                match rest.next() {
                    Some('^') if rest.next() == Some(']') => {
                        out.push_str("^\\]");
                        chars.nth(1);
                    }
                    Some(']') => {
                        out.push_str("\\]");
                        chars.next();
                    }
                    _ => {}
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

impl Tokenizer {
    fn tokens<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let long_enough = |token: &&str| !token.is_empty() && token.chars().count() >= self.mincharnum;
        match &self.cut {
            Cut::Matches(expression) => expression.find_iter(text).map(|m| m.as_str()).filter(long_enough).collect(),
            Cut::Characters => text.char_indices().map(|(i, c)| &text[i..i + c.len_utf8()]).collect(),
            Cut::Separators(separators) => {
                let (mut tokens, mut start, mut at) = (Vec::new(), 0, 0);
                while at < text.len() {
                    match separators.iter().find(|s| text[at..].starts_with(s.as_str())) {
                        Some(separator) => {
                            tokens.push(&text[start..at]);
                            at += separator.len();
                            start = at;
                        }
                        None => at += text[at..].chars().next().map_or(1, char::len_utf8),
                    }
                }
                tokens.push(&text[start..]);
                tokens.retain(long_enough);
                tokens
            }
        }
    }
}

impl Expansion for Tokenizer {
    fn name(&self) -> StaticName {
        "Tokenizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, String::datum_type())?;
        s.equals(&outputs[0].datum_type, String::datum_type())?;
        s.equals(&outputs[0].rank, inputs[0].rank.bex() + 1)?;
        s.given(&inputs[0].rank, move |s, rank| {
            for axis in 0..rank as usize {
                s.equals(&outputs[0].shape[axis], &inputs[0].shape[axis])?;
            }
            Ok(())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for Tokenizer {
    fn name(&self) -> StaticName {
        "Tokenizer".into()
    }

    fn mints_runtime_symbols(&self) -> bool {
        true
    }

    op_as_typed_op!();
}

impl EvalOp for Tokenizer {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(matches!(input.rank(), 1 | 2), "Tokenizer takes [C] or [N, C] strings, not {:?}", input.shape());
        let (width, tokens) = self.tokenize(strings(&input)?);
        let mut shape = input.shape().to_vec();
        shape.push(width);
        Ok(tvec![string_tensor(&shape, tokens)?.into_tvalue()])
    }
}

impl Tokenizer {
    /// Each text's tokens, marked and padded to the longest: the width, and the tokens row by row.
    fn tokenize(&self, texts: &[String]) -> (usize, Vec<String>) {
        let rows: Vec<Vec<&str>> = texts.iter().map(|text| self.tokens(text)).collect();
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
        if longest == 0 {
            return (0, Vec::new());
        }
        let width = longest + if self.mark { 2 } else { 0 };
        let mut out = Vec::with_capacity(rows.len() * width);
        for row in rows {
            let written = out.len();
            if self.mark {
                out.push("\u{2}".to_owned());
            }
            out.extend(row.into_iter().map(str::to_owned));
            if self.mark {
                out.push("\u{3}".to_owned());
            }
            out.resize(written + width, self.pad.clone());
        }
        (width, out)
    }
}

impl TypedOp for Tokenizer {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        shape.push(self.tokens.to_dim());
        Ok(tvec![String::fact(shape)])
    }

    as_op!();
}

// ---------------------------------------------------------------------------------------------
// TfIdfVectorizer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Weighting {
    /// Counts.
    Tf,
    /// The weight where the count is not 0.
    Idf,
    /// Counts times weights.
    TfIdf,
}

/// `[C]` or `[N, C]` tokens (strings or integers) to `[W]` or `[N, W]` floats: for each n-gram of
/// the pool, how often it occurs, its tokens `1 + skip` apart for every skip up to
/// `max_skip_count` (unigrams once each), written at the pool n-gram's output index and
/// weighted as `mode` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TfIdfVectorizer {
    weighting: Weighting,
    min_gram: usize,
    max_gram: usize,
    max_skip: usize,
    /// The pool's tokens, numbered.
    vocabulary: HashMap<Token, u32>,
    /// For each n from 1, the pool's n-grams (of token numbers) and their place in the pool.
    ngrams: Vec<HashMap<Box<[u32]>, usize>>,
    /// Each pool n-gram's output column.
    indexes: Vec<usize>,
    /// Each pool n-gram's weight, as bits (so that the op compares equal to itself).
    weights: Vec<u32>,
    width: usize,
}

/// A token of the pool or the input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Token {
    Text(String),
    Int(i64),
}

fn tfidf_vectorizer(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let weighting = match node.get_attr_opt::<String>("mode")?.as_deref().unwrap_or("TF") {
        "TF" => Weighting::Tf,
        "IDF" => Weighting::Idf,
        "TFIDF" => Weighting::TfIdf,
        other => bail!("TfIdfVectorizer: mode {other:?} is not TF, IDF or TFIDF"),
    };
    let positive = |name: &str| -> TractResult<usize> {
        let value = node.get_attr_opt::<i64>(name)?.ok_or_else(|| format_err!("TfIdfVectorizer has no {name}"))?;
        usize::try_from(value).map_err(|_| format_err!("TfIdfVectorizer: {name} is {value}"))
    };
    let (min_gram, max_gram, max_skip) =
        (positive("min_gram_length")?, positive("max_gram_length")?, positive("max_skip_count")?);
    ensure!(1 <= min_gram && min_gram <= max_gram, "TfIdfVectorizer: n-grams from {min_gram} to {max_gram}");
    let pool: Vec<Token> = match node.get_attr_opt_vec::<String>("pool_strings")?.filter(|p| !p.is_empty()) {
        Some(strings) => strings.into_iter().map(Token::Text).collect(),
        None => node.get_attr_opt_vec::<i64>("pool_int64s")?.unwrap_or_default().into_iter().map(Token::Int).collect(),
    };
    let starts: Vec<usize> = node.get_attr_vec::<i64>("ngram_counts")?.into_iter().map(|c| c.max(0) as usize).collect();
    let indexes: Vec<usize> =
        node.get_attr_vec::<i64>("ngram_indexes")?.into_iter().map(|i| i.max(0) as usize).collect();
    let mut vocabulary = HashMap::new();
    let mut ngrams = Vec::with_capacity(starts.len());
    let mut place = 0;
    for (k, &start) in starts.iter().enumerate() {
        let (n, end) = (k + 1, starts.get(k + 1).copied().unwrap_or(pool.len()));
        ensure!(start <= end && end <= pool.len(), "TfIdfVectorizer: ngram_counts {starts:?} do not fit the pool");
        ensure!((end - start) % n == 0, "TfIdfVectorizer: the pool's {n}-grams are {} tokens", end - start);
        let mut these = HashMap::new();
        for gram in pool[start..end].chunks(n) {
            let numbers = gram.iter().map(|token| {
                let next = vocabulary.len() as u32;
                *vocabulary.entry(token.clone()).or_insert(next)
            });
            these.insert(numbers.collect::<Box<[u32]>>(), place);
            place += 1;
        }
        ngrams.push(these);
    }
    ensure!(indexes.len() == place, "TfIdfVectorizer: {} n-grams and {} ngram_indexes", place, indexes.len());
    let weights = node.get_attr_opt_vec::<f32>("weights")?.unwrap_or_default();
    ensure!(
        weights.is_empty() || weights.len() == place,
        "TfIdfVectorizer: {} n-grams and {} weights",
        place,
        weights.len()
    );
    let weights = weights.into_iter().map(f32::to_bits).collect();
    let width = indexes.iter().max().map_or(0, |m| m + 1);
    let op = TfIdfVectorizer { weighting, min_gram, max_gram, max_skip, vocabulary, ngrams, indexes, weights, width };
    Ok((expand(op), vec![]))
}

impl TfIdfVectorizer {
    /// Adds one row of tokens (numbered; `None` for a token not in the pool) to `out`.
    fn row(&self, tokens: &[Option<u32>], counts: &mut [u32], out: &mut [f32]) {
        counts.fill(0);
        let mut gram = Vec::with_capacity(self.max_gram);
        for n in self.min_gram..=self.max_gram.min(self.ngrams.len()) {
            let pool = &self.ngrams[n - 1];
            if pool.is_empty() {
                continue;
            }
            let skips = if n == 1 { 0 } else { self.max_skip };
            for skip in 0..=skips {
                let step = skip + 1;
                let span = (n - 1) * step;
                for start in 0..tokens.len().saturating_sub(span) {
                    gram.clear();
                    gram.extend((0..n).map_while(|j| tokens[start + j * step]));
                    if gram.len() == n
                        && let Some(&place) = pool.get(gram.as_slice())
                    {
                        counts[place] += 1;
                    }
                }
            }
        }
        out.fill(0.0);
        for (place, &count) in counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let weight = self.weights.get(place).map_or(1.0, |&w| f32::from_bits(w));
            out[self.indexes[place]] = match self.weighting {
                Weighting::Tf => count as f32,
                Weighting::Idf => weight,
                Weighting::TfIdf => count as f32 * weight,
            };
        }
    }

    fn number(&self, token: &Token) -> Option<u32> {
        self.vocabulary.get(token).copied()
    }
}

impl Expansion for TfIdfVectorizer {
    fn name(&self) -> StaticName {
        "TfIdfVectorizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].rank, &inputs[0].rank)?;
        s.given(&inputs[0].rank, move |s, rank| {
            if rank == 2 {
                s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
            }
            s.equals(&outputs[0].shape[rank as usize - 1], self.width.to_dim())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?;
        let dt = fact.datum_type;
        ensure!(
            dt == String::datum_type() || dt.is_integer() || dt == TDim::datum_type(),
            "TfIdfVectorizer takes strings or integers, not {dt:?}"
        );
        model.wire_node(prefix, self.clone(), inputs)
    }
}

impl Op for TfIdfVectorizer {
    fn name(&self) -> StaticName {
        "TfIdfVectorizer".into()
    }

    op_as_typed_op!();
}

impl EvalOp for TfIdfVectorizer {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let numbers: Vec<Option<u32>> = if input.datum_type() == String::datum_type() {
            strings(&input)?.iter().map(|t| self.number(&Token::Text(t.clone()))).collect()
        } else {
            let ints = input.cast_to::<i64>()?;
            ints.try_as_plain_ram()?.as_slice::<i64>()?.iter().map(|&i| self.number(&Token::Int(i))).collect()
        };
        let (rows, columns) = match input.shape() {
            [columns] => (1, *columns),
            [rows, columns] => (*rows, *columns),
            shape => bail!("TfIdfVectorizer takes [C] or [N, C] tokens, not {shape:?}"),
        };
        let mut out = vec![0.0f32; rows * self.width];
        let mut counts = vec![0u32; self.indexes.len()];
        if columns > 0 {
            for (tokens, row) in numbers.chunks(columns).zip(out.chunks_mut(self.width)) {
                self.row(tokens, &mut counts, row);
            }
        }
        let shape: Vec<usize> = if input.rank() == 1 { vec![self.width] } else { vec![rows, self.width] };
        Ok(tvec![Tensor::from_shape(&shape, &out)?.into_tvalue()])
    }
}

impl TypedOp for TfIdfVectorizer {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape: TVec<TDim> = match inputs[0].rank() {
            1 => tvec![self.width.to_dim()],
            _ => tvec![inputs[0].shape[0].clone(), self.width.to_dim()],
        };
        Ok(tvec![f32::fact(shape)])
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re2s_perl_classes_are_ascii() {
        assert_eq!(re2_classes(r"\w+"), "[0-9A-Za-z_]+");
        assert_eq!(re2_classes(r"[\w-]+"), "[0-9A-Za-z_-]+");
        assert_eq!(re2_classes(r"\b\w\w+\b"), r"(?-u:\b)[0-9A-Za-z_][0-9A-Za-z_]+(?-u:\b)");
        assert_eq!(re2_classes(r"[^\s]\S"), r"[^\t\n\x0C\r ][^\t\n\x0C\r ]");
        assert_eq!(re2_classes(r"[]a]\."), r"[\]a]\.");
        let words = regex::Regex::new(&re2_classes(r"\b\w\w+\b")).unwrap();
        let found: Vec<&str> = words.find_iter("café crème 東京 ab c9").map(|m| m.as_str()).collect();
        assert_eq!(found, ["caf", "cr", "me", "ab", "c9"]);
    }

    fn tokenizer(cut: Cut, mark: bool, mincharnum: usize) -> Tokenizer {
        let tokens = SymbolScope::default().new_with_prefix("tokens");
        Tokenizer { cut, mark, mincharnum, pad: "#".into(), tokens }
    }

    fn texts(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    /// The answers onnxruntime 1.31's Tokenizer gives for the same attributes and texts.
    #[test]
    fn tokens_are_marked_filtered_and_padded_as_onnxruntime_does() {
        let words = || Cut::Matches(regex::Regex::new(&re2_classes("[a-zA-Z0-9_]+")).unwrap());
        let input = texts(&["the cat, sat", "café crème 東京 x", "", " ", "a_b-c9 d"]);
        let (width, tokens) = tokenizer(words(), false, 1).tokenize(&input);
        assert_eq!(width, 4);
        assert_eq!(tokens[..8], ["the", "cat", "sat", "#", "caf", "cr", "me", "x"]);
        assert_eq!(tokens[16..], ["a_b", "c9", "d", "#"]);
        let (width, tokens) = tokenizer(words(), false, 2).tokenize(&input);
        assert_eq!((width, &tokens[12..]), (3, &texts(&["a_b", "c9", "#"])[..]));
        let (width, tokens) = tokenizer(words(), true, 1).tokenize(&input);
        assert_eq!(width, 6);
        assert_eq!(
            tokens[..12],
            ["\u{2}", "the", "cat", "sat", "\u{3}", "#", "\u{2}", "caf", "cr", "me", "x", "\u{3}"]
        );
        assert_eq!(tokens[12..18], ["\u{2}", "\u{3}", "#", "#", "#", "#"]);
        // No token anywhere: an empty last axis, marks or not.
        assert_eq!(tokenizer(words(), true, 1).tokenize(&texts(&["", " "])), (0, vec![]));
        let separators = Cut::Separators(texts(&[" ", ","]));
        let (width, tokens) = tokenizer(separators, false, 2).tokenize(&texts(&["a bb, ccc d", "", "x"]));
        assert_eq!((width, tokens), (2, texts(&["bb", "ccc", "#", "#", "#", "#"])));
        let (width, tokens) = tokenizer(Cut::Characters, false, 1).tokenize(&texts(&["ab", "é"]));
        assert_eq!((width, tokens), (2, texts(&["a", "b", "é", "#"])));
        let empty_matches = Cut::Matches(regex::Regex::new("a*").unwrap());
        assert_eq!(tokenizer(empty_matches, false, 1).tokenize(&texts(&["baab"])), (1, texts(&["aa"])));
    }

    #[test]
    fn case_changes_one_character_for_one() {
        assert_eq!(lower("The CAFÉ İstanbul ẞ ΣΑΣ"), "the café istanbul ß σασ");
        assert_eq!(upper("The café straße ǆ"), "THE CAFÉ STRAßE Ǆ");
    }
}
