//! One long-lived connection to the BMC: an RMCP+ session over the LAN or the Linux IPMI
//! device, activated on first use, dropped on any transport error (so the next exchange
//! re-activates it: after a BMC reset, an idle timeout, a lost packet) and closed on drop.
//!
//! Every exchange has a deadline: `ipmi-rs` sets it as the socket's (or the device's) receive
//! timeout, so a dead BMC costs one timeout per sweep, never more. A session is dropped after a
//! timeout rather than reused: `ipmi-rs` matches replies to requests by netfn and command only,
//! so a late reply could otherwise be taken for the answer to the next request.
//!
//! Workarounds for `ipmi-rs` 0.6 (each would be a small upstream change):
//! * it never closes a session (`Rmcp::activate` says "TODO: shut down currently active
//!   state") and keeps the session id private; [`session_id_of`] reads it from the
//!   connection's `Debug` output, and [`Bmc::close`] sends Close Session with it. Upstream:
//!   `Rmcp::session_id()` or `Rmcp::close()`.
//! * it asks for the administrator privilege in both the Open Session request and RAKP 1, so a
//!   BMC account with a lower maximum privilege is refused (RAKP 2 "unauthorized role or
//!   privilege"); [`BmcError`] says so. Upstream: a privilege parameter on `activate`.
//! * it offers only cipher suite 3 (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128); a BMC that
//!   refuses suite 3 cannot be read. RMCP 1.5 (MD5) is not used: `ipmi-rs` fails its own
//!   auth-code check there.
//! * its RMCP+ `send` unwraps the socket write; we drop the session after any error so the next
//!   write is on a fresh socket (a pending ICMP "port unreachable" is consumed by the failed
//!   receive, not by a later send).

use super::commands::{completion_code_byte, CloseSession};
use ipmi_rs::connection::IpmiCommand;
use ipmi_rs::rmcp::{
    ActivationError, RakpMessage2ParseError, Rmcp, RmcpIpmiError, RmcpIpmiReceiveError,
    V2_0ActivationError,
};
use ipmi_rs::{Ipmi, IpmiError};
use std::fmt;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The BMC account, read from a file that only root can read. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why the credentials file cannot be used. Never quotes the file's content.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("BMC credentials file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "BMC credentials file {} is readable by group or others (mode {mode:04o}): \
         `chmod 600` it, owned by root",
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("BMC credentials file {} line {line}: {reason}", path.display())]
    Format {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
}

impl Credentials {
    pub fn new(username: &str, password: &[u8]) -> Self {
        Credentials {
            username: username.to_string(),
            password: password.to_vec(),
        }
    }

    /// Read `username = NAME` and `password = SECRET` lines (`#` comments, blank lines). The
    /// file must not be readable by group or others.
    pub fn read(path: &Path) -> Result<Self, CredentialsError> {
        let io = |source| CredentialsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredentialsError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(&text).map_err(|(line, reason)| CredentialsError::Format {
            path: path.to_path_buf(),
            line,
            reason,
        })
    }

    /// The file's text; errors give the line number and the reason, never the content.
    pub fn parse(text: &str) -> Result<Self, (usize, &'static str)> {
        let (mut username, mut password) = (None, None);
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err((i + 1, "expected `username = NAME` or `password = SECRET`"));
            };
            let value = value.trim();
            let slot = match key.trim() {
                "username" => &mut username,
                "password" => &mut password,
                _ => return Err((i + 1, "unknown key: expected username or password")),
            };
            if slot.replace(value.to_string()).is_some() {
                return Err((i + 1, "given twice"));
            }
        }
        let password = password.ok_or((0, "no `password = ...` line"))?;
        if password.len() > 20 {
            return Err((0, "the password is longer than IPMI's 20 bytes"));
        }
        Ok(Credentials {
            username: username.unwrap_or_default(),
            password: password.into_bytes(),
        })
    }
}

/// Where the BMC is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// RMCP+ to `host:port`.
    Lan {
        address: String,
        credentials: Credentials,
    },
    /// The Linux IPMI driver's device, e.g. `/dev/ipmi0`.
    Device(PathBuf),
}

