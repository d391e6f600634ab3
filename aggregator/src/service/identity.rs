//! The people who sign in (等保三级 身份鉴别, 登录失败处理): users with a role, argon2id
//! password hashes, sign-in with lock-out after repeated failures, sessions with idle and
//! absolute timeouts, API tokens for scripts (hashed, shown once, with expiry and revocation).
//!
//! Every change (a user created, a password changed, a token issued or revoked) and every
//! sign-in, refused or not, is stored with its audit entry before it takes effect. Sessions
//! live in memory: a restart signs everyone out.

use crate::ingest::{StoreClosed, StoreHandle};
use crate::store::WriteBatch;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use yunjian_aggregator_core::audit::{AuditEntry, AuditEvent};
use yunjian_aggregator_core::identity::{Actor, ApiToken, Role, User, UserError};

/// Users and tokens as stored; loaded at start, changed only through [`IdentityService`].
#[derive(Debug, Default)]
pub struct Directory {
    users: BTreeMap<String, User>,
    tokens: BTreeMap<String, ApiToken>,
}

pub type SharedDirectory = Arc<RwLock<Directory>>;

impl Directory {
    pub fn new(users: Vec<User>, tokens: Vec<ApiToken>) -> Directory {
        let mut d = Directory::default();
        d.load(users, tokens);
        d
    }

    /// Add users and tokens as read from storage (start-up, or a test's fixture).
    pub fn load(&mut self, users: Vec<User>, tokens: Vec<ApiToken>) {
        self.users
            .extend(users.into_iter().map(|u| (u.name.clone(), u)));
        self.tokens
            .extend(tokens.into_iter().map(|t| (t.id.clone(), t)));
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// `user`'s tokens, by id (revoked and expired ones included).
    pub fn tokens_of<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a ApiToken> {
        self.tokens.values().filter(move |t| t.user == user)
    }

    pub fn token(&self, id: &str) -> Option<&ApiToken> {
        self.tokens.get(id)
    }
}

/// How sign-in behaves; from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInPolicy {
    /// Consecutive wrong passwords that lock an account.
    pub max_failures: u32,
    /// How long a locked account stays locked.
    pub lockout: Duration,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after sign-in, used or not.
    pub session_absolute: Duration,
}

impl Default for SignInPolicy {
    fn default() -> Self {
        SignInPolicy {
            max_failures: 5,
            lockout: Duration::from_secs(15 * 60),
            session_idle: Duration::from_secs(30 * 60),
            session_absolute: Duration::from_secs(12 * 3600),
        }
    }
}

