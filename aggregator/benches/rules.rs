//! Rule evaluation cost per report, printed as figures (not a timed test).
//!
//! `cargo bench -p yunjian-aggregator --bench rules`
//!
//! A fleet of hosts and VMs with reports and guest lists (default 1,000 hosts × 9 VMs = 10,000
//! nodes), a register with pools and the VMs' allocations grouped in units and systems, and the
//! engine with every registered rule (`policy::rules::build(&Profile::default(), &[])`). Some
//! pools run over the 70% line, some systems over their peak and nine VMs in ten have no
//! antivirus, so thousands of alarms stay open and are re-found all the time.
//!
//! **Steady state** (the figure that matters): the aggregator's defaults, every node reporting
//! every 10 s and the engine evaluating every 1 s, so between two evaluations a tenth of the
//! nodes send a new report; hosts re-send their (unchanged) guest list every 60 reports and
//! guests their antivirus every 30; every 10 s one VM is resized on its host. Fifteen minutes
//! of that (900 evaluations, the periodic full refresh among them) per run; the figure is the engine's
//! time divided by the reports that arrived, median of the runs; then the same per rule.
//! **Full**: one evaluation of everything (start, register change, the periodic refresh), per
//! node.
//!
//! Env: `YJ_BENCH_HOSTS` (default 1000), `YJ_BENCH_VMS` (VMs per host, default 9),
//! `YJ_BENCH_RUNS` (default 5), `YJ_BENCH_ONLY` (one rule's steady state alone, e.g. `capacity`).

use std::time::Instant;
use yunjian_aggregator_core::alarms::AlarmBook;
use yunjian_aggregator_core::fleet::Fleet;
use yunjian_aggregator_core::policy::{rules, Context, Engine, Profile};
use yunjian_aggregator_core::register::{Pool, Register, Resources, ServerType, VmAllocation};
use yunjian_protocol::*;

const GIB: u64 = 1024 * 1024;
const HOSTS_PER_POOL: usize = 100;
/// Event time of the reports.
const T0: u64 = 1_795_000_000_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn uuid(h: usize, v: usize) -> String {
    format!("{h:08x}-{v:04x}-4000-8000-{:012x}", h * 100 + v)
}

fn report(cpu: f64, mem_gib: u64, mem_pct: f64, cores: u16, nics: &[&str]) -> Body {
    let total = mem_gib * GIB;
    let used = (total as f64 * mem_pct / 100.0) as u64;
    Body::Report(Report {
        cpu_busy: centi(cpu),
        per_core: vec![centi(cpu); cores as usize],
        load: [100, 90, 80],
        mem: Memory {
            total_kib: total,
            used_kib: used,
            available_kib: total - used,
            swap_total_kib: 0,
            swap_used_kib: 0,
        },
        disks: vec![
            DiskSample {
                mount: "/".into(),
                total_kib: 100 * GIB,
                used_kib: 40 * GIB,
                read_bps: 1_000_000,
                write_bps: 500_000,
            },
            DiskSample {
                mount: "/data".into(),
                total_kib: 2000 * GIB,
                used_kib: 900 * GIB,
                read_bps: 1_000_000,
                write_bps: 500_000,
            },
        ],
        nets: nics
            .iter()
            .map(|n| NetSample {
                name: n.to_string(),
                rx_bytes: 1 << 30,
                tx_bytes: 1 << 29,
                rx_bps: 20_000_000,
                tx_bps: 5_000_000,
            })
            .collect(),
        uptime_s: 86_400,
        failed: vec![],
    })
}

fn inventory(id: &str, role: Role, cores: u16, mem_gib: u64, uuid: Option<String>) -> Body {
    Body::Inventory(Inventory {
        hostname: id.into(),
        role,
        os: "openEuler 22.03 (LTS-SP3)".into(),
        kernel: "5.10.0".into(),
        cpu_model: "Hygon C86 7285 32-core Processor".into(),
        cpu_cores: cores,
        mem_total_kib: mem_gib * GIB,
        disks: vec![DiskInfo {
            mount: "/data".into(),
            fs_type: "xfs".into(),
            total_kib: 2000 * GIB,
        }],
        nics: vec!["eno1".into(), "eno2".into()],
        machine_id: format!("mid-{id}"),
        smbios_uuid: uuid,
        rack: Some(format!("R{}", id.len() % 7)),
    })
}

