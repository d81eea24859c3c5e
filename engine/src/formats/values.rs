//! Values as text becomes features: numbers parsed as pandas reads them (fast for the usual
//! short decimals), and a typed model's float64, int64 and string columns. Shared by the text
//! formats and the online mode's JSON.

use serde_json::Value;

use crate::batch::Batch;
use crate::model::ColumnType;

/// A feature value: a finite number. With `missing` (the model handles missing values) an empty field or `NaN`
/// is NaN, as pandas reads it; without, it is a bad row.
pub(crate) fn parse_feature(field: &[u8], missing: bool) -> Result<f32, String> {
    // The usual case, a short plain decimal, then any number fast_float2 reads from the bytes.
    if let Some(value) = parse_short_decimal(field) {
        return Ok(value);
    }
    if let Ok(value) = fast_float2::parse::<f32, _>(field)
        && value.is_finite()
    {
        return Ok(value);
    }
    // Spaces around it, or not a finite number: std's parser, and a reason for the errors file.
    let text = std::str::from_utf8(field).map_err(|_| "is not UTF-8 text".to_owned())?.trim();
    if missing && (text.is_empty() || text.eq_ignore_ascii_case("nan")) {
        return Ok(f32::NAN);
    }
    if text.is_empty() {
        return Err("is empty".into());
    }
    match text.parse::<f32>() {
        Ok(value) if value.is_finite() => Ok(value),
        Ok(_) => Err(format!("is {text:?}, which is not allowed as a feature")),
        Err(_) => Err(format!("is {text:?}, not a number")),
    }
}

/// A JSON value (absent: `None`) of a column of `kind`. A number read as text, or text read
/// as a number, goes through its text, as in CSV; with `missing`, absent and `null` are missing.
pub fn push_json_value(
    kind: ColumnType,
    value: Option<&Value>,
    missing: bool,
    batch: &mut Batch,
) -> Result<(), String> {
    match (value, kind) {
        (None | Some(Value::Null), _) if missing => push_typed(kind, b"", true, batch),
        (None, _) => Err("is missing".to_owned()),
        (Some(Value::Number(n)), ColumnType::Float) => match n.as_f64().map(|v| v as f32) {
            Some(v) if v.is_finite() => {
                batch.features.push(v);
                Ok(())
            }
            _ => Err(format!("is {n}, which is not allowed as a feature")),
        },
        (Some(Value::Number(n)), kind) => push_typed(kind, n.to_string().as_bytes(), false, batch),
        (Some(Value::String(s)), kind) => push_typed(kind, s.as_bytes(), missing, batch),
        (Some(other), ColumnType::Text) => Err(format!("is {other}, not text")),
        (Some(other), _) => Err(format!("is {other}, not a number")),
    }
}

/// A value of a column input that is not float32: float64, int64 or text.
pub fn push_typed(kind: ColumnType, field: &[u8], missing: bool, batch: &mut Batch) -> Result<(), String> {
    let text = std::str::from_utf8(field).map_err(|_| "is not UTF-8 text".to_owned())?;
    match kind {
        ColumnType::Text => batch.text.push(field),
        ColumnType::Float => batch.features.push(parse_feature(field, missing)?),
        ColumnType::Double => {
            let text = text.trim();
            let value = match text.parse::<f64>() {
                _ if missing && (text.is_empty() || text.eq_ignore_ascii_case("nan")) => f64::NAN,
                Ok(value) if value.is_finite() => value,
                Ok(_) => return Err(format!("is {text:?}, which is not allowed as a feature")),
                Err(_) if text.is_empty() => return Err("is empty".into()),
                Err(_) => return Err(format!("is {text:?}, not a number")),
            };
            batch.doubles.push(value);
        }
        ColumnType::Int64 => {
            let text = text.trim();
            let value = match text.parse::<i64>() {
                Ok(value) => value,
                // A whole number written as a float (pandas writes integer columns with NaN so).
                Err(_) => match text.parse::<f64>() {
                    Ok(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => v as i64,
                    _ if text.is_empty() => return Err("is empty".into()),
                    _ => return Err(format!("is {text:?}, not a whole number")),
                },
            };
            batch.integers.push(value);
        }
    }
    Ok(())
}

/// Powers of ten that are exact in f32.
const POWERS_OF_TEN: [f32; 8] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7];

/// A plain decimal of at most 7 digits (`5.1`, `-0.25`, `42`, `.5`), or `None` for anything
/// else. Its digits as an integer and the power of ten to divide by are both exact in f32, so
/// the one division rounds correctly (Clinger's fast path): the same value as any correct parser.
fn parse_short_decimal(field: &[u8]) -> Option<f32> {
    let (negative, digits) = match field {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, field),
    };
    let (mut mantissa, mut count, mut point) = (0u32, 0usize, None);
    for &byte in digits {
        match byte {
            b'0'..=b'9' if count < POWERS_OF_TEN.len() - 1 => {
                mantissa = mantissa * 10 + u32::from(byte - b'0');
                count += 1;
            }
            b'.' if point.is_none() => point = Some(count),
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    let value = mantissa as f32 / POWERS_OF_TEN[count - point.unwrap_or(count)];
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn short_decimals_and_what_is_left_to_the_full_parsers() {
        for (text, value) in
            [("5.1", 5.1), ("-0.25", -0.25), ("42", 42.0), (".5", 0.5), ("7.", 7.0), ("9999999", 9_999_999.0)]
        {
            assert_eq!(parse_short_decimal(text.as_bytes()), Some(value), "{text}");
        }
        assert_eq!(parse_short_decimal(b"-0.0").map(f32::to_bits), Some((-0.0f32).to_bits()));
        for text in ["", "-", ".", "+1", "1e3", "1.2.3", " 1", "12345678", "0.00000001", "nan", "1,5"] {
            assert_eq!(parse_short_decimal(text.as_bytes()), None, "{text:?}");
        }
        assert_eq!(parse_feature(b"12345678.9", false), Ok(12_345_679.0));
        assert_eq!(parse_feature(b" 1e-3 ", false), Ok(0.001));
        assert_eq!(parse_feature(b"", false), Err("is empty".into()));
        assert!(parse_feature(b"", true).unwrap().is_nan());
        assert!(parse_feature(b"NaN", true).unwrap().is_nan());
        assert_eq!(parse_feature(b"nan", false), Err("is \"nan\", which is not allowed as a feature".into()));
    }

    proptest! {
        /// Whatever the digits and wherever the point, the same f32 as the standard library's parser.
        #[test]
        fn short_decimals_parse_as_std_does(negative: bool, digits in "[0-9]{1,7}", point in 0usize..=7) {
            let point = point.min(digits.len());
            let text = format!("{}{}.{}", if negative { "-" } else { "" }, &digits[..point], &digits[point..]);
            let expected: f32 = text.parse().unwrap();
            prop_assert_eq!(parse_short_decimal(text.as_bytes()).map(f32::to_bits), Some(expected.to_bits()), "{}", text);
        }
    }
}
