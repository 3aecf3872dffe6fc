//! The HdrHistogram percentile distribution (`.hgrm`), the text format of Java HdrHistogram's
//! `outputPercentileDistribution`, which wrk2 prints and HdrHistogram's plotter
//! (hdrhistogram.github.io/HdrHistogram/plotFiles.html) reads: a header line, one line per
//! percentile tick (value, percentile, total count to here, 1/(1-percentile)), and a footer
//! with mean, standard deviation, max, count, buckets and sub-buckets.
//!
//! The bench records microseconds and writes milliseconds (`scale` 1000), the unit the plotter
//! and wrk2 use.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Percentile ticks per half distance to 100%, as in Java HdrHistogram's default output.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// `histogram` as a percentile distribution, values divided by `scale` and printed with as many
/// decimals as the histogram's significant digits.
pub fn percentile_distribution(histogram: &Histogram<u64>, scale: f64) -> String {
    let digits = usize::from(histogram.sigfig());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !histogram.is_empty() {
        for value in histogram.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += value.count_since_last_iteration();
            let quantile = value.quantile_iterated_to();
            let shown = value.value_iterated_to() as f64 / scale;
            if quantile < 1.0 {
                let _ = writeln!(
                    out,
                    "{shown:>12.digits$} {quantile:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - quantile)
                );
            } else {
                let _ = writeln!(out, "{shown:>12.digits$} {quantile:>2.12} {total:>10}");
            }
        }
    }
    let (mean, stdev, max) = if histogram.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            histogram.mean() / scale,
            histogram.stdev() / scale,
            histogram.max() as f64 / scale,
        )
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.digits$}, StdDeviation   = {stdev:>12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.digits$}, Total count    = {:>12}]",
        histogram.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        histogram.buckets(),
        sub_buckets(histogram.sigfig())
    );
    out
}

/// The sub-bucket count HdrHistogram uses for `sigfig` significant digits: the power of two
/// at or above 2 * 10^sigfig.
fn sub_buckets(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

/// One parsed line of a distribution: (value, percentile as a fraction, total count).
pub fn parse_line(line: &str) -> Option<(f64, f64, u64)> {
    let mut fields = line.split_whitespace();
    let value = fields.next()?.parse().ok()?;
    let quantile = fields.next()?.parse().ok()?;
    let total = fields.next()?.parse().ok()?;
    Some((value, quantile, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::latency_histogram;

    /// The format is Java HdrHistogram's: the header, percentile lines with 3 decimals for
    /// 3 significant digits, the last line at percentile 1 without the 1/(1-p) column, the
    /// footer; counts run up to the total and values never go down.
    #[test]
    fn format_matches_hdrhistogram() {
        let mut histogram = latency_histogram();
        for micros in 1..=1000u64 {
            histogram.record(micros * 10).unwrap();
        }
        let text = percentile_distribution(&histogram, 1000.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert_eq!(
            lines[2],
            "       0.010 0.000000000000          1           1.00"
        );
        let body: Vec<(f64, f64, u64)> = lines[2..]
            .iter()
            .take_while(|l| !l.starts_with('#'))
            .map(|l| parse_line(l).unwrap())
            .collect();
        assert!(body
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].2 <= w[1].2));
        let last = lines[2 + body.len() - 1];
        assert_eq!(last, "      10.007 1.000000000000       1000");
        assert!(body.iter().any(|&(_, q, _)| q == 0.5));
        let footer = &lines[2 + body.len()..];
        assert_eq!(footer.len(), 3);
        assert!(
            footer[0].starts_with("#[Mean    =        5.00"),
            "{}",
            footer[0]
        );
        assert_eq!(
            footer[1],
            "#[Max     =       10.007, Total count    =         1000]"
        );
        assert!(
            footer[2].ends_with("SubBuckets     =         2048]"),
            "{}",
            footer[2]
        );
    }

    /// An empty histogram still gives a header and a footer a reader can parse.
    #[test]
    fn empty_histogram() {
        let text = percentile_distribution(&latency_histogram(), 1000.0);
        assert!(text.contains("Total count    =            0]"), "{text}");
        assert_eq!(text.lines().filter(|l| parse_line(l).is_some()).count(), 0);
    }
}
