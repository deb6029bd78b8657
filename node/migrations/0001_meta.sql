-- meta holds facts about this data directory itself: when it was created and which
-- version of Aerie last opened it (for upgrade notes and support).
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) WITHOUT ROWID;
