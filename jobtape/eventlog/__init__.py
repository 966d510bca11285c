"""The append-only event log: event types, the store port, the SQLite and libSQL backends, the schema."""
