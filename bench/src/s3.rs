//! The s3 suite: PUT and GET of 64 MiB objects (GB/s) and of 4 KiB objects (ops/s) at
//! several concurrencies, with p50 and p99 latencies, through `kiseki-gateway` in front
//! of a one-node cluster (six file devices, EC 4+2, encrypted), against `s3s-fs` (a plain
//! S3 server on a local directory of the same disk: no replication, no encryption)
//! under the same load in the same run. The page cache is dropped before every read
//! phase, for both, when the suite runs as root.
//!
//! The load generator is in this process: one HTTP/1.1 connection per concurrent client,
//! requests signed with SigV4 (`UNSIGNED-PAYLOAD`), bodies from memory, responses read
//! and discarded. Every object has its own bytes (a base buffer XORed with a per-object
//! word), so neither server can deduplicate one object against another.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::cluster::{free_port, ClusterSpec, LocalCluster};
use crate::report::Case;

const SUITE: &str = "s3";
const GB: f64 = 1e9;
const REGION: &str = "us-east-1";
const ACCESS_KEY: &str = "KSKBENCH000000000000";
const SECRET_KEY: &str = "kiseki-bench-secret-kiseki-bench-secret0";

/// Options of the s3 suite.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// The `kiseki-server` binary.
    pub server: PathBuf,
    /// The `kiseki-gateway` binary.
    pub gateway: PathBuf,
    /// The `s3s-fs` binary (the baseline).
    pub s3s_fs: PathBuf,
    /// Parent of the working directory; default: the system's temporary directory.
    pub directory: Option<PathBuf>,
    /// Concurrent clients of each phase.
    pub concurrencies: Vec<usize>,
    /// Size of a large object.
    pub large_bytes: usize,
    /// Large objects per phase at least (and at least one per client).
    pub large_objects_min: usize,
    /// Small (4 KiB) requests per phase.
    pub small_requests: usize,
    /// Size of each device file (sparse).
    pub device_bytes: u64,
    /// Bytes at the start of each device file written before the run (what the run's
    /// objects take, so none of its writes lands on a block the file system must first
    /// allocate; see `ClusterSpec::device_prewrite_bytes`).
    pub device_prewrite_bytes: u64,
}

impl S3Options {
    /// The full run: concurrency 1, 16 and 64; 64 MiB objects, at least 8 per phase;
    /// 4,000 small requests per phase.
    pub fn full(server: PathBuf, gateway: PathBuf, s3s_fs: PathBuf) -> S3Options {
        S3Options {
            server,
            gateway,
            s3s_fs,
            directory: None,
            concurrencies: vec![1, 16, 64],
            large_bytes: 64 << 20,
            large_objects_min: 8,
            small_requests: 4_000,
            device_bytes: 8 << 30,
            // 88 objects of 64 MiB in all, 1.5× as fragments over 6 devices: 1.4 GiB each.
            device_prewrite_bytes: 2 << 30,
        }
    }

    /// A smoke run for CI: concurrency 1 and 4, 8 MiB objects, 200 small requests.
    pub fn quick(server: PathBuf, gateway: PathBuf, s3s_fs: PathBuf) -> S3Options {
        S3Options {
            concurrencies: vec![1, 4],
            large_bytes: 8 << 20,
            large_objects_min: 4,
            small_requests: 200,
            device_bytes: 2 << 30,
            device_prewrite_bytes: 256 << 20,
            ..S3Options::full(server, gateway, s3s_fs)
        }
    }
}

/// What the suite measured, and what it could not.
#[derive(Debug, Clone, Default)]
pub struct S3Report {
    /// Every case measured.
    pub cases: Vec<Case>,
    /// What could not be measured, with the reason.
    pub failures: Vec<String>,
}

