//! What a run simulates, parsed from the command line (clap). Every field is printed before a
//! run.

use std::{fmt, str::FromStr};

use clap::{CommandFactory, Parser, ValueEnum, error::ErrorKind};

/// The command line: `confmesh-sim --help` prints it. [`Cli::params`] checks it and resolves
/// `--start auto` into the [`Params`] of a run.
#[derive(Debug, Parser)]
#[command(
    name = "confmesh-sim",
    about = "Deterministic simulation of confmesh nodes: every run derives from one seed",
    // A flag given twice keeps its last value.
    args_override_self = true
)]
pub struct Cli {
    /// What to simulate.
    #[arg(long, value_enum, default_value = "steady")]
    scenario: Scenario,
    /// Nodes in the mesh (at least 3).
    #[arg(long, value_name = "N", default_value_t = 100)]
    nodes: usize,
    /// Probability that a datagram is lost, in [0, 0.5).
    #[arg(long, value_name = "P", default_value_t = 0.01)]
    loss: f64,
    /// Probability that a datagram is delivered twice, in [0, 0.5).
    #[arg(long, value_name = "P", default_value_t = 0.01)]
    duplicate: f64,
    /// One-way latency of each link, drawn in MIN..MAX ms (1 <= MIN <= MAX).
    #[arg(long, value_name = "MIN..MAX", default_value = "1..10")]
    latency_ms: LatencyMs,
    /// Largest clock skew of a node, in ms either way.
    #[arg(long, value_name = "N", default_value_t = 50)]
    skew_ms: u64,
    /// Largest time a commit of local writes takes to be durable (fsync), in ms; each
    /// commit's is drawn up to it. 0: at once.
    #[arg(long, value_name = "N", default_value_t = 0)]
    disk_ms: u64,
    /// Writes the scenario makes.
    #[arg(long, value_name = "N", default_value_t = 200)]
    writes: usize,
    /// Time between two writes, in ms.
    #[arg(long, value_name = "N", default_value_t = 20)]
    write_interval_ms: u64,
    /// Distinct keys the writes touch (at least 1).
    #[arg(long, value_name = "N", default_value_t = 100)]
    keys: usize,
    /// Keys the mesh holds before the new node joins (catchup scenario).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    catchup_keys: usize,
    /// How the cluster starts; auto starts warm above 2,000 nodes, except in the join scenario.
    #[arg(long, value_enum, default_value = "auto")]
    start: StartChoice,
    /// The seed every run derives from.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Also run the memberlist-like baseline with the same seed.
    #[arg(long)]
    baseline: bool,
    /// The nodes' timer preset: `lan` (`Config::lan`) or `wan` (`Config::wan`: 5 s probes,
    /// a suspicion of 30 s or more). With `wan`, running nodes declared down fail the run up to
    /// 10% loss, not 1%.
    #[arg(long, value_enum, default_value = "lan")]
    preset: Preset,
    /// Eager links a node keeps at least (the node's `Config::eager_min`, default 3): the
    /// degree of the push graph, for the copies-against-latency curve.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=16))]
    eager_min: Option<u64>,
    /// SWIM probe period in ms, if not the preset's (`lan`: 500), with a direct round trip of
    /// 3/10 of it (the LAN preset's share): for the curve of probe period and suspicion
    /// timeout against detection and false positives.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(50..=60_000))]
    probe_ms: Option<u64>,
    /// SWIM suspicion timeout in ms (before the node's own stretching while late), if not the
    /// preset's (`lan`: 1,500).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..=600_000))]
    suspect_ms: Option<u64>,
    /// Partition scenario: cut traffic from one half to the other only.
    #[arg(long)]
    one_way: bool,
    /// Run without signed versions, as before Trust I: no writer keys, no endorsements,
    /// unsigned versions applied (the node's default trust, permissive). By default every
    /// node signs its writes and enforces signatures (docs/PROTOCOL.md §7). For comparisons.
    #[arg(long)]
    no_signing: bool,
    /// Chaos scenario: an admin makes a policy (docs/PROTOCOL.md §8) as the writes start, a
    /// root and a grant of `write` over every key to every node, then revokes and grants
    /// again single nodes' writes while the writes and faults go on. Needs signing.
    #[arg(long)]
    policy: bool,
    /// Write the report (JSON) to this file.
    #[arg(long, value_name = "FILE.json")]
    report: Option<String>,
    /// Draw the runs (or the --from reports) into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<String>,
    /// Saved reports to draw with --plot instead of running anything.
    #[arg(
        long = "from",
        value_name = "A.json,B.json",
        value_delimiter = ',',
        requires = "plot"
    )]
    plot_from: Vec<String>,
    /// CI's fixed set: every scenario at small N, seeds 1, 7 and 42 (SIM_SEEDS=N adds N seeds).
    #[arg(long)]
    smoke: bool,
    /// Run each run twice and compare trace hashes.
    #[arg(long)]
    check_replay: bool,
    /// Swarm: N runs from --seed on, each with every parameter (scenario, nodes, loss,
    /// duplication, latency, skew, partition shape, writes, keys) drawn from its seed.
    #[arg(long, value_name = "N", conflicts_with = "smoke")]
    swarm: Option<u64>,
    /// Print no progress lines.
    #[arg(long)]
    quiet: bool,
    /// Log what the mesh believes of this node (its index) as it changes.
    #[arg(long, value_name = "NODE_INDEX")]
    follow: Option<usize>,
}

