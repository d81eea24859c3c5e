//! Tree ensembles: `TreeEnsembleClassifier` and `TreeEnsembleRegressor` (ai.onnx.ml 1-3) and the
//! unified `TreeEnsemble` (ai.onnx.ml 5), as random forests, gradient boosting, XGBoost and
//! LightGBM export them.
//!
//! Every tree of the ensemble lives in one flat array of 16-byte nodes (threshold, feature, both
//! children; a leaf holds the range of its weights instead), and rows are evaluated in blocks:
//! each tree runs over a whole block of rows while its nodes are in cache, eight rows stepping
//! down it side by side (their loads overlap) with no allocation. When every split of the ensemble compares the same way
//! (as each converter writes them), the comparison is fixed at compile time.
//!
//! The arithmetic is onnxruntime's: a branch is taken when the comparison holds, or when the
//! value is NaN and the node's `missing_value_tracks_true` is set; leaf weights are summed in
//! f32; base values, averages, minima and maxima, the binary classifiers' second score and their
//! labels follow onnxruntime's tree aggregator, quirks included (they are what every exported
//! model was checked against).

use std::collections::HashMap;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_hir::internal::InferenceOp;

use super::labels::Labels;
use super::post_transform::{PostTransform, logistic, probit};
use super::row_op::{Output, RowKernel, Width, floats, inference_op, matrix, tensor_attribute, text};

pub fn register(register: &mut OnnxOpRegister) {
    register.insert("TreeEnsembleClassifier", classifier);
    register.insert("TreeEnsembleRegressor", regressor);
    register.insert("TreeEnsemble", unified);
}

/// How a node compares a row's value with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Split {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    /// Set membership (`TreeEnsemble` only): the node's threshold is the index of its set in
    /// [`Forest::members`].
    Member,
}

impl Split {
    fn parse(mode: &str) -> TractResult<Option<Self>> {
        Ok(Some(match mode {
            "BRANCH_LEQ" => Self::Leq,
            "BRANCH_LT" => Self::Lt,
            "BRANCH_GTE" => Self::Gte,
            "BRANCH_GT" => Self::Gt,
            "BRANCH_EQ" => Self::Eq,
            "BRANCH_NEQ" => Self::Neq,
            "LEAF" => return Ok(None),
            other => bail!("node mode {other:?} is not supported"),
        }))
    }

    fn from_code(code: i64) -> TractResult<Self> {
        Ok(match code {
            0 => Self::Leq,
            1 => Self::Lt,
            2 => Self::Gte,
            3 => Self::Gt,
            4 => Self::Eq,
            5 => Self::Neq,
            6 => Self::Member,
            other => bail!("node mode {other} is not one of 0 to 6"),
        })
    }

    #[inline(always)]
    fn holds(self, x: f32, threshold: f32) -> bool {
        match self {
            Self::Leq => x <= threshold,
            Self::Lt => x < threshold,
            Self::Gte => x >= threshold,
            Self::Gt => x > threshold,
            Self::Eq => x == threshold,
            Self::Neq => x != threshold,
            // Resolved by the forest, which holds the sets.
            Self::Member => false,
        }
    }
}

/// Rows that go down a tree side by side.
const LANES: usize = 8;

/// A node's `feature` field: the feature index in the low bits, and two flags.
const LEAF: u32 = 1 << 31;
const NAN_TRUE: u32 = 1 << 30;
const FEATURE: u32 = NAN_TRUE - 1;

/// One node. A split goes to `true_next` when its comparison holds and to `false_next` when not;
/// a leaf's weights are `weights[true_next..false_next]`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct Node {
    threshold: f32,
    feature: u32,
    true_next: u32,
    false_next: u32,
}

/// A leaf's contribution to one target (or class).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Weight {
    target: u32,
    value: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

impl Aggregate {
    fn parse(name: &str) -> TractResult<Self> {
        Ok(match name {
            "SUM" => Self::Sum,
            "AVERAGE" => Self::Average,
            "MIN" => Self::Min,
            "MAX" => Self::Max,
            other => bail!("aggregate_function {other:?} is not one of SUM, AVERAGE, MIN, MAX"),
        })
    }
}

