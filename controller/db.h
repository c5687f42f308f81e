/*
 * controller/db.h — the controller's database, behind a small driver interface.
 *
 * Every controller module reaches its store through these functions, never through a
 * database library: a connection is an opaque `struct db`, a prepared statement an opaque
 * `struct db_stmt`, and each call dispatches through the connection's `struct db_driver`.
 * Today one driver exists, SQLite (controller/db_sqlite.c, the only controller file that
 * includes the SQLite library header; tests/unit/controller/db_boundary.sh checks it); a
 * PostgreSQL driver can be added beside it without touching the modules, as long as it
 * keeps the contract written on each operation below (marked "PostgreSQL:" where the two
 * engines differ).
 *
 * The SQL text the modules hand to db_prepare and db_exec is shared by every driver, so it
 * must stay in the subset both engines read the same way; docs/schema.md ("PostgreSQL
 * port") lists the few places where it does not yet, with their portable form.
 *
 * Results: functions that can fail return 0 or a negative enum sp_err (SP_ERR_DATABASE
 * for anything the engine refused, SP_ERR_NOMEM when memory ran out); db_step returns
 * DB_ROW or DB_DONE on success. After a failure db_errmsg gives the engine's message for
 * the connection's last error and db_constraint says whether it was a constraint
 * violation, so callers map UNIQUE/FOREIGN KEY failures to HTTP 409 without knowing any
 * engine's error codes.
 *
 * Threads and ownership: a connection is used by one thread at a time (the HTTP thread,
 * or a watcher thread with its own connection). db_open allocates the connection; the
 * caller releases it with db_close after finalizing its statements. db_prepare allocates
 * a statement; the caller releases it with db_finalize (safe on NULL). Pointers returned
 * by db_column_text/db_column_blob/db_column_name stay valid until the next step, reset or
 * finalize of that statement.
 */
#ifndef SALLYPORT_CONTROLLER_DB_H
#define SALLYPORT_CONTROLLER_DB_H

#include <stddef.h>
#include <stdint.h>

#include "shared/error.h"

struct db;
struct db_stmt;

/* Successful results of db_step (errors are negative enum sp_err). */
enum { DB_ROW = 1, DB_DONE = 2 };

/* The type of a column's value in the current row. */
enum db_type { DB_NULL = 0, DB_INT = 1, DB_TEXT = 2, DB_BLOB = 3, DB_FLOAT = 4 };

/*
 * How long bound text or bytes must stay valid: DB_STATIC when the caller keeps them
 * unchanged until the statement is stepped to the end, reset or finalized; DB_TRANSIENT
 * when the driver must copy them before db_bind_* returns.
 */
enum db_lifetime { DB_STATIC = 0, DB_TRANSIENT = 1 };

/* db_open flags. */
#define DB_OPEN_READ_ONLY 0x1u /* a reader's connection (change_watch): no writes, no checks */

/*
 * Which constraint the connection's last failure violated (db_constraint).
 *   DB_CONSTRAINT_UNIQUE: a UNIQUE or PRIMARY KEY index (PostgreSQL SQLSTATE 23505);
 *   DB_CONSTRAINT_FOREIGN_KEY: a reference to a missing row, or a delete of a row that
 *     is still referenced with ON DELETE RESTRICT (23503, also 23001 restrict_violation);
 *   DB_CONSTRAINT_CHECK: a CHECK or NOT NULL rule (23514, 23502);
 *   DB_CONSTRAINT_RULE: a trigger of the schema refused the change with its own message
 *     (SQLite RAISE(ABORT, …); PostgreSQL RAISE EXCEPTION, SQLSTATE P0001).
 */
enum db_constraint {
	DB_CONSTRAINT_NONE = 0,
	DB_CONSTRAINT_UNIQUE,
	DB_CONSTRAINT_FOREIGN_KEY,
	DB_CONSTRAINT_CHECK,
	DB_CONSTRAINT_RULE,
};

/*
 * A database engine. Each member is required; the wrappers below call them without
 * checking. Every function receives objects this driver made. Drivers embed the heads of
 * controller/db_driver.h as the first member of their connection and statement structs.
 */
struct db_driver {
	/* Short lower-case name for messages and configuration ("sqlite"). */
	const char *name;

