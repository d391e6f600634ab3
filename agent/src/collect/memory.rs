//! Memory and swap from `{proc}/meminfo`.

use super::{number, parse_err, read_into, CollectError, Collector, ParseError, Paths};
use std::path::PathBuf;
use yunjian_protocol::{Memory, Report};

/// Fills [`Report::mem`].
#[derive(Debug)]
pub struct MemoryCollector {
    path: PathBuf,
    buf: String,
}

impl MemoryCollector {
    pub fn boxed(paths: &Paths) -> Box<dyn Collector> {
        Box::new(MemoryCollector {
            path: paths.proc.join("meminfo"),
            buf: String::new(),
        })
    }
}

impl Collector for MemoryCollector {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn collect(&mut self, out: &mut Report) -> Result<(), CollectError> {
        read_into(&self.path, &mut self.buf)?;
        out.mem = parse_meminfo(&self.buf).map_err(parse_err(&self.path))?;
        Ok(())
    }
}

/// Memory in KiB from the text of `/proc/meminfo` (`"MemTotal:  16318480 kB"` lines).
///
/// `used` is total minus available: what applications really hold, page cache excluded.
/// Kernels older than 3.14 have no `MemAvailable`; there it is estimated as
/// `MemFree + Buffers + Cached`, as `free` did.
pub fn parse_meminfo(text: &str) -> Result<Memory, ParseError> {
    const KEYS: [&str; 7] = [
        "MemTotal",
        "MemAvailable",
        "MemFree",
        "Buffers",
        "Cached",
        "SwapTotal",
        "SwapFree",
    ];
    let mut values = [None; KEYS.len()];
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        if let Some(i) = KEYS.iter().position(|k| *k == key) {
            values[i] = Some(number::<u64>(
                KEYS[i],
                rest.split_ascii_whitespace().next(),
            )?);
        }
    }
    let [total, available, free, buffers, cached, swap_total, swap_free] = values;
    let total = total.ok_or(ParseError::Missing("MemTotal"))?;
    let estimate = || free.unwrap_or(0) + buffers.unwrap_or(0) + cached.unwrap_or(0);
    let available = available.unwrap_or_else(estimate).min(total);
    let swap_total = swap_total.unwrap_or(0);
    let swap_free = swap_free.unwrap_or(swap_total).min(swap_total);
    Ok(Memory {
        total_kib: total,
        used_kib: total - available,
        available_kib: available,
        swap_total_kib: swap_total,
        swap_used_kib: swap_total - swap_free,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "\
MemTotal:       16318480 kB
MemFree:         1049348 kB
MemAvailable:   10250008 kB
Buffers:          520300 kB
Cached:          8411004 kB
SwapCached:         1024 kB
SwapTotal:       2097148 kB
SwapFree:        1572860 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

    #[test]
    fn used_is_total_minus_available() {
        assert_eq!(
            parse_meminfo(MEMINFO),
            Ok(Memory {
                total_kib: 16_318_480,
                used_kib: 16_318_480 - 10_250_008,
                available_kib: 10_250_008,
                swap_total_kib: 2_097_148,
                swap_used_kib: 2_097_148 - 1_572_860,
            })
        );
    }

    #[test]
    fn old_kernels_without_memavailable_estimate_it() {
        let old = MEMINFO.replace("MemAvailable:   10250008 kB\n", "");
        let mem = parse_meminfo(&old).unwrap();
        assert_eq!(mem.available_kib, 1_049_348 + 520_300 + 8_411_004);
        assert_eq!(mem.used_kib, mem.total_kib - mem.available_kib);
    }

    #[test]
    fn no_swap_is_zero_swap() {
        let mem = parse_meminfo("MemTotal: 1000 kB\nMemAvailable: 400 kB\n").unwrap();
        assert_eq!(
            (mem.used_kib, mem.swap_total_kib, mem.swap_used_kib),
            (600, 0, 0)
        );
    }

    #[test]
    fn missing_total_or_garbled_values_are_errors() {
        assert_eq!(
            parse_meminfo("MemFree: 5 kB\n"),
            Err(ParseError::Missing("MemTotal"))
        );
        assert_eq!(
            parse_meminfo("MemTotal: lots kB\n"),
            Err(ParseError::NotANumber {
                field: "MemTotal",
                value: "lots".into()
            })
        );
    }
}
