//! sentence-transformers' Pooling module: token embeddings `[rows, tokens, width]` with their
//! attention mask to one embedding a row; and its Normalize module (L2).

/// How a row's token embeddings become one embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's (`[CLS]`).
    Cls,
    /// The mean of the attended tokens'.
    Mean,
    /// The largest value of each dimension over the attended tokens.
    Max,
    /// The sum over the attended tokens, divided by the square root of their count.
    MeanSqrtLen,
    /// The last attended token's.
    LastToken,
    /// The mean weighted by position (1, 2, …), as sentence-transformers weights it.
    WeightedMean,
}

impl Pooling {
    /// The mode a `1_Pooling/config.json` turns on (`pooling_mode_mean_tokens: true`, …, or
    /// `pooling_mode: "mean"`); one only.
    pub fn from_config(config: &serde_json::Value) -> Result<Self, String> {
        const MODES: [(&str, &str, Pooling); 6] = [
            ("pooling_mode_cls_token", "cls", Pooling::Cls),
            ("pooling_mode_mean_tokens", "mean", Pooling::Mean),
            ("pooling_mode_max_tokens", "max", Pooling::Max),
            ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
            ("pooling_mode_lasttoken", "lasttoken", Pooling::LastToken),
            ("pooling_mode_weightedmean_tokens", "weightedmean", Pooling::WeightedMean),
        ];
        if let Some(name) = config.get("pooling_mode").and_then(|m| m.as_str()) {
            return MODES
                .iter()
                .find(|(_, short, _)| *short == name)
                .map(|(_, _, mode)| *mode)
                .ok_or_else(|| format!("pooling_mode {name:?} is not one sentence-transformers has"));
        }
        let on: Vec<Pooling> = MODES
            .iter()
            .filter(|(key, _, _)| config.get(*key) == Some(&serde_json::Value::Bool(true)))
            .map(|m| m.2)
            .collect();
        match on[..] {
            [mode] => Ok(mode),
            [] => Err("no pooling mode is turned on".into()),
            _ => Err(format!("{} pooling modes are on at once ({on:?}); sluice pools one way", on.len())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len_tokens",
            Pooling::LastToken => "lasttoken",
            Pooling::WeightedMean => "weightedmean",
        }
    }

    /// Pools one row: `tokens` is `[length, width]` row-major, `mask` its attention mask
    /// (padding 0), `out` the row's embedding.
    pub fn pool(self, tokens: &[f32], mask: &[i64], out: &mut [f32]) {
        let width = out.len();
        let attended = || mask.iter().enumerate().filter(|(_, m)| **m != 0).map(|(t, _)| t);
        let token = |t: usize| &tokens[t * width..(t + 1) * width];
        out.fill(0.0);
        match self {
            Pooling::Cls => out.copy_from_slice(token(0)),
            Pooling::LastToken => {
                if let Some(last) = attended().next_back() {
                    out.copy_from_slice(token(last));
                }
            }
            Pooling::Max => {
                out.fill(f32::MIN);
                for t in attended() {
                    for (o, v) in out.iter_mut().zip(token(t)) {
                        *o = o.max(*v);
                    }
                }
            }
            Pooling::Mean | Pooling::MeanSqrtLen | Pooling::WeightedMean => {
                let mut total = 0.0f32;
                for t in attended() {
                    let weight = if self == Pooling::WeightedMean { (t + 1) as f32 } else { 1.0 };
                    total += weight;
                    for (o, v) in out.iter_mut().zip(token(t)) {
                        *o += v * weight;
                    }
                }
                // sentence-transformers clamps the count at 1e-9 (a row of no tokens gives zeros).
                let divisor = match self {
                    Pooling::MeanSqrtLen => total.max(1e-9).sqrt(),
                    _ => total.max(1e-9),
                };
                out.iter_mut().for_each(|o| *o /= divisor);
            }
        }
    }
}

/// Scales `embedding` to unit length (torch's `normalize`: the norm clamped at 1e-12).
pub fn normalize(embedding: &mut [f32]) {
    let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    embedding.iter_mut().for_each(|v| *v /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_pools_the_attended_tokens_only() {
        // Three tokens of width 2, the last one padding.
        let tokens = [1.0, 4.0, 3.0, -2.0, 100.0, 100.0];
        let mask = [1, 1, 0];
        let pooled = |mode: Pooling| {
            let mut out = [0.0; 2];
            mode.pool(&tokens, &mask, &mut out);
            out
        };
        assert_eq!(pooled(Pooling::Cls), [1.0, 4.0]);
        assert_eq!(pooled(Pooling::LastToken), [3.0, -2.0]);
        assert_eq!(pooled(Pooling::Max), [3.0, 4.0]);
        assert_eq!(pooled(Pooling::Mean), [2.0, 1.0]);
        assert_eq!(pooled(Pooling::MeanSqrtLen), [4.0 / 2f32.sqrt(), 2.0 / 2f32.sqrt()]);
        assert_eq!(pooled(Pooling::WeightedMean), [(1.0 + 6.0) / 3.0, (4.0 - 4.0) / 3.0]);
        let mut unit = [3.0, 4.0];
        normalize(&mut unit);
        assert_eq!(unit, [0.6, 0.8]);
    }

    #[test]
    fn the_pooling_config_turns_one_mode_on() {
        let config = serde_json::json!({"word_embedding_dimension": 384, "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false});
        assert_eq!(Pooling::from_config(&config), Ok(Pooling::Mean));
        assert_eq!(Pooling::from_config(&serde_json::json!({"pooling_mode": "lasttoken"})), Ok(Pooling::LastToken));
        let two = serde_json::json!({"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true});
        assert!(Pooling::from_config(&two).unwrap_err().contains("2 pooling modes"));
        assert!(Pooling::from_config(&serde_json::json!({})).is_err());
    }
}