/// The trees of an ensemble, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
struct Forest {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    weights: Vec<Weight>,
    /// The split every node uses, when they all use the same; else `splits` has one per node.
    uniform: Option<Split>,
    splits: Vec<Split>,
    /// Features a row needs: one more than the largest index a split reads.
    n_features: usize,
    n_targets: usize,
    /// The sets of the `Member` splits.
    members: Vec<Vec<f32>>,
}

/// One node as the attributes describe it, before it is laid out.
struct NodeSpec {
    tree: i64,
    id: i64,
    feature: i64,
    threshold: f32,
    split: Option<Split>,
    true_id: i64,
    false_id: i64,
    nan_true: bool,
}

impl Forest {
    /// Lays out `specs` (in the order the model lists them) with the leaf weights `leaves`
    /// (`(tree, node) -> weights`). Each tree's root is its first node listed, as in onnxruntime.
    fn build(
        specs: Vec<NodeSpec>,
        mut leaves: HashMap<(i64, i64), Vec<Weight>>,
        n_targets: usize,
    ) -> TractResult<Self> {
        ensure!(!specs.is_empty(), "the ensemble has no nodes");
        let index: HashMap<(i64, i64), u32> =
            specs.iter().enumerate().map(|(i, s)| ((s.tree, s.id), i as u32)).collect();
        ensure!(index.len() == specs.len(), "two nodes have the same tree and node id");
        let mut roots = Vec::new();
        let mut seen_trees = std::collections::HashSet::new();
        let (mut nodes, mut splits, mut weights) = (Vec::with_capacity(specs.len()), Vec::new(), Vec::new());
        let mut n_features = 0;
        for (i, spec) in specs.iter().enumerate() {
            if seen_trees.insert(spec.tree) {
                roots.push(i as u32);
            }
            let child = |id: i64| {
                index.get(&(spec.tree, id)).copied().ok_or_else(|| {
                    format_err!("node {} of tree {} points to node {id}, which the tree lacks", spec.id, spec.tree)
                })
            };
            let node = match spec.split {
                Some(split) => {
                    let feature = u32::try_from(spec.feature)
                        .ok()
                        .filter(|&f| f <= FEATURE)
                        .ok_or_else(|| format_err!("feature index {} is out of range", spec.feature))?;
                    n_features = n_features.max(feature as usize + 1);
                    splits.push(split);
                    Node {
                        threshold: spec.threshold,
                        feature: feature | if spec.nan_true { NAN_TRUE } else { 0 },
                        true_next: child(spec.true_id)?,
                        false_next: child(spec.false_id)?,
                    }
                }
                None => {
                    splits.push(Split::Leq);
                    let start = weights.len() as u32;
                    for weight in leaves.remove(&(spec.tree, spec.id)).unwrap_or_default() {
                        ensure!(
                            (weight.target as usize) < n_targets,
                            "a leaf of tree {} adds to target {}, of {n_targets}",
                            spec.tree,
                            weight.target
                        );
                        weights.push(weight);
                    }
                    Node { threshold: 0.0, feature: LEAF, true_next: start, false_next: weights.len() as u32 }
                }
            };
            nodes.push(node);
        }
        if let Some(&(tree, node)) = leaves.keys().next() {
            bail!("weights are given for node {node} of tree {tree}, which is not a leaf of the ensemble");
        }
        let branch_splits: Vec<Split> =
            specs.iter().zip(&splits).filter(|(s, _)| s.split.is_some()).map(|(_, &split)| split).collect();
        let uniform = match branch_splits.first() {
            // Sets are looked up per node, on the mixed path.
            Some(&first) if first != Split::Member && branch_splits.iter().all(|&s| s == first) => Some(first),
            Some(_) => None,
            None => Some(Split::Leq),
        };
        let forest = Self { nodes, roots, weights, uniform, splits, n_features, n_targets, members: vec![] };
        forest.check_trees()?;
        Ok(forest)
    }

    /// Every path from a root ends in a leaf, and no node is reached twice (the evaluation
    /// loop relies on it to end).
    fn check_trees(&self) -> TractResult<()> {
        let mut visited = vec![false; self.nodes.len()];
        for &root in &self.roots {
            let mut stack = vec![root];
            while let Some(i) = stack.pop() {
                let seen = std::mem::replace(&mut visited[i as usize], true);
                ensure!(!seen, "node {i} of the ensemble is reached twice: the trees are not trees");
                let node = self.nodes[i as usize];
                if node.feature & LEAF == 0 {
                    stack.extend([node.true_next, node.false_next]);
                }
            }
        }
        Ok(())
    }