	/*
	 * Opens a connection to `target` (SQLite: a file path; PostgreSQL: a libpq
	 * connection string or URL) and configures it. SQLite keeps the checks and pragmas
	 * of sp_db_open (shared/migrate.h): WAL, foreign keys on, busy timeout,
	 * synchronous=FULL, defensive mode, file and directory permissions. With
	 * DB_OPEN_READ_ONLY the connection is a reader's: read-only, a 1 s busy timeout,
	 * none of the writer's checks. On failure *out is NULL and diag says why.
	 * PostgreSQL: foreign keys are always enforced; set the session's time zone to UTC
	 * and its statement_timeout to the busy timeout so a waiting lock fails the same way.
	 */
	int (*open)(const char *target, unsigned flags, struct db **out, struct sp_diag *diag);
	/* Closes a connection (its statements finalized first). Safe on NULL. */
	void (*close)(struct db *db);
	/*
	 * Brings the schema up to date with this driver's own migrations (*applied, may be
	 * NULL: how many this call committed). SQLite runs db/migrations through sp_migrate.
	 * PostgreSQL: keeps its own ordered list in its dialect (docs/schema.md), recorded in
	 * the same schema_migrations table, with the same refusals.
	 */
	int (*migrate)(struct db *db, int *applied, struct sp_diag *diag);
	/* The highest applied migration version (0 for an empty database). */
	int (*schema_version)(struct db *db, int *version);

	/*
	 * Prepares one statement. Parameters are written `?`, numbered from 1 in order of
	 * appearance, or `?N` (1-based, explicit, so one value can be used twice); a
	 * statement uses one form only, never `:name` or `$N`. PostgreSQL: rewrite them
	 * outside string literals and quoted identifiers before PQprepare — each `?` to the
	 * next `$k`, each `?N` to `$N`. Bad SQL is SP_ERR_DATABASE with db_errmsg naming
	 * the engine's reason.
	 */
	int (*prepare)(struct db *db, const char *sql, struct db_stmt **out);
	/*
	 * Binds parameter `index` (1-based). Integers are 64-bit. PostgreSQL: send
	 * integers as int8 (every integer column of the schema is BIGINT there) and
	 * booleans stored as 0/1 integers the same way. `len` < 0 means NUL-terminated.
	 */
	int (*bind_int64)(struct db_stmt *st, int index, int64_t value);
	int (*bind_double)(struct db_stmt *st, int index, double value);
	int (*bind_text)(struct db_stmt *st, int index, const char *text, int len,
			 enum db_lifetime lifetime);
	int (*bind_blob)(struct db_stmt *st, int index, const void *data, int len,
			 enum db_lifetime lifetime);
	int (*bind_null)(struct db_stmt *st, int index);
	/*
	 * Runs the statement to its next row: DB_ROW (a row is readable), DB_DONE (no more
	 * rows; for INSERT/UPDATE/DELETE, finished) or a negative sp_err with db_errmsg and
	 * db_constraint describing it. Stepping again after DB_DONE restarts nothing: call
	 * reset. PostgreSQL: execute on the first step (single-row mode or a cursor for
	 * large results) and hand out the rows one by one.
	 */
	int (*step)(struct db_stmt *st);
	/* Columns of the result, by 0-based index. column_name is the name the SQL gave. */
	int (*column_count)(struct db_stmt *st);
	const char *(*column_name)(struct db_stmt *st, int i);
	enum db_type (*column_type)(struct db_stmt *st, int i);
	/* Converting readers: NULL reads as 0 / NULL pointer; text of an int is its digits. */
	int64_t (*column_int64)(struct db_stmt *st, int i);
	double (*column_double)(struct db_stmt *st, int i);
	const char *(*column_text)(struct db_stmt *st, int i);
	const void *(*column_blob)(struct db_stmt *st, int i);
	/* Bytes of the text or blob last read from column i, without a terminating NUL. */
	int (*column_bytes)(struct db_stmt *st, int i);
	/* Makes the statement runnable again; bindings are kept. */
	int (*reset)(struct db_stmt *st);
	/* Sets every parameter back to NULL. */
	int (*clear_bindings)(struct db_stmt *st);
	/* Releases the statement. Safe on NULL. */
	void (*finalize)(struct db_stmt *st);

