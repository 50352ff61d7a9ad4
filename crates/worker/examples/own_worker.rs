//! A Rust team's own worker binary: register handlers, load the TOML
//! config, run until SIGTERM or Ctrl-C. Run: `cargo run -p taskline-worker
//! --example own_worker -- config/worker.toml`.

use serde::Deserialize;
use taskline_worker::{Config, JobContext, JobError, Worker, handler_fn, logging};
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct Email {
    to: String,
    subject: String,
}

async fn send_email(ctx: JobContext, email: Email) -> Result<Option<serde_json::Value>, JobError> {
    if !email.to.contains('@') {
        return Err(JobError::permanent(format!("{} is not an email address", email.to)));
    }
    tracing::info!(job = %ctx.id, to = %email.to, subject = %email.subject, "sending");
    Ok(Some(serde_json::json!({ "delivered_to": email.to })))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "config/worker.toml".into());
    let config = Config::load(path.as_ref())?;
    logging::init(config.worker.log_format);
    let worker = Worker::builder(config).handler("emails", "send_email", handler_fn(send_email)).build()?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    worker.run(shutdown, CancellationToken::new()).await?;
    Ok(())
}