    /// Runs every tree over rows of `width` values, handing each row's leaves to `visit`.
    /// Rows go in blocks so a tree's nodes stay in cache across the block.
    fn for_each_leaf(&self, x: &[f32], width: usize, mut visit: impl FnMut(usize, &[Weight])) -> TractResult<()> {
        ensure!(width >= self.n_features, "the trees read {} features; rows have {width}", self.n_features);
        if width == 0 {
            return Ok(());
        }
        const BLOCK: usize = 64;
        for (block_index, block) in x.chunks(BLOCK * width).enumerate() {
            let first_row = block_index * BLOCK;
            for &root in &self.roots {
                // Rows go down the tree LANES at a time, side by side: their node loads are
                // independent, so the processor overlaps them instead of waiting on each in turn.
                macro_rules! rows_with {
                    ($holds:expr) => {{
                        let holds = $holds;
                        let mut lanes = block.chunks_exact(LANES * width);
                        for (group, rows) in lanes.by_ref().enumerate() {
                            let leaves = self.leaves(root, rows, width, &holds);
                            for (k, leaf) in leaves.iter().enumerate() {
                                let weights = &self.weights[leaf.true_next as usize..leaf.false_next as usize];
                                visit(first_row + group * LANES + k, weights);
                            }
                        }
                        let done = (block.len() / width) / LANES * LANES;
                        for (r, row) in lanes.remainder().chunks_exact(width).enumerate() {
                            let leaf = self.leaf(root, row, &holds);
                            visit(
                                first_row + done + r,
                                &self.weights[leaf.true_next as usize..leaf.false_next as usize],
                            );
                        }
                    }};
                }
                match self.uniform {
                    Some(Split::Leq) => rows_with!(|_, x: f32, t: f32| x <= t),
                    Some(Split::Lt) => rows_with!(|_, x: f32, t: f32| x < t),
                    Some(Split::Gte) => rows_with!(|_, x: f32, t: f32| x >= t),
                    Some(Split::Gt) => rows_with!(|_, x: f32, t: f32| x > t),
                    Some(split) => rows_with!(|_, x: f32, t: f32| split.holds(x, t)),
                    None => rows_with!(|i: usize, x: f32, t: f32| match self.splits[i] {
                        Split::Member => self.members[t as usize].contains(&x),
                        split => split.holds(x, t),
                    }),
                }
            }
        }
        Ok(())
    }

    /// The leaves [`LANES`] rows (`rows`, `width` values each) reach from `root`, the rows
    /// stepping down together.
    #[inline(always)]
    fn leaves(&self, root: u32, rows: &[f32], width: usize, holds: &impl Fn(usize, f32, f32) -> bool) -> [Node; LANES] {
        let mut at = [root as usize; LANES];
        let mut nodes = [self.nodes[root as usize]; LANES];
        loop {
            let mut moved = false;
            for k in 0..LANES {
                let node = nodes[k];
                if node.feature & LEAF == 0 {
                    let x = rows[k * width + (node.feature & FEATURE) as usize];
                    let go_true = holds(at[k], x, node.threshold) || (node.feature & NAN_TRUE != 0 && x.is_nan());
                    at[k] = if go_true { node.true_next } else { node.false_next } as usize;
                    nodes[k] = self.nodes[at[k]];
                    moved = true;
                }
            }
            if !moved {
                return nodes;
            }
        }
    }

    /// The leaf `row` reaches from `root`.
    #[inline(always)]
    fn leaf(&self, root: u32, row: &[f32], holds: &impl Fn(usize, f32, f32) -> bool) -> Node {
        let mut i = root as usize;
        loop {
            let node = self.nodes[i];
            if node.feature & LEAF != 0 {
                return node;
            }
            let x = row[(node.feature & FEATURE) as usize];
            let go_true = holds(i, x, node.threshold) || (node.feature & NAN_TRUE != 0 && x.is_nan());
            i = if go_true { node.true_next } else { node.false_next } as usize;
        }
    }
}

