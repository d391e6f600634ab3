//! The one authorisation table (004 第二十四条: no unauthorised operation). Every route the
//! router serves names the [`Action`] it performs in [`ROUTES`]; [`Action::roles`] says who may
//! perform it. A route missing from the table is refused for everyone, and a test checks that
//! the table and the router list the same routes.
//!
//! A `unit` user may only take the actions whose handlers filter to the unit's own objects
//! (see [`super::scope`]); everything cloud-wide (hosts' hardware, pool capacity, the audit log,
//! `/metrics`) is not theirs to see.

use axum::http::Method;
use yunjian_aggregator_core::identity::Role;

/// Who may perform an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not (the sign-in page, static assets, the liveness probe).
    Public,
    /// Any signed-in user (their own session, password and tokens).
    SignedIn,
    /// Signed-in users holding one of these roles.
    Roles(&'static [Role]),
}

const EVERYONE: &[Role] = &[
    Role::Admin,
    Role::Ops,
    Role::Authority,
    Role::Unit,
    Role::Auditor,
];
/// Cloud-wide reads: everyone but a unit.
const CLOUD: &[Role] = &[Role::Admin, Role::Ops, Role::Authority, Role::Auditor];
const OPS: &[Role] = &[Role::Ops];
const AUTHORITY: &[Role] = &[Role::Authority];
const AUDIT: &[Role] = &[Role::Auditor, Role::Admin];
const ADMIN: &[Role] = &[Role::Admin];
/// Reclaim steps: the case's state machine decides which of these may take which step.
const CASE_PARTIES: &[Role] = &[Role::Ops, Role::Authority, Role::Unit];

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    SignInPage,
    SignIn,
    Asset,
    Health,
    OwnSession,
    SignOut,
    ChangeOwnPassword,
    OwnTokens,
    IssueOwnToken,
    RevokeOwnToken,
    ViewFleet,
    ViewHardware,
    ViewCapacity,
    ViewAlarms,
    AcknowledgeAlarm,
    ViewAudit,
    ViewMetrics,
    ViewRegister,
    ImportRegister,
    ChangeRegister,
    Sanction,
    SetQuota,
    ViewAntivirus,
    RequestStop,
    ApproveStop,
    ViewUsage,
    ViewExemptions,
    ManageExemptions,
    ViewReclaim,
    ReclaimStep,
    ViewApplications,
    SubmitApplication,
    ApplicationStep,
    AttachToApplication,
    FeedDetections,
    ViewUsers,
    ManageUsers,
}

impl Action {
    pub fn access(self) -> Access {
        use Action::*;
        match self {
            SignInPage | SignIn | Asset | Health => Access::Public,
            OwnSession | SignOut | ChangeOwnPassword | OwnTokens | IssueOwnToken
            | RevokeOwnToken => Access::SignedIn,
            // the handlers filter these to a unit's own VMs, alarms and cases
            ViewFleet | ViewAlarms | ViewRegister | ViewAntivirus | ViewUsage | ViewExemptions
            | ViewReclaim | ViewApplications => Access::Roles(EVERYONE),
            // cloud-wide: hosts' hardware and pool capacity
            ViewHardware | ViewCapacity => Access::Roles(CLOUD),
            ViewAudit => Access::Roles(AUDIT),
            ViewMetrics => Access::Roles(&[Role::Admin, Role::Ops, Role::Auditor]),
            AcknowledgeAlarm | ImportRegister | ChangeRegister | RequestStop | FeedDetections => {
                Access::Roles(OPS)
            }
            Sanction | SetQuota | ApproveStop | ManageExemptions => Access::Roles(AUTHORITY),
            ReclaimStep => Access::Roles(CASE_PARTIES),
            // a unit applies; the profile says which role takes which step
            SubmitApplication => Access::Roles(&[Role::Unit]),
            ApplicationStep | AttachToApplication => Access::Roles(CASE_PARTIES),
            ViewUsers => Access::Roles(AUDIT),
            ManageUsers => Access::Roles(ADMIN),
        }
    }

