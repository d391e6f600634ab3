//! How many connections may be open: in all, and from one source address.
//!
//! Checked when a connection is accepted, before anything is read from it: a refused one costs
//! the accept and the close. What a connection that *was* admitted can hold before its client
//! logs in is bounded in `conn.rs` (a CONNECT of at most `max_connect_bytes`, within
//! `connect_timeout`).

use crate::{BrokerConfig, Refused};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Debug)]
pub(crate) struct Limits {
    max_total: usize,
    max_per_address: usize,
    unlimited: Vec<IpAddr>,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Open connections per address, for addresses with at least one (limited ones only).
    by_address: HashMap<IpAddr, usize>,
}

impl Limits {
    pub fn new(config: &BrokerConfig) -> Self {
        Limits {
            max_total: config.max_connections,
            max_per_address: config.max_connections_per_address,
            unlimited: config
                .unlimited_addresses
                .iter()
                .map(IpAddr::to_canonical)
                .collect(),
            open: Mutex::default(),
        }
    }

    /// Count a new connection from `addr` in, or say which cap it would exceed. Each `Ok` is
    /// matched by one [`Limits::release`] with the same address.
    pub fn admit(&self, addr: IpAddr) -> Result<(), Refused> {
        // an IPv4 client of a dual-stack listener shows as `::ffff:a.b.c.d`: count it as itself
        let addr = addr.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.max_total {
            return Err(Refused::MaxConnections);
        }
        if !self.unlimited.contains(&addr) {
            let n = open.by_address.entry(addr).or_default();
            if *n >= self.max_per_address {
                return Err(Refused::PerAddress);
            }
            *n += 1;
        }
        open.total += 1;
        Ok(())
    }

    /// A connection admitted from `addr` has closed.
    pub fn release(&self, addr: IpAddr) {
        let addr = addr.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_address.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn limits(total: usize, per_address: usize) -> Limits {
        Limits::new(&BrokerConfig {
            max_connections: total,
            max_connections_per_address: per_address,
            ..BrokerConfig::default()
        })
    }

    #[test]
    fn per_address_cap_counts_each_address_and_frees_on_release() {
        let l = limits(100, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(l.admit(a), Ok(()));
        // the same client through a dual-stack listener is the same address
        assert_eq!(l.admit(Ipv6Addr::from(0xffff_0a00_0001u128).into()), Ok(()));
        assert_eq!(l.admit(a), Err(Refused::PerAddress));
        assert_eq!(l.admit(b), Ok(()));
        l.release(a);
        assert_eq!(l.admit(a), Ok(()));
        assert_eq!(l.admit(a), Err(Refused::PerAddress));
    }

    #[test]
    fn total_cap_applies_to_unlimited_addresses_too() {
        let l = limits(3, 1);
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.admit(local), Ok(()), "loopback is not capped per address");
        }
        assert_eq!(l.admit(local), Err(Refused::MaxConnections));
        assert_eq!(
            l.admit("10.0.0.9".parse().unwrap()),
            Err(Refused::MaxConnections)
        );
        l.release(local);
        assert_eq!(l.admit("10.0.0.9".parse().unwrap()), Ok(()));
    }
}
