-- Signing keys handed out by com.atproto.server.reserveSigningKey before an account that is
-- migrating here exists: its new PLC operation must name the key first. did is the DID the
-- key was reserved for, if the caller named one; createAccount takes the key by either.
CREATE TABLE reserved_key (
	key_did     TEXT PRIMARY KEY,
	did         TEXT UNIQUE,
	private_key BLOB NOT NULL,
	created_at  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX reserved_key_created_at ON reserved_key (created_at);