    /// May `role` (`None`: not signed in) perform it?
    pub fn allows(self, role: Option<Role>) -> bool {
        match (self.access(), role) {
            (Access::Public, _) => true,
            (_, None) => false,
            (Access::SignedIn, Some(_)) => true,
            (Access::Roles(roles), Some(r)) => roles.contains(&r),
        }
    }

    /// The roles that may, in words, for a refusal: `运维单位或主管部门`.
    pub fn needed_zh(self) -> String {
        match self.access() {
            Access::Public | Access::SignedIn => "已登录用户".into(),
            Access::Roles(roles) => roles.iter().map(|r| r.zh()).collect::<Vec<_>>().join("或"),
        }
    }
}

/// Every route: method, the router's path pattern, the action.
pub const ROUTES: &[(Method, &str, Action)] = &[
    (Method::GET, "/login", Action::SignInPage),
    (Method::POST, "/api/session", Action::SignIn),
    (Method::GET, "/api/session", Action::OwnSession),
    (Method::DELETE, "/api/session", Action::SignOut),
    (
        Method::POST,
        "/api/account/password",
        Action::ChangeOwnPassword,
    ),
    (Method::GET, "/api/account/tokens", Action::OwnTokens),
    (Method::POST, "/api/account/tokens", Action::IssueOwnToken),
    (
        Method::POST,
        "/api/account/tokens/{id}/revoke",
        Action::RevokeOwnToken,
    ),
    (Method::GET, "/assets/{name}", Action::Asset),
    (Method::GET, "/healthz", Action::Health),
    (Method::GET, "/readyz", Action::Health),
    (Method::GET, "/", Action::ViewFleet),
    (Method::GET, "/api/nodes", Action::ViewFleet),
    (Method::GET, "/api/nodes/{id}", Action::ViewFleet),
    (Method::GET, "/api/events", Action::ViewFleet),
    (Method::GET, "/metrics", Action::ViewMetrics),
    (Method::GET, "/racks", Action::ViewHardware),
    (Method::GET, "/servers/{id}", Action::ViewHardware),
    (Method::GET, "/api/racks", Action::ViewHardware),
    (
        Method::GET,
        "/api/servers/{id}/hardware",
        Action::ViewHardware,
    ),
    (Method::GET, "/capacity", Action::ViewCapacity),
    (Method::GET, "/api/capacity", Action::ViewCapacity),
    (Method::GET, "/alarms", Action::ViewAlarms),
    (Method::GET, "/api/alarms", Action::ViewAlarms),
    (
        Method::POST,
        "/api/alarms/{id}/ack",
        Action::AcknowledgeAlarm,
    ),
    (Method::GET, "/audit", Action::ViewAudit),
    (Method::GET, "/api/audit", Action::ViewAudit),
    (Method::GET, "/api/audit/export.xlsx", Action::ViewAudit),
    (Method::GET, "/register", Action::ViewRegister),
    (Method::GET, "/api/register", Action::ViewRegister),
    (
        Method::GET,
        "/api/register/export.xlsx",
        Action::ViewRegister,
    ),
    (Method::GET, "/api/quota", Action::ViewRegister),
    (Method::POST, "/api/register/import", Action::ImportRegister),
    (
        Method::POST,
        "/api/register/vms/{uuid}/change",
        Action::ChangeRegister,
    ),
    (
        Method::POST,
        "/api/register/units/{name}/sanction",
        Action::Sanction,
    ),
    (
        Method::DELETE,
        "/api/register/units/{name}/sanction",
        Action::Sanction,
    ),
    (
        Method::PUT,
        "/api/register/units/{name}/quota",
        Action::SetQuota,
    ),
    (Method::GET, "/antivirus", Action::ViewAntivirus),
    (Method::GET, "/api/antivirus", Action::ViewAntivirus),
    (
        Method::POST,
        "/api/antivirus/{node}/stop-request",
        Action::RequestStop,
    ),
    (
        Method::POST,
        "/api/antivirus/{node}/stop-request/approve",
        Action::ApproveStop,
    ),
    (Method::GET, "/api/usage/findings", Action::ViewUsage),
    (Method::GET, "/api/usage/{vm}/days", Action::ViewUsage),
    (Method::GET, "/api/exemptions", Action::ViewExemptions),
    (Method::POST, "/api/exemptions", Action::ManageExemptions),
    (
        Method::POST,
        "/api/exemptions/{id}/revoke",
        Action::ManageExemptions,
    ),
    (Method::GET, "/applications", Action::ViewApplications),
    (Method::GET, "/applications/{id}", Action::ViewApplications),
    (Method::GET, "/api/applications", Action::ViewApplications),
    (Method::POST, "/api/applications", Action::SubmitApplication),
    (
        Method::POST,
        "/api/applications/form",
        Action::SubmitApplication,
    ),
    (
        Method::GET,
        "/api/applications/{id}",
        Action::ViewApplications,
    ),
    (
        Method::POST,
        "/api/applications/{id}/attachments",
        Action::AttachToApplication,
    ),
    (
        Method::GET,
        "/api/applications/{id}/attachments/{file}",
        Action::ViewApplications,
    ),
    (
        Method::POST,
        "/api/applications/{id}/steps/{step}",
        Action::ApplicationStep,
    ),
    (Method::GET, "/reclaim", Action::ViewReclaim),
    (Method::GET, "/reclaim/{id}", Action::ViewReclaim),
    (Method::GET, "/api/reclaim/cases", Action::ViewReclaim),
    (Method::GET, "/api/reclaim/cases/{id}", Action::ViewReclaim),
    (Method::GET, "/api/reclaim/whoami", Action::OwnSession),
    (
        Method::POST,
        "/api/reclaim/cases/{id}/{step}",
        Action::ReclaimStep,
    ),
    (
        Method::POST,
        "/api/reclaim/detections",
        Action::FeedDetections,
    ),
    (Method::GET, "/account", Action::OwnSession),
    (Method::GET, "/users", Action::ViewUsers),
    (Method::GET, "/api/users", Action::ViewUsers),
    (Method::POST, "/api/users", Action::ManageUsers),
    (
        Method::POST,
        "/api/users/{name}/password",
        Action::ManageUsers,
    ),
    (
        Method::POST,
        "/api/users/{name}/disable",
        Action::ManageUsers,
    ),
    (
        Method::POST,
        "/api/users/{name}/tokens",
        Action::ManageUsers,
    ),
    (Method::POST, "/api/tokens/{id}/revoke", Action::ManageUsers),
];

