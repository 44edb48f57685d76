//! The admin endpoint: `/metrics` (Prometheus text) and `/health`, served by one thread
//! off the data path. Figures come from the cores as snapshots over their bounded
//! control channels; nothing here reads core state directly.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::node::{ControlMessage, CoreSnapshot};

const REQUEST_LINE_BYTES_MAX: usize = 8192;
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves admin requests on `listener` forever.
pub fn serve(listener: TcpListener, cores: Vec<flume::Sender<ControlMessage>>) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if let Err(error) = answer(stream, &cores) {
                    tracing::debug!(%error, "admin request failed");
                }
            }
            Err(error) => tracing::warn!(%error, "admin accept failed"),
        }
    }
}

fn snapshots(cores: &[flume::Sender<ControlMessage>]) -> (Vec<CoreSnapshot>, usize) {
    let (reply, replies) = flume::bounded(cores.len().max(1));
    let mut asked = 0;
    for core in cores {
        if core.try_send(ControlMessage::Snapshot(reply.clone())).is_ok() {
            asked += 1;
        }
    }
    let mut snapshots = Vec::with_capacity(asked);
    for _ in 0..asked {
        match replies.recv_timeout(SNAPSHOT_TIMEOUT) {
            Ok(snapshot) => snapshots.push(snapshot),
            Err(_) => break,
        }
    }
    snapshots.sort_by_key(|snapshot| snapshot.core);
    let missing = cores.len() - snapshots.len();
    (snapshots, missing)
}

fn answer(stream: TcpStream, cores: &[flume::Sender<ControlMessage>]) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?).take(REQUEST_LINE_BYTES_MAX as u64);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain headers (bounded by the take above).
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            let (snapshots, missing) = snapshots(cores);
            ("200 OK", "text/plain; version=0.0.4", render(&snapshots, missing))
        }
        ("GET", "/health") => {
            let (snapshots, missing) = snapshots(cores);
            let failed: Vec<String> = snapshots
                .iter()
                .flat_map(|snapshot| &snapshot.devices)
                .filter_map(|device| {
                    device
                        .failure
                        .as_ref()
                        .map(|reason| format!("{}: {reason}", device.device.display()))
                })
                .collect();
            if !failed.is_empty() {
                let reasons = serde_json::to_string(&failed).unwrap_or_else(|_| "[]".into());
                (
                    "503 Service Unavailable",
                    "application/json",
                    format!(
                        "{{\"status\":\"failed\",\"cores\":{},\"failed_stores\":{reasons}}}\n",
                        snapshots.len()
                    ),
                )
            } else if missing == 0 {
                (
                    "200 OK",
                    "application/json",
                    format!("{{\"status\":\"ok\",\"cores\":{}}}\n", snapshots.len()),
                )
            } else {
                (
                    "503 Service Unavailable",
                    "application/json",
                    format!(
                        "{{\"status\":\"degraded\",\"cores\":{},\"unresponsive_cores\":{missing}}}\n",
                        snapshots.len()
                    ),
                )
            }
        }
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics or /health\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".to_string()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders snapshots as Prometheus text exposition.
pub fn render(snapshots: &[CoreSnapshot], missing_cores: usize) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "kiseki_node_unresponsive_cores",
        "gauge",
        "Cores that did not answer the metrics request in time.",
    );
    let _ = writeln!(out, "kiseki_node_unresponsive_cores {missing_cores}");
    render_executor(&mut out, snapshots);
    render_store(&mut out, snapshots);
    render_latency(&mut out, snapshots);
    out
}

fn render_executor(out: &mut String, snapshots: &[CoreSnapshot]) {
    type Executor = fn(&kiseki_runtime::ExecutorStats) -> u64;
    let executor_counters: [(&str, &str, Executor); 5] = [
        ("kiseki_core_polls_total", "Task polls run.", |stats| stats.polls),
        (
            "kiseki_core_stalls_total",
            "Task polls that held the core beyond the stall threshold.",
            |stats| stats.stalls,
        ),
        (
            "kiseki_core_io_submitted_total",
            "io_uring operations submitted.",
            |stats| stats.ops_submitted,
        ),
        (
            "kiseki_core_parks_total",
            "Times the core waited in the kernel for work.",
            |stats| stats.parks,
        ),
        ("kiseki_core_tasks_spawned_total", "Tasks spawned.", |stats| {
            stats.tasks_spawned
        }),
    ];
    for (name, help, value) in executor_counters {
        family(out, name, "counter", help);
        for snapshot in snapshots {
            let _ = writeln!(
                out,
                "{name}{{core=\"{}\"}} {}",
                snapshot.core,
                value(&snapshot.executor)
            );
        }
    }
    family(
        out,
        "kiseki_core_longest_poll_microseconds",
        "gauge",
        "Longest task poll seen.",
    );
    for snapshot in snapshots {
        let _ = writeln!(
            out,
            "kiseki_core_longest_poll_microseconds{{core=\"{}\"}} {}",
            snapshot.core, snapshot.executor.longest_poll_us
        );
    }
}

