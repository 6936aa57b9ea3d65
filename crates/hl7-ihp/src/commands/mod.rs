//! One function per subcommand: each reads its arguments, runs the library's pieces and says
//! what happened on the terminal. The only modules that use `anyhow`.

pub mod demo;
pub mod inspect;
pub mod parse;
pub mod receive;
pub mod send;

use anyhow::Context;

/// The multi-threaded async runtime of the commands that serve or send.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
