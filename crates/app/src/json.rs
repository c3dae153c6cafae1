//! Parsing JSON input into typed values, with errors that name what is wrong.

use serde::Deserialize;
use serde_json::json;

use crate::error::{AppError, ErrorCode};

/// Parse JSON with the failing field's path in the error: broken JSON is `invalid_json`,
/// well-formed JSON of the wrong shape `invalid_body` naming the field.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, AppError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            AppError::new(
                ErrorCode::InvalidJson,
                format!("the body is not valid JSON: {inner}"),
            )
        } else {
            let field = if path == "." { String::new() } else { path };
            AppError::new(
                ErrorCode::InvalidBody,
                "the body does not have the expected shape",
            )
            .with_details(vec![json!({"field": field, "message": inner.to_string()})])
        }
    })?;
    // Only whitespace may follow the value: `{...} garbage` is not JSON.
    de.end().map_err(|inner| {
        AppError::new(
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {inner}"),
        )
    })?;
    Ok(value)
}

/// [`parse_json`] for a body that must be one JSON object (every request body of the API
/// is): an array or a scalar is `invalid_body`, even where a struct of optional fields would
/// otherwise accept an array of its fields in order.
pub fn parse_json_object<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, AppError> {
    let starts_object = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    if !starts_object {
        // Broken JSON still answers `invalid_json`.
        parse_json::<serde::de::IgnoredAny>(bytes)?;
        return Err(AppError::new(
            ErrorCode::InvalidBody,
            "the body does not have the expected shape",
        )
        .with_details(vec![
            json!({"field": "", "message": "the body must be a JSON object"}),
        ]));
    }
    parse_json(bytes)
}
