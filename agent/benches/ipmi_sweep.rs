//! One full sensor sweep over RMCP+ against OpenIPMI's `ipmi_sim`, against the same sweep by
//! `ipmitool -I lanplus -C 3 ... sdr elist` in the same run (target: no slower than ipmitool).
//!
//! `cargo bench -p yunjian-agent --bench ipmi_sweep` (iterations: `YUNJIAN_BENCH_ITERS`,
//! default 50). Prints the median of each and the ratios:
//!
//! * warm: the agent's steady state, one long-lived session and the SDR repository cached
//!   (Get SDR Repository Info, then per sensor Get Sensor Reading and Get Sensor Thresholds,
//!   Get Chassis Status, Get SEL Info);
//! * cold: a new session and a full chunked SDR read every time, as ipmitool does;
//! * ipmitool: the whole `sdr elist` process (session, SDR read, readings).

use std::time::{Duration, Instant};
use yunjian_agent::ipmi::session::{Credentials, Target};
use yunjian_agent::ipmi::Sweeper;
use yunjian_protocol::hardware::BmcState;
use yunjian_tests::ipmi_sim::IpmiSim;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let iters: usize = std::env::var("YUNJIAN_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let Some(sim) = IpmiSim::start() else {
        eprintln!("ipmi_sim is missing: `apt-get install openipmi`");
        return;
    };
    let target = || Target::Lan {
        address: sim.address(),
        credentials: Credentials::new("admin", b"secret"),
    };
    let timeout = Duration::from_secs(1);
    let sensors = |s: &mut Sweeper| {
        let sweep = s.sweep();
        assert!(
            matches!(sweep.report.bmc, BmcState::Ok(_)),
            "{:?}",
            sweep.report.bmc
        );
        sweep.report.sensors.len()
    };

    let mut warm = Sweeper::new(target(), timeout, None);
    let count = sensors(&mut warm);
    let mut warm_t = Vec::with_capacity(iters);
    let mut cold_t = Vec::with_capacity(iters);
    let mut tool_t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        sensors(&mut warm);
        warm_t.push(t.elapsed());

        let t = Instant::now();
        let mut cold = Sweeper::new(target(), timeout, None);
        sensors(&mut cold);
        cold.close();
        cold_t.push(t.elapsed());

        let t = Instant::now();
        let out = sim.ipmitool(&["sdr", "elist"]);
        tool_t.push(t.elapsed());
        assert!(out.status.success(), "ipmitool sdr elist failed");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            count,
            "ipmitool lists the same sensors"
        );
    }
    let (w, c, i) = (median(warm_t), median(cold_t), median(tool_t));
    println!("ipmi sweep: {count} sensors, {iters} iterations, medians");
    println!("  agent warm (session + SDR cache): {:8.3} ms", ms(w));
    println!("  agent cold (new session, SDR read): {:6.3} ms", ms(c));
    println!("  ipmitool -I lanplus sdr elist:    {:8.3} ms", ms(i));
    println!("  ratio warm / ipmitool: {:.3}", ms(w) / ms(i));
    println!("  ratio cold / ipmitool: {:.3}", ms(c) / ms(i));
}
