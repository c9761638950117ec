//! This process's resident memory, from Linux's `/proc`: now ([`resident_bytes`]), and its peak
//! over a stretch of work ([`PeakMemory`]: the high-water mark is reset at the start
//! (`clear_refs` 5) and read at the end (`VmHWM`)). Other systems report nothing rather than a
//! wrong figure. Benchmarks of training steps and of serving under load read it.

/// Resident memory now, in bytes (`VmRSS`).
pub fn resident_bytes() -> Option<u64> {
    status_kib("VmRSS").map(|k| k * 1024)
}

/// A measurement in progress.
pub struct PeakMemory {
    resident_at_start: Option<u64>,
}

impl PeakMemory {
    /// Resets the high-water mark to what is resident now.
    pub fn start() -> Self {
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        Self {
            resident_at_start: reset.then(|| status_kib("VmRSS")).flatten(),
        }
    }

    /// `(peak above the start, peak)` in bytes, when the system reports them.
    pub fn finish(self) -> (Option<u64>, Option<u64>) {
        let peak = status_kib("VmHWM");
        let above = match (peak, self.resident_at_start) {
            (Some(p), Some(s)) => Some(p.saturating_sub(s)),
            _ => None,
        };
        (above.map(|k| k * 1024), peak.map(|k| k * 1024))
    }
}

/// A `kB` field of `/proc/self/status`.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_allocation_shows_in_the_peak() {
        let memory = PeakMemory::start();
        let mut block = vec![0u8; 128 << 20];
        // Touch every page so it becomes resident.
        for i in (0..block.len()).step_by(4096) {
            block[i] = 1;
        }
        std::hint::black_box(&block);
        // Read while the block is still resident: other tests in this process may reset the
        // (process-wide) high-water mark at any time, but never below what is resident.
        let resident = resident_bytes();
        let (above, peak) = memory.finish();
        drop(block);
        if cfg!(target_os = "linux") {
            assert!(resident.unwrap() >= 128 << 20, "{resident:?}");
            assert!(above.unwrap() >= 100 << 20, "{above:?}");
            assert!(peak.unwrap() >= above.unwrap());
        }
    }
}