/// Why an identity operation did not happen; nothing was changed. Messages are for people
/// (zh-CN); [`code`](Self::code) is for programs.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Wrong name or password (which of the two is not said).
    #[error("用户名或密码错误")]
    BadCredentials,
    #[error("连续登录失败次数过多，账户已锁定，请 {minutes} 分钟后再试")]
    Locked { minutes: u64 },
    #[error("用户 {0} 已存在")]
    Exists(String),
    #[error("用户 {0} 不存在")]
    UnknownUser(String),
    #[error("{0}")]
    User(#[from] UserError),
    #[error("密码不符合要求：{0}")]
    WeakPassword(&'static str),
    #[error("原密码不正确")]
    WrongOldPassword,
    #[error("无权执行此操作：需要{needed}角色")]
    Forbidden { needed: &'static str },
    #[error("API 令牌无效、已过期或已吊销")]
    BadToken,
    #[error("令牌 {0} 不存在")]
    UnknownToken(String),
    #[error("令牌有效期须为 1–365 天")]
    BadTokenLifetime,
    #[error("不能停用自己的账户")]
    OwnAccount,
    #[error("无法生成随机数：{0}")]
    Random(String),
    #[error("存储不可用，操作未执行：{0}")]
    Store(#[from] StoreClosed),
}

impl IdentityError {
    /// A stable machine code beside the message.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::BadCredentials => "bad_credentials",
            IdentityError::Locked { .. } => "account_locked",
            IdentityError::Exists(_) => "user_exists",
            IdentityError::UnknownUser(_) => "unknown_user",
            IdentityError::User(_) => "bad_user",
            IdentityError::WeakPassword(_) => "weak_password",
            IdentityError::WrongOldPassword => "wrong_old_password",
            IdentityError::Forbidden { .. } => "forbidden",
            IdentityError::BadToken => "bad_token",
            IdentityError::UnknownToken(_) => "unknown_token",
            IdentityError::BadTokenLifetime => "bad_token_lifetime",
            IdentityError::OwnAccount => "own_account",
            IdentityError::Random(_) => "no_randomness",
            IdentityError::Store(_) => "storage_unavailable",
        }
    }
}

fn random<const N: usize>() -> Result<[u8; N], IdentityError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(b)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The password's argon2id hash (the crate's defaults: 19 MiB, 2 passes, 1 lane), as a PHC
/// string with its own random salt.
pub fn hash_password(password: &str) -> Result<String, IdentityError> {
    let salt = SaltString::encode_b64(&random::<16>()?)
        .map_err(|e| IdentityError::Random(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::Random(e.to_string()))
}

/// Whether `password` matches the stored hash (a malformed hash matches nothing).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// 等保 口令复杂度: at least 10 characters of at least three kinds (lower case, upper case,
/// digits, others), and not containing the login name.
pub fn check_strength(name: &str, password: &str) -> Result<(), IdentityError> {
    if password.chars().count() < 10 {
        return Err(IdentityError::WeakPassword("至少 10 个字符"));
    }
    let kinds = [
        password.chars().any(|c| c.is_ascii_lowercase()),
        password.chars().any(|c| c.is_ascii_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_ascii_alphanumeric()),
    ];
    if kinds.iter().filter(|k| **k).count() < 3 {
        return Err(IdentityError::WeakPassword(
            "须包含小写字母、大写字母、数字、符号中的至少三类",
        ));
    }
    if password
        .to_ascii_lowercase()
        .contains(&name.to_ascii_lowercase())
    {
        return Err(IdentityError::WeakPassword("不得包含登录名"));
    }
    Ok(())
}

/// A fresh password that passes [`check_strength`]: 16 characters without look-alikes.
pub fn generate_password() -> Result<String, IdentityError> {
    const SETS: [&[u8]; 4] = [
        b"abcdefghjkmnpqrstuvwxyz",
        b"ABCDEFGHJKLMNPQRSTUVWXYZ",
        b"23456789",
        b"%+-=@#",
    ];
    let bytes = random::<16>()?;
    Ok(bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            // one of each kind first, then any kind
            let set = if i < 4 {
                SETS[i]
            } else {
                SETS[(*b as usize) % 3]
            };
            set[(*b as usize / 4) % set.len()] as char
        })
        .collect())
}

fn sha256_hex(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Equal without telling where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A new API token for `user`, valid `days` from `now_ms`: the bearer string
/// (`yj_<id>_<secret>`, shown once) and what is stored (only the secret's SHA-256).
pub fn new_token(
    user: &str,
    label: &str,
    days: u32,
    now_ms: u64,
) -> Result<(String, ApiToken), IdentityError> {
    let id = hex(&random::<6>()?);
    let secret = hex(&random::<24>()?);
    let token = ApiToken {
        id: id.clone(),
        user: user.to_string(),
        label: label.trim().to_string(),
        secret_hash: sha256_hex(&secret),
        created_ms: now_ms,
        expires_ms: now_ms + u64::from(days) * 86_400_000,
        revoked_ms: None,
    };
    Ok((format!("yj_{id}_{secret}"), token))
}

/// A user of `role` (a unit user of `unit`) named `name` with a fixed password and a
/// one-day API token, for tests that need someone signed in: `(user, bearer, token)`.
#[cfg(any(test, feature = "test-support"))]
pub fn test_user(name: &str, role: Role, unit: Option<&str>) -> (User, String, ApiToken) {
    let now = crate::ratelimit::now_ms();
    let user = User {
        name: name.to_string(),
        display_name: name.to_string(),
        role,
        unit: unit.map(str::to_string),
        password_hash: hash_password(TEST_PASSWORD).unwrap_or_default(),
        created_ms: now,
        password_changed_ms: now,
        disabled: false,
    };
    let (bearer, token) = new_token(name, "test", 1, now).unwrap_or_else(|e| panic!("{e}"));
    (user, bearer, token)
}

/// The password of every [`test_user`].
#[cfg(any(test, feature = "test-support"))]
pub const TEST_PASSWORD: &str = "Test-Passw0rd!";

/// One signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: String,
    /// Sent back with every write made from the session's pages (CSRF).
    pub csrf: String,
    pub created_ms: u64,
    pub last_ms: u64,
}

