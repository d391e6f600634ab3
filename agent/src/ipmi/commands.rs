//! IPMI commands that `ipmi-rs` 0.6 lacks or gets wrong, as [`IpmiCommand`]s of our own, each
//! with a pure reply parser unit-tested on literal bytes.
//!
//! * SDR: [`ReserveSdrRepository`] and [`GetSdrChunk`]. `ipmi-rs`'s `Ipmi::sdrs()` asks for a
//!   whole record at once (`bytes_to_read = 0xFF`) and then rejects anything but the exact
//!   record length; OpenIPMI's `ipmi_sim` serves each SDR with 6 padding bytes and answers a
//!   whole-record read of a full sensor record with completion code 0xCA, so the walk returns
//!   nothing. We reserve the repository and read each record in chunks: the 5-byte header,
//!   then the body, never more than [`SDR_CHUNK`] bytes at a time (what ipmitool does).
//! * [`GetSdrRepositoryInfo`]: the record count and the addition/erase timestamps that key our
//!   SDR cache (`ipmi-rs`'s parser indexes the reply without checking its length).
//! * [`GetSensorThresholds`], [`GetChassisStatus`], [`SetSelTime`], [`GetSelInfo`] and a raw
//!   [`GetSelEntry`] (its `ipmi-rs` counterpart hides the timestamp).
//! * [`SetSessionPrivilege`] and [`CloseSession`] for the session's life cycle.

use ipmi_rs::connection::{
    Address, Channel, CompletionErrorCode, IpmiCommand, Message, NetFn, NotEnoughData,
};

/// Most SDR bytes asked for in one Get SDR request (fits every BMC's smallest message).
pub const SDR_CHUNK: u8 = 16;

/// Completion code 0xC5: reservation cancelled (the repository changed under us).
pub const CC_RESERVATION_CANCELLED: u8 = 0xC5;
/// Completion code 0xCB: requested record not present.
pub const CC_NOT_PRESENT: u8 = 0xCB;

/// Why one of our commands failed: a completion code other than success, or a short reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    Completion(u8),
    Short,
}

/// The raw completion code `ipmi-rs` decoded into its enum (for our error messages and checks).
pub fn completion_code_byte(code: CompletionErrorCode) -> u8 {
    use CompletionErrorCode as C;
    match code {
        C::NodeBusy => 0xC0,
        C::InvalidCommand => 0xC1,
        C::InvalidCommandForLun => 0xC2,
        C::ProcessingTimeout => 0xC3,
        C::OutOfSpace => 0xC4,
        C::ReservationCancelledOrInvalidId => 0xC5,
        C::RequestDataTruncated => 0xC6,
        C::RequestDataLenInvalid => 0xC7,
        C::RequestDataLengthLimitExceeded => 0xC8,
        C::ParameterOutOfRange => 0xC9,
        C::CannotReturnNumOfRequestedBytes => 0xCA,
        C::RequestedDatapointNotPresent => 0xCB,
        C::InvalidDataFieldInRequest => 0xCC,
        C::CommandIllegalForSensorOrRecord => 0xCD,
        // ipmi-rs does not export the reason's type; its Debug names the variant
        C::ResponseUnavailable { reason } => match format!("{reason:?}").as_str() {
            "SDRInUpdate" => 0xD0,
            "DeviceInFwUpdate" => 0xD1,
            "BMCInitializing" => 0xD2,
            _ => 0xCE,
        },
        C::CannotExecuteDuplicateRequest => 0xCF,
        C::DestinationUnavailable => 0xD3,
        C::InsufficientPrivilege => 0xD4,
        C::CannotExecuteCommandInCurrentState => 0xD5,
        C::SubFunctionDisabled => 0xD6,
        C::Unspecified => 0xFF,
        C::Oem(v) | C::CommandSpecific(v) | C::Reserved(v) => v,
    }
}

macro_rules! completion_as_reply_error {
    () => {
        fn handle_completion_code(code: CompletionErrorCode, _: &[u8]) -> Option<ReplyError> {
            Some(ReplyError::Completion(completion_code_byte(code)))
        }
    };
}

