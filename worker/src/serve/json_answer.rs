//! Answers written as JSON straight from the model's outputs, value by value into the body: no
//! tree of JSON values in between. Before the model runs, [`element_bound`] gives the most bytes
//! an answer's value can take, so an answer over the server's limit is refused before it is
//! computed.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::engine::{Element, OutputKind, OutputSpec, OutputValues};

use super::rows::{RowForm, bare_rows};

/// A written JSON answer as the response.
pub fn json_response(body: Vec<u8>) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A float as JSON: the shortest decimal that reads back as the same f32 (as the batch outputs
/// write it), `null` where JSON has no number for it.
pub fn write_f32(out: &mut Vec<u8>, value: f32) {
    if value.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format(value).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// A JSON string.
pub fn write_text(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
}

/// The class name of integer label `label`, for a classifier whose labels are strings.
fn class_name(spec: &OutputSpec, label: i64) -> Option<&str> {
    match (&spec.kind, spec.element) {
        (OutputKind::Label { classes: Some(classes) }, Element::String) => {
            classes.index_of(label).map(|i| classes.names[i].as_str())
        }
        _ => None,
    }
}

/// Element `index` of an output as the model itself outputs it: its number, its integer label,
/// or the class name of a classifier whose labels are strings.
pub fn write_element(out: &mut Vec<u8>, spec: &OutputSpec, values: &OutputValues, index: usize) {
    match values {
        OutputValues::Text(labels) => write_text(out, &labels[index]),
        OutputValues::Float(v) => write_f32(out, v[index]),
        OutputValues::Int(labels) => match class_name(spec, labels[index]) {
            Some(name) => write_text(out, name),
            None => out.extend_from_slice(itoa::Buffer::new().format(labels[index]).as_bytes()),
        },
    }
}

/// The bytes of element `index` as a `BYTES` tensor holds it: a label's text, or a number's.
pub fn element_bytes(spec: &OutputSpec, values: &OutputValues, index: usize, out: &mut Vec<u8>) {
    match values {
        OutputValues::Text(labels) => out.extend_from_slice(labels[index].as_bytes()),
        OutputValues::Int(labels) => match class_name(spec, labels[index]) {
            Some(name) => out.extend_from_slice(name.as_bytes()),
            None => out.extend_from_slice(itoa::Buffer::new().format(labels[index]).as_bytes()),
        },
        OutputValues::Float(v) => write_f32(out, v[index]),
    }
}

/// `[v, v, …]`: elements `start..start + count` of an output.
pub fn write_elements(out: &mut Vec<u8>, spec: &OutputSpec, values: &OutputValues, start: usize, count: usize) {
    out.push(b'[');
    for i in start..start + count {
        if i > start {
            out.push(b',');
        }
        write_element(out, spec, values, i);
    }
    out.push(b']');
}

/// Row `row` of one output: a bare value, or the list of its width; a list of text is JSON
/// already (a token classifier's entities), and written as it is.
pub fn write_row(out: &mut Vec<u8>, spec: &OutputSpec, values: &OutputValues, row: usize, form: RowForm) {
    let width = spec.width();
    if let (true, OutputValues::Text(json)) = (spec.list, values) {
        out.extend_from_slice(json[row].as_bytes());
    } else if bare_rows(spec, form) {
        write_element(out, spec, values, row * width);
    } else {
        write_elements(out, spec, values, row * width, width);
    }
}

/// The most bytes one element of `spec` takes as JSON; for strings the model makes up itself,
/// a guess (the written answer is checked again).
pub fn element_bound(spec: &OutputSpec) -> usize {
    match (&spec.kind, spec.element) {
        // "-1.17549435e-38", the longest f32 zmij writes.
        (_, Element::Float32) => 16,
        (OutputKind::Label { classes: Some(classes) }, Element::String) => {
            classes.names.iter().map(|name| text_len(name)).max().unwrap_or(2)
        }
        (OutputKind::Label { classes: Some(classes) }, Element::Int64) => {
            classes.labels().map(|label| itoa::Buffer::new().format(label).len()).max().unwrap_or(1)
        }
        (_, Element::Int64) => 20,
        (_, Element::String) => 66,
    }
}

/// The length of `text` as a JSON string.
pub fn text_len(text: &str) -> usize {
    let mut out = Vec::with_capacity(text.len() + 2);
    write_text(&mut out, text);
    out.len()
}

/// The most bytes one row of `specs` takes in an answer that names each output (a JSON object
/// per row) or lists them (one output), commas included.
pub fn row_bound(specs: &[OutputSpec], form: RowForm) -> usize {
    let named = specs.len() > 1;
    let values: usize = specs
        .iter()
        .map(|spec| {
            let key = if named { text_len(&spec.name) + 2 } else { 0 };
            let list = if bare_rows(spec, form) { 1 } else { spec.width() };
            key + list * (element_bound(spec) + 1) + 2
        })
        .sum();
    values + 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_the_shortest_text_that_reads_back_and_never_longer_than_the_bound() {
        let spec = OutputSpec {
            name: "p".into(),
            kind: OutputKind::Values { width: 1 },
            columns: vec![],
            rank: 2,
            element: Element::Float32,
            list: false,
        };
        for value in [0.1f32, -1.175_494_4e-38, f32::MIN, f32::MAX, 1.0 / 3.0, 1e-7, f32::MIN_POSITIVE / 3.0, f32::NAN]
        {
            let mut out = Vec::new();
            write_f32(&mut out, value);
            assert!(out.len() <= element_bound(&spec), "{}", String::from_utf8_lossy(&out));
            if value.is_finite() {
                assert_eq!(std::str::from_utf8(&out).unwrap().parse::<f32>().unwrap(), value);
            } else {
                assert_eq!(out, b"null");
            }
        }
    }
}
