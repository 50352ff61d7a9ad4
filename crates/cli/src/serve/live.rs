//! The live streams of one job: Server-Sent Events and a WebSocket, both
//! carrying [`taskline::JobUpdate`]s as JSON (`{"type": "status" |
//! "progress" | "state" | "removed", ...}`) and ending after the terminal
//! status. The watch is started before the response, so a missing job is
//! a plain 404, not an empty stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, stream};
use taskline::{JobId, JobUpdate, JobWatch};

use super::AppState;
use super::problem::Problem;

/// Comment lines on an idle SSE stream, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

async fn start_watch(state: &AppState, queue: &str, id: String) -> Result<JobWatch, Problem> {
    let id = JobId::new(id)?;
    Ok(state.client.watch(queue, &id).await?)
}

/// The SSE event name of an update: its `type`.
fn kind(update: &JobUpdate) -> &'static str {
    match update {
        JobUpdate::Status(_) => "status",
        JobUpdate::Progress { .. } => "progress",
        JobUpdate::State { .. } => "state",
        JobUpdate::Removed { .. } => "removed",
        _ => "update",
    }
}

/// One SSE event per update, then an `end` event.
pub(crate) async fn sse(
    State(state): State<Arc<AppState>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let watch = start_watch(&state, &queue, id).await?;
    let updates = watch.map(|update| {
        Ok(match update {
            Ok(update) => Event::default().event(kind(&update)).json_data(&update).unwrap_or_default(),
            Err(err) => Event::default().event("error").data(err.to_string()),
        })
    });
    let end = stream::once(async { Ok(Event::default().event("end").data("{}")) });
    Ok(Sse::new(updates.chain(end)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// One text message per update, then a normal close.
pub(crate) async fn websocket(
    State(state): State<Arc<AppState>>,
    Path((queue, id)): Path<(String, String)>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Problem> {
    let watch = start_watch(&state, &queue, id).await?;
    Ok(upgrade.on_upgrade(move |socket| forward(watch, socket)).into_response())
}

async fn forward(mut watch: JobWatch, mut socket: WebSocket) {
    let reason = loop {
        tokio::select! {
            update = watch.next() => match update {
                Some(Ok(update)) => {
                    let text = serde_json::to_string(&update).unwrap_or_default();
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return; // the client went away
                    }
                }
                Some(Err(err)) => break err.to_string(),
                None => break "job finished".to_string(),
            },
            // Only a close (or a dropped connection) matters from the client.
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    };
    let frame = CloseFrame { code: close_code::NORMAL, reason: reason.into() };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
