//! Users and API tokens in SQLite (schema version 40): one row each, upserted as they change.
//! Only hashes are stored: the password's argon2id PHC string, the token secret's SHA-256.

use rusqlite::{params, Connection, Row, Transaction};
use yunjian_aggregator_core::identity::{ApiToken, Role, User};
use yunjian_aggregator_core::store::StorageError;

pub(crate) const MIGRATION_40: &str = "CREATE TABLE users (
        name TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        role TEXT NOT NULL,
        unit TEXT,
        password_hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        password_changed_ms INTEGER NOT NULL,
        disabled INTEGER NOT NULL
    );
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL,
        label TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    );";

pub(crate) fn write(
    tx: &Transaction<'_>,
    users: &[User],
    tokens: &[ApiToken],
) -> rusqlite::Result<()> {
    if !users.is_empty() {
        let mut st = tx.prepare_cached(
            "INSERT INTO users (name, display_name, role, unit, password_hash, created_ms,
                password_changed_ms, disabled)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(name) DO UPDATE SET display_name = excluded.display_name,
                role = excluded.role, unit = excluded.unit,
                password_hash = excluded.password_hash,
                password_changed_ms = excluded.password_changed_ms,
                disabled = excluded.disabled",
        )?;
        for u in users {
            st.execute(params![
                u.name,
                u.display_name,
                u.role.as_str(),
                u.unit,
                u.password_hash,
                u.created_ms as i64,
                u.password_changed_ms as i64,
                u.disabled,
            ])?;
        }
    }
    if !tokens.is_empty() {
        let mut st = tx.prepare_cached(
            "INSERT INTO api_tokens (id, user_name, label, secret_hash, created_ms, expires_ms,
                revoked_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(id) DO UPDATE SET revoked_ms = excluded.revoked_ms",
        )?;
        for t in tokens {
            st.execute(params![
                t.id,
                t.user,
                t.label,
                t.secret_hash,
                t.created_ms as i64,
                t.expires_ms as i64,
                t.revoked_ms.map(|v| v as i64),
            ])?;
        }
    }
    Ok(())
}

fn user_of(r: &Row<'_>) -> rusqlite::Result<(User, String)> {
    let role: String = r.get(2)?;
    Ok((
        User {
            name: r.get(0)?,
            display_name: r.get(1)?,
            role: Role::Ops,
            unit: r.get(3)?,
            password_hash: r.get(4)?,
            created_ms: r.get::<_, i64>(5)? as u64,
            password_changed_ms: r.get::<_, i64>(6)? as u64,
            disabled: r.get(7)?,
        },
        role,
    ))
}

pub(crate) fn load_users(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
) -> Result<Vec<User>, StorageError> {
    let mut st = conn
        .prepare(
            "SELECT name, display_name, role, unit, password_hash, created_ms,
                password_changed_ms, disabled FROM users ORDER BY name",
        )
        .map_err(err)?;
    let rows = st.query_map([], user_of).map_err(err)?;
    let mut out = Vec::new();
    for row in rows {
        let (mut user, role) = row.map_err(err)?;
        user.role = Role::of_person(&role).ok_or_else(|| StorageError::Corrupt {
            what: format!("user {}", user.name),
            reason: format!("unknown role {role:?}"),
        })?;
        out.push(user);
    }
    Ok(out)
}

pub(crate) fn load_tokens(
    conn: &Connection,
    err: &dyn Fn(rusqlite::Error) -> StorageError,
) -> Result<Vec<ApiToken>, StorageError> {
    let mut st = conn
        .prepare(
            "SELECT id, user_name, label, secret_hash, created_ms, expires_ms, revoked_ms
             FROM api_tokens ORDER BY id",
        )
        .map_err(err)?;
    let rows = st
        .query_map([], |r| {
            Ok(ApiToken {
                id: r.get(0)?,
                user: r.get(1)?,
                label: r.get(2)?,
                secret_hash: r.get(3)?,
                created_ms: r.get::<_, i64>(4)? as u64,
                expires_ms: r.get::<_, i64>(5)? as u64,
                revoked_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
            })
        })
        .map_err(err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(err)
}