fn antivirus() -> Body {
    Body::Antivirus(AntivirusReport {
        products: vec![AntivirusProduct {
            profile: "clamav".into(),
            package: Some(AntivirusPackage {
                name: "clamav-daemon".into(),
                version: "1.0.7".into(),
                state: PackageState::Installed,
            }),
            paths: vec![],
            unit: Some(AntivirusUnit {
                name: "clamav-daemon.service".into(),
                enabled: true,
            }),
            processes: vec!["clamd".into()],
            version: None,
            signatures_s: None,
        }],
        errors: vec![],
    })
}

fn node(fleet: &mut Fleet, id: &str, role: Role, bodies: Vec<Body>) {
    fleet.apply(Envelope::new(id, 0, T0, Body::Status(Status::Online)), 1);
    let hello = Body::Hello(Hello {
        agent_version: "0.1.0".into(),
        role,
        interval_ms: 10_000,
        buffered: 0,
        epoch: 1,
    });
    for (i, b) in std::iter::once(hello).chain(bodies).enumerate() {
        fleet.apply(Envelope::new(id, i as u64 + 1, T0, b), 1);
    }
}

/// The fleet and register; every 5th pool's hosts at 78 % memory, every 7th system's VMs at
/// 90 % CPU.
fn build(hosts: usize, vms: usize) -> (Fleet, Register) {
    let mut fleet = Fleet::new();
    let mut register = Register::default();
    for h in 0..hosts {
        let id = format!("h{h:05}");
        let pool = h / HOSTS_PER_POOL;
        let mem = if pool.is_multiple_of(5) {
            78.0
        } else {
            45.0 + (h % 20) as f64
        };
        let mut guests = Vec::with_capacity(vms);
        for v in 0..vms {
            let u = uuid(h, v);
            let vm_id = format!("{id}-vm{v}");
            guests.push(GuestView {
                uuid: u.to_uppercase(),
                name: vm_id.clone(),
                vcpus: 4,
                mem_kib: 16 * GIB,
                disk_kib: 200 * GIB,
                running: true,
            });
            let n = h * vms + v;
            let system = n / 5;
            let cpu = if system.is_multiple_of(7) {
                90.0
            } else {
                20.0 + (n % 30) as f64
            };
            node(&mut fleet, &vm_id, Role::Guest, {
                let mut b = vec![
                    inventory(&vm_id, Role::Guest, 4, 16, Some(u.clone())),
                    report(cpu, 16, 50.0, 4, &["eth0"]),
                ];
                // one VM in ten runs its antivirus; the others have none (open alarms)
                if n.is_multiple_of(10) {
                    b.push(antivirus());
                }
                b
            });
            // nine in ten VMs are registered
            if n % 10 != 9 {
                register.vms.push(VmAllocation {
                    zone: "政务外网".into(),
                    developer: "开发商".into(),
                    unit: format!("单位{:03}", system / 3),
                    system: format!("系统{system:04}"),
                    subsystem: String::new(),
                    server_type: ServerType::App,
                    owner: String::new(),
                    email: String::new(),
                    phone: String::new(),
                    vcpus: 4,
                    mem_gb: 16,
                    sys_disk_gb: 50,
                    data_disk_gb: 150,
                    os: String::new(),
                    clustered: false,
                    cluster_group: String::new(),
                    note: String::new(),
                    uuid: Some(u),
                    term: Default::default(),
                });
            }
        }
        node(
            &mut fleet,
            &id,
            Role::Host,
            vec![
                inventory(&id, Role::Host, 64, 512, None),
                report(
                    35.0,
                    512,
                    mem,
                    64,
                    &["eno1", "eno2", "virbr0", "vnet0", "vnet1"],
                ),
                Body::Guests(guests),
            ],
        );
    }
    for p in 0..hosts.div_ceil(HOSTS_PER_POOL) {
        register.pools.push(Pool {
            name: format!("P{p:02}"),
            hosts: (p * HOSTS_PER_POOL..((p + 1) * HOSTS_PER_POOL).min(hosts))
                .map(|h| format!("h{h:05}"))
                .collect(),
            reserved: Resources {
                vcpus: 32.0,
                mem_gb: 256.0,
                disk_gb: 0.0,
                net_mbps: 0.0,
            },
            overcommit: Resources {
                vcpus: 3.0,
                mem_gb: 1.0,
                disk_gb: 1.0,
                net_mbps: 1.0,
            },
            nic_mbps: 20_000.0,
        });
    }
    (fleet, register)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Report interval of every node, and the engine's evaluation interval (the defaults).
const REPORT_MS: u64 = 10_000;
const EVAL_MS: u64 = 1_000;
/// Fifteen minutes of evaluations per run: one periodic full refresh
/// (`policy::FULL_REFRESH_MS`) falls in each.
const EVALS: usize = 900;

/// Feeds the fleet as live agents would: each node its next message in turn.
struct Feed {
    ids: Vec<(String, Role)>,
    seq: Vec<u64>,
    next: usize,
    host_report: Body,
    guest_report: Body,
    resized: u64,
}

impl Feed {
    fn new(fleet: &Fleet) -> Self {
        let mut ids: Vec<(String, Role)> = fleet
            .nodes()
            .map(|st| (st.node.clone(), st.role.unwrap_or(Role::Guest)))
            .collect();
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        let seq = ids
            .iter()
            .map(|(id, _)| fleet.get(id).map_or(0, |st| st.last_seq))
            .collect();
        Feed {
            ids,
            seq,
            next: 0,
            host_report: report(35.0, 512, 60.0, 64, &["eno1", "eno2", "virbr0"]),
            guest_report: report(30.0, 16, 50.0, 4, &["eth0"]),
            resized: 0,
        }
    }

    /// The messages of `ms` of wall time: each node reports once per [`REPORT_MS`].
    /// Returns how many reports were applied.
    fn run(&mut self, fleet: &mut Fleet, ts: u64, ms: u64) -> usize {
        let n = (self.ids.len() as u64 * ms / REPORT_MS) as usize;
        for _ in 0..n {
            let i = self.next;
            self.next = (self.next + 1) % self.ids.len();
            let (id, role) = &self.ids[i];
            let st = fleet.get(id);
            let mut bodies = Vec::with_capacity(2);
            let mut r = match role {
                Role::Host => self.host_report.clone(),
                Role::Guest => self.guest_report.clone(),
            };
            if let Body::Report(r) = &mut r {
                // the figures move a little on every report
                r.cpu_busy = ((self.seq[i] * 37 + i as u64) % 6000 + 1000) as u16;
            }
            bodies.push(r);
            match (role, st) {
                (Role::Host, Some(st)) if self.seq[i].is_multiple_of(60) => {
                    bodies.push(Body::Guests(st.guests.clone()));
                }
                (Role::Guest, Some(st)) if self.seq[i].is_multiple_of(30) => {
                    if let Some((_, a)) = &st.antivirus.latest {
                        bodies.push(Body::Antivirus(a.clone()));
                    }
                }
                _ => {}
            }
            for b in bodies {
                self.seq[i] += 1;
                fleet.apply(Envelope::new(id.clone(), self.seq[i], ts, b), 1);
            }
        }
        n
    }

    /// One VM resized on its host (a real change of what is observed).
    fn resize_one(&mut self, fleet: &mut Fleet, ts: u64) {
        let hosts: Vec<usize> = (0..self.ids.len())
            .filter(|&i| self.ids[i].1 == Role::Host)
            .collect();
        let i = hosts[(self.resized as usize * 7919) % hosts.len()];
        self.resized += 1;
        let id = self.ids[i].0.clone();
        let Some(mut guests) = fleet.get(&id).map(|st| st.guests.clone()) else {
            return;
        };
        if let Some(g) = guests.first_mut() {
            g.vcpus = if g.vcpus == 4 { 8 } else { 4 };
        }
        self.seq[i] += 1;
        fleet.apply(Envelope::new(id, self.seq[i], ts, Body::Guests(guests)), 1);
    }
}

/// Fifteen minutes of steady state: nanoseconds of engine time per report, and the longest
/// single evaluation (the fleet read lock is held that long).
fn steady(
    rules: Vec<Box<dyn yunjian_aggregator_core::policy::Rule>>,
    hosts: usize,
    vms: usize,
) -> (f64, f64, usize) {
    let (mut fleet, register) = build(hosts, vms);
    let profile = Profile::default();
    let mut engine = Engine::new(rules, AlarmBook::new());
    let mut feed = Feed::new(&fleet);
    let mut now = 1_000_000_000u64;
    let mut ts = T0;
    // warm up: past the holds and the first reports' grace, a full evaluation done
    for _ in 0..300 {
        feed.run(&mut fleet, ts, EVAL_MS);
        engine.evaluate(&Context {
            fleet: &fleet,
            register: &register,
            profile: &profile,
            now_ms: now,
        });
        now += EVAL_MS;
        ts += EVAL_MS;
    }
    let mut spent = 0u128;
    let mut longest = 0u128;
    let mut reports = 0usize;
    for e in 0..EVALS {
        reports += feed.run(&mut fleet, ts, EVAL_MS);
        if e % 10 == 0 {
            feed.resize_one(&mut fleet, ts);
        }
        let start = Instant::now();
        std::hint::black_box(engine.evaluate(&Context {
            fleet: &fleet,
            register: &register,
            profile: &profile,
            now_ms: now,
        }));
        let took = start.elapsed().as_nanos();
        spent += took;
        longest = longest.max(took);
        now += EVAL_MS;
        ts += EVAL_MS;
    }
    (
        spent as f64 / reports as f64,
        longest as f64 / 1e6,
        engine.book().open().len(),
    )
}

fn main() {
    let hosts = env_usize("YJ_BENCH_HOSTS", 1000);
    let vms = env_usize("YJ_BENCH_VMS", 9);
    let runs = env_usize("YJ_BENCH_RUNS", 5);
    let (fleet, register) = build(hosts, vms);
    let nodes = fleet.len();
    let profile = Profile::default();
    let names: Vec<&str> = rules::REGISTRY.iter().map(|r| r.name).collect();
    println!(
        "rules: {nodes} nodes ({hosts} hosts × {vms} VMs), {} pools, {} registered VMs; rules: {}",
        register.pools.len(),
        register.vms.len(),
        names.join(", ")
    );

    // full evaluations: a fresh engine's first one, each run
    let mut full = Vec::new();
    for _ in 0..runs {
        let mut engine = Engine::new(rules::build(&profile, &[]), AlarmBook::new());
        let start = Instant::now();
        let events = engine.evaluate(&Context {
            fleet: &fleet,
            register: &register,
            profile: &profile,
            now_ms: 1_000_000_000,
        });
        full.push(start.elapsed().as_nanos() as f64 / nodes as f64);
        std::hint::black_box(events);
    }
    println!(
        "full evaluation: {:.0} ns per node (median of {runs}; one evaluation of {nodes} nodes {:.1} ms)",
        median(full.clone()),
        median(full) * nodes as f64 / 1e6
    );

    let mut per_report = Vec::new();
    let mut longest = Vec::new();
    let mut open = 0;
    for _ in 0..runs {
        if std::env::var("YJ_BENCH_ONLY").is_ok() {
            break;
        }
        let (ns, ms, o) = steady(rules::build(&profile, &[]), hosts, vms);
        per_report.push(ns);
        longest.push(ms);
        open = o;
    }
    if !per_report.is_empty() {
        println!(
        "steady state, all rules: {:.0} ns per report (median of {runs} runs of {EVALS} evaluations every {EVAL_MS} ms, each node reporting every {REPORT_MS} ms; best run {:.0}; runs {:.0?}); longest evaluation {:.1} ms (median over runs); {open} open alarms",
        median(per_report.clone()),
        per_report.iter().copied().fold(f64::INFINITY, f64::min),
        per_report,
        median(longest),
    );
    }
    for reg in rules::REGISTRY {
        if std::env::var("YJ_BENCH_ONLY").is_ok_and(|only| only != reg.name) {
            continue;
        }
        let mut per = Vec::new();
        for _ in 0..runs.min(3) {
            per.push(steady(vec![(reg.build)(&profile)], hosts, vms).0);
        }
        let best = per.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "  {:<20} {:>6.0} ns per report (best run {best:.0})",
            reg.name,
            median(per)
        );
    }
}
