//! Extractors that answer malformed input with *our* error body, never axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::json;
use verdict_app::json::parse_json_object;
use verdict_app::{Caller, ErrorCode};

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body. Wrong content type → 415, over the body limit → 413, broken JSON → 400
/// `invalid_json`, well-formed JSON of the wrong shape (or not an object) → 422 `invalid_body`
/// naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_json_object(&bytes).map(ApiJson).map_err(ApiError)
    }
}

/// The bytes of a JSON body, not yet parsed: for a use-case that parses it in place
/// (borrowing from it). Checks the content type and the body limit as [`ApiJson`].
#[derive(Debug, Clone, Default)]
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        if !json_type {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with 'content-type: application/json'",
            ));
        }
        Bytes::from_request(req, state)
            .await
            .map(JsonBytes)
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
                } else {
                    ApiError::new(ErrorCode::InvalidJson, "could not read the request body")
                }
            })
    }
}

/// Query parameters; malformed ones → 400 `invalid_query`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = utf8_query(parts)?;
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|err| {
                let field = err.path().to_string();
                ApiError(
                    verdict_app::AppError::new(ErrorCode::InvalidQuery, "invalid query parameters")
                        .with_details(vec![
                            json!({"field": field, "message": err.into_inner().to_string()}),
                        ]),
                )
            })
    }
}

/// Who makes the request, as [`crate::authorize::authorize`] authenticated it (with the right
/// its route requires) before any other part of the request was read.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError(verdict_app::AppError::internal(anyhow::anyhow!(
                "route {} takes a caller but declares no right",
                parts.uri.path()
            )))
        })
    }
}
/// The query string, refused (400 `invalid_query`) when a percent-encoded part is not UTF-8:
/// decoding it lossily would make different bytes the same text (`%FF` and `%FE` the same
/// subject).
pub fn utf8_query(parts: &Parts) -> Result<&str, ApiError> {
    let query = parts.uri.query().unwrap_or("");
    check_utf8_query(query)?;
    Ok(query)
}

/// [`utf8_query`]'s check of a query string.
pub fn check_utf8_query(query: &str) -> Result<(), ApiError> {
    for part in query.split('&') {
        if percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .is_err()
        {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                "the query string is not valid UTF-8 once percent-decoded",
            ));
        }
    }
    Ok(())
}

/// Path parameters; a segment that is not UTF-8 once percent-decoded (or does not parse)
/// is 400 `invalid_path` with our error body.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection| {
                ApiError::new(
                    ErrorCode::InvalidPath,
                    format!("invalid path: {}", rejection.body_text()),
                )
            })
    }
}
