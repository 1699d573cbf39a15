//! `confmesh-sim`: deterministic simulation of confmesh nodes.
//!
//! Many `confmesh::proto::Node`s (the same code production runs) in one thread, on a
//! simulated network with latency, loss, duplication, reordering, partitions, crashes,
//! restarts and clock skew. Everything derives from one seed; the same seed gives the same
//! trace hash. One checker per invariant (`checker`) decides whether a run passed. Every node
//! signs its writes and enforces signatures (docs/PROTOCOL.md §7) unless `--no-signing`.
//!
//! ```text
//! cargo run -p confmesh-sim --release -- --scenario steady --nodes 1000 --loss 0.01 --seed 7 --report out.json
//! cargo run -p confmesh-sim --release -- --smoke --check-replay     # CI's fixed seed set
//! cargo run -p confmesh-sim --release -- --swarm 200 --seed 1 --quiet --no-signing   # unsigned, to compare
//! cargo run -p confmesh-sim --release -- --plot docs/sim-steady.svg --from docs/sim/steady-100.json,docs/sim/steady-1000.json
//! ```

mod checker;
mod follow;
mod params;
mod pictures;
mod plot;
mod report;
mod scenario;
mod world;

use std::process::ExitCode;

use clap::Parser;
use confmesh::proto::node::Dissemination;
use params::{Cli, Params, Preset, Scenario};
use report::Report;
use scenario::Phases;
use world::World;

/// The smoke set: every scenario at small N, a few seeds each.
const SMOKE_SEEDS: [u64; 3] = [1, 7, 42];

fn main() -> ExitCode {
    // A bad argument prints clap's message and exits with status 2.
    let params = match Cli::parse().params() {
        Ok(p) => p,
        Err(e) => e.exit(),
    };
    if !params.plot_from.is_empty() {
        return plot_saved(&params);
    }
    let runs: Vec<Params> = if params.smoke {
        smoke_set(&params)
    } else if let Some(count) = params.swarm {
        (params.seed..params.seed.saturating_add(count))
            .map(|seed| Params::swarm(&params, seed))
            .collect()
    } else {
        vec![params.clone()]
    };
    let mut failed = 0;
    let mut reports = Vec::new();
    for p in runs {
        println!("{p}");
        let report = run(&p);
        println!("{}", report.summary());
        if let Some(b) = &report.baseline {
            println!("{}", b.summary());
        }
        if p.check_replay {
            let again = run_mode(&p, Dissemination::Plumtree, "confmesh");
            if let Err(e) = checker::determinism::check(&report.trace_hash, &again.trace_hash) {
                eprintln!("NOT DETERMINISTIC: {e}");
                failed += 1;
            }
        }
        if !report.failures.is_empty() {
            for f in &report.failures {
                eprintln!("FAILED {f}");
            }
            eprintln!("reproduce with: {}", p.command());
            failed += 1;
        }
        reports.push(report);
    }
    if params.swarm.is_some() {
        println!("{}", swarm_summary(&reports, failed));
    }
    if let Some(path) = &params.report {
        let json = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])
        } else {
            serde_json::to_string_pretty(&reports)
        };
        match json.map(|j| std::fs::write(path, j + "\n")) {
            Ok(Ok(())) => println!("report written to {path}"),
            Ok(Err(e)) => eprintln!("cannot write {path}: {e}"),
            Err(e) => eprintln!("cannot encode the report: {e}"),
        }
    }
    if let Some(path) = &params.plot {
        let inputs: Result<Vec<_>, _> = reports.iter().map(pictures::PlotInput::of).collect();
        match inputs.and_then(|inputs| pictures::draw(path, inputs)) {
            Ok(()) => println!("picture written to {path}"),
            Err(e) => {
                eprintln!("cannot draw {path}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One line on a swarm: runs, failures, the false positives tolerated (loss over 1%, or 10%
/// with the WAN preset), the declarations the injected faults excused, and in how many runs
/// the false-positive check held.
fn swarm_summary(reports: &[Report], failed: usize) -> String {
    let with_false_positives: Vec<u64> = reports
        .iter()
        .map(|r| r.false_positives)
        .filter(|&n| n > 0)
        .collect();
    let sim_s: f64 = reports.iter().map(|r| r.sim_s).sum();
    let wall_s: f64 = reports.iter().map(|r| r.wall_s).sum();
    let excused: u64 = reports.iter().map(|r| r.excused_declarations).sum();
    let enforced = reports
        .iter()
        .filter(|r| checker::false_positives::enforced(r.loss, r.preset))
        .count();
    let wan = reports.iter().filter(|r| r.preset == Preset::Wan).count();
    format!(
        "swarm: {} runs, {failed} failed; {} runs with tolerated false positives (most {}); {excused} declarations excused by injected faults; false positives checked in {enforced} runs ({wan} with the WAN preset, checked up to 10% loss); {:.0} s simulated in {:.0} s",
        reports.len(),
        with_false_positives.len(),
        with_false_positives.iter().max().copied().unwrap_or(0),
        sim_s,
        wall_s,
    )
}

/// `--plot FILE --from REPORTS`: draws saved reports, runs nothing.
fn plot_saved(params: &Params) -> ExitCode {
    let Some(path) = &params.plot else {
        return ExitCode::from(2);
    };
    let mut inputs = Vec::new();
    for file in &params.plot_from {
        match pictures::PlotInput::read(file) {
            Ok(runs) => inputs.extend(runs),
            Err(e) => {
                eprintln!("confmesh-sim: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match pictures::draw(path, inputs) {
        Ok(()) => {
            println!("picture written to {path}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("confmesh-sim: cannot draw {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(p: &Params) -> Report {
    let mut report = run_mode(p, Dissemination::Plumtree, "confmesh");
    if p.baseline {
        report.baseline = Some(Box::new(run_mode(
            p,
            Dissemination::baseline(p.nodes),
            "baseline",
        )));
    }
    report
}

fn run_mode(p: &Params, mode: Dissemination, name: &'static str) -> Report {
    #[allow(
        clippy::disallowed_methods,
        reason = "wall time of the run, for the report only"
    )]
    let started = std::time::Instant::now();
    let mut world = World::new(p.clone(), mode);
    let mut phases = Phases::default();
    scenario::run(&mut world, &mut phases);
    Report::build(&world, phases, name, started.elapsed().as_secs_f64())
}

/// Every scenario at small N, and a one-way partition, for each smoke seed; `SIM_SEEDS=N`
/// adds N more seeds.
fn smoke_set(base: &Params) -> Vec<Params> {
    let extra = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let seeds = SMOKE_SEEDS
        .iter()
        .copied()
        .chain((0..extra).map(|i| 0x5EED_0000 + i));
    let mut runs = Vec::new();
    for seed in seeds {
        for scenario in Scenario::ALL {
            let nodes = if scenario == Scenario::Catchup { 5 } else { 20 };
            runs.push(Params {
                scenario,
                seed,
                nodes,
                writes: 40,
                catchup_keys: 5_000,
                quiet: true,
                report: None,
                ..base.clone()
            });
        }
        runs.push(Params {
            scenario: Scenario::Partition,
            one_way: true,
            seed,
            nodes: 20,
            writes: 40,
            quiet: true,
            report: None,
            ..base.clone()
        });
    }
    runs
}
