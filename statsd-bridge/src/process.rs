//! The process's own memory, CPU and file descriptors from `/proc/self`,
//! under the names client_golang's process collector gives them.

/// What could be read; a field is `None` where `/proc` did not say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Process {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

/// Linux's USER_HZ, the unit of the CPU times in `/proc/<pid>/stat`.
const TICKS_PER_SECOND: f64 = 100.0;

pub fn read() -> Process {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        let n: u64 = line[field.len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(n * 1024)
    };
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    Process {
        resident_bytes: kib("VmRSS:"),
        virtual_bytes: kib("VmSize:"),
        cpu_seconds: cpu_seconds(&stat),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| max_open_files(&l)),
    }
}

/// utime + stime, fields 14 and 15 of `stat`, counted after the command
/// name (which is in parentheses and may hold spaces).
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}

fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let p = read();
        assert!(p.resident_bytes.is_some_and(|b| b > 1024 * 1024), "{p:?}");
        assert!(p.virtual_bytes >= p.resident_bytes, "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(p.max_fds.is_some(), "{p:?}");
        assert!(p.cpu_seconds.is_some(), "{p:?}");
    }

    #[test]
    fn command_names_with_spaces_and_parentheses() {
        let stat = "42 (tokio (worker) 1) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 100 1000 200";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(cpu_seconds("garbage"), None);
    }
}
