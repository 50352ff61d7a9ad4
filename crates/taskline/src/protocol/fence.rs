//! The client side of `lua/includes/fence.lua`: every fenced outcome call
//! (fail, release, progress, checkpoint) starts with the same arguments,
//! the lease it presents among them.

use crate::args::Args;
use crate::client::Client;
use crate::keys::QueueKeys;

use super::Lease;

impl Client {
    /// The leading arguments of every outcome script: prefix, cap, id, token.
    pub(crate) fn outcome_args(&self, keys: &QueueKeys, lease: &Lease) -> Args {
        let mut args = Args::default();
        args.text(keys.prefix())
            .push(self.options().events_max_len)
            .text(lease.job_id.as_str())
            .text(&lease.token);
        args
    }
}
