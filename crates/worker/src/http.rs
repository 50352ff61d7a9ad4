//! The `http` handler kind: POSTs a job's payload to an endpoint and maps
//! the response to the job's outcome.
//!
//! | response | outcome |
//! |---|---|
//! | 2xx | completed; a JSON body (up to `max_result_bytes`) is the result, after report lines streamed before it are taken out (progress and checkpoints, see [`crate::reports`]) |
//! | 408, 429, 5xx | transient: retried; `Retry-After` on 429/503 sets the delay |
//! | timeout, connection error | transient |
//! | other 3xx and 4xx | permanent: the job goes to the dead-letter queue |
//!
//! Every request carries the job's facts as headers (`Idempotency-Key` is
//! the job id, the same on every attempt). All http handlers of a worker
//! share one [`reqwest::Client`], so connections are pooled and reused;
//! `https://` uses rustls with the bundled Mozilla roots plus the system's
//! (and `SSL_CERT_FILE`).

use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};

use crate::config::{ConfigError, HandlerConfig, handler_field, looks_secret};
use crate::handler::{BoxFuture, Handler, HandlerResult, JobContext, JobError};
use crate::interpolate;
use crate::output::{Capped, ERROR_TEXT_BYTES, json_result};
use crate::reports::ReportLines;

/// Longest `Retry-After` honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Longest wait to open a connection to an endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client shared by every http handler of a worker. Redirects are not
/// followed: a redirected POST would silently turn into a GET.
pub fn shared_client() -> Result<Client, reqwest::Error> {
    Client::builder()
        .user_agent(concat!("taskline-worker/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_keepalive(Duration::from_secs(60))
        .build()
}

/// An `http` handler: one endpoint, fixed headers, a shared client.
pub struct HttpHandler {
    client: Client,
    url: Url,
    /// `url` without its query and user info, for error messages.
    shown_url: String,
    headers: HeaderMap,
    max_result_bytes: usize,
}

impl HttpHandler {
    /// Builds the handler of `[handlers.<name>]`, expanding `${NAME}` in
    /// header values from the process environment.
    pub fn from_config(name: &str, config: &HandlerConfig, client: Client) -> Result<Self, ConfigError> {
        let field = |leaf: &[&str]| handler_field(name, leaf);
        let raw = config.url.as_deref().unwrap_or_default();
        let url =
            Url::parse(raw).map_err(|e| ConfigError::new(field(&["url"]), format!("not a URL: {e}")))?;
        let mut headers = HeaderMap::new();
        for (header, template) in config.headers.iter() {
            let at = || field(&["headers", header]);
            let value = interpolate::expand_env(template).map_err(|m| ConfigError::new(at(), m))?;
            // The expanded value is a secret's home: never print it.
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                ConfigError::new(at(), "the value (after ${...} expansion) is not a valid header value")
            })?;
            if looks_secret(header) || interpolate::has_references(template) {
                value.set_sensitive(true);
            }
            let header = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| ConfigError::new(at(), "not a valid HTTP header name"))?;
            headers.insert(header, value);
        }
        let shown_url = format!("{}{}", url.origin().ascii_serialization(), url.path());
        Ok(Self { client, url, shown_url, headers, max_result_bytes: config.result_limit() })
    }

    fn request(&self, ctx: &JobContext, payload: String) -> RequestBuilder {
        // Configured headers replace the default Content-Type; the job's
        // headers cannot be configured (validation refuses them).
        self.client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .headers(self.headers.clone())
            .headers(job_headers(ctx))
            .body(payload)
    }
}

impl Handler for HttpHandler {
    fn handle(&self, ctx: JobContext, payload: String) -> BoxFuture<HandlerResult> {
        let request = self.request(&ctx, payload);
        let limit = self.max_result_bytes;
        let shown_url = self.shown_url.clone();
        Box::pin(async move {
            tokio::select! {
                outcome = exchange(request, limit, &shown_url, &ctx) => outcome,
                // Dropping the request closes its connection: the endpoint
                // sees the client go away.
                _ = ctx.cancelled() => Err(JobError::transient(format!("POST {shown_url}: cancelled while waiting for the response"))),
            }
        })
    }
}

/// The longest checkpoint sent in the `Taskline-Checkpoint` header.
const MAX_CHECKPOINT_HEADER: usize = 4 * 1024;

