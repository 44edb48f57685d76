//! fio baselines: run a checked-in job file from `fio-profiles/` and read its figures.
//!
//! `kiseki bench engine` (and later suites) compare Kiseki's on-device fragment store to
//! fio on the same device in the same run. The job files are parameterized through the
//! environment (fio expands `${VAR}` in job files):
//!
//! | variable | fio option | meaning |
//! |---|---|---|
//! | `KISEKI_FIO_DEVICE` | `filename` | file or block device |
//! | `KISEKI_FIO_SIZE` | `size`, `offset_increment` | bytes per job; job `i` works on `[i*size, (i+1)*size)` |
//! | `KISEKI_FIO_RUNTIME` | `runtime` | seconds (`time_based`) |
//! | `KISEKI_FIO_NUMJOBS` | `numjobs` | parallel jobs, one per core |
//!
//! [`run`] sets them from a [`FioRun`], runs `fio --output-format=json`, and parses the
//! single group-reported job into a [`FioResult`]. The device must already exist and, if
//! it is a regular file, hold `numjobs × size_bytes` bytes: otherwise fio would quietly
//! create or extend it ("laying out IO file") and measure something else.
//!
//! The metadata and small-file profiles (`meta-*.fio` for `kiseki bench meta`,
//! `io-smallfiles-4k.fio` for `kiseki bench io`) work on files in a
//! directory instead of a device; [`run_in_directory`] sets their variables from a
//! [`FioDirectoryRun`]:
//!
//! | variable | fio option | meaning |
//! |---|---|---|
//! | `KISEKI_FIO_DIRECTORY` | `directory` | where the jobs create (or stat) their files |
//! | `KISEKI_FIO_NRFILES` | `nrfiles` | files per job |
//! | `KISEKI_FIO_RUNTIME` | `runtime` | seconds (at most, or exactly with `time_based`) |
//! | `KISEKI_FIO_NUMJOBS` | `numjobs` | parallel jobs |

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context as _};
use serde::Serialize;
use serde_json::Value;

/// 4 KiB random reads, queue depth 32 per job.
pub const RANDREAD_4K: &str = "engine-randread-4k.fio";
/// 1 MiB sequential writes, queue depth 8 per job, `fdatasync` after every 8 writes.
pub const SEQWRITE_1M: &str = "engine-seqwrite-1m.fio";
/// 1 MiB sequential reads, queue depth 8 per job.
pub const SEQREAD_1M: &str = "engine-seqread-1m.fio";
/// File creates (`ioengine=filecreate`: open with `O_CREAT`, close; no data, no flush).
pub const META_FILECREATE: &str = "meta-filecreate.fio";
/// `stat(2)` of existing files (`ioengine=filestat`).
pub const META_FILESTAT: &str = "meta-filestat.fio";
/// 4 KiB files, each written once and fsynced as it is closed.
pub const IO_SMALLFILES: &str = "io-smallfiles-4k.fio";

/// The file [`profiles_dir`] looks for to recognise a `fio-profiles/` directory.
const MARKER: &str = "engine-randread-4k.fio";

/// Whether fio is on `PATH` and answers `fio --version`.
pub fn fio_available() -> bool {
    Command::new("fio")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `fio-profiles/` directory.
///
/// In order: `$KISEKI_FIO_PROFILES` if set; `<dir of current exe>/../../fio-profiles`
/// (a binary in `target/<profile>/`); the nearest ancestor of the current directory, then
/// of the executable's directory, that holds `fio-profiles/engine-randread-4k.fio`; else
/// the source tree this crate was compiled from.
pub fn profiles_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KISEKI_FIO_PROFILES") {
        return PathBuf::from(dir);
    }
    let has_marker = |dir: &Path| dir.join(MARKER).is_file();
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    if let Some(exe_dir) = &exe_dir {
        let candidate = exe_dir.join("../../fio-profiles");
        if has_marker(&candidate) {
            return candidate;
        }
    }
    let starts = std::env::current_dir().ok().into_iter().chain(exe_dir);
    for start in starts {
        for ancestor in start.ancestors() {
            let candidate = ancestor.join("fio-profiles");
            if has_marker(&candidate) {
                return candidate;
            }
        }
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fio-profiles"))
}

