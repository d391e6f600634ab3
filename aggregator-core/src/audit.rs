//! The audit log: who did what, when, to what. Services describe each operation as an
//! [`AuditEvent`]; [`AuditEvent::entry`] turns it, with the acting [`Actor`], into the stored
//! [`AuditEntry`], so every action name, subject and detail is written in this one place.
//! Entries are written with the change they record, in the same transaction, and kept
//! append-only by the storage backends.

use crate::alarms::Alarm;
use crate::identity::Actor;
use serde_json::{json, Value};

/// One entry of the append-only audit log: who did what, when, to what (001 第十九条: every
/// operation logged and kept; 004 第二十四条: no unauthorised operations).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub ts_ms: u64,
    /// A person's login name, or `system` for automatic actions.
    pub actor: String,
    /// The actor's role (`ops`, `authority`, …, `system`).
    #[serde(default)]
    pub role: String,
    /// A unit user's unit.
    #[serde(default)]
    pub unit: Option<String>,
    /// The client's address, for actions taken over the network.
    #[serde(default)]
    pub source: Option<String>,
    /// e.g. `alarm.acknowledge`, `register.import`.
    pub action: String,
    /// What it was done to, e.g. `alarm:12`.
    pub subject: String,
    pub detail: Value,
}

/// Which entries to show on the audit page or export: every field optional, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Exactly this actor (login name or `system`).
    pub actor: Option<String>,
    /// Actions starting with this (`register.` or `alarm.acknowledge`).
    pub action: Option<String>,
    /// Subjects starting with this (`unit:财政局`, `reclaim:`).
    pub subject: Option<String>,
    /// At or after this moment.
    pub from_ms: Option<u64>,
    /// Before this moment.
    pub to_ms: Option<u64>,
    pub limit: usize,
}

/// The entries as a workbook for the auditors (时间 in Beijing time, 操作人, 角色, 单位, 来源地址,
/// 操作, 对象, 详情), newest first as given.
pub fn to_xlsx(entries: &[AuditEntry]) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format, Workbook};
    const HEADERS: [(&str, f64); 8] = [
        ("时间（北京时间）", 20.0),
        ("操作人", 14.0),
        ("角色", 10.0),
        ("使用单位", 14.0),
        ("来源地址", 16.0),
        ("操作", 26.0),
        ("对象", 26.0),
        ("详情", 80.0),
    ];
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("审计日志")?;
    let head = Format::new().set_bold();
    for (c, (title, width)) in HEADERS.iter().enumerate() {
        sheet.write_string_with_format(0, c as u16, *title, &head)?;
        sheet.set_column_width(c as u16, *width)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    for (i, e) in entries.iter().enumerate() {
        let r = i as u32 + 1;
        let role =
            crate::identity::Role::of_person(&e.role).map_or(e.role.as_str(), |role| role.zh());
        let role = if e.role == "system" { "系统" } else { role };
        let cells = [
            crate::time::beijing_datetime(e.ts_ms),
            e.actor.clone(),
            role.to_string(),
            e.unit.clone().unwrap_or_default(),
            e.source.clone().unwrap_or_default(),
            e.action.clone(),
            e.subject.clone(),
            e.detail.to_string(),
        ];
        for (c, text) in cells.iter().enumerate() {
            if !text.is_empty() {
                sheet.write_string(r, c as u16, text)?;
            }
        }
    }
    book.save_to_buffer()
}

/// An entry as the chain stores it: its position, and the hashes that link it to the one
/// before (tamper evidence: 001 第十九条, 等保三级 安全审计).
#[derive(Debug, Clone, PartialEq)]
pub struct ChainedEntry {
    /// Position in the log: consecutive, so a deleted entry leaves a gap.
    pub id: u64,
    pub entry: AuditEntry,
    /// The previous entry's `hash` (empty for the first entry of the chain).
    pub prev_hash: String,
    /// [`chain_hash`] of `prev_hash`, `id` and the entry.
    pub hash: String,
}

/// The bytes an entry is hashed over: every field in a fixed order, the detail with its keys
/// sorted (serde_json's map is ordered).
pub fn canonical(id: u64, e: &AuditEntry) -> Vec<u8> {
    json!([id, e.ts_ms, e.actor, e.role, e.unit, e.source, e.action, e.subject, e.detail])
        .to_string()
        .into_bytes()
}

