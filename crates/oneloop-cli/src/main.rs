//! `oneloop`: the command-line face of oneloop.
//!
//! * `oneloop probe [--json]` — every backend: usable here, or exactly why not; the kernel
//!   features each relies on.
#![forbid(unsafe_code)]

mod probe;

use clap::{Parser, Subcommand};

/// One event loop for all Linux I/O: probe this machine's backends.
#[derive(Parser)]
#[command(name = "oneloop", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show each backend (uring, aio, epoll): usable here or why not, and the kernel features seen.
    Probe {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Probe { json } => probe::run(json),
    }
}
