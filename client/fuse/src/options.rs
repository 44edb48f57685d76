//! Mount options: `-o name=value,…` on the command line and `KISEKI_CACHE_*` in the
//! environment; an option given with `-o` beats the environment, which beats the default.
//!
//! | option | environment | default | meaning |
//! |---|---|---|---|
//! | `cache_mode` | `KISEKI_CACHE_MODE` | `organic` | `organic`, `pinned` or `bypass` (below) |
//! | `cache_dir` | `KISEKI_CACHE_DIR` | `/var/tmp/kiseki-cache` | where the L2 cache lives |
//! | `cache_l1_max` | `KISEKI_CACHE_L1_MAX` | `256MiB` | decoded chunks kept in memory |
//! | `cache_l2_max` | `KISEKI_CACHE_L2_MAX` | `10GiB` | bytes the L2 cache may hold |
//! | `meta_ttl_ms` | `KISEKI_CACHE_META_TTL_MS` | `1000` | lifetime of cached attributes, entries, extent maps |
//!
//! Cache modes: `organic` keeps every chunk read in L1 and L2 and evicts the least
//! recently used; `pinned` keeps chunks read in L1 only, and L2 holds what `kiseki stage`
//! staged until it is released; `bypass` keeps no data cache and opens every file with
//! direct I/O. L2 holds sealed fragments (ciphertext) only; see `kiseki_client::cache`.
//!
//! Options of the mount alone (no environment variable): `flush_bytes` (`16MiB`: a
//! file's buffered writes that start a background flush), `read_ahead` (`8MiB`),
//! `threads` (FUSE event loops, `2`), `handles_max` (`65536`), `direct_io` (every open
//! bypasses the page cache), `passthrough` (fully cached files opened read-only are
//! served by the kernel from a plaintext copy on local disk; see `passthrough`),
//! `allow_other` / `noallow_other` (`allow_other` when run as root), `fsname=NAME`.

use std::path::PathBuf;
use std::time::Duration;

use kiseki_placement::units::parse_bytes;

pub use kiseki_client::cache::CacheMode;

/// Everything `-o` and the environment set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOptions {
    /// Data cache mode.
    pub cache_mode: CacheMode,
    /// L2 cache directory.
    pub cache_dir: PathBuf,
    /// Bytes of decoded chunks kept in memory.
    pub cache_l1_max_bytes: u64,
    /// Bytes the L2 cache may hold.
    pub cache_l2_max_bytes: u64,
    /// Attribute, entry and extent-map lifetime.
    pub meta_ttl_ms: u64,
    /// Buffered bytes of one file that start a background flush.
    pub flush_bytes: u64,
    /// Bytes read ahead of a sequential reader.
    pub read_ahead_bytes: u64,
    /// FUSE event-loop threads.
    pub threads: usize,
    /// Open handles at most.
    pub handles_max: usize,
    /// Every open bypasses the page cache.
    pub direct_io: bool,
    /// Serve fully cached read-only files by FUSE passthrough.
    pub passthrough: bool,
    /// Other users may use the mount (permissions are still checked by the kernel).
    pub allow_other: bool,
    /// The source name `mount` shows.
    pub fsname: String,
}

impl MountOptions {
    /// The defaults; `root` says whether the mount runs as root (then `allow_other`).
    pub fn defaults(root: bool) -> MountOptions {
        MountOptions {
            cache_mode: CacheMode::Organic,
            cache_dir: PathBuf::from("/var/tmp/kiseki-cache"),
            cache_l1_max_bytes: 256 << 20,
            cache_l2_max_bytes: 10 << 30,
            meta_ttl_ms: 1_000,
            flush_bytes: 16 << 20,
            read_ahead_bytes: 8 << 20,
            threads: 2,
            handles_max: 65_536,
            direct_io: false,
            passthrough: false,
            allow_other: root,
            fsname: "kiseki".into(),
        }
    }