/// SHA-256 over the previous hash and the entry's canonical bytes, hex.
pub fn chain_hash(prev_hash: &str, id: u64, e: &AuditEntry) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update([0u8]);
    h.update(canonical(id, e));
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Left where retention removed the oldest entries: the first entry kept and the hash it links
/// to, signed with the aggregator's key so that the rest still verifies and a forged
/// checkpoint does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub first_kept_id: u64,
    pub prev_hash: String,
    pub ts_ms: u64,
    /// [`checkpoint_signature`], hex.
    pub signature: String,
}

/// HMAC-SHA256 with `key` over the checkpoint's position and hash, hex.
pub fn checkpoint_signature(key: &[u8], first_kept_id: u64, prev_hash: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"yunjian audit checkpoint\0");
    mac.update(&first_kept_id.to_be_bytes());
    mac.update(prev_hash.as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// The first moment the audit log keeps at `now_ms` when it is kept `months` calendar months:
/// the start (Beijing time) of the same day `months` months ago, clamped to that month's end.
pub fn retention_cutoff_ms(now_ms: u64, months: u32) -> u64 {
    use crate::time::{Day, BEIJING_OFFSET_MS};
    Day::of_ms(now_ms, BEIJING_OFFSET_MS)
        .months_before(months)
        .start_ms(BEIJING_OFFSET_MS)
}

/// Where the chain is broken: the first entry that was edited, deleted or reordered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("审计日志第 {id} 条的内容与其哈希不符：该条被修改过，或与其他条目互换了位置")]
    Altered { id: u64 },
    #[error("审计日志第 {id} 条与前一条不衔接（前一条哈希不符）：其前的条目被删除、插入或调换过")]
    Unlinked { id: u64 },
    #[error("审计日志缺少第 {expected} 条至第 {} 条（下一条为第 {found} 条）：条目被删除", found - 1)]
    Missing { expected: u64, found: u64 },
    #[error("审计日志的保留检查点签名无效：检查点被伪造或篡改")]
    BadCheckpoint,
    #[error(
        "审计日志第 {id} 条早于保留检查点（第 {first_kept_id} 条起）：检查点之前的条目应已删除"
    )]
    BeforeCheckpoint { id: u64, first_kept_id: u64 },
}

/// What [`verify`] found in an intact chain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    pub entries: u64,
    pub first_id: Option<u64>,
    pub last_id: Option<u64>,
    /// Entries written before the chain existed (schema before version 41): not linked.
    pub unchained: u64,
}

/// Walks the chain entry by entry (in id order) from the checkpoint, if any: every entry's
/// hash must be its own, link to the one before, and the ids must run without a gap.
#[derive(Debug)]
pub struct Verifier {
    expected: Option<(u64, String)>,
    out: Verified,
}

impl Verifier {
    /// Start at `checkpoint` (its signature checked with `key`), or at the chain's beginning.
    pub fn new(key: &[u8], checkpoint: Option<&Checkpoint>) -> Result<Verifier, ChainBreak> {
        let expected = match checkpoint {
            Some(c) => {
                if checkpoint_signature(key, c.first_kept_id, &c.prev_hash) != c.signature {
                    return Err(ChainBreak::BadCheckpoint);
                }
                Some((c.first_kept_id, c.prev_hash.clone()))
            }
            None => None,
        };
        Ok(Verifier {
            expected,
            out: Verified::default(),
        })
    }

    /// The next entry.
    pub fn push(&mut self, c: &ChainedEntry) -> Result<(), ChainBreak> {
        if c.hash.is_empty() {
            // written before the chain existed: only before its first entry
            if self.out.entries > 0 {
                return Err(ChainBreak::Altered { id: c.id });
            }
            self.out.unchained += 1;
            return Ok(());
        }
        match &self.expected {
            Some((id, prev)) => {
                if c.id < *id {
                    return Err(ChainBreak::BeforeCheckpoint {
                        id: c.id,
                        first_kept_id: *id,
                    });
                }
                if c.id > *id {
                    return Err(ChainBreak::Missing {
                        expected: *id,
                        found: c.id,
                    });
                }
                if c.prev_hash != *prev {
                    return Err(ChainBreak::Unlinked { id: c.id });
                }
            }
            // the chain's first entry links to nothing
            None if !c.prev_hash.is_empty() => return Err(ChainBreak::Unlinked { id: c.id }),
            None => {}
        }
        if chain_hash(&c.prev_hash, c.id, &c.entry) != c.hash {
            return Err(ChainBreak::Altered { id: c.id });
        }
        self.out.entries += 1;
        self.out.first_id.get_or_insert(c.id);
        self.out.last_id = Some(c.id);
        self.expected = Some((c.id + 1, c.hash.clone()));
        Ok(())
    }