/// The classic operators' node attributes (`nodes_*`) and leaf attributes (`<prefix>_*`:
/// `class_*` for the classifier, `target_*` for the regressor).
fn classic_forest(node: &NodeProto, leaf_prefix: &str, n_targets: usize) -> TractResult<Forest> {
    let ints = |name: &str| -> TractResult<Vec<i64>> { Ok(node.get_attr_opt_vec::<i64>(name)?.unwrap_or_default()) };
    let tree_ids = ints("nodes_treeids")?;
    let n = tree_ids.len();
    let node_ids = ints("nodes_nodeids")?;
    let features = ints("nodes_featureids")?;
    let true_ids = ints("nodes_truenodeids")?;
    let false_ids = ints("nodes_falsenodeids")?;
    let thresholds = floats(node, "nodes_values")?.unwrap_or_default();
    let modes: Vec<String> = node.get_attr_opt_vec::<String>("nodes_modes")?.unwrap_or_default();
    let nan_true = node.get_attr_opt_vec::<i64>("nodes_missing_value_tracks_true")?.unwrap_or_else(|| vec![0; n]);
    for (name, len) in [
        ("nodes_nodeids", node_ids.len()),
        ("nodes_featureids", features.len()),
        ("nodes_truenodeids", true_ids.len()),
        ("nodes_falsenodeids", false_ids.len()),
        ("nodes_values", thresholds.len()),
        ("nodes_modes", modes.len()),
        ("nodes_missing_value_tracks_true", nan_true.len()),
    ] {
        ensure!(len == n, "attribute {name} has {len} values, nodes_treeids {n}");
    }
    let mut specs = Vec::with_capacity(n);
    for i in 0..n {
        specs.push(NodeSpec {
            tree: tree_ids[i],
            id: node_ids[i],
            feature: features[i],
            threshold: thresholds[i],
            split: Split::parse(&modes[i])?,
            true_id: true_ids[i],
            false_id: false_ids[i],
            nan_true: nan_true[i] != 0,
        });
    }
    let leaf = |name: &str| format!("{leaf_prefix}_{name}");
    let leaf_trees = ints(&leaf("treeids"))?;
    let leaf_nodes = ints(&leaf("nodeids"))?;
    let leaf_targets = ints(&leaf("ids"))?;
    let leaf_weights = floats(node, &leaf("weights"))?.unwrap_or_default();
    let m = leaf_trees.len();
    ensure!(
        leaf_nodes.len() == m && leaf_targets.len() == m && leaf_weights.len() == m,
        "attributes {leaf_prefix}_treeids, _nodeids, _ids and _weights differ in length"
    );
    let mut leaves: HashMap<(i64, i64), Vec<Weight>> = HashMap::new();
    for i in 0..m {
        let target = u32::try_from(leaf_targets[i]).map_err(|_| format_err!("leaf target {}", leaf_targets[i]))?;
        leaves.entry((leaf_trees[i], leaf_nodes[i])).or_default().push(Weight { target, value: leaf_weights[i] });
    }
    Forest::build(specs, leaves, n_targets)
}

fn classifier(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = Labels::parse(node, "classlabels_int64s")?;
    ensure!(labels.len() >= 2, "a classifier needs at least two classes, it declares {}", labels.len());
    let forest = classic_forest(node, "class", labels.len())?;
    let base_values = floats(node, "base_values")?.unwrap_or_default();
    let post_transform = PostTransform::parse(text(node, "post_transform", "NONE")?)?;
    let classes_used: std::collections::HashSet<u32> = forest.weights.iter().map(|w| w.target).collect();
    let binary = labels.len() == 2 && classes_used.len() == 1;
    let all_positive = forest.weights.iter().all(|w| w.value >= 0.0);
    inference_op(ClassifierKernel { forest, labels, base_values, post_transform, binary, all_positive })
}

fn regressor(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let n_targets = node.get_attr_opt::<i64>("n_targets")?.unwrap_or(1);
    ensure!(n_targets >= 1, "n_targets is {n_targets}");
    let forest = classic_forest(node, "target", n_targets as usize)?;
    inference_op(RegressorKernel {
        forest,
        base_values: floats(node, "base_values")?.unwrap_or_default(),
        aggregate: Aggregate::parse(text(node, "aggregate_function", "SUM")?)?,
        post_transform: PostTransform::parse(text(node, "post_transform", "NONE")?)?,
    })
}

