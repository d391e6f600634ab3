//! The few facts the agent reads from a libvirt domain XML, the snapshot XML it writes, and the
//! one edit it makes (the caps of `Limit`). Pure functions over strings: libvirt's own output is
//! regular (one element per fact, attribute values quoted), so a small scanner does and no XML
//! library is pulled in.

use yunjian_protocol::VmLimits;

/// What the guest report needs from a domain's (persistent) definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainFacts {
    /// vCPUs the domain boots with: `<vcpu current='N'>`, else the `<vcpu>` count.
    pub vcpus: u16,
    /// The domain's memory size (`<memory>`), in KiB.
    pub mem_kib: u64,
    /// Target names (`vda`, `sdb`...) of its disks (`<disk device='disk'>`; CD-ROMs and floppies
    /// are left out).
    pub disks: Vec<String>,
}

/// Read [`DomainFacts`] from a domain XML; `None` when `<vcpu>` or `<memory>` is missing or
/// unreadable.
pub fn parse_domain(xml: &str) -> Option<DomainFacts> {
    let vcpu = elements(xml, "vcpu").next()?;
    let vcpus = attr(vcpu.attrs, "current")
        .or(vcpu.body)
        .and_then(|v| v.trim().parse().ok())?;
    let memory = elements(xml, "memory").next()?;
    let mem_kib = to_kib(memory.body?.trim(), attr(memory.attrs, "unit"))?;
    let disks = elements(xml, "disk")
        .filter(|d| attr(d.attrs, "device").unwrap_or("disk") == "disk")
        .filter_map(|d| {
            let target = elements(d.body?, "target").next()?;
            attr(target.attrs, "dev").map(str::to_string)
        })
        .collect();
    Some(DomainFacts {
        vcpus,
        mem_kib,
        disks,
    })
}

/// Where a disk's data lives, as its `<disk>` element says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// `type='file'` (`<source file=…>`) or `type='block'` (`<source dev=…>`): a path, which
    /// is a storage volume only when some storage pool holds it.
    Path(String),
    /// `type='volume'`: a volume named in a pool.
    Volume { pool: String, volume: String },
    /// Anything else (`type='network'`, `nvme`, `vhostuser`...), or no source: its type.
    Other(String),
}

impl DiskSource {
    /// As the wipe evidence shows it.
    pub fn describe(&self) -> String {
        match self {
            DiskSource::Path(path) => path.clone(),
            DiskSource::Volume { pool, volume } => format!("{pool}/{volume}"),
            DiskSource::Other(_) => String::new(),
        }
    }
}

/// One disk of a domain, as a wiping release needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRef {
    /// Its target, e.g. `vda`.
    pub target: String,
    pub source: DiskSource,
    /// Marked `<shareable/>` or `<readonly/>`: it may be other VMs' disk too.
    pub shared: bool,
}

/// Every disk (`<disk device='disk'>`), in definition order.
pub fn parse_disk_sources(xml: &str) -> Vec<DiskRef> {
    elements(xml, "disk")
        .filter(|d| attr(d.attrs, "device").unwrap_or("disk") == "disk")
        .filter_map(|d| {
            let body = d.body?;
            let target = elements(body, "target").next()?;
            let target = attr(target.attrs, "dev")?.to_string();
            let kind = attr(d.attrs, "type").unwrap_or("file");
            let source = elements(body, "source").next();
            let source_attr = |name| source.and_then(|s| attr(s.attrs, name)).map(unescape);
            let found = match kind {
                "file" => source_attr("file").map(DiskSource::Path),
                "block" => source_attr("dev").map(DiskSource::Path),
                "volume" => source_attr("pool")
                    .zip(source_attr("volume"))
                    .map(|(pool, volume)| DiskSource::Volume { pool, volume }),
                _ => None,
            };
            let source = found.unwrap_or_else(|| match source {
                None => DiskSource::Other(format!("{kind}, without a source")),
                Some(_) => DiskSource::Other(kind.to_string()),
            });
            let shared = ["shareable", "readonly"]
                .iter()
                .any(|flag| elements(body, flag).next().is_some());
            Some(DiskRef {
                target,
                source,
                shared,
            })
        })
        .collect()
}

