//! The pools file (`pools_file` in the aggregator's config): the physical hosts grouped into
//! resource pools, with what is kept back and the overcommit per resource. Read at start.
//!
//! ```toml
//! [[pool]]
//! name = "A区通用计算池"
//! hosts = ["host-a1", "host-a2"]   # node ids of the hosts' agents
//! nic_mbps = 10000                 # one host's NIC bandwidth, Mbit/s (0: no network capacity)
//! reserved = { vcpus = 8, mem_gb = 64 }                  # per pool; missing = 0
//! overcommit = { vcpus = 4.0 }                           # missing = 1.0 (none)
//! ```
//!
//! A pool's capacity is (total − reserved) × overcommit (see [`super::capacity`]).

use super::{Pool, Resources};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PoolsError {
    #[error("pools file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pools file {path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolsFile {
    #[serde(default)]
    pool: Vec<PoolSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolSpec {
    name: String,
    hosts: Vec<String>,
    #[serde(default)]
    nic_mbps: f64,
    #[serde(default)]
    reserved: Amounts<0>,
    #[serde(default)]
    overcommit: Amounts<1>,
}

/// Per-resource amounts; a missing one is `D`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Amounts<const D: u8> {
    vcpus: Option<f64>,
    mem_gb: Option<f64>,
    disk_gb: Option<f64>,
    net_mbps: Option<f64>,
}

impl<const D: u8> Default for Amounts<D> {
    fn default() -> Self {
        Amounts {
            vcpus: None,
            mem_gb: None,
            disk_gb: None,
            net_mbps: None,
        }
    }
}

impl<const D: u8> Amounts<D> {
    fn resources(&self) -> Resources {
        let d = f64::from(D);
        Resources {
            vcpus: self.vcpus.unwrap_or(d),
            mem_gb: self.mem_gb.unwrap_or(d),
            disk_gb: self.disk_gb.unwrap_or(d),
            net_mbps: self.net_mbps.unwrap_or(d),
        }
    }
}

/// Read and check the pools file.
pub fn load(path: &Path) -> Result<Vec<Pool>, PoolsError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PoolsError::Read {
        path: p.clone(),
        source,
    })?;
    parse(&text).map_err(|message| PoolsError::Invalid { path: p, message })
}

/// Parse and check pools TOML: names unique and non-empty, a host in one pool only, amounts
/// finite and not negative, overcommit above 0.
pub fn parse(text: &str) -> Result<Vec<Pool>, String> {
    let file: PoolsFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for (i, spec) in file.pool.iter().enumerate() {
        if spec.name.trim().is_empty() {
            return Err(format!("pool {} has no name", i + 1));
        }
        if file.pool[..i].iter().any(|p| p.name == spec.name) {
            return Err(format!("pool {:?} is defined twice", spec.name));
        }
        for h in &spec.hosts {
            if let Some(other) = owner.insert(h, &spec.name) {
                return Err(format!(
                    "host {h:?} is in two pools: {other:?} and {:?}",
                    spec.name
                ));
            }
        }
        let reserved = spec.reserved.resources();
        let overcommit = spec.overcommit.resources();
        let amounts = [
            reserved.vcpus,
            reserved.mem_gb,
            reserved.disk_gb,
            reserved.net_mbps,
            spec.nic_mbps,
        ];
        if amounts.iter().any(|a| !a.is_finite() || *a < 0.0) {
            return Err(format!(
                "pool {:?}: reserved amounts and nic_mbps must be 0 or more",
                spec.name
            ));
        }
        let ratios = [
            overcommit.vcpus,
            overcommit.mem_gb,
            overcommit.disk_gb,
            overcommit.net_mbps,
        ];
        if ratios.iter().any(|r| !r.is_finite() || *r <= 0.0) {
            return Err(format!(
                "pool {:?}: overcommit ratios must be above 0 (1.0 = none)",
                spec.name
            ));
        }
    }
    Ok(file
        .pool
        .into_iter()
        .map(|s| Pool {
            reserved: s.reserved.resources(),
            overcommit: s.overcommit.resources(),
            name: s.name,
            hosts: s.hosts,
            nic_mbps: s.nic_mbps,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let pools = parse(
            r#"
            [[pool]]
            name = "A"
            hosts = ["h1", "h2"]
            nic_mbps = 10000
            reserved = { vcpus = 8, mem_gb = 64 }
            overcommit = { vcpus = 4.0 }

            [[pool]]
            name = "B"
            hosts = ["h3"]
            "#,
        )
        .unwrap();
        assert_eq!(pools.len(), 2);
        let a = &pools[0];
        assert_eq!(a.hosts, ["h1", "h2"]);
        assert_eq!(
            (a.reserved.vcpus, a.reserved.mem_gb, a.reserved.disk_gb),
            (8.0, 64.0, 0.0)
        );
        assert_eq!((a.overcommit.vcpus, a.overcommit.mem_gb), (4.0, 1.0));
        assert_eq!((a.nic_mbps, pools[1].nic_mbps), (10_000.0, 0.0));
        assert_eq!(parse("").unwrap(), vec![]);

        let twice = "[[pool]]\nname=\"A\"\nhosts=[\"h\"]\n[[pool]]\nname=\"B\"\nhosts=[\"h\"]";
        assert!(parse(twice)
            .unwrap_err()
            .contains("host \"h\" is in two pools"));
        let zero = "[[pool]]\nname=\"A\"\nhosts=[]\novercommit={mem_gb=0}";
        assert!(parse(zero).unwrap_err().contains("overcommit"));
        let typo = "[[pool]]\nname=\"A\"\nhosts=[]\nreserved={cpu=1}";
        assert!(parse(typo).unwrap_err().contains("cpu"));
    }
}
