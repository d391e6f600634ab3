//! System Event Log: decode entries, and remember the last one reported across restarts.
//!
//! The walk starts after the last entry reported: its record id and timestamp are kept in
//! `{state_dir}/ipmi-sel.cursor`, written only after the report carrying the entry was queued
//! (the publisher's on-disk buffer), so an entry is reported once even when the agent
//! restarts. If that record is gone or holds another timestamp (the SEL was cleared and
//! refilled), the walk restarts from the first entry and keeps only entries newer than the
//! cursor's timestamp.

use ipmi_rs::storage::sdr::{decode_event, SensorType};
use ipmi_rs::storage::sel::{Entry, EventDirection};
use std::fmt;
use std::io::Write as _;
use std::path::Path;
use yunjian_protocol::hardware::SelEntry;

/// The last SEL entry reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub record_id: u16,
    pub ts_s: u32,
}

impl Cursor {
    /// Parse `"<record id> <timestamp>"`.
    pub fn parse(text: &str) -> Option<Cursor> {
        let mut words = text.split_whitespace();
        let cursor = Cursor {
            record_id: words.next()?.parse().ok()?,
            ts_s: words.next()?.parse().ok()?,
        };
        words.next().is_none().then_some(cursor)
    }

    /// Read the cursor file; a missing or unreadable one means "nothing reported yet".
    pub fn load(path: &Path) -> Option<Cursor> {
        let text = std::fs::read_to_string(path).ok()?;
        let cursor = Cursor::parse(&text);
        if cursor.is_none() {
            tracing::warn!(path = %path.display(), "SEL cursor unreadable; starting over");
        }
        cursor
    }

    /// Write the cursor file atomically (write a temporary file, then rename it).
    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{} {}", self.record_id, self.ts_s)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Whether an entry comes after this cursor in a SEL walked from the first entry.
    pub fn is_before(&self, entry: &SelEntry) -> bool {
        entry.ts_s > self.ts_s || (entry.ts_s == self.ts_s && entry.record_id > self.record_id)
    }
}

struct Description(u8, u8, u8);

impl fmt::Display for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        decode_event(f, self.0, SensorType::from(self.1), self.2)
    }
}

/// Decode one 16-byte SEL record. `name_of(owner, sensor number)` gives the SDR name.
pub fn decode(raw: &[u8; 16], name_of: impl Fn(u8, u8) -> Option<String>) -> SelEntry {
    let record_id = u16::from_le_bytes([raw[0], raw[1]]);
    let ts_s = u32::from_le_bytes([raw[3], raw[4], raw[5], raw[6]]);
    match Entry::parse(raw) {
        Ok(Entry::System {
            sensor_type,
            sensor_number,
            event_direction,
            event_type,
            event_data,
            ..
        }) => {
            let offset = event_data.offset & 0x0F;
            let mut description = Description(event_type, sensor_type, offset).to_string();
            if description.is_empty() {
                description = format!("event type {event_type:#04x} offset {offset}");
            }
            SelEntry {
                record_id,
                ts_s,
                sensor_type,
                sensor_number,
                sensor: name_of(raw[7], sensor_number),
                event_type,
                asserted: event_direction == EventDirection::Assert,
                offset,
                description,
            }
        }
        other => SelEntry {
            record_id,
            // non-timestamped OEM records carry no time
            ts_s: if raw[2] >= 0xE0 { 0 } else { ts_s },
            sensor_type: 0,
            sensor_number: 0,
            sensor: None,
            event_type: 0,
            asserted: true,
            offset: 0,
            description: match other {
                Ok(_) => format!("OEM record type {:#04x}", raw[2]),
                Err(e) => format!("undecodable record type {:#04x}: {e:?}", raw[2]),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ipmitool sel elist` of ipmi_sim: "Temperature CPU Temp | Upper Critical going high |
    /// Asserted | Reading 91 > Threshold 90 degrees C".
    const UC_HIGH: [u8; 16] = [
        0x03, 0x00, 0x02, 0x4e, 0x01, 0x00, 0x00, 0x20, 0x00, 0x04, 0x01, 0x01, 0x01, 0x59, 0x5b,
        0x5a,
    ];
    /// PSU1 Status: Failure detected, deasserted.
    const PSU_FAIL_DEASSERT: [u8; 16] = [
        0x05, 0x00, 0x02, 0x4f, 0x01, 0x00, 0x00, 0x20, 0x00, 0x04, 0x08, 0x05, 0xef, 0x01, 0xff,
        0xff,
    ];

    fn names(owner: u8, number: u8) -> Option<String> {
        match (owner, number) {
            (0x20, 1) => Some("CPU Temp".into()),
            (0x20, 5) => Some("PSU1 Status".into()),
            _ => None,
        }
    }

    #[test]
    fn system_events_are_decoded_with_the_sensor_name() {
        let e = decode(&UC_HIGH, names);
        assert_eq!(
            e,
            SelEntry {
                record_id: 3,
                ts_s: 0x14e,
                sensor_type: 0x01,
                sensor_number: 1,
                sensor: Some("CPU Temp".into()),
                event_type: 0x01,
                asserted: true,
                offset: 9,
                description: "Upper Critical - going high".into(),
            }
        );
        let psu = decode(&PSU_FAIL_DEASSERT, names);
        assert!(!psu.asserted);
        assert_eq!((psu.event_type, psu.offset), (0x6f, 1));
        assert_eq!(psu.description, "Power Supply Failure detected");
        assert_eq!(psu.sensor.as_deref(), Some("PSU1 Status"));
    }

    #[test]
    fn oem_and_unknown_records_are_kept_with_a_description() {
        let mut oem = UC_HIGH;
        oem[2] = 0xE5;
        let e = decode(&oem, names);
        assert_eq!((e.ts_s, e.sensor.as_deref()), (0, None));
        assert_eq!(e.description, "OEM record type 0xe5");
        oem[2] = 0x10;
        assert!(decode(&oem, names)
            .description
            .starts_with("undecodable record type 0x10"));
    }

    #[test]
    fn cursor_round_trips_and_orders_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipmi-sel.cursor");
        assert_eq!(Cursor::load(&path), None);
        let c = Cursor {
            record_id: 3,
            ts_s: 0x14e,
        };
        c.store(&path).unwrap();
        assert_eq!(Cursor::load(&path), Some(c));
        std::fs::write(&path, "3 x\n").unwrap();
        assert_eq!(Cursor::load(&path), None);
        assert_eq!(Cursor::parse("1 2 3"), None);

        let at = |record_id, ts_s| SelEntry {
            record_id,
            ts_s,
            ..decode(&UC_HIGH, names)
        };
        assert!(!c.is_before(&at(3, 0x14e)), "the cursor's own entry");
        assert!(!c.is_before(&at(2, 0x14e)));
        assert!(c.is_before(&at(4, 0x14e)));
        assert!(
            c.is_before(&at(1, 0x14f)),
            "ids restart after a clear, time goes on"
        );
    }
}
