//! The report contract shared by every `kiseki bench` suite.
//!
//! One [`Case`] per measured figure. Human output prints a table row per case; `--json`
//! prints one JSON object per line with exactly the keys
//! `{"suite","case","value","unit","baseline","baseline_value","ratio"}`.

use serde::Serialize;

/// One measured figure and the baseline it is compared against.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// Suite name: `engine`, `pipeline`, `meta`, `io`, ...
    pub suite: String,
    /// Case name, e.g. `randread-4k-qd32-1core`.
    pub case: String,
    /// Kiseki's figure.
    pub value: f64,
    /// Unit of `value` and `baseline_value` (`IOPS`, `GB/s`, `us`, ...).
    pub unit: String,
    /// What the baseline is (`fio`, `memcpy`, `harmonic(stages)`, ...).
    pub baseline: String,
    /// The baseline's figure, measured in the same run.
    pub baseline_value: f64,
    /// `value / baseline_value` (for latencies: `baseline_value / value`, so higher is better).
    pub ratio: f64,
}

impl Case {
    /// A throughput-like case where higher is better.
    pub fn higher_is_better(
        suite: &str,
        case: &str,
        value: f64,
        unit: &str,
        baseline: &str,
        baseline_value: f64,
    ) -> Case {
        let ratio = if baseline_value > 0.0 {
            value / baseline_value
        } else {
            0.0
        };
        Case {
            suite: suite.to_string(),
            case: case.to_string(),
            value,
            unit: unit.to_string(),
            baseline: baseline.to_string(),
            baseline_value,
            ratio,
        }
    }

    /// A latency-like case where lower is better; the ratio is `baseline / value`.
    pub fn lower_is_better(
        suite: &str,
        case: &str,
        value: f64,
        unit: &str,
        baseline: &str,
        baseline_value: f64,
    ) -> Case {
        let ratio = if value > 0.0 { baseline_value / value } else { 0.0 };
        Case {
            suite: suite.to_string(),
            case: case.to_string(),
            value,
            unit: unit.to_string(),
            baseline: baseline.to_string(),
            baseline_value,
            ratio,
        }
    }
}

/// Prints one case, as a JSON line or as a human-readable row.
pub fn print_case(case: &Case, json: bool) {
    if json {
        // Serializing a struct of strings and floats cannot fail.
        println!("{}", serde_json::to_string(case).unwrap_or_else(|_| String::from("{}")));
    } else {
        println!(
            "{:<10} {:<36} {:>12.3} {:<6} vs {:<18} {:>12.3}  ratio {:>6.3}",
            case.suite, case.case, case.value, case.unit, case.baseline, case.baseline_value, case.ratio
        );
    }
}
