//! [`Domains`] over one libvirt connection (the `virt` crate), opened on first use and reopened
//! after it breaks.

use super::domain_xml::{
    disk_elements, parse_disk_sources, parse_domain, parse_limits, set_limits, snapshot_xml,
    DiskSource,
};
use super::{DomainState, Domains, HypervisorConfig, VmDisk};
use std::fmt;
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::{Domain, SchedBandwidth, SchedulerInfo};
use virt::domain_snapshot::DomainSnapshot;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::sys;
use yunjian_protocol::{GuestView, VmLimits, VmRef, VmSize, VolumeInfo, WipeAlgorithm};

/// How often a stopping VM is checked.
const STOP_POLL: Duration = Duration::from_millis(200);

/// A libvirt failure, as quoted in results: libvirt's message (it names the object) and code.
#[derive(Debug)]
pub(super) struct LibvirtError(String);

impl fmt::Display for LibvirtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl LibvirtError {
    fn from_virt(what: &str, e: &virt::error::Error) -> LibvirtError {
        LibvirtError(format!("{what}: libvirt: {} ({})", e.message(), e.code()))
    }
}

/// Does this error mean the connection itself is unusable?
fn breaks_connection(e: &virt::error::Error) -> bool {
    matches!(
        e.code(),
        ErrorNumber::NoConnect
            | ErrorNumber::InvalidConn
            | ErrorNumber::SystemError
            | ErrorNumber::Rpc
    )
}

pub(super) struct Libvirt {
    uri: String,
    shutdown_timeout: Duration,
    conn: Option<Connect>,
}

impl fmt::Debug for Libvirt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Libvirt")
            .field("uri", &self.uri)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        self.disconnect();
    }
}

impl Libvirt {
    pub(super) fn new(cfg: &HypervisorConfig) -> Libvirt {
        // libvirt prints every error on stderr by default; ours are returned and logged
        virt::error::clear_error_callback();
        Libvirt {
            uri: cfg.uri.clone(),
            shutdown_timeout: cfg.shutdown_timeout,
            conn: None,
        }
    }

