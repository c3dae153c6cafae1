//! Extractors that answer malformed input with *our* error body, never axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use verdict_store::PageRequest;
use verdict_store::model::MAX_PAGE_SIZE;

use crate::error::{ApiError, ErrorCode};

/// A JSON body. Wrong content type → 415, over the body limit → 413, broken JSON → 400
/// `invalid_json`, well-formed JSON of the wrong shape → 422 `invalid_body` naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The bytes of a JSON body, not yet parsed: for a handler that parses it in place (borrowing
/// from it) with [`parse_json`]. Checks the content type and the body limit as [`ApiJson`].
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

/// Parse JSON with the failing field's path in the error.
pub fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("the body is not valid JSON: {inner}"),
            )
        } else {
            let field = if path == "." { String::new() } else { path };
            ApiError::new(
                ErrorCode::InvalidBody,
                "the body does not have the expected shape",
            )
            .with_details(vec![json!({"field": field, "message": inner.to_string()})])
        }
    })?;
    // Only whitespace may follow the value: `{...} garbage` is not JSON.
    de.end().map_err(|inner| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {inner}"),
        )
    })?;
    Ok(value)
}

/// Query parameters; malformed ones → 400 `invalid_query`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|err| {
                let field = err.path().to_string();
                ApiError::new(ErrorCode::InvalidQuery, "invalid query parameters").with_details(
                    vec![json!({"field": field, "message": err.into_inner().to_string()})],
                )
            })
    }
}

/// `page` and `page_size`: both or neither; page ≥ 1; 1 ≤ page_size ≤ 100.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page number, from 1 (default 1; give with `page_size`).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1 to 100 (default 20; give with `page`).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
}

impl PageParams {
    pub fn to_request(self) -> Result<PageRequest, ApiError> {
        let bad = |msg: &str| Err(ApiError::new(ErrorCode::InvalidPagination, msg.to_owned()));
        match (self.page, self.page_size) {
            (None, None) => Ok(PageRequest::DEFAULT),
            (Some(_), None) | (None, Some(_)) => bad("give both page and page_size, or neither"),
            (Some(0), _) => bad("page starts at 1"),
            (_, Some(size)) if size == 0 || size > MAX_PAGE_SIZE => {
                bad("page_size must be between 1 and 100")
            }
            (Some(page), Some(page_size)) => Ok(PageRequest { page, page_size }),
        }
    }
}

/// `{data, pagination: {page, page_size, total, total_pages}}`.
pub fn paginated<T: serde::Serialize>(
    page: verdict_store::Page<T>,
    request: PageRequest,
) -> serde_json::Value {
    let size = u64::from(request.page_size.max(1));
    json!({
        "data": page.items,
        "pagination": {
            "page": request.page,
            "page_size": request.page_size,
            "total": page.total,
            "total_pages": page.total.div_ceil(size),
        }
    })
}
