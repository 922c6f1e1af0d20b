//! The API's errors and how each maps to a status and the JSON error body.
//!
//! Every error the REST API sends, extractor rejections included, goes
//! through [`AppError`], so clients see one shape: [`ErrorBody`].

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use corral_sdk::{ErrorBody, FieldError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::StoreError;

pub mod openai;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    MalformedJson(String),
    #[error("the request is not valid")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("this account is disabled")]
    AccountDisabled,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    /// The account holds as many records of a kind as it may.
    #[error("{0}")]
    LimitReached(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many attempts; try again in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// A queue or allowance is full; `message` says which.
    #[error("{message}")]
    Busy { retry_after: u64, message: String },
    /// The caller's daily token allowance is used up.
    #[error("{message}")]
    QuotaExceeded { retry_after: u64, message: String },
    /// Every model that could answer is a remote upstream cooling down.
    #[error("{message}")]
    CoolingDown { retry_after: u64, message: String },
    /// An extension (plugin) refused the request; the message says which
    /// and why.
    #[error("{0}")]
    Rejected(String),
    /// A plugin could not be installed or run; `code` says why (e.g.
    /// `unsupported_api`, `refused_import`, `plugin_failed`).
    #[error("{message}")]
    Plugin {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// A part the request needs (a backend, a model) is not available.
    #[error("{0}")]
    Unavailable(String),
    /// A model's worker process crashed during the request
    /// (`worker_crashed`), or the model failed too often to be used
    /// (`model_failed`).
    #[error("{message}")]
    ModelWorker { code: &'static str, message: String },
    /// The request was not answered within `request_timeout_secs`.
    #[error("the request was not answered within {0} s")]
    Timeout(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// A validation error naming one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        AppError::Validation(vec![FieldError {
            field: field.to_owned(),
            message: message.into(),
        }])
    }

    /// The HTTP status this error is sent with.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) | AppError::MalformedJson(_) | AppError::Rejected(_) => {
                StatusCode::BAD_REQUEST
            }
            AppError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) | AppError::AccountDisabled => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Conflict(_) | AppError::LimitReached(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::RateLimited { .. }
            | AppError::Busy { .. }
            | AppError::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable(_)
            | AppError::Timeout(_)
            | AppError::ModelWorker { .. }
            | AppError::CoolingDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Plugin { status, .. } => *status,
            AppError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            AppError::Store(StoreError::NotFound) => StatusCode::NOT_FOUND,
            AppError::Store(StoreError::Unavailable(_) | StoreError::Newer(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Store(StoreError::Corrupt(_)) | AppError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The stable code clients can match on.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::MalformedJson(_) => "malformed_json",
            AppError::Validation(_) => "validation_failed",
            AppError::Unauthorized(_) => "unauthorized",
            AppError::Forbidden(_) => "forbidden",
            AppError::AccountDisabled => "account_disabled",
            AppError::NotFound(_) => "not_found",
            AppError::MethodNotAllowed => "method_not_allowed",
            AppError::Conflict(_) | AppError::Store(StoreError::Conflict(_)) => "conflict",
            AppError::LimitReached(_) => "limit_reached",
            AppError::PayloadTooLarge(_) => "payload_too_large",
            AppError::UnsupportedMediaType(_) => "unsupported_media_type",
            AppError::RateLimited { .. } => "rate_limited",
            AppError::Busy { .. } => "busy",
            AppError::Rejected(_) => "rejected",
            AppError::Plugin { code, .. } => code,
            AppError::QuotaExceeded { .. } => "quota_exceeded",
            AppError::CoolingDown { .. } => "upstream_cooling_down",
            AppError::Unavailable(_) => "unavailable",
            AppError::ModelWorker { code, .. } => code,
            AppError::Timeout(_) => "timeout",
            AppError::Store(StoreError::NotFound) => "not_found",
            AppError::Store(StoreError::Unavailable(_)) => "store_unavailable",
            AppError::Store(StoreError::Newer(_)) => "store_upgraded",
            AppError::Store(StoreError::Corrupt(_)) | AppError::Internal(_) => "internal",
        }
    }

    /// The body sent to the client. Internal details stay in the log.
    pub fn body(&self) -> ErrorBody {
        let message = match self {
            AppError::Store(StoreError::Unavailable(_)) => "the store is unavailable".to_owned(),
            AppError::Store(StoreError::Newer(_)) => {
                "the store was upgraded by a newer Corral; this host must be upgraded too"
                    .to_owned()
            }
            AppError::Store(StoreError::Corrupt(_)) | AppError::Internal(_) => {
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let details = match self {
            AppError::Validation(fields) => fields.clone(),
            _ => Vec::new(),
        };
        ErrorBody {
            code: self.code().to_owned(),
            message,
            details,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if let AppError::RateLimited { retry_after }
        | AppError::Busy { retry_after, .. }
        | AppError::QuotaExceeded { retry_after, .. }
        | AppError::CoolingDown { retry_after, .. } = self
        {
            if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// Result of handlers.
pub type ApiResult<T> = Result<T, AppError>;

/// A JSON body whose rejections are [`AppError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(not_json());
        }
        parse_object(&body_bytes(req, state).await?).map(Json)
    }
}

/// Like [`Json`], for bodies that may be left out: an empty body is
/// `T::default()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_json = is_json(req.headers());
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        if !declared_json {
            return Err(not_json());
        }
        parse_object(&bytes).map(OptionalJson)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn not_json() -> AppError {
    AppError::UnsupportedMediaType("expected `Content-Type: application/json`".into())
}

/// The whole body, within the size limit.
async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, AppError> {
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge("the request body is too large".into())
        } else {
            AppError::BadRequest(r.body_text())
        }
    })
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a request body that must be one JSON object. (serde would also
/// fill a struct from an array, by position; the API does not accept that.)
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let malformed =
        |e: serde_json::Error| AppError::MalformedJson(format!("the body is not valid JSON: {e}"));
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => AppError::field("body", "must be a JSON object"),
                Err(e) => malformed(e),
            },
        );
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => AppError::Validation(vec![FieldError {
                field: if path == "." { "body".into() } else { path },
                message: inner.to_string(),
            }]),
            _ => malformed(inner),
        }
    })?;
    de.end().map_err(malformed)?;
    Ok(value)
}