	/* Runs a script of statements without parameters (no rows are returned). */
	int (*exec)(struct db *db, const char *sql);
	/*
	 * Rows changed by the last INSERT, UPDATE or DELETE on this connection, not
	 * counting rows changed by triggers or cascades. PostgreSQL: PQcmdTuples of that
	 * statement's result.
	 */
	int64_t (*changes)(struct db *db);
	/*
	 * A write transaction that takes the write lock at once, so two writers never
	 * deadlock half-way (SQLite BEGIN IMMEDIATE). PostgreSQL: BEGIN ISOLATION LEVEL
	 * SERIALIZABLE, or READ COMMITTED plus a transaction-level advisory lock taken at
	 * once; either way the modules' read-then-write sequences must see no concurrent
	 * write between their statements.
	 */
	int (*begin_immediate)(struct db *db);
	/*
	 * A read transaction: every statement until commit sees the same snapshot (SQLite
	 * BEGIN DEFERRED). PostgreSQL: BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY.
	 */
	int (*begin_read)(struct db *db);
	int (*commit)(struct db *db);
	/* Rolls back the open transaction; does nothing when none is open. */
	void (*rollback)(struct db *db);
	/* 1 inside a transaction, 0 otherwise. PostgreSQL: PQtransactionStatus. */
	int (*in_transaction)(struct db *db);
	/* The engine's message for the last failure ("not an error" when none). */
	const char *(*errmsg)(struct db *db);
	/*
	 * What the last failure violated, DB_CONSTRAINT_NONE when it was no constraint.
	 * For DB_CONSTRAINT_UNIQUE, `columns` (may be NULL) receives the violated index's
	 * column names without their table, joined by ", " ("network_id, name"), or "" if
	 * unknown. PostgreSQL: from PG_DIAG_SQLSTATE, and the columns from the DETAIL
	 * "Key (network_id, name)=(…) already exists."
	 */
	enum db_constraint (*constraint)(struct db *db, char *columns, size_t columns_size);
	/*
	 * 1 when the last failure was the storage holding the database running out of space
	 * (SQLite: result code FULL; PostgreSQL: SQLSTATE 53100 disk_full), else 0.
	 */
	int (*storage_full)(struct db *db);
};

/* The SQLite driver (controller/db_sqlite.c). */
extern const struct db_driver db_sqlite_driver;

/* The thin wrappers every module calls; each dispatches through the driver. */
int db_open(const struct db_driver *driver, const char *target, unsigned flags, struct db **out,
	    struct sp_diag *diag);
void db_close(struct db *db);
/* The driver of an open connection. */
const struct db_driver *db_driver_of(const struct db *db);
int db_migrate(struct db *db, int *applied, struct sp_diag *diag);
int db_schema_version(struct db *db, int *version);

int db_prepare(struct db *db, const char *sql, struct db_stmt **out);
int db_bind_int64(struct db_stmt *st, int index, int64_t value);
int db_bind_double(struct db_stmt *st, int index, double value);
int db_bind_text(struct db_stmt *st, int index, const char *text, int len,
		 enum db_lifetime lifetime);
int db_bind_blob(struct db_stmt *st, int index, const void *data, int len,
		 enum db_lifetime lifetime);
int db_bind_null(struct db_stmt *st, int index);
int db_step(struct db_stmt *st);
int db_column_count(struct db_stmt *st);
const char *db_column_name(struct db_stmt *st, int i);
enum db_type db_column_type(struct db_stmt *st, int i);
int64_t db_column_int64(struct db_stmt *st, int i);
double db_column_double(struct db_stmt *st, int i);
const char *db_column_text(struct db_stmt *st, int i);
const void *db_column_blob(struct db_stmt *st, int i);
int db_column_bytes(struct db_stmt *st, int i);
int db_reset(struct db_stmt *st);
int db_clear_bindings(struct db_stmt *st);
void db_finalize(struct db_stmt *st);

int db_exec(struct db *db, const char *sql);
int64_t db_changes(struct db *db);
int db_begin_immediate(struct db *db);
int db_begin_read(struct db *db);
int db_commit(struct db *db);
void db_rollback(struct db *db);
int db_in_transaction(struct db *db);
const char *db_errmsg(struct db *db);
enum db_constraint db_constraint(struct db *db, char *columns, size_t columns_size);
int db_storage_full(struct db *db);

/* Conveniences over the above for the many 0/1 flags and small counts of the schema. */
static inline int db_bind_int(struct db_stmt *st, int index, int value)
{
	return db_bind_int64(st, index, value);
}

static inline int db_column_int(struct db_stmt *st, int i)
{
	return (int)db_column_int64(st, i);
}

#endif
