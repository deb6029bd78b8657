-- operations is every PLC operation the embedded directory accepted, in arrival order
-- (seq). A recovery sets nullified on the operations it displaced; nothing is deleted, so
-- /log/audit can show the whole history. operation is the signed JSON as we re-encode
-- it from the parsed form, which carries exactly the signed fields.
CREATE TABLE operations (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	did        TEXT NOT NULL,
	cid        TEXT NOT NULL,
	operation  TEXT NOT NULL,
	nullified  INTEGER NOT NULL DEFAULT 0,
	created_at TEXT NOT NULL,
	UNIQUE (did, cid)
);

CREATE INDEX operations_did_seq ON operations (did, seq);