/// `--preset`: which of the node's configuration presets every node runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// `Config::lan`.
    #[default]
    Lan,
    /// `Config::wan`.
    Wan,
}

impl Preset {
    /// The name `--preset` takes.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Lan => "lan",
            Preset::Wan => "wan",
        }
    }
}

/// `--start`: a start mode, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StartChoice {
    /// One by one through seeds.
    Cold,
    /// All at once with the member list restored.
    Warm,
    /// Warm above 2,000 nodes (except in the join scenario), else cold.
    Auto,
}

/// `--latency-ms MIN..MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LatencyMs {
    min: u64,
    max: u64,
}

impl Cli {
    /// The run these arguments describe.
    ///
    /// # Errors
    ///
    /// A clap error (exit status 2) if the values do not fit together: fewer than 3 nodes, no
    /// keys, a latency range that is empty or starts at 0, a probability outside [0, 0.5), or
    /// a followed node that does not exist.
    pub fn params(self) -> Result<Params, clap::Error> {
        let invalid = |message: String| Cli::command().error(ErrorKind::ValueValidation, message);
        let LatencyMs { min, max } = self.latency_ms;
        if self.nodes < 3 || self.keys == 0 || min > max || min == 0 {
            return Err(invalid(
                "need --nodes >= 3, --keys >= 1, and latency 1 <= MIN <= MAX".into(),
            ));
        }
        if !(0.0..0.5).contains(&self.loss) || !(0.0..0.5).contains(&self.duplicate) {
            return Err(invalid(
                "--loss and --duplicate are probabilities in [0, 0.5)".into(),
            ));
        }
        if self.follow.is_some_and(|f| f >= self.nodes) {
            return Err(invalid(format!(
                "--follow wants a node index below --nodes {}",
                self.nodes
            )));
        }
        let start = match self.start {
            StartChoice::Cold => Start::Cold,
            StartChoice::Warm => Start::Warm,
            StartChoice::Auto
                if self.nodes > WARM_START_ABOVE && self.scenario != Scenario::Join =>
            {
                Start::Warm
            }
            StartChoice::Auto => Start::Cold,
        };
        Ok(Params {
            scenario: self.scenario,
            seed: self.seed,
            nodes: self.nodes,
            loss: self.loss,
            duplicate: self.duplicate,
            latency_ms_min: min,
            latency_ms_max: max,
            skew_ms: self.skew_ms,
            disk_ms: self.disk_ms,
            writes: self.writes,
            write_interval_ms: self.write_interval_ms,
            keys: self.keys,
            catchup_keys: self.catchup_keys,
            start,
            baseline: self.baseline,
            preset: self.preset,
            eager_min: self.eager_min.map(|k| k as usize),
            probe_ms: self.probe_ms,
            suspect_ms: self.suspect_ms,
            one_way: self.one_way,
            signing: !self.no_signing,
            policy: self.policy && !self.no_signing,
            report: self.report,
            plot: self.plot,
            plot_from: self.plot_from,
            smoke: self.smoke,
            swarm: self.swarm,
            check_replay: self.check_replay,
            quiet: self.quiet,
            follow: self.follow,
        })
    }
}

impl FromStr for LatencyMs {
    type Err = String;