/// Reserve SDR Repository (Storage 0x22): a reservation id for partial Get SDR reads.
#[derive(Debug, Clone, Copy)]
pub struct ReserveSdrRepository;

impl From<ReserveSdrRepository> for Message {
    fn from(_: ReserveSdrRepository) -> Self {
        Message::new_request(NetFn::Storage, 0x22, Vec::new())
    }
}

impl IpmiCommand for ReserveSdrRepository {
    type Output = u16;
    type Error = ReplyError;
    completion_as_reply_error!();

    fn parse_success_response(data: &[u8]) -> Result<u16, ReplyError> {
        match data {
            [lo, hi, ..] => Ok(u16::from_le_bytes([*lo, *hi])),
            _ => Err(ReplyError::Short),
        }
    }
}

/// Get SDR (Storage 0x23) for `length` bytes at `offset` of record `record_id`.
#[derive(Debug, Clone, Copy)]
pub struct GetSdrChunk {
    pub reservation: u16,
    pub record_id: u16,
    pub offset: u8,
    pub length: u8,
}

/// One chunk of a record and the id of the record after it (0xFFFF: the last one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdrChunk {
    pub next_id: u16,
    pub bytes: Vec<u8>,
}

impl From<GetSdrChunk> for Message {
    fn from(c: GetSdrChunk) -> Self {
        let [r0, r1] = c.reservation.to_le_bytes();
        let [i0, i1] = c.record_id.to_le_bytes();
        Message::new_request(
            NetFn::Storage,
            0x23,
            vec![r0, r1, i0, i1, c.offset, c.length],
        )
    }
}

impl IpmiCommand for GetSdrChunk {
    type Output = SdrChunk;
    type Error = ReplyError;
    completion_as_reply_error!();

    fn parse_success_response(data: &[u8]) -> Result<SdrChunk, ReplyError> {
        match data {
            [lo, hi, rest @ ..] => Ok(SdrChunk {
                next_id: u16::from_le_bytes([*lo, *hi]),
                bytes: rest.to_vec(),
            }),
            _ => Err(ReplyError::Short),
        }
    }
}

/// Get SDR Repository Info (Storage 0x20), the fields we use.
#[derive(Debug, Clone, Copy)]
pub struct GetSdrRepositoryInfo;

/// What identifies one state of the SDR repository: re-read it when this changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdrRepositoryStamp {
    pub record_count: u16,
    pub last_addition: u32,
    pub last_erase: u32,
}

impl From<GetSdrRepositoryInfo> for Message {
    fn from(_: GetSdrRepositoryInfo) -> Self {
        Message::new_request(NetFn::Storage, 0x20, Vec::new())
    }
}

impl IpmiCommand for GetSdrRepositoryInfo {
    type Output = SdrRepositoryStamp;
    type Error = ReplyError;
    completion_as_reply_error!();

    fn parse_success_response(data: &[u8]) -> Result<SdrRepositoryStamp, ReplyError> {
        let (record_count, last_addition, last_erase) = repository_info(data)?;
        Ok(SdrRepositoryStamp {
            record_count,
            last_addition,
            last_erase,
        })
    }
}

/// Get Sensor Reading (Sensor/Event 0x2D), raw: `ipmi-rs` keeps the reading byte private.
#[derive(Debug, Clone, Copy)]
pub struct GetSensorReading {
    pub owner: u8,
    /// The sensor's LUN. `ipmi-rs` addresses every request to LUN 0 (`Ipmi::send_recv`), so
    /// sensors on other LUNs read as LUN 0's (none on the BMCs we know of).
    pub lun: u8,
    pub number: u8,
}

/// The reply to Get Sensor Reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawReading {
    pub raw: u8,
    /// Scanning enabled and the reading valid (bit 6 set, bit 5 clear).
    pub available: bool,
    /// Threshold sensors: the comparison status bits (LNC, LC, LNR, UNC, UC, UNR = bits 0-5).
    /// Discrete sensors: asserted state offsets 0-14.
    pub states: u16,
}