    fn disconnect(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if let Err(error) = conn.close() {
                tracing::debug!(%error, "closing the libvirt connection");
            }
        }
    }

    /// The open connection, (re)opened when missing or no longer alive.
    fn conn(&mut self) -> Result<&Connect, LibvirtError> {
        if let Some(conn) = &self.conn {
            if !conn.is_alive().unwrap_or(false) {
                tracing::warn!(uri = %self.uri, "the libvirt connection is no longer alive; reconnecting");
                self.disconnect();
            }
        }
        if self.conn.is_none() {
            let conn = Connect::open(Some(&self.uri)).map_err(|e| {
                LibvirtError::from_virt(&format!("cannot connect to {}", self.uri), &e)
            })?;
            // remote connections: notice a dead daemon within about 15 s (local drivers refuse)
            let _ = conn.set_keep_alive(5, 3);
            tracing::info!(uri = %self.uri, "connected to libvirt");
            self.conn = Some(conn);
        }
        Ok(self.conn.as_ref().expect("opened above"))
    }

    /// Turn a libvirt error into ours, dropping the connection when it is broken.
    fn fail(&mut self, what: &str, e: &virt::error::Error) -> LibvirtError {
        if breaks_connection(e) {
            self.disconnect();
        }
        LibvirtError::from_virt(what, e)
    }

    fn lookup(&mut self, vm: &VmRef) -> Result<Option<Domain>, LibvirtError> {
        let found = Domain::lookup_by_uuid_string(self.conn()?, &vm.uuid);
        match found {
            Ok(dom) => Ok(Some(dom)),
            Err(e) if e.code() == ErrorNumber::NoDomain => Ok(None),
            Err(e) => Err(self.fail("cannot look up the domain", &e)),
        }
    }

    fn domain(&mut self, vm: &VmRef) -> Result<Domain, LibvirtError> {
        self.lookup(vm)?
            .ok_or_else(|| LibvirtError("the domain is no longer defined".into()))
    }

    fn state_of(&mut self, dom: &Domain) -> Result<(DomainState, Vec<String>), LibvirtError> {
        let running = dom
            .is_active()
            .map_err(|e| self.fail("cannot read the domain's state", &e))?;
        let xml = dom
            .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(|e| self.fail("cannot read the domain's definition", &e))?;
        let facts = parse_domain(&xml).ok_or_else(|| {
            LibvirtError("the domain's definition has no readable <vcpu> or <memory>".into())
        })?;
        let size = VmSize {
            vcpus: facts.vcpus,
            mem_kib: facts.mem_kib,
        };
        Ok((DomainState { running, size }, facts.disks))
    }

    /// What the evidence says of a volume: its pool, name and capacity.
    fn volume_info(&mut self, vol: &StorageVol) -> Result<VolumeInfo, LibvirtError> {
        let pool = StoragePool::lookup_by_volume(vol)
            .and_then(|p| p.get_name())
            .map_err(|e| self.fail("cannot find the volume's pool", &e))?;
        let name = vol
            .get_name()
            .map_err(|e| self.fail("cannot read the volume's name", &e))?;
        let capacity_bytes = vol
            .get_info()
            .map_err(|e| self.fail("cannot read the volume's size", &e))?
            .capacity;
        Ok(VolumeInfo {
            pool,
            name,
            capacity_bytes,
        })
    }

    /// The storage volume holding a disk: `Ok(Err(why not))` when it is none.
    fn volume_of(
        &mut self,
        source: &DiskSource,
    ) -> Result<Result<VolumeInfo, String>, LibvirtError> {
        let found = match source {
            DiskSource::Path(path) => StorageVol::lookup_by_path(self.conn()?, path),
            DiskSource::Volume { pool, volume } => {
                match StoragePool::lookup_by_name(self.conn()?, pool) {
                    Ok(p) => StorageVol::lookup_by_name(&p, volume),
                    Err(e) if e.code() == ErrorNumber::NoStoragePool => {
                        return Ok(Err(format!(
                            "its pool {pool:?} is not defined on this host"
                        )))
                    }
                    Err(e) => return Err(self.fail("cannot look up the disk's pool", &e)),
                }
            }
            DiskSource::Other(kind) => {
                return Ok(Err(format!(
                    "a {kind} disk, which libvirt cannot wipe as a storage volume"
                )))
            }
        };
        match found {
            Ok(vol) => self.volume_info(&vol).map(Ok),
            Err(e) if e.code() == ErrorNumber::NoStorageVolume => Ok(Err(format!(
                "{} is in no libvirt storage pool (a plain file or device; a file in a pool's \
                 directory that libvirt has not listed yet needs a pool refresh)",
                source.describe()
            ))),
            Err(e) => Err(self.fail("cannot look up the disk's storage volume", &e)),
        }
    }

    fn volume(&mut self, volume: &VolumeInfo) -> Result<StorageVol, LibvirtError> {
        let pool = StoragePool::lookup_by_name(self.conn()?, &volume.pool);
        let pool = pool.map_err(|e| self.fail("cannot look up the volume's pool", &e))?;
        StorageVol::lookup_by_name(&pool, &volume.name)
            .map_err(|e| self.fail("cannot look up the volume", &e))
    }
}

impl Domains for Libvirt {
    type Error = LibvirtError;

    fn find(&mut self, vm: &VmRef) -> Result<Option<DomainState>, LibvirtError> {
        match self.lookup(vm)? {
            Some(dom) => Ok(Some(self.state_of(&dom)?.0)),
            None => Ok(None),
        }
    }

    fn has_snapshot(&mut self, vm: &VmRef, name: &str) -> Result<bool, LibvirtError> {
        let dom = self.domain(vm)?;
        match DomainSnapshot::lookup_by_name(&dom, name, 0) {
            Ok(_) => Ok(true),
            Err(e) if e.code() == ErrorNumber::NoDomainSnapshot => Ok(false),
            Err(e) => Err(self.fail("cannot look up the snapshot", &e)),
        }
    }

    fn take_snapshot(&mut self, vm: &VmRef, name: &str) -> Result<(), LibvirtError> {
        let dom = self.domain(vm)?;
        DomainSnapshot::create_xml(
            &dom,
            &snapshot_xml(name),
            sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC,
        )
        .map(drop)
        .map_err(|e| self.fail("cannot create the snapshot", &e))
    }

    fn revert(&mut self, vm: &VmRef, name: &str) -> Result<(), LibvirtError> {
        let dom = self.domain(vm)?;
        let snapshot = DomainSnapshot::lookup_by_name(&dom, name, 0)
            .map_err(|e| self.fail("cannot look up the snapshot", &e))?;
        snapshot
            .revert(0)
            .map_err(|e| self.fail("cannot revert to the snapshot", &e))
    }