/// The caps [`set_limits`] writes, read back from a domain XML: the vCPU share from
/// `<cputune>` (quota over period), the disk caps from the first disk's `<iotune>`.
pub fn parse_limits(xml: &str) -> VmLimits {
    let number = |body: &str, name: &str| -> Option<u64> {
        elements(body, name)
            .next()
            .and_then(|e| e.body)
            .and_then(|v| v.trim().parse().ok())
    };
    let cputune = elements(xml, "cputune").next().and_then(|e| e.body);
    let vcpu_percent = cputune.and_then(|c| {
        let period = number(c, "period")?;
        let quota = number(c, "quota")?;
        (period > 0)
            .then(|| u8::try_from(quota * 100 / period).ok())
            .flatten()
    });
    let iotune = elements(xml, "disk")
        .filter(|d| attr(d.attrs, "device").unwrap_or("disk") == "disk")
        .find_map(|d| d.body)
        .and_then(|body| elements(body, "iotune").next())
        .and_then(|e| e.body);
    VmLimits {
        vcpu_percent,
        disk_bytes_sec: iotune.and_then(|i| number(i, "total_bytes_sec")),
        disk_iops_sec: iotune.and_then(|i| number(i, "total_iops_sec")),
    }
}

/// The domain XML with `limits` as its caps: `<period>`/`<quota>` in `<cputune>` (its other
/// settings, such as shares and pinning, are kept) and, in every `<disk device='disk'>`, an
/// `<iotune>` with `total_bytes_sec`/`total_iops_sec` (the agent owns `<iotune>`: an existing
/// one is replaced, and removed when no disk cap is set).
pub fn set_limits(xml: &str, limits: VmLimits) -> String {
    let mut out = xml.to_string();
    // cputune: drop the old period and quota, then add ours
    if let Some(tune) = span(&out, "cputune", 0) {
        if let Some((from, to)) = tune.inner {
            let mut inner = out[from..to].to_string();
            for name in ["period", "quota"] {
                while let Some(e) = span(&inner, name, 0) {
                    inner.replace_range(e.start..e.end, "");
                }
            }
            out.replace_range(from..to, &inner);
        }
    }
    if let Some(quota) = limits.vcpu_quota_us() {
        let caps = format!(
            "<period>{}</period><quota>{quota}</quota>",
            VmLimits::VCPU_PERIOD_US
        );
        match span(&out, "cputune", 0) {
            Some(Span {
                inner: Some((from, _)),
                ..
            }) => out.insert_str(from, &caps),
            Some(Span { start, end, .. }) => {
                out.replace_range(start..end, &format!("<cputune>{caps}</cputune>"))
            }
            None => {
                let at = span(&out, "vcpu", 0).map_or_else(|| domain_body_start(&out), |v| v.end);
                out.insert_str(at, &format!("<cputune>{caps}</cputune>"));
            }
        }
    }
    // disks: replace each disk's iotune
    let mut iotune = String::new();
    if let Some(bytes) = limits.disk_bytes_sec {
        iotune.push_str(&format!("<total_bytes_sec>{bytes}</total_bytes_sec>"));
    }
    if let Some(iops) = limits.disk_iops_sec {
        iotune.push_str(&format!("<total_iops_sec>{iops}</total_iops_sec>"));
    }
    let mut at = 0;
    while let Some(disk) = span(&out, "disk", at) {
        at = disk.end;
        let Some((from, to)) = disk.inner.filter(|_| is_disk(&out, disk)) else {
            continue;
        };
        let mut inner = out[from..to].to_string();
        while let Some(e) = span(&inner, "iotune", 0) {
            inner.replace_range(e.start..e.end, "");
        }
        if !iotune.is_empty() {
            inner.push_str(&format!("<iotune>{iotune}</iotune>"));
        }
        let grew = inner.len() as isize - (to - from) as isize;
        out.replace_range(from..to, &inner);
        at = (at as isize + grew) as usize;
    }
    out
}

/// Every `<disk device='disk'>` element of a domain XML, whole (for `virDomainUpdateDeviceFlags`).
pub fn disk_elements(xml: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(disk) = span(xml, "disk", at) {
        if disk.inner.is_some() && is_disk(xml, disk) {
            found.push(&xml[disk.start..disk.end]);
        }
        at = disk.end;
    }
    found
}

/// A `<disk>` element of `device='disk'` (the default), not a CD-ROM or floppy.
fn is_disk(xml: &str, disk: Span) -> bool {
    let head_end = disk.inner.map_or(disk.end, |(from, _)| from);
    attr(&xml[disk.start..head_end], "device").unwrap_or("disk") == "disk"
}

/// Where the content of `<domain>` starts (after its opening tag); 0 when there is none.
fn domain_body_start(xml: &str) -> usize {
    span(xml, "domain", 0)
        .and_then(|d| d.inner)
        .map_or(0, |(from, _)| from)
}

/// One element's byte range in a document, and its content's (`None` for `<x/>`).
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    inner: Option<(usize, usize)>,
}

