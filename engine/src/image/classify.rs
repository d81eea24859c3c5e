//! A classifier's scores to its top k classes: `[{"class": "n02124075 Egyptian cat",
//! "probability": 0.85}, …]`, most likely first.

use super::config::Scores;

/// One of the top k.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Into the labels.
    pub index: usize,
    pub probability: f32,
}

/// Picks and writes the top k of a model's scores.
pub struct Classifier {
    pub labels: Vec<String>,
    /// Each label as a JSON string, encoded once.
    encoded: Vec<Vec<u8>>,
    logits: bool,
    pub k: usize,
}

impl Classifier {
    pub fn new(labels: Vec<String>, scores: Scores, k: usize) -> Self {
        let encoded = labels.iter().map(|l| serde_json::to_vec(l).expect("strings serialise")).collect();
        let k = k.min(labels.len());
        Self { labels, encoded, logits: scores == Scores::Logits, k }
    }

    /// The `k` most likely classes, most likely first; equal scores in label order.
    pub fn top_k(&self, scores: &[f32]) -> Vec<Prediction> {
        // NaN (a broken model) ranks last rather than poisoning the order.
        let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
        let mut top: Vec<Prediction> = Vec::with_capacity(self.k + 1);
        for (index, &score) in scores.iter().enumerate() {
            if top.len() == self.k && top.last().is_some_and(|last| key(score) <= key(last.probability)) {
                continue;
            }
            let at = top.partition_point(|p| key(p.probability) >= key(score));
            top.insert(at, Prediction { index, probability: score });
            top.truncate(self.k);
        }
        if self.logits {
            // The softmax's denominator over every class, in f64 as numpy would.
            let max = scores.iter().copied().map(key).fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = scores.iter().map(|&s| (s as f64 - max).exp()).sum();
            for p in &mut top {
                p.probability = ((p.probability as f64 - max).exp() / sum) as f32;
            }
        }
        top
    }

    /// Appends `[{"class":…,"probability":…},…]`.
    pub fn write_json(&self, top: &[Prediction], out: &mut Vec<u8>) {
        out.push(b'[');
        for (i, p) in top.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"{\"class\":" } else { b",{\"class\":" });
            out.extend_from_slice(&self.encoded[p.index]);
            out.extend_from_slice(b",\"probability\":");
            write_float(p.probability, out);
            out.push(b'}');
        }
        out.push(b']');
    }
}

/// The shortest decimal that reads back as `value` (JSON has no NaN: null).
fn write_float(value: f32, out: &mut Vec<u8>) {
    if value.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format(value).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier(n: usize, scores: Scores, k: usize) -> Classifier {
        Classifier::new((0..n).map(|i| format!("c{i}")).collect(), scores, k)
    }

    #[test]
    fn the_most_likely_come_first_and_ties_keep_label_order() {
        let c = classifier(6, Scores::Probabilities, 3);
        let top = c.top_k(&[0.1, 0.3, 0.05, 0.3, 0.2, f32::NAN]);
        assert_eq!(top.iter().map(|p| p.index).collect::<Vec<_>>(), [1, 3, 4]);
        let mut json = Vec::new();
        c.write_json(&top, &mut json);
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"[{"class":"c1","probability":0.3},{"class":"c3","probability":0.3},{"class":"c4","probability":0.2}]"#
        );
    }

    #[test]
    fn logits_get_a_softmax_over_every_class() {
        let c = classifier(3, Scores::Logits, 5);
        let top = c.top_k(&[0.0, (2.0f32).ln(), 0.0]);
        assert_eq!(top.len(), 3, "k is capped at the number of classes");
        assert_eq!(top.iter().map(|p| p.index).collect::<Vec<_>>(), [1, 0, 2]);
        assert!((top[0].probability - 0.5).abs() < 1e-6 && (top[1].probability - 0.25).abs() < 1e-6, "{top:?}");
    }

    #[test]
    fn labels_are_json_escaped() {
        let c = Classifier::new(vec!["say \"hi\"".into()], Scores::Probabilities, 1);
        let mut json = Vec::new();
        c.write_json(&c.top_k(&[1.0]), &mut json);
        assert_eq!(String::from_utf8(json).unwrap(), r#"[{"class":"say \"hi\"","probability":1.0}]"#);
    }
}
