//! Traffic of every network interface except loopback, from `{proc}/net/dev`.
//!
//! One read of one file per tick for all interfaces (sysinfo's `Networks` opens seven sysfs
//! files per interface and lists the directory on every refresh).

use super::{number, parse_err, rate, read_into, CollectError, Collector, ParseError, Paths};
use std::path::PathBuf;
use std::time::Instant;
use yunjian_protocol::{NetSample, Report};

/// Byte counters of one interface since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters<'a> {
    pub name: &'a str,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Every interface in the text of `/proc/net/dev`: two header lines, then
/// `"  eth0: rx_bytes rx_packets ... (8 receive fields) tx_bytes ..."`.
pub fn parse_net_dev(text: &str) -> impl Iterator<Item = Result<Counters<'_>, ParseError>> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, fields)| {
            let mut fields = fields.split_ascii_whitespace();
            Ok(Counters {
                name: name.trim(),
                rx_bytes: number("receive bytes", fields.next())?,
                tx_bytes: number("transmit bytes", fields.nth(7))?,
            })
        })
}

#[derive(Debug)]
struct Previous {
    name: String,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// Fills [`Report::nets`].
#[derive(Debug)]
pub struct Network {
    path: PathBuf,
    buf: String,
    previous: Vec<Previous>,
    last_sample: Option<Instant>,
}

impl Network {
    pub fn boxed(paths: &Paths) -> Box<dyn Collector> {
        Box::new(Network {
            path: paths.proc.join("net/dev"),
            buf: String::new(),
            previous: Vec::new(),
            last_sample: None,
        })
    }
}

impl Collector for Network {
    fn name(&self) -> &'static str {
        "network"
    }

    fn collect(&mut self, out: &mut Report) -> Result<(), CollectError> {
        read_into(&self.path, &mut self.buf)?;
        let now = Instant::now();
        let secs = self
            .last_sample
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        self.last_sample = Some(now);
        for counters in parse_net_dev(&self.buf) {
            let c = counters.map_err(parse_err(&self.path))?;
            if c.name == "lo" {
                continue;
            }
            let previous = self.previous.iter().find(|p| p.name == c.name);
            out.nets.push(NetSample {
                name: c.name.to_string(),
                rx_bytes: c.rx_bytes,
                tx_bytes: c.tx_bytes,
                rx_bps: rate(previous.map(|p| p.rx_bytes), c.rx_bytes, secs),
                tx_bps: rate(previous.map(|p| p.tx_bytes), c.tx_bytes, secs),
            });
        }
        // Remember this sample's counters, allocating only for new interfaces.
        self.previous
            .retain(|p| out.nets.iter().any(|n| n.name == p.name));
        for n in &out.nets {
            match self.previous.iter_mut().find(|p| p.name == n.name) {
                Some(p) => (p.rx_bytes, p.tx_bytes) = (n.rx_bytes, n.tx_bytes),
                None => self.previous.push(Previous {
                    name: n.name.clone(),
                    rx_bytes: n.rx_bytes,
                    tx_bytes: n.tx_bytes,
                }),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::empty_report;
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  834120    9021    0    0    0     0          0         0   834120    9021    0    0    0     0       0          0
  eth0: 98765432  120000    0    3    0     0          0       120 12345678   90000    0    0    0     0       0          0
 vnet12:1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0
";

    #[test]
    fn every_interface_with_its_byte_counters() {
        let all: Vec<Counters> = parse_net_dev(NET_DEV).map(Result::unwrap).collect();
        assert_eq!(
            all,
            [
                Counters {
                    name: "lo",
                    rx_bytes: 834_120,
                    tx_bytes: 834_120
                },
                Counters {
                    name: "eth0",
                    rx_bytes: 98_765_432,
                    tx_bytes: 12_345_678
                },
                Counters {
                    name: "vnet12",
                    rx_bytes: 1000,
                    tx_bytes: 2000
                },
            ]
        );
    }

    #[test]
    fn a_truncated_line_names_the_missing_field() {
        let err = parse_net_dev("eth0: 1 2 3\n").next().unwrap().unwrap_err();
        assert_eq!(err, ParseError::Missing("transmit bytes"));
    }

    #[test]
    fn loopback_is_skipped_and_rates_follow_the_counters() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("net")).unwrap();
        let file = dir.path().join("net/dev");
        std::fs::write(&file, NET_DEV).unwrap();
        let paths = Paths {
            proc: dir.path().to_path_buf(),
            ..Paths::default()
        };
        let mut net = Network::boxed(&paths);
        let mut report = empty_report();
        net.collect(&mut report).unwrap();
        let names: Vec<&str> = report.nets.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["eth0", "vnet12"]);
        assert_eq!((report.nets[0].rx_bps, report.nets[0].tx_bps), (0, 0));
        let first_done = Instant::now();

        std::thread::sleep(std::time::Duration::from_millis(100));
        // eth0 received 1 MB more; vnet12 is gone (its VM stopped).
        std::fs::write(
            &file,
            "  eth0: 99765432 0 0 0 0 0 0 0 12345678 0 0 0 0 0 0 0\n",
        )
        .unwrap();
        let mut report = empty_report();
        let second_start = Instant::now();
        net.collect(&mut report).unwrap();
        let (outer, inner) = (
            first_done.elapsed().as_secs_f64() + 0.01,
            second_start.duration_since(first_done).as_secs_f64(),
        );
        assert_eq!(report.nets.len(), 1);
        let rx = report.nets[0].rx_bps as f64;
        assert!(rx >= 1e6 / outer && rx <= 1e6 / inner, "{rx}");
        assert_eq!(report.nets[0].tx_bps, 0);
        assert_eq!(report.nets[0].rx_bytes, 99_765_432);
    }
}