impl From<GetSensorReading> for Message {
    fn from(c: GetSensorReading) -> Self {
        Message::new_request(NetFn::SensorEvent, 0x2D, vec![c.number])
    }
}

impl IpmiCommand for GetSensorReading {
    type Output = RawReading;
    type Error = ReplyError;
    completion_as_reply_error!();

    fn parse_success_response(data: &[u8]) -> Result<RawReading, ReplyError> {
        match data {
            [raw, flags, rest @ ..] => Ok(RawReading {
                raw: *raw,
                available: flags & 0x40 != 0 && flags & 0x20 == 0,
                states: u16::from(rest.first().copied().unwrap_or(0))
                    | u16::from(rest.get(1).copied().unwrap_or(0) & 0x7F) << 8,
            }),
            _ => Err(ReplyError::Short),
        }
    }

    fn target(&self) -> Option<(Address, Channel)> {
        owner_target(self.owner)
    }
}

/// Sensors owned by another controller than the BMC (0x20) are bridged to it.
fn owner_target(owner: u8) -> Option<(Address, Channel)> {
    (owner != 0x20).then_some((Address(owner), Channel::Primary))
}

/// Get Sensor Thresholds (Sensor/Event 0x27).
#[derive(Debug, Clone, Copy)]
pub struct GetSensorThresholds {
    pub owner: u8,
    pub number: u8,
}

/// Raw thresholds; `None` where the BMC says the threshold is not readable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawThresholds {
    pub lnc: Option<u8>,
    pub lc: Option<u8>,
    pub lnr: Option<u8>,
    pub unc: Option<u8>,
    pub uc: Option<u8>,
    pub unr: Option<u8>,
}

impl From<GetSensorThresholds> for Message {
    fn from(c: GetSensorThresholds) -> Self {
        Message::new_request(NetFn::SensorEvent, 0x27, vec![c.number])
    }
}

impl IpmiCommand for GetSensorThresholds {
    type Output = RawThresholds;
    type Error = ReplyError;
    completion_as_reply_error!();

    fn parse_success_response(data: &[u8]) -> Result<RawThresholds, ReplyError> {
        if data.len() < 7 {
            return Err(ReplyError::Short);
        }
        let at = |bit: usize| (data[0] & (1 << bit) != 0).then_some(data[1 + bit]);
        Ok(RawThresholds {
            lnc: at(0),
            lc: at(1),
            lnr: at(2),
            unc: at(3),
            uc: at(4),
            unr: at(5),
        })
    }

    fn target(&self) -> Option<(Address, Channel)> {
        owner_target(self.owner)
    }
}

/// Get Chassis Status (Chassis 0x01).
#[derive(Debug, Clone, Copy)]
pub struct GetChassisStatus;

impl From<GetChassisStatus> for Message {
    fn from(_: GetChassisStatus) -> Self {
        Message::new_request(NetFn::Chassis, 0x01, Vec::new())
    }
}

impl IpmiCommand for GetChassisStatus {
    type Output = yunjian_protocol::hardware::ChassisState;
    type Error = ReplyError;
    completion_as_reply_error!();

    fn parse_success_response(data: &[u8]) -> Result<Self::Output, ReplyError> {
        match data {
            [power, _last_event, misc, ..] => Ok(yunjian_protocol::hardware::ChassisState {
                power_on: power & 0x01 != 0,
                power_fault: power & 0x18 != 0,
                intrusion: misc & 0x01 != 0,
                drive_fault: misc & 0x04 != 0,
                cooling_fault: misc & 0x08 != 0,
            }),
            _ => Err(ReplyError::Short),
        }
    }
}

/// Get SEL Info (Storage 0x40), the fields we use.
#[derive(Debug, Clone, Copy)]
pub struct GetSelInfo;

/// Entries in the SEL and its last addition/erase timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelInfo {
    pub entries: u16,
    pub last_addition: u32,
    pub last_erase: u32,
}

impl From<GetSelInfo> for Message {
    fn from(_: GetSelInfo) -> Self {
        Message::new_request(NetFn::Storage, 0x40, Vec::new())
    }
}