    fn stop(&mut self, vm: &VmRef) -> Result<String, LibvirtError> {
        let dom = self.domain(vm)?;
        let started = Instant::now();
        let deadline = started + self.shutdown_timeout;
        let asked = dom.shutdown();
        if let Err(e) = &asked {
            tracing::warn!(vm = %vm.name, error = %e, "clean shutdown refused; forcing the VM off");
        }
        while asked.is_ok() && Instant::now() < deadline {
            match dom.is_active() {
                Ok(false) => {
                    return Ok(format!(
                        "shut down cleanly in {} s",
                        started.elapsed().as_secs()
                    ))
                }
                Ok(true) => std::thread::sleep(STOP_POLL),
                Err(e) => return Err(self.fail("cannot read the domain's state", &e)),
            }
        }
        match dom.destroy() {
            Ok(()) => Ok(match asked {
                Ok(_) => format!(
                    "forced off: no clean shutdown within {} s",
                    self.shutdown_timeout.as_secs()
                ),
                Err(e) => format!("forced off: clean shutdown refused: {}", e.message()),
            }),
            // it went down by itself between the last check and the destroy
            Err(_) if matches!(dom.is_active(), Ok(false)) => Ok("shut down cleanly".into()),
            Err(e) => Err(self.fail("cannot force the domain off", &e)),
        }
    }

    fn start(&mut self, vm: &VmRef) -> Result<(), LibvirtError> {
        let dom = self.domain(vm)?;
        dom.create()
            .map(drop)
            .map_err(|e| self.fail("cannot start the domain", &e))
    }

    fn resize(&mut self, vm: &VmRef, size: VmSize) -> Result<String, LibvirtError> {
        let dom = self.domain(vm)?;
        let vcpus = u32::from(size.vcpus);
        // the persistent definition: the count, then the maximum (never below the count)
        dom.set_vcpus_flags(vcpus, sys::VIR_DOMAIN_VCPU_CONFIG)
            .map_err(|e| self.fail("cannot set the vCPU count in the definition", &e))?;
        dom.set_vcpus_flags(
            vcpus,
            sys::VIR_DOMAIN_VCPU_CONFIG | sys::VIR_DOMAIN_VCPU_MAXIMUM,
        )
        .map_err(|e| self.fail("cannot set the vCPU maximum in the definition", &e))?;
        dom.set_memory_flags(size.mem_kib, sys::VIR_DOMAIN_MEM_CONFIG)
            .map_err(|e| self.fail("cannot set the memory in the definition", &e))?;
        dom.set_memory_flags(
            size.mem_kib,
            sys::VIR_DOMAIN_MEM_CONFIG | sys::VIR_DOMAIN_MEM_MAXIMUM,
        )
        .map_err(|e| self.fail("cannot set the memory maximum in the definition", &e))?;
        if !dom.is_active().unwrap_or(false) {
            return Ok(String::new());
        }
        let mut notes = Vec::new();
        if let Err(e) = dom.set_vcpus_flags(vcpus, sys::VIR_DOMAIN_VCPU_LIVE) {
            notes.push(format!("vCPUs not changed live: {}", e.message()));
        }
        if let Err(e) = dom.set_memory_flags(size.mem_kib, sys::VIR_DOMAIN_MEM_LIVE) {
            notes.push(format!("memory not changed live: {}", e.message()));
        }
        if !notes.is_empty() {
            notes.push("the new size applies in full from the next start".into());
        }
        Ok(notes.join("; "))
    }

    fn undefine(&mut self, vm: &VmRef) -> Result<(), LibvirtError> {
        let dom = self.domain(vm)?;
        dom.undefine_flags(
            sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
        )
        .map_err(|e| self.fail("cannot undefine the domain", &e))
    }

