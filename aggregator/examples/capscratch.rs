use std::time::Instant;
use yunjian_aggregator::fleet::Fleet;
use yunjian_aggregator::policy::rules::capacity::{measure, measure_use, VmIndex};
use yunjian_aggregator::register::capacity::*;
use yunjian_aggregator::register::{Pool, Register, Resources, ServerType, VmAllocation};
use yunjian_protocol::*;
const GIB: u64 = 1024 * 1024;
const HOSTS_PER_POOL: usize = 100;
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

fn node(fleet: &mut Fleet, id: &str, role: Role, bodies: Vec<Body>) {
    fleet.apply(Envelope::new(id, 0, T0, Body::Status(Status::Online)), 1);
    let hello = Body::Hello(Hello {
        agent_version: "0.1.0".into(),
        role,
        interval_ms: 10_000,
        buffered: 0,
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
            node(
                &mut fleet,
                &vm_id,
                Role::Guest,
                vec![
                    inventory(&vm_id, Role::Guest, 4, 16, Some(u.clone())),
                    report(cpu, 16, 50.0, 4, &["eth0"]),
                ],
            );
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

fn t<R>(name: &str, n: usize, mut f: impl FnMut() -> R) {
    let s = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    println!(
        "{name}: {:.3} ms",
        s.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
}
fn main() {
    let (fleet, register) = build(1000, 9);
    let p = &register.pools[0];
    t("measure", 10, || measure(&fleet, &register));
    t("measure_use", 10, || measure_use(&fleet, &register));
    t("VmIndex::new", 10, || {
        VmIndex::new(&register).get("x").is_some()
    });
    t("uuid_index", 10, || register.uuid_index().len());
    t("pool_total", 10, || pool_total(p, &fleet));
    t("pool_capacity", 10, || pool_capacity(p, &fleet));
    t("pool_allocated", 10, || {
        pool_allocated(p, &register, &fleet)
    });
    t("pool_used", 10, || pool_used(p, &fleet));
}
