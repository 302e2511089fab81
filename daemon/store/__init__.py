"""The catalog on disk: SQLite (apsw) lives here and nowhere else at run time:
schema, journal, catalog entries, undo log, read-only queries."""
