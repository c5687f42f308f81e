/*
 * controller/db_sqlite.c — the SQLite driver of controller/db.h.
 *
 * The only controller file that includes <sqlite3.h>. A writer's connection is opened by
 * sp_db_open (shared/migrate.h), which keeps every setting Sallyport relies on (WAL,
 * foreign keys, busy timeout, synchronous=FULL, defensive mode, file and directory
 * permissions) and reads each one back; migrations run through sp_migrate with the
 * embedded db/migrations list. A reader's connection (DB_OPEN_READ_ONLY, used by the
 * change watcher thread) is opened read-only with a 1 s busy timeout.
 *
 * Ownership: struct sqlite_db owns its sqlite3 handle; struct sqlite_stmt owns its
 * sqlite3_stmt. Both are freed by close/finalize. No statement cache: each call site
 * prepares its statement and finalizes it, as before this interface existed.
 */
#include "controller/db_driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "db/migrations.h"
#include "shared/migrate.h"

/* The busy timeout of a reader's connection: it polls, so it should not wait long. */
#define DB_SQLITE_READER_BUSY_MS 1000

struct sqlite_db {
	struct db base;
	sqlite3 *handle;
	int read_only;
};

struct sqlite_stmt {
	struct db_stmt base;
	sqlite3_stmt *handle;
};

static sqlite3 *handle_of(struct db *db)
{
	return ((struct sqlite_db *)db)->handle;
}

static sqlite3_stmt *stmt_of(struct db_stmt *st)
{
	return ((struct sqlite_stmt *)st)->handle;
}

/* An sqlite result code as 0 or an sp_err. */
static int result(int rc)
{
	switch (rc) {
	case SQLITE_OK:
		return 0;
	case SQLITE_NOMEM:
		return SP_ERR_NOMEM;
	default:
		return SP_ERR_DATABASE;
	}
}

static int sqlite_open(const char *target, unsigned flags, struct db **out, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	struct sqlite_db *db = calloc(1, sizeof(*db));
	if (db == NULL)
		return sp_diag_set(diag, SP_ERR_NOMEM, "out of memory opening the database");
	db->base.driver = &db_sqlite_driver;
	if ((flags & DB_OPEN_READ_ONLY) != 0) {
		db->read_only = 1;
		if (sqlite3_open_v2(target, &db->handle, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
				    NULL) != SQLITE_OK ||
		    sqlite3_busy_timeout(db->handle, DB_SQLITE_READER_BUSY_MS) != SQLITE_OK) {
			r = sp_diag_set(diag, SP_ERR_DATABASE, "%s",
					db->handle != NULL ? sqlite3_errmsg(db->handle)
							   : "out of memory");
			goto out;
		}
	} else if ((r = sp_db_open(target, &db->handle, diag)) < 0) {
		goto out;
	}
	*out = &db->base;
	db = NULL;
	r = 0;
out:
	if (db != NULL) {
		sqlite3_close_v2(db->handle);
		free(db);
	}
	return r;
}

static void sqlite_close(struct db *base)
{
	struct sqlite_db *db = (struct sqlite_db *)base;
	if (db == NULL)
		return;
	if (db->read_only)
		sqlite3_close(db->handle);
	else
		sp_db_close(db->handle);
	free(db);
}

static int sqlite_migrate(struct db *db, int *applied, struct sp_diag *diag)
{
	return sp_migrate(handle_of(db), sp_migrations, sp_migrations_count, applied, diag);
}

static int sqlite_schema_version(struct db *db, int *version)
{
	return sp_migrate_current_version(handle_of(db), version);
}

static int sqlite_prepare(struct db *db, const char *sql, struct db_stmt **out)
{
	sqlite3_stmt *handle = NULL;
	int rc = sqlite3_prepare_v2(handle_of(db), sql, -1, &handle, NULL);
	if (rc != SQLITE_OK)
		return result(rc);
	struct sqlite_stmt *st = malloc(sizeof(*st));
	if (st == NULL) {
		sqlite3_finalize(handle);
		return SP_ERR_NOMEM;
	}
	st->base.db = db;
	st->handle = handle;
	*out = &st->base;
	return 0;
}

