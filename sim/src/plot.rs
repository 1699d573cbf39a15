//! SVG charts (plotters): convergence CDFs and traffic against cluster size.
//!
//! Self-contained (it depends on plotters and std only) because two programs draw with it:
//! `confmesh-sim --plot` and the convergence bench, which includes this file by path.

#![allow(
    dead_code,
    reason = "two programs include this file; each uses part of it"
)]

use plotters::{
    coord::Shift,
    prelude::*,
    style::full_palette::{BLUE_700, GREEN_700, ORANGE_700, PURPLE_700, RED_700},
};

/// How a series' line is drawn: the system is told apart by dash, the size by colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dash {
    /// confmesh.
    Solid,
    /// The comparison system.
    Dashed,
    /// The comparison system, second configuration.
    Dotted,
}

/// One line on a chart.
#[derive(Clone, Debug)]
pub struct Series {
    /// The legend entry.
    pub label: String,
    /// (x, y) points in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Index into the palette.
    pub colour: usize,
    /// Line style.
    pub dash: Dash,
}

/// One chart: the x axis is logarithmic; the y axis is a share in [0, 1] unless `log_y`.
#[derive(Clone, Debug)]
pub struct Panel {
    /// The caption.
    pub title: String,
    /// The x axis's description.
    pub x_desc: String,
    /// The y axis's description.
    pub y_desc: String,
    /// A logarithmic y axis (traffic) instead of a share.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const PALETTE: [RGBColor; 5] = [BLUE_700, RED_700, GREEN_700, ORANGE_700, PURPLE_700];

/// The points of an empirical CDF of `values` (any order): the share of values at or below
/// each x, as a staircase, thinned to about 400 points.
pub fn cdf_points(values: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let step = n.div_ceil(400).max(1);
    let mut points = Vec::new();
    for (i, &v) in sorted.iter().enumerate() {
        if i % step == 0 || i + 1 == n {
            points.push((v, (i + 1) as f64 / n as f64));
        }
    }
    points
}

/// Writes `panels` side by side into the SVG file `path`.
pub fn draw(path: &str, panels: &[Panel]) -> Result<(), String> {
    let width = 720 * panels.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(&areas) {
        draw_panel(panel, area).map_err(|e| format!("{}: {e}", panel.title))?;
    }
    root.present().map_err(|e| format!("{path}: {e}"))
}

fn draw_panel(panel: &Panel, area: &DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    let xs = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1));
    let (x_lo, x_hi) = log_range(xs);
    let mut chart = ChartBuilder::on(area);
    chart
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if panel.log_y {
        let (y_lo, y_hi) = log_range(ys);
        let mut chart = chart
            .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(&panel.x_desc)
            .y_desc(&panel.y_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(e)?;
        for s in &panel.series {
            draw_series(&mut chart, s)?;
            // Few points (one per cluster size): mark each.
            let colour = PALETTE[s.colour % PALETTE.len()];
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
                .map_err(e)?;
        }
        legend(&mut chart)?;
    } else {
        let mut chart = chart
            .build_cartesian_2d((x_lo..x_hi).log_scale(), 0f64..1.02f64)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(&panel.x_desc)
            .y_desc(&panel.y_desc)
            .x_label_formatter(&|v| format!("{v}"))
            .draw()
            .map_err(e)?;
        for s in &panel.series {
            draw_series(&mut chart, s)?;
        }
        legend(&mut chart)?;
    }
    Ok(())
}

/// A range for a logarithmic axis that holds every positive value, widened to whole decades.
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (1.0, 10.0);
    }
    (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)),
    )
}

fn draw_series<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    s: &Series,
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let colour = PALETTE[s.colour % PALETTE.len()];
    let style = colour.stroke_width(2);
    let points = s.points.iter().copied().filter(|p| p.0 > 0.0 && p.1 > 0.0);
    let annotation = match s.dash {
        Dash::Solid => chart.draw_series(LineSeries::new(points, style)),
        Dash::Dashed => chart.draw_series(DashedLineSeries::new(points, 8, 5, style)),
        Dash::Dotted => chart.draw_series(DashedLineSeries::new(points, 2, 4, style)),
    }
    .map_err(|e| e.to_string())?;
    let dash = s.dash;
    annotation.label(&s.label).legend(move |(x, y)| {
        let end = match dash {
            Dash::Solid => 24,
            Dash::Dashed => 14,
            Dash::Dotted => 6,
        };
        PathElement::new(vec![(x, y), (x + end, y)], colour.stroke_width(2))
    });
    Ok(())
}

fn legend<'a, DB, X, Y>(chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}
