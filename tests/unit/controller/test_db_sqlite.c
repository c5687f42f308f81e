/*
 * Tests for controller/db_sqlite.c through the wrappers of controller/db.h, on a real
 * database file: binding and reading every type, static and copied text, reset and
 * cleared bindings, constraint failures mapped to enum db_constraint (with the columns of
 * a UNIQUE index), a rollback that leaves nothing, step and prepare errors that carry the
 * engine's message, open refusals, the read-only reader connection, and the migration op.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "controller/db.h"
#include "db/migrations.h"

static char dir[64];
static char path[128];
static struct db *db;

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/sp-db-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/controller.db", dir);
	struct sp_diag d = {{0}};
	if (db_open(&db_sqlite_driver, path, 0, &db, &d) < 0) {
		fprintf(stderr, "open: %s\n", d.message);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	db_close(db);
	db = NULL;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void exec_ok(const char *sql)
{
	int r = db_exec(db, sql);
	if (r != 0)
		fail_msg("%s: %s", sql, db_errmsg(db));
}

static int64_t count(const char *sql)
{
	struct db_stmt *st = NULL;
	assert_int_equal(db_prepare(db, sql, &st), 0);
	assert_int_equal(db_step(st), DB_ROW);
	int64_t n = db_column_int64(st, 0);
	assert_int_equal(db_step(st), DB_DONE);
	db_finalize(st);
	return n;
}

static void driver_name(void **state)
{
	(void)state;
	assert_ptr_equal(db_driver_of(db), &db_sqlite_driver);
	assert_string_equal(db_driver_of(db)->name, "sqlite");
	db_finalize(NULL);
	db_close(NULL);
}

static void bind_and_read_each_type(void **state)
{
	(void)state;
	exec_ok("CREATE TABLE t (i INTEGER, s TEXT, b BLOB, n TEXT, f REAL, small INTEGER)");
	struct db_stmt *st = NULL;
	assert_int_equal(db_prepare(db, "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", &st), 0);
	static const unsigned char bytes[5] = {0x00, 0xff, 0x10, 0x00, 0x7f};
	char text[] = "h\xc3\xa9llo, world";
	assert_int_equal(db_bind_int64(st, 1, INT64_MIN), 0);
	/* len 5 of a longer string: only "h\xc3\xa9ll" is stored */
	assert_int_equal(db_bind_text(st, 2, text, 5, DB_STATIC), 0);
	assert_int_equal(db_bind_blob(st, 3, bytes, (int)sizeof(bytes), DB_STATIC), 0);
	assert_int_equal(db_bind_null(st, 4), 0);
	assert_int_equal(db_bind_double(st, 5, 2.5), 0);
	assert_int_equal(db_bind_int(st, 6, -7), 0);
	assert_int_equal(db_step(st), DB_DONE);
	assert_int_equal(db_changes(db), 1);
	/* The same statement again after reset, with a new value for one parameter. */
	assert_int_equal(db_reset(st), 0);
	assert_int_equal(db_bind_int64(st, 1, INT64_MAX), 0);
	assert_int_equal(db_step(st), DB_DONE);
	/* Cleared bindings are NULL. */
	assert_int_equal(db_reset(st), 0);
	assert_int_equal(db_clear_bindings(st), 0);
	assert_int_equal(db_step(st), DB_DONE);
	db_finalize(st);

	assert_int_equal(
	    db_prepare(db, "SELECT i, s, b, n, f, small AS tiny FROM t ORDER BY rowid", &st), 0);
	assert_int_equal(db_column_count(st), 6);
	assert_string_equal(db_column_name(st, 0), "i");
	assert_string_equal(db_column_name(st, 5), "tiny");
	assert_int_equal(db_step(st), DB_ROW);
	assert_int_equal(db_column_type(st, 0), DB_INT);
	assert_true(db_column_int64(st, 0) == INT64_MIN);
	assert_int_equal(db_column_type(st, 1), DB_TEXT);
	assert_string_equal(db_column_text(st, 1), "h\xc3\xa9ll");
	assert_int_equal(db_column_bytes(st, 1), 5);
	assert_int_equal(db_column_type(st, 2), DB_BLOB);
	assert_int_equal(db_column_bytes(st, 2), 5);
	assert_memory_equal(db_column_blob(st, 2), bytes, sizeof(bytes));
	assert_int_equal(db_column_type(st, 3), DB_NULL);
	assert_null(db_column_text(st, 3));
	assert_int_equal(db_column_int64(st, 3), 0);
	assert_int_equal(db_column_type(st, 4), DB_FLOAT);
	assert_true(db_column_double(st, 4) == 2.5);
	assert_int_equal(db_column_int(st, 5), -7);
	assert_int_equal(db_step(st), DB_ROW);
	assert_true(db_column_int64(st, 0) == INT64_MAX);
	assert_string_equal(db_column_text(st, 1), "h\xc3\xa9ll");
	assert_int_equal(db_step(st), DB_ROW);
	for (int i = 0; i < 6; i++)
		assert_int_equal(db_column_type(st, i), DB_NULL);
	assert_int_equal(db_step(st), DB_DONE);
	db_finalize(st);

	/* An integer read as text is its digits. */
	assert_int_equal(db_prepare(db, "SELECT 12345", &st), 0);
	assert_int_equal(db_step(st), DB_ROW);
	assert_string_equal(db_column_text(st, 0), "12345");
	db_finalize(st);
}

