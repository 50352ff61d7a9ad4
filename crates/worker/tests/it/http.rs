//! `kind = "http"` handlers against a real local HTTP server (axum on
//! 127.0.0.1:0), a real `redis-server` and a real worker: every status
//! class, the request headers, `Retry-After`, results, timeouts, connection
//! errors, graceful shutdown, HTTPS with certificate verification,
//! `${NAME}` expansion and its masking, and configuration errors.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use taskline::{Client, FailureKind, JobId, JobState, NewJob};
use taskline_testkit::RedisServer;
use taskline_worker::Config;

use crate::support::{
    RunningWorker, WorkerProcess, assert_handler_config_error, config, eventually, settled, worker_command,
    write_file,
};

const SEC: Duration = Duration::from_secs(1);

/// One request the endpoint received.
#[derive(Debug, Clone)]
struct Received {
    scenario: String,
    /// The client's address: one per connection.
    peer: SocketAddr,
    headers: HeaderMap,
    body: String,
    at: Instant,
}

/// A local endpoint whose path says how to answer (see [`answer`]); it
/// records every request.
struct Endpoint {
    base: String,
    received: Arc<Mutex<Vec<Received>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    async fn start() -> Endpoint {
        let (app, received) = app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the endpoint");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app).await.expect("serve");
        });
        Endpoint { base, received, _server: server }
    }

    /// The same endpoint over HTTPS, with the certificate `tls` (for
    /// 127.0.0.1, issued by the test CA).
    async fn start_tls(tls: &TestCa) -> Endpoint {
        let (app, received) = app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the endpoint");
        let base = format!("https://{}", listener.local_addr().expect("addr"));
        let acceptor = tls.acceptor();
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let app = app.clone().layer(axum::Extension(ConnectInfo(peer)));
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Endpoint { base, received, _server: server }
    }

    fn url(&self, scenario: &str) -> String {
        format!("{}/{scenario}", self.base)
    }

    fn requests(&self, scenario: &str) -> Vec<Received> {
        self.received.lock().expect("lock").iter().filter(|r| r.scenario == scenario).cloned().collect()
    }
}

/// The endpoint's routes, and the list its requests are recorded in.
fn app() -> (Router, Arc<Mutex<Vec<Received>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    (Router::new().route("/{scenario}", post(answer)).with_state(received.clone()), received)
}