/// One phase's figures.
#[derive(Debug, Clone, Copy, Default)]
struct Phase {
    /// Bytes or requests per second.
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Figures of one server: per concurrency, put and get of large and small objects.
type Figures = Vec<(usize, [Phase; 4])>;

const PHASES: [(&str, &str); 4] = [
    ("put-64m", "GB/s"),
    ("get-64m", "GB/s"),
    ("put-4k", "ops/s"),
    ("get-4k", "ops/s"),
];

/// A child process killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `port` accepts connections.
fn wait_listening(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not listen on port {port}")
}

/// Runs the suite.
pub fn run(options: &S3Options) -> anyhow::Result<S3Report> {
    if !options.s3s_fs.is_file() && which(&options.s3s_fs).is_none() {
        bail!(
            "the s3 suite's baseline is s3s-fs ({}): cargo install s3s-fs --version 0.14.1 --features binary \
             (scripts/setup.sh does)",
            options.s3s_fs.display()
        );
    }
    let parent = options.directory.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix("kiseki-bench-s3-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a working directory in {}", parent.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut report = S3Report::default();

    // The baseline: s3s-fs on a directory of the same disk.
    let root = work.path().join("s3s-fs");
    std::fs::create_dir_all(&root)?;
    let port = free_port()?;
    let mut child = Command::new(&options.s3s_fs)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", options.s3s_fs.display()))?;
    wait_listening(port, &mut child, "s3s-fs")?;
    let baseline = Server(child);
    eprintln!("s3: s3s-fs");
    let baseline_figures = runtime.block_on(measure(options, port))?;
    drop(baseline);
    std::fs::remove_dir_all(&root)?;

    // Kiseki: a one-node cluster and the gateway in front of it.
    let spec = ClusterSpec {
        nodes: 1,
        cores: 1,
        devices: 6,
        shards: 1,
        device_bytes: options.device_bytes,
        device_prewrite_bytes: options.device_prewrite_bytes,
    };
    let cluster_dir = work.path().join("cluster");
    let cluster = LocalCluster::start(&options.server, &cluster_dir, &spec).context("the cluster did not start")?;
    let keys = cluster_dir.join("keys.json");
    kiseki_client::KeyMaterial::load_or_create(&keys)?;
    let tenants = work.path().join("gateway.json");
    std::fs::write(
        &tenants,
        serde_json::json!({"tenants": [{"name": "bench", "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
            "namespace": 1, "keys": keys}]})
        .to_string(),
    )?;
    let port = free_port()?;
    let mut child = Command::new(&options.gateway)
        .args(["s3", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--cluster", &cluster.seed().to_string(), "--durability", "4+2"])
        .arg("--tenants")
        .arg(&tenants)
        .env("KISEKI_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", options.gateway.display()))?;
    wait_listening(port, &mut child, "kiseki-gateway")?;
    let gateway = Server(child);
    eprintln!("s3: kiseki");
    let kiseki_figures = runtime.block_on(measure(options, port));
    drop(gateway);
    if kiseki_figures.is_err() {
        let logs = parent.join(format!("kiseki-bench-s3-logs-{}", std::process::id()));
        if let Ok(path) = cluster.preserve_logs(&logs) {
            eprintln!("s3: node logs kept in {}", path.display());
        }
    }
    drop(cluster);
    let kiseki_figures = kiseki_figures?;

    for ((concurrency, kiseki), (_, baseline)) in kiseki_figures.iter().zip(&baseline_figures) {
        for (index, (name, unit)) in PHASES.iter().enumerate() {
            let name = format!("{name}-c{concurrency}");
            let (ours, theirs) = (kiseki[index], baseline[index]);
            let scale = if *unit == "GB/s" { GB } else { 1.0 };
            report.cases.push(Case::higher_is_better(
                SUITE,
                &name,
                ours.rate / scale,
                unit,
                "s3s-fs",
                theirs.rate / scale,
            ));
            for (quantile, ours, theirs) in [("p50", ours.p50_ms, theirs.p50_ms), ("p99", ours.p99_ms, theirs.p99_ms)] {
                report.cases.push(Case::lower_is_better(
                    SUITE,
                    &format!("{name}-{quantile}"),
                    ours,
                    "ms",
                    "s3s-fs",
                    theirs,
                ));
            }
        }
    }
    if report.cases.is_empty() {
        report.failures.push("no case was measured".into());
    }
    Ok(report)
}

fn which(program: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}

/// Drops the page cache (root only); the read phases of both servers start cold.
fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3\n");
}

/// Every phase against the server on `port`.
async fn measure(options: &S3Options, port: u16) -> anyhow::Result<Figures> {
    let signer = Arc::new(Signer {
        host: format!("127.0.0.1:{port}"),
    });
    let mut client = Connection::open(&signer).await?;
    let status = client.request("PUT", "/bench", Bytes::new()).await?;
    if !status.is_success() {
        bail!("creating the bucket answered {status}");
    }
    let base: Arc<Vec<u8>> = Arc::new((0..options.large_bytes).map(|_| rand::random::<u8>()).collect());
    let small = Bytes::from(vec![0x5a_u8; 4096]);
    let mut figures = Figures::new();
    for (round, &concurrency) in options.concurrencies.iter().enumerate() {
        let objects = concurrency.max(options.large_objects_min);
        let bodies: Vec<Bytes> = (0..objects)
            .map(|index| distinct(&base, (round * 1_000_000 + index) as u64))
            .collect();
        let large_keys: Vec<String> = (0..objects)
            .map(|index| format!("/bench/large-{round}-{index}"))
            .collect();
        let put_large = run_phase(&signer, concurrency, &large_keys, "PUT", Some(&bodies)).await?;
        drop_caches();
        let get_large = run_phase(&signer, concurrency, &large_keys, "GET", None).await?;
        let small_keys: Vec<String> = (0..options.small_requests)
            .map(|index| format!("/bench/small-{round}/{index:06}"))
            .collect();
        let small_bodies = vec![small.clone(); small_keys.len()];
        let put_small = run_phase(&signer, concurrency, &small_keys, "PUT", Some(&small_bodies)).await?;
        drop_caches();
        let get_small = run_phase(&signer, concurrency, &small_keys, "GET", None).await?;
        figures.push((
            concurrency,
            [
                put_large.with_rate(objects as f64 * options.large_bytes as f64),
                get_large.with_rate(objects as f64 * options.large_bytes as f64),
                put_small.with_rate(small_keys.len() as f64),
                get_small.with_rate(small_keys.len() as f64),
            ],
        ));
        // Free the space of this round before the next.
        for key in large_keys.iter().chain(&small_keys) {
            client.request("DELETE", key, Bytes::new()).await?;
        }
    }
    Ok(figures)
}

/// A copy of `base` with every 8-byte word XORed with a word derived from `seed`.
fn distinct(base: &[u8], seed: u64) -> Bytes {
    let word = (seed.wrapping_add(1)).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
    let mut bytes = base.to_vec();
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte ^= word[index % 8];
    }
    Bytes::from(bytes)
}

/// Time and latencies of a phase, before its rate is known.
struct Timed {
    elapsed: Duration,
    latencies: hdrhistogram::Histogram<u64>,
}

impl Timed {
    fn with_rate(&self, amount: f64) -> Phase {
        let quantile = |q: f64| self.latencies.value_at_quantile(q) as f64 / 1000.0;
        Phase {
            rate: amount / self.elapsed.as_secs_f64().max(1e-9),
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
        }
    }
}

/// `concurrency` clients, each on its own connection, split `keys` between them and
/// send one request per key (with the matching body for a PUT).
async fn run_phase(
    signer: &Arc<Signer>,
    concurrency: usize,
    keys: &[String],
    method: &'static str,
    bodies: Option<&[Bytes]>,
) -> anyhow::Result<Timed> {
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        connections.push(Connection::open(signer).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for (client, mut connection) in connections.into_iter().enumerate() {
        let work: Vec<(String, Bytes)> = keys
            .iter()
            .enumerate()
            .filter(|(index, _)| index % concurrency == client)
            .map(|(index, key)| {
                (
                    key.clone(),
                    bodies.map_or_else(Bytes::new, |bodies| bodies[index].clone()),
                )
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
            for (key, body) in work {
                let begun = Instant::now();
                let status = connection.request(method, &key, body).await?;
                if !status.is_success() {
                    bail!("{method} {key} answered {status}");
                }
                latencies.record(begun.elapsed().as_micros() as u64)?;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
    for task in tasks {
        latencies.add(task.await??)?;
    }
    Ok(Timed {
        elapsed: started.elapsed(),
        latencies,
    })
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    signer: Arc<Signer>,
}

impl Connection {
    async fn open(signer: &Arc<Signer>) -> anyhow::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(&signer.host).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            signer: signer.clone(),
        })
    }

    /// Sends a signed request; reads and discards the answer's body.
    async fn request(&mut self, method: &str, path: &str, body: Bytes) -> anyhow::Result<http::StatusCode> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-length", body.len());
        for (name, value) in self.signer.headers(method, path) {
            request = request.header(name, value);
        }
        self.sender.ready().await?;
        let response = self.sender.send_request(request.body(Full::new(body))?).await?;
        let status = response.status();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame?;
        }
        Ok(status)
    }
}

/// SigV4 with `UNSIGNED-PAYLOAD`, for paths without query strings.
struct Signer {
    host: String,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::sign(&key, data).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Signer {
    /// The `host`, `x-amz-*` and `authorization` headers of a request.
    fn headers(&self, method: &str, path: &str) -> Vec<(&'static str, String)> {
        let now = time_parts(std::time::SystemTime::now());
        let (date, stamp) = (&now[..8], now.as_str());
        let payload = "UNSIGNED-PAYLOAD";
        let canonical = format!(
            "{method}\n{path}\n\nhost:{}\nx-amz-content-sha256:{payload}\nx-amz-date:{stamp}\n\n\
             host;x-amz-content-sha256;x-amz-date\n{payload}",
            self.host
        );
        let scope = format!("{date}/{REGION}/s3/aws4_request");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        let to_sign = format!("AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}", hex(digest.as_ref()));
        let key = [date.as_bytes(), REGION.as_bytes(), b"s3", b"aws4_request"]
            .iter()
            .fold(format!("AWS4{SECRET_KEY}").into_bytes(), |key, part| hmac(&key, part));
        let signature = hex(&hmac(&key, to_sign.as_bytes()));
        vec![
            ("host", self.host.clone()),
            ("x-amz-content-sha256", payload.to_owned()),
            ("x-amz-date", stamp.to_owned()),
            (
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, \
                     SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}"
                ),
            ),
        ]
    }
}

/// `YYYYMMDDTHHMMSSZ` of a time (UTC).
fn time_parts(time: std::time::SystemTime) -> String {
    let seconds = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        let at = |seconds: u64| time_parts(std::time::UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_796_403_723), "20261204T170203Z");
    }
}