static void transient_text_is_copied(void **state)
{
	(void)state;
	exec_ok("CREATE TABLE t (s TEXT)");
	struct db_stmt *st = NULL;
	assert_int_equal(db_prepare(db, "INSERT INTO t VALUES (?)", &st), 0);
	char buf[16];
	snprintf(buf, sizeof(buf), "before");
	assert_int_equal(db_bind_text(st, 1, buf, -1, DB_TRANSIENT), 0);
	snprintf(buf, sizeof(buf), "AFTER!");
	assert_int_equal(db_step(st), DB_DONE);
	db_finalize(st);
	assert_int_equal(db_prepare(db, "SELECT s FROM t", &st), 0);
	assert_int_equal(db_step(st), DB_ROW);
	assert_string_equal(db_column_text(st, 0), "before");
	db_finalize(st);
	/* A parameter index out of range is refused. */
	assert_int_equal(db_prepare(db, "SELECT ?", &st), 0);
	assert_int_equal(db_bind_int64(st, 2, 1), SP_ERR_DATABASE);
	db_finalize(st);
}

/* Runs one statement that must fail; returns what db_constraint says of it. */
static enum db_constraint failing(const char *sql, char *columns, size_t size)
{
	struct db_stmt *st = NULL;
	assert_int_equal(db_prepare(db, sql, &st), 0);
	assert_int_equal(db_step(st), SP_ERR_DATABASE);
	enum db_constraint kind = db_constraint(db, columns, size);
	db_finalize(st);
	return kind;
}

