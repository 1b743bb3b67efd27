//! What the machine is and how busy it is, from `/proc`.

use crate::BoxError;

/// A description of the machine, for the top of the report.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// The CPU model, from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// The 1-minute load average when the run started.
    pub load_at_start: Option<f64>,
}

impl Machine {
    /// Reads the machine's description.
    pub fn detect() -> Machine {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpu_model().unwrap_or_else(|| "unknown".to_owned()),
            load_at_start: load_average(),
        }
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| {
            let key = key.trim();
            key == "model name" || key == "Model" || key == "cpu model"
        })
        .map(|(_, value)| value.trim().to_owned())
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The resident set size of process `pid` in KiB (`VmRSS` in
/// `/proc/<pid>/status`).
pub fn vm_rss_kib(pid: u32) -> Result<u64, BoxError> {
    Ok(memory(pid)?.rss_kib)
}

/// A process's memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// The highest resident set size so far (`VmHWM`), KiB.
    pub hwm_kib: u64,
}

/// The memory of process `pid`.
pub fn memory(pid: u32) -> Result<Memory, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let field = |name: &str| {
        status_kib(&status, name).ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
    })
}

/// The value of the `name:` line of a `/proc/<pid>/status` text, in kB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tx\nVmHWM:\t  5000 kB\nVmRSS:\t   4242 kB\nThreads:\t3\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(4242));
        assert_eq!(status_kib(status, "VmHWM"), Some(5000));
        assert_eq!(status_kib("Name: x\n", "VmRSS"), None);
    }

    #[test]
    fn own_rss_is_positive() {
        let own = memory(std::process::id()).expect("own VmRSS");
        assert!(own.rss_kib > 0);
        assert!(own.hwm_kib >= own.rss_kib);
    }
}
