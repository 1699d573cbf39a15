//! `confmesh-sim`: deterministic simulation of confmesh replicas.
//!
//! Today it simulates the replicated store over a lossy network: writes pushed to every
//! replica, anti-entropy by digest as the backstop, all messages through the real wire codec.
//! Every run derives from one seed and is replayed exactly by it.
//!
//! ```text
//! cargo run -p confmesh-sim --release -- --replicas 20 --writes 500 --loss 0.2 --seed 7
//! cargo run -p confmesh-sim --release -- --smoke        # the fixed CI seed set
//! ```

mod world;

use std::process::ExitCode;

use world::{Params, World};

/// Seeds CI runs on every commit. Failures print the command that replays them.
const SMOKE_SEEDS: [u64; 8] = [1, 2, 3, 7, 42, 1_000, 65_535, 0x00C0_FFEE];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let params = match Params::parse(&args) {
        Ok(p) => p,
        Err(message) => {
            eprintln!("confmesh-sim: {message}\n\n{}", Params::USAGE);
            return ExitCode::from(2);
        }
    };
    let seeds: Vec<u64> = if params.smoke {
        let extra = std::env::var("SIM_SEEDS")
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        SMOKE_SEEDS
            .iter()
            .copied()
            .chain((0..extra).map(|i| 0x5EED_0000 + i))
            .collect()
    } else {
        vec![params.seed]
    };
    let mut failed = 0;
    for seed in seeds {
        let params = Params {
            seed,
            ..params.clone()
        };
        println!("{}", params.describe());
        let report = World::new(params.clone()).run();
        println!("{}", report.summary());
        if params.check_replay {
            let again = World::new(params.clone()).run();
            if again.trace_hash != report.trace_hash {
                eprintln!(
                    "NOT DETERMINISTIC: trace hash {:016x} then {:016x}",
                    report.trace_hash, again.trace_hash
                );
                failed += 1;
            }
        }
        if let Some(problem) = &report.failure {
            eprintln!(
                "FAILED seed={seed}: {problem}\nreproduce with: {}",
                params.command()
            );
            failed += 1;
        }
    }
    if failed > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
