//! The few facts the agent reads from a libvirt domain XML, and the snapshot XML it writes.
//! Pure functions over strings: libvirt's own output is regular (one element per fact, attribute
//! values quoted), so a small scanner does and no XML library is pulled in.

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
    fn snapshot_names_are_escaped() {
        assert_eq!(
            snapshot_xml("a<b>&'\""),
            "<domainsnapshot><name>a&lt;b&gt;&amp;&apos;&quot;</name><description>taken by \
             yunjian-agent before a resource reclaim action</description></domainsnapshot>"
        );
    }
}
