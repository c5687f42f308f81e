/*
 * shared/migrate.h — opening the controller's sqlite database and bringing its schema
 * up to date.
 *
 * sp_db_open opens (or creates) a database file with the settings Sallyport relies
 * on: WAL journal, foreign keys enforced, a busy timeout, synchronous=FULL (a commit
 * that returned survives a power cut), and SQLite's defensive mode. It reads every
 * setting back and fails if one did not take. The file holds the controller's private
 * signing keys, whose only protection at rest is file permissions, so sp_db_open also
 * refuses a database file or a directory that others could read or replace (see the
 * contract below and docs/schema.md).
 *
 * sp_migrate applies an ordered list of migrations (struct sp_migration, declared in
 * db/migrations.h). The list is a parameter: the programs pass the embedded
 * sp_migrations[] from the sallyport_migrations library, tests pass their own; this
 * module does not link that library. Applied migrations are recorded in
 * schema_migrations(version, name, sha256, applied_at) and each is checked against the
 * list on every run, so an edited or missing migration and a database from a newer
 * program are refused instead of half-understood.
 *
 * This is an I/O module (files, sqlite); it keeps no state between calls.
 *
 * Ownership: the sqlite3 handle from sp_db_open belongs to the caller, who closes it
 * with sp_db_close. The migration list and its strings belong to the caller and are
 * only read. One connection is used by one thread at a time.
 */
#ifndef SALLYPORT_SHARED_MIGRATE_H
#define SALLYPORT_SHARED_MIGRATE_H

#include <stddef.h>

#include <sqlite3.h>

#include "db/migrations.h"
#include "shared/error.h"

/* How long a statement waits for another connection's lock before SQLITE_BUSY. */
#define SP_DB_BUSY_TIMEOUT_MS 5000
/* Oldest SQLite with STRICT tables, which the schema uses. */
#define SP_DB_SQLITE_MIN_VERSION 3037000
/* Bounds on a migration list and its names (names appear in messages and in the db). */
#define SP_MIGRATE_MAX_COUNT 10000
#define SP_MIGRATE_NAME_MAX 128

/*
 * Opens or creates the database file at `path` and configures the connection:
 * journal_mode=WAL, foreign_keys=ON, busy_timeout=SP_DB_BUSY_TIMEOUT_MS,
 * synchronous=FULL, SQLITE_DBCONFIG_DEFENSIVE. Each pragma is read back; a mismatch is
 * SP_ERR_DATABASE.
 *
 * Refused before sqlite sees the path:
 *   - NULL or empty path, ":memory:" and other names starting with ':', and "file:"
 *     URIs (SP_ERR_INVALID): this is for one real file, with no URI parameters;
 *   - a directory that does not exist (SP_ERR_NOT_FOUND) or is not a directory;
 *   - a directory writable by group or others, or owned by anyone but us or root
 *     (SP_ERR_PERMISSION): whoever can write the directory can replace the database
 *     and its -wal file, and with them the signing keys;
 *   - an existing database that is a symlink or not a regular file, that has any
 *     group or other permission bit, or (unless we are root) that another uid owns
 *     (SP_ERR_PERMISSION).
 * A new file is created with mode 0600; SQLite gives the -wal and -shm files the same
 * mode. An SQLite older than SP_DB_SQLITE_MIN_VERSION is SP_ERR_UNSUPPORTED.
 *
 * On success *out is the open connection; on failure *out is NULL and nothing is left
 * open (a new empty file may remain).
 */
int sp_db_open(const char *path, sqlite3 **out, struct sp_diag *diag);

/* Closes a connection from sp_db_open (or any sqlite3 handle). Safe on NULL. */
void sp_db_close(sqlite3 *db);

/*
 * Brings the schema of `db` up to the last migration of list[0..count).
 *
 * The list must be in strictly ascending version order with versions > 0, and each
 * entry needs a name (1..SP_MIGRATE_NAME_MAX bytes) and SQL text; otherwise
 * SP_ERR_INVALID naming the entry, and nothing is touched.
 *
 * Refusals, each leaving the database exactly as it was:
 *   - SP_ERR_VERSION: the highest applied version is newer than the last one in the
 *     list (the database belongs to a newer program);
 *   - SP_ERR_INVALID: an applied migration is not in the list, or its recorded
 *     sha256 or name differs from the list's (an applied migration was edited or
 *     renamed); a migration is missing below the highest applied one (out of order);
 *     the database has tables but no schema_migrations (it is not Sallyport's);
 *     the connection is already inside a transaction.
 *
 * Each missing migration then runs in its own BEGIN IMMEDIATE transaction, together
 * with the INSERT of its schema_migrations row. It runs with foreign keys off (so a
 * table can be rebuilt without cascading deletes), and PRAGMA foreign_key_check must
 * find no violation before COMMIT; the connection's foreign_keys setting is restored
 * afterwards, whatever happened. A migration may not contain BEGIN/COMMIT/ROLLBACK,
 * ATTACH/DETACH, writes to schema_migrations, or pragmas that change the connection
 * (foreign_keys, journal_mode, synchronous, locking_mode, writable_schema): these fail
 * to prepare. (The check uses
 * sqlite3_set_authorizer; any authorizer the caller had set is removed.)
 *
 * On any error in a migration that migration is rolled back, the ones before it stay
 * applied, and the diag names the migration, the statement number and line, and
 * SQLite's message (SP_ERR_DATABASE, or SP_ERR_INVALID for a forbidden statement or
 * a foreign key violation).
 *
 * *applied_count (may be NULL) is the number of migrations this call committed, also
 * on failure. Running again once up to date applies 0. Safe against another process
 * migrating the same file at the same time: the later one skips what the first applied.
 */
int sp_migrate(sqlite3 *db, const struct sp_migration *list, size_t count, int *applied_count,
               struct sp_diag *diag);

/*
 * The highest applied version into *version: 0 for a database without
 * schema_migrations or with no rows in it. SP_ERR_DATABASE if sqlite fails.
 */
int sp_migrate_current_version(sqlite3 *db, int *version);

#endif
