//! `GET /`: a small page that enqueues a long demo job and draws its
//! progress bar live from the job's Server-Sent Events.
//!
//! The job it posts is in the page itself, in `<script id="demo-job"
//! type="application/json">`: a `demo` job on queue `demo`, which the
//! `simulate` handler of `config/demo.toml` runs in steps, reporting
//! progress after each. A token, when the server needs one, comes from the
//! page's address: `http://host:port/#token=...` (the fragment never
//! reaches the server's logs).

use axum::response::Html;

/// The page.
pub(crate) const PAGE: &str = include_str!("page.html");

/// Serves the page.
pub(crate) async fn index() -> Html<&'static str> {
    Html(PAGE)
}