    fn from_str(s: &str) -> Result<LatencyMs, String> {
        let (min, max) = s
            .split_once("..")
            .ok_or_else(|| format!("wants MIN..MAX, got {s:?}"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("cannot parse {v:?} as a number of ms"))
        };
        Ok(LatencyMs {
            min: number(min)?,
            max: number(max)?,
        })
    }
}

/// The scenarios the simulator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Random writes from random nodes, then an idle period.
    Steady,
    /// A 50/50 split with writes on both sides, then heal.
    Partition,
    /// Crashes, graceful leaves and restarts while writes continue.
    Churn,
    /// Every node joins at once, then writes.
    Join,
    /// A node joins a mesh that holds many keys.
    Catchup,
    /// Faults drawn from the seed while writes go on: crashes and restarts, pauses,
    /// graceful leaves and returns, partitions of any shape, one-way or two-way; then every
    /// fault ends, and one last crash must be detected.
    Chaos,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Steady,
        Scenario::Partition,
        Scenario::Churn,
        Scenario::Join,
        Scenario::Catchup,
        Scenario::Chaos,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Partition => "partition",
            Scenario::Churn => "churn",
            Scenario::Join => "join",
            Scenario::Catchup => "catchup",
            Scenario::Chaos => "chaos",
        }
    }
}

/// How a cluster starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Nodes join one by one through seeds; membership spreads by gossip and push-pull.
    Cold,
    /// Every node starts at once with the full member list restored (as after a restart
    /// with a saved list), then joins through seeds. Skips the join storm, whose cost in
    /// one process grows as N³ (foca finds members by linear scan).
    Warm,
}

impl Start {
    pub fn name(self) -> &'static str {
        match self {
            Start::Cold => "cold",
            Start::Warm => "warm",
        }
    }
}

/// Above this many nodes `--start auto` (the default) starts warm, except in the `join`
/// scenario, whose point is the cold join.
pub const WARM_START_ABOVE: usize = 2_000;

/// The parameters of one run, checked: from [`Cli::params`], or derived from them by `--smoke`.
#[derive(Clone, Debug)]
pub struct Params {
    pub scenario: Scenario,
    pub seed: u64,
    pub nodes: usize,
    pub loss: f64,
    pub duplicate: f64,
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    pub skew_ms: u64,
    /// The largest fsync latency of a commit of local writes, in ms (0: instant).
    pub disk_ms: u64,
    pub writes: usize,
    pub write_interval_ms: u64,
    pub keys: usize,
    pub catchup_keys: usize,
    pub start: Start,
    pub baseline: bool,
    /// The nodes' configuration preset.
    pub preset: Preset,
    /// `--eager-min`: the push graph's degree, if not the node's default.
    pub eager_min: Option<usize>,
    /// `--probe-ms`: the SWIM probe period, if not the preset's.
    pub probe_ms: Option<u64>,
    /// `--suspect-ms`: the SWIM suspicion timeout, if not the preset's.
    pub suspect_ms: Option<u64>,
    pub one_way: bool,
    /// Every node signs its writes and enforces signatures (not `--no-signing`).
    pub signing: bool,
    /// `--policy`: policy changes under the chaos scenario's writes and faults.
    pub policy: bool,
    pub report: Option<String>,
    /// Draw the runs (or the `--from` reports) into this SVG file.
    pub plot: Option<String>,
    /// Saved reports to draw instead of running anything.
    pub plot_from: Vec<String>,
    pub smoke: bool,
    /// `--swarm N`: runs with parameters drawn from their seeds.
    pub swarm: Option<u64>,
    pub check_replay: bool,
    pub quiet: bool,
    /// Log what the mesh believes of this node (its index) as it changes.
    pub follow: Option<usize>,
}

