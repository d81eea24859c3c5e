//! A token classifier's labels grouped into entities, as transformers'
//! `pipeline("token-classification", aggregation_strategy="simple")` groups them: each token's
//! most likely label (softmax), special tokens left out; adjacent tokens of one type join unless a
//! token begins a new entity (`B-`); each group's score is the mean of its tokens', its word the
//! tokenizer's decoding of its tokens, its span the characters from its first token's start to
//! its last token's end; groups labelled `O` are dropped.

use serde::Serialize;

use super::head::{argmax, softmax};

/// One token of a text, as the grouping sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The token as the vocabulary spells it (`##ing`), or for an unknown token the text it
    /// stands for.
    pub token: String,
    /// Its characters in the text (Unicode scalar values, as Python counts them).
    pub start: usize,
    pub end: usize,
}

/// An entity found in a text: the JSON transformers' pipeline answers with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entity {
    pub entity_group: String,
    pub score: f32,
    pub word: String,
    pub start: usize,
    pub end: usize,
}

/// The entities of one text: `logits` are `[positions, labels]` (positions past the text's
/// tokens are padding), `pieces` one a position (`None` for special tokens), `decode` the
/// tokenizer's decoder.
pub fn group(
    logits: &[f32],
    labels: &[String],
    pieces: &[Option<Piece>],
    decode: &dyn Fn(Vec<String>) -> String,
) -> Vec<Entity> {
    // Each token's label and its probability.
    let mut tagged = Vec::new();
    for (position, piece) in pieces.iter().enumerate() {
        let Some(piece) = piece else { continue };
        let mut scores = logits[position * labels.len()..(position + 1) * labels.len()].to_vec();
        softmax(&mut scores);
        let best = argmax(&scores);
        tagged.push((labels[best].as_str(), scores[best], piece));
    }
    let mut entities = Vec::new();
    let mut run: Vec<(&str, f32, &Piece)> = Vec::new();
    for token in tagged {
        if let Some(last) = run.last() {
            let (begins, kind) = tag(token.0);
            if kind != tag(last.0).1 || begins {
                entities.push(join(&run, decode));
                run.clear();
            }
        }
        run.push(token);
    }
    if !run.is_empty() {
        entities.push(join(&run, decode));
    }
    entities.retain(|e| e.entity_group != "O");
    entities
}

/// Whether a label begins an entity (`B-`), and its type (`PER` of `B-PER`, `I-PER`; a label
/// of neither form is its own type and continues).
fn tag(label: &str) -> (bool, &str) {
    match (label.strip_prefix("B-"), label.strip_prefix("I-")) {
        (Some(kind), _) => (true, kind),
        (None, Some(kind)) => (false, kind),
        (None, None) => (false, label),
    }
}

fn join(run: &[(&str, f32, &Piece)], decode: &dyn Fn(Vec<String>) -> String) -> Entity {
    let first = run[0].0;
    let group = first.split_once('-').map_or(first, |(_, kind)| kind);
    Entity {
        entity_group: group.to_owned(),
        score: run.iter().map(|t| t.1).sum::<f32>() / run.len() as f32,
        word: decode(run.iter().map(|t| t.2.token.clone()).collect()),
        start: run[0].2.start,
        end: run[run.len() - 1].2.end,
    }
}

/// A row's entities as one JSON array.
pub fn to_json(entities: &[Entity]) -> String {
    serde_json::to_string(entities).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(token: &str, start: usize, end: usize) -> Option<Piece> {
        Some(Piece { token: token.into(), start, end })
    }

    #[test]
    fn tokens_group_as_the_pipelines_simple_strategy_groups_them() {
        let labels: Vec<String> = ["O", "B-PER", "I-PER", "B-LOC"].iter().map(|s| s.to_string()).collect();
        // [CLS] john ##ny smith in paris paris [SEP], each token's logits favouring one label.
        let favour = |label: usize| {
            let mut logits = [0.0f32; 4];
            logits[label] = 5.0;
            logits
        };
        let logits: Vec<f32> = [0, 1, 2, 2, 0, 3, 3, 0].iter().flat_map(|&l| favour(l)).collect();
        let pieces = vec![
            None,
            piece("john", 0, 4),
            piece("##ny", 4, 6),
            piece("smith", 7, 12),
            piece("in", 13, 15),
            piece("paris", 16, 21),
            piece("paris", 22, 27),
            None,
        ];
        let decode = |tokens: Vec<String>| tokens.join(" ").replace(" ##", "");
        let found = group(&logits, &labels, &pieces, &decode);
        let summary: Vec<(&str, &str, usize, usize)> =
            found.iter().map(|e| (e.entity_group.as_str(), e.word.as_str(), e.start, e.end)).collect();
        // B- starts a new entity even after one of its type; O is dropped.
        assert_eq!(summary, [("PER", "johnny smith", 0, 12), ("LOC", "paris", 16, 21), ("LOC", "paris", 22, 27)]);
        let p = 5f32.exp() / (5f32.exp() + 3.0);
        assert!((found[0].score - p).abs() < 1e-6);
        assert_eq!(
            to_json(&found[1..2]),
            format!(r#"[{{"entity_group":"LOC","score":{},"word":"paris","start":16,"end":21}}]"#, found[1].score)
        );
    }
}