static int sqlite_bind_int64(struct db_stmt *st, int index, int64_t value)
{
	return result(sqlite3_bind_int64(stmt_of(st), index, value));
}

static int sqlite_bind_double(struct db_stmt *st, int index, double value)
{
	return result(sqlite3_bind_double(stmt_of(st), index, value));
}

static int sqlite_bind_text(struct db_stmt *st, int index, const char *text, int len,
			    enum db_lifetime lifetime)
{
	return result(sqlite3_bind_text(stmt_of(st), index, text, len,
					lifetime == DB_STATIC ? SQLITE_STATIC : SQLITE_TRANSIENT));
}

static int sqlite_bind_blob(struct db_stmt *st, int index, const void *data, int len,
			    enum db_lifetime lifetime)
{
	return result(sqlite3_bind_blob(stmt_of(st), index, data, len,
					lifetime == DB_STATIC ? SQLITE_STATIC : SQLITE_TRANSIENT));
}

static int sqlite_bind_null(struct db_stmt *st, int index)
{
	return result(sqlite3_bind_null(stmt_of(st), index));
}

static int sqlite_step(struct db_stmt *st)
{
	int rc = sqlite3_step(stmt_of(st));
	if (rc == SQLITE_ROW)
		return DB_ROW;
	if (rc == SQLITE_DONE)
		return DB_DONE;
	return rc == SQLITE_NOMEM ? SP_ERR_NOMEM : SP_ERR_DATABASE;
}

static int sqlite_column_count(struct db_stmt *st)
{
	return sqlite3_column_count(stmt_of(st));
}

static const char *sqlite_column_name(struct db_stmt *st, int i)
{
	return sqlite3_column_name(stmt_of(st), i);
}

static enum db_type sqlite_column_type(struct db_stmt *st, int i)
{
	switch (sqlite3_column_type(stmt_of(st), i)) {
	case SQLITE_INTEGER:
		return DB_INT;
	case SQLITE_FLOAT:
		return DB_FLOAT;
	case SQLITE_BLOB:
		return DB_BLOB;
	case SQLITE_NULL:
		return DB_NULL;
	default:
		return DB_TEXT;
	}
}

static int64_t sqlite_column_int64(struct db_stmt *st, int i)
{
	return sqlite3_column_int64(stmt_of(st), i);
}

static double sqlite_column_double(struct db_stmt *st, int i)
{
	return sqlite3_column_double(stmt_of(st), i);
}

static const char *sqlite_column_text(struct db_stmt *st, int i)
{
	return (const char *)sqlite3_column_text(stmt_of(st), i);
}

static const void *sqlite_column_blob(struct db_stmt *st, int i)
{
	return sqlite3_column_blob(stmt_of(st), i);
}

static int sqlite_column_bytes(struct db_stmt *st, int i)
{
	return sqlite3_column_bytes(stmt_of(st), i);
}

static int sqlite_reset(struct db_stmt *st)
{
	return result(sqlite3_reset(stmt_of(st)));
}

static int sqlite_clear_bindings(struct db_stmt *st)
{
	return result(sqlite3_clear_bindings(stmt_of(st)));
}

static void sqlite_finalize(struct db_stmt *st)
{
	if (st == NULL)
		return;
	sqlite3_finalize(stmt_of(st));
	free(st);
}

static int sqlite_exec(struct db *db, const char *sql)
{
	return result(sqlite3_exec(handle_of(db), sql, NULL, NULL, NULL));
}

static int64_t sqlite_changes(struct db *db)
{
	return sqlite3_changes(handle_of(db));
}

static int sqlite_begin_immediate(struct db *db)
{
	return sqlite_exec(db, "BEGIN IMMEDIATE");
}

static int sqlite_begin_read(struct db *db)
{
	return sqlite_exec(db, "BEGIN");
}

