//! CPU busy shares, total and per core, from sysinfo (which reads `/proc/stat`).

use super::{CollectError, Collector, Paths};
use sysinfo::System;
use yunjian_protocol::{centi, Report};

/// Fills [`Report::cpu_busy`] and [`Report::per_core`]. Shares are over the time since the
/// previous call: the first call only takes the baseline.
pub struct Cpu {
    /// Created empty; only CPU times are ever refreshed (no process list, no memory).
    system: System,
}

impl std::fmt::Debug for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cpu")
            .field("cores", &self.system.cpus().len())
            .finish()
    }
}

impl Cpu {
    /// sysinfo reads the live `/proc/stat` whatever `paths` says.
    pub fn boxed(_paths: &Paths) -> Box<dyn Collector> {
        Box::new(Cpu {
            system: System::new(),
        })
    }
}

impl Collector for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn collect(&mut self, out: &mut Report) -> Result<(), CollectError> {
        self.system.refresh_cpu_usage();
        let cpus = self.system.cpus();
        if cpus.is_empty() {
            return Err(CollectError::Unavailable("no CPU times in /proc/stat"));
        }
        out.cpu_busy = centi(f64::from(self.system.global_cpu_usage()));
        out.per_core.clear();
        out.per_core
            .extend(cpus.iter().map(|c| centi(f64::from(c.cpu_usage()))));
        Ok(())
    }
}
