//! `GET /queues/{queue}/jobs/{id}` and `POST /queues/{queue}/jobs`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use taskline::{JobId, JobStatus, NewJob, UniqueMode};

use super::AppState;
use super::problem::Problem;

/// The status of one job.
pub(crate) async fn status(
    State(state): State<Arc<AppState>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<JobStatus>, Problem> {
    let id = JobId::new(id)?;
    Ok(Json(state.client.job_status(&queue, &id).await?))
}

/// The body of `POST /queues/{queue}/jobs`. Unknown fields are refused, so
/// a misspelt option is an error instead of silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueRequest {
    /// The job name (routes to a handler).
    name: String,
    /// The payload, any JSON; `null` when absent.
    payload: Option<Box<RawValue>>,
    /// Run after this many milliseconds.
    delay_ms: Option<u64>,
    /// Priority level 0 to 9.
    priority: Option<u8>,
    /// Attempt budget.
    max_attempts: Option<u32>,
    /// Caller-chosen job id (an idempotency key: a second POST is 409).
    id: Option<String>,
    /// Correlation id carried into logs and events.
    correlation_id: Option<String>,
    /// No second job with this key until this one completes or dies.
    unique_key: Option<String>,
    /// Payload schema version.
    version: Option<u32>,
}

/// Enqueues a job; 201 with its id and the URLs to follow it.
pub(crate) async fn enqueue(
    State(state): State<Arc<AppState>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is over the server's limit (--max-body-bytes); store large data \
             elsewhere and enqueue a reference",
        ),
        status => Problem::new(status, "unreadable_body", rejection.body_text()),
    })?;
    let is_json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_json",
            "send the job as JSON with `Content-Type: application/json`",
        ));
    }
    let request: EnqueueRequest = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(
            "invalid_body",
            format!(
                "the body is not a valid job: {e}; expected {{\"name\": \"...\", \"payload\": ...}} \
                 with optional delay_ms, priority, max_attempts, id, correlation_id, unique_key, version"
            ),
        )
    })?;
    let name = request.name.clone();
    let delayed = request.delay_ms.is_some_and(|ms| ms > 0);
    let job = new_job(request)?;
    let id = state.client.enqueue(&queue, job).await?;
    let base = format!("/queues/{queue}/jobs/{id}");
    let body = json!({
        "id": id.as_str(),
        "queue": queue,
        "name": name,
        "state": if delayed { "delayed" } else { "ready" },
        "status_url": base,
        "events_url": format!("{base}/events"),
        "ws_url": format!("{base}/ws"),
    });
    Ok((StatusCode::CREATED, Json(body)))
}

fn new_job(request: EnqueueRequest) -> Result<NewJob, Problem> {
    let payload = request.payload.as_deref().map_or("null", RawValue::get);
    let mut job = NewJob::from_json(request.name, payload)?;
    if let Some(ms) = request.delay_ms {
        job = job.delay(Duration::from_millis(ms));
    }
    if let Some(priority) = request.priority {
        job = job.priority(priority);
    }
    if let Some(attempts) = request.max_attempts {
        if attempts == 0 {
            return Err(Problem::bad_request("invalid_option", "max_attempts must be at least 1"));
        }
        job = job.max_attempts(attempts);
    }
    if let Some(id) = request.id {
        job = job.id(JobId::new(id)?);
    }
    if let Some(correlation_id) = request.correlation_id {
        job = job.correlation_id(correlation_id);
    }
    if let Some(key) = request.unique_key {
        job = job.unique(key, UniqueMode::UntilFinished);
    }
    if let Some(version) = request.version {
        job = job.version(version);
    }
    Ok(job)
}
