//! `docs/bench/drain.svg`: drain time against burst size for order-expire with each worker
//! count, the database floor, Redis's emission and the PHP command, on a log scale (the PHP
//! command is two orders of magnitude above the rest).

use std::path::Path;

use plotters::prelude::*;

use crate::results::Results;

type Points = Vec<(f64, f64)>;

fn point(size: usize, ms: Option<u64>) -> Option<(f64, f64)> {
    Some((size as f64 / 1000.0, ms? as f64 / 1000.0))
}

/// The series to draw: name, colour, dashed, points (thousands of orders, seconds).
fn series(r: &Results) -> Vec<(String, RGBColor, bool, Points)> {
    let sizes = &r.options.sizes;
    let mut out = Vec::new();
    let worker_colours = [BLUE, RGBColor(0, 150, 200), RGBColor(120, 0, 200)];
    for (i, w) in r.options.workers.iter().enumerate() {
        out.push((
            format!("order-expire, {w} worker{}", if *w == 1 { "" } else { "s" }),
            worker_colours[i % worker_colours.len()],
            false,
            sizes
                .iter()
                .filter_map(|s| point(*s, r.ours(*s, *w)?.drain_ms))
                .collect(),
        ));
    }
    out.push((
        "database floor (same transactions, ids known)".into(),
        RGBColor(0, 140, 0),
        true,
        sizes
            .iter()
            .filter_map(|s| point(*s, r.floor(*s)?.drain_ms))
            .collect(),
    ));
    out.push((
        "Redis emission (last expired event)".into(),
        BLACK,
        true,
        sizes
            .iter()
            .filter_map(|s| point(*s, r.ours(*s, 1)?.emission_ms))
            .collect(),
    ));
    out.push((
        "PHP order:expire".into(),
        RED,
        false,
        r.php
            .iter()
            .filter_map(|p| point(p.size, p.drain_ms))
            .collect(),
    ));
    out
}

pub fn draw(path: &Path, r: &Results) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let lines = series(r);
    let all = || lines.iter().flat_map(|(_, _, _, p)| p.iter());
    let max_x = all().map(|p| p.0).fold(1.0, f64::max);
    let max_y = all().map(|p| p.1).fold(0.1, f64::max);
    let min_y = all().map(|p| p.1).fold(max_y, f64::min).max(0.01);
    let mut c = ChartBuilder::on(&root)
        .caption("Drain time of a same-instant burst", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x * 1.05, (min_y * 0.7..max_y * 1.5).log_scale())?;
    c.configure_mesh()
        .x_desc("orders expiring at the same instant (thousands)")
        .y_desc("seconds after the deadline (log)")
        .draw()?;
    for (name, colour, dashed, points) in lines {
        if points.is_empty() {
            continue;
        }
        let style = colour.stroke_width(2);
        if dashed {
            c.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))?
        } else {
            c.draw_series(LineSeries::new(points.clone(), style))?
        }
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        c.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, colour.filled())),
        )?;
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present()?;
    Ok(())
}