/// `TreeEnsemble` (ai.onnx.ml opset 5): nodes and leaves are separate arrays, a child is a leaf
/// when its `nodes_trueleafs` / `nodes_falseleafs` flag says so, trees start at `tree_roots`.
fn unified(_ctx: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let ints = |name: &str| -> TractResult<Vec<i64>> { Ok(node.get_attr_opt_vec::<i64>(name)?.unwrap_or_default()) };
    let n_targets = node.get_attr_opt::<i64>("n_targets")?.unwrap_or(1);
    ensure!(n_targets >= 1, "n_targets is {n_targets}");
    let features = ints("nodes_featureids")?;
    let n = features.len();
    let splits = floats(node, "nodes_splits")?.unwrap_or_default();
    let modes: Vec<i64> = match tensor_attribute(node, "nodes_modes")? {
        Some(tensor) => tensor.cast_to::<i64>()?.try_as_plain_ram()?.as_slice::<i64>()?.to_vec(),
        None => vec![0; n],
    };
    let (true_ids, true_leafs) = (ints("nodes_truenodeids")?, ints("nodes_trueleafs")?);
    let (false_ids, false_leafs) = (ints("nodes_falsenodeids")?, ints("nodes_falseleafs")?);
    let nan_true = node.get_attr_opt_vec::<i64>("nodes_missing_value_tracks_true")?.unwrap_or_else(|| vec![0; n]);
    ensure!(
        [
            splits.len(),
            modes.len(),
            true_ids.len(),
            true_leafs.len(),
            false_ids.len(),
            false_leafs.len(),
            nan_true.len()
        ]
        .iter()
        .all(|&len| len == n),
        "the nodes_* attributes differ in length"
    );
    // Each BRANCH_MEMBER node's set, in node order, the sets separated by NaN.
    let mut members: Vec<Vec<f32>> = vec![];
    if modes.contains(&6) {
        let values = floats(node, "membership_values")?.unwrap_or_default();
        members = values.split(|v| v.is_nan()).map(<[f32]>::to_vec).collect();
    }
    let member_sets: Vec<Option<usize>> =
        modes.iter().scan(0, |next, &mode| Some((mode == 6).then(|| std::mem::replace(next, *next + 1)))).collect();
    ensure!(
        member_sets.iter().flatten().all(|&set| set < members.len()),
        "membership_values holds {} sets for {} BRANCH_MEMBER nodes",
        members.len(),
        member_sets.iter().flatten().count()
    );
    let leaf_targets = ints("leaf_targetids")?;
    let leaf_weights = floats(node, "leaf_weights")?.unwrap_or_default();
    ensure!(leaf_targets.len() == leaf_weights.len(), "leaf_targetids and leaf_weights differ in length");
    // Lay it out as the classic form: split nodes keep their index, leaf k becomes node n + k,
    // all in one tree per root.
    let roots = ints("tree_roots")?;
    let mut tree_of = vec![None; n + leaf_targets.len()];
    for (tree, &root) in roots.iter().enumerate() {
        let mut stack = vec![(root as usize, false)];
        while let Some((i, is_leaf)) = stack.pop() {
            let at = if is_leaf { n + i } else { i };
            ensure!(at < tree_of.len(), "tree {tree} points past the nodes and leaves");
            ensure!(tree_of[at].replace(tree as i64).is_none(), "node {i} is reached twice");
            if !is_leaf {
                stack.push((true_ids[i] as usize, true_leafs[i] != 0));
                stack.push((false_ids[i] as usize, false_leafs[i] != 0));
            }
        }
    }
    let child = |id: i64, leaf: i64| if leaf != 0 { n as i64 + id } else { id };
    let mut specs = Vec::new();
    let mut leaves = HashMap::new();
    // Roots first, so each tree's root is its first node.
    let order =
        roots.iter().map(|&r| r as usize).chain((0..n + leaf_targets.len()).filter(|i| !roots.contains(&(*i as i64))));
    for i in order {
        let Some(tree) = tree_of[i] else { continue };
        if i < n {
            specs.push(NodeSpec {
                tree,
                id: i as i64,
                feature: features[i],
                threshold: member_sets[i].map_or(splits[i], |set| set as f32),
                split: Some(Split::from_code(modes[i])?),
                true_id: child(true_ids[i], true_leafs[i]),
                false_id: child(false_ids[i], false_leafs[i]),
                nan_true: nan_true[i] != 0,
            });
        } else {
            let k = i - n;
            let target = u32::try_from(leaf_targets[k]).map_err(|_| format_err!("leaf target {}", leaf_targets[k]))?;
            leaves.insert((tree, i as i64), vec![Weight { target, value: leaf_weights[k] }]);
            specs.push(NodeSpec {
                tree,
                id: i as i64,
                feature: 0,
                threshold: 0.0,
                split: None,
                true_id: 0,
                false_id: 0,
                nan_true: false,
            });
        }
    }
    let aggregate = match node.get_attr_opt::<i64>("aggregate_function")?.unwrap_or(1) {
        0 => Aggregate::Average,
        1 => Aggregate::Sum,
        2 => Aggregate::Min,
        3 => Aggregate::Max,
        other => bail!("aggregate_function {other} is not one of 0 (AVERAGE) to 3 (MAX)"),
    };
    let mut forest = Forest::build(specs, leaves, n_targets as usize)?;
    forest.members = members;
    inference_op(RegressorKernel {
        forest,
        base_values: vec![],
        aggregate,
        post_transform: PostTransform::from_code(node.get_attr_opt::<i64>("post_transform")?.unwrap_or(0))?,
    })
}