impl Target {
    /// How reports name the transport: `"lanplus 10.0.0.5:623"`, `"/dev/ipmi0"`.
    pub fn label(&self) -> String {
        match self {
            Target::Lan { address, .. } => format!("lanplus {address}"),
            Target::Device(path) => path.display().to_string(),
        }
    }

    /// The BMC alone, for error messages: `"10.0.0.5:623"`, `"/dev/ipmi0"`.
    pub fn bmc(&self) -> String {
        match self {
            Target::Lan { address, .. } => address.clone(),
            Target::Device(path) => path.display().to_string(),
        }
    }
}

/// A failure talking to the BMC; `Display` names the BMC and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmcError {
    /// No session could be established, or the link broke: the BMC is unreachable.
    #[error("{bmc}: {cause}")]
    Link { bmc: String, cause: String },
    /// The BMC answered a command with a completion code other than success.
    #[error("{bmc}: {command}: completion code {code:#04x}")]
    Completion {
        bmc: String,
        command: &'static str,
        code: u8,
    },
    /// The BMC answered with something we could not parse.
    #[error("{bmc}: {command}: {cause}")]
    Reply {
        bmc: String,
        command: &'static str,
        cause: String,
    },
}

impl BmcError {
    /// The completion code, for the callers that handle some (0xCB not present, 0xC5
    /// reservation lost).
    pub fn completion_code(&self) -> Option<u8> {
        match self {
            BmcError::Completion { code, .. } => Some(*code),
            _ => None,
        }
    }
}

enum Conn {
    Lan {
        ipmi: Box<Ipmi<Rmcp>>,
        session_id: Option<u32>,
    },
    Device(Ipmi<ipmi_rs::File>),
}

/// The BMC and, when activated, its session.
pub struct Bmc {
    target: Target,
    timeout: Duration,
    conn: Option<Conn>,
    activations: u64,
}

impl fmt::Debug for Bmc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bmc")
            .field("target", &self.target.label())
            .field("active", &self.conn.is_some())
            .field("activations", &self.activations)
            .finish()
    }
}