/// One fio baseline run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FioRun {
    /// Job file name inside [`profiles_dir`], e.g. [`RANDREAD_4K`].
    pub profile: String,
    /// File or block device (`KISEKI_FIO_DEVICE`). Must exist.
    pub device: PathBuf,
    /// Bytes each job works on (`KISEKI_FIO_SIZE`); job `i` starts at `i * size_bytes`.
    pub size_bytes: u64,
    /// Seconds to run (`KISEKI_FIO_RUNTIME`).
    pub runtime_s: u32,
    /// Parallel jobs (`KISEKI_FIO_NUMJOBS`), normally one per core.
    pub numjobs: usize,
}

/// The figures of one fio run, summed over its jobs (`group_reporting`).
///
/// Latencies are completion latencies (`clat`, submission to completion) in
/// microseconds; a direction that did no I/O reads 0.0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FioResult {
    /// Read operations per second.
    pub read_iops: f64,
    /// Write operations per second.
    pub write_iops: f64,
    /// Read bandwidth, bytes per second.
    pub read_bytes_per_s: f64,
    /// Write bandwidth, bytes per second.
    pub write_bytes_per_s: f64,
    /// Median read completion latency, µs.
    pub read_p50_us: f64,
    /// 99th percentile read completion latency, µs.
    pub read_p99_us: f64,
    /// Median write completion latency, µs.
    pub write_p50_us: f64,
    /// 99th percentile write completion latency, µs.
    pub write_p99_us: f64,
}

/// Runs one fio profile against `run.device` and returns its figures.
///
/// Fails, with fio's stderr in the message, if fio cannot start, exits non-zero, prints no
/// JSON, or reports a job error.
pub fn run(run: &FioRun) -> anyhow::Result<FioResult> {
    if run.numjobs == 0 || run.size_bytes == 0 || run.runtime_s == 0 {
        bail!("fio run needs numjobs, size_bytes and runtime_s > 0: {run:?}");
    }
    // fio splits `filename` at ':' (several files); refuse rather than run on other files.
    if run.device.as_os_str().as_encoded_bytes().contains(&b':') {
        bail!("fio device path must not contain ':': {}", run.device.display());
    }
    let profile = profile_path(&run.profile)?;
    check_device(run)?;
    let size = run.size_bytes.to_string();
    let runtime = run.runtime_s.to_string();
    let numjobs = run.numjobs.to_string();
    let environment = [
        ("KISEKI_FIO_DEVICE", run.device.as_os_str()),
        ("KISEKI_FIO_SIZE", size.as_ref()),
        ("KISEKI_FIO_RUNTIME", runtime.as_ref()),
        ("KISEKI_FIO_NUMJOBS", numjobs.as_ref()),
    ];
    let what = format!("fio {} on {}", run.profile, run.device.display());
    execute(&profile, &environment, &what)
}

/// One fio run of a metadata profile on the files of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FioDirectoryRun {
    /// Job file name inside [`profiles_dir`], e.g. [`META_FILECREATE`].
    pub profile: String,
    /// Directory of the files (`KISEKI_FIO_DIRECTORY`). Must exist.
    pub directory: PathBuf,
    /// Files per job (`KISEKI_FIO_NRFILES`).
    pub files_per_job: u64,
    /// Seconds to run (`KISEKI_FIO_RUNTIME`): a cap for creates, the duration for stats.
    pub runtime_s: u32,
    /// Parallel jobs (`KISEKI_FIO_NUMJOBS`), all in the one directory.
    pub numjobs: usize,
}

/// Runs one metadata profile in `run.directory` and returns its figures (creates count
/// as writes, stats as reads).
pub fn run_in_directory(run: &FioDirectoryRun) -> anyhow::Result<FioResult> {
    if run.numjobs == 0 || run.files_per_job == 0 || run.runtime_s == 0 {
        bail!("fio run needs numjobs, files_per_job and runtime_s > 0: {run:?}");
    }
    // fio splits `directory` at ':' as it does `filename`.
    if run.directory.as_os_str().as_encoded_bytes().contains(&b':') {
        bail!("fio directory path must not contain ':': {}", run.directory.display());
    }
    if !run.directory.is_dir() {
        bail!("fio directory {} does not exist", run.directory.display());
    }
    let profile = profile_path(&run.profile)?;
    let files = run.files_per_job.to_string();
    let runtime = run.runtime_s.to_string();
    let numjobs = run.numjobs.to_string();
    let environment = [
        ("KISEKI_FIO_DIRECTORY", run.directory.as_os_str()),
        ("KISEKI_FIO_NRFILES", files.as_ref()),
        ("KISEKI_FIO_RUNTIME", runtime.as_ref()),
        ("KISEKI_FIO_NUMJOBS", numjobs.as_ref()),
    ];
    let what = format!("fio {} in {}", run.profile, run.directory.display());
    execute(&profile, &environment, &what)
}