impl Params {
    /// Every parameter as (flag name, value), in the order printed; the single source of
    /// both the summary line and the replay command.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("seed", self.seed.to_string()),
            ("scenario", self.scenario.name().to_string()),
            ("nodes", self.nodes.to_string()),
            ("loss", self.loss.to_string()),
            ("duplicate", self.duplicate.to_string()),
            (
                "latency-ms",
                format!("{}..{}", self.latency_ms_min, self.latency_ms_max),
            ),
            ("skew-ms", self.skew_ms.to_string()),
            ("disk-ms", self.disk_ms.to_string()),
            ("writes", self.writes.to_string()),
            ("write-interval-ms", self.write_interval_ms.to_string()),
            ("keys", self.keys.to_string()),
            ("start", self.start.name().to_string()),
        ];
        if self.scenario == Scenario::Catchup {
            fields.push(("catchup-keys", self.catchup_keys.to_string()));
        }
        if self.preset != Preset::Lan {
            fields.push(("preset", self.preset.name().to_string()));
        }
        if let Some(k) = self.eager_min {
            fields.push(("eager-min", k.to_string()));
        }
        if let Some(ms) = self.probe_ms {
            fields.push(("probe-ms", ms.to_string()));
        }
        if let Some(ms) = self.suspect_ms {
            fields.push(("suspect-ms", ms.to_string()));
        }
        fields
    }

    /// The command that replays this run.
    pub fn command(&self) -> String {
        let mut command = String::from("cargo run -p confmesh-sim --release --");
        for (name, value) in self.fields() {
            command += &format!(" --{name} {value}");
        }
        for (on, flag) in [
            (self.baseline, " --baseline"),
            (self.one_way, " --one-way"),
            (!self.signing, " --no-signing"),
            (self.policy, " --policy"),
        ] {
            if on {
                command += flag;
            }
        }
        command
    }
}

impl Params {
    /// A swarm run: every parameter that shapes the run drawn from `seed` (the report and
    /// output options kept from `base`). The draw is from its own generator, so the run's
    /// own randomness (from the same seed) is the same as a run given these flags by hand:
    /// [`Params::command`] replays it.
    pub fn swarm(base: &Params, seed: u64) -> Params {
        use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5A4A_12D0_0000_0000);
        // Half the runs are chaos, whose faults are drawn during the run from the same seed.
        let scenario = if rng.random_bool(0.5) {
            Scenario::Chaos
        } else {
            Scenario::ALL[rng.random_range(0..5usize)]
        };
        let nodes = if scenario == Scenario::Catchup {
            rng.random_range(3..=8)
        } else {
            rng.random_range(3..=64)
        };
        // Probabilities with three decimals, so that the replay command carries them exactly.
        let mut probability = |max: f64| (rng.random_range(0.0..max) * 1000.0).floor() / 1000.0;
        let loss = probability(0.10);
        let duplicate = probability(0.05);
        let latency_ms_min = rng.random_range(1..=20);
        let latency_ms_max = latency_ms_min + rng.random_range(0..=150);
        Params {
            scenario,
            seed,
            nodes,
            loss,
            duplicate,
            latency_ms_min,
            latency_ms_max,
            skew_ms: rng.random_range(0..=500),
            disk_ms: rng.random_range(0..=20),
            writes: rng.random_range(10..=150),
            write_interval_ms: rng.random_range(5..=100),
            keys: rng.random_range(1..=50),
            catchup_keys: rng.random_range(100..=2_000),
            start: Start::Cold,
            one_way: scenario == Scenario::Partition && rng.random_bool(0.5),
            preset: wan_preset(seed, scenario),
            policy: base.policy && with_policy(seed, scenario),
            baseline: false,
            smoke: false,
            swarm: None,
            quiet: true,
            follow: None,
            ..base.clone()
        }
    }
}

/// Whether a swarm run uses the WAN preset: a quarter of the runs of the scenarios that wait
/// for no failure to be detected (steady, partition, join, catchup; a WAN suspicion lasts 30 s
/// and more, beyond churn's and chaos's deadlines). Drawn from a generator of its own, so the
/// other parameters of every swarm seed stay what they were before the preset was drawn.
fn wan_preset(seed: u64, scenario: Scenario) -> Preset {
    use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x0057_414E_0000_0000);
    let waits_for_no_detection = !matches!(scenario, Scenario::Churn | Scenario::Chaos);
    if waits_for_no_detection && rng.random_bool(0.25) {
        Preset::Wan
    } else {
        Preset::Lan
    }
}

/// Whether a swarm run given `--policy` makes policy changes: half of its chaos runs. Drawn
/// from a generator of its own, so the other parameters of every swarm seed stay what they
/// were before.
fn with_policy(seed: u64, scenario: Scenario) -> bool {
    use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x0050_4F4C_0000_0000);
    scenario == Scenario::Chaos && rng.random_bool(0.5)
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<String> = self
            .fields()
            .into_iter()
            .map(|(name, value)| format!("{}={value}", name.replace('-', "_")))
            .collect();
        write!(f, "{}", fields.join(" "))?;
        if self.one_way {
            write!(f, " one_way=true")?;
        }
        if !self.signing {
            write!(f, " signing=false")?;
        }
        if self.policy {
            write!(f, " policy=true")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
