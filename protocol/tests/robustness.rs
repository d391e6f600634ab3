//! The decoder faces untrusted bytes: whatever arrives, it returns a typed error or a valid
//! envelope, never panics, and never accepts a frame that was altered after signing.

use yunjian_protocol::*;

/// splitmix64: a deterministic stream of test bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn sample() -> Envelope {
    Envelope::new(
        "h1",
        42,
        1_795_000_000_000,
        Body::Report(Report {
            cpu_busy: 1234,
            per_core: vec![1000, 2000],
            load: [10, 20, 30],
            mem: Memory {
                total_kib: 1 << 20,
                used_kib: 1 << 19,
                ..Memory::default()
            },
            disks: vec![DiskSample {
                mount: "/".into(),
                total_kib: 1 << 24,
                used_kib: 1 << 23,
                read_bps: 1,
                write_bps: 2,
            }],
            nets: vec![NetSample {
                name: "eth0".into(),
                rx_bytes: 5,
                tx_bytes: 6,
                rx_bps: 7,
                tx_bps: 8,
            }],
            uptime_s: 99,
            failed: vec![],
        }),
    )
}

#[test]
fn random_bytes_never_panic_and_never_verify() {
    let key = MasterKey::from_bytes([9; 32]).node_key("h1", Role::Host);
    let mut rng = Rng(1);
    for i in 0..50_000 {
        let len = (rng.next() % 600) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 && !b.is_empty() {
            b[0] = PROTOCOL_VERSION; // get past the version check half of the time
        }
        assert!(decode(&b, "h1", &key).is_err(), "random frame {i} verified");
        let _ = decode_unverified(&b);
    }
}

#[test]
fn every_single_bit_flip_and_truncation_is_rejected() {
    let key = MasterKey::from_bytes([9; 32]).node_key("h1", Role::Host);
    let frame = encode(&sample(), &key).unwrap();
    assert!(decode(&frame, "h1", &key).is_ok());
    for i in 0..frame.len() {
        for bit in 0..8 {
            let mut f = frame.clone();
            f[i] ^= 1 << bit;
            assert!(decode(&f, "h1", &key).is_err(), "flip byte {i} bit {bit}");
        }
    }
    for cut in 0..frame.len() {
        assert!(decode(&frame[..cut], "h1", &key).is_err(), "cut at {cut}");
    }
    let mut longer = frame.clone();
    longer.push(0);
    assert!(decode(&longer, "h1", &key).is_err());
}