static void constraint_errors(void **state)
{
	(void)state;
	exec_ok("CREATE TABLE parent (id INTEGER PRIMARY KEY, a TEXT, b TEXT, UNIQUE (a, b));"
		"CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL"
		"  REFERENCES parent (id) ON DELETE RESTRICT, n INTEGER CHECK (n > 0));"
		"CREATE TABLE locked (id INTEGER PRIMARY KEY);"
		"CREATE TRIGGER locked_no_delete BEFORE DELETE ON locked BEGIN"
		"  SELECT RAISE(ABORT, 'the locked row stays'); END;"
		"INSERT INTO parent VALUES (1, 'x', 'y');"
		"INSERT INTO child VALUES (1, 1, 5);"
		"INSERT INTO locked VALUES (1);");
	char columns[64];

	assert_int_equal(
	    failing("INSERT INTO parent VALUES (2, 'x', 'y')", columns, sizeof(columns)),
	    DB_CONSTRAINT_UNIQUE);
	assert_string_equal(columns, "a, b");
	assert_non_null(strstr(db_errmsg(db), "UNIQUE constraint failed"));

	assert_int_equal(
	    failing("INSERT INTO parent VALUES (1, 'p', 'q')", columns, sizeof(columns)),
	    DB_CONSTRAINT_UNIQUE);
	assert_string_equal(columns, "id");
	/* A buffer too small for the list gets what fits, whole names only. */
	char tiny[3];
	assert_int_equal(failing("INSERT INTO parent VALUES (3, 'x', 'y')", tiny, sizeof(tiny)),
			 DB_CONSTRAINT_UNIQUE);
	assert_string_equal(tiny, "a");
	assert_int_equal(failing("INSERT INTO parent VALUES (3, 'x', 'y')", NULL, 0),
			 DB_CONSTRAINT_UNIQUE);

	assert_int_equal(failing("INSERT INTO child VALUES (2, 99, 1)", NULL, 0),
			 DB_CONSTRAINT_FOREIGN_KEY);
	assert_int_equal(failing("DELETE FROM parent WHERE id = 1", NULL, 0),
			 DB_CONSTRAINT_FOREIGN_KEY);
	assert_int_equal(failing("INSERT INTO child VALUES (2, 1, 0)", NULL, 0),
			 DB_CONSTRAINT_CHECK);
	assert_int_equal(failing("INSERT INTO child (id, n) VALUES (2, 1)", NULL, 0),
			 DB_CONSTRAINT_CHECK);
	assert_int_equal(failing("DELETE FROM locked", NULL, 0), DB_CONSTRAINT_RULE);
	assert_string_equal(db_errmsg(db), "the locked row stays");
	/* Nothing of the failed statements was written. */
	assert_int_equal(count("SELECT count(*) FROM parent"), 1);
	assert_int_equal(count("SELECT count(*) FROM child"), 1);
	assert_int_equal(count("SELECT count(*) FROM locked"), 1);

	/* A failure that is no constraint. */
	struct db_stmt *st = NULL;
	assert_int_equal(db_prepare(db, "SELECT nothing FROM nowhere", &st), SP_ERR_DATABASE);
	assert_int_equal(db_constraint(db, columns, sizeof(columns)), DB_CONSTRAINT_NONE);
	assert_string_equal(columns, "");
}

static void rollback_leaves_nothing(void **state)
{
	(void)state;
	exec_ok("CREATE TABLE t (i INTEGER)");
	assert_int_equal(db_in_transaction(db), 0);
	db_rollback(db); /* nothing open: nothing happens */
	assert_int_equal(db_begin_immediate(db), 0);
	assert_int_equal(db_in_transaction(db), 1);
	exec_ok("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)");
	assert_int_equal(count("SELECT count(*) FROM t"), 2);
	db_rollback(db);
	assert_int_equal(db_in_transaction(db), 0);
	assert_int_equal(count("SELECT count(*) FROM t"), 0);

	assert_int_equal(db_begin_immediate(db), 0);
	exec_ok("INSERT INTO t VALUES (3)");
	assert_int_equal(db_commit(db), 0);
	assert_int_equal(db_in_transaction(db), 0);
	assert_int_equal(db_commit(db), SP_ERR_DATABASE); /* no transaction */
	assert_non_null(strstr(db_errmsg(db), "no transaction"));

	/* A second connection's rollback leaves nothing either; its commit is seen. */
	assert_int_equal(db_begin_read(db), 0);
	assert_int_equal(db_in_transaction(db), 1);
	assert_int_equal(count("SELECT count(*) FROM t"), 1);
	assert_int_equal(db_commit(db), 0);
	struct db *other = NULL;
	assert_int_equal(db_open(&db_sqlite_driver, path, 0, &other, NULL), 0);
	assert_int_equal(db_begin_immediate(other), 0);
	assert_int_equal(db_exec(other, "INSERT INTO t VALUES (4)"), 0);
	db_rollback(other);
	assert_int_equal(count("SELECT count(*) FROM t"), 1);
	struct db_stmt *st = NULL;
	assert_int_equal(db_prepare(other, "DELETE FROM t", &st), 0);
	assert_int_equal(db_step(st), DB_DONE);
	assert_int_equal(db_changes(other), 1);
	db_finalize(st);
	db_close(other);
	assert_int_equal(count("SELECT count(*) FROM t"), 0);
}

