//! The two plots, written as SVG by hand (a few hundred bytes of markup each; no plotting
//! dependency): latency by percentile, HdrHistogram-style, with the percentile axis stretched
//! as 1/(1-p) so that the tail gets the room; and throughput over the measured phase.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::hgrm::TICKS_PER_HALF_DISTANCE;
use crate::report::Timeline;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 450.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// Line colours, one per series.
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// The furthest percentile the latency plot shows: 99.999% (x = 5 nines).
const MAX_NINES: f64 = 5.0;

/// A round step for about five ticks up to `max`: 1, 2 or 5 times a power of ten.
pub fn tick_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let rough = max / 5.0;
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * power)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The plot area and its scales.
struct Frame {
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn x(&self, value: f64) -> f64 {
        LEFT + (value / self.x_max).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, value: f64) -> f64 {
        HEIGHT - BOTTOM - (value / self.y_max).clamp(0.0, 1.0) * (HEIGHT - TOP - BOTTOM)
    }

    /// The frame, title, axis labels, the y grid, and the x ticks given as (value, label).
    fn axes(
        &self,
        out: &mut String,
        title: &str,
        x_label: &str,
        y_label: &str,
        x_ticks: &[(f64, String)],
    ) {
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
            WIDTH / 2.0,
            escape(title)
        );
        let step = tick_step(self.y_max);
        let mut value = 0.0;
        while value <= self.y_max * 1.0001 {
            let y = self.y(value);
            let _ = writeln!(
                out,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                format_tick(value, step)
            );
            value += step;
        }
        for (value, label) in x_ticks {
            let x = self.x(*value);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                HEIGHT - BOTTOM,
                HEIGHT - BOTTOM + 16.0,
                escape(label)
            );
        }
        let _ = writeln!(
            out,
            "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#333\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
             <text x=\"16\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {:.1})\">{}</text>",
            WIDTH - LEFT - RIGHT,
            HEIGHT - TOP - BOTTOM,
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
            HEIGHT - 10.0,
            escape(x_label),
            TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
            TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
            escape(y_label)
        );
    }

    fn polyline(&self, out: &mut String, points: &[(f64, f64)], colour: &str) {
        let mut path = String::new();
        for (x, y) in points {
            let _ = write!(path, "{:.1},{:.1} ", self.x(*x), self.y(*y));
        }
        let _ = writeln!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            path.trim_end()
        );
    }

    fn legend(&self, out: &mut String, names: &[String]) {
        for (i, name) in names.iter().enumerate() {
            let y = TOP + 16.0 + 16.0 * i as f64;
            let colour = COLOURS[i % COLOURS.len()];
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" stroke-width=\"3\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                LEFT + 10.0,
                LEFT + 30.0,
                LEFT + 36.0,
                y + 4.0,
                escape(name)
            );
        }
    }
}

fn format_tick(value: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{value:.0}")
    } else {
        let decimals = (-step.log10()).ceil() as usize;
        format!("{value:.decimals$}")
    }
}

/// Where a percentile sits on the latency plot's x axis: the number of nines, log10(1/(1-q)).
pub fn nines(quantile: f64) -> f64 {
    if quantile >= 1.0 {
        return MAX_NINES;
    }
    (1.0 / (1.0 - quantile)).log10().min(MAX_NINES)
}