    pub fn finish(self) -> Verified {
        self.out
    }
}

/// [`Verifier`] over a whole chain.
pub fn verify(
    key: &[u8],
    checkpoint: Option<&Checkpoint>,
    entries: impl IntoIterator<Item = ChainedEntry>,
) -> Result<Verified, ChainBreak> {
    let mut v = Verifier::new(key, checkpoint)?;
    for c in entries {
        v.push(&c)?;
    }
    Ok(v.finish())
}

/// A change to a unit's standing in the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitChange {
    Sanction,
    LiftSanction,
    Quota,
}

/// One audited operation, typed. The stored action names are stable: reports and the audit
/// page filter on them.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditEvent {
    /// A rule raised, escalated or cleared an alarm (or recorded an acknowledgement); `change`
    /// is the lifecycle step (`raised`, `escalated`, `acknowledged`, `cleared`).
    AlarmChanged {
        change: &'static str,
        alarm: Alarm,
    },
    /// A person acknowledged an open alarm.
    AlarmAcknowledged {
        alarm: Alarm,
        note: Option<String>,
    },
    /// A unit's register form was imported (`from`/`to`: the replaced and the new rows).
    RegisterImported {
        unit: String,
        file: String,
        format: Value,
        systems: Vec<[String; 2]>,
        imported: usize,
        from: Value,
        to: Value,
    },
    /// An approved change of one VM's size.
    RegisterChanged {
        uuid: String,
        unit: String,
        system: String,
        subsystem: String,
        approved_by: String,
        reason: String,
        from: Value,
        to: Value,
    },
    /// A unit's sanction or quota changed.
    UnitChanged {
        change: UnitChange,
        unit: String,
        from: Value,
        to: Value,
        note: Option<String>,
    },
    /// An exemption from the idle rule (`reason`: the exemption's reason code).
    ExemptionCreated {
        id: u64,
        vm: String,
        reason: Value,
        approver: String,
        expires_ms: u64,
        note: String,
    },
    ExemptionRevoked {
        id: u64,
        vm: String,
        reason: String,
    },
    /// Stopping a VM whose antivirus was removed was requested (承诺书).
    AntivirusStopRequested {
        node: String,
        reason: String,
        approval_required: bool,
        clause: String,
        removals: Value,
    },
    AntivirusStopApproved {
        node: String,
        requested_by: String,
        reason: String,
        note: Option<String>,
    },
    /// The approved stop went out as a signed command to the VM's host.
    AntivirusStopCommand {
        purpose: String,
        command: String,
        host: String,
        snapshot: Option<String>,
    },
    /// The approved stop could not be sent.
    AntivirusStopCommandFailed {
        purpose: String,
        error: String,
        approved_by: String,
    },
    /// A command's result came back (without a case step to record it).
    CommandResult {
        purpose: String,
        ok: bool,
        detail: Value,
    },
    /// A command expired without an answer.
    CommandExpired {
        purpose: String,
        command: String,
        node: String,
    },
    /// A user was created (by an administrator, or on the command line).
    UserCreated {
        user: String,
        role: String,
        unit: Option<String>,
    },
    /// A password was changed (by its owner, or reset by an administrator).
    PasswordChanged {
        user: String,
    },
    /// A user was disabled or enabled again.
    UserDisabled {
        user: String,
        disabled: bool,
    },
    /// Someone signed in, from `source` (an address).
    SignedIn {
        user: String,
        source: String,
    },
    /// A sign-in was refused (等保 登录失败处理); `locked` when it locked the account.
    SignInRefused {
        user: String,
        source: String,
        locked: bool,
    },
    SignedOut {
        user: String,
    },
    /// An API token was issued (the secret is never recorded).
    TokenIssued {
        id: String,
        user: String,
        label: String,
        expires_ms: u64,
    },
    TokenRevoked {
        id: String,
        user: String,
    },
    /// An application took a step (`submit`, `accept`, `approve`…); `register`: the unit's VMs
    /// before and after when the step changed the register.
    ApplicationStep {
        application: u64,
        step: String,
        kind: String,
        unit: String,
        from: Option<String>,
        to: String,
        reason: String,
        register: Option<Value>,
    },
    /// A reclaim case took a step (`step`: `notify`, `approve`...).
    ReclaimStep {
        case: u64,
        step: String,
        detail: Value,
    },
    /// A reclaim case changed the register (`change`): a verified downsize lowered the VM's
    /// approved size (`downsize`), its rollback put it back (`restore`), or a released VM's row
    /// left the register (`retire`).
    RegisterReclaimed {
        case: u64,
        change: &'static str,
        uuid: String,
        unit: String,
        system: String,
        subsystem: String,
        from: Value,
        to: Value,
    },
}