/// The signed-in sessions, by the SHA-256 of their cookie value, and the recent failures.
#[derive(Debug, Default)]
pub struct SignIns {
    sessions: HashMap<String, Session>,
    /// Per login name: consecutive failures and, once locked, until when.
    failures: HashMap<String, (u32, u64)>,
}

/// Sign-in counters for `/metrics`.
#[derive(Debug, Default)]
pub struct SignInCounters {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub locked_out: AtomicU64,
    pub refused_while_locked: AtomicU64,
}

/// What a sign-in hands the browser: the cookie value (never stored) and the CSRF token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub cookie: String,
    pub csrf: String,
    pub user: User,
}

/// What an administrator (or the command line) gives to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: String,
    pub display_name: String,
    pub role: Role,
    pub unit: Option<String>,
    pub password: String,
}

/// The identity use cases over one directory, one store and the sign-in state.
#[derive(Debug)]
pub struct IdentityService<'a> {
    pub directory: &'a SharedDirectory,
    pub store: &'a StoreHandle,
    pub sign_ins: &'a Mutex<SignIns>,
    pub counters: &'a SignInCounters,
    pub policy: &'a SignInPolicy,
}

fn may_manage_users(actor: &Actor) -> Result<(), IdentityError> {
    match actor.role {
        Role::Admin | Role::System => Ok(()),
        _ => Err(IdentityError::Forbidden {
            needed: Role::Admin.zh(),
        }),
    }
}