/// Query parameters whose rejections are [`AppError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|r: QueryRejection| AppError::BadRequest(r.body_text()))
    }
}

/// Path parameters whose rejections are [`AppError`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|r: PathRejection| AppError::BadRequest(r.body_text()))
    }
}

/// Collects field errors and turns them into one validation error.
#[derive(Debug, Default)]
pub struct Validator(Vec<FieldError>);

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `message` for `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) -> &mut Self {
        if !ok {
            self.0.push(FieldError {
                field: field.to_owned(),
                message: message.into(),
            });
        }
        self
    }

    /// `Err` when any check failed.
    pub fn finish(&mut self) -> ApiResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(std::mem::take(&mut self.0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Login {
        username: String,
        password: String,
    }

    #[test]
    fn bodies_must_be_objects_with_fields_named_on_error() {
        assert!(parse_object::<Login>(br#"{"username":"a","password":"b"}"#).is_ok());
        let err = parse_object::<Login>(br#"["a","b"]"#).unwrap_err();
        assert_eq!(err.code(), "validation_failed");
        assert_eq!(err.body().details[0].field, "body");
        let err = parse_object::<Login>(br#"{"username":5,"password":"b"}"#).unwrap_err();
        assert_eq!(err.body().details[0].field, "username");
        let err = parse_object::<Login>(br#"{"username":"a"}"#).unwrap_err();
        assert_eq!(err.code(), "validation_failed");
        for bad in [
            &b"{"[..],
            b"{\"username\":",
            b"",
            b"nope",
            br#"{"username":"a","password":"b"} {}"#,
        ] {
            let err = parse_object::<Login>(bad).unwrap_err();
            assert_eq!(err.code(), "malformed_json", "{bad:?}");
        }
    }

    #[test]
    fn internal_details_are_not_sent() {
        let err = AppError::Internal(anyhow::anyhow!("secret path /etc/x"));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(err.body().message, "internal error");
    }
}
