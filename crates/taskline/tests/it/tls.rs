//! `rediss://` URLs: the client speaks TLS to a TLS-only port.

use serde_json::json;
use taskline::{Client, Completion, NewJob};
use taskline_testkit::RedisServer;

use crate::support::claim;

#[tokio::test]
async fn the_whole_protocol_works_over_tls() {
    let server = RedisServer::builder().tls(true).start();
    let url = server.tls_url();
    assert!(url.starts_with("rediss://"), "{url}");
    let client = Client::connect(&url).await.expect("connect over TLS");
    let q = "tls";
    let id = client.enqueue(q, NewJob::new("secure", &json!({"n": 1})).expect("job")).await.expect("enqueue");
    let mut claimed = client.claim(q, &claim(1, "w-tls")).await.expect("claim").jobs;
    assert_eq!(claimed.len(), 1);
    let job = claimed.remove(0);
    assert_eq!(job.lease.job_id, id);
    assert_eq!(client.complete(&job.lease, None).await.expect("complete"), Completion::Completed);
    assert_eq!(client.counts(q).await.expect("counts").completed, 1);

    // The TLS port really is TLS: the plain port sees the same data, and a
    // plain-text client on the TLS port gets no answer.
    let plain = Client::connect(&server.url()).await.expect("connect plain");
    assert_eq!(plain.counts(q).await.expect("counts").completed, 1);
    let tls_port = url.trim_start_matches("rediss://127.0.0.1:").trim_end_matches("/#insecure");
    let wrong = Client::builder(&format!("redis://127.0.0.1:{tls_port}/"))
        .response_timeout(std::time::Duration::from_millis(500))
        .connect()
        .await;
    let wrong_result = match wrong {
        Ok(c) => c.counts(q).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(wrong_result.is_err(), "plain text on the TLS port must fail");
}

#[tokio::test]
async fn a_certificate_that_cannot_be_verified_is_refused() {
    let server = RedisServer::builder().tls(true).start();
    // Without `#insecure` the self-signed certificate fails verification.
    let verified = server.tls_url().trim_end_matches("#insecure").to_string();
    let result =
        Client::builder(&verified).response_timeout(std::time::Duration::from_secs(2)).connect().await;
    let err = result.expect_err("a self-signed certificate must not verify");
    assert!(err.is_connection_error() || matches!(err, taskline::Error::Redis(_)), "{err}");
}
