//! `kiseki up`: the embedded default. Today it formats file-backed devices under the
//! data directory on first use and runs one storage node as a child process, printing
//! where it listens; it stops the node on Ctrl-C or SIGTERM. The gateway, control plane,
//! key server and `--nodes N` join as they are built.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{bail, Context};
use kiseki_store::units::parse_bytes;
use kiseki_store::{format_device, read_superblock, FormatOptions, StoreError};

/// Options of `kiseki up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpOptions {
    /// Where devices and state live; reused on the next start.
    #[arg(long, default_value = "./kiseki-data")]
    pub data_dir: PathBuf,
    /// Cores for the node; default: all available.
    #[arg(long)]
    pub cores: Option<usize>,
    /// File-backed devices per node.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// Size of each file-backed device.
    #[arg(long, default_value = "4GiB", value_parser = parse_bytes)]
    pub device_size: u64,
    /// Metrics and health endpoint of the node.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub metrics_addr: String,
}

/// The `kiseki-server` binary: beside this one, else on PATH.
fn server_binary() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|directory| directory.join("kiseki-server")));
    match beside {
        Some(path) if path.is_file() => path,
        _ => PathBuf::from("kiseki-server"),
    }
}

fn prepare_device(path: &Path, cores: usize, bytes: u64) -> anyhow::Result<()> {
    match read_superblock(path) {
        Ok(superblock) if superblock.ag_count as usize == cores => Ok(()),
        Ok(superblock) => bail!(
            "{} is formatted for {} cores; run `kiseki up --cores {}` or remove the data directory",
            path.display(),
            superblock.ag_count,
            superblock.ag_count
        ),
        Err(StoreError::Io { .. }) if !path.exists() => format(path, cores, bytes),
        Err(StoreError::Unformatted { .. }) => format(path, cores, bytes),
        Err(error) => Err(error.into()),
    }
}

fn format(path: &Path, cores: usize, bytes: u64) -> anyhow::Result<()> {
    let superblock = format_device(
        path,
        &FormatOptions {
            cores: cores as u32,
            create_bytes: Some(bytes),
            ..FormatOptions::default()
        },
    )?;
    println!(
        "formatted {} ({} bytes, device {})",
        path.display(),
        bytes,
        superblock.uuid_hex()
    );
    Ok(())
}

pub fn run(options: UpOptions) -> anyhow::Result<()> {
    let cores = options.cores.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|count| count.get())
            .unwrap_or(1)
    });
    let node_directory = options.data_dir.join("node-0");
    std::fs::create_dir_all(&node_directory).with_context(|| format!("creating {}", node_directory.display()))?;
    let mut devices = Vec::new();
    for index in 0..options.devices.max(1) {
        let path = node_directory.join(format!("device-{index}.img"));
        prepare_device(&path, cores, options.device_size)?;
        devices.push(path);
    }
    let mut command = Command::new(server_binary());
    command
        .arg("run")
        .arg("--cores")
        .arg(cores.to_string())
        .arg("--metrics-addr")
        .arg(&options.metrics_addr);
    for device in &devices {
        command.arg("--device").arg(device);
    }
    let signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
    let mut child: Child = command
        .spawn()
        .context("starting kiseki-server (is it built and beside kiseki?)")?;
    println!(
        "kiseki up: node 0 (pid {}) on {} device(s) in {}",
        child.id(),
        devices.len(),
        node_directory.display()
    );
    println!(
        "  stop with Ctrl-C; the data stays in {} for the next start",
        options.data_dir.display()
    );
    let pid = child.id();
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        let mut signals = signals;
        if signals.forever().next().is_some() {
            // SIGTERM the child: it closes its stores and writes checkpoints.
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
    });
    let status = child.wait()?;
    handle.close();
    let _ = forwarder.join();
    if !status.success() {
        bail!("kiseki-server exited with {status}");
    }
    Ok(())
}