/// The first element named `name` at or after byte `from` (not nested in one of its kind).
fn span(xml: &str, name: &str, from: usize) -> Option<Span> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut search = from;
    loop {
        let start = search + xml[search..].find(&open)?;
        let after = start + open.len();
        if !xml[after..].starts_with(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/') {
            search = after;
            continue;
        }
        let head_end = after + xml[after..].find('>')?;
        if xml[..head_end].ends_with('/') {
            return Some(Span {
                start,
                end: head_end + 1,
                inner: None,
            });
        }
        let inner_start = head_end + 1;
        let inner_end = inner_start + xml[inner_start..].find(&close)?;
        return Some(Span {
            start,
            end: inner_end + close.len(),
            inner: Some((inner_start, inner_end)),
        });
    }
}

/// Undo [`escape`] (and libvirt's own escaping of attribute values).
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The XML for `virDomainSnapshotCreateXML`: the snapshot's name and a description.
pub fn snapshot_xml(name: &str) -> String {
    format!(
        "<domainsnapshot><name>{}</name><description>taken by yunjian-agent before a resource \
         reclaim action</description></domainsnapshot>",
        escape(name)
    )
}

/// Escape text for an XML element or attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A memory amount in libvirt's units, in KiB (rounded down).
fn to_kib(value: &str, unit: Option<&str>) -> Option<u64> {
    let n: u64 = value.parse().ok()?;
    let bytes_per_unit: u64 = match unit.unwrap_or("KiB") {
        "b" | "bytes" => 1,
        "KB" => 1_000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(bytes_per_unit).map(|b| b / 1024)
}

/// One element: its attribute text and, unless it is empty (`<x/>`), its content.
#[derive(Debug, Clone, Copy)]
struct Element<'a> {
    attrs: &'a str,
    body: Option<&'a str>,
}

/// The elements named `name` in `xml`, in document order (not nested in one another: the
/// elements read here never are).
fn elements<'a>(xml: &'a str, name: &'a str) -> impl Iterator<Item = Element<'a>> + 'a {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut rest = xml;
    std::iter::from_fn(move || loop {
        let at = rest.find(&open)?;
        let after = &rest[at + open.len()..];
        // `<vcpu` must not match `<vcpus>` or `<vcpupin>`
        if !after.starts_with(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/') {
            rest = after;
            continue;
        }
        let end = after.find('>')?;
        let head = &after[..end];
        if let Some(attrs) = head.strip_suffix('/') {
            rest = &after[end + 1..];
            return Some(Element { attrs, body: None });
        }
        let content = &after[end + 1..];
        let stop = content.find(&close)?;
        rest = &content[stop + close.len()..];
        return Some(Element {
            attrs: head,
            body: Some(&content[..stop]),
        });
    })
}

