//! SVG charts for the benchmark reports, drawn with `plotters` (SVG backend only: no font or image
//! libraries are needed, the viewer renders the text).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Draws one group of bars per `(label, values)` entry, one bar per series (`series[i]` names the `i`-th
/// value of every group), with a legend and `y_label` on the vertical axis, into the SVG file at `path`.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[&str],
    groups: &[(String, Vec<f64>)],
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("chart {}: {e}", path.display());
    let width = (160 + groups.len() * (20 * series.len()).max(110)).clamp(900, 1800) as u32;
    let root = SVGBackend::new(path, (width, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let top = groups
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.25;
    let n = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n, 0f64..top)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_label)
        .draw()
        .map_err(|e| fail(&e))?;
    let slot = 0.8 / series.len().max(1) as f64;
    for (k, name) in series.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let bars = groups.iter().enumerate().map(move |(g, (_, values))| {
            let x0 = g as f64 + 0.1 + k as f64 * slot;
            let y = values.get(k).copied().unwrap_or(0.0);
            Rectangle::new([(x0, 0.0), (x0 + slot * 0.9, y)], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(|e| fail(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        let labels = groups.iter().enumerate().map(move |(g, (_, values))| {
            let x = g as f64 + 0.1 + (k as f64 + 0.45) * slot;
            let y = values.get(k).copied().unwrap_or(0.0);
            Text::new(
                format!("{y:.1}"),
                (x, y),
                ("sans-serif", 10)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        });
        chart.draw_series(labels).map_err(|e| fail(&e))?;
    }
    let names = groups.iter().enumerate().map(|(g, (label, _))| {
        Text::new(
            label.clone(),
            (g as f64 + 0.5, -top * 0.005),
            ("sans-serif", 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        )
    });
    chart.draw_series(names).map_err(|e| fail(&e))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}
