//! `shardcore-bench compare`: runs side by side, each figure with its ratio to the first run's.
//!
//! A run is a `summary.json` written by `--out`, or any text file whose last `RESULT ` line is
//! etcd-bench's or ours (so an etcd run compares directly with a shardcore run).

use std::fmt::Write as _;
use std::path::Path;

use crate::report::Summary;

/// Reads one run: JSON if the file parses as a summary, else its last RESULT line.
pub fn load(path: &Path) -> Result<Summary, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a bench summary: {e}", path.display()));
    }
    text.lines()
        .rev()
        .find_map(Summary::from_result_line)
        .ok_or_else(|| {
            format!(
                "{}: neither a JSON summary nor a RESULT line",
                path.display()
            )
        })
}

/// `value / base`; `None` when the base is zero (no ratio to show).
pub fn ratio(value: f64, base: f64) -> Option<f64> {
    (base != 0.0).then(|| value / base)
}

/// One row of the table: its name and how to take its figure from a run.
struct Row {
    name: &'static str,
    figure: fn(&Summary) -> Option<f64>,
    /// Decimals to print.
    decimals: usize,
}

const ROWS: &[Row] = &[
    Row {
        name: "ops/s",
        figure: |s| Some(s.ops_per_sec),
        decimals: 0,
    },
    Row {
        name: "p50 ms",
        figure: |s| Some(s.latency.p50_us as f64 / 1000.0),
        decimals: 3,
    },
    Row {
        name: "p90 ms",
        figure: |s| Some(s.latency.p90_us as f64 / 1000.0),
        decimals: 3,
    },
    Row {
        name: "p99 ms",
        figure: |s| Some(s.latency.p99_us as f64 / 1000.0),
        decimals: 3,
    },
    Row {
        name: "p99.9 ms",
        figure: |s| Some(s.latency.p999_us as f64 / 1000.0),
        decimals: 3,
    },
    Row {
        name: "max ms",
        figure: |s| Some(s.latency.max_us as f64 / 1000.0),
        decimals: 3,
    },
    Row {
        name: "errors",
        figure: |s| Some(s.errors as f64),
        decimals: 0,
    },
    Row {
        name: "timeouts",
        figure: |s| Some(s.timeouts as f64),
        decimals: 0,
    },
    Row {
        name: "server CPU µs/op",
        figure: |s| s.server_cpu.as_ref().map(|c| c.us_per_op),
        decimals: 1,
    },
    Row {
        name: "bench CPU µs/op",
        figure: |s| s.client_cpu.as_ref().map(|c| c.us_per_op),
        decimals: 1,
    },
];

/// The side-by-side table of `runs` (name, summary), ratios to the first.
pub fn table(runs: &[(String, Summary)]) -> String {
    let mut columns: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["".to_string()];
    header.extend(runs.iter().map(|(name, s)| format!("{name} ({})", s.label)));
    columns.push(header);
    let base = runs.first().map(|(_, s)| s);
    for row in ROWS {
        let mut cells = vec![row.name.to_string()];
        for (i, (_, run)) in runs.iter().enumerate() {
            let cell = match (row.figure)(run) {
                None => "-".to_string(),
                Some(value) => {
                    let mut text = format!("{value:.*}", row.decimals);
                    let base_value = base.and_then(|b| (row.figure)(b));
                    if let (true, Some(r)) = (i > 0, base_value.and_then(|b| ratio(value, b))) {
                        let _ = write!(text, " (×{r:.2})");
                    }
                    text
                }
            };
            cells.push(cell);
        }
        columns.push(cells);
    }
    // Transpose: one line per row, a column per run.
    let widths: Vec<usize> = (0..=runs.len())
        .map(|c| {
            columns
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &columns {
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                let _ = write!(out, "{cell}{}", " ".repeat(pad));
            } else {
                let _ = write!(out, "  {}{cell}", " ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{CpuUse, Latency};

    fn run(ops_per_sec: f64, p50_us: u64, server_us: Option<f64>) -> Summary {
        Summary {
            label: format!("{ops_per_sec}"),
            ops_per_sec,
            latency: Latency {
                p50_us,
                ..Latency::default()
            },
            server_cpu: server_us.map(|us_per_op| CpuUse {
                us_per_op,
                ..CpuUse::default()
            }),
            ..Summary::default()
        }
    }

    /// Ratios are value over the first run's value; a zero base gives none.
    #[test]
    fn ratios() {
        assert_eq!(ratio(62_000.0, 6_200.0), Some(10.0));
        assert_eq!(ratio(0.5, 2.0), Some(0.25));
        assert_eq!(ratio(1.0, 0.0), None);
    }

    /// The table has a row per figure and a column per run, ratios to the first run only,
    /// and "-" where a run lacks a figure.
    #[test]
    fn table_shows_ratios_to_the_first() {
        let runs = vec![
            ("etcd".to_string(), run(6200.0, 9300, None)),
            ("shardcore".to_string(), run(62_000.0, 930, Some(40.0))),
        ];
        let text = table(&runs);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .to_string()
        };
        let cells = |name: &str| -> Vec<String> {
            line(name)
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        };
        assert_eq!(
            cells("ops/s"),
            ["ops/s", "6200", "62000 (×10.00)"],
            "{text}"
        );
        assert_eq!(
            cells("p50 ms"),
            ["p50 ms", "9.300", "0.930 (×0.10)"],
            "{text}"
        );
        assert_eq!(
            cells("server CPU µs/op"),
            ["server CPU µs/op", "-", "40.0"],
            "{text}"
        );
        assert_eq!(
            cells("errors"),
            ["errors", "0", "0"],
            "a zero base shows no ratio"
        );
        assert!(text.lines().next().unwrap().contains("etcd (6200)"));
    }

    /// `load` reads a JSON summary or a file ending in a RESULT line, and refuses anything else.
    #[test]
    fn load_json_or_result_line() {
        let dir = std::env::temp_dir().join(format!("bench-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("a.json");
        std::fs::write(&json, serde_json::to_string(&run(5.0, 7, None)).unwrap()).unwrap();
        assert_eq!(load(&json).unwrap().ops_per_sec, 5.0);
        let text = dir.join("etcd.txt");
        std::fs::write(
            &text,
            "warming up\nRESULT target=etcd clients=1 ops_per_s=1000\n",
        )
        .unwrap();
        assert_eq!(load(&text).unwrap().ops_per_sec, 1000.0);
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, "nothing here\n").unwrap();
        assert!(load(&bad).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