/// `TreeEnsembleRegressor` and `TreeEnsemble`: one `[N, n_targets]` output.
#[derive(Debug, Clone, PartialEq)]
struct RegressorKernel {
    forest: Forest,
    base_values: Vec<f32>,
    aggregate: Aggregate,
    post_transform: PostTransform,
}

impl RowKernel for RegressorKernel {
    fn name(&self) -> &'static str {
        "TreeEnsembleRegressor"
    }

    fn outputs(&self) -> TVec<Output> {
        tvec![Output::floats(Width::Fixed(self.forest.n_targets))]
    }

    fn run(&self, x: &[f32], rows: usize, width: usize) -> TractResult<TVec<Tensor>> {
        let targets = self.forest.n_targets;
        let mut scores = vec![0f32; rows * targets];
        let mut has = vec![false; rows * targets];
        match self.aggregate {
            Aggregate::Sum | Aggregate::Average => self.forest.for_each_leaf(x, width, |row, weights| {
                for w in weights {
                    scores[row * targets + w.target as usize] += w.value;
                }
            })?,
            Aggregate::Min | Aggregate::Max => {
                let min = self.aggregate == Aggregate::Min;
                self.forest.for_each_leaf(x, width, |row, weights| {
                    for w in weights {
                        let at = row * targets + w.target as usize;
                        let better = if min { w.value < scores[at] } else { w.value > scores[at] };
                        if !has[at] || better {
                            scores[at] = w.value;
                            has[at] = true;
                        }
                    }
                })?
            }
        }
        let base = (self.base_values.len() == targets).then_some(&self.base_values[..]);
        let n_trees = self.forest.roots.len() as f32;
        for row in scores.chunks_exact_mut(targets) {
            for (t, score) in row.iter_mut().enumerate() {
                if self.aggregate == Aggregate::Average {
                    *score /= n_trees;
                }
                *score += base.map_or(0.0, |b| b[t]);
            }
            // onnxruntime applies only probit to a single target.
            if targets >= 2 {
                self.post_transform.apply(row);
            } else if self.post_transform == PostTransform::Probit {
                row[0] = probit(row[0]);
            }
        }
        Ok(tvec![matrix(scores, rows, targets)?])
    }
}

/// `TreeEnsembleClassifier`: labels `[N]` and scores `[N, classes]`.
#[derive(Debug, Clone, PartialEq)]
struct ClassifierKernel {
    forest: Forest,
    labels: Labels,
    base_values: Vec<f32>,
    post_transform: PostTransform,
    /// Two classes, and the leaves score only one of them.
    binary: bool,
    all_positive: bool,
}

impl RowKernel for ClassifierKernel {
    fn name(&self) -> &'static str {
        "TreeEnsembleClassifier"
    }

    fn outputs(&self) -> TVec<Output> {
        tvec![Output::labels(self.labels.datum_type()), Output::floats(Width::Fixed(self.labels.len()))]
    }

    fn run(&self, x: &[f32], rows: usize, width: usize) -> TractResult<TVec<Tensor>> {
        let classes = self.labels.len();
        let mut scores = vec![0f32; rows * classes];
        let mut has = vec![false; rows * classes];
        self.forest.for_each_leaf(x, width, |row, weights| {
            for w in weights {
                let at = row * classes + w.target as usize;
                scores[at] += w.value;
                has[at] = true;
            }
        })?;
        let mut labels = Vec::with_capacity(rows);
        for (row, has) in scores.chunks_exact_mut(classes).zip(has.chunks_exact_mut(classes)) {
            labels.push(if classes > 2 { self.finish_multiclass(row, has) } else { self.finish_binary(row, has) });
        }
        Ok(tvec![self.labels.tensor(&labels)?, matrix(scores, rows, classes)?])
    }
}

