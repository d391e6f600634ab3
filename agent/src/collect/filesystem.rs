//! Space and I/O of every real filesystem: the list from `{proc}/mounts`, space from `statvfs`
//! on each mount point, read/write bytes from `{proc}/diskstats` for the mount's device.

use super::{rate, read_into, CollectError, Collector, Paths, RELIST_EVERY};
use nix::sys::stat::{major, minor};
use std::path::{Path, PathBuf};
use std::time::Instant;
use yunjian_protocol::{DiskSample, Report};

/// Filesystem types that hold no user data: kernel interfaces, memory-backed, overlays of
/// other filesystems and read-only images.
const PSEUDO_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "erofs",
    "fusectl",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "nfsd",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Network filesystems are skipped: `statvfs` on a hard-mounted share whose server is gone
/// blocks for ever, and would stall every report. Their space belongs to the file server.
const NETWORK_TYPES: &[&str] = &[
    "afs",
    "ceph",
    "cifs",
    "glusterfs",
    "lustre",
    "nfs",
    "nfs4",
    "smb3",
    "smbfs",
];

/// Mount points under these are kernel interfaces or container-runtime internals.
const SKIPPED_PREFIXES: &[&str] = &[
    "/dev",
    "/proc",
    "/sys",
    "/run/credentials",
    "/var/lib/docker",
    "/var/lib/containers/storage",
];

/// One line of `/proc/mounts`, with the kernel's octal escapes (`\040` for a space) undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The device or source (`/dev/sda1`, `rpool/data`).
    pub source: String,
    pub mount: String,
    pub fs_type: String,
}

/// Every mount in the text of `/proc/mounts` (`"/dev/vda1 / ext4 rw,relatime 0 0"` lines);
/// lines with fewer than three fields are ignored.
pub fn parse_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            Some(MountEntry {
                source: unescape(fields.next()?),
                mount: unescape(fields.next()?),
                fs_type: unescape(fields.next()?),
            })
        })
        .collect()
}

