//! How full the store's disk is, for the broker's cleaner ([`broker::retention::DiskUsage`]).

use std::path::{Path, PathBuf};

use broker::retention::DiskUsage;

/// The partition holding a directory, read with `statvfs(3)`: used / (used + available to
/// us), as RocketMQ's `getDiskPartitionSpaceUsedPercent` computes it.
#[derive(Debug, Clone)]
pub struct PartitionUsage {
    path: PathBuf,
}

impl PartitionUsage {
    /// The partition of `path`.
    pub fn new(path: &Path) -> Self {
        PartitionUsage {
            path: path.to_path_buf(),
        }
    }
}

/// The used fraction of the partition of `path`, `None` if it cannot be read.
pub fn partition_used_ratio(path: &Path) -> Option<f64> {
    dledger::disk::partition_space(path).and_then(|space| space.used_ratio())
}

impl DiskUsage for PartitionUsage {
    fn used_ratio(&self) -> Option<f64> {
        partition_used_ratio(&self.path)
    }
}

/// A usage read from a file holding a fraction (`diskUsageOverrideFile`): tests fill a disk
/// without filling it. A missing or unreadable file reads the real partition.
#[derive(Debug, Clone)]
pub struct OverriddenUsage {
    file: PathBuf,
    real: PartitionUsage,
}

impl OverriddenUsage {
    /// Reads `file`, falling back to the partition of `store`.
    pub fn new(file: &Path, store: &Path) -> Self {
        OverriddenUsage {
            file: file.to_path_buf(),
            real: PartitionUsage::new(store),
        }
    }
}

impl DiskUsage for OverriddenUsage {
    fn used_ratio(&self) -> Option<f64> {
        std::fs::read_to_string(&self.file)
            .ok()
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|r| (0.0..=1.0).contains(r))
            .or_else(|| self.real.used_ratio())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The partition of a temp dir is somewhat used and not over full; an override file wins
    /// while it holds a fraction.
    #[test]
    fn usage_reads_the_partition_and_the_override() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ratio = partition_used_ratio(dir.path()).expect("statvfs works on a temp dir");
        assert!((0.0..=1.0).contains(&ratio), "{ratio}");
        let file = dir.path().join("usage");
        let usage = OverriddenUsage::new(&file, dir.path());
        assert!(usage.used_ratio().is_some(), "no file: the partition");
        std::fs::write(&file, "0.93\n").expect("write");
        assert_eq!(usage.used_ratio(), Some(0.93));
        std::fs::write(&file, "lots").expect("write");
        assert!(usage.used_ratio().is_some_and(|r| r <= 1.0));
        assert_eq!(partition_used_ratio(Path::new("/no/such/dir")), None);
    }
}