    fn limit(&mut self, vm: &VmRef, caps: VmLimits) -> Result<(VmLimits, String), LibvirtError> {
        let dom = self.domain(vm)?;
        // as `virsh edit` does: the inactive definition with its secrets, changed, defined again
        let xml = dom
            .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE | sys::VIR_DOMAIN_XML_SECURE)
            .map_err(|e| self.fail("cannot read the domain's definition", &e))?;
        let before = parse_limits(&xml);
        let defined = Domain::define_xml(self.conn()?, &set_limits(&xml, caps));
        defined.map_err(|e| self.fail("cannot write the caps into the definition", &e))?;
        if !dom.is_active().unwrap_or(false) {
            return Ok((before, String::new()));
        }
        let mut notes = Vec::new();
        let cpu = SchedulerInfo {
            vcpu_bw: SchedBandwidth {
                period: Some(VmLimits::VCPU_PERIOD_US),
                // -1: no quota
                quota: Some(caps.vcpu_quota_us().map_or(-1, |q| q as i64)),
            },
            ..SchedulerInfo::default()
        };
        if let Err(e) = dom.set_scheduler_parameters_flags(&cpu, sys::VIR_DOMAIN_AFFECT_LIVE) {
            notes.push(format!("vCPU cap not applied live: {}", e.message()));
        }
        match dom.get_xml_desc(0) {
            Ok(live) => {
                let live = set_limits(&live, caps);
                for disk in disk_elements(&live) {
                    if let Err(e) = dom.update_device_flags(disk, sys::VIR_DOMAIN_AFFECT_LIVE) {
                        notes.push(format!("disk I/O cap not applied live: {}", e.message()));
                        break;
                    }
                }
            }
            Err(e) => notes.push(format!(
                "disk I/O cap not applied live: cannot read the running definition: {}",
                e.message()
            )),
        }
        Ok((before, notes.join("; ")))
    }

    fn disks(&mut self, vm: &VmRef) -> Result<Vec<VmDisk>, LibvirtError> {
        let dom = self.domain(vm)?;
        let xml = dom
            .get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(|e| self.fail("cannot read the domain's definition", &e))?;
        let mut disks = Vec::new();
        for disk in parse_disk_sources(&xml) {
            let volume =
                if disk.shared {
                    Err("shared with other VMs (<shareable/> or <readonly/> in its definition): it \
                     may hold their data; detach it before a wiping release"
                    .to_string())
                } else {
                    self.volume_of(&disk.source)?
                };
            disks.push(VmDisk {
                target: disk.target,
                source: disk.source.describe(),
                volume,
            });
        }
        Ok(disks)
    }

    fn wipe(&mut self, volume: &VolumeInfo, algorithm: WipeAlgorithm) -> Result<(), LibvirtError> {
        let vol = self.volume(volume)?;
        let algorithm = match algorithm {
            WipeAlgorithm::Zero => sys::VIR_STORAGE_VOL_WIPE_ALG_ZERO,
        };
        vol.wipe_pattern(algorithm, 0)
            .map_err(|e| self.fail("cannot wipe the volume", &e))
    }

    fn delete(&mut self, volume: &VolumeInfo) -> Result<(), LibvirtError> {
        let vol = self.volume(volume)?;
        vol.delete(0)
            .map_err(|e| self.fail("cannot delete the volume", &e))
    }

    fn guests(&mut self) -> Result<Vec<GuestView>, LibvirtError> {
        let listed = self.conn()?.list_all_domains(0);
        let domains = listed.map_err(|e| self.fail("cannot list the domains", &e))?;
        let mut guests = Vec::with_capacity(domains.len());
        for dom in domains {
            let (uuid, name) = match (dom.get_uuid_string(), dom.get_name()) {
                (Ok(uuid), Ok(name)) => (uuid, name),
                // undefined while we were listing
                _ => continue,
            };
            let (state, disks) = match self.state_of(&dom) {
                Ok(state) => state,
                Err(error) => {
                    tracing::debug!(%name, %error, "domain left out of the guest list");
                    continue;
                }
            };
            let disk_kib = disks
                .iter()
                .filter_map(|target| dom.get_block_info(target, 0).ok())
                .map(|info| info.capacity / 1024)
                .sum();
            guests.push(GuestView {
                uuid,
                name,
                vcpus: state.size.vcpus,
                mem_kib: state.size.mem_kib,
                disk_kib,
                running: state.running,
            });
        }
        Ok(guests)
    }
}

