//! Redis URLs with a password or an ACL user: `redis://user:password@host`.

use serde_json::json;
use taskline::{Client, NewJob};
use taskline_testkit::RedisServer;

#[tokio::test]
async fn password_and_acl_user_urls_work_and_wrong_credentials_are_refused() {
    let server = RedisServer::start();
    let port = server.port();
    // Set after start: the test kit's readiness probe speaks without auth.
    let mut setup = server.connection().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query_async(&mut setup)
        .await
        .expect("requirepass");

    let by_password =
        Client::connect(&format!("redis://:s3cret@127.0.0.1:{port}/")).await.expect("password URL");
    by_password.enqueue("auth", NewJob::new("n", &json!(1)).expect("job")).await.expect("enqueue");

    // An ACL user with its own password.
    let mut admin = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{port}/").as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "jobs", "on", ">hunter2", "~*", "+@all"][..])
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let by_user =
        Client::connect(&format!("redis://jobs:hunter2@127.0.0.1:{port}/")).await.expect("user URL");
    assert_eq!(by_user.counts("auth").await.expect("counts").ready, 1);

    let wrong = Client::connect(&format!("redis://jobs:wrong@127.0.0.1:{port}/")).await;
    let err = wrong.expect_err("a wrong password must be refused");
    assert!(err.to_string().to_lowercase().contains("redis"), "{err}");
    let anonymous = Client::connect(&format!("redis://127.0.0.1:{port}/")).await;
    let refused = match anonymous {
        Err(_) => true,
        Ok(client) => client.counts("auth").await.is_err(),
    };
    assert!(refused, "no credentials, no access");
}