impl ClassifierKernel {
    /// Adds the base values, picks the first class with the highest score among those the trees
    /// scored, transforms the scores; returns the label's index.
    fn finish_multiclass(&self, scores: &mut [f32], has: &mut [bool]) -> usize {
        for ((score, has), base) in scores.iter_mut().zip(has.iter_mut()).zip(&self.base_values) {
            *score = if *has { *score + base } else { *base };
            *has = true;
        }
        let mut best: Option<usize> = None;
        for (class, (&score, &has)) in scores.iter().zip(has.iter()).enumerate() {
            if has && best.is_none_or(|b| score > scores[b]) {
                best = Some(class);
            }
        }
        self.post_transform.apply(scores);
        best.unwrap_or(0)
    }

    /// Two classes, as onnxruntime's aggregator has them. A model whose leaves score one class
    /// (boosting, binary forests) gets its second score derived from the first; the label is the
    /// positive class when that score passes 0.5 (all weights positive: probabilities) or 0
    /// (margins). A two-class model that scores both classes without being "binary" gets the
    /// literal labels 1 or 0, returned as `len + 1` and `len + 0`: onnxruntime does the same.
    fn finish_binary(&self, scores: &mut [f32], has: &mut [bool]) -> usize {
        let mut second_score = None;
        let mut both = true;
        match self.base_values[..] {
            [_, b1] if has[1] => {
                // onnxruntime's quirk: base_values[0] is ignored and class 0 gets the negation.
                scores[1] = b1 + scores[0];
                scores[0] = -scores[1];
                has[1] = true;
            }
            [b0, b1] => {
                scores[1] += b1;
                scores[0] += b0;
            }
            [b0] => {
                scores[0] += b0;
                both = has[1];
            }
            [] => {
                second_score = Some(3);
                both = has[1];
            }
            // Other counts of base values: onnxruntime adds none and keeps both scores.
            _ => {}
        }
        let positive = if both && has[1] {
            scores[1]
        } else if has[0] {
            scores[0]
        } else {
            0.0
        };
        let label = if self.binary {
            let (winning, code) = match (
                self.all_positive,
                self.all_positive && positive > 0.5 || !self.all_positive && positive > 0.0,
            ) {
                (true, true) => (1, 0),
                (true, false) => (0, 1),
                (false, true) => (1, 2),
                (false, false) => (0, 3),
            };
            second_score = Some(code);
            winning
        } else {
            self.labels.len() + usize::from(positive > 0.0)
        };
        if both {
            self.post_transform.apply(scores);
            return label;
        }
        // One score: the second is derived from it.
        let s = scores[0];
        let logistic_pair = self.post_transform == PostTransform::Logistic;
        match (self.post_transform, second_score) {
            (PostTransform::Probit, _) => scores.copy_from_slice(&[probit(s), 0.0]),
            (_, Some(0 | 1)) => scores.copy_from_slice(&[1.0 - s, s]),
            (_, Some(2 | 3)) if logistic_pair => scores.copy_from_slice(&[logistic(-s), logistic(s)]),
            (_, Some(2 | 3)) => scores.copy_from_slice(&[-s, s]),
            _ => scores[1] = 0.0,
        }
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One tree: x0 <= 0.5 ? (x1 < 2 ? leaf A : leaf B) : leaf C, with NaN in x0 going true.
    fn small_forest(leaf_weights: [&[(u32, f32)]; 3], targets: usize) -> Forest {
        let split = |id, feature, threshold, split, t, f| NodeSpec {
            tree: 0,
            id,
            feature,
            threshold,
            split: Some(split),
            true_id: t,
            false_id: f,
            nan_true: id == 0,
        };
        let leaf = |id| NodeSpec {
            tree: 0,
            id,
            feature: 0,
            threshold: 0.0,
            split: None,
            true_id: 0,
            false_id: 0,
            nan_true: false,
        };
        let specs =
            vec![split(0, 0, 0.5, Split::Leq, 1, 2), split(1, 1, 2.0, Split::Lt, 3, 4), leaf(2), leaf(3), leaf(4)];
        let leaves = [(3, leaf_weights[0]), (4, leaf_weights[1]), (2, leaf_weights[2])]
            .into_iter()
            .map(|(id, ws)| ((0, id), ws.iter().map(|&(target, value)| Weight { target, value }).collect()))
            .collect();
        Forest::build(specs, leaves, targets).unwrap()
    }

    fn leaves_of(forest: &Forest, x: &[f32], width: usize) -> Vec<f32> {
        let mut got = vec![0.0; x.len() / width];
        forest.for_each_leaf(x, width, |row, w| got[row] = w[0].value).unwrap();
        got
    }

    #[test]
    fn rows_follow_mixed_splits_and_nan_goes_where_the_node_says() {
        let forest = small_forest([&[(0, 1.0)], &[(0, 2.0)], &[(0, 3.0)]], 1);
        assert_eq!(forest.uniform, None);
        let x = [0.5, 1.9, 0.5, 2.0, 0.6, 0.0, f32::NAN, 5.0, 0.0, f32::NAN];
        // NaN in x0 tracks true; NaN in x1 fails `<` and goes false.
        assert_eq!(leaves_of(&forest, &x, 2), [1.0, 2.0, 3.0, 2.0, 2.0]);
    }

    #[test]
    fn many_rows_give_what_each_row_alone_gives() {
        let forest = small_forest([&[(0, 1.0)], &[(0, 2.0)], &[(0, 3.0)]], 1);
        let x: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 100) as f32 / 25.0).collect();
        let all = leaves_of(&forest, &x, 2);
        for (row, &leaf) in x.chunks(2).zip(&all) {
            assert_eq!(leaves_of(&forest, row, 2), [leaf]);
        }
    }

    #[test]
    fn regressors_aggregate_as_specified() {
        let forest = small_forest([&[(0, 1.0), (1, -4.0)], &[(0, 2.0)], &[(1, 3.0)]], 2);
        let kernel = |aggregate, base_values: Vec<f32>| RegressorKernel {
            forest: forest.clone(),
            base_values,
            aggregate,
            post_transform: PostTransform::None,
        };
        let run = |k: RegressorKernel| {
            k.run(&[0.0, 0.0, 1.0, 0.0], 2, 2).unwrap()[0]
                .try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(run(kernel(Aggregate::Sum, vec![10.0, 20.0])), [11.0, 16.0, 10.0, 23.0]);
        // A target no leaf reached is 0 (plus its base value) for MIN and MAX too.
        assert_eq!(run(kernel(Aggregate::Max, vec![])), [1.0, -4.0, 0.0, 3.0]);
    }

    #[test]
    fn a_binary_margin_model_labels_by_the_sign_and_derives_both_probabilities() {
        // LightGBM's binary export: one class scored, mixed-sign weights, LOGISTIC.
        let forest = small_forest([&[(0, -1.5)], &[(0, 0.25)], &[(0, 2.0)]], 2);
        let kernel = ClassifierKernel {
            forest,
            labels: Labels::Ints(vec![0, 1]),
            base_values: vec![],
            post_transform: PostTransform::Logistic,
            binary: true,
            all_positive: false,
        };
        let out = kernel.run(&[0.0, 0.0, 0.0, 3.0], 2, 2).unwrap();
        assert_eq!(out[0].try_as_plain_ram().unwrap().as_slice::<i64>().unwrap(), [0, 1]);
        let p = out[1].try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec();
        assert!((p[0] - logistic(1.5)).abs() < 1e-7 && (p[1] - logistic(-1.5)).abs() < 1e-7, "{p:?}");
        assert!((p[3] - logistic(0.25)).abs() < 1e-7, "{p:?}");
    }

    #[test]
    fn a_tree_that_loops_is_refused() {
        let spec = |id, t, f| NodeSpec {
            tree: 0,
            id,
            feature: 0,
            threshold: 0.0,
            split: Some(Split::Leq),
            true_id: t,
            false_id: f,
            nan_true: false,
        };
        let err = Forest::build(vec![spec(0, 1, 1), spec(1, 0, 0)], HashMap::new(), 1).unwrap_err();
        assert!(err.to_string().contains("reached twice"), "{err}");
    }
}