/// An attribute's value in an element's attribute text (quoted with `'` or `"`).
fn attr<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = attrs;
    loop {
        let at = rest.find(name)?;
        let before_ok = at == 0 || rest[..at].ends_with(|c: char| c.is_ascii_whitespace());
        let after = rest[at + name.len()..].trim_start();
        if let (true, Some(value)) = (before_ok, after.strip_prefix('=')) {
            let value = value.trim_start();
            let quote = value.chars().next()?;
            if quote == '\'' || quote == '"' {
                let value = &value[1..];
                return value.find(quote).map(|end| &value[..end]);
            }
        }
        rest = &rest[at + name.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As `virsh dumpxml --inactive` prints a qemu domain.
    const QEMU: &str = r#"<domain type='kvm'>
  <name>web-01</name>
  <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
  <memory unit='KiB'>8388608</memory>
  <currentMemory unit='KiB'>4194304</currentMemory>
  <vcpu placement='static' current='2'>4</vcpu>
  <vcpus>
    <vcpu id='0' enabled='yes' hotpluggable='no'/>
  </vcpus>
  <cpu mode='host-model'><numa><cell id='0' cpus='0-3' memory='8388608' unit='KiB'/></numa></cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web-01.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <disk type="block" device="disk">
      <source dev="/dev/vg0/web-01-data"/>
      <target dev="vdb" bus="virtio"/>
    </disk>
    <memballoon model='virtio'/>
  </devices>
</domain>"#;

    #[test]
    fn reads_size_and_disks_of_a_qemu_domain() {
        assert_eq!(
            parse_domain(QEMU),
            Some(DomainFacts {
                vcpus: 2,
                mem_kib: 8_388_608,
                disks: vec!["vda".into(), "vdb".into()],
            })
        );
    }

    #[test]
    fn units_default_and_missing_facts() {
        let xml = "<domain><memory unit='GiB'>2</memory><vcpu>3</vcpu></domain>";
        let facts = parse_domain(xml).unwrap();
        assert_eq!((facts.vcpus, facts.mem_kib), (3, 2 * 1024 * 1024));
        assert!(facts.disks.is_empty());
        let plain = parse_domain("<domain><memory>1024</memory><vcpu>1</vcpu></domain>");
        assert_eq!(plain.map(|f| f.mem_kib), Some(1024));
        assert_eq!(
            parse_domain("<domain><memory unit='KiB'>1</memory></domain>"),
            None
        );
        assert_eq!(
            parse_domain("<domain><memory unit='parsec'>1</memory><vcpu>1</vcpu></domain>"),
            None
        );
        assert_eq!(attr(" dev='vda' bus='virtio'", "bus"), Some("virtio"));
        assert_eq!(attr(" xdev='vda'", "dev"), None);
    }

    #[test]
    fn disk_sources_name_paths_volumes_and_the_rest() {
        let xml = r#"<domain><devices>
    <disk type='file' device='disk'><source file='/img/a&amp;b.qcow2'/><target dev='vda'/></disk>
    <disk type='file' device='cdrom'><target dev='sda'/></disk>
    <disk type='volume' device='disk'><source pool='ssd' volume='web-data'/><target dev='vdb'/></disk>
    <disk type='block' device='disk'><source dev='/dev/vg0/x'/><target dev='vdc'/></disk>
    <disk type='network' device='disk'><source protocol='rbd' name='p/x'/><target dev='vdd'/></disk>
    <disk type='file' device='disk'><target dev='vde'/></disk>
    <disk type='file' device='disk'><source file='/img/shared'/><target dev='vdf'/><shareable/></disk>
    <disk type='file' device='disk'><source file='/img/base'/><target dev='vdg'/><readonly/></disk>
</devices></domain>"#;
        let disk = |target: &str, source, shared| DiskRef {
            target: target.into(),
            source,
            shared,
        };
        assert_eq!(
            parse_disk_sources(xml),
            vec![
                disk("vda", DiskSource::Path("/img/a&b.qcow2".into()), false),
                disk(
                    "vdb",
                    DiskSource::Volume {
                        pool: "ssd".into(),
                        volume: "web-data".into()
                    },
                    false
                ),
                disk("vdc", DiskSource::Path("/dev/vg0/x".into()), false),
                disk("vdd", DiskSource::Other("network".into()), false),
                disk(
                    "vde",
                    DiskSource::Other("file, without a source".into()),
                    false
                ),
                disk("vdf", DiskSource::Path("/img/shared".into()), true),
                disk("vdg", DiskSource::Path("/img/base".into()), true),
            ]
        );
        assert_eq!(disk_elements(xml).len(), 7, "the CD-ROM is left out");
    }

    #[test]
    fn limits_are_written_read_back_and_lifted_keeping_other_tuning() {
        let capped = VmLimits {
            vcpu_percent: Some(40),
            disk_bytes_sec: Some(1_048_576),
            disk_iops_sec: Some(200),
        };
        assert_eq!(parse_limits(QEMU), VmLimits::NONE);
        let limited = set_limits(QEMU, capped);
        assert_eq!(parse_limits(&limited), capped);
        assert!(limited.contains("<cputune><period>100000</period><quota>40000</quota></cputune>"));
        // every disk is capped, the CD-ROM is not
        assert_eq!(limited.matches("<iotune>").count(), 2);
        let cdrom = limited.find("device='cdrom'").unwrap();
        assert!(!limited[cdrom..cdrom + 80].contains("iotune"));
        // a second Limit replaces, it does not add
        let cpu_only = VmLimits {
            vcpu_percent: Some(10),
            ..VmLimits::NONE
        };
        let again = set_limits(&limited, cpu_only);
        assert_eq!(parse_limits(&again), cpu_only);
        assert_eq!(again.matches("<quota>").count(), 1);
        assert!(!again.contains("iotune"));
        // lifting keeps the administrator's other tuning
        let tuned = QEMU.replace(
            "<cpu mode",
            "<cputune><shares>2048</shares><period>50000</period><quota>5000</quota></cputune><cpu mode",
        );
        assert_eq!(parse_limits(&tuned).vcpu_percent, Some(10));
        let lifted = set_limits(&tuned, VmLimits::NONE);
        assert_eq!(parse_limits(&lifted), VmLimits::NONE);
        assert!(lifted.contains("<cputune><shares>2048</shares></cputune>"));
        assert_eq!(
            set_limits(&set_limits(QEMU, capped), VmLimits::NONE)
                .replace("<cputune></cputune>", ""),
            QEMU
        );
        // a domain without <vcpu> (not libvirt's output, but harmless)
        let bare = set_limits("<domain type='kvm'><name>x</name></domain>", cpu_only);
        assert_eq!(parse_limits(&bare), cpu_only);
    }

    #[test]
    fn snapshot_names_are_escaped() {
        assert_eq!(
            snapshot_xml("a<b>&'\""),
            "<domainsnapshot><name>a&lt;b&gt;&amp;&apos;&quot;</name><description>taken by \
             yunjian-agent before a resource reclaim action</description></domainsnapshot>"
        );
    }
}