fn render_store(out: &mut String, snapshots: &[CoreSnapshot]) {
    type Store = fn(&crate::node::DeviceSnapshot) -> u64;
    let store_series: [(&str, &str, &str, Store); 17] = [
        ("kiseki_store_puts_total", "counter", "Fragments stored.", |device| {
            device.stats.puts
        }),
        (
            "kiseki_store_put_bytes_total",
            "counter",
            "Payload bytes stored.",
            |device| device.stats.put_bytes,
        ),
        ("kiseki_store_gets_total", "counter", "Fragments read.", |device| {
            device.stats.gets
        }),
        ("kiseki_store_get_bytes_total", "counter", "Bytes read.", |device| {
            device.stats.get_bytes
        }),
        (
            "kiseki_store_deletes_total",
            "counter",
            "Fragments deleted.",
            |device| device.stats.deletes,
        ),
        (
            "kiseki_store_batches_total",
            "counter",
            "Batches made durable (group commits).",
            |device| device.stats.batches,
        ),
        ("kiseki_store_flushes_total", "counter", "Device flushes.", |device| {
            device.stats.flushes
        }),
        (
            "kiseki_store_checkpoints_total",
            "counter",
            "Index checkpoints written.",
            |device| device.stats.checkpoints,
        ),
        (
            "kiseki_store_compactions_total",
            "counter",
            "Segments reclaimed by compaction.",
            |device| device.stats.compactions,
        ),
        (
            "kiseki_store_compacted_bytes_total",
            "counter",
            "Bytes moved by compaction.",
            |device| device.stats.compacted_bytes,
        ),
        (
            "kiseki_store_scrubbed_bytes_total",
            "counter",
            "Bytes verified by scrub.",
            |device| device.stats.scrubbed_bytes,
        ),
        (
            "kiseki_store_corrupt_extents_total",
            "counter",
            "Extents found corrupt.",
            |device| device.stats.corrupt_extents,
        ),
        (
            "kiseki_store_no_space_total",
            "counter",
            "Writes refused for lack of space.",
            |device| device.stats.no_space,
        ),
        ("kiseki_store_fragments", "gauge", "Fragments stored now.", |device| {
            device.space.fragments
        }),
        (
            "kiseki_store_free_bytes",
            "gauge",
            "Bytes writers may still use.",
            |device| device.space.free_bytes,
        ),
        (
            "kiseki_store_live_bytes",
            "gauge",
            "Bytes of live fragments.",
            |device| device.space.live_bytes,
        ),
        ("kiseki_store_capacity_bytes", "gauge", "Data capacity.", |device| {
            device.space.total_bytes
        }),
    ];
    for (name, kind, help, value) in store_series {
        family(out, name, kind, help);
        for snapshot in snapshots {
            for device in &snapshot.devices {
                let _ = writeln!(
                    out,
                    "{name}{{core=\"{}\",device=\"{}\"}} {}",
                    snapshot.core,
                    device.device.display(),
                    value(device)
                );
            }
        }
    }
}

fn render_latency(out: &mut String, snapshots: &[CoreSnapshot]) {
    for (name, help, pick) in [
        ("kiseki_store_put_latency_microseconds", "Put latency until durable.", 0),
        ("kiseki_store_get_latency_microseconds", "Get latency.", 1),
    ] {
        family(out, name, "summary", help);
        for snapshot in snapshots {
            for device in &snapshot.devices {
                let histogram = if pick == 0 {
                    &device.stats.put_latency_us
                } else {
                    &device.stats.get_latency_us
                };
                let labels = format!("core=\"{}\",device=\"{}\"", snapshot.core, device.device.display());
                for quantile in [0.5, 0.9, 0.99, 0.999] {
                    let _ = writeln!(
                        out,
                        "{name}{{{labels},quantile=\"{quantile}\"}} {}",
                        histogram.value_at_quantile(quantile)
                    );
                }
                let sum = histogram.mean() * histogram.len() as f64;
                let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", histogram.len());
            }
        }
    }
}
