"""Django's PostgreSQL backend, failing fast while the database is unreachable (see ``base``)."""