impl IdentityService<'_> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Directory> {
        self.directory.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Directory> {
        self.directory.write().unwrap_or_else(|p| p.into_inner())
    }

    fn sign_ins(&self) -> std::sync::MutexGuard<'_, SignIns> {
        self.sign_ins.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn commit(
        &self,
        users: Vec<User>,
        tokens: Vec<ApiToken>,
        audit: AuditEntry,
    ) -> Result<(), IdentityError> {
        self.store
            .commit(WriteBatch {
                users,
                tokens,
                audit: vec![audit],
                ..WriteBatch::default()
            })
            .await?;
        Ok(())
    }

    /// Create a user (an administrator, or the command line acting as the system).
    #[tracing::instrument(skip_all, fields(user = %new.name, role = %new.role, by = %actor.name))]
    pub async fn add_user(
        &self,
        actor: &Actor,
        new: NewUser,
        now_ms: u64,
    ) -> Result<User, IdentityError> {
        may_manage_users(actor)?;
        let unit = new
            .unit
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty());
        User::check(&new.name, new.role, unit.as_deref())?;
        if self.read().user(&new.name).is_some() {
            return Err(IdentityError::Exists(new.name));
        }
        check_strength(&new.name, &new.password)?;
        let user = User {
            display_name: match new.display_name.trim() {
                "" => new.name.clone(),
                d => d.to_string(),
            },
            name: new.name,
            role: new.role,
            unit,
            password_hash: hash_password(&new.password)?,
            created_ms: now_ms,
            password_changed_ms: now_ms,
            disabled: false,
        };
        let audit = AuditEvent::UserCreated {
            user: user.name.clone(),
            role: user.role.as_str().into(),
            unit: user.unit.clone(),
        }
        .entry(now_ms, actor);
        self.commit(vec![user.clone()], vec![], audit).await?;
        self.write().users.insert(user.name.clone(), user.clone());
        tracing::info!("user created");
        Ok(user)
    }

    /// Change a password: its owner gives the old one; an administrator resets without it.
    #[tracing::instrument(skip_all, fields(user = %name, by = %actor.name))]
    pub async fn set_password(
        &self,
        actor: &Actor,
        name: &str,
        old: Option<&str>,
        new: &str,
        now_ms: u64,
    ) -> Result<(), IdentityError> {
        let own = actor.name == name && !actor.is_system();
        if !own {
            may_manage_users(actor)?;
        }
        let mut user = self
            .read()
            .user(name)
            .cloned()
            .ok_or_else(|| IdentityError::UnknownUser(name.to_string()))?;
        if own && !verify_password(&user.password_hash, old.unwrap_or_default()) {
            return Err(IdentityError::WrongOldPassword);
        }
        check_strength(name, new)?;
        user.password_hash = hash_password(new)?;
        user.password_changed_ms = now_ms;
        let audit = AuditEvent::PasswordChanged {
            user: name.to_string(),
        }
        .entry(now_ms, actor);
        self.commit(vec![user.clone()], vec![], audit).await?;
        self.write().users.insert(user.name.clone(), user);
        // other sessions of that user end: whoever knew the old password is out
        self.sign_ins().sessions.retain(|_, s| s.user != name);
        Ok(())
    }

    /// Disable a user (they cannot sign in, their sessions end, their tokens are refused) or
    /// enable them again; an administrator only, and never oneself.
    #[tracing::instrument(skip_all, fields(user = %name, by = %actor.name))]
    pub async fn set_disabled(
        &self,
        actor: &Actor,
        name: &str,
        disabled: bool,
        now_ms: u64,
    ) -> Result<User, IdentityError> {
        may_manage_users(actor)?;
        if actor.name == name {
            return Err(IdentityError::OwnAccount);
        }
        let mut user = self
            .read()
            .user(name)
            .cloned()
            .ok_or_else(|| IdentityError::UnknownUser(name.to_string()))?;
        if user.disabled == disabled {
            return Ok(user);
        }
        user.disabled = disabled;
        let audit = AuditEvent::UserDisabled {
            user: name.to_string(),
            disabled,
        }
        .entry(now_ms, actor);
        self.commit(vec![user.clone()], vec![], audit).await?;
        self.write().users.insert(user.name.clone(), user.clone());
        if disabled {
            self.sign_ins().sessions.retain(|_, s| s.user != name);
        }
        Ok(user)
    }

    /// Check a name and password from `source`, lock the account after repeated failures,
    /// and open a session. Every attempt that is checked is audited (a refusal by the
    /// system, with the name that was given).
    #[tracing::instrument(skip_all, fields(user = %name, source = %source))]
    pub async fn sign_in(
        &self,
        name: &str,
        password: &str,
        source: &str,
        now_ms: u64,
    ) -> Result<NewSession, IdentityError> {
        if let Some(&(_, until)) = self.sign_ins().failures.get(name) {
            if until > now_ms {
                self.counters.refused_while_locked.fetch_add(1, Relaxed);
                return Err(IdentityError::Locked {
                    minutes: (until - now_ms).div_ceil(60_000),
                });
            }
        }
        let user = self.read().user(name).cloned();
        // a missing user costs the same hashing as a wrong password
        let ok = match &user {
            Some(u) => verify_password(&u.password_hash, password) && !u.disabled,
            None => {
                verify_password(&DUMMY_HASH, password);
                false
            }
        };
        let Some(user) = user.filter(|_| ok) else {
            self.counters.failed.fetch_add(1, Relaxed);
            let locked = {
                let mut s = self.sign_ins();
                let f = s.failures.entry(name.to_string()).or_insert((0, 0));
                f.0 += 1;
                if f.0 >= self.policy.max_failures {
                    f.0 = 0;
                    f.1 = now_ms + self.policy.lockout.as_millis() as u64;
                    true
                } else {
                    false
                }
            };
            if locked {
                self.counters.locked_out.fetch_add(1, Relaxed);
                tracing::warn!("account locked after repeated failed sign-ins");
            }
            let audit = AuditEvent::SignInRefused {
                user: name.to_string(),
                source: source.to_string(),
                locked,
            }
            .entry(now_ms, &Actor::system().from_source(source));
            self.commit(vec![], vec![], audit).await?;
            return Err(if locked {
                IdentityError::Locked {
                    minutes: self.policy.lockout.as_secs().div_ceil(60),
                }
            } else {
                IdentityError::BadCredentials
            });
        };
        let cookie = hex(&random::<32>()?);
        let csrf = hex(&random::<16>()?);
        let audit = AuditEvent::SignedIn {
            user: name.to_string(),
            source: source.to_string(),
        }
        .entry(now_ms, &user.actor());
        self.commit(vec![], vec![], audit).await?;
        {
            let mut s = self.sign_ins();
            s.failures.remove(name);
            s.sessions.insert(
                sha256_hex(&cookie),
                Session {
                    user: name.to_string(),
                    csrf: csrf.clone(),
                    created_ms: now_ms,
                    last_ms: now_ms,
                },
            );
        }
        self.counters.succeeded.fetch_add(1, Relaxed);
        Ok(NewSession { cookie, csrf, user })
    }

    /// The user and session behind a cookie value, if the session is still open (it is
    /// touched: idle time starts again). An idle or too old session ends here.
    pub fn session(&self, cookie: &str, now_ms: u64) -> Option<(User, Session)> {
        let key = sha256_hex(cookie);
        let session = {
            let mut s = self.sign_ins();
            let open = s.sessions.get(&key).is_some_and(|x| {
                now_ms < x.last_ms + self.policy.session_idle.as_millis() as u64
                    && now_ms < x.created_ms + self.policy.session_absolute.as_millis() as u64
            });
            if !open {
                s.sessions.remove(&key);
                return None;
            }
            let x = s.sessions.get_mut(&key)?;
            x.last_ms = now_ms;
            x.clone()
        };
        let user = self.read().user(&session.user).cloned()?;
        (!user.disabled).then_some((user, session))
    }

    /// End the session behind `cookie`.
    pub async fn sign_out(&self, cookie: &str, now_ms: u64) -> Result<(), IdentityError> {
        let Some(session) = self.sign_ins().sessions.remove(&sha256_hex(cookie)) else {
            return Ok(());
        };
        let Some(user) = self.read().user(&session.user).cloned() else {
            return Ok(());
        };
        let audit = AuditEvent::SignedOut {
            user: user.name.clone(),
        }
        .entry(now_ms, &user.actor());
        self.commit(vec![], vec![], audit).await
    }

    /// Issue an API token for `user` (oneself, or anyone by an administrator), valid for
    /// `days`. Returns the secret, shown once, and the stored token.
    #[tracing::instrument(skip_all, fields(user = %user, by = %actor.name))]
    pub async fn issue_token(
        &self,
        actor: &Actor,
        user: &str,
        label: &str,
        days: u32,
        now_ms: u64,
    ) -> Result<(String, ApiToken), IdentityError> {
        if actor.name != user || actor.is_system() {
            may_manage_users(actor)?;
        }
        if !(1..=365).contains(&days) {
            return Err(IdentityError::BadTokenLifetime);
        }
        if self.read().user(user).is_none() {
            return Err(IdentityError::UnknownUser(user.to_string()));
        }
        let (secret, token) = new_token(user, label, days, now_ms)?;
        let id = token.id.clone();
        let audit = AuditEvent::TokenIssued {
            id: id.clone(),
            user: user.to_string(),
            label: token.label.clone(),
            expires_ms: token.expires_ms,
        }
        .entry(now_ms, actor);
        self.commit(vec![], vec![token.clone()], audit).await?;
        self.write().tokens.insert(id, token.clone());
        Ok((secret, token))
    }

    /// Revoke a token (its owner's, or any by an administrator).
    pub async fn revoke_token(
        &self,
        actor: &Actor,
        id: &str,
        now_ms: u64,
    ) -> Result<ApiToken, IdentityError> {
        let mut token = self
            .read()
            .token(id)
            .cloned()
            .ok_or_else(|| IdentityError::UnknownToken(id.to_string()))?;
        if token.user != actor.name || actor.is_system() {
            may_manage_users(actor)?;
        }
        if token.revoked_ms.is_some() {
            return Ok(token);
        }
        token.revoked_ms = Some(now_ms);
        let audit = AuditEvent::TokenRevoked {
            id: id.to_string(),
            user: token.user.clone(),
        }
        .entry(now_ms, actor);
        self.commit(vec![], vec![token.clone()], audit).await?;
        self.write().tokens.insert(id.to_string(), token.clone());
        Ok(token)
    }

    /// The user a bearer token (`yj_<id>_<secret>`) acts as, if it is valid now.
    pub fn token_user(&self, bearer: &str, now_ms: u64) -> Result<User, IdentityError> {
        let (id, secret) = bearer
            .strip_prefix("yj_")
            .and_then(|rest| rest.split_once('_'))
            .ok_or(IdentityError::BadToken)?;
        let dir = self.read();
        let token = dir.token(id).ok_or(IdentityError::BadToken)?;
        if !same(&token.secret_hash, &sha256_hex(secret)) || !token.valid_at(now_ms) {
            return Err(IdentityError::BadToken);
        }
        dir.user(&token.user)
            .filter(|u| !u.disabled)
            .cloned()
            .ok_or(IdentityError::BadToken)
    }
}

