//! Runs the `kiseki bench pipeline` suite (bench/src/pipeline.rs) without the CLI, until
//! `kiseki bench pipeline` is wired: `cargo run --release -p kiseki-pipeline --example
//! bench_pipeline [-- --quick] [--json] [--cores N]`.

#[path = "../../../bench/src/pipeline.rs"]
mod pipeline;
#[path = "../../../bench/src/report.rs"]
#[allow(dead_code)]
mod report;

fn main() -> anyhow::Result<()> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let json = arguments.iter().any(|a| a == "--json");
    let quick = arguments.iter().any(|a| a == "--quick");
    let cores = arguments
        .iter()
        .position(|a| a == "--cores")
        .and_then(|i| arguments.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let cases = pipeline::run(&pipeline::PipelineOptions { cores, quick })?;
    for case in &cases {
        report::print_case(case, json);
    }
    Ok(())
}
