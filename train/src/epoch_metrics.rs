//! After training: every epoch's metrics from the Learner's logs gathered into `metrics.csv`,
//! and the per-exit validation accuracy per epoch drawn as `accuracy.svg`.

use std::collections::BTreeMap;
use std::path::Path;

/// `(split, epoch, metric) → batch-size-weighted mean`, read from the Learner's
/// `<artifacts>/<split>/epoch-<n>/<metric>.log` files (`value,batch size` per line).
pub fn read_epoch_metrics(artifacts: &Path) -> BTreeMap<(String, usize, String), f64> {
    let mut out = BTreeMap::new();
    for split in ["train", "valid"] {
        let Ok(epochs) = std::fs::read_dir(artifacts.join(split)) else {
            continue;
        };
        for e in epochs.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(epoch) = name.strip_prefix("epoch-").and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(files) = std::fs::read_dir(e.path()) else {
                continue;
            };
            for f in files.filter_map(|f| f.ok()) {
                let file = f.file_name().to_string_lossy().to_string();
                let Some(metric) = file.strip_suffix(".log") else {
                    continue;
                };
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                let (mut sum, mut n) = (0.0, 0.0);
                for line in text.lines() {
                    let mut parts = line.split(',');
                    let v: Option<f64> = parts.next().and_then(|v| v.trim().parse().ok());
                    let c: f64 = parts
                        .next()
                        .and_then(|c| c.trim().parse().ok())
                        .unwrap_or(1.0);
                    if let Some(v) = v {
                        sum += v * c;
                        n += c;
                    }
                }
                if n > 0.0 {
                    out.insert(
                        (split.to_string(), epoch, metric.replace('_', " ")),
                        sum / n,
                    );
                }
            }
        }
    }
    out
}

/// Writes `metrics.csv` and `accuracy.svg` into `out` from the logs under `artifacts`.
pub fn write_epoch_metrics(artifacts: &Path, out: &Path) -> std::io::Result<()> {
    let metrics = read_epoch_metrics(artifacts);
    let mut csv = String::from("split,epoch,metric,value\n");
    for ((split, epoch, metric), v) in &metrics {
        csv.push_str(&format!("{split},{epoch},{metric},{v:.6}\n"));
    }
    std::fs::write(out.join("metrics.csv"), csv)?;
    #[cfg(feature = "plot")]
    std::fs::write(out.join("accuracy.svg"), accuracy_plot(&metrics)?)?;
    Ok(())
}

/// The per-exit validation accuracy per epoch, as an SVG document.
#[cfg(feature = "plot")]
fn accuracy_plot(metrics: &BTreeMap<(String, usize, String), f64>) -> std::io::Result<String> {
    use plotters::prelude::*;
    let mut series: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for ((split, epoch, metric), v) in metrics {
        if split == "valid" && metric.starts_with("Accuracy") {
            series
                .entry(metric.as_str())
                .or_default()
                .push((*epoch as f64, *v));
        }
    }
    let epochs = metrics.keys().map(|k| k.1).max().unwrap_or(1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(std::io::Error::other)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Validation accuracy per exit", ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(1.0..epochs.max(2.0), 0.0..100.0)
            .map_err(std::io::Error::other)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("accuracy (%)")
            .draw()
            .map_err(std::io::Error::other)?;
        let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
        for (i, (name, points)) in series.into_iter().enumerate() {
            let colour = colours[i % colours.len()];
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(std::io::Error::other)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(std::io::Error::other)?;
        root.present().map_err(std::io::Error::other)?;
    }
    Ok(svg)
}