/// The backend against libvirt's test driver (`test:///<tmp>/node.xml`): its real parser and
/// formatter for definitions, its storage pools and volumes. The test driver cannot wipe a
/// volume (no `virStorageVolWipe`) nor set a vCPU quota or a disk's I/O tune live, so those
/// paths are checked for how their refusal is reported; the wipe sequence itself is checked
/// over the in-memory hypervisor in `tests.rs`.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::{execute, Outcome};
    use yunjian_protocol::{Action, DiskWipeState, Evidence, WipeEvidence};

    const VM_A: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";
    const VM_B: &str = "7795eb01-f6a4-8304-79aa-97f2502e1940";
    const GIB: u64 = 1 << 30;

    /// vm-a: a file disk and a `type='volume'` disk, both in pool-a, and a CD-ROM; vm-b: a disk
    /// in pool-a, a plain file in no pool and a shareable volume. Both run.
    const NODE: &str = "<node>
  <cpu><mhz>2000</mhz><model>x86</model><nodes>1</nodes><sockets>1</sockets><cores>8</cores><threads>1</threads><active>8</active></cpu>
  <memory>16777216</memory>
  <domain type='test'>
    <name>vm-a</name>
    <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
    <memory unit='KiB'>4194304</memory>
    <vcpu placement='static'>4</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'><source file='/pool-a/root.img'/><target dev='vda' bus='virtio'/></disk>
      <disk type='volume' device='disk'><source pool='pool-a' volume='data.img'/><target dev='vdb' bus='virtio'/></disk>
      <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
    </devices>
  </domain>
  <domain type='test'>
    <name>vm-b</name>
    <uuid>7795eb01-f6a4-8304-79aa-97f2502e1940</uuid>
    <memory unit='KiB'>2097152</memory>
    <vcpu>2</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'><source file='/pool-a/b.img'/><target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='disk'><source file='/srv/plain.img'/><target dev='vdb' bus='virtio'/></disk>
      <disk type='file' device='disk'><source file='/pool-a/shared.img'/><target dev='vdc' bus='virtio'/><shareable/></disk>
    </devices>
  </domain>
  <pool type='dir'>
    <name>pool-a</name>
    <uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>
    <capacity unit='GiB'>500</capacity>
    <allocation>0</allocation>
    <available unit='GiB'>500</available>
    <target><path>/pool-a</path></target>
    <volume type='file'><name>root.img</name><capacity unit='GiB'>20</capacity><allocation>0</allocation><target><path>/pool-a/root.img</path></target></volume>
    <volume type='file'><name>data.img</name><capacity unit='GiB'>100</capacity><allocation>0</allocation><target><path>/pool-a/data.img</path></target></volume>
    <volume type='file'><name>b.img</name><capacity unit='GiB'>8</capacity><allocation>0</allocation><target><path>/pool-a/b.img</path></target></volume>
    <volume type='file'><name>shared.img</name><capacity unit='GiB'>1</capacity><allocation>0</allocation><target><path>/pool-a/shared.img</path></target></volume>
  </pool>