impl Bmc {
    /// Nothing is sent until the first [`Bmc::call`].
    pub fn new(target: Target, timeout: Duration) -> Self {
        Bmc {
            target,
            timeout,
            conn: None,
            activations: 0,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sessions activated so far (1 after the first, +1 per re-activation).
    pub fn activations(&self) -> u64 {
        self.activations
    }

    pub fn is_active(&self) -> bool {
        self.conn.is_some()
    }

    fn link_error(&self, cause: impl Into<String>) -> BmcError {
        BmcError::Link {
            bmc: self.target.bmc(),
            cause: cause.into(),
        }
    }

    fn activate(&mut self) -> Result<&mut Conn, BmcError> {
        if self.conn.is_none() {
            let conn = match &self.target {
                Target::Lan {
                    address,
                    credentials,
                } => {
                    let mut rmcp = Rmcp::new(address.as_str(), self.timeout)
                        .map_err(|e| self.link_error(format!("cannot resolve the address: {e}")))?;
                    rmcp.activate(
                        true,
                        Some(credentials.username.as_str()),
                        Some(&credentials.password),
                    )
                    .map_err(|e| self.link_error(activation_cause(&e, self.timeout)))?;
                    let session_id = session_id_of(&rmcp);
                    Conn::Lan {
                        ipmi: Box::new(Ipmi::new(rmcp)),
                        session_id,
                    }
                }
                Target::Device(path) => {
                    let file = ipmi_rs::File::new(path, self.timeout)
                        .map_err(|e| self.link_error(format!("cannot open the device: {e}")))?;
                    Conn::Device(Ipmi::new(file))
                }
            };
            self.activations += 1;
            tracing::debug!(bmc = %self.target.label(), activations = self.activations, "BMC session activated");
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just activated"))
    }

    /// Send one command and wait (at most the timeout) for its reply, activating the session
    /// first when there is none. A transport error drops the session.
    pub fn call<C>(&mut self, command: &'static str, request: C) -> Result<C::Output, BmcError>
    where
        C: IpmiCommand,
        C::Error: fmt::Debug,
    {
        let timeout = self.timeout;
        let result = match self.activate()? {
            Conn::Lan { ipmi, .. } => ipmi
                .send_recv(request)
                .map_err(|e| classify(e.map(|c| rmcp_cause(&c, timeout)))),
            Conn::Device(ipmi) => ipmi
                .send_recv(request)
                .map_err(|e| classify(e.map(|c| io_cause(&c, timeout)))),
        };
        result.map_err(|failure| match failure {
            Failure::Link(cause) => {
                self.conn = None;
                self.link_error(cause)
            }
            Failure::Completion(code) => BmcError::Completion {
                bmc: self.target.bmc(),
                command,
                code,
            },
            Failure::Reply(cause) => BmcError::Reply {
                bmc: self.target.bmc(),
                command,
                cause,
            },
        })
    }

    /// Close the session (Close Session with its id), if there is one.
    pub fn close(&mut self) {
        if let Some(Conn::Lan {
            mut ipmi,
            session_id: Some(id),
        }) = self.conn.take()
        {
            match ipmi.send_recv(CloseSession(id)) {
                Ok(()) => tracing::debug!(bmc = %self.target.label(), "BMC session closed"),
                Err(e) => {
                    tracing::debug!(bmc = %self.target.label(), "closing the BMC session: {e:?}")
                }
            }
        }
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        self.close();
    }
}

enum Failure {
    Link(String),
    Completion(u8),
    Reply(String),
}

fn classify<E: fmt::Debug>(e: IpmiError<String, E>) -> Failure {
    match e {
        IpmiError::Connection(cause) => Failure::Link(cause),
        IpmiError::Failed {
            completion_code, ..
        } => Failure::Completion(completion_code_byte(completion_code)),
        IpmiError::Command {
            completion_code: Some(code),
            ..
        } => Failure::Completion(completion_code_byte(code)),
        IpmiError::Command { error, .. } => Failure::Reply(format!("unexpected reply: {error:?}")),
        // a reply to another request: the session is out of step; start a new one
        IpmiError::UnexpectedResponse {
            netfn_sent,
            netfn_recvd,
            cmd_sent,
            cmd_recvd,
        } => Failure::Link(format!(
            "reply out of step (sent {netfn_sent:?}/{cmd_sent:#04x}, got {netfn_recvd:?}/{cmd_recvd:#04x})"
        )),
        IpmiError::NetFnIsResponse(netfn) => Failure::Reply(format!("response netfn {netfn:?} in a request")),
    }
}

fn io_cause(e: &std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("no answer within {} ms", timeout.as_millis())
        }
        ErrorKind::ConnectionRefused => "connection refused (nothing answers on that port)".into(),
        _ => e.to_string(),
    }
}

fn rmcp_cause(e: &RmcpIpmiError, timeout: Duration) -> String {
    match e {
        RmcpIpmiError::Receive(RmcpIpmiReceiveError::Io(io)) => io_cause(io, timeout),
        RmcpIpmiError::NotActive => "session not active".into(),
        other => format!("{other:?}"),
    }
}

fn activation_cause(e: &ActivationError, timeout: Duration) -> String {
    use V2_0ActivationError as V2;
    match e {
        ActivationError::PongReceive(io) | ActivationError::PingSend(io) => {
            format!("no RMCP presence pong: {}", io_cause(io, timeout))
        }
        ActivationError::BindSocket(io) => format!("cannot open a UDP socket: {io}"),
        ActivationError::IpmiNotSupported => "the BMC does not support IPMI over RMCP".into(),
        ActivationError::V2_0(V2::ServerAuthenticationFailed)
        | ActivationError::V2_0(V2::RakpMessage4InvalidIntegrityCheckValue) => {
            "authentication failed (wrong password?)".into()
        }
        ActivationError::V2_0(V2::RakpMessage2Parse(RakpMessage2ParseError::ErrorStatusCode(
            code,
        ))) => format!(
            "the BMC refused the login ({code:?}): unknown user name, or an account without \
             the administrator privilege that ipmi-rs always requests"
        ),
        ActivationError::V2_0(V2::OpenSessionResponseParse(e)) => {
            format!("the BMC refused the RMCP+ session ({e:?}); ipmi-rs offers cipher suite 3 only")
        }
        ActivationError::V2_0(
            V2::OpenSessionResponseReceive(RmcpIpmiReceiveError::Io(io))
            | V2::RakpMessage2Receive(RmcpIpmiReceiveError::Io(io))
            | V2::RakpMessage4Receive(RmcpIpmiReceiveError::Io(io)),
        ) => format!("session setup: {}", io_cause(io, timeout)),
        ActivationError::GetChannelAuthenticationCapabilities(e) => {
            format!("Get Channel Authentication Capabilities: {e:?}")
        }
        other => format!("session activation failed: {other:?}"),
    }
}

/// The managed system's session id of an active RMCP connection. `ipmi-rs` keeps it private;
/// its `Debug` output is the only way to it (`session_id: N` of the active state).
pub fn session_id_of(rmcp: &Rmcp) -> Option<u32> {
    parse_session_id(&format!("{rmcp:?}"))
}

fn parse_session_id(debug: &str) -> Option<u32> {
    let start = debug.find("session_id: ")? + "session_id: ".len();
    let digits: String = debug[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_and_never_show_the_password() {
        let c = Credentials::parse("# BMC\nusername = admin\npassword = s3cret=x\n").unwrap();
        assert_eq!(c, Credentials::new("admin", b"s3cret=x"));
        let shown = format!("{c:?}");
        assert!(
            shown.contains("admin") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(Credentials::parse("username = a\n").unwrap_err().0, 0);
        assert_eq!(
            Credentials::parse("password = a\npassword = b\n").unwrap_err(),
            (2, "given twice")
        );
        let err = Credentials::parse("username a\n").unwrap_err();
        assert_eq!(err.0, 1);
        assert_eq!(
            Credentials::parse("password = 123456789012345678901\n")
                .unwrap_err()
                .0,
            0
        );
    }

    #[test]
    fn credentials_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bmc.credentials");
        std::fs::write(&path, "username = admin\npassword = topsecret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Credentials::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("readable by group or others (mode 0644)"),
            "{err}"
        );
        assert!(err.contains(&path.display().to_string()) && !err.contains("topsecret"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            Credentials::read(&path).unwrap(),
            Credentials::new("admin", b"topsecret")
        );
        std::fs::write(&path, "user = admin\npassword = topsecret\n").unwrap();
        let err = Credentials::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 1") && !err.contains("topsecret"),
            "{err}"
        );
        let missing = Credentials::read(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("none"), "{missing}");
    }

    #[test]
    fn session_id_is_read_from_the_debug_output() {
        let sample = "Rmcp { unbound_state: RmcpWithState(Unbound { address: 127.0.0.1:623 }), \
                      active_state: Some(RmcpWithState(V2_0(State { socket: RmcpIpmiSocket { .. }, \
                      session_id: 3735928559, session_sequence_number: 2 })))";
        assert_eq!(parse_session_id(sample), Some(0xDEAD_BEEF));
        assert_eq!(parse_session_id("Rmcp { active_state: None }"), None);
    }

    #[test]
    fn a_dead_bmc_fails_within_the_timeout_naming_it() {
        // a bound UDP port that never answers
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = silent.local_addr().unwrap().to_string();
        let mut bmc = Bmc::new(
            Target::Lan {
                address: address.clone(),
                credentials: Credentials::new("admin", b"secret"),
            },
            Duration::from_millis(200),
        );
        let start = std::time::Instant::now();
        let err = bmc
            .call("Get Device ID", super::super::commands::GetDeviceId)
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        let text = err.to_string();
        assert!(text.starts_with(&format!("{address}: ")), "{text}");
        assert!(text.contains("no answer within 200 ms"), "{text}");
        assert!(!bmc.is_active());
        assert!(!format!("{bmc:?}").contains("secret"));
    }
}
