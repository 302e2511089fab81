"""The catalog on disk: SQLite (apsw) lives here and nowhere else at run time: connections,
schema, journal, catalog entries, undo log, read-only queries. Crash invariant: WAL with
synchronous=FULL, so a commit that returned is on disk, and a transaction is all or nothing.
"""
