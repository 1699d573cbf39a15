//! `--plot FILE.svg`: the convergence CDF of one or more runs (confmesh solid, the baseline
//! dashed, one colour per cluster size) beside idle and loaded traffic per node against N.
//! The runs are the one just made, or saved reports (`--from A.json,B.json`).

use serde::Deserialize;

use crate::plot::{self, Dash, Panel, Series};

/// The parts of a saved report (`--report`) a picture needs.
#[derive(Debug, Deserialize)]
pub struct PlotInput {
    scenario: String,
    mode: String,
    nodes: usize,
    #[serde(default)]
    delivery_percentiles_ms: Option<Vec<f64>>,
    #[serde(default)]
    idle_bytes_per_node_per_s: Option<f64>,
    #[serde(default)]
    loaded_bytes_per_node_per_s: Option<f64>,
    #[serde(default)]
    baseline: Option<Box<PlotInput>>,
}

impl PlotInput {
    /// The runs in a report file: one report or an array of them (`--smoke`).
    pub fn read(path: &str) -> Result<Vec<PlotInput>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        serde_json::from_str::<Vec<PlotInput>>(&text)
            .or_else(|_| serde_json::from_str::<PlotInput>(&text).map(|r| vec![r]))
            .map_err(|e| format!("{path}: not a confmesh-sim report: {e}"))
    }

    /// A report made by this run, through its JSON form.
    pub fn of<T: serde::Serialize>(report: &T) -> Result<PlotInput, String> {
        serde_json::to_value(report)
            .and_then(serde_json::from_value)
            .map_err(|e| e.to_string())
    }
}

/// Draws `runs` (each with its baseline, if it has one) into `path`.
pub fn draw(path: &str, mut runs: Vec<PlotInput>) -> Result<(), String> {
    runs.sort_by_key(|r| r.nodes);
    let mut cdf = Vec::new();
    let line = |label: &str, colour, dash| Series {
        label: label.into(),
        points: Vec::new(),
        colour,
        dash,
    };
    let mut traffic = [
        line("confmesh idle", 0, Dash::Solid),
        line("confmesh loaded", 1, Dash::Solid),
        line("baseline idle", 0, Dash::Dashed),
        line("baseline loaded", 1, Dash::Dashed),
    ];
    for (colour, run) in runs.iter().enumerate() {
        let modes = std::iter::once((run, Dash::Solid, 0))
            .chain(run.baseline.as_deref().map(|b| (b, Dash::Dashed, 2)));
        for (report, dash, slot) in modes {
            if let Some(q) = &report.delivery_percentiles_ms {
                cdf.push(Series {
                    label: format!("{} N={}", report.mode, report.nodes),
                    points: q
                        .iter()
                        .enumerate()
                        .map(|(i, &ms)| (ms.max(0.1), i as f64 / 100.0))
                        .collect(),
                    colour,
                    dash,
                });
            }
            let n = report.nodes as f64;
            if let Some(b) = report.idle_bytes_per_node_per_s {
                traffic[slot].points.push((n, b));
            }
            if let Some(b) = report.loaded_bytes_per_node_per_s {
                traffic[slot + 1].points.push((n, b));
            }
        }
    }
    if cdf.is_empty() {
        return Err("no run in the input has convergence data to draw".into());
    }
    let scenario = runs.first().map_or("", |r| r.scenario.as_str());
    let panels = [
        Panel {
            title: format!("{scenario}: share of nodes holding a write"),
            x_desc: "ms since the write (log)".into(),
            y_desc: "share of (write, node) deliveries".into(),
            log_y: false,
            series: cdf,
        },
        Panel {
            title: format!("{scenario}: traffic per node"),
            x_desc: "nodes (log)".into(),
            y_desc: "bytes per node per second (log)".into(),
            log_y: true,
            series: traffic
                .into_iter()
                .filter(|t| !t.points.is_empty())
                .collect(),
        },
    ];
    plot::draw(path, &panels)
}