static int sqlite_commit(struct db *db)
{
	return sqlite_exec(db, "COMMIT");
}

static int sqlite_in_transaction(struct db *db)
{
	return sqlite3_get_autocommit(handle_of(db)) == 0;
}

static void sqlite_rollback(struct db *db)
{
	if (sqlite_in_transaction(db))
		sqlite3_exec(handle_of(db), "ROLLBACK", NULL, NULL, NULL);
}

static const char *sqlite_errmsg(struct db *db)
{
	return sqlite3_errmsg(handle_of(db));
}

/*
 * The columns of "UNIQUE constraint failed: resources.network_id, resources.name" as
 * "network_id, name".
 */
static void unique_columns(const char *msg, char *columns, size_t columns_size)
{
	size_t used = 0;
	const char *p = strchr(msg, ':');
	while (p != NULL && *p != '\0') {
		const char *dot = strchr(p, '.');
		if (dot == NULL)
			break;
		const char *end = dot + 1;
		while (*end != '\0' && *end != ',')
			end++;
		int n = snprintf(columns + used, columns_size - used, "%s%.*s",
				 used > 0 ? ", " : "", (int)(end - dot - 1), dot + 1);
		if (n < 0 || (size_t)n >= columns_size - used) {
			columns[used] = '\0';
			break;
		}
		used += (size_t)n;
		p = end;
	}
}

static enum db_constraint sqlite_constraint(struct db *db, char *columns, size_t columns_size)
{
	const char *msg = sqlite3_errmsg(handle_of(db));
	switch (sqlite3_extended_errcode(handle_of(db))) {
	case SQLITE_CONSTRAINT_UNIQUE:
	case SQLITE_CONSTRAINT_PRIMARYKEY:
		if (columns != NULL && columns_size > 0)
			unique_columns(msg, columns, columns_size);
		return DB_CONSTRAINT_UNIQUE;
	case SQLITE_CONSTRAINT_TRIGGER:
		/* ON DELETE RESTRICT is reported as a trigger constraint. */
		return strstr(msg, "FOREIGN KEY") != NULL ? DB_CONSTRAINT_FOREIGN_KEY
							  : DB_CONSTRAINT_RULE;
	case SQLITE_CONSTRAINT_FOREIGNKEY:
		return DB_CONSTRAINT_FOREIGN_KEY;
	case SQLITE_CONSTRAINT_CHECK:
	case SQLITE_CONSTRAINT_NOTNULL:
		return DB_CONSTRAINT_CHECK;
	default:
		return DB_CONSTRAINT_NONE;
	}
}

static int sqlite_storage_full(struct db *db)
{
	return (sqlite3_extended_errcode(handle_of(db)) & 0xff) == SQLITE_FULL;
}

const struct db_driver db_sqlite_driver = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .migrate = sqlite_migrate,
    .schema_version = sqlite_schema_version,
    .prepare = sqlite_prepare,
    .bind_int64 = sqlite_bind_int64,
    .bind_double = sqlite_bind_double,
    .bind_text = sqlite_bind_text,
    .bind_blob = sqlite_bind_blob,
    .bind_null = sqlite_bind_null,
    .step = sqlite_step,
    .column_count = sqlite_column_count,
    .column_name = sqlite_column_name,
    .column_type = sqlite_column_type,
    .column_int64 = sqlite_column_int64,
    .column_double = sqlite_column_double,
    .column_text = sqlite_column_text,
    .column_blob = sqlite_column_blob,
    .column_bytes = sqlite_column_bytes,
    .reset = sqlite_reset,
    .clear_bindings = sqlite_clear_bindings,
    .finalize = sqlite_finalize,
    .exec = sqlite_exec,
    .changes = sqlite_changes,
    .begin_immediate = sqlite_begin_immediate,
    .begin_read = sqlite_begin_read,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .in_transaction = sqlite_in_transaction,
    .errmsg = sqlite_errmsg,
    .storage_full = sqlite_storage_full,
    .constraint = sqlite_constraint,
};
