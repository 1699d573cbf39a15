//! What a run simulates, parsed from the command line. Every field is printed before a run.

use std::fmt;

/// The scenarios the simulator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Steady,
        Scenario::Partition,
        Scenario::Churn,
        Scenario::Join,
        Scenario::Catchup,
    ];

    fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|sc| sc.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Partition => "partition",
            Scenario::Churn => "churn",
            Scenario::Join => "join",
            Scenario::Catchup => "catchup",
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
    pub writes: usize,
    pub write_interval_ms: u64,
    pub keys: usize,
    pub catchup_keys: usize,
    pub start: Start,
    pub baseline: bool,
    pub one_way: bool,
    pub report: Option<String>,
    /// Draw the runs (or the `--from` reports) into this SVG file.
    pub plot: Option<String>,
    /// Saved reports to draw instead of running anything.
    pub plot_from: Vec<String>,
    pub smoke: bool,
    pub check_replay: bool,
    pub quiet: bool,
    /// Log what the mesh believes of this node (its index) as it changes.
    pub follow: Option<usize>,
}

impl Params {
    pub const USAGE: &'static str = "usage: confmesh-sim [--scenario steady|partition|churn|join|catchup] [--nodes N] \
[--loss P] [--duplicate P] [--latency-ms MIN..MAX] [--skew-ms N] [--writes N] [--write-interval-ms N] [--keys N] \
[--catchup-keys N] [--start cold|warm|auto] [--seed N] [--baseline] [--one-way] [--report FILE.json] [--plot FILE.svg [--from A.json,B.json]] [--smoke] [--check-replay] [--quiet] [--follow NODE_INDEX]";

    pub fn parse(args: &[String]) -> Result<Params, String> {
        let mut start = None;
        let mut p = Params {
            scenario: Scenario::Steady,
            seed: 1,
            nodes: 100,
            loss: 0.01,
            duplicate: 0.01,
            latency_ms_min: 1,
            latency_ms_max: 10,
            skew_ms: 50,
            writes: 200,
            write_interval_ms: 20,
            keys: 100,
            catchup_keys: 100_000,
            start: Start::Cold,
            baseline: false,
            one_way: false,
            report: None,
            plot: None,
            plot_from: Vec::new(),
            smoke: false,
            check_replay: false,
            quiet: false,
            follow: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .map(String::as_str)
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--scenario" => {
                    let v = value()?;
                    p.scenario =
                        Scenario::parse(v).ok_or_else(|| format!("unknown scenario {v:?}"))?;
                }
                "--seed" => p.seed = number(flag, value()?)?,
                "--nodes" => p.nodes = number(flag, value()?)?,
                "--loss" => p.loss = number(flag, value()?)?,
                "--duplicate" => p.duplicate = number(flag, value()?)?,
                "--skew-ms" => p.skew_ms = number(flag, value()?)?,
                "--writes" => p.writes = number(flag, value()?)?,
                "--write-interval-ms" => p.write_interval_ms = number(flag, value()?)?,
                "--keys" => p.keys = number(flag, value()?)?,
                "--catchup-keys" => p.catchup_keys = number(flag, value()?)?,
                "--latency-ms" => {
                    let v = value()?;
                    let (lo, hi) = v
                        .split_once("..")
                        .ok_or_else(|| format!("--latency-ms wants MIN..MAX, got {v:?}"))?;
                    (p.latency_ms_min, p.latency_ms_max) = (number(flag, lo)?, number(flag, hi)?);
                }
                "--start" => {
                    start = match value()? {
                        "cold" => Some(Start::Cold),
                        "warm" => Some(Start::Warm),
                        "auto" => None,
                        v => return Err(format!("--start wants cold, warm or auto, got {v:?}")),
                    }
                }
                "--report" => p.report = Some(value()?.to_string()),
                "--plot" => p.plot = Some(value()?.to_string()),
                "--from" => p.plot_from.extend(value()?.split(',').map(str::to_string)),
                "--baseline" => p.baseline = true,
                "--one-way" => p.one_way = true,
                "--smoke" => p.smoke = true,
                "--check-replay" => p.check_replay = true,
                "--quiet" => p.quiet = true,
                "--follow" => p.follow = Some(number(flag, value()?)?),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        p.start = start.unwrap_or(
            if p.nodes > WARM_START_ABOVE && p.scenario != Scenario::Join {
                Start::Warm
            } else {
                Start::Cold
            },
        );
        if !p.plot_from.is_empty() && p.plot.is_none() {
            return Err("--from names reports to draw; it needs --plot FILE.svg".into());
        }
        if p.nodes < 3
            || p.keys == 0
            || p.latency_ms_min > p.latency_ms_max
            || p.latency_ms_min == 0
        {
            return Err("need --nodes >= 3, --keys >= 1, and latency 1 <= MIN <= MAX".into());
        }
        if !(0.0..0.5).contains(&p.loss) || !(0.0..0.5).contains(&p.duplicate) {
            return Err("--loss and --duplicate are probabilities in [0, 0.5)".into());
        }
        if p.follow.is_some_and(|f| f >= p.nodes) {
            return Err(format!(
                "--follow wants a node index below --nodes {}",
                p.nodes
            ));
        }
        Ok(p)
    }

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
            ("writes", self.writes.to_string()),
            ("write-interval-ms", self.write_interval_ms.to_string()),
            ("keys", self.keys.to_string()),
            ("start", self.start.name().to_string()),
        ];
        if self.scenario == Scenario::Catchup {
            fields.push(("catchup-keys", self.catchup_keys.to_string()));
        }
        fields
    }

    /// The command that replays this run.
    pub fn command(&self) -> String {
        let mut command = String::from("cargo run -p confmesh-sim --release --");
        for (name, value) in self.fields() {
            command += &format!(" --{name} {value}");
        }
        for (on, flag) in [(self.baseline, " --baseline"), (self.one_way, " --one-way")] {
            if on {
                command += flag;
            }
        }
        command
    }
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
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
        Ok(())
    }
}
