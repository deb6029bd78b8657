-- Accounts hosted here. Handles and emails are stored lower-cased so uniqueness is
-- case-insensitive, as the protocol compares them.
CREATE TABLE account (
	did                TEXT PRIMARY KEY,
	handle             TEXT NOT NULL UNIQUE,
	email              TEXT UNIQUE,
	email_confirmed_at TEXT,
	-- scrypt as the reference PDS stores it: hex salt ":" hex 64-byte key.
	password_hash      TEXT NOT NULL,
	created_at         TEXT NOT NULL,
	deactivated_at     TEXT,
	delete_after       TEXT,
	takedown_ref       TEXT,
	invites_disabled   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

CREATE TABLE app_password (
	did           TEXT NOT NULL REFERENCES account(did) ON DELETE CASCADE,
	name          TEXT NOT NULL,
	password_hash TEXT NOT NULL,
	privileged    INTEGER NOT NULL DEFAULT 0,
	created_at    TEXT NOT NULL,
	PRIMARY KEY (did, name)
) WITHOUT ROWID;

-- One row per refresh token (by its jti). A rotated token keeps a row with next_id set
-- until its grace window ends, so a client retrying a refresh gets the same successor.
CREATE TABLE refresh_token (
	id                TEXT PRIMARY KEY,
	did               TEXT NOT NULL REFERENCES account(did) ON DELETE CASCADE,
	app_password_name TEXT,
	expires_at        TEXT NOT NULL,
	next_id           TEXT
) WITHOUT ROWID;
CREATE INDEX refresh_token_did ON refresh_token (did);

CREATE TABLE invite_code (
	code        TEXT PRIMARY KEY,
	available   INTEGER NOT NULL,
	disabled    INTEGER NOT NULL DEFAULT 0,
	for_account TEXT NOT NULL,
	created_by  TEXT NOT NULL,
	created_at  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX invite_code_for_account ON invite_code (for_account);

CREATE TABLE invite_code_use (
	code    TEXT NOT NULL REFERENCES invite_code(code) ON DELETE CASCADE,
	used_by TEXT NOT NULL,
	used_at TEXT NOT NULL,
	PRIMARY KEY (code, used_by)
) WITHOUT ROWID;

-- Short-lived tokens sent by email (or logged when no mail is configured), one per purpose.
CREATE TABLE email_token (
	purpose      TEXT NOT NULL,
	did          TEXT NOT NULL REFERENCES account(did) ON DELETE CASCADE,
	token        TEXT NOT NULL,
	requested_at TEXT NOT NULL,
	PRIMARY KEY (purpose, did)
) WITHOUT ROWID;
CREATE UNIQUE INDEX email_token_token ON email_token (purpose, token);

-- Secrets the node generates for itself on first start (the session-token HMAC key, the
-- PLC rotation key); never served, never logged.
CREATE TABLE service_secret (
	name  TEXT PRIMARY KEY,
	value BLOB NOT NULL
) WITHOUT ROWID;
