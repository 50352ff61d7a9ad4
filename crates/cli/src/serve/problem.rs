//! Errors as HTTP responses: a status and a JSON body
//! `{"error": "<code>", "message": "<what happened and what to do>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to a request.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Problem {
    /// A problem with `status`, a stable `code` and a message.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 400: the request is malformed or invalid.
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.code, "message": self.message}))).into_response()
    }
}

impl From<taskline::Error> for Problem {
    fn from(err: taskline::Error) -> Self {
        use taskline::Error as E;
        let (status, code) = match &err {
            E::InvalidQueueName { .. } => (StatusCode::BAD_REQUEST, "invalid_queue_name"),
            E::InvalidJobName { .. } => (StatusCode::BAD_REQUEST, "invalid_job_name"),
            E::InvalidJobId { .. } => (StatusCode::BAD_REQUEST, "invalid_job_id"),
            E::InvalidOption { .. } => (StatusCode::BAD_REQUEST, "invalid_option"),
            E::InvalidPayload(_) => (StatusCode::BAD_REQUEST, "invalid_payload"),
            E::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            E::DuplicateJob { .. } => (StatusCode::CONFLICT, "duplicate_job"),
            E::JobNotFound { .. } => (StatusCode::NOT_FOUND, "job_not_found"),
            e if e.is_connection_error() => (StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, err.to_string())
    }
}

/// The fallback of unknown routes.
pub(crate) async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see GET /queues/{queue}/jobs/{id}[/events|/ws] and POST /queues/{queue}/jobs",
    )
}
