//! The command line: every documented command parses, and bad arguments are refused.

use clap::{Parser, error::ErrorKind};

use super::{Cli, Params, Scenario, Start};

fn parse(args: &str) -> Result<Params, clap::Error> {
    Cli::try_parse_from(std::iter::once("confmesh-sim").chain(args.split_whitespace()))?.params()
}

#[track_caller]
fn check(args: &str) -> Params {
    parse(args).unwrap_or_else(|e| panic!("{args}: {e}"))
}

#[track_caller]
fn refused(args: &str) -> ErrorKind {
    match parse(args) {
        Ok(p) => panic!("{args}: accepted as {p:?}"),
        Err(e) => {
            assert_eq!(e.exit_code(), 2, "{args}");
            e.kind()
        }
    }
}

#[test]
fn defaults_match_the_summary_line() {
    let p = check("");
    assert_eq!(
        p.to_string(),
        "seed=1 scenario=steady nodes=100 loss=0.01 duplicate=0.01 latency_ms=1..10 skew_ms=50 \
         disk_ms=0 writes=200 write_interval_ms=20 keys=100 start=cold"
    );
    assert_eq!(p.catchup_keys, 100_000);
    assert!(!p.smoke && !p.check_replay && !p.quiet && !p.baseline && !p.one_way);
    assert!(p.signing, "nodes sign by default");
    assert_eq!((p.report, p.plot, p.follow), (None, None, None));
}

/// The commands of README.md, BENCHMARKS.md and `.ci/run`, verbatim after `--`.
#[test]
fn documented_commands_parse() {
    let p = check("--scenario steady --nodes 1000 --loss 0.01 --seed 7 --report out.json");
    assert_eq!((p.scenario, p.nodes, p.seed), (Scenario::Steady, 1000, 7));
    assert_eq!(p.report.as_deref(), Some("out.json"));
    let p = check("--scenario partition --nodes 100 --baseline");
    assert!(p.baseline && p.scenario == Scenario::Partition);
    let p = check("--smoke --check-replay");
    assert!(p.smoke && p.check_replay);
    let p = check(
        "--plot docs/sim-steady.svg \
         --from docs/sim/steady-100.json,docs/sim/steady-1000.json,docs/sim/steady-10000.json",
    );
    assert_eq!(p.plot.as_deref(), Some("docs/sim-steady.svg"));
    assert_eq!(
        p.plot_from,
        [
            "docs/sim/steady-100.json",
            "docs/sim/steady-1000.json",
            "docs/sim/steady-10000.json"
        ]
    );
    let p = check(
        "--scenario churn --nodes 1000 --loss 0.01 --seed 7 --baseline \
         --report docs/sim/churn-1000.json",
    );
    assert_eq!((p.scenario, p.nodes), (Scenario::Churn, 1000));
    let p = check(
        "--scenario steady --nodes 10000 --loss 0.01 --seed 7 --report docs/sim/steady-10000.json",
    );
    assert_eq!(p.start, Start::Warm);
    let p = check("--scenario steady --nodes 10000 --seed 7 --follow 7573");
    assert_eq!(p.follow, Some(7573));
    // BENCHMARKS.md, "Simulator with signing": each run with and without.
    for signing in ["", " --no-signing"] {
        let p = check(&format!("--swarm 200 --seed 1 --quiet{signing}"));
        assert_eq!(
            (p.swarm, p.seed, p.signing),
            (Some(200), 1, signing.is_empty())
        );
        let p = check(&format!(
            "--scenario steady --nodes 1000 --loss 0.01 --seed 7 --quiet{signing}"
        ));
        assert_eq!((p.nodes, p.seed, p.signing), (1000, 7, signing.is_empty()));
        assert_eq!(
            Params::swarm(&p, 9).signing,
            p.signing,
            "swarm runs keep it"
        );
    }
    // The other runs of that section: the swarm, the larger scenarios, the failing catchups.
    assert_eq!(check("--swarm 1000 --seed 201 --quiet").swarm, Some(1000));
    let p = check("--scenario churn --nodes 1000 --loss 0.01 --seed 7 --quiet");
    assert_eq!(
        (p.scenario, p.nodes, p.signing),
        (Scenario::Churn, 1000, true)
    );
    let p = check("--scenario chaos --nodes 200 --seed 1");
    assert_eq!((p.scenario, p.nodes), (Scenario::Chaos, 200));
    let p = check("--scenario catchup --nodes 10 --loss 0.01 --seed 7");
    assert_eq!((p.scenario, p.catchup_keys), (Scenario::Catchup, 100_000));
    let p = check("--seed 3 --scenario catchup --nodes 5 --catchup-keys 6000 --writes 40");
    assert_eq!((p.nodes, p.catchup_keys, p.writes), (5, 6000, 40));
}