impl IpmiCommand for GetSelInfo {
    type Output = SelInfo;
    type Error = ReplyError;
    completion_as_reply_error!();

    fn parse_success_response(data: &[u8]) -> Result<SelInfo, ReplyError> {
        let (entries, last_addition, last_erase) = repository_info(data)?;
        Ok(SelInfo {
            entries,
            last_addition,
            last_erase,
        })
    }
}

/// The layout Get SDR Repository Info and Get SEL Info share (IPMI 2.0 §33.9, §31.2): version,
/// entry count, free space, most recent addition and erase timestamps. Returns the count and
/// the two timestamps.
fn repository_info(data: &[u8]) -> Result<(u16, u32, u32), ReplyError> {
    if data.len() < 13 {
        return Err(ReplyError::Short);
    }
    let u32_at = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    Ok((u16::from_le_bytes([data[1], data[2]]), u32_at(5), u32_at(9)))
}

/// Get SEL Entry (Storage 0x43), the whole 16-byte record, unreserved.
#[derive(Debug, Clone, Copy)]
pub struct GetSelEntry {
    pub record_id: u16,
}

/// A raw SEL record and the id of the one after it (0xFFFF: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSelEntry {
    pub next_id: u16,
    pub record: [u8; 16],
}

impl From<GetSelEntry> for Message {
    fn from(c: GetSelEntry) -> Self {
        let [i0, i1] = c.record_id.to_le_bytes();
        Message::new_request(NetFn::Storage, 0x43, vec![0, 0, i0, i1, 0, 0xFF])
    }
}

impl IpmiCommand for GetSelEntry {
    type Output = RawSelEntry;
    type Error = ReplyError;
    completion_as_reply_error!();

    fn parse_success_response(data: &[u8]) -> Result<RawSelEntry, ReplyError> {
        if data.len() < 18 {
            return Err(ReplyError::Short);
        }
        let mut record = [0u8; 16];
        record.copy_from_slice(&data[2..18]);
        Ok(RawSelEntry {
            next_id: u16::from_le_bytes([data[0], data[1]]),
            record,
        })
    }
}

/// Get SEL Time (Storage 0x48).
#[derive(Debug, Clone, Copy)]
pub struct GetSelTime;

impl From<GetSelTime> for Message {
    fn from(_: GetSelTime) -> Self {
        Message::new_request(NetFn::Storage, 0x48, Vec::new())
    }
}

impl IpmiCommand for GetSelTime {
    type Output = u32;
    type Error = ReplyError;
    completion_as_reply_error!();

    fn parse_success_response(data: &[u8]) -> Result<u32, ReplyError> {
        match data {
            [a, b, c, d, ..] => Ok(u32::from_le_bytes([*a, *b, *c, *d])),
            _ => Err(ReplyError::Short),
        }
    }
}

/// Set SEL Time (Storage 0x49), Unix seconds. Needs the operator privilege.
#[derive(Debug, Clone, Copy)]
pub struct SetSelTime(pub u32);

impl From<SetSelTime> for Message {
    fn from(c: SetSelTime) -> Self {
        Message::new_request(NetFn::Storage, 0x49, c.0.to_le_bytes().to_vec())
    }
}

impl IpmiCommand for SetSelTime {
    type Output = ();
    type Error = ReplyError;
    completion_as_reply_error!();

    fn parse_success_response(_: &[u8]) -> Result<(), ReplyError> {
        Ok(())
    }
}

/// Set Session Privilege Level (App 0x3B): 2 user, 3 operator, 4 administrator.
#[derive(Debug, Clone, Copy)]
pub struct SetSessionPrivilege(pub u8);

impl From<SetSessionPrivilege> for Message {
    fn from(c: SetSessionPrivilege) -> Self {
        Message::new_request(NetFn::App, 0x3B, vec![c.0])
    }
}

impl IpmiCommand for SetSessionPrivilege {
    type Output = u8;
    type Error = ReplyError;
    completion_as_reply_error!();

    fn parse_success_response(data: &[u8]) -> Result<u8, ReplyError> {
        data.first().map(|p| p & 0x0F).ok_or(ReplyError::Short)
    }
}