/// `ok`: 200 with a JSON body. `text`: 200 with plain text. `big`: 200 with
/// 100 KB of JSON. `status-<code>`: that status with a short body.
/// `long-<code>`: that status with a 10 KB body. `flaky-<code>`: that status
/// with `Retry-After: 1` on the first request, 200 after. `slow`: answers
/// after 30 s.
async fn answer(
    State(received): State<Arc<Mutex<Vec<Received>>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(scenario): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let calls = {
        let mut list = received.lock().expect("lock");
        list.push(Received { scenario: scenario.clone(), peer, headers, body, at: Instant::now() });
        list.iter().filter(|r| r.scenario == scenario).count()
    };
    let (kind, code) = scenario.split_once('-').unwrap_or((scenario.as_str(), "200"));
    let status = StatusCode::from_u16(code.parse().expect("a status code")).expect("status");
    match kind {
        "ok" => (StatusCode::OK, r#"{"sent": true, "to": "ünï"}"#).into_response(),
        "text" => (StatusCode::OK, "sent, thanks").into_response(),
        "big" => (StatusCode::OK, format!("\"{}\"", "x".repeat(100_000))).into_response(),
        "status" => (status, format!("endpoint says {code}")).into_response(),
        "long" => (status, "e".repeat(10_000)).into_response(),
        "flaky" if calls == 1 => (status, [("retry-after", "1")], "busy, come back in 1 s").into_response(),
        "flaky" => (StatusCode::OK, r#"{"second": true}"#).into_response(),
        "slow" => {
            tokio::time::sleep(30 * SEC).await;
            (StatusCode::OK, "{}").into_response()
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// A `[handlers.<name>]` table of kind http for `url`, plus `extra` lines.
fn http_handler(name: &str, url: &str, extra: &str) -> String {
    format!("[handlers.{name}]\nqueue = \"web\"\nkind = \"http\"\nurl = \"{url}\"\n{extra}\n")
}

/// A worker config: queue `web` whose transient failures retry after an
/// hour (so a retry scheduled sooner was set by `Retry-After`), then `body`.
fn web_config(redis: &str, body: &str) -> Config {
    config(
        redis,
        &format!(
            "[worker]\nshutdown_timeout = \"300ms\"\n\n[queues.web]\nmax_attempts = 3\n\
             backoff = {{ initial = \"1h\", max = \"1h\", jitter = \"none\" }}\n\n{body}"
        ),
    )
}

async fn enqueue(client: &Client, job: NewJob) -> JobId {
    client.enqueue("web", job).await.expect("enqueue")
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_completes_with_the_json_body_as_result_and_the_request_carries_the_job() {
    let server = RedisServer::start();
    let endpoint = Endpoint::start().await;
    let client = Client::connect(&server.url()).await.expect("connect");
    let worker = RunningWorker::start_config(web_config(
        &server.url(),
        &http_handler("send", &endpoint.url("ok"), ""),
    ));
    let payload = json!({"to": "zoë@example.com", "subject": "héllo ✓"});
    let job = NewJob::new("send", &payload).expect("job").version(3).correlation_id("flow-42");
    let id = enqueue(&client, job).await;
    let done = settled(&client, "web", &id).await;
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    let result: Value = serde_json::from_str(done.result.as_deref().expect("a result")).expect("json");
    assert_eq!(result, json!({"sent": true, "to": "ünï"}));

    let requests = endpoint.requests("ok");
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(serde_json::from_str::<Value>(&request.body).expect("body is JSON"), payload);
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(header(request, "idempotency-key"), id.as_str());
    assert_eq!(header(request, "taskline-job-id"), id.as_str());
    assert_eq!(header(request, "taskline-job-name"), "send");
    assert_eq!(header(request, "taskline-queue"), "web");
    assert_eq!(header(request, "taskline-attempt"), "1");
    assert_eq!(header(request, "taskline-max-attempts"), "3");
    assert_eq!(header(request, "taskline-payload-version"), "3");
    assert_eq!(header(request, "taskline-correlation-id"), "flow-42");
    assert!(header(request, "user-agent").starts_with("taskline-worker/"));

    // Later jobs reuse the pooled connection.
    for n in 0..3 {
        let id = enqueue(&client, NewJob::new("send", &json!({"n": n})).expect("job")).await;
        assert_eq!(settled(&client, "web", &id).await.state, JobState::Completed);
    }
    let peers: Vec<SocketAddr> = endpoint.requests("ok").iter().map(|r| r.peer).collect();
    assert_eq!(peers.len(), 4);
    assert!(peers.iter().all(|p| *p == peers[0]), "one connection for every request: {peers:?}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_class_maps_to_its_outcome_with_the_body_as_the_error() {
    let server = RedisServer::start();
    let endpoint = Endpoint::start().await;
    let client = Client::connect(&server.url()).await.expect("connect");
    let transient = [408, 429, 500, 502, 503, 504];
    let permanent = [400, 401, 404, 409, 422, 302];
    let mut body = String::new();
    for code in transient.iter().chain(&permanent) {
        body += &http_handler(&format!("s{code}"), &endpoint.url(&format!("status-{code}")), "");
    }
    body += &http_handler("long", &endpoint.url("long-500"), "");
    let worker = RunningWorker::start_config(web_config(&server.url(), &body));
    let mut ids = Vec::new();
    for code in transient.iter().chain(&permanent) {
        ids.push((*code, enqueue(&client, NewJob::new(format!("s{code}"), &json!({})).expect("job")).await));
    }
    let long = enqueue(&client, NewJob::new("long", &json!({})).expect("job")).await;

    for (code, id) in ids {
        let job = settled(&client, "web", &id).await;
        let error = job.errors.last().unwrap_or_else(|| panic!("{code}: no error recorded: {job:?}"));
        assert!(
            error.message.starts_with(&format!("HTTP {code} "))
                && error.message.ends_with(&format!(": endpoint says {code}"))
                || code == 302,
            "{code}: {}",
            error.message
        );
        assert_eq!(job.facts.attempt, 1, "{code}: one attempt so far");
        if transient.contains(&code) {
            assert_eq!((job.state, error.kind), (JobState::Delayed, FailureKind::Transient), "{code}");
            let due = job.due_at.expect("a retry is due");
            let wait = due.duration_since(std::time::SystemTime::now()).unwrap_or_default();
            assert!(wait > Duration::from_secs(3000), "{code}: the queue's 1 h backoff applies: {wait:?}");
        } else {
            assert_eq!((job.state, error.kind), (JobState::Dead, FailureKind::Permanent), "{code}");
            assert_eq!(job.dead_reason.as_deref(), Some(format!("http_{code}").as_str()));
        }
    }
    let redirected = endpoint.requests("status-302");
    assert_eq!(redirected.len(), 1, "a redirect is not followed");

    let long = settled(&client, "web", &long).await;
    let message = &long.errors[0].message;
    assert!(message.starts_with("HTTP 500 Internal Server Error: eeee"), "{message}");
    assert!(message.ends_with('…') && message.len() < 2200, "the body is truncated: {} bytes", message.len());
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_and_503_sets_the_delay_and_attempts_keep_one_idempotency_key() {
    let server = RedisServer::start();
    let endpoint = Endpoint::start().await;
    let client = Client::connect(&server.url()).await.expect("connect");
    let body = http_handler("busy", &endpoint.url("flaky-429"), "")
        + &http_handler("down", &endpoint.url("flaky-503"), "");
    let worker = RunningWorker::start_config(web_config(&server.url(), &body));
    for (name, scenario) in [("busy", "flaky-429"), ("down", "flaky-503")] {
        let id = enqueue(&client, NewJob::new(name, &json!({"n": 1})).expect("job")).await;
        // The queue's backoff is an hour: only Retry-After brings the
        // second attempt this soon.
        eventually(&format!("{name} completes on its second attempt"), 10 * SEC, || async {
            client.get_job("web", &id).await.is_ok_and(|j| j.state == JobState::Completed)
        })
        .await;
        let job = client.get_job("web", &id).await.expect("job");
        assert_eq!(job.facts.attempt, 2, "{name}");
        assert_eq!(job.errors.len(), 1, "{name}");
        assert!(job.errors[0].message.contains("busy, come back in 1 s"), "{:?}", job.errors[0]);
        assert_eq!(job.result.as_deref(), Some(r#"{"second":true}"#));
        let requests = endpoint.requests(scenario);
        assert_eq!(requests.len(), 2, "{name}");
        let gap = requests[1].at - requests[0].at;
        assert!(gap >= Duration::from_millis(900), "{name}: Retry-After: 1 was honoured: {gap:?}");
        let keys: Vec<&str> = requests.iter().map(|r| header(r, "idempotency-key")).collect();
        assert_eq!(keys, [id.as_str(), id.as_str()], "{name}: one key for every attempt");
        let attempts: Vec<&str> = requests.iter().map(|r| header(r, "taskline-attempt")).collect();
        assert_eq!(attempts, ["1", "2"], "{name}");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_connection_errors_are_transient() {
    let server = RedisServer::start();
    let endpoint = Endpoint::start().await;
    let client = Client::connect(&server.url()).await.expect("connect");
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let body = http_handler("slow", &endpoint.url("slow"), "timeout = \"300ms\"")
        + &http_handler("refused", &format!("http://127.0.0.1:{closed}/jobs?token=hidden"), "");
    let worker = RunningWorker::start_config(web_config(&server.url(), &body));
    let slow = enqueue(&client, NewJob::new("slow", &json!({})).expect("job")).await;
    let refused = enqueue(&client, NewJob::new("refused", &json!({})).expect("job")).await;

    let slow = settled(&client, "web", &slow).await;
    assert_eq!((slow.state, slow.errors[0].kind), (JobState::Delayed, FailureKind::Transient));
    assert!(slow.errors[0].message.contains("timed out after 300ms"), "{}", slow.errors[0].message);
    let refused = settled(&client, "web", &refused).await;
    assert_eq!((refused.state, refused.errors[0].kind), (JobState::Delayed, FailureKind::Transient));
    let message = &refused.errors[0].message;
    assert!(message.starts_with(&format!("POST http://127.0.0.1:{closed}/jobs failed")), "{message}");
    assert!(!message.contains("hidden"), "the query string is not recorded: {message}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_json_or_too_large_complete_without_a_result() {
    let server = RedisServer::start();
    let endpoint = Endpoint::start().await;
    let client = Client::connect(&server.url()).await.expect("connect");
    let body = http_handler("text", &endpoint.url("text"), "")
        + &http_handler("big", &endpoint.url("big"), "max_result_bytes = 1000");
    let worker = RunningWorker::start_config(web_config(&server.url(), &body));
    for name in ["text", "big"] {
        let id = enqueue(&client, NewJob::new(name, &json!({})).expect("job")).await;
        let job = settled(&client, "web", &id).await;
        assert_eq!(job.state, JobState::Completed, "{name}: the endpoint did the work");
        assert_eq!(job.result, None, "{name}");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_during_graceful_shutdown_is_released_not_lost() {
    let server = RedisServer::start();
    let endpoint = Endpoint::start().await;
    let client = Client::connect(&server.url()).await.expect("connect");
    let body = http_handler("slow", &endpoint.url("slow"), "timeout = \"1m\"");
    let worker = RunningWorker::start_config(web_config(&server.url(), &body));
    let id = enqueue(&client, NewJob::new("slow", &json!({})).expect("job")).await;
    eventually("the endpoint got the request", 10 * SEC, || async { !endpoint.requests("slow").is_empty() })
        .await;
    let report = worker.stop().await;
    assert_eq!(report.released_at_shutdown, 1);
    let job = client.get_job("web", &id).await.expect("job");
    assert_eq!(job.state, JobState::Ready, "{job:?}");
    assert!(job.errors.is_empty(), "the attempt is not spent: {:?}", job.errors);
    assert_eq!(client.counts("web").await.expect("counts").ready, 1);
}

// ---------------------------------------------------------------------------
// TLS

/// A certificate authority made by the `openssl` command, and a server
/// certificate for 127.0.0.1 that it issued.
struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let ext = write_file(
            dir.path(),
            "leaf.ext",
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
        );
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let steps: [Vec<&str>; 3] = [
            [&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]].concat(),
            [&["req"][..], &ec, &["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"]]
                .concat(),
            vec![
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "leaf.pem",
                "-days",
                "2",
                "-extfile",
                ext.to_str().expect("utf-8"),
            ],
        ];
        for (i, args) in steps.iter().enumerate() {
            let mut command = std::process::Command::new("openssl");
            command.args(args).current_dir(dir.path());
            if i == 0 {
                command.args(["-subj", "/CN=taskline test CA"]);
            }
            let out = command.output().expect("run openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        TestCa { dir }
    }

    fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(self.dir.path().join("leaf.pem"))
            .expect("leaf.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(self.dir.path().join("leaf.key")).expect("leaf.key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_work_and_their_certificates_are_verified() {
    let server = RedisServer::start();
    let ca = TestCa::new();
    let endpoint = Endpoint::start_tls(&ca).await;
    let client = Client::connect(&server.url()).await.expect("connect");

    // A worker that does not trust the test CA refuses the endpoint.
    let worker = RunningWorker::start_config(web_config(
        &server.url(),
        &http_handler("send", &endpoint.url("ok"), ""),
    ));
    let refused = enqueue(&client, NewJob::new("send", &json!({})).expect("job")).await;
    let refused = settled(&client, "web", &refused).await;
    assert_eq!((refused.state, refused.errors[0].kind), (JobState::Delayed, FailureKind::Transient));
    assert!(refused.errors[0].message.contains("certificate"), "{}", refused.errors[0].message);
    assert!(endpoint.requests("ok").is_empty(), "nothing was sent without a trusted certificate");
    worker.stop().await;

    // A worker process that trusts it (SSL_CERT_FILE) completes the job.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = binary_config(dir.path(), &server.url(), &endpoint.url("ok"), "{}");
    let log = dir.path().join("worker.log");
    let ca_file = ca.ca_file();
    let env = [("SSL_CERT_FILE", ca_file.to_str().expect("utf-8"))];
    let mut command = worker_command(&["--config", path.to_str().expect("utf-8")], &env);
    command.env("RUST_LOG", "info").stdout(Stdio::null()).stderr(std::fs::File::create(&log).expect("log"));
    let mut worker = WorkerProcess { child: command.spawn().expect("spawn taskline-worker"), log };
    let id = enqueue(&client, NewJob::new("send", &json!({"over": "tls"})).expect("job")).await;
    let job = settled(&client, "web", &id).await;
    assert_eq!(job.state, JobState::Completed, "{job:?}");
    assert_eq!(endpoint.requests("ok").len(), 1);
    worker.signal("TERM");
    assert!(worker.wait_exit(10 * SEC).success());
}

// ---------------------------------------------------------------------------
// Configuration: ${NAME} expansion, masking, errors

const SECRET: &str = "s3cr3t-7f3a-token";

/// A worker config file for the binary: queue `web`, handler `send`.
fn binary_config(dir: &std::path::Path, redis: &str, url: &str, headers: &str) -> std::path::PathBuf {
    write_file(
        dir,
        "worker.toml",
        &format!(
            "[redis]\nurl = \"{redis}\"\n\n[queues.web]\n\n[handlers.send]\nqueue = \"web\"\nkind = \"http\"\n\
             url = \"{url}\"\nheaders = {headers}\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_values_expand_environment_variables_that_never_appear_in_logs_or_printed_config() {
    let server = RedisServer::start();
    let endpoint = Endpoint::start().await;
    let client = Client::connect(&server.url()).await.expect("connect");
    let dir = tempfile::tempdir().expect("tempdir");
    let headers = "{ Authorization = \"Bearer ${TASKLINE_TEST_MAILER_TOKEN}\", X-Tenant = \"acme-${TASKLINE_TEST_TENANT}\" }";
    let path = binary_config(dir.path(), &server.url(), &endpoint.url("ok"), headers);
    let env = [("TASKLINE_TEST_MAILER_TOKEN", SECRET), ("TASKLINE_TEST_TENANT", "eu")];

    let checked = worker_command(&["--check-config", "--config", path.to_str().expect("utf-8")], &env)
        .output()
        .expect("run --check-config");
    let printed = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    assert!(!printed.contains(SECRET), "--check-config leaks the secret:\n{printed}");
    assert!(printed.contains("Authorization = \"****\""), "{printed}");
    assert!(printed.contains("X-Tenant = \"acme-${TASKLINE_TEST_TENANT}\""), "{printed}");

    let log = dir.path().join("worker.log");
    let mut command = worker_command(&["--config", path.to_str().expect("utf-8")], &env);
    command.env("RUST_LOG", "debug").stdout(Stdio::null()).stderr(std::fs::File::create(&log).expect("log"));
    let child = command.spawn().expect("spawn taskline-worker");
    let mut worker = WorkerProcess { child, log };
    let id = enqueue(&client, NewJob::new("send", &json!({"to": "a@b.c"})).expect("job")).await;
    eventually("the job completes", 15 * SEC, || async {
        client.get_job("web", &id).await.is_ok_and(|j| j.state == JobState::Completed)
    })
    .await;
    let request = &endpoint.requests("ok")[0];
    assert_eq!(header(request, "authorization"), format!("Bearer {SECRET}"));
    assert_eq!(header(request, "x-tenant"), "acme-eu");
    worker.signal("TERM");
    assert!(worker.wait_exit(10 * SEC).success());
    let text = worker.log_text();
    assert!(text.contains("completed"), "{text}");
    assert!(!text.contains(SECRET), "the log leaks the secret:\n{text}");
}

#[test]
fn an_unset_variable_stops_the_worker_at_start_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let headers = "{ Authorization = \"Bearer ${TASKLINE_TEST_UNSET_TOKEN}\" }";
    let path = binary_config(dir.path(), "redis://127.0.0.1:1", "http://127.0.0.1:1/x", headers);
    for args in [
        &["--config", path.to_str().expect("utf-8")][..],
        &["--check-config", "--config", path.to_str().expect("utf-8")],
    ] {
        let output = worker_command(args, &[]).output().expect("run taskline-worker");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("handlers.send.headers.Authorization"), "the field is named: {stderr}");
        assert!(stderr.contains("TASKLINE_TEST_UNSET_TOKEN is not set"), "the variable is named: {stderr}");
        assert!(stderr.contains(path.to_str().expect("utf-8")), "the file is named: {stderr}");
    }
}

#[test]
fn bad_http_handler_configs_are_refused_naming_the_field() {
    let cases = [
        ("url = \"ftp://files.example/x\"", "handlers.h.url", "not an http:// or https:// URL"),
        ("url = \"not a url\"", "handlers.h.url", "is not a URL"),
        ("", "handlers.h.url", "missing; kind = \"http\" needs the endpoint"),
        ("url = \"http://x/\"\nprogram = \"sh\"", "handlers.h.program", "belongs to kind = \"command\""),
        (
            "url = \"http://x/\"\nheaders = { Idempotency-Key = \"x\" }",
            "handlers.h.headers.Idempotency-Key",
            "set by the worker",
        ),
        ("url = \"http://x/\"\nheaders = { A = \"${OPEN\" }", "handlers.h.headers.A", "unclosed"),
        ("url = \"http://x/\"\nmax_result_bytes = 0", "handlers.h.max_result_bytes", "at least 1"),
    ];
    for (extra, field, message) in cases {
        assert_handler_config_error("http", extra, field, message);
    }
}

#[test]
fn handler_tables_print_with_secrets_masked_and_load_back() {
    let text = "[queues.q]\n\
        [handlers.h]\nqueue = \"q\"\nkind = \"http\"\nurl = \"https://u:pw@mailer.internal/jobs\"\n\
        headers = { Authorization = \"Bearer literal-secret\", X-Tenant = \"acme-${TENANT}\" }\n\
        [handlers.c]\nqueue = \"q\"\nkind = \"command\"\nprogram = \"sh\"\nargs = [\"-c\", \"exit 0\"]\n\
        env = { API_KEY = \"k-123\", MODE = \"fast\" }\ntransient_exit_codes = [75, 111]\n";
    let config = Config::from_toml_str(text).unwrap_or_else(|e| panic!("{e}"));
    let printed = config.redacted();
    let debug = format!("{config:?}");
    for shown in [&printed, &debug] {
        for secret in ["literal-secret", "k-123", "pw@"] {
            assert!(!shown.contains(secret), "{secret} leaks:\n{shown}");
        }
    }
    assert!(printed.contains("X-Tenant = \"acme-${TENANT}\""), "{printed}");
    assert!(printed.contains("# kill_grace is not set: 5s"), "{printed}");
    assert!(printed.contains("transient_exit_codes = [75, 111]"), "{printed}");

    // Without secret-looking names the printed text loads back equal.
    let plain = text.replace("Authorization", "X-Plain").replace("API_KEY", "REGION").replace("u:pw@", "");
    let config = Config::from_toml_str(&plain).unwrap_or_else(|e| panic!("{e}"));
    let printed = config.redacted();
    assert_eq!(Config::from_toml_str(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}")), config);
}

/// An endpoint that streams its answer: a progress line, then (once the
/// test opens `gate`) a checkpoint, the final progress and the result.
/// Plain HTTP/1.1 with a close-delimited body, so each line reaches the
/// worker as it is written. Returns the URL and the checkpoint header
/// the request carried.
async fn streaming_endpoint(
    gate: tokio::sync::oneshot::Receiver<()>,
) -> (String, tokio::task::JoinHandle<Option<String>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/stream", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&request).contains("\r\n\r\n") {
            let n = socket.read(&mut chunk).await.expect("read the request");
            request.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&request).to_string();
        let checkpoint =
            head.lines().find_map(|l| l.strip_prefix("taskline-checkpoint: ").map(|v| v.trim().to_string()));
        socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n")
            .await
            .expect("head");
        socket
            .write_all(b"taskline:progress {\"done\": 1, \"total\": 3, \"unit\": \"rows\"}\n")
            .await
            .expect("line");
        socket.flush().await.expect("flush");
        let _ = gate.await;
        socket
            .write_all(
                b"taskline:checkpoint {\"row\": 1}\n\
                  taskline:progress {\"done\": 3, \"total\": 3, \"unit\": \"rows\", \"message\": \"all rows\"}\n\
                  {\"ok\": true}\n",
            )
            .await
            .expect("rest");
        socket.shutdown().await.expect("close");
        checkpoint
    });
    (url, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_streams_progress_and_a_checkpoint_before_its_result() {
    let server = RedisServer::start();
    let client = Client::connect(&server.url()).await.expect("connect");
    let (open, gate) = tokio::sync::oneshot::channel();
    let (url, endpoint) = streaming_endpoint(gate).await;
    let worker = RunningWorker::start_config(web_config(&server.url(), &http_handler("export", &url, "")));
    let id = enqueue(&client, NewJob::new("export", &json!({"table": "orders"})).expect("job")).await;

    // The first line is visible while the request is still open.
    eventually("progress 1 of 3 while the job runs", 10 * SEC, || async {
        client.job_status("web", &id).await.is_ok_and(|s| {
            s.state == JobState::Active && s.progress.as_ref().is_some_and(|p| p.done == 1 && p.total == 3)
        })
    })
    .await;
    open.send(()).expect("open the gate");
    eventually("the job completes", 10 * SEC, || async {
        client.job_status("web", &id).await.is_ok_and(|s| s.state == JobState::Completed)
    })
    .await;

    let status = client.job_status("web", &id).await.expect("status");
    assert_eq!(status.result, Some(json!({"ok": true})), "report lines are not part of the result");
    let progress = status.progress.expect("progress");
    assert_eq!((progress.done, progress.total, progress.unit.as_str()), (3, 3, "rows"));
    assert_eq!(progress.message.as_deref(), Some("all rows"));
    let mut conn = server.connection().await;
    let checkpoint: Option<String> = redis::cmd("HGET")
        .arg(format!("taskline:{{web}}:job:{id}"))
        .arg("checkpoint")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(checkpoint.as_deref(), Some(r#"{"row":1}"#));
    assert_eq!(endpoint.await.expect("endpoint"), None, "a first attempt has no checkpoint to send");
    worker.stop().await;
}