/// Runs the job file `profile` of [`profiles_dir`] with `environment` (the
/// `KISEKI_FIO_*` parameters it expands) and returns its figures.
pub fn run_profile(profile: &str, environment: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<FioResult> {
    let path = profile_path(profile)?;
    execute(&path, environment, &format!("fio {profile}"))
}

fn profile_path(profile: &str) -> anyhow::Result<PathBuf> {
    let path = profiles_dir().join(profile);
    if !path.is_file() {
        bail!(
            "fio profile {} not found (set KISEKI_FIO_PROFILES to the fio-profiles directory)",
            path.display()
        );
    }
    Ok(path)
}

/// Runs `fio --output-format=json profile` with `environment` and parses its figures.
fn execute(profile: &Path, environment: &[(&str, &std::ffi::OsStr)], what: &str) -> anyhow::Result<FioResult> {
    let output = Command::new("fio")
        .arg("--output-format=json")
        .arg(profile)
        .envs(environment.iter().copied())
        .stdin(Stdio::null())
        .output()
        .context("cannot start fio (is it installed and on PATH?)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            nonempty(stderr.trim(), stdout.trim())
        );
    }
    parse_output(&stdout).with_context(|| format!("{what}; fio stderr: {}", stderr.trim()))
}

/// Refuses a missing device, and a regular file smaller than the jobs' regions.
fn check_device(run: &FioRun) -> anyhow::Result<()> {
    let meta = fs::metadata(&run.device).with_context(|| {
        format!(
            "fio device {} (create and fill it before running fio)",
            run.device.display()
        )
    })?;
    let needed = run.size_bytes.saturating_mul(run.numjobs as u64);
    if meta.is_file() && meta.len() < needed {
        bail!(
            "fio device {} holds {} bytes, fewer than numjobs × size = {needed}",
            run.device.display(),
            meta.len()
        );
    }
    Ok(())
}

fn nonempty<'a>(first: &'a str, second: &'a str) -> &'a str {
    if first.is_empty() {
        second
    } else {
        first
    }
}

/// Parses fio's `--output-format=json` stdout, skipping any text fio printed before the
/// JSON (the first line that starts with `{`) and after it.
pub fn parse_output(stdout: &str) -> anyhow::Result<FioResult> {
    let mut start = None;
    let mut pos = 0;
    for line in stdout.split_inclusive('\n') {
        if line.trim_start().starts_with('{') {
            start = Some(pos);
            break;
        }
        pos += line.len();
    }
    let start = start.ok_or_else(|| anyhow!("no JSON in fio output: {}", stdout.trim()))?;
    let mut values = serde_json::Deserializer::from_str(&stdout[start..]).into_iter::<Value>();
    let json = values
        .next()
        .ok_or_else(|| anyhow!("no JSON in fio output"))?
        .context("fio output is not valid JSON")?;
    parse_json(&json)
}

/// Reads the figures from fio's parsed JSON output (one group-reported job).
pub fn parse_json(json: &Value) -> anyhow::Result<FioResult> {
    let jobs = json
        .get("jobs")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("fio JSON has no `jobs` array"))?;
    let job = match jobs.as_slice() {
        [job] => job,
        [] => bail!("fio JSON has no job"),
        more => bail!(
            "fio JSON has {} jobs; the profiles use group_reporting, expected one",
            more.len()
        ),
    };
    let error = job.get("error").and_then(Value::as_i64).unwrap_or(0);
    if error != 0 {
        bail!("fio job reported error {error}");
    }
    let read = direction(job, "read")?;
    let write = direction(job, "write")?;
    Ok(FioResult {
        read_iops: read.iops,
        write_iops: write.iops,
        read_bytes_per_s: read.bytes_per_s,
        write_bytes_per_s: write.bytes_per_s,
        read_p50_us: read.p50_us,
        read_p99_us: read.p99_us,
        write_p50_us: write.p50_us,
        write_p99_us: write.p99_us,
    })
}