/// Close Session (App 0x3C) for the given session id.
#[derive(Debug, Clone, Copy)]
pub struct CloseSession(pub u32);

impl From<CloseSession> for Message {
    fn from(c: CloseSession) -> Self {
        Message::new_request(NetFn::App, 0x3C, c.0.to_le_bytes().to_vec())
    }
}

impl IpmiCommand for CloseSession {
    type Output = ();
    type Error = ReplyError;
    completion_as_reply_error!();

    fn parse_success_response(_: &[u8]) -> Result<(), ReplyError> {
        Ok(())
    }
}

/// Get Device ID (App 0x01), used as the cheapest liveness check of a session.
#[derive(Debug, Clone, Copy)]
pub struct GetDeviceId;

impl From<GetDeviceId> for Message {
    fn from(_: GetDeviceId) -> Self {
        Message::new_request(NetFn::App, 0x01, Vec::new())
    }
}

impl IpmiCommand for GetDeviceId {
    type Output = ();
    type Error = NotEnoughData;

    fn parse_success_response(data: &[u8]) -> Result<(), NotEnoughData> {
        if data.len() < 11 {
            return Err(NotEnoughData);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<C: Into<Message>>(c: C) -> (u8, u8, Vec<u8>) {
        let m: Message = c.into();
        (m.netfn_raw(), m.cmd(), m.data().to_vec())
    }

    #[test]
    fn sdr_requests_carry_reservation_record_offset_and_length() {
        let get = GetSdrChunk {
            reservation: 0x0102,
            record_id: 0x0304,
            offset: 5,
            length: 16,
        };
        assert_eq!(
            request(get),
            (0x0A, 0x23, vec![0x02, 0x01, 0x04, 0x03, 5, 16])
        );
        assert_eq!(request(ReserveSdrRepository), (0x0A, 0x22, vec![]));
        // ipmi_sim's reply to a 5-byte header read of record 2: next id 3, header of a
        // full sensor record (type 0x01) with 0x2F body bytes.
        let chunk =
            GetSdrChunk::parse_success_response(&[0x03, 0x00, 0x02, 0x00, 0x51, 0x01, 0x2F])
                .unwrap();
        assert_eq!(chunk.next_id, 3);
        assert_eq!(chunk.bytes, vec![0x02, 0x00, 0x51, 0x01, 0x2F]);
        assert_eq!(
            ReserveSdrRepository::parse_success_response(&[0x34, 0x12]),
            Ok(0x1234)
        );
        assert_eq!(
            ReserveSdrRepository::parse_success_response(&[1]),
            Err(ReplyError::Short)
        );
    }

    #[test]
    fn repository_info_keys_the_cache() {
        // ipmitool raw 0x0a 0x20 against our ipmi_sim fixture
        let reply = [
            0x51, 0x07, 0x00, 0xfe, 0xff, 0xe1, 0x9e, 0x01, 0x6b, 0x00, 0x00, 0x00, 0x00, 0x02,
        ];
        let stamp = GetSdrRepositoryInfo::parse_success_response(&reply).unwrap();
        assert_eq!(
            stamp,
            SdrRepositoryStamp {
                record_count: 7,
                last_addition: 0x6b01_9ee1,
                last_erase: 0,
            }
        );
        assert_eq!(
            GetSdrRepositoryInfo::parse_success_response(&reply[..12]),
            Err(ReplyError::Short)
        );
    }

    #[test]
    fn readings_carry_availability_and_state_bits() {
        // CPU Temp at 91 degrees: scanning on, UNC and UC crossed
        let r = GetSensorReading::parse_success_response(&[0x5b, 0xc0, 0x18, 0x00]).unwrap();
        assert_eq!((r.raw, r.available, r.states), (0x5b, true, 0x18));
        // discrete, offsets 0, 1 and 8 asserted; bit 7 of the second state byte is reserved
        let d = GetSensorReading::parse_success_response(&[0x00, 0xc0, 0x03, 0x81]).unwrap();
        assert_eq!(d.states, 0x0103);
        // reading unavailable (bit 5), scanning disabled (bit 6 clear)
        assert!(
            !GetSensorReading::parse_success_response(&[0, 0xe0, 0])
                .unwrap()
                .available
        );
        assert!(
            !GetSensorReading::parse_success_response(&[0, 0x80])
                .unwrap()
                .available
        );
        assert_eq!(
            GetSensorReading::parse_success_response(&[0]),
            Err(ReplyError::Short)
        );
    }

    #[test]
    fn thresholds_are_masked_by_their_readable_bits() {
        // ipmitool raw 0x04 0x27 1: UNC/UC/UNR readable = 80/90/100
        let t = GetSensorThresholds::parse_success_response(&[0x38, 0, 0, 0, 0x50, 0x5a, 0x64])
            .unwrap();
        assert_eq!(
            t,
            RawThresholds {
                unc: Some(0x50),
                uc: Some(0x5a),
                unr: Some(0x64),
                ..RawThresholds::default()
            }
        );
        assert_eq!(
            GetSensorThresholds::parse_success_response(&[0x3f, 0, 0]),
            Err(ReplyError::Short)
        );
    }

    #[test]
    fn chassis_status_bits() {
        let on = GetChassisStatus::parse_success_response(&[0x01, 0x00, 0x00, 0x00]).unwrap();
        assert!(on.power_on && !on.power_fault && !on.intrusion);
        let bad = GetChassisStatus::parse_success_response(&[0x08, 0x00, 0x0d]).unwrap();
        assert!(!bad.power_on && bad.power_fault && bad.intrusion);
        assert!(bad.drive_fault && bad.cooling_fault);
        assert_eq!(
            GetChassisStatus::parse_success_response(&[1, 0]),
            Err(ReplyError::Short)
        );
    }

    #[test]
    fn sel_info_and_entries() {
        // ipmitool raw 0x0a 0x40 against ipmi_sim: 5 entries
        let info = GetSelInfo::parse_success_response(&[
            0x51, 0x05, 0x00, 0x30, 0x3e, 0x4f, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a,
        ])
        .unwrap();
        assert_eq!(
            (info.entries, info.last_addition, info.last_erase),
            (5, 0x14f, 0)
        );
        assert_eq!(
            request(GetSelEntry { record_id: 0x0102 }),
            (0x0A, 0x43, vec![0, 0, 0x02, 0x01, 0, 0xFF])
        );
        let mut reply = vec![0x03, 0x00];
        reply.extend([
            0x02, 0x00, 0x02, 0x4e, 0x01, 0x00, 0x00, 0x20, 0x00, 0x04, 0x01, 0x01, 0x01, 0x59,
            0x5b, 0x5a,
        ]);
        let e = GetSelEntry::parse_success_response(&reply).unwrap();
        assert_eq!(e.next_id, 3);
        assert_eq!(e.record[0..2], [0x02, 0x00]);
        assert_eq!(
            GetSelEntry::parse_success_response(&reply[..17]),
            Err(ReplyError::Short)
        );
    }

    #[test]
    fn session_and_clock_commands() {
        assert_eq!(
            request(CloseSession(0x1234_5678)),
            (0x06, 0x3C, vec![0x78, 0x56, 0x34, 0x12])
        );
        assert_eq!(request(SetSessionPrivilege(3)), (0x06, 0x3B, vec![3]));
        assert_eq!(SetSessionPrivilege::parse_success_response(&[0x03]), Ok(3));
        assert_eq!(
            request(SetSelTime(0x6000_0001)),
            (0x0A, 0x49, vec![0x01, 0x00, 0x00, 0x60])
        );
        assert_eq!(
            GetSelTime::parse_success_response(&[1, 0, 0, 0x60]),
            Ok(0x6000_0001)
        );
    }

    #[test]
    fn completion_codes_round_trip_through_ipmi_rs() {
        for cc in 0xC0..=0xFFu8 {
            if let Ok(code) = CompletionErrorCode::try_from(cc) {
                assert_eq!(completion_code_byte(code), cc, "{code:?}");
            }
        }
    }
}