/// The action of a request to the route `pattern`; `None` if the table does not list it.
pub fn action(method: &Method, pattern: &str) -> Option<Action> {
    // HEAD is a GET without the body
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    ROUTES
        .iter()
        .find(|(m, p, _)| m == method && *p == pattern)
        .map(|(_, _, a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_is_listed_once_and_writes_are_never_public() {
        for (i, (m, p, a)) in ROUTES.iter().enumerate() {
            assert!(
                !ROUTES[..i].iter().any(|(m2, p2, _)| m2 == m && p2 == p),
                "{m} {p} listed twice"
            );
            if *m != Method::GET && *a != Action::SignIn {
                assert_ne!(a.access(), Access::Public, "{m} {p} changes something");
            }
        }
        assert_eq!(action(&Method::HEAD, "/healthz"), Some(Action::Health));
        assert_eq!(action(&Method::POST, "/healthz"), None);
    }

    #[test]
    fn an_auditor_reads_everything_and_changes_nothing() {
        for (m, p, a) in ROUTES {
            let allowed = a.allows(Some(Role::Auditor));
            if *m == Method::GET {
                assert!(allowed, "the auditor reads {p}");
            } else if !matches!(a.access(), Access::Public | Access::SignedIn) {
                assert!(!allowed, "the auditor must not {m} {p}");
            }
        }
    }

    #[test]
    fn refusals_name_the_roles_needed() {
        assert_eq!(Action::ApproveStop.needed_zh(), "主管部门");
        assert_eq!(Action::ViewAudit.needed_zh(), "审计人员或系统管理员");
        assert!(!Action::ViewHardware.allows(Some(Role::Unit)));
        assert!(!Action::ViewCapacity.allows(Some(Role::Unit)));
        assert!(!Action::ViewMetrics.allows(Some(Role::Unit)));
        assert!(Action::ViewFleet.allows(Some(Role::Unit)));
        assert!(!Action::ViewFleet.allows(None));
        assert!(Action::Asset.allows(None));
    }
}
