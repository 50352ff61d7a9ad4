//! A running `taskline serve` process and a small HTTP client for it
//! (hyper's HTTP/1 connection, one connection per request), with readers
//! of its Server-Sent Events and WebSocket streams.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::support::binary;

/// A `taskline serve` child process; killed on drop.
pub struct Serve {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Serve {
    /// Starts `taskline serve --bind 127.0.0.1:0 ARGS` against `url` and
    /// waits for its "listening on" line.
    pub fn start(url: &str, args: &[&str]) -> Serve {
        let mut child = Command::new(binary())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(args)
            .env("REDIS_URL", url)
            .env_remove("TASKLINE_SERVE_TOKEN")
            .env_remove("TASKLINE_PREFIX")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn taskline serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read stdout");
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line of taskline serve: {line:?}"));
        Serve { child, addr }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, its body read in full.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// Content-Type, if any.
    pub content_type: String,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:#?}"))
    }

    /// The `error` code of a problem body.
    pub fn error_code(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_string()
    }
}

/// Sends one request; `headers` are added as given.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> hyper::Response<hyper::body::Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect to taskline serve");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP handshake");
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::copy_from_slice(body))).expect("request");
    sender.send_request(request).await.expect("send request")
}

/// Sends one request and reads the whole response.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let response = send(addr, method, path, headers, body).await;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    let bytes = response.into_body().collect().await.expect("read body").to_bytes();
    Reply { status, content_type, body: String::from_utf8_lossy(&bytes).into_owned() }
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, "GET", path, &[], b"").await
}

/// `POST path` with a JSON body.
pub async fn post_json(addr: SocketAddr, path: &str, body: &str) -> Reply {
    call(addr, "POST", path, &[("content-type", "application/json")], body.as_bytes()).await
}

/// Reads Server-Sent Events from `path` until the `end` event (or 20 s),
/// as `(event, data)`. `first` is sent the first event as soon as it
/// arrives, so a test can act once the stream is live.
pub async fn read_sse(
    addr: SocketAddr,
    path: &str,
    first: tokio::sync::oneshot::Sender<()>,
) -> Vec<(String, Value)> {
    let response = send(addr, "GET", path, &[("accept", "text/event-stream")], b"").await;
    assert_eq!(response.status(), StatusCode::OK, "SSE status");
    let content_type = response.headers().get("content-type").expect("content type").to_str().expect("text");
    assert_eq!(content_type, "text/event-stream", "SSE content type");
    let mut body = response.into_body();
    let mut text = String::new();
    let mut events = Vec::new();
    let mut first = Some(first);
    let read = async {
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.expect("SSE frame").into_data() else { continue };
            text.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let Some(event) = parse_sse(&block) else { continue }; // a keep-alive comment
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
                let done = event.0 == "end";
                events.push(event);
                if done {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("the SSE stream ends within 20 s");
    events
}

fn parse_sse(block: &str) -> Option<(String, Value)> {
    let mut event = None;
    let mut data = String::new();
    for line in block.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = Some(name.trim().to_string());
        } else if let Some(text) = line.strip_prefix("data:") {
            data.push_str(text.trim_start());
        }
    }
    Some((event?, serde_json::from_str(&data).unwrap_or(Value::String(data))))
}

/// Reads a job's WebSocket stream until the server closes it (or 20 s):
/// every text message as JSON, and the close reason.
pub async fn read_ws(
    addr: SocketAddr,
    path: &str,
    first: tokio::sync::oneshot::Sender<()>,
) -> (Vec<Value>, String) {
    use tokio_tungstenite::tungstenite::Message;
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}{path}")).await.expect("WebSocket handshake");
    let mut messages = Vec::new();
    let mut first = Some(first);
    let read = async {
        while let Some(message) = socket.next().await {
            match message.expect("WebSocket message") {
                Message::Text(text) => {
                    if let Some(tx) = first.take() {
                        let _ = tx.send(());
                    }
                    messages.push(serde_json::from_str(text.as_str()).expect("JSON message"));
                }
                Message::Close(frame) => return frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                _ => {}
            }
        }
        String::new()
    };
    let reason =
        tokio::time::timeout(Duration::from_secs(20), read).await.expect("the WebSocket closes within 20 s");
    let _ = socket.close(None).await;
    (messages, reason)
}
