/* controller/db.c — the driver-independent wrappers of db.h: each one dispatches. */
#include "controller/db_driver.h"

int db_open(const struct db_driver *driver, const char *target, unsigned flags, struct db **out,
	    struct sp_diag *diag)
{
	*out = NULL;
	if (driver == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "no database driver");
	return driver->open(target, flags, out, diag);
}

void db_close(struct db *db)
{
	if (db != NULL)
		db->driver->close(db);
}

const struct db_driver *db_driver_of(const struct db *db)
{
	return db->driver;
}

int db_migrate(struct db *db, int *applied, struct sp_diag *diag)
{
	return db->driver->migrate(db, applied, diag);
}

int db_schema_version(struct db *db, int *version)
{
	return db->driver->schema_version(db, version);
}

int db_prepare(struct db *db, const char *sql, struct db_stmt **out)
{
	*out = NULL;
	return db->driver->prepare(db, sql, out);
}

int db_bind_int64(struct db_stmt *st, int index, int64_t value)
{
	return st->db->driver->bind_int64(st, index, value);
}

int db_bind_double(struct db_stmt *st, int index, double value)
{
	return st->db->driver->bind_double(st, index, value);
}

int db_bind_text(struct db_stmt *st, int index, const char *text, int len,
		 enum db_lifetime lifetime)
{
	return st->db->driver->bind_text(st, index, text, len, lifetime);
}

int db_bind_blob(struct db_stmt *st, int index, const void *data, int len,
		 enum db_lifetime lifetime)
{
	return st->db->driver->bind_blob(st, index, data, len, lifetime);
}

int db_bind_null(struct db_stmt *st, int index)
{
	return st->db->driver->bind_null(st, index);
}

int db_step(struct db_stmt *st)
{
	return st->db->driver->step(st);
}

int db_column_count(struct db_stmt *st)
{
	return st->db->driver->column_count(st);
}

const char *db_column_name(struct db_stmt *st, int i)
{
	return st->db->driver->column_name(st, i);
}

enum db_type db_column_type(struct db_stmt *st, int i)
{
	return st->db->driver->column_type(st, i);
}

int64_t db_column_int64(struct db_stmt *st, int i)
{
	return st->db->driver->column_int64(st, i);
}

double db_column_double(struct db_stmt *st, int i)
{
	return st->db->driver->column_double(st, i);
}

const char *db_column_text(struct db_stmt *st, int i)
{
	return st->db->driver->column_text(st, i);
}

const void *db_column_blob(struct db_stmt *st, int i)
{
	return st->db->driver->column_blob(st, i);
}

int db_column_bytes(struct db_stmt *st, int i)
{
	return st->db->driver->column_bytes(st, i);
}

int db_reset(struct db_stmt *st)
{
	return st->db->driver->reset(st);
}

int db_clear_bindings(struct db_stmt *st)
{
	return st->db->driver->clear_bindings(st);
}

void db_finalize(struct db_stmt *st)
{
	if (st != NULL)
		st->db->driver->finalize(st);
}

int db_exec(struct db *db, const char *sql)
{
	return db->driver->exec(db, sql);
}

int64_t db_changes(struct db *db)
{
	return db->driver->changes(db);
}

int db_begin_immediate(struct db *db)
{
	return db->driver->begin_immediate(db);
}

int db_begin_read(struct db *db)
{
	return db->driver->begin_read(db);
}

int db_commit(struct db *db)
{
	return db->driver->commit(db);
}

void db_rollback(struct db *db)
{
	db->driver->rollback(db);
}

int db_in_transaction(struct db *db)
{
	return db->driver->in_transaction(db);
}

const char *db_errmsg(struct db *db)
{
	return db->driver->errmsg(db);
}

enum db_constraint db_constraint(struct db *db, char *columns, size_t columns_size)
{
	if (columns != NULL && columns_size > 0)
		columns[0] = '\0';
	return db->driver->constraint(db, columns, columns_size);
}

int db_storage_full(struct db *db)
{
	return db->driver->storage_full(db);
}
