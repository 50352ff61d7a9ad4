//! `taskline serve`: job status, live progress and enqueue over HTTP, for
//! browser frontends and services in any language.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the demo page (no token needed: it holds no data) |
//! | `POST /queues/{queue}/jobs` | enqueue; 201 with the job id |
//! | `GET /queues/{queue}/jobs/{id}` | the job's status as JSON |
//! | `GET /queues/{queue}/jobs/{id}/events` | its updates as Server-Sent Events |
//! | `GET /queues/{queue}/jobs/{id}/ws` | the same updates over a WebSocket |
//!
//! # Layout
//!
//! - `auth`: the bearer token check.
//! - `api`: status and enqueue.
//! - `live`: the SSE and WebSocket streams of `Client::watch`.
//! - `problem`: errors as JSON with a 4xx or 5xx status.
//! - `page`: the demo page.

mod api;
mod auth;
mod live;
mod page;
mod problem;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use taskline::Client;

use crate::cli::ServeArgs;
use crate::context::Ctx;
use crate::error::CliError;

/// How long open streams get to end after SIGTERM or Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every handler shares.
pub(crate) struct AppState {
    client: Client,
    token: Option<String>,
}

/// Checks the arguments before anything connects: an address other than
/// loopback needs a token, since the API can enqueue jobs.
pub fn check(args: &ServeArgs) -> Result<(), CliError> {
    if args.token.as_deref() == Some("") {
        return Err(CliError::Usage(
            "--token (TASKLINE_SERVE_TOKEN) is empty; set a long random secret".into(),
        ));
    }
    if args.token.is_none() && !args.bind.ip().is_loopback() {
        return Err(CliError::Usage(format!(
            "refusing to serve on {} without a token: anyone who can reach it could enqueue jobs; \
             set --token or TASKLINE_SERVE_TOKEN, or bind to 127.0.0.1",
            args.bind
        )));
    }
    if args.max_body_bytes == 0 {
        return Err(CliError::Usage("--max-body-bytes must be at least 1".into()));
    }
    Ok(())
}

/// Serves until SIGTERM or Ctrl-C. The first line on stdout names the
/// address (useful with port 0).
pub async fn serve(ctx: &Ctx, args: ServeArgs) -> Result<(), CliError> {
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}; pick another --bind", args.bind)))?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState { client: ctx.client.clone(), token: args.token });
    let auth = if state.token.is_some() { "bearer token required" } else { "no token (loopback only)" };
    let mut out = std::io::stdout();
    writeln!(out, "listening on http://{addr}/ ({auth})")?;
    out.flush()?;

    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<(), std::io::Error>(())
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(state, args.max_body_bytes))
        .with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return Ok(result?),
        signal = shutdown => signal?,
    }
    let _ = stop_tx.send(());
    // Live streams end with their jobs; give them a moment, then go.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
    Ok(())
}

fn router(state: Arc<AppState>, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route("/queues/{queue}/jobs", post(api::enqueue))
        .route("/queues/{queue}/jobs/{id}", get(api::status))
        .route("/queues/{queue}/jobs/{id}/events", get(live::sse))
        .route("/queues/{queue}/jobs/{id}/ws", get(live::websocket))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require));
    Router::new()
        .route("/", get(page::index))
        .merge(api)
        .fallback(problem::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
