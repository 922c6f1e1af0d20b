//! Errors in the shape of OpenAI's API, for the routes under `/v1`.

use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppError;

/// The `type` OpenAI clients expect for a status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "server_error",
    }
}

/// An error as OpenAI's API sends it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

/// The inside of [`OpenAiErrorBody`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// e.g. `invalid_request_error`, `authentication_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// Corral's error code (as in `ErrorBody`).
    pub code: Option<String>,
}

impl OpenAiErrorBody {
    pub fn from_app(err: &AppError) -> Self {
        let body = err.body();
        OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: body.message,
                kind: error_type(err.status().as_u16()).to_owned(),
                param: body.details.first().map(|d| d.field.clone()),
                code: Some(body.code),
            },
        }
    }
}

/// `{"error": {"message", "type", "param", "code"}}` for an [`AppError`].
pub fn openai_error_response(err: AppError) -> Response {
    let payload = serde_json::to_vec(&OpenAiErrorBody::from_app(&err)).unwrap_or_default();
    let mut response = err.into_response();
    *response.body_mut() = axum::body::Body::from(payload);
    response
}
