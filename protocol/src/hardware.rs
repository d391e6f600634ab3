//! The BMC as the host agent reads it over IPMI: every sensor in real units with its status
//! against the BMC's own thresholds, new System Event Log entries, and the chassis state.
//!
//! A [`HardwareReport`] is sent as [`Body::Hardware`](crate::Body::Hardware) after every sensor
//! sweep. Sensor names and thresholds repeat in every sweep: a sweep is sent far less often than
//! the host report (every few host intervals), and the receiver then needs no separate SDR
//! state to interpret one.
//!
//! Real values are fixed point: thousandths of the sensor's unit ([`Milli`]), so a reading of
//! 45.5 degrees C is `45_500` and a fan at 5,400 RPM is `5_400_000`.

use serde::{Deserialize, Serialize};

/// Thousandths of the sensor's unit.
pub type Milli = i64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardwareReport {
    /// Whether the BMC answered this sweep; when it did not, `sensors` is empty and the
    /// aggregator raises a BMC alarm distinct from the host going offline.
    pub bmc: BmcState,
    /// `None` when the chassis status could not be read.
    pub chassis: Option<ChassisState>,
    pub sensors: Vec<SensorReading>,
    /// SEL entries newer than the last one this agent reported (across restarts), oldest first.
    pub sel: Vec<SelEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BmcState {
    /// Answered; the transport used (`"lanplus 127.0.0.1:623"`, `"/dev/ipmi0"`).
    Ok(String),
    /// Did not answer or refused: the BMC and the cause, e.g.
    /// `"10.0.0.5:623: authentication failed (wrong password?)"`.
    Unreachable(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChassisState {
    pub power_on: bool,
    /// Main power fault or power control fault.
    pub power_fault: bool,
    pub intrusion: bool,
    pub drive_fault: bool,
    pub cooling_fault: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    /// The SDR's id string, e.g. `"CPU Temp"`.
    pub name: String,
    /// Sensor number on its owner.
    pub number: u8,
    /// IPMI sensor type code (0x01 temperature, 0x02 voltage, 0x04 fan, 0x08 power supply,
    /// 0x05 physical security, ...).
    pub sensor_type: u8,
    /// The reading in real units; `None` for a discrete sensor or when the BMC reports the
    /// reading unavailable (scanning disabled, initial update in progress).
    pub value: Option<Milli>,
    /// Unit as ipmitool prints it: `"degrees C"`, `"RPM"`, `"Volts"`, `"Watts"`, `""` for
    /// discrete sensors.
    pub unit: String,
    pub status: SensorStatus,
    pub thresholds: Thresholds,
    /// Discrete sensors: the asserted state offsets as a bit mask (bit n = offset n).
    pub states: u16,
}

/// Status against the BMC's own thresholds (or the discrete states' meaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SensorStatus {
    Ok,
    NonCritical,
    Critical,
    NonRecoverable,
    /// Reading unavailable, or the sensor is absent.
    NotAvailable,
}

/// The thresholds the BMC declares readable, in real units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    pub lower_non_recoverable: Option<Milli>,
    pub lower_critical: Option<Milli>,
    pub lower_non_critical: Option<Milli>,
    pub upper_non_critical: Option<Milli>,
    pub upper_critical: Option<Milli>,
    pub upper_non_recoverable: Option<Milli>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelEntry {
    pub record_id: u16,
    /// The BMC's timestamp, Unix seconds (before a Set SEL Time, seconds since BMC init).
    pub ts_s: u32,
    pub sensor_type: u8,
    pub sensor_number: u8,
    /// The sensor's SDR name when known.
    pub sensor: Option<String>,
    /// Event/reading type code (0x01 threshold, 0x6f sensor-specific, ...).
    pub event_type: u8,
    /// Assertion (true) or deassertion.
    pub asserted: bool,
    /// Event offset within the event/reading type.
    pub offset: u8,
    /// Decoded, e.g. `"Upper Critical going high"`, `"Power Supply Failure detected"`.
    pub description: String,
}
