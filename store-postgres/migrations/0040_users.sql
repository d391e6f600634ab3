-- 40: users and API tokens (only hashes: argon2id PHC strings, SHA-256 of token secrets)
CREATE TABLE users (
    name TEXT COLLATE "C" PRIMARY KEY,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL,
    unit TEXT,
    password_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    password_changed_ms BIGINT NOT NULL,
    disabled BOOLEAN NOT NULL
);
CREATE TABLE api_tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_name TEXT NOT NULL,
    label TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
