//! [`Domains`] over one libvirt connection (the `virt` crate), opened on first use and reopened
//! after it breaks.

use super::domain_xml::{parse_domain, snapshot_xml};
use super::{DomainState, Domains, HypervisorConfig};
use std::fmt;
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;
use virt::error::ErrorNumber;
use virt::sys;
use yunjian_protocol::{GuestView, VmRef, VmSize};

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