    /// The options for `-o` lists `given` over `environment` (name, value pairs, e.g.
    /// `std::env::vars()`) over the defaults.
    pub fn parse<'a>(
        given: impl IntoIterator<Item = &'a str>,
        environment: impl IntoIterator<Item = (String, String)>,
        root: bool,
    ) -> Result<MountOptions, String> {
        let mut options = MountOptions::defaults(root);
        for (name, value) in environment {
            let option = match name.as_str() {
                "KISEKI_CACHE_MODE" => "cache_mode",
                "KISEKI_CACHE_DIR" => "cache_dir",
                "KISEKI_CACHE_L1_MAX" => "cache_l1_max",
                "KISEKI_CACHE_L2_MAX" => "cache_l2_max",
                "KISEKI_CACHE_META_TTL_MS" => "meta_ttl_ms",
                _ => continue,
            };
            options
                .set(option, Some(&value))
                .map_err(|error| format!("{name}: {error}"))?;
        }
        for list in given {
            for item in list.split(',').filter(|item| !item.is_empty()) {
                let (name, value) = match item.split_once('=') {
                    Some((name, value)) => (name, Some(value)),
                    None => (item, None),
                };
                options
                    .set(name, value)
                    .map_err(|error| format!("-o {item}: {error}"))?;
            }
        }
        Ok(options)
    }

    fn set(&mut self, name: &str, value: Option<&str>) -> Result<(), String> {
        let bytes = |value: Option<&str>| need(value).and_then(parse_bytes);
        let number = |value: Option<&str>| {
            need(value).and_then(|text| text.parse::<u64>().map_err(|_| format!("{text}: not a number")))
        };
        match name {
            "cache_mode" => self.cache_mode = need(value)?.parse()?,
            "cache_dir" => self.cache_dir = PathBuf::from(need(value)?),
            "cache_l1_max" => self.cache_l1_max_bytes = bytes(value)?,
            "cache_l2_max" => self.cache_l2_max_bytes = bytes(value)?,
            "meta_ttl_ms" => self.meta_ttl_ms = number(value)?,
            "flush_bytes" => self.flush_bytes = bytes(value)?.max(1),
            "read_ahead" => self.read_ahead_bytes = bytes(value)?,
            "threads" => self.threads = number(value)?.clamp(1, 64) as usize,
            "handles_max" => self.handles_max = number(value)?.clamp(16, 1 << 24) as usize,
            "direct_io" => self.direct_io = true,
            "passthrough" => self.passthrough = true,
            "allow_other" => self.allow_other = true,
            "noallow_other" => self.allow_other = false,
            "fsname" => self.fsname = need(value)?.to_string(),
            other => return Err(format!("unknown option {other}")),
        }
        Ok(())
    }

    /// How long the kernel may trust attributes and entries.
    pub fn meta_ttl(&self) -> Duration {
        Duration::from_millis(self.meta_ttl_ms)
    }
}

/// The value of an option that needs one.
fn need(value: Option<&str>) -> Result<&str, String> {
    value.ok_or_else(|| "needs a value (name=value)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn options_beat_environment_which_beats_defaults() {
        let defaults = MountOptions::parse([], [], false).unwrap();
        assert_eq!(defaults, MountOptions::defaults(false));
        let env = environment(&[
            ("KISEKI_CACHE_MODE", "bypass"),
            ("KISEKI_CACHE_L1_MAX", "64MiB"),
            ("KISEKI_CACHE_META_TTL_MS", "50"),
            ("UNRELATED", "x"),
        ]);
        let options = MountOptions::parse(["cache_mode=pinned,cache_dir=/tmp/c", "threads=4"], env, true).unwrap();
        assert_eq!(options.cache_mode, CacheMode::Pinned);
        assert_eq!(options.cache_dir, PathBuf::from("/tmp/c"));
        assert_eq!(options.cache_l1_max_bytes, 64 << 20);
        assert_eq!(options.meta_ttl_ms, 50);
        assert_eq!(options.threads, 4);
        assert!(options.allow_other);
    }

    #[test]
    fn bad_options_are_named() {
        let error = MountOptions::parse(["cache_mode=fast"], [], false).unwrap_err();
        assert!(error.contains("cache_mode=fast"), "{error}");
        let error = MountOptions::parse(["frobnicate"], [], false).unwrap_err();
        assert!(error.contains("unknown option"), "{error}");
        let error = MountOptions::parse([], environment(&[("KISEKI_CACHE_L2_MAX", "lots")]), false).unwrap_err();
        assert!(error.contains("KISEKI_CACHE_L2_MAX"), "{error}");
        assert!(MountOptions::parse(["meta_ttl_ms"], [], false).is_err());
    }
}