#[derive(Default)]
struct Direction {
    iops: f64,
    bytes_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// One direction (`read`, `write`) of a job; all zeros if fio left it out.
fn direction(job: &Value, name: &str) -> anyhow::Result<Direction> {
    let Some(d) = job.get(name) else {
        return Ok(Direction::default());
    };
    let number = |key: &str| -> anyhow::Result<f64> {
        match d.get(key) {
            None => Ok(0.0),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| anyhow!("fio JSON `{name}.{key}` is not a number: {v}")),
        }
    };
    // clat (submission to completion) when fio reports its percentiles, else total latency
    // (fio reports lat_ns percentiles instead with lat_percentiles=1).
    let percentiles = ["clat_ns", "lat_ns"]
        .iter()
        .find_map(|lat| d.get(lat).and_then(|l| l.get("percentile")));
    let percentile_us = |p: &str| -> anyhow::Result<f64> {
        match percentiles.and_then(|ps| ps.get(p)) {
            None => Ok(0.0),
            Some(v) => v
                .as_f64()
                .map(|ns| ns / 1000.0)
                .ok_or_else(|| anyhow!("fio JSON `{name}` percentile {p} is not a number: {v}")),
        }
    };
    Ok(Direction {
        iops: number("iops")?,
        bytes_per_s: number("bw_bytes")?,
        p50_us: percentile_us("50.000000")?,
        p99_us: percentile_us("99.000000")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// Trimmed from a real `fio-3.33 --output-format=json` run of engine-randread-4k.fio.
    const SAMPLE: &str = r#"{
  "fio version" : "fio-3.33",
  "global options" : { "ioengine" : "io_uring", "direct" : "1", "runtime" : "1" },
  "jobs" : [
    {
      "jobname" : "engine-randread-4k",
      "groupid" : 0,
      "error" : 0,
      "read" : {
        "io_bytes" : 366956544,
        "bw_bytes" : 366589954,
        "iops" : 89499.500500,
        "clat_ns" : {
          "min" : 360, "max" : 15217761, "mean" : 704870.913092, "N" : 89589,
          "percentile" : {
            "1.000000" : 468992,
            "50.000000" : 659456,
            "99.000000" : 1646592,
            "99.900000" : 4554752
          }
        },
        "lat_ns" : { "min" : 77896, "max" : 15257340, "mean" : 709240.415520, "N" : 89589 }
      },
      "write" : {
        "io_bytes" : 0,
        "bw_bytes" : 0,
        "iops" : 0.000000,
        "clat_ns" : { "min" : 0, "max" : 0, "mean" : 0.000000, "N" : 0 },
        "lat_ns" : { "min" : 0, "max" : 0, "mean" : 0.000000, "N" : 0 }
      }
    }
  ]
}
"#;

    #[test]
    fn parses_sample() {
        let r = parse_output(SAMPLE).expect("parse");
        assert_eq!(r.read_iops, 89499.5005);
        assert_eq!(r.read_bytes_per_s, 366589954.0);
        assert_eq!(r.read_p50_us, 659.456);
        assert_eq!(r.read_p99_us, 1646.592);
        assert_eq!(r.write_iops, 0.0);
        assert_eq!(r.write_bytes_per_s, 0.0);
        assert_eq!(r.write_p50_us, 0.0);
        assert_eq!(r.write_p99_us, 0.0);
    }

    #[test]
    fn skips_text_around_json() {
        let noisy = format!("fio: some warning\nnote: more text\n{SAMPLE}trailing text\n");
        assert_eq!(
            parse_output(&noisy).expect("parse"),
            parse_output(SAMPLE).expect("parse")
        );
    }

    #[test]
    fn falls_back_to_lat_percentiles() {
        let json = r#"{"jobs":[{"error":0,
            "write":{"iops":100.5,"bw_bytes":105381888,
                     "clat_ns":{"N":10},
                     "lat_ns":{"N":10,"percentile":{"50.000000":2000,"99.000000":9000}}}}]}"#;
        let r = parse_output(json).expect("parse");
        assert_eq!(
            r,
            FioResult {
                write_iops: 100.5,
                write_bytes_per_s: 105381888.0,
                write_p50_us: 2.0,
                write_p99_us: 9.0,
                ..FioResult::default()
            }
        );
    }

    #[test]
    fn rejects_bad_output() {
        assert!(parse_output("").is_err());
        assert!(parse_output("fio: no such file\n").is_err());
        assert!(parse_output("{ \"jobs\" : [ {").is_err());
        assert!(parse_output(r#"{"jobs":[]}"#).is_err());
        assert!(parse_output(r#"{"jobs":[{"error":5}]}"#).is_err());
        assert!(parse_output(r#"{"jobs":[{"read":{"iops":"many"}}]}"#).is_err());
        assert!(parse_output(r#"{"jobs":[{"error":0},{"error":0}]}"#).is_err());
    }

    #[test]
    fn finds_profiles() {
        assert!(profiles_dir().join(RANDREAD_4K).is_file());
        assert!(profiles_dir().join(SEQWRITE_1M).is_file());
        assert!(profiles_dir().join(SEQREAD_1M).is_file());
        assert!(profiles_dir().join(META_FILECREATE).is_file());
        assert!(profiles_dir().join(META_FILESTAT).is_file());
    }

    /// Removes the test file however the test ends.
    struct RemoveOnDrop(PathBuf);

    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    #[test]
    fn runs_randread_profile() {
        if !fio_available() {
            eprintln!("skipped: fio not installed");
            return;
        }
        const SIZE: u64 = 64 << 20;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!("kiseki-fio-test-{}-{nanos}.img", std::process::id()));
        let _guard = RemoveOnDrop(path.clone());
        {
            let mut file = fs::File::create(&path).expect("create test file");
            let block: Vec<u8> = (0..1u32 << 20)
                .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
                .collect();
            for _ in 0..SIZE / block.len() as u64 {
                file.write_all(&block).expect("fill test file");
            }
            file.sync_all().expect("sync test file");
        }
        let result = run(&FioRun {
            profile: RANDREAD_4K.to_string(),
            device: path.clone(),
            size_bytes: SIZE,
            runtime_s: 1,
            numjobs: 1,
        })
        .expect("fio randread");
        eprintln!("fio randread-4k, 64 MiB file, 1 s: {result:?}");
        assert!(result.read_iops > 0.0);
        assert!(result.read_bytes_per_s > 0.0);
        assert!(result.read_p50_us > 0.0 && result.read_p99_us >= result.read_p50_us);
        assert_eq!(result.write_iops, 0.0);
    }

    #[test]
    fn runs_meta_profiles() {
        if !fio_available() {
            eprintln!("skipped: fio not installed");
            return;
        }
        let directory = tempfile::tempdir().expect("temporary directory");
        let run_profile = |profile: &str, runtime_s| {
            run_in_directory(&FioDirectoryRun {
                profile: profile.to_string(),
                directory: directory.path().to_path_buf(),
                files_per_job: 100,
                runtime_s,
                numjobs: 2,
            })
        };
        let create = run_profile(META_FILECREATE, 60).expect("fio filecreate");
        assert!(create.write_iops > 0.0, "{create:?}");
        assert_eq!(fs::read_dir(directory.path()).expect("read dir").count(), 200);
        let stat = run_profile(META_FILESTAT, 1).expect("fio filestat");
        assert!(stat.read_iops > 0.0 && stat.read_p99_us >= stat.read_p50_us, "{stat:?}");
        let missing = directory.path().join("missing");
        let error = run_in_directory(&FioDirectoryRun {
            profile: META_FILECREATE.to_string(),
            directory: missing,
            files_per_job: 1,
            runtime_s: 1,
            numjobs: 1,
        })
        .expect_err("missing directory");
        assert!(error.to_string().contains("does not exist"), "{error:#}");
    }

    #[test]
    fn refuses_missing_or_short_device() {
        let missing = std::env::temp_dir().join(format!("kiseki-fio-missing-{}.img", std::process::id()));
        let run_on = |device: &Path, size_bytes| FioRun {
            profile: RANDREAD_4K.to_string(),
            device: device.to_path_buf(),
            size_bytes,
            runtime_s: 1,
            numjobs: 2,
        };
        let err = run(&run_on(&missing, 1 << 20)).expect_err("missing device");
        assert!(err.to_string().contains("create and fill"), "{err:#}");
        assert!(!missing.exists(), "fio must not have created the device");

        let short = std::env::temp_dir().join(format!("kiseki-fio-short-{}.img", std::process::id()));
        let _guard = RemoveOnDrop(short.clone());
        fs::write(&short, vec![0u8; 1 << 20]).expect("write short file");
        let err = run(&run_on(&short, 1 << 20)).expect_err("short device");
        assert!(err.to_string().contains("fewer than"), "{err:#}");
    }
}