#[test]
fn every_flag_keeps_its_meaning() {
    let p = check(
        "--scenario catchup --nodes 9 --loss 0.2 --duplicate 0.3 --latency-ms 2..30 --skew-ms 5 \
         --writes 7 --write-interval-ms 11 --keys 13 --catchup-keys 17 --start warm --seed 19 \
         --baseline --one-way --report r.json --plot p.svg --smoke --check-replay --quiet \
         --follow 8 --no-signing",
    );
    assert_eq!(p.scenario, Scenario::Catchup);
    assert_eq!((p.nodes, p.loss, p.duplicate), (9, 0.2, 0.3));
    assert_eq!((p.latency_ms_min, p.latency_ms_max, p.skew_ms), (2, 30, 5));
    assert_eq!((p.writes, p.write_interval_ms, p.keys), (7, 11, 13));
    assert_eq!((p.catchup_keys, p.start, p.seed), (17, Start::Warm, 19));
    assert!(p.baseline && p.one_way && p.smoke && p.check_replay && p.quiet && !p.signing);
    assert_eq!(p.report.as_deref(), Some("r.json"));
    assert_eq!(p.plot.as_deref(), Some("p.svg"));
    assert_eq!(p.follow, Some(8));
    // The replay command gives back the same parameters.
    let again = p.command();
    let args = again
        .strip_prefix("cargo run -p confmesh-sim --release --")
        .expect("a cargo command");
    assert_eq!(check(args).to_string(), p.to_string());
    assert!(
        p.to_string().ends_with(" one_way=true signing=false"),
        "{p}"
    );
    assert!(!check(args).signing);
}

#[test]
fn start_auto_is_warm_only_for_large_meshes_outside_join() {
    assert_eq!(check("--nodes 2000").start, Start::Cold);
    assert_eq!(check("--nodes 2001").start, Start::Warm);
    assert_eq!(check("--nodes 2001 --start auto").start, Start::Warm);
    assert_eq!(check("--nodes 2001 --scenario join").start, Start::Cold);
    assert_eq!(check("--nodes 2001 --start cold").start, Start::Cold);
    assert_eq!(check("--nodes 5 --start warm").start, Start::Warm);
}

#[test]
fn repeated_flags_keep_the_last_value() {
    assert_eq!(check("--seed 3 --seed 4").seed, 4);
    let p = check("--plot p.svg --from a.json --from b.json,c.json");
    assert_eq!(p.plot_from, ["a.json", "b.json", "c.json"]);
}

#[test]
fn bad_arguments_are_refused() {
    assert_eq!(refused("--bogus"), ErrorKind::UnknownArgument);
    assert_eq!(refused("--scenario storm"), ErrorKind::InvalidValue);
    assert_eq!(refused("--nodes many"), ErrorKind::ValueValidation);
    assert_eq!(refused("--seed"), ErrorKind::InvalidValue);
    assert_eq!(refused("--latency-ms 5"), ErrorKind::ValueValidation);
    assert_eq!(refused("--start lukewarm"), ErrorKind::InvalidValue);
    assert_eq!(refused("--from a.json"), ErrorKind::MissingRequiredArgument);
    assert_eq!(refused("--nodes 2"), ErrorKind::ValueValidation);
    assert_eq!(refused("--keys 0"), ErrorKind::ValueValidation);
    assert_eq!(refused("--latency-ms 0..5"), ErrorKind::ValueValidation);
    assert_eq!(refused("--latency-ms 9..5"), ErrorKind::ValueValidation);
    assert_eq!(refused("--loss 0.5"), ErrorKind::ValueValidation);
    assert_eq!(refused("--duplicate 1"), ErrorKind::ValueValidation);
    assert_eq!(
        refused("--nodes 10 --follow 10"),
        ErrorKind::ValueValidation
    );
}

#[test]
fn swarm_runs_draw_every_parameter_from_their_seed_and_replay_from_their_command() {
    let base = check("--swarm 50 --seed 3");
    assert_eq!(base.swarm, Some(50));
    let mut scenarios = std::collections::BTreeSet::new();
    let mut node_counts = std::collections::BTreeSet::new();
    let mut disks = std::collections::BTreeSet::new();
    for seed in 3..53 {
        let run = Params::swarm(&base, seed);
        // The same seed draws the same run.
        assert_eq!(run.to_string(), Params::swarm(&base, seed).to_string());
        assert!((3..=64).contains(&run.nodes) && run.loss < 0.1 && run.duplicate < 0.05);
        assert!(run.latency_ms_min >= 1 && run.latency_ms_min <= run.latency_ms_max);
        // Its replay command gives back the same run, with no swarm in it.
        let command = run.command();
        let args = command
            .strip_prefix("cargo run -p confmesh-sim --release --")
            .expect("a cargo command");
        let replayed = check(args);
        assert_eq!(replayed.to_string(), run.to_string(), "{command}");
        assert_eq!(replayed.swarm, None);
        scenarios.insert(run.scenario.name());
        node_counts.insert(run.nodes);
        disks.insert(run.disk_ms);
    }
    assert!(disks.len() > 5, "fsync latencies vary: {disks:?}");
    assert_eq!(
        scenarios.len(),
        Scenario::ALL.len(),
        "every scenario is drawn: {scenarios:?}"
    );
    assert!(node_counts.len() > 10, "node counts vary: {node_counts:?}");
    assert_eq!(refused("--swarm 5 --smoke"), ErrorKind::ArgumentConflict);
}
