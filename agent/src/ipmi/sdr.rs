//! Sensor Data Records: what each sensor is, and its raw readings in real units.
//!
//! `ipmi-rs` parses the record ([`Record::parse`]: type dispatch, sensor key, id string, sensor
//! type). Its numeric conversion is private and decodes a negative M wrongly (it keeps only bit
//! 8 of the 10-bit two's-complement M and sign-extends from bit 9, so M = -1 becomes -513), and
//! its threshold masks read the wrong bits, so the conversion factors, units and analog format
//! are read here from the record's bytes (IPMI 2.0 table 43-1) and converted as the spec says
//! (section 36.3): `y = L[(M x + B 10^Bexp) 10^Rexp]`, in thousandths of the unit.

use ipmi_rs::storage::sdr::record::{RecordContents, SensorId, WithSensorRecordCommon};
use ipmi_rs::storage::sdr::Record;
use yunjian_protocol::hardware::{Milli, SensorStatus};

/// How a sensor's raw reading turns into a real value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factors {
    pub m: i16,
    pub b: i16,
    pub b_exp: i8,
    pub r_exp: i8,
    /// Analog data format: 0 unsigned, 1 one's complement, 2 two's complement.
    pub format: u8,
    /// Linearization code (0 linear; 0x70-0x7F non-linear, unsupported here).
    pub linearization: u8,
}

/// One sensor of the BMC, from its SDR.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorDef {
    pub record_id: u16,
    pub name: String,
    /// Owner's IPMB slave address (0x20 for the BMC).
    pub owner: u8,
    pub lun: u8,
    pub number: u8,
    pub sensor_type: u8,
    /// Event/reading type code: 0x01 threshold, 0x02-0x0C generic discrete, 0x6F
    /// sensor-specific.
    pub event_type: u8,
    /// Unit as ipmitool prints it; empty for discrete sensors.
    pub unit: String,
    /// Full sensor records with an analog reading; `None` for compact (discrete) records.
    pub factors: Option<Factors>,
    /// Whether the BMC answers Get Sensor Thresholds for it (threshold access readable or
    /// settable).
    pub thresholds_readable: bool,
    /// Event-only sensors have no reading; they only name SEL entries.
    pub event_only: bool,
}

/// Why an SDR was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdrError {
    #[error("SDR record {id:#06x}: {reason}")]
    Malformed { id: u16, reason: String },
}

