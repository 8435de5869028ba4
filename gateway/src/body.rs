//! Reading a request body within `--max-body-bytes`, for every surface: each maps a
//! [`BodyError`] into its own shape (413 for an oversized body).

use axum::body::Body;
use bytes::Bytes;
use http::request::Parts;
use http_body_util::BodyExt;

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Over the limit (bytes): 413.
    TooLarge(usize),
    /// The body broke off or timed out (`--body-timeout`): 400.
    Unreadable(String),
}

impl BodyError {
    /// A message naming the limit or the failure.
    pub fn message(&self) -> String {
        match self {
            BodyError::TooLarge(limit) => {
                format!("The request body is larger than the limit of {limit} bytes.")
            }
            BodyError::Unreadable(e) => format!("Could not read the request body: {e}"),
        }
    }
}

/// Reads the body within `limit` bytes (Content-Length is checked first, so an announced
/// oversized body is refused before any of it is read).
pub async fn read(parts: &Parts, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    if let Some(len) = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        && len.parse::<u64>().is_ok_and(|l| l > limit as u64)
    {
        return Err(BodyError::TooLarge(limit));
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(BodyError::TooLarge(limit))
        }
        Err(e) => Err(BodyError::Unreadable(e.to_string())),
    }
}