</node>";

    fn test_driver(dir: &tempfile::TempDir) -> Libvirt {
        let node = dir.path().join("node.xml");
        std::fs::write(&node, NODE).unwrap();
        Libvirt::new(&HypervisorConfig {
            enabled: true,
            uri: format!("test://{}", node.display()),
            shutdown_timeout: Duration::from_secs(5),
            ..HypervisorConfig::default()
        })
    }

    fn vm(uuid: &str, name: &str) -> VmRef {
        VmRef {
            uuid: uuid.into(),
            name: name.into(),
        }
    }

    /// The definition as libvirt formats it after parsing what the agent wrote.
    fn definition(lv: &mut Libvirt, uuid: &str) -> String {
        let dom = Domain::lookup_by_uuid_string(lv.conn().unwrap(), uuid).unwrap();
        dom.get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE).unwrap()
    }

    fn volume(name: &str, gib: u64) -> VolumeInfo {
        VolumeInfo {
            pool: "pool-a".into(),
            name: name.into(),
            capacity_bytes: gib * GIB,
        }
    }

    fn wipe_evidence(out: &Outcome) -> &WipeEvidence {
        match &out.evidence {
            Some(Evidence::Wipe(w)) => w,
            None => panic!("no evidence: {out:?}"),
        }
    }

    #[test]
    fn limit_writes_the_caps_into_the_definition_and_lifts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut lv = test_driver(&dir);
        let a = vm(VM_A, "vm-a");
        let caps = VmLimits {
            vcpu_percent: Some(50),
            disk_bytes_sec: Some(10 << 20),
            disk_iops_sec: Some(300),
        };
        let out = execute(&mut lv, &Action::Limit(a.clone(), caps));
        assert!(out.ok, "{out:?}");
        // the test driver has neither a live vCPU quota nor a live disk update: said so
        assert!(
            out.message.contains("vCPU cap not applied live")
                && out.message.contains("disk I/O cap not applied live")
                && out.message.contains("before: no caps"),
            "{out:?}"
        );
        let xml = definition(&mut lv, VM_A);
        assert_eq!(parse_limits(&xml), caps, "{xml}");
        assert_eq!(
            xml.matches("<total_bytes_sec>10485760</total_bytes_sec>")
                .count(),
            2
        );
        assert_eq!(
            xml.matches("<total_iops_sec>300</total_iops_sec>").count(),
            2
        );
        // the rest of the definition survived the round trip
        let facts = parse_domain(&xml).unwrap();
        assert_eq!((facts.vcpus, facts.mem_kib), (4, 4 << 20));
        assert_eq!(facts.disks, ["vda", "vdb"]);
        assert!(xml.contains("device='cdrom'"));

        let lifted = execute(&mut lv, &Action::Limit(a, VmLimits::NONE));
        assert!(lifted.ok, "{lifted:?}");
        assert!(
            lifted.message.contains("before: vCPU ≤ 50% each"),
            "{lifted:?}"
        );
        let xml = definition(&mut lv, VM_A);
        assert_eq!(parse_limits(&xml), VmLimits::NONE, "{xml}");
        assert!(!xml.contains("iotune") && !xml.contains("<quota>"), "{xml}");
    }

    #[test]
    fn release_and_wipe_finds_the_volumes_and_never_pretends() {
        let dir = tempfile::tempdir().unwrap();
        let mut lv = test_driver(&dir);
        let (a, b) = (vm(VM_A, "vm-a"), vm(VM_B, "vm-b"));
        let running = execute(&mut lv, &Action::ReleaseAndWipe(a.clone()));
        assert!(
            !running.ok && running.message.contains("running"),
            "{running:?}"
        );
        for v in [&a, &b] {
            assert!(execute(&mut lv, &Action::Stop(v.clone(), "before-release".into())).ok);
        }

        // vm-b's second disk is a plain file, its third a shared volume: refused, nothing touched
        let out = execute(&mut lv, &Action::ReleaseAndWipe(b.clone()));
        assert!(
            !out.ok
                && out
                    .message
                    .contains("disk vdb cannot be wiped through libvirt"),
            "{out:?}"
        );
        let evidence = wipe_evidence(&out);
        assert_eq!(
            evidence.disks[0].state,
            DiskWipeState::NotWiped(
                volume("b.img", 8),
                "not wiped: vdb, vdc cannot be wiped".into()
            )
        );
        assert_eq!(evidence.disks[1].source, "/srv/plain.img");
        assert!(
            matches!(&evidence.disks[1].state, DiskWipeState::NotWipeable(why) if why.contains("/srv/plain.img is in no libvirt storage pool")),
            "{evidence:?}"
        );
        // a volume like any other, but shared: never wiped for one VM's release
        assert!(
            matches!(&evidence.disks[2].state, DiskWipeState::NotWipeable(why) if why.starts_with("shared with other VMs")),
            "{evidence:?}"
        );
        assert!(lv.find(&b).unwrap().is_some());

        // vm-a: both disks resolve to their volumes (by path and by pool/volume); the test
        // driver cannot wipe, so the release stops at the first disk with libvirt's reason
        let out = execute(&mut lv, &Action::ReleaseAndWipe(a.clone()));
        assert!(
            !out.ok && out.message.contains("failed at disk vda"),
            "{out:?}"
        );
        let evidence = wipe_evidence(&out);
        assert_eq!(
            (
                evidence.disks[0].target.as_str(),
                evidence.disks[0].source.as_str()
            ),
            ("vda", "/pool-a/root.img")
        );
        assert!(
            matches!(&evidence.disks[0].state, DiskWipeState::NotWiped(v, why) if *v == volume("root.img", 20) && why.contains("virStorageVolWipe")),
            "{evidence:?}"
        );
        assert_eq!(
            evidence.disks[1].state,
            DiskWipeState::NotWiped(
                volume("data.img", 100),
                "not reached: the wipe of vda failed".into()
            )
        );
        assert_eq!(evidence.disks[1].source, "pool-a/data.img");
        assert!(
            lv.find(&a).unwrap().is_some(),
            "still defined: the release can be retried"
        );

        // deleting a volume is real on the test driver: afterwards the disk is in no pool
        lv.delete(&volume("root.img", 20)).unwrap();
        let disks = lv.disks(&a).unwrap();
        assert!(
            matches!(&disks[0].volume, Err(why) if why.contains("/pool-a/root.img is in no libvirt storage pool")),
            "{disks:?}"
        );
        assert_eq!(disks[1].volume, Ok(volume("data.img", 100)));
    }
}