impl SensorDef {
    /// The sensor described by one whole record (5-byte header and body, no padding), or
    /// `None` for records that describe no sensor (device locators, OEM records).
    pub fn parse(raw: &[u8]) -> Result<Option<SensorDef>, SdrError> {
        let id = match raw {
            [lo, hi, ..] => u16::from_le_bytes([*lo, *hi]),
            _ => 0,
        };
        let bad = |reason: String| SdrError::Malformed { id, reason };
        if raw.len() < 5 || raw.len() != 5 + usize::from(raw[4]) {
            return Err(bad(format!(
                "{} bytes for a declared body of {}",
                raw.len(),
                raw.get(4).copied().unwrap_or(0)
            )));
        }
        let record_type = raw[3];
        if !matches!(record_type, 0x01..=0x03) {
            return Ok(None);
        }
        // ipmi-rs 0.6 indexes past the lengths it checks (a full record's byte 15 after
        // checking for 15 bytes, a compact record's id string one byte past its check) and
        // panics on a compact record's reserved id-string modifier: check what it assumes.
        let minimum = match record_type {
            0x01 => 5 + 43,
            0x02 => 5 + 27,
            _ => 5 + 12,
        };
        if raw.len() < minimum {
            return Err(bad(format!(
                "type {record_type:#04x} record of {} bytes",
                raw.len()
            )));
        }
        if record_type == 0x02 && raw[5 + 18] & 0x20 != 0 {
            return Err(bad("reserved id string instance modifier".into()));
        }
        let record = Record::parse(raw).map_err(|e| bad(format!("{e:?}")))?;
        let name = match record.id() {
            Some(SensorId::Unicode(s)) | Some(SensorId::Ascii8BAndLatin1(s)) => s.clone(),
            Some(SensorId::Ascii6BPacked(bytes)) => unpack_6bit_ascii(bytes),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let number = record
            .sensor_number()
            .map(|n| n.get())
            .ok_or_else(|| bad("no sensor number".into()))?;
        let (owner, lun, sensor_type) = match &record.contents {
            RecordContents::FullSensor(s) => key(s),
            RecordContents::CompactSensor(s) => key(s),
            RecordContents::EventOnlySensor(s) => (
                u8::from(s.key.owner_id),
                s.key.owner_lun.value(),
                u8::from(s.ty),
            ),
            _ => return Ok(None),
        };
        let body = &raw[5..];
        let event_type = body[8];
        let event_only = record_type == 0x03;
        let (unit, factors, thresholds_readable) = if event_only {
            (String::new(), None, false)
        } else {
            let units_1 = body[15];
            let access = (body[6] >> 2) & 0x03;
            let factors = (record_type == 0x01 && units_1 >> 6 != 0b11).then(|| Factors {
                m: sign_extend(u16::from(body[19]) | u16::from(body[20] >> 6) << 8, 10),
                b: sign_extend(u16::from(body[21]) | u16::from(body[22] >> 6) << 8, 10),
                r_exp: sign_extend(u16::from(body[24] >> 4), 4) as i8,
                b_exp: sign_extend(u16::from(body[24] & 0x0F), 4) as i8,
                format: units_1 >> 6,
                linearization: body[18] & 0x7F,
            });
            let unit = if factors.is_some() {
                unit_string(units_1, body[16], body[17])
            } else {
                String::new()
            };
            (unit, factors, access == 0b01 || access == 0b10)
        };
        Ok(Some(SensorDef {
            record_id: id,
            name,
            owner,
            lun,
            number,
            sensor_type,
            event_type,
            unit,
            factors,
            thresholds_readable,
            event_only,
        }))
    }

    /// Whether the reading is compared against thresholds (event/reading type 0x01).
    pub fn is_threshold(&self) -> bool {
        self.event_type == 0x01 && self.factors.is_some()
    }

    /// A raw reading (or raw threshold) in thousandths of the unit; `None` for a discrete
    /// sensor or a non-linear one (whose factors would need Get Sensor Reading Factors).
    pub fn to_milli(&self, raw: u8) -> Option<Milli> {
        let f = self.factors?;
        let x = match f.format {
            0 => f64::from(raw),
            1 if raw & 0x80 != 0 => -f64::from(!raw),
            1 => f64::from(raw),
            _ => f64::from(raw as i8),
        };
        let y = (f64::from(f.m) * x + f64::from(f.b) * 10f64.powi(i32::from(f.b_exp)))
            * 10f64.powi(i32::from(f.r_exp));
        let y = match f.linearization {
            0 => y,
            1 => y.ln(),
            2 => y.log10(),
            3 => y.log2(),
            4 => y.exp(),
            5 => 10f64.powf(y),
            6 => y.exp2(),
            7 => y.recip(),
            8 => y * y,
            9 => y * y * y,
            10 => y.sqrt(),
            11 => y.cbrt(),
            _ => return None,
        };
        let milli = (y * 1000.0).round();
        milli.is_finite().then_some(milli as Milli)
    }

    /// Status of a reading given the state bits of Get Sensor Reading.
    pub fn status(&self, states: u16) -> SensorStatus {
        if self.is_threshold() {
            threshold_status(states)
        } else {
            discrete_status(self.event_type, self.sensor_type, states)
        }
    }
}

fn key<T: WithSensorRecordCommon>(s: &T) -> (u8, u8, u8) {
    let common = s.common();
    (
        u8::from(common.key.owner_id),
        common.key.owner_lun.value(),
        u8::from(common.ty),
    )
}

/// Sign-extend the low `bits` bits of `value`.
fn sign_extend(value: u16, bits: u32) -> i16 {
    let shift = 16 - bits;
    ((value << shift) as i16) >> shift
}

/// 6-bit packed ASCII (IPMI 2.0 section 43.15): `ipmi-rs` only shows its bytes.
fn unpack_6bit_ascii(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut have = 0;
    for &b in bytes {
        acc |= u32::from(b) << have;
        have += 8;
        while have >= 6 {
            out.push(char::from(b' ' + (acc & 0x3F) as u8));
            acc >>= 6;
            have -= 6;
        }
    }
    out.trim_end().to_string()
}

/// Comparison status bits of a threshold sensor (LNC, LC, LNR, UNC, UC, UNR = bits 0-5).
pub fn threshold_status(bits: u16) -> SensorStatus {
    if bits & 0x24 != 0 {
        SensorStatus::NonRecoverable
    } else if bits & 0x12 != 0 {
        SensorStatus::Critical
    } else if bits & 0x09 != 0 {
        SensorStatus::NonCritical
    } else {
        SensorStatus::Ok
    }
}

/// How bad the asserted states of a discrete sensor are. Only states that mean a fault are
/// rated; presence, power-on and informational states are `Ok`.
pub fn discrete_status(event_type: u8, sensor_type: u8, states: u16) -> SensorStatus {
    // (offset, status) per sensor-specific type (event/reading type 0x6F), IPMI 2.0 table 42-3
    const CRIT: SensorStatus = SensorStatus::Critical;
    const NC: SensorStatus = SensorStatus::NonCritical;
    let rated: &[(u8, SensorStatus)] = match (event_type, sensor_type) {
        // Physical security: general chassis intrusion, drive bay, I/O card, processor area,
        // LAN leash lost, FAN area intrusion
        (0x6F, 0x05) => &[
            (0, CRIT),
            (1, CRIT),
            (2, CRIT),
            (3, CRIT),
            (4, NC),
            (6, CRIT),
        ],
        // Processor: IERR, thermal trip, FRB1-3, config error, uncorrectable, throttled
        (0x6F, 0x07) => &[
            (0, CRIT),
            (1, CRIT),
            (2, NC),
            (3, NC),
            (4, NC),
            (5, NC),
            (6, CRIT),
            (10, NC),
        ],
        // Power supply: failure, predictive failure, input lost, input lost or out of
        // range, input out of range, configuration error
        (0x6F, 0x08) => &[(1, CRIT), (2, NC), (3, CRIT), (4, CRIT), (5, NC), (6, NC)],
        // Power unit: AC lost, soft power control failure, failure, predictive failure
        (0x6F, 0x09) => &[(4, CRIT), (5, NC), (6, CRIT), (7, NC)],
        // Memory: correctable ECC, uncorrectable ECC, parity, scrub failed, config error,
        // correctable logging limit, critical overtemperature
        (0x6F, 0x0C) => &[
            (0, NC),
            (1, CRIT),
            (2, CRIT),
            (3, NC),
            (7, NC),
            (5, NC),
            (10, CRIT),
        ],
        // Drive slot: drive fault, predictive failure, in failed array
        (0x6F, 0x0D) => &[(1, CRIT), (2, NC), (6, CRIT)],
        // Generic severity (0x07): transitions to non-critical, critical, non-recoverable
        (0x07, _) => &[
            (1, NC),
            (2, CRIT),
            (3, SensorStatus::NonRecoverable),
            (4, NC),
            (5, CRIT),
            (6, SensorStatus::NonRecoverable),
        ],
        // Generic redundancy (0x0B): lost, degraded, insufficient resources
        (0x0B, _) => &[(1, CRIT), (2, NC), (4, NC), (5, CRIT), (6, NC)],
        // Generic "predictive failure asserted" (0x04) and "device limit exceeded" (0x05)
        (0x04, _) | (0x05, _) => &[(1, NC)],
        _ => &[],
    };
    rated
        .iter()
        .filter(|(offset, _)| states & (1 << offset) != 0)
        .map(|(_, status)| *status)
        .max()
        .unwrap_or(SensorStatus::Ok)
}

/// ipmitool's unit names (`unit_desc` in ipmi_sdr.c), by base unit code.
const UNITS: [&str; 93] = [
    "unspecified",
    "degrees C",
    "degrees F",
    "degrees K",
    "Volts",
    "Amps",
    "Watts",
    "Joules",
    "Coulombs",
    "VA",
    "Nits",
    "lumen",
    "lux",
    "Candela",
    "kPa",
    "PSI",
    "Newton",
    "CFM",
    "RPM",
    "Hz",
    "microsecond",
    "millisecond",
    "second",
    "minute",
    "hour",
    "day",
    "week",
    "mil",
    "inches",
    "feet",
    "cu in",
    "cu feet",
    "mm",
    "cm",
    "m",
    "cu cm",
    "cu m",
    "liters",
    "fluid ounce",
    "radians",
    "steradians",
    "revolutions",
    "cycles",
    "gravities",
    "ounce",
    "pound",
    "ft-lb",
    "oz-in",
    "gauss",
    "gilberts",
    "henry",
    "millihenry",
    "farad",
    "microfarad",
    "ohms",
    "siemens",
    "mole",
    "becquerel",
    "PPM",
    "reserved",
    "Decibels",
    "DbA",
    "DbC",
    "gray",
    "sievert",
    "color temp deg K",
    "bit",
    "kilobit",
    "megabit",
    "gigabit",
    "byte",
    "kilobyte",
    "megabyte",
    "gigabyte",
    "word",
    "dword",
    "qword",
    "line",
    "hit",
    "miss",
    "retry",
    "reset",
    "overflow",
    "underrun",
    "collision",
    "packets",
    "messages",
    "characters",
    "error",
    "correctable error",
    "uncorrectable error",
    "fatal error",
    "grams",
];

/// The unit as ipmitool writes it: base unit, `base/modifier` or `base*modifier`, and a `% `
/// prefix for percentages (`"percent"` alone when the base unit is unspecified).
pub fn unit_string(units_1: u8, base: u8, modifier: u8) -> String {
    let name = |code: u8| UNITS.get(usize::from(code)).copied().unwrap_or("unknown");
    let percent = units_1 & 0x01 != 0;
    if percent && base == 0 {
        return "percent".into();
    }
    let prefix = if percent { "% " } else { "" };
    match (units_1 >> 1) & 0x03 {
        0b01 => format!("{prefix}{}/{}", name(base), name(modifier)),
        0b10 => format!("{prefix}{}*{}", name(base), name(modifier)),
        _ => format!("{prefix}{}", name(base)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Records as OpenIPMI's sdrcomp -8 compiles tests/fixtures/ipmi/sensors.sdrs.
    const CPU_TEMP: [u8; 56] = [
        0x03, 0x00, 0x51, 0x01, 0x33, 0x20, 0x00, 0x01, 0x03, 0x01, 0x67, 0x44, 0x01, 0x01, 0x80,
        0x0a, 0x80, 0x7a, 0x38, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x64, 0x5a, 0x50, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xc8, 0x43, 0x50, 0x55, 0x20, 0x54, 0x65, 0x6d, 0x70,
    ];
    const FAN1: [u8; 52] = [
        0x04, 0x00, 0x51, 0x01, 0x2f, 0x20, 0x00, 0x02, 0x1d, 0x01, 0x67, 0x44, 0x04, 0x01, 0x05,
        0x30, 0x05, 0x00, 0x03, 0x00, 0x00, 0x12, 0x00, 0x00, 0x32, 0x00, 0x00, 0x01, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x14, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xc4, 0x46, 0x41, 0x4e, 0x31,
    ];
    const V12: [u8; 51] = [
        0x05, 0x00, 0x51, 0x01, 0x2e, 0x20, 0x00, 0x03, 0x07, 0x01, 0x67, 0x44, 0x02, 0x01, 0x00,
        0x00, 0x00, 0x00, 0x1b, 0x00, 0x00, 0x04, 0x00, 0x00, 0x06, 0x00, 0x00, 0x01, 0x01, 0xe0,
        0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0xdc, 0xd2, 0x00, 0xb4, 0xbe, 0x00, 0x00, 0x00,
        0x00, 0x00, 0xc3, 0x31, 0x32, 0x56,
    ];
    const PSU_STATUS: [u8; 43] = [
        0x07, 0x00, 0x51, 0x02, 0x26, 0x20, 0x00, 0x05, 0x0a, 0x01, 0x67, 0x40, 0x08, 0x6f, 0x03,
        0x00, 0x03, 0x00, 0x0f, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xcb, 0x50, 0x53, 0x55, 0x31, 0x20, 0x53, 0x74, 0x61, 0x74, 0x75, 0x73,
    ];
    const WATCHDOG: [u8; 25] = [
        0x02, 0x00, 0x51, 0x03, 0x14, 0x20, 0x00, 0x00, 0x07, 0x01, 0x23, 0x6f, 0x00, 0x00, 0x00,
        0x00, 0xc8, 0x57, 0x61, 0x74, 0x63, 0x68, 0x64, 0x6f, 0x67,
    ];
    const MC_LOCATOR: [u8; 23] = [
        0x01, 0x00, 0x51, 0x12, 0x12, 0x20, 0x00, 0x00, 0x87, 0x00, 0x00, 0x00, 0x07, 0x01, 0x00,
        0xc7, 0x54, 0x65, 0x73, 0x74, 0x42, 0x4d, 0x43,
    ];

    fn def(raw: &[u8]) -> SensorDef {
        SensorDef::parse(raw).unwrap().unwrap()
    }

    #[test]
    fn full_records_convert_to_real_units() {
        let cpu = def(&CPU_TEMP);
        assert_eq!(
            (
                cpu.name.as_str(),
                cpu.number,
                cpu.sensor_type,
                cpu.unit.as_str()
            ),
            ("CPU Temp", 1, 0x01, "degrees C")
        );
        assert!(cpu.is_threshold() && cpu.thresholds_readable && !cpu.event_only);
        assert_eq!(cpu.to_milli(0x2d), Some(45_000));
        assert_eq!(cpu.to_milli(0x5a), Some(90_000));

        let fan = def(&FAN1);
        assert_eq!((fan.name.as_str(), fan.unit.as_str()), ("FAN1", "RPM"));
        assert_eq!(fan.to_milli(0x60), Some(4_800_000));

        // M = 6, R = -2: 0.06 V per count
        let v = def(&V12);
        assert_eq!((v.name.as_str(), v.unit.as_str()), ("12V", "Volts"));
        assert_eq!(v.factors.map(|f| (f.m, f.r_exp)), Some((6, -2)));
        assert_eq!(v.to_milli(0xc8), Some(12_000));
        assert_eq!(v.to_milli(0xcb), Some(12_180));
        assert_eq!(v.to_milli(0xb4), Some(10_800));
    }

    #[test]
    fn negative_m_b_and_signed_formats() {
        let mut raw = CPU_TEMP;
        // M = -2 (10-bit 0x3FE), B = -40 (0x3D8), two's complement readings, B exp 0, R exp -1
        raw[5 + 19] = 0xFE;
        raw[5 + 20] = 0xC0;
        raw[5 + 21] = 0xD8;
        raw[5 + 22] = 0xC0;
        raw[5 + 24] = 0xF0;
        raw[5 + 15] = 0x80;
        let d = def(&raw);
        assert_eq!(
            d.factors.map(|f| (f.m, f.b, f.r_exp, f.b_exp)),
            Some((-2, -40, -1, 0))
        );
        // x = -3 (0xFD): (-2 * -3 - 40) / 10 = -3.4
        assert_eq!(d.to_milli(0xFD), Some(-3_400));
        // one's complement: 0xFE is -1
        raw[5 + 15] = 0x40;
        assert_eq!(def(&raw).to_milli(0xFE), Some((-2 * -1 - 40) * 100));
        // ipmi-rs 0.6 itself gets M wrong here (documented upstream defect this module avoids)
        let theirs = Record::parse(&raw).unwrap();
        assert_ne!(theirs.full_sensor().unwrap().m, -2);
    }

    #[test]
    fn compact_event_only_and_locator_records() {
        let psu = def(&PSU_STATUS);
        assert_eq!(
            (
                psu.name.as_str(),
                psu.number,
                psu.sensor_type,
                psu.event_type
            ),
            ("PSU1 Status", 5, 0x08, 0x6f)
        );
        assert_eq!((psu.factors, psu.unit.as_str()), (None, ""));
        assert!(!psu.is_threshold());
        assert_eq!(psu.to_milli(1), None);
        let wd = def(&WATCHDOG);
        assert!(wd.event_only);
        assert_eq!(
            (wd.name.as_str(), wd.number, wd.sensor_type),
            ("Watchdog", 0, 0x23)
        );
        assert_eq!(SensorDef::parse(&MC_LOCATOR).unwrap(), None);
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        // the 6 padding bytes ipmi_sim appends are refused: the reader must strip them
        let mut padded = CPU_TEMP.to_vec();
        padded.extend([0; 6]);
        assert!(SensorDef::parse(&padded).is_err());
        assert!(SensorDef::parse(&CPU_TEMP[..20]).is_err());
        let mut short = CPU_TEMP[..20].to_vec();
        short[4] = 15;
        assert!(SensorDef::parse(&short).is_err());
        assert!(SensorDef::parse(&[]).is_err());
        // ipmi-rs would panic on this compact record (reserved id string modifier)
        let mut reserved = PSU_STATUS;
        reserved[5 + 18] |= 0x20;
        assert!(SensorDef::parse(&reserved).is_err());
        // the shortest records ipmi-rs indexes without checking
        for (raw, body) in [(&CPU_TEMP[..], 42), (&PSU_STATUS[..], 26)] {
            let mut cut = raw[..5 + body].to_vec();
            cut[4] = body as u8;
            assert!(SensorDef::parse(&cut).is_err());
        }
    }

    #[test]
    fn statuses() {
        let cpu = def(&CPU_TEMP);
        assert_eq!(cpu.status(0x00), SensorStatus::Ok);
        assert_eq!(cpu.status(0x08), SensorStatus::NonCritical);
        assert_eq!(cpu.status(0x18), SensorStatus::Critical);
        assert_eq!(cpu.status(0x38), SensorStatus::NonRecoverable);
        assert_eq!(cpu.status(0x01), SensorStatus::NonCritical);
        let psu = def(&PSU_STATUS);
        assert_eq!(psu.status(0x01), SensorStatus::Ok, "presence only");
        assert_eq!(psu.status(0x03), SensorStatus::Critical, "failure detected");
        assert_eq!(psu.status(0x05), SensorStatus::NonCritical, "predictive");
        assert_eq!(
            discrete_status(0x07, 0x01, 1 << 3),
            SensorStatus::NonRecoverable
        );
        assert_eq!(discrete_status(0x6F, 0x05, 1), SensorStatus::Critical);
    }

    #[test]
    fn units_as_ipmitool_prints_them() {
        assert_eq!(unit_string(0x00, 1, 0), "degrees C");
        assert_eq!(unit_string(0x00, 18, 0), "RPM");
        assert_eq!(unit_string(0x00, 4, 0), "Volts");
        assert_eq!(unit_string(0x01, 0, 0), "percent");
        assert_eq!(unit_string(0x01, 4, 0), "% Volts");
        assert_eq!(unit_string(0x02, 6, 24), "Watts/hour");
        assert_eq!(unit_string(0x04, 5, 22), "Amps*second");
        assert_eq!(unit_string(0x00, 200, 0), "unknown");
    }

    #[test]
    fn six_bit_ascii_names() {
        // "CPU" packed: C=0x23, P=0x30, U=0x35
        let packed = [0x23, 0x5C, 0x03];
        assert_eq!(unpack_6bit_ascii(&packed), "CPU");
    }
}
