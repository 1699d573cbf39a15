//! The `confmesh` command: the agent, a client of its API, and certificate issuing
//! (`src/cli`, one file per command).
//!
//! Exit codes: 0 success; 1 the operation failed (not found, conflict, unreachable agent);
//! 2 invalid usage or configuration (a start-up failure names the option at fault); 130 the
//! agent was stopped by a second signal while shutting down.

/// mimalloc, not the system's: glibc's malloc costs the store's many small allocations about
/// 3x on a catch-up and about 10 µs of CPU per signed PUT (BENCHMARKS.md). The library itself
/// never chooses an allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("confmesh: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(cli.run());
    // Tasks still running (a connection the grace period cut off, a second signal) are not
    // waited for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("confmesh: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
