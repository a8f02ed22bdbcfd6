//! The Unix socket between the daemon and `wal-push` / `wal-fetch`.
//!
//! - [`protocol`]: the request and reply lines, pure;
//! - [`server`]: the daemon's end, answering through a narrow [`Handler`];
//! - [`client`]: the commands' end, and the fallback log `wal-push` keeps when the
//!   daemon does not answer.
//!
//! One request per connection, one line each way. The socket is created with mode 0600,
//! so only the user PostgreSQL and the daemon run as can talk to it.

pub mod client;
pub mod protocol;
pub mod server;

pub(crate) use client::take_fallbacks;
pub use client::{ask_fetch, ask_push, fallback_log, record_fallback};
pub use protocol::{FetchReply, PushReply, Request};
pub use server::Handler;
pub(crate) use server::Server;
