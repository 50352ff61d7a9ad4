//! The demo page in a real browser: Debian's `chromium`, headless, driven
//! over the DevTools protocol (a WebSocket). The test clicks the page's
//! button, watches its progress bar move to 100% while the shipped demo
//! worker runs the job, and keeps a screenshot of the finished page in the
//! test's temporary directory (the path is printed).
//!
//! `scripts/ensure-chromium` installs the browser; CI runs it. Without a
//! browser the test says so and passes, unless `CI` is set.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use taskline::{JobId, JobState};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::http::{Serve, get};
use crate::serve::DemoWorker;
use crate::support::Env;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless chromium with remote debugging; killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    /// `host:port` of its DevTools endpoint.
    devtools: String,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new(CHROMIUM)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--window-size=900,650", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ws://") {
                    let _ = tx.send(url.split('/').next().unwrap_or_default().to_string());
                }
            }
        });
        let devtools = rx.recv_timeout(Duration::from_secs(20)).expect("chromium's DevTools endpoint");
        Browser { child, _profile: profile, devtools }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One DevTools session on a page.
struct Page {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    /// Attaches to the browser's first page.
    async fn attach(browser: &Browser) -> Page {
        let targets = get(browser.devtools.parse().expect("DevTools address"), "/json/list").await.json();
        let url = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("a page target: {targets:#}"))
            .to_string();
        let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("DevTools WebSocket");
        Page { socket, next_id: 0 }
    }

    /// Sends a command and returns its result (events in between are
    /// skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket.send(Message::Text(command.into())).await.expect("send DevTools command");
        while let Some(message) = self.socket.next().await {
            if let Message::Text(text) = message.expect("DevTools message") {
                let reply: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
                if reply["id"] == json!(id) {
                    assert!(reply.get("error").is_none(), "{method}: {reply:#}");
                    return reply["result"].clone();
                }
            }
        }
        panic!("DevTools closed during {method}");
    }

    /// Evaluates `expression` in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result =
            self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true})).await;
        result["result"]["value"].clone()
    }
}

/// Where the screenshot goes: this test binary's temporary directory.
fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("taskline-demo-page.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_in_headless_chromium_shows_progress_reaching_100_percent() {
    if !Path::new(CHROMIUM).exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must have chromium: run scripts/ensure-chromium");
        eprintln!("SKIPPED: {CHROMIUM} is not installed (scripts/ensure-chromium installs it)");
        return;
    }
    let env = Env::start().await;
    let serve = Serve::start(&env.server.url(), &[]);
    let worker = DemoWorker::start(&env);
    let browser = Browser::start();
    let mut page = Page::attach(&browser).await;

    page.call("Page.navigate", json!({"url": format!("http://{}/", serve.addr)})).await;
    let start = Instant::now();
    while page.eval("document.readyState").await != json!("complete") {
        assert!(start.elapsed() < Duration::from_secs(15), "the page loads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    page.eval("document.getElementById('start').click()").await;

    // Read the bar as a person would, until it shows 100% and the job is done.
    let read = "JSON.stringify({bar: document.getElementById('bar').value, \
                percent: document.getElementById('percent').textContent, \
                state: document.getElementById('state').textContent, \
                job: document.getElementById('job').textContent})";
    let mut seen = Vec::new();
    let start = Instant::now();
    let last = loop {
        let now: Value =
            serde_json::from_str(page.eval(read).await.as_str().expect("page state")).expect("json");
        seen.push(now["bar"].as_f64().unwrap_or(0.0));
        if now["percent"] == "100%" && now["state"].as_str().is_some_and(|s| s.starts_with("completed")) {
            break now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the bar reaches 100%: last {now:#}, seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let shot = page.call("Page.captureScreenshot", json!({"format": "png"})).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("data"))
        .expect("base64");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(screenshot_path(), &png).expect("write screenshot");
    println!("screenshot of the finished demo page: {}", screenshot_path().display());
    worker.stop().await;

    assert!(
        seen.iter().any(|&v| v > 0.0 && v < 100.0),
        "the bar moved through intermediate values while the job ran: {seen:?}"
    );
    let id = JobId::new(last["job"].as_str().expect("job id shown")).expect("a job id");
    let job = env.client.job_status("demo", &id).await.expect("the page's job");
    assert_eq!(job.state, JobState::Completed);
}