/// Verified against when the user does not exist, so that a wrong name takes as long as a
/// wrong password: the hash of a random password nobody knows, made once.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    generate_password()
        .and_then(|p| hash_password(&p))
        .unwrap_or_default()
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use tokio::sync::mpsc;

    struct Rig {
        directory: SharedDirectory,
        store: StoreHandle,
        sign_ins: Mutex<SignIns>,
        counters: SignInCounters,
        policy: SignInPolicy,
        _dir: tempfile::TempDir,
    }

    impl Rig {
        fn new() -> Rig {
            let (tx, rx) = mpsc::channel(16);
            let dir = tempfile::tempdir().unwrap();
            let mut db =
                yunjian_store_sqlite::SqliteStorage::open(&dir.path().join("y.db")).unwrap();
            crate::store::Schema::migrate(&mut db).unwrap();
            std::thread::spawn(move || {
                crate::ingest::storage_loop(&mut db, rx, Arc::new(Metrics::default()));
            });
            Rig {
                directory: SharedDirectory::default(),
                store: StoreHandle::new(tx),
                sign_ins: Mutex::default(),
                counters: SignInCounters::default(),
                policy: SignInPolicy::default(),
                _dir: dir,
            }
        }

        fn service(&self) -> IdentityService<'_> {
            IdentityService {
                directory: &self.directory,
                store: &self.store,
                sign_ins: &self.sign_ins,
                counters: &self.counters,
                policy: &self.policy,
            }
        }
    }

    fn new_user(name: &str, role: Role, unit: Option<&str>) -> NewUser {
        NewUser {
            name: name.into(),
            display_name: String::new(),
            role,
            unit: unit.map(str::to_string),
            password: "Zhengwu-2026!".into(),
        }
    }

    const MIN: u64 = 60_000;

    #[tokio::test]
    async fn five_wrong_passwords_lock_the_account_for_the_lockout_then_it_signs_in() {
        let rig = Rig::new();
        let s = rig.service();
        s.add_user(&Actor::system(), new_user("ops-li", Role::Ops, None), 0)
            .await
            .unwrap();
        let t0 = 10 * MIN;
        for i in 0..4 {
            let e = s.sign_in("ops-li", "wrong", "10.0.0.9", t0 + i).await;
            assert!(matches!(e, Err(IdentityError::BadCredentials)), "{e:?}");
        }
        let e = s.sign_in("ops-li", "wrong", "10.0.0.9", t0 + 4).await;
        assert!(
            matches!(e, Err(IdentityError::Locked { minutes: 15 })),
            "{e:?}"
        );
        // locked: even the right password is refused, without being checked
        let e = s
            .sign_in("ops-li", "Zhengwu-2026!", "10.0.0.9", t0 + 4 + MIN)
            .await;
        assert!(
            matches!(e, Err(IdentityError::Locked { minutes: 14 })),
            "{e:?}"
        );
        let ok = s
            .sign_in("ops-li", "Zhengwu-2026!", "10.0.0.9", t0 + 15 * MIN + 5)
            .await
            .unwrap();
        assert_eq!(ok.user.role, Role::Ops);
        assert_eq!(rig.counters.failed.load(Relaxed), 5);
        assert_eq!(rig.counters.locked_out.load(Relaxed), 1);
        assert_eq!(rig.counters.refused_while_locked.load(Relaxed), 1);
        assert_eq!(rig.counters.succeeded.load(Relaxed), 1);
        // an unknown name fails the same way
        let e = s.sign_in("nobody", "Zhengwu-2026!", "10.0.0.9", t0).await;
        assert!(matches!(e, Err(IdentityError::BadCredentials)));
    }

    #[tokio::test]
    async fn a_session_ends_when_idle_or_too_old_and_a_password_change_ends_the_others() {
        let rig = Rig::new();
        let s = rig.service();
        s.add_user(
            &Actor::system(),
            new_user("au-wang", Role::Authority, None),
            0,
        )
        .await
        .unwrap();
        let a = s
            .sign_in("au-wang", "Zhengwu-2026!", "::1", 0)
            .await
            .unwrap();
        assert!(s.session(&a.cookie, 29 * MIN).is_some());
        assert!(
            s.session(&a.cookie, 58 * MIN).is_some(),
            "used: idle restarts"
        );
        assert!(s.session(&a.cookie, 89 * MIN).is_none(), "31 min idle");
        assert!(s.session(&a.cookie, 90 * MIN).is_none(), "and stays ended");
        let b = s
            .sign_in("au-wang", "Zhengwu-2026!", "::1", 0)
            .await
            .unwrap();
        let mut t = 0;
        while t < 12 * 60 * MIN - 20 * MIN {
            t += 20 * MIN;
            assert!(s.session(&b.cookie, t).is_some());
        }
        assert!(
            s.session(&b.cookie, 12 * 60 * MIN).is_none(),
            "12 h at most"
        );
        assert!(s.session("not-a-session", 0).is_none());

        let c = s
            .sign_in("au-wang", "Zhengwu-2026!", "::1", 0)
            .await
            .unwrap();
        let me = c.user.actor();
        let e = s
            .set_password(&me, "au-wang", Some("wrong"), "Another-2026#", MIN)
            .await;
        assert!(matches!(e, Err(IdentityError::WrongOldPassword)));
        s.set_password(&me, "au-wang", Some("Zhengwu-2026!"), "Another-2026#", MIN)
            .await
            .unwrap();
        assert!(s.session(&c.cookie, 2 * MIN).is_none());
        assert!(s
            .sign_in("au-wang", "Another-2026#", "::1", 3 * MIN)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn only_an_administrator_manages_others_and_a_token_acts_until_revoked_or_expired() {
        let rig = Rig::new();
        let s = rig.service();
        let admin = s
            .add_user(&Actor::system(), new_user("admin", Role::Admin, None), 0)
            .await
            .unwrap()
            .actor();
        let unit = s
            .add_user(&admin, new_user("cz-li", Role::Unit, Some("市财政局")), 0)
            .await
            .unwrap()
            .actor();
        let e = s
            .add_user(&unit, new_user("x", Role::Admin, None), 0)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "forbidden");
        assert_eq!(e.to_string(), "无权执行此操作：需要系统管理员角色");
        let e = s
            .add_user(&admin, new_user("cz-li", Role::Ops, None), 0)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "user_exists");
        let mut weak = new_user("weak", Role::Ops, None);
        weak.password = "password12".into();
        assert_eq!(
            s.add_user(&admin, weak, 0).await.unwrap_err().code(),
            "weak_password"
        );
        assert!(s.issue_token(&unit, "admin", "x", 30, 0).await.is_err());

        let (secret, token) = s
            .issue_token(&unit, "cz-li", "报表脚本", 30, 0)
            .await
            .unwrap();
        let user = s.token_user(&secret, 29 * 24 * 60 * MIN).unwrap();
        assert_eq!(user.unit.as_deref(), Some("市财政局"));
        assert!(
            s.token_user(&secret, 30 * 24 * 60 * MIN).is_err(),
            "expired"
        );
        let forged = format!("yj_{}_{}", token.id, "0".repeat(48));
        assert!(s.token_user(&forged, 0).is_err());
        s.revoke_token(&admin, &token.id, MIN).await.unwrap();
        assert!(matches!(
            s.token_user(&secret, 2 * MIN),
            Err(IdentityError::BadToken)
        ));
    }

    #[test]
    fn passwords_hash_with_argon2id_and_generated_ones_are_strong() {
        let h = hash_password("Zhengwu-2026!").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "Zhengwu-2026!"));
        assert!(!verify_password(&h, "zhengwu-2026!"));
        assert!(!verify_password("not a hash", "x"));
        for _ in 0..20 {
            let p = generate_password().unwrap();
            assert_eq!(p.len(), 16);
            check_strength("admin", &p).unwrap();
        }
        assert!(
            check_strength("li", "Li-2026-abcdef").is_err(),
            "contains the name"
        );
    }
}
