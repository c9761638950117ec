use plotters::prelude::*;

use crate::EvalReport;

/// Accuracy (%) against cost (% of the backbone's MACs), one curve per model, each model's
/// full-depth point marked: an SVG document.
pub fn plot_curves(reports: &[EvalReport]) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        root.fill(&WHITE).expect("svg");
        let points = |r: &EvalReport| -> Vec<(f64, f64)> {
            let mut v: Vec<(f64, f64)> = r
                .curve
                .iter()
                .chain(std::iter::once(&r.full_depth))
                .map(|p| (100.0 * p.cost_fraction, 100.0 * p.accuracy))
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v
        };
        let all: Vec<(f64, f64)> = reports.iter().flat_map(points).collect();
        let (x_max, y_min, y_max) = all
            .iter()
            .fold((10.0f64, 100.0f64, 0.0f64), |(x, lo, hi), p| {
                (x.max(p.0), lo.min(p.1), hi.max(p.1))
            });
        let y_lo = (y_min - 2.0).max(0.0).floor();
        let y_hi = (y_max + 2.0).min(100.0).ceil();
        let mut chart = ChartBuilder::on(&root)
            .caption("Early exit: accuracy vs compute", ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..(x_max * 1.05), y_lo..y_hi.max(y_lo + 1.0))
            .expect("svg");
        chart
            .configure_mesh()
            .x_desc("mean cost (% of backbone MACs)")
            .y_desc("top-1 accuracy (%)")
            .draw()
            .expect("svg");
        let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
        for (i, r) in reports.iter().enumerate() {
            let colour = colours[i % colours.len()];
            let pts = points(r);
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
                .expect("svg")
                .label(r.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
                .expect("svg");
            let full = &r.full_depth;
            chart
                .draw_series(std::iter::once(TriangleMarker::new(
                    (100.0 * full.cost_fraction, 100.0 * full.accuracy),
                    7,
                    colour.filled(),
                )))
                .expect("svg");
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .expect("svg");
        root.present().expect("svg");
    }
    svg
}