impl AuditEvent {
    /// The stored entry of this operation by `actor` at `ts_ms`.
    pub fn entry(self, ts_ms: u64, actor: &Actor) -> AuditEntry {
        let (action, subject, detail) = self.parts();
        AuditEntry {
            ts_ms,
            actor: actor.name.clone(),
            role: actor.role.as_str().to_string(),
            unit: actor.unit.clone(),
            source: actor.source.clone(),
            action,
            subject,
            detail,
        }
    }

    /// `(action, subject, detail)`.
    fn parts(self) -> (String, String, Value) {
        match self {
            AuditEvent::AlarmChanged { change, alarm: a } => (
                format!("alarm.{change}"),
                format!("alarm:{}", a.id),
                json!({
                    "rule": a.key.rule, "subject": a.key.subject, "level": a.level,
                    "clause": a.clause, "unit": a.unit, "title": a.title,
                }),
            ),
            AuditEvent::AlarmAcknowledged { alarm: a, note } => (
                "alarm.acknowledge".into(),
                format!("alarm:{}", a.id),
                json!({
                    "rule": a.key.rule, "subject": a.key.subject, "clause": a.clause,
                    "note": note,
                }),
            ),
            AuditEvent::RegisterImported {
                unit,
                file,
                format,
                systems,
                imported,
                from,
                to,
            } => (
                "register.import".into(),
                format!("unit:{unit}"),
                json!({
                    "file": file, "format": format, "systems": systems, "imported": imported,
                    "from": from, "to": to,
                }),
            ),
            AuditEvent::RegisterChanged {
                uuid,
                unit,
                system,
                subsystem,
                approved_by,
                reason,
                from,
                to,
            } => (
                "register.change".into(),
                format!("vm:{}", uuid.to_ascii_lowercase()),
                json!({
                    "unit": unit, "system": system, "subsystem": subsystem,
                    "approved_by": approved_by, "reason": reason, "from": from, "to": to,
                }),
            ),
            AuditEvent::UnitChanged {
                change,
                unit,
                from,
                to,
                note,
            } => {
                let action = match change {
                    UnitChange::Sanction => "register.sanction",
                    UnitChange::LiftSanction => "register.lift_sanction",
                    UnitChange::Quota => "register.quota",
                };
                let mut detail = json!({ "from": from, "to": to });
                if change == UnitChange::LiftSanction {
                    detail["note"] = json!(note);
                }
                (action.into(), format!("unit:{unit}"), detail)
            }
            AuditEvent::ExemptionCreated {
                id,
                vm,
                reason,
                approver,
                expires_ms,
                note,
            } => (
                "exemption.create".into(),
                format!("exemption:{id}"),
                json!({
                    "vm": vm, "reason": reason, "approver": approver,
                    "expires_ms": expires_ms, "note": note,
                }),
            ),
            AuditEvent::ExemptionRevoked { id, vm, reason } => (
                "exemption.revoke".into(),
                format!("exemption:{id}"),
                json!({ "vm": vm, "reason": reason }),
            ),
            AuditEvent::AntivirusStopRequested {
                node,
                reason,
                approval_required,
                clause,
                removals,
            } => (
                "antivirus.stop_request".into(),
                format!("antivirus:{node}"),
                json!({
                    "reason": reason, "approval_required": approval_required,
                    "clause": clause, "removals": removals,
                }),
            ),
            AuditEvent::AntivirusStopApproved {
                node,
                requested_by,
                reason,
                note,
            } => (
                "antivirus.stop_approve".into(),
                format!("antivirus:{node}"),
                json!({ "requested_by": requested_by, "reason": reason, "note": note }),
            ),
            AuditEvent::AntivirusStopCommand {
                purpose,
                command,
                host,
                snapshot,
            } => (
                "antivirus.stop_command".into(),
                purpose,
                json!({ "command": command, "host": host, "action": "stop", "snapshot": snapshot }),
            ),
            AuditEvent::AntivirusStopCommandFailed {
                purpose,
                error,
                approved_by,
            } => (
                "antivirus.stop_command_failed".into(),
                purpose,
                json!({ "error": error, "approved_by": approved_by }),
            ),
            AuditEvent::CommandResult {
                purpose,
                ok,
                detail,
            } => (
                format!("command.{}", if ok { "succeeded" } else { "failed" }),
                purpose,
                detail,
            ),
            AuditEvent::CommandExpired {
                purpose,
                command,
                node,
            } => (
                "command.expired".into(),
                purpose,
                json!({ "command": command, "node": node }),
            ),
            AuditEvent::UserCreated { user, role, unit } => (
                "user.create".into(),
                format!("user:{user}"),
                json!({ "role": role, "unit": unit }),
            ),
            AuditEvent::PasswordChanged { user } => {
                ("user.password".into(), format!("user:{user}"), json!({}))
            }
            AuditEvent::UserDisabled { user, disabled } => (
                if disabled {
                    "user.disable"
                } else {
                    "user.enable"
                }
                .into(),
                format!("user:{user}"),
                json!({}),
            ),
            AuditEvent::SignedIn { user, source } => (
                "session.sign_in".into(),
                format!("user:{user}"),
                json!({ "source": source }),
            ),
            AuditEvent::SignInRefused {
                user,
                source,
                locked,
            } => (
                "session.sign_in_refused".into(),
                format!("user:{user}"),
                json!({ "source": source, "locked": locked }),
            ),
            AuditEvent::SignedOut { user } => {
                ("session.sign_out".into(), format!("user:{user}"), json!({}))
            }
            AuditEvent::TokenIssued {
                id,
                user,
                label,
                expires_ms,
            } => (
                "token.issue".into(),
                format!("token:{id}"),
                json!({ "user": user, "label": label, "expires_ms": expires_ms }),
            ),
            AuditEvent::TokenRevoked { id, user } => (
                "token.revoke".into(),
                format!("token:{id}"),
                json!({ "user": user }),
            ),
            AuditEvent::ReclaimStep { case, step, detail } => {
                (format!("reclaim.{step}"), format!("reclaim:{case}"), detail)
            }
            AuditEvent::ApplicationStep {
                application,
                step,
                kind,
                unit,
                from,
                to,
                reason,
                register,
            } => (
                format!("application.{step}"),
                format!("application:{application}"),
                json!({
                    "kind": kind, "unit": unit, "from": from, "to": to, "reason": reason,
                    "register": register,
                }),
            ),
            AuditEvent::RegisterReclaimed {
                case,
                change,
                uuid,
                unit,
                system,
                subsystem,
                from,
                to,
            } => (
                format!("register.{change}"),
                format!("vm:{}", uuid.to_ascii_lowercase()),
                json!({
                    "case": case, "unit": unit, "system": system, "subsystem": subsystem,
                    "from": from, "to": to,
                }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<ChainedEntry> {
        let mut prev = String::new();
        (1..=n)
            .map(|id| {
                let entry = AuditEvent::ExemptionRevoked {
                    id,
                    vm: format!("vm-{id}"),
                    reason: "到期".into(),
                }
                .entry(id * 10, &Actor::system());
                let hash = chain_hash(&prev, id, &entry);
                ChainedEntry {
                    id,
                    entry,
                    prev_hash: std::mem::replace(&mut prev, hash.clone()),
                    hash,
                }
            })
            .collect()
    }

    #[test]
    fn an_edit_a_deletion_and_a_swap_are_each_found_at_the_first_entry_touched() {
        let key = b"k";
        let good = chain(6);
        let ok = verify(key, None, good.clone()).unwrap();
        assert_eq!((ok.entries, ok.first_id, ok.last_id), (6, Some(1), Some(6)));

        let mut edited = good.clone();
        edited[2].entry.actor = "someone-else".into();
        assert_eq!(
            verify(key, None, edited),
            Err(ChainBreak::Altered { id: 3 })
        );

        let mut deleted = good.clone();
        deleted.remove(3);
        assert_eq!(
            verify(key, None, deleted),
            Err(ChainBreak::Missing {
                expected: 4,
                found: 5
            })
        );

        // two rows' contents swapped, ids kept (a reorder in place)
        let mut swapped = good.clone();
        let (a, b) = (swapped[1].clone(), swapped[4].clone());
        swapped[1] = ChainedEntry { id: 2, ..b };
        swapped[4] = ChainedEntry { id: 5, ..a };
        assert_eq!(
            verify(key, None, swapped),
            Err(ChainBreak::Unlinked { id: 2 })
        );
    }

    #[test]
    fn a_signed_checkpoint_lets_the_rest_verify_and_a_forged_one_does_not() {
        let key = b"master-key";
        let all = chain(6);
        let kept: Vec<_> = all[3..].to_vec();
        let cp = Checkpoint {
            first_kept_id: 4,
            prev_hash: all[2].hash.clone(),
            ts_ms: 99,
            signature: checkpoint_signature(key, 4, &all[2].hash),
        };
        assert_eq!(verify(key, Some(&cp), kept.clone()).unwrap().entries, 3);
        assert_eq!(
            verify(key, None, kept.clone()),
            Err(ChainBreak::Unlinked { id: 4 })
        );
        let forged = Checkpoint {
            signature: checkpoint_signature(b"guessed", 4, &all[2].hash),
            ..cp.clone()
        };
        assert_eq!(
            verify(key, Some(&forged), kept),
            Err(ChainBreak::BadCheckpoint)
        );
        // the first kept entries deleted as well, under the same checkpoint
        assert_eq!(
            verify(key, Some(&cp), all[4..].to_vec()),
            Err(ChainBreak::Missing {
                expected: 4,
                found: 5
            })
        );
    }

    #[test]
    fn retention_counts_calendar_months_across_29_february() {
        use crate::time::{Day, BEIJING_OFFSET_MS};
        let at =
            |y, m, d, h: u64| Day::from_ymd(y, m, d).start_ms(BEIJING_OFFSET_MS) + h * 3_600_000;
        // a year kept on 2025-02-28: 2024-02-28 is the first day kept, the 27th is gone
        let cut = retention_cutoff_ms(at(2025, 2, 28, 12), 12);
        assert!(at(2024, 2, 27, 23) < cut && at(2024, 2, 28, 0) >= cut);
        // on 2025-03-01 the leap day itself is out, 1 March kept
        let cut = retention_cutoff_ms(at(2025, 3, 1, 9), 12);
        assert!(at(2024, 2, 29, 23) < cut && at(2024, 3, 1, 0) >= cut);
        // on the leap day, a year back is 28 February 2023: the 27th dropped, the 28th kept
        let cut = retention_cutoff_ms(at(2024, 2, 29, 8), 12);
        assert!(at(2023, 2, 27, 12) < cut && at(2023, 2, 28, 0) >= cut);
        // six months from 31 August: the end of February
        let cut = retention_cutoff_ms(at(2024, 8, 31, 8), 6);
        assert!(at(2024, 2, 28, 12) < cut && at(2024, 2, 29, 0) >= cut);
    }

    /// The audit page, reports and `audit verify` filter on these names: they must not drift.
    #[test]
    fn action_names_and_subjects_are_stable() {
        let cases = [
            (
                AuditEvent::ExemptionRevoked {
                    id: 7,
                    vm: "vm-1".into(),
                    reason: "不再需要".into(),
                },
                "exemption.revoke",
                "exemption:7",
            ),
            (
                AuditEvent::UnitChanged {
                    change: UnitChange::LiftSanction,
                    unit: "财政局".into(),
                    from: json!({"reason": "x"}),
                    to: Value::Null,
                    note: Some("已整改".into()),
                },
                "register.lift_sanction",
                "unit:财政局",
            ),
            (
                AuditEvent::CommandResult {
                    purpose: "reclaim:3".into(),
                    ok: false,
                    detail: json!({}),
                },
                "command.failed",
                "reclaim:3",
            ),
            (
                AuditEvent::RegisterChanged {
                    uuid: "ABC".into(),
                    unit: "u".into(),
                    system: "s".into(),
                    subsystem: String::new(),
                    approved_by: "a".into(),
                    reason: "r".into(),
                    from: json!({}),
                    to: json!({}),
                },
                "register.change",
                "vm:abc",
            ),
        ];
        for (event, action, subject) in cases {
            let ops =
                Actor::person("ops-li", crate::identity::Role::Ops, None).from_source("10.1.2.3");
            let e = event.entry(5, &ops);
            assert_eq!((e.action.as_str(), e.subject.as_str()), (action, subject));
            assert_eq!(
                (e.ts_ms, e.actor.as_str(), e.role.as_str()),
                (5, "ops-li", "ops")
            );
            assert_eq!(e.source.as_deref(), Some("10.1.2.3"));
        }
        let lifted = AuditEvent::UnitChanged {
            change: UnitChange::LiftSanction,
            unit: "u".into(),
            from: Value::Null,
            to: Value::Null,
            note: Some("已整改".into()),
        }
        .entry(1, &Actor::system());
        assert_eq!(lifted.detail["note"], "已整改");
        assert_eq!(lifted.actor, "system");
    }
}