static void errors_carry_a_message(void **state)
{
	(void)state;
	struct db_stmt *st = (struct db_stmt *)&st;
	assert_int_equal(db_prepare(db, "SELEC 1", &st), SP_ERR_DATABASE);
	assert_null(st);
	assert_non_null(strstr(db_errmsg(db), "syntax error"));
	assert_int_equal(db_prepare(db, "SELECT * FROM missing_table", &st), SP_ERR_DATABASE);
	assert_non_null(strstr(db_errmsg(db), "no such table: missing_table"));
	assert_int_equal(
	    db_exec(db, "CREATE TABLE t (i INTEGER NOT NULL); INSERT INTO t VALUES (x)"),
	    SP_ERR_DATABASE);
	assert_non_null(strstr(db_errmsg(db), "no such column: x"));
	/* A step error: a runtime failure the prepare could not see. */
	exec_ok("CREATE TABLE strict_t (i INTEGER) STRICT");
	assert_int_equal(db_prepare(db, "INSERT INTO strict_t VALUES (?)", &st), 0);
	assert_int_equal(db_bind_text(st, 1, "not a number", -1, DB_STATIC), 0);
	assert_int_equal(db_step(st), SP_ERR_DATABASE);
	assert_non_null(strstr(db_errmsg(db), "cannot store TEXT value in INTEGER column"));
	assert_int_equal(db_constraint(db, NULL, 0), DB_CONSTRAINT_NONE);
	db_finalize(st);
}

static void open_refusals(void **state)
{
	(void)state;
	struct db *other = (struct db *)&other;
	struct sp_diag d = {{0}};
	assert_int_equal(db_open(&db_sqlite_driver, ":memory:", 0, &other, &d), SP_ERR_INVALID);
	assert_null(other);
	assert_non_null(strstr(d.message, ":memory:"));
	assert_int_equal(db_open(NULL, path, 0, &other, &d), SP_ERR_INVALID);
	assert_null(other);
	assert_int_equal(
	    db_open(&db_sqlite_driver, "/nonexistent/dir/x.db", DB_OPEN_READ_ONLY, &other, &d),
	    SP_ERR_DATABASE);
	assert_null(other);
	assert_non_null(strstr(d.message, "unable to open"));

	/* The reader connection reads and cannot write. */
	exec_ok("CREATE TABLE t (i INTEGER); INSERT INTO t VALUES (7)");
	assert_int_equal(db_open(&db_sqlite_driver, path, DB_OPEN_READ_ONLY, &other, &d), 0);
	struct db_stmt *st = NULL;
	assert_int_equal(db_prepare(other, "SELECT i FROM t", &st), 0);
	assert_int_equal(db_step(st), DB_ROW);
	assert_int_equal(db_column_int64(st, 0), 7);
	db_finalize(st);
	assert_int_equal(db_exec(other, "INSERT INTO t VALUES (8)"), SP_ERR_DATABASE);
	assert_non_null(strstr(db_errmsg(other), "readonly"));
	db_close(other);
}

static void migrations(void **state)
{
	(void)state;
	int version = -1, applied = -1;
	assert_int_equal(db_schema_version(db, &version), 0);
	assert_int_equal(version, 0);
	assert_int_equal(db_migrate(db, &applied, NULL), 0);
	assert_int_equal(applied, (int)sp_migrations_count);
	assert_int_equal(db_schema_version(db, &version), 0);
	assert_int_equal(version, sp_migrations[sp_migrations_count - 1].version);
	assert_int_equal(db_migrate(db, &applied, NULL), 0);
	assert_int_equal(applied, 0);
	/* The schema's own constraints map the same way. */
	exec_ok("INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES"
		" ('00000000000000000000000000000001', 'n', 1, 1)");
	char columns[64];
	assert_int_equal(failing("INSERT INTO remote_networks (id, name, created_at, updated_at)"
				 " VALUES ('00000000000000000000000000000002', 'n', 1, 1)",
				 columns, sizeof(columns)),
			 DB_CONSTRAINT_UNIQUE);
	assert_string_equal(columns, "name");
	assert_int_equal(failing("DELETE FROM settings", NULL, 0), DB_CONSTRAINT_RULE);
	assert_string_equal(db_errmsg(db), "the settings row cannot be deleted");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(driver_name, setup, teardown),
	    cmocka_unit_test_setup_teardown(bind_and_read_each_type, setup, teardown),
	    cmocka_unit_test_setup_teardown(transient_text_is_copied, setup, teardown),
	    cmocka_unit_test_setup_teardown(constraint_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(rollback_leaves_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(errors_carry_a_message, setup, teardown),
	    cmocka_unit_test_setup_teardown(open_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(migrations, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
