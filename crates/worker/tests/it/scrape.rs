//! Scraping an in-process worker's `/metrics` over plain HTTP: the
//! requests and a parser of the Prometheus text format.

use std::collections::{BTreeMap, HashMap};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::eventually;

/// Default limit of the waits below.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(8);

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `GET path` with a plain HTTP/1.1 request; the status and the body, or
/// `None` when nothing listens.
pub async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A series as `name{a="x",b="y"}` with the labels sorted by name
/// (`name` alone without labels).
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let sorted: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// The samples of a text-format scrape, keyed by [`series`].
pub fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let key = match key.split_once('{') {
            Some((name, rest)) => {
                let labels: Vec<(&str, &str)> = rest
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').expect("label=value");
                        (k, v.trim_matches('"'))
                    })
                    .collect();
                series(name, &labels)
            }
            None => key.to_string(),
        };
        samples.insert(key, value);
    }
    samples
}

pub async fn scrape(port: u16) -> HashMap<String, f64> {
    let (status, body) = get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

/// The value of a series, 0 when absent (a counter never incremented).
pub fn value(samples: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples.get(&series(name, labels)).copied().unwrap_or(0.0)
}

pub async fn wait_for_value(port: u16, name: &str, labels: &[(&str, &str)], want: f64) {
    let what = format!("{} = {want}", series(name, labels));
    eventually(&what, LIMIT, || async { value(&scrape(port).await, name, labels) == want }).await;
}