/// The points of one latency curve: (nines, milliseconds) at HdrHistogram's percentile ticks,
/// ending with the maximum at the furthest percentile the count supports.
pub fn latency_points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    // With n values, percentiles past 1 - 1/n say nothing new: the curve ends at the max there.
    let end = (histogram.len() as f64).log10().clamp(1.0, MAX_NINES);
    let mut points: Vec<(f64, f64)> = histogram
        .iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|v| {
            (
                nines(v.quantile_iterated_to()),
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .filter(|(x, _)| *x < end)
        .collect();
    points.push((end, histogram.max() as f64 / 1000.0));
    points
}

/// Latency by percentile: one curve per (name, histogram in µs).
pub fn latency_plot(title: &str, series: &[(String, &Histogram<u64>)]) -> String {
    let curves: Vec<Vec<(f64, f64)>> = series.iter().map(|(_, h)| latency_points(h)).collect();
    let x_max = curves
        .iter()
        .flat_map(|c| c.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        .ceil();
    let y_top = curves
        .iter()
        .flat_map(|c| c.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let step = tick_step(y_top);
    let frame = Frame {
        x_max,
        y_max: ((y_top / step).ceil() * step).max(step),
    };
    let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
    let x_ticks: Vec<(f64, String)> = (0..=x_max as usize)
        .map(|i| (i as f64, labels[i.min(labels.len() - 1)].to_string()))
        .collect();
    let mut out = String::new();
    frame.axes(&mut out, title, "percentile", "latency (ms)", &x_ticks);
    for (i, curve) in curves.iter().enumerate() {
        frame.polyline(&mut out, curve, COLOURS[i % COLOURS.len()]);
    }
    let names: Vec<String> = series.iter().map(|(name, _)| name.clone()).collect();
    frame.legend(&mut out, &names);
    out.push_str("</svg>\n");
    out
}

/// Throughput over the measured phase (and failures, when there were any), per interval.
pub fn throughput_plot(title: &str, timeline: &Timeline) -> String {
    let interval_secs = timeline.interval_ms.max(1) as f64 / 1000.0;
    let rate = |counts: &[u64]| -> Vec<(f64, f64)> {
        counts
            .iter()
            .enumerate()
            .map(|(i, n)| ((i as f64 + 0.5) * interval_secs, *n as f64 / interval_secs))
            .collect()
    };
    let ops = rate(&timeline.ops);
    let errors = rate(&timeline.errors);
    let x_top = timeline.ops.len().max(1) as f64 * interval_secs;
    let y_top = ops
        .iter()
        .chain(&errors)
        .map(|p| p.1)
        .fold(0.0f64, f64::max);
    let y_step = tick_step(y_top);
    let x_step = tick_step(x_top);
    let frame = Frame {
        x_max: x_top,
        y_max: ((y_top / y_step).ceil() * y_step).max(y_step),
    };
    let x_ticks: Vec<(f64, String)> = (0..)
        .map(|i| i as f64 * x_step)
        .take_while(|x| *x <= x_top * 1.0001)
        .map(|x| (x, format_tick(x, x_step)))
        .collect();
    let mut out = String::new();
    let y_label = format!("operations/s (per {} ms)", timeline.interval_ms);
    frame.axes(
        &mut out,
        title,
        "seconds into the measured phase",
        &y_label,
        &x_ticks,
    );
    frame.polyline(&mut out, &ops, COLOURS[0]);
    let mut names = vec!["successful".to_string()];
    if timeline.errors.iter().any(|n| *n > 0) {
        frame.polyline(&mut out, &errors, COLOURS[1]);
        names.push("failed".to_string());
    }
    frame.legend(&mut out, &names);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::latency_histogram;

    /// Tick steps are 1, 2 or 5 times a power of ten, about a fifth of the range.
    #[test]
    fn tick_steps() {
        assert_eq!(tick_step(10.0), 2.0);
        assert_eq!(tick_step(0.9), 0.2);
        assert_eq!(tick_step(62_000.0), 20_000.0);
        assert_eq!(tick_step(0.0), 1.0);
    }

    /// Percentiles map to nines: 90% is 1, 99.9% is 3, 100% is the axis end.
    #[test]
    fn percentile_axis() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(0.9) - 1.0).abs() < 1e-9);
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(nines(1.0), MAX_NINES);
    }

    /// Both plots are well-formed SVG with one curve per series, and never divide by zero on
    /// an empty run.
    #[test]
    fn plots_are_svg() {
        let mut histogram = latency_histogram();
        for i in 1..=10_000 {
            histogram.record(i).unwrap();
        }
        let svg = latency_plot("put <100%>", &[("all".to_string(), &histogram)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("put &lt;100%&gt;") && svg.contains("99.99%"));
        let points = latency_points(&histogram);
        assert_eq!(points.last().unwrap(), &(4.0, 10.007));
        assert!(points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        let timeline = Timeline {
            interval_ms: 100,
            ops: vec![100, 120, 90],
            errors: vec![0, 1, 0],
        };
        let svg = throughput_plot("t", &timeline);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!svg.contains("NaN"));
        let empty = throughput_plot("t", &Timeline::default());
        assert!(!empty.contains("NaN") && !empty.contains("inf"));
        let empty = latency_plot("t", &[("all".to_string(), &latency_histogram())]);
        assert!(!empty.contains("NaN"));
    }
}