/// Undo the `\ooo` octal escapes the kernel writes for space, tab, newline and backslash.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let raw = field.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let octal = raw
            .get(i + 1..i + 4)
            .filter(|d| raw[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0')));
        match octal.and_then(|n| u8::try_from(n).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(raw[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Does this mount hold real, local storage worth reporting?
pub fn is_real(entry: &MountEntry) -> bool {
    let fs = entry.fs_type.as_str();
    let under = |prefix: &str| {
        entry
            .mount
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    !PSEUDO_TYPES.contains(&fs)
        && !NETWORK_TYPES.contains(&fs)
        && !fs.starts_with("cgroup")
        && !SKIPPED_PREFIXES.iter().any(|p| under(p))
}

/// The real filesystems among `entries`, each source once: a device bind-mounted elsewhere
/// (containers' `/etc/hosts`, a btrfs subvolume) is reported at its first mount, as `df` does.
pub fn real_filesystems(entries: Vec<MountEntry>) -> Vec<MountEntry> {
    let mut out: Vec<MountEntry> = Vec::new();
    for entry in entries {
        if is_real(&entry) && !out.iter().any(|seen| seen.source == entry.source) {
            out.push(entry);
        }
    }
    out
}

/// Read `{proc}/mounts` and keep the real filesystems.
pub fn list(proc: &Path) -> Result<Vec<MountEntry>, CollectError> {
    let path = proc.join("mounts");
    let mut text = String::new();
    read_into(&path, &mut text)?;
    Ok(real_filesystems(parse_mounts(&text)))
}

/// Size and used space of the filesystem mounted at `mount`, in KiB, as `df` computes them:
/// used = (blocks − free blocks) × fragment size; blocks reserved for root count as used.
pub fn space_kib(mount: &str) -> Result<(u64, u64), nix::Error> {
    let st = nix::sys::statvfs::statvfs(mount)?;
    let unit = match st.fragment_size() {
        0 => st.block_size(),
        n => n,
    };
    let kib = |blocks: u64| blocks.saturating_mul(unit) / 1024;
    let blocks = st.blocks();
    Ok((kib(blocks), kib(blocks.saturating_sub(st.blocks_free()))))
}

/// The fields of one `/proc/diskstats` line this collector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskStat<'a> {
    pub major: u64,
    pub minor: u64,
    pub name: &'a str,
    pub read_bytes: u64,
    pub written_bytes: u64,
}

/// Parse one line of `/proc/diskstats`: `major minor name reads merged sectors_read ms writes
/// merged sectors_written ...`. Sectors are always 512 bytes there, whatever the device's.
pub fn parse_diskstats_line(line: &str) -> Option<DiskStat<'_>> {
    const SECTOR: u64 = 512;
    let mut f = line.split_ascii_whitespace();
    let major = f.next()?.parse().ok()?;
    let minor = f.next()?.parse().ok()?;
    let name = f.next()?;
    let sectors_read: u64 = f.nth(2)?.parse().ok()?;
    let sectors_written: u64 = f.nth(3)?.parse().ok()?;
    Some(DiskStat {
        major,
        minor,
        name,
        read_bytes: sectors_read.saturating_mul(SECTOR),
        written_bytes: sectors_written.saturating_mul(SECTOR),
    })
}

/// How to find a mount's line in `/proc/diskstats`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeviceKey {
    /// Kernel name of the source device (`/dev/mapper/vg-root` resolves to `dm-0`).
    name: Option<String>,
    /// `st_dev` of the mount point (catches `/dev/root` and other aliases); 0:x for
    /// filesystems without one block device (btrfs), which match no line.
    dev: (u64, u64),
}

impl DeviceKey {
    fn of(entry: &MountEntry) -> Self {
        let name = entry.source.strip_prefix("/dev/").map(|alias| {
            std::fs::canonicalize(&entry.source)
                .ok()
                .and_then(|p| p.file_name()?.to_str().map(str::to_string))
                .unwrap_or_else(|| alias.rsplit('/').next().unwrap_or(alias).to_string())
        });
        let dev = nix::sys::stat::stat(entry.mount.as_str())
            .map(|st| (major(st.st_dev), minor(st.st_dev)))
            .unwrap_or((0, 0));
        DeviceKey { name, dev }
    }

    fn matches(&self, stat: &DiskStat<'_>) -> bool {
        self.name.as_deref() == Some(stat.name)
            || (self.dev.0 != 0 && self.dev == (stat.major, stat.minor))
    }
}

#[derive(Debug)]
struct Tracked {
    mount: String,
    device: DeviceKey,
    /// Read and written bytes at the previous sample, this sample.
    previous: Option<(u64, u64)>,
    current: Option<(u64, u64)>,
}

/// Fills [`Report::disks`].
#[derive(Debug)]
pub struct Filesystems {
    proc: PathBuf,
    diskstats: PathBuf,
    buf: String,
    tracked: Vec<Tracked>,
    ticks_to_relist: u32,
    last_sample: Option<Instant>,
}

impl Filesystems {
    pub fn boxed(paths: &Paths) -> Box<dyn Collector> {
        Box::new(Filesystems {
            proc: paths.proc.clone(),
            diskstats: paths.proc.join("diskstats"),
            buf: String::new(),
            tracked: Vec::new(),
            ticks_to_relist: 0,
            last_sample: None,
        })
    }

    /// Rebuild the mount list, keeping the counters of mounts still there.
    fn relist(&mut self) -> Result<(), CollectError> {
        let mut old = std::mem::take(&mut self.tracked);
        for entry in list(&self.proc)? {
            let device = DeviceKey::of(&entry);
            let previous = old
                .iter()
                .position(|t| t.mount == entry.mount && t.device == device)
                .and_then(|i| old.swap_remove(i).previous);
            self.tracked.push(Tracked {
                mount: entry.mount,
                device,
                previous,
                current: None,
            });
        }
        Ok(())
    }

    /// Fill `current` of each mount from `/proc/diskstats`.
    fn read_io(&mut self) -> Result<(), CollectError> {
        for t in &mut self.tracked {
            t.current = None;
        }
        read_into(&self.diskstats, &mut self.buf)?;
        for stat in self.buf.lines().filter_map(parse_diskstats_line) {
            for t in self.tracked.iter_mut().filter(|t| t.device.matches(&stat)) {
                t.current = Some((stat.read_bytes, stat.written_bytes));
            }
        }
        Ok(())
    }
}

impl Collector for Filesystems {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn collect(&mut self, out: &mut Report) -> Result<(), CollectError> {
        if self.ticks_to_relist == 0 {
            self.relist()?;
            self.ticks_to_relist = RELIST_EVERY;
        }
        self.ticks_to_relist -= 1;

        let now = Instant::now();
        let secs = self
            .last_sample
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        self.last_sample = Some(now);
        let io = self.read_io();

        let mut first_failure = None;
        let mut others = 0;
        out.disks.reserve(self.tracked.len());
        for t in &mut self.tracked {
            let (total_kib, used_kib) = match space_kib(&t.mount) {
                Ok(space) => space,
                Err(e) => {
                    match first_failure {
                        None => first_failure = Some((t.mount.clone(), e)),
                        Some(_) => others += 1,
                    }
                    continue;
                }
            };
            let previous = t.previous;
            let (read_bps, write_bps) = match t.current {
                Some((read, written)) => (
                    rate(previous.map(|p| p.0), read, secs),
                    rate(previous.map(|p| p.1), written, secs),
                ),
                None => (0, 0),
            };
            t.previous = t.current;
            out.disks.push(DiskSample {
                mount: t.mount.clone(),
                total_kib,
                used_kib,
                read_bps,
                write_bps,
            });
        }
        if let Some((mount, source)) = first_failure {
            // Probably unmounted: look again at the next tick.
            self.ticks_to_relist = 0;
            return Err(CollectError::Statvfs {
                mount,
                source,
                others,
            });
        }
        io
    }
}

#[cfg(test)]
mod tests {
    use super::super::empty_report;
    use super::*;

    const MOUNTS: &str = r"sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime,size=8123456k 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=1626708k,mode=755 0 0
/dev/mapper/vg0-root / ext4 rw,relatime,errors=remount-ro 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
/dev/sda1 /boot/efi vfat rw,relatime,fmask=0077 0 0
/dev/sdb1 /srv/vm\040images xfs rw,relatime,attr2,inode64 0 0
/dev/loop3 /snap/core/1234 squashfs ro,nodev,relatime 0 0
nas:/export /mnt/nas nfs4 rw,relatime,vers=4.2 0 0
overlay /var/lib/docker/overlay2/abc/merged overlay rw,relatime 0 0
/dev/mapper/vg0-root /var/lib/kubelet/pods/x/etc-hosts ext4 rw,relatime 0 0
rpool/data /data zfs rw,xattr,noacl 0 0
/dev/sdc1 /dev/shm-ish ext4 rw 0 0
/dev/sdd1 /devices ext4 rw 0 0
broken-line-with-two fields
";

    #[test]
    fn mounts_are_parsed_and_unescaped() {
        let all = parse_mounts(MOUNTS);
        assert_eq!(all.len(), 15, "the two-field line is ignored");
        assert_eq!(
            all[7],
            MountEntry {
                source: "/dev/sdb1".into(),
                mount: "/srv/vm images".into(),
                fs_type: "xfs".into()
            }
        );
        assert_eq!(unescape(r"a\134b\011c\0"), "a\\b\tc\\0");
    }

    #[test]
    fn only_real_local_filesystems_are_kept_each_device_once() {
        let mounts: Vec<(String, String)> = real_filesystems(parse_mounts(MOUNTS))
            .into_iter()
            .map(|e| (e.mount, e.fs_type))
            .collect();
        let expected = [
            ("/", "ext4"),
            ("/boot/efi", "vfat"),
            ("/srv/vm images", "xfs"),
            ("/data", "zfs"),
            ("/devices", "ext4"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(m, f)| (m.to_string(), f.to_string()))
            .collect();
        assert_eq!(mounts, expected);
    }

    const DISKSTATS: &str = "\
   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 34167 6305 2970130 23420 28102 35428 5171336 21714 0 11616 46506 10256 76 1058400 1035 5305 336
 253       0 dm-0 670206 0 38909056 259490 10900330 0 462374760 12906518 0 1177098 13195902
   8      16 sdb 12 0
";

    #[test]
    fn diskstats_lines_give_bytes_from_512_byte_sectors() {
        let stats: Vec<DiskStat> = DISKSTATS.lines().filter_map(parse_diskstats_line).collect();
        assert_eq!(stats.len(), 3, "the truncated sdb line is skipped");
        assert_eq!(
            stats[1],
            DiskStat {
                major: 254,
                minor: 0,
                name: "vda",
                read_bytes: 2_970_130 * 512,
                written_bytes: 5_171_336 * 512,
            }
        );
        assert_eq!(stats[2].name, "dm-0");
        assert_eq!(stats[2].written_bytes, 462_374_760 * 512);
    }

    #[test]
    fn a_device_matches_by_kernel_name_or_by_number() {
        let line = parse_diskstats_line(DISKSTATS.lines().nth(1).unwrap()).unwrap();
        let by_name = DeviceKey {
            name: Some("vda".into()),
            dev: (0, 41),
        };
        let by_number = DeviceKey {
            name: Some("root".into()),
            dev: (254, 0),
        };
        let neither = DeviceKey {
            name: None,
            dev: (0, 0),
        };
        assert!(by_name.matches(&line));
        assert!(by_number.matches(&line));
        assert!(!neither.matches(&line));
        assert_eq!(
            DeviceKey::of(&MountEntry {
                source: "/dev/disk/by-label/none-such".into(),
                mount: "/no/such/mount".into(),
                fs_type: "ext4".into(),
            }),
            DeviceKey {
                name: Some("none-such".into()),
                dev: (0, 0)
            }
        );
    }

    #[test]
    fn io_rates_come_from_the_fake_diskstats_of_the_root_device() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().to_path_buf();
        let root_dev = nix::sys::stat::stat("/").unwrap().st_dev;
        let (maj, min) = (major(root_dev), minor(root_dev));
        std::fs::write(proc.join("mounts"), "/dev/fake-root / ext4 rw 0 0\n").unwrap();
        let stats = |read_sectors: u64, written_sectors: u64| {
            format!("{maj} {min} fake-root 1 0 {read_sectors} 0 1 0 {written_sectors} 0 0 0 0\n")
        };
        std::fs::write(proc.join("diskstats"), stats(1000, 2000)).unwrap();
        let paths = Paths {
            proc,
            ..Paths::default()
        };
        let mut fs = Filesystems::boxed(&paths);
        let mut report = empty_report();
        fs.collect(&mut report).unwrap();
        let first_done = Instant::now();
        assert_eq!(report.disks.len(), 1);
        assert_eq!(report.disks[0].mount, "/");
        assert_eq!(
            (report.disks[0].read_bps, report.disks[0].write_bps),
            (0, 0)
        );
        assert!(report.disks[0].total_kib > 0);

        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::write(paths.proc.join("diskstats"), stats(1000 + 2048, 2000)).unwrap();
        report.disks.clear();
        let second_start = Instant::now();
        fs.collect(&mut report).unwrap();
        let outer = first_done.elapsed().as_secs_f64() + 0.01;
        let inner = second_start.duration_since(first_done).as_secs_f64();
        let bytes = 2048.0 * 512.0;
        let read_bps = report.disks[0].read_bps as f64;
        assert!(
            read_bps >= bytes / outer && read_bps <= bytes / inner,
            "{read_bps} not within [{}, {}]",
            bytes / outer,
            bytes / inner
        );
        assert_eq!(report.disks[0].write_bps, 0);
    }
}