/// The job's facts as request headers.
pub fn job_headers(ctx: &JobContext) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        // Names and ids are plain text; a value that is not a valid header
        // (a correlation id with a newline) is left out rather than failing
        // the job.
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    let id = ctx.id.to_string();
    put("idempotency-key", &id);
    put("taskline-job-id", &id);
    put("taskline-job-name", &ctx.name);
    put("taskline-queue", &ctx.queue);
    put("taskline-attempt", &ctx.attempt.to_string());
    put("taskline-max-attempts", &ctx.max_attempts.to_string());
    put("taskline-payload-version", &ctx.version.to_string());
    put("taskline-worker", &ctx.worker);
    if let Some(correlation_id) = &ctx.correlation_id {
        put("taskline-correlation-id", correlation_id);
    }
    // The last checkpoint an earlier attempt streamed back (see `reports`),
    // so the endpoint can resume. Servers cap header sizes (8 KiB is
    // common): a larger checkpoint is left out rather than failing the job.
    if let Some(checkpoint) = ctx.checkpoint.as_deref().filter(|c| c.len() <= MAX_CHECKPOINT_HEADER) {
        put("taskline-checkpoint", checkpoint);
    }
    headers
}

/// Sends the request and classifies what comes back.
async fn exchange(request: RequestBuilder, limit: usize, shown_url: &str, ctx: &JobContext) -> HandlerResult {
    let response = request.send().await.map_err(|e| transport_error(e, shown_url))?;
    let status = response.status();
    let retry_after = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => retry_after(response.headers()),
        _ => None,
    };
    let body = if status.is_success() {
        // Report lines streamed before the result (see `reports`).
        read_body(response, ReportLines::new(Capped::head(limit), ctx.clone())).await
    } else {
        read_body(response, ReportLines::new(Capped::head(ERROR_TEXT_BYTES), ctx.clone())).await
    };
    let body = body.map_err(|e| transport_error(e, shown_url))?;
    classify(status, retry_after, &body)
}

/// A request that got no complete response: always worth retrying.
fn transport_error(err: reqwest::Error, shown_url: &str) -> JobError {
    // `without_url`: a query string may hold a token.
    let what = if err.is_timeout() { "timed out" } else { "failed" };
    let mut error = JobError::from(err.without_url());
    error.message = format!("POST {shown_url} {what}: {}", error.message);
    error
}

/// Reads the body as it arrives until it ends or overflows `lines`'
/// buffer: report lines reach the job at once, the rest is returned.
async fn read_body(mut response: Response, mut lines: ReportLines) -> Result<Capped, reqwest::Error> {
    while let Some(chunk) = response.chunk().await? {
        lines.push(&chunk).await;
        if lines.overflowed() {
            break;
        }
    }
    Ok(lines.finish().await)
}

/// The outcome of a response: see the module docs.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &Capped) -> HandlerResult {
    if status.is_success() {
        return Ok(json_result(body, "the response body"));
    }
    let text = body.text();
    let mut message = format!("HTTP {status}");
    if !text.is_empty() {
        message = format!("{message}: {text}");
    }
    let transient = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error();
    if transient {
        let error = JobError::transient(message);
        return Err(match retry_after {
            Some(delay) => error.retry_after(delay),
            None => error,
        });
    }
    if status.is_redirection() {
        message.push_str(" (redirects are not followed; set url to the final address)");
    }
    Err(JobError::permanent(message).with_reason(format!("http_{}", status.as_u16())))
}

/// The delay a `Retry-After` header asks for: seconds, or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use taskline::FailureKind;

    use super::*;

    fn body(text: &str) -> Capped {
        let mut body = Capped::head(ERROR_TEXT_BYTES);
        body.push(text.as_bytes());
        body
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(
            classify(StatusCode::OK, None, &body(r#"{"a":1}"#)),
            Ok(Some(serde_json::json!({"a": 1})))
        );
        assert_eq!(classify(StatusCode::NO_CONTENT, None, &body("")), Ok(None));
        for (status, kind) in [
            (408, FailureKind::Transient),
            (429, FailureKind::Transient),
            (500, FailureKind::Transient),
            (503, FailureKind::Transient),
            (400, FailureKind::Permanent),
            (404, FailureKind::Permanent),
            (422, FailureKind::Permanent),
            (301, FailureKind::Permanent),
        ] {
            let status = StatusCode::from_u16(status).expect("status");
            let err = classify(status, None, &body("nope")).expect_err("fails");
            assert_eq!(err.kind, kind, "{status}");
            assert!(err.message.starts_with(&format!("HTTP {status}: nope")), "{}", err.message);
        }
        let err = classify(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(7)), &body(""))
            .expect_err("429");
        assert_eq!(
            (err.retry_after, err.message.as_str()),
            (Some(Duration::from_secs(7)), "HTTP 429 Too Many Requests")
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), Some(Duration::ZERO), "a date in the past means now");
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).expect("date"));
        let delay = retry_after(&headers).expect("a date");
        assert!(delay > Duration::from_secs(3500) && delay <= Duration::from_secs(3600), "{delay:?}");
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("99999999"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
    }
}
