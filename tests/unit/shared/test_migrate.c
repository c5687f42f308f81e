/*
 * Unit tests for shared/migrate.c, and for the real schema db/migrations/0001_initial.sql
 * (read from $SALLYPORT_SOURCE_DIR, which ctest sets).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "shared/migrate.h"

/* ---- fixture: a fresh directory and database per test ------------------------------- */

struct fixture {
	char dir[64];
	char path[128];
	sqlite3 *db;
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/sp-migrate-XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/sallyport.db", f->dir);
	struct sp_diag d = { { 0 } };
	if (sp_db_open(f->path, &f->db, &d) != 0) {
		fprintf(stderr, "sp_db_open: %s\n", d.message);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	sp_db_close(f->db);
	(void)chmod(f->dir, 0700);
	int r = nftw(f->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	free(f);
	return r;
}

/* ---- helpers -------------------------------------------------------------------------- */

/* The single integer a query returns. */
static long long query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	long long v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* The single text a query returns, copied into out. */
static void query_text(sqlite3 *db, const char *sql, char *out, size_t size)
{
	sqlite3_stmt *st = NULL;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	const unsigned char *t = sqlite3_column_text(st, 0);
	snprintf(out, size, "%s", t != NULL ? (const char *)t : "");
	sqlite3_finalize(st);
}

static int has_table(sqlite3 *db, const char *name)
{
	char sql[160];
	snprintf(sql, sizeof(sql),
	         "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '%s'", name);
	return (int)query_int(db, sql);
}

/* Runs SQL and returns SQLite's extended result code (SQLITE_OK on success). */
static int run(sqlite3 *db, const char *sql)
{
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK)
		return SQLITE_OK;
	return sqlite3_extended_errcode(db);
}

static int current_version(sqlite3 *db)
{
	int v = -1;
	assert_int_equal(sp_migrate_current_version(db, &v), 0);
	return v;
}

static void expect_message(const struct sp_diag *d, const char *part)
{
	if (strstr(d->message, part) == NULL)
		fail_msg("diag \"%s\" does not contain \"%s\"", d->message, part);
}

static void sha256_hex(const char *text, char out[65])
{
	unsigned char md[32];
	unsigned int len = 0;
	assert_int_equal(EVP_Digest(text, strlen(text), md, &len, EVP_sha256(), NULL), 1);
	assert_int_equal(len, 32);
	for (unsigned int i = 0; i < len; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static const struct sp_migration three[] = {
	{ 1, "0001_a", "CREATE TABLE a (x INTEGER) STRICT;" },
	{ 2, "0002_b", "CREATE TABLE b (y TEXT) STRICT;\nINSERT INTO b VALUES ('one');\n" },
	{ 3, "0003_c", "-- an index\nCREATE INDEX b_by_y ON b (y);\n-- trailing comment\n" },
};

/* ---- the migrator ---------------------------------------------------------------------- */

static void test_fresh_database_gets_all_then_none(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };
	int applied = -1;

	assert_int_equal(current_version(f->db), 0);
	assert_int_equal(sp_migrate(f->db, three, 3, &applied, &d), 0);
	assert_int_equal(applied, 3);
	assert_int_equal(current_version(f->db), 3);
	assert_int_equal(has_table(f->db, "a"), 1);
	assert_int_equal(query_int(f->db, "SELECT count(*) FROM b"), 1);
	assert_int_equal(
	    query_int(f->db, "SELECT count(*) FROM sqlite_schema WHERE name = 'b_by_y'"), 1);

	/* What is recorded: name, the text's sha256, a time. */
	char want[65], got[80];
	sha256_hex(three[1].sql, want);
	query_text(f->db, "SELECT sha256 FROM schema_migrations WHERE version = 2", got,
	           sizeof(got));
	assert_string_equal(got, want);
	query_text(f->db, "SELECT name FROM schema_migrations WHERE version = 2", got, sizeof(got));
	assert_string_equal(got, "0002_b");
	assert_true(query_int(f->db, "SELECT min(applied_at) FROM schema_migrations") > 1600000000);
	assert_int_equal(query_int(f->db, "SELECT count(*) FROM schema_migrations"), 3);

	/* Idempotent. */
	assert_int_equal(sp_migrate(f->db, three, 3, &applied, &d), 0);
	assert_int_equal(applied, 0);
	assert_int_equal(query_int(f->db, "SELECT count(*) FROM b"), 1);

	/* A later build adds one. */
	const struct sp_migration four[] = {
		three[0], three[1], three[2], { 4, "0004_d", "ALTER TABLE a ADD COLUMN z TEXT;" }
	};
	assert_int_equal(sp_migrate(f->db, four, 4, &applied, &d), 0);
	assert_int_equal(applied, 1);
	assert_int_equal(current_version(f->db), 4);
	/* foreign_keys is back on after migrating. */
	assert_int_equal(query_int(f->db, "PRAGMA foreign_keys"), 1);
	/* applied_count may be NULL. */
	assert_int_equal(sp_migrate(f->db, four, 4, NULL, NULL), 0);
}

static void test_partial_list_then_rest(void **state)
{
	struct fixture *f = *state;
	int applied = -1;
	assert_int_equal(sp_migrate(f->db, three, 1, &applied, NULL), 0);
	assert_int_equal(applied, 1);
	assert_int_equal(current_version(f->db), 1);
	assert_int_equal(sp_migrate(f->db, three, 3, &applied, NULL), 0);
	assert_int_equal(applied, 2);
	assert_int_equal(current_version(f->db), 3);
}

static void test_newer_database_is_refused_untouched(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };
	int applied = -1;

	assert_int_equal(run(f->db,
	                     "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
	                     " name TEXT NOT NULL, sha256 TEXT NOT NULL,"
	                     " applied_at INTEGER NOT NULL) STRICT;"
	                     "INSERT INTO schema_migrations VALUES (99, '0099_future', 'x', 1);"),
	                 SQLITE_OK);
	assert_int_equal(sp_migrate(f->db, three, 3, &applied, &d), SP_ERR_VERSION);
	assert_int_equal(applied, 0);
	expect_message(&d, "99");
	expect_message(&d, "version 3");
	expect_message(&d, "0003_c");
	assert_int_equal(has_table(f->db, "a"), 0);
	assert_int_equal(query_int(f->db, "SELECT count(*) FROM schema_migrations"), 1);
	assert_int_equal(current_version(f->db), 99);
	assert_int_equal(query_int(f->db, "PRAGMA foreign_keys"), 1);

	/* A program that knows no migrations at all refuses too. */
	assert_int_equal(sp_migrate(f->db, NULL, 0, &applied, &d), SP_ERR_VERSION);
	expect_message(&d, "99");
}

static void test_edited_or_renamed_migration_is_refused(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };
	int applied = -1;

	assert_int_equal(sp_migrate(f->db, three, 2, &applied, &d), 0);

	const struct sp_migration edited[] = {
		three[0],
		{ 2, "0002_b", "CREATE TABLE b (y TEXT, w TEXT) STRICT;" },
		three[2],
	};
	assert_int_equal(sp_migrate(f->db, edited, 3, &applied, &d), SP_ERR_INVALID);
	assert_int_equal(applied, 0);
	expect_message(&d, "0002_b");
	expect_message(&d, "edited");
	/* Nothing after it ran. */
	assert_int_equal(current_version(f->db), 2);
	assert_int_equal(
	    query_int(f->db, "SELECT count(*) FROM sqlite_schema WHERE name = 'b_by_y'"), 0);

	const struct sp_migration renamed[] = { three[0],
		                                { 2, "0002_bee", three[1].sql },
		                                three[2] };
	assert_int_equal(sp_migrate(f->db, renamed, 3, &applied, &d), SP_ERR_INVALID);
	expect_message(&d, "0002_bee");
	assert_int_equal(current_version(f->db), 2);
}

static void test_applied_migration_missing_from_list_is_refused(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };

	assert_int_equal(sp_migrate(f->db, three, 2, NULL, &d), 0);
	const struct sp_migration skips_two[] = { three[0], three[2] };
	assert_int_equal(sp_migrate(f->db, skips_two, 2, NULL, &d), SP_ERR_INVALID);
	expect_message(&d, "applied migration 2 (0002_b)");
	assert_int_equal(current_version(f->db), 2);
}

static void test_gap_below_applied_is_refused(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };
	const struct sp_migration one_and_three[] = {
		three[0], { 3, "0003_c", "CREATE TABLE b (y TEXT) STRICT;" }
	};

	assert_int_equal(sp_migrate(f->db, one_and_three, 2, NULL, &d), 0);
	const struct sp_migration all[] = { three[0],
		                            { 2, "0002_x", "CREATE TABLE x (v INTEGER);" },
		                            one_and_three[1] };
	assert_int_equal(sp_migrate(f->db, all, 3, NULL, &d), SP_ERR_INVALID);
	expect_message(&d, "migration 2 (0002_x) is not applied but the later 3");
	assert_int_equal(has_table(f->db, "x"), 0);
}

static void test_syntax_error_rolls_back_the_whole_migration(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };
	int applied = -1;
	const struct sp_migration list[] = {
		three[0],
		{ 2, "0002_broken",
		  "CREATE TABLE first_half (x INTEGER) STRICT;\n"
		  "\n"
		  "CRATE TABLE second_half (y INTEGER);\n" },
		{ 3, "0003_never", "CREATE TABLE never (z INTEGER);" },
	};

	assert_int_equal(sp_migrate(f->db, list, 3, &applied, &d), SP_ERR_DATABASE);
	assert_int_equal(applied, 1);
	expect_message(&d, "0002_broken");
	expect_message(&d, "statement 2 at line 3");
	expect_message(&d, "syntax error");
	assert_int_equal(current_version(f->db), 1);
	assert_int_equal(has_table(f->db, "first_half"), 0);
	assert_int_equal(has_table(f->db, "never"), 0);
	assert_int_equal(query_int(f->db, "PRAGMA foreign_keys"), 1);
	/* The connection is usable and not left in a transaction. */
	assert_int_equal(sqlite3_get_autocommit(f->db), 1);
	assert_int_equal(sp_migrate(f->db, three, 3, &applied, &d), 0);
	assert_int_equal(applied, 2);
}

static void test_runtime_error_rolls_back(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };
	const struct sp_migration list[] = {
		{ 1, "0001_seed",
		  "CREATE TABLE t (v INTEGER NOT NULL) STRICT;\n"
		  "INSERT INTO t VALUES (1);\n"
		  "INSERT INTO t VALUES (NULL);\n" },
	};
	assert_int_equal(sp_migrate(f->db, list, 1, NULL, &d), SP_ERR_DATABASE);
	expect_message(&d, "statement 3 at line 3");
	expect_message(&d, "NOT NULL");
	assert_int_equal(has_table(f->db, "t"), 0);
	assert_int_equal(current_version(f->db), 0);
}

static void test_forbidden_statements_are_refused(void **state)
{
	struct fixture *f = *state;
	static const char *const bodies[] = {
		"CREATE TABLE t1 (x INTEGER);\nCOMMIT;",
		"BEGIN;",
		"CREATE TABLE t1 (x INTEGER); ROLLBACK;",
		"ATTACH DATABASE '/tmp/sp-migrate-never.db' AS other;",
		"PRAGMA foreign_keys = OFF;",
		"PRAGMA journal_mode = DELETE;",
		"PRAGMA main.synchronous = OFF;",
		"DELETE FROM schema_migrations;",
		"INSERT INTO schema_migrations VALUES (7, 'x', 'y', 1);",
		"UPDATE schema_migrations SET version = 2;",
		"DROP TABLE schema_migrations;",
		"ALTER TABLE schema_migrations RENAME TO old_migrations;",
	};
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		struct sp_diag d = { { 0 } };
		const struct sp_migration list[] = { { 1, "0001_sneaky", bodies[i] } };
		assert_int_equal(sp_migrate(f->db, list, 1, NULL, &d), SP_ERR_INVALID);
		expect_message(&d, "0001_sneaky");
		expect_message(&d, "may not use");
		assert_int_equal(current_version(f->db), 0);
		assert_int_equal(has_table(f->db, "t1"), 0);
		assert_int_equal(sqlite3_get_autocommit(f->db), 1);
	}
	char mode[16];
	query_text(f->db, "PRAGMA journal_mode", mode, sizeof(mode));
	assert_string_equal(mode, "wal");
	assert_int_equal(query_int(f->db, "PRAGMA synchronous"), 2);
	assert_int_equal(query_int(f->db, "PRAGMA foreign_keys"), 1);
	assert_int_equal(access("/tmp/sp-migrate-never.db", F_OK), -1);

	/* Reading a pragma and using a savepoint are fine. */
	const struct sp_migration fine[] = {
		{ 1, "0001_fine",
		  "PRAGMA foreign_keys; SAVEPOINT s; CREATE TABLE t1 (x INTEGER);"
		  " RELEASE s;" }
	};
	assert_int_equal(sp_migrate(f->db, fine, 1, NULL, NULL), 0);
	assert_int_equal(has_table(f->db, "t1"), 1);
}

static void test_foreign_key_violation_is_refused(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };
	const struct sp_migration list[] = {
		{ 1, "0001_tables",
		  "CREATE TABLE parent (id TEXT PRIMARY KEY) STRICT;\n"
		  "CREATE TABLE child (parent_id TEXT REFERENCES parent (id)) STRICT;" },
		{ 2, "0002_orphan", "INSERT INTO child VALUES ('nobody');" },
	};
	assert_int_equal(sp_migrate(f->db, list, 2, NULL, &d), SP_ERR_INVALID);
	expect_message(&d, "0002_orphan");
	expect_message(&d, "foreign key violation");
	expect_message(&d, "child");
	assert_int_equal(current_version(f->db), 1);
	assert_int_equal(query_int(f->db, "SELECT count(*) FROM child"), 0);
	assert_int_equal(query_int(f->db, "PRAGMA foreign_keys"), 1);
}

/* Rebuilding a parent table (SQLite's way to alter it) must not cascade to children. */
static void test_table_rebuild_keeps_children(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };
	const struct sp_migration list[] = {
		{ 1, "0001_tables",
		  "CREATE TABLE parent (id TEXT PRIMARY KEY) STRICT;\n"
		  "CREATE TABLE child (parent_id TEXT NOT NULL REFERENCES parent (id)"
		  " ON DELETE CASCADE) STRICT;\n"
		  "INSERT INTO parent VALUES ('p1'), ('p2');\n"
		  "INSERT INTO child VALUES ('p1'), ('p1'), ('p2');" },
		{ 2, "0002_rebuild",
		  "CREATE TABLE parent_new (id TEXT PRIMARY KEY, label TEXT) STRICT;\n"
		  "INSERT INTO parent_new (id) SELECT id FROM parent;\n"
		  "DROP TABLE parent;\n"
		  "ALTER TABLE parent_new RENAME TO parent;" },
	};
	assert_int_equal(sp_migrate(f->db, list, 2, NULL, &d), 0);
	assert_int_equal(query_int(f->db, "SELECT count(*) FROM child"), 3);
	assert_int_equal(query_int(f->db, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
	assert_int_equal(query_int(f->db, "PRAGMA foreign_keys"), 1);
	/* And the cascade still works afterwards. */
	assert_int_equal(run(f->db, "DELETE FROM parent WHERE id = 'p1'"), SQLITE_OK);
	assert_int_equal(query_int(f->db, "SELECT count(*) FROM child"), 1);
}

static void test_bad_lists_are_refused_before_touching_anything(void **state)
{
	struct fixture *f = *state;
	char long_name[SP_MIGRATE_NAME_MAX + 2];
	memset(long_name, 'n', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	const char *ok = "CREATE TABLE t (x INTEGER);";
	struct {
		struct sp_migration list[2];
		size_t count;
		const char *message;
	} cases[] = {
		{ { { 2, "0002_b", ok }, { 1, "0001_a", ok } }, 2, "ascending" },
		{ { { 1, "0001_a", ok }, { 1, "0001_again", ok } }, 2, "both have version 1" },
		{ { { 0, "0000_zero", ok }, { 1, "0001_a", ok } }, 2, "version 0" },
		{ { { -5, "neg", ok }, { 1, "0001_a", ok } }, 2, "version -5" },
		{ { { 1, NULL, ok }, { 2, "0002_b", ok } }, 2, "no name" },
		{ { { 1, "", ok }, { 2, "0002_b", ok } }, 2, "no name" },
		{ { { 1, long_name, ok }, { 2, "0002_b", ok } }, 2, "longer than" },
		{ { { 1, "0001_a", ok }, { 2, "0002_b", NULL } }, 2, "has no SQL" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sp_diag d = { { 0 } };
		int applied = -1;
		assert_int_equal(sp_migrate(f->db, cases[i].list, cases[i].count, &applied, &d),
		                 SP_ERR_INVALID);
		assert_int_equal(applied, 0);
		expect_message(&d, cases[i].message);
		assert_int_equal(has_table(f->db, "schema_migrations"), 0);
		assert_int_equal(has_table(f->db, "t"), 0);
	}
	struct sp_diag d = { { 0 } };
	assert_int_equal(sp_migrate(f->db, NULL, 1, NULL, &d), SP_ERR_INVALID);
	assert_int_equal(sp_migrate(f->db, three, SP_MIGRATE_MAX_COUNT + 1, NULL, &d),
	                 SP_ERR_TOO_LARGE);
	assert_int_equal(sp_migrate(NULL, three, 3, NULL, &d), SP_ERR_INVALID);
	assert_int_equal(has_table(f->db, "schema_migrations"), 0);
}

static void test_foreign_database_is_refused(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };
	assert_int_equal(run(f->db, "CREATE TABLE wiki_pages (title TEXT);"), SQLITE_OK);
	assert_int_equal(sp_migrate(f->db, three, 3, NULL, &d), SP_ERR_INVALID);
	expect_message(&d, "wiki_pages");
	expect_message(&d, "not created by Sallyport");
	assert_int_equal(has_table(f->db, "schema_migrations"), 0);
	assert_int_equal(has_table(f->db, "a"), 0);
}

static void test_open_transaction_is_refused(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };
	assert_int_equal(run(f->db, "BEGIN"), SQLITE_OK);
	assert_int_equal(sp_migrate(f->db, three, 3, NULL, &d), SP_ERR_INVALID);
	expect_message(&d, "transaction");
	assert_int_equal(run(f->db, "ROLLBACK"), SQLITE_OK);
	assert_int_equal(has_table(f->db, "schema_migrations"), 0);
}

static void test_empty_list_and_current_version(void **state)
{
	struct fixture *f = *state;
	int applied = -1;
	int v = -1;
	assert_int_equal(sp_migrate_current_version(f->db, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(sp_migrate(f->db, NULL, 0, &applied, NULL), 0);
	assert_int_equal(applied, 0);
	assert_int_equal(has_table(f->db, "schema_migrations"), 1);
	assert_int_equal(current_version(f->db), 0);
	assert_int_equal(sp_migrate_current_version(NULL, &v), SP_ERR_INVALID);
	assert_int_equal(v, 0);
}

/* A second connection (another process, in real life) that migrates first. */
static void test_second_connection_sees_migrations_applied(void **state)
{
	struct fixture *f = *state;
	sqlite3 *other = NULL;
	int applied = -1;
	assert_int_equal(sp_db_open(f->path, &other, NULL), 0);
	assert_int_equal(sp_migrate(other, three, 3, &applied, NULL), 0);
	assert_int_equal(applied, 3);
	assert_int_equal(sp_migrate(f->db, three, 3, &applied, NULL), 0);
	assert_int_equal(applied, 0);
	sp_db_close(other);
}

/* ---- opening --------------------------------------------------------------------------- */

static void test_open_sets_and_reads_back_pragmas(void **state)
{
	struct fixture *f = *state;
	char mode[16];
	query_text(f->db, "PRAGMA journal_mode", mode, sizeof(mode));
	assert_string_equal(mode, "wal");
	assert_int_equal(query_int(f->db, "PRAGMA foreign_keys"), 1);
	assert_int_equal(query_int(f->db, "PRAGMA synchronous"), 2);
	assert_int_equal(query_int(f->db, "PRAGMA busy_timeout"), SP_DB_BUSY_TIMEOUT_MS);
	/* Defensive mode: the schema cannot be written directly. */
	assert_int_not_equal(run(f->db, "PRAGMA writable_schema = ON; "
	                                "UPDATE sqlite_schema SET sql = '' WHERE 0"),
	                     SQLITE_OK);

	struct stat st;
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* Reopening the existing file works. */
	sqlite3 *again = NULL;
	assert_int_equal(sp_db_open(f->path, &again, NULL), 0);
	sp_db_close(again);
	sp_db_close(NULL);
}

static void test_open_refuses_bad_paths(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };
	sqlite3 *db = (sqlite3 *)f; /* any non-NULL value: must be reset */
	char path[160];

	assert_int_equal(sp_db_open(NULL, &db, &d), SP_ERR_INVALID);
	assert_null(db);
	assert_int_equal(sp_db_open("", &db, &d), SP_ERR_INVALID);
	assert_int_equal(sp_db_open(":memory:", &db, &d), SP_ERR_INVALID);
	assert_int_equal(sp_db_open("file:x.db?mode=memory", &db, &d), SP_ERR_INVALID);
	expect_message(&d, "./file:x.db");
	assert_null(db);

	snprintf(path, sizeof(path), "%s/missing/sallyport.db", f->dir);
	assert_int_equal(sp_db_open(path, &db, &d), SP_ERR_NOT_FOUND);
	expect_message(&d, "does not exist");

	/* The parent is a file. */
	snprintf(path, sizeof(path), "%s/sallyport.db/x.db", f->dir);
	assert_int_equal(sp_db_open(path, &db, &d), SP_ERR_INVALID);
	expect_message(&d, "not a directory");

	/* The database is a directory. */
	snprintf(path, sizeof(path), "%s/adir", f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_int_equal(sp_db_open(path, &db, &d), SP_ERR_PERMISSION);
	expect_message(&d, "not a regular file");

	/* The database is a symlink. */
	snprintf(path, sizeof(path), "%s/link.db", f->dir);
	assert_int_equal(symlink(f->path, path), 0);
	assert_int_equal(sp_db_open(path, &db, &d), SP_ERR_PERMISSION);
	expect_message(&d, "symbolic link");

	/* Too long a path. */
	char *huge = malloc(5000);
	assert_non_null(huge);
	memset(huge, 'a', 4999);
	huge[0] = '/';
	huge[4999] = '\0';
	assert_int_equal(sp_db_open(huge, &db, &d), SP_ERR_TOO_LARGE);
	free(huge);
	assert_null(db);
}

static void test_open_refuses_loose_permissions(void **state)
{
	struct fixture *f = *state;
	struct sp_diag d = { { 0 } };
	sqlite3 *db = NULL;

	/* The file readable by others. */
	assert_int_equal(chmod(f->path, 0644), 0);
	assert_int_equal(sp_db_open(f->path, &db, &d), SP_ERR_PERMISSION);
	expect_message(&d, "0644");
	expect_message(&d, "chmod 600");
	assert_null(db);
	assert_int_equal(chmod(f->path, 0640), 0);
	assert_int_equal(sp_db_open(f->path, &db, &d), SP_ERR_PERMISSION);
	assert_int_equal(chmod(f->path, 0600), 0);

	/* The directory writable by others, with or without the sticky bit, or by group. */
	static const mode_t loose[] = { 0777, 01777, 0770, 0730, 0703 };
	for (size_t i = 0; i < sizeof(loose) / sizeof(loose[0]); i++) {
		assert_int_equal(chmod(f->dir, loose[i]), 0);
		assert_int_equal(sp_db_open(f->path, &db, &d), SP_ERR_PERMISSION);
		expect_message(&d, "must not be writable by group or others");
		assert_null(db);
	}
	/* Readable by others is fine for the directory. */
	assert_int_equal(chmod(f->dir, 0755), 0);
	assert_int_equal(sp_db_open(f->path, &db, &d), 0);
	sp_db_close(db);
	db = NULL;

	/* A directory owned by another (non-root) user. Only root can arrange that. */
	if (geteuid() == 0) {
		assert_int_equal(chown(f->dir, 12345, 12345), 0);
		assert_int_equal(sp_db_open(f->path, &db, &d), SP_ERR_PERMISSION);
		expect_message(&d, "owned by uid 12345");
		assert_int_equal(chown(f->dir, 0, 0), 0);
	}
	assert_null(db);
}

/* ---- the real schema ------------------------------------------------------------------- */

/* db/migrations/0001_initial.sql as a heap string (caller frees). */
static char *read_initial_schema(void)
{
	const char *root = getenv("SALLYPORT_SOURCE_DIR");
	if (root == NULL)
		fail_msg("SALLYPORT_SOURCE_DIR is not set (ctest sets it)");
	char path[512];
	snprintf(path, sizeof(path), "%s/db/migrations/0001_initial.sql", root);
	FILE *fp = fopen(path, "r");
	if (fp == NULL)
		fail_msg("cannot open %s", path);
	size_t cap = 1 << 20;
	char *sql = malloc(cap);
	assert_non_null(sql);
	size_t n = fread(sql, 1, cap - 1, fp);
	fclose(fp);
	assert_true(n > 0 && n < cap - 1);
	sql[n] = '\0';
	return sql;
}

/* Ids (32 hex digits) and SHA-256 hex values (64) for rows the tests insert. */
#define ID1 "00000000000000000000000000000001"
#define ID2 "00000000000000000000000000000002"
#define ID3 "00000000000000000000000000000003"
#define ID9 "00000000000000000000000000000009"
#define HASH_0F0F "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"
#define HASH_1234 "1234123412341234123412341234123412341234123412341234123412341234"
#define HASH_AB12 "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"
#define HASH_BEEF "beefbeefbeefbeefbeefbeefbeefbeefbeefbeefbeefbeefbeefbeefbeefbeef"

static void apply_initial_schema(struct fixture *f, char **sql)
{
	struct sp_diag d = { { 0 } };
	int applied = -1;
	*sql = read_initial_schema();
	const struct sp_migration list[] = { { 1, "0001_initial", *sql } };
	if (sp_migrate(f->db, list, 1, &applied, &d) != 0)
		fail_msg("0001_initial: %s", d.message);
	assert_int_equal(applied, 1);
	assert_int_equal(sp_migrate(f->db, list, 1, &applied, &d), 0);
	assert_int_equal(applied, 0);
	assert_int_equal(current_version(f->db), 1);
}

static void test_initial_schema_applies_cleanly(void **state)
{
	struct fixture *f = *state;
	char *sql = NULL;
	apply_initial_schema(f, &sql);

	char text[64];
	query_text(f->db, "PRAGMA integrity_check", text, sizeof(text));
	assert_string_equal(text, "ok");
	assert_int_equal(query_int(f->db, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
	query_text(f->db, "PRAGMA journal_mode", text, sizeof(text));
	assert_string_equal(text, "wal");
	assert_int_equal(query_int(f->db, "PRAGMA foreign_keys"), 1);

	/* Every table of ours is STRICT. */
	assert_int_equal(query_int(f->db, "SELECT count(*) FROM pragma_table_list "
	                                  "WHERE schema = 'main' AND name NOT LIKE 'sqlite%' "
	                                  "AND strict = 0"),
	                 0);
	assert_true(query_int(f->db, "SELECT count(*) FROM pragma_table_list "
	                             "WHERE schema = 'main' AND strict = 1") >= 20);
	/* The settings row exists, with a 128-bit hex instance id. */
	assert_int_equal(query_int(f->db, "SELECT count(*) FROM settings"), 1);
	assert_int_equal(query_int(f->db, "SELECT length(instance_id) FROM settings"), 32);
	/* Indexes the controller's lookups rely on. */
	static const char *const indexes[] = {
		"users_by_email",       "memberships_by_group",     "policies_by_resource",
		"sessions_by_user",     "flow_events_by_time",      "flow_events_by_user",
		"audit_events_by_time", "refresh_tokens_by_family",
	};
	for (size_t i = 0; i < sizeof(indexes) / sizeof(indexes[0]); i++) {
		char q[160];
		snprintf(q, sizeof(q),
		         "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = '%s'",
		         indexes[i]);
		assert_int_equal(query_int(f->db, q), 1);
	}
	free(sql);
}

/*
 * Every foreign key has an index whose leading columns are its child columns, so that
 * cascades and RESTRICT checks never scan a whole table (a rule for later migrations too).
 */
static void test_initial_schema_indexes_every_foreign_key(void **state)
{
	struct fixture *f = *state;
	char *sql = NULL;
	apply_initial_schema(f, &sql);

	sqlite3_stmt *fks = NULL;
	assert_int_equal(
	    sqlite3_prepare_v2(f->db,
	                       "SELECT m.name, k.id, group_concat(k.\"from\", ',') FROM "
	                       "(SELECT name FROM sqlite_schema WHERE type = 'table') AS m, "
	                       "pragma_foreign_key_list(m.name) AS k GROUP BY m.name, k.id",
	                       -1, &fks, NULL),
	    SQLITE_OK);
	int checked = 0;
	while (sqlite3_step(fks) == SQLITE_ROW) {
		const char *table = (const char *)sqlite3_column_text(fks, 0);
		char columns[128];
		snprintf(columns, sizeof(columns), "%s", sqlite3_column_text(fks, 2));
		/* An index of `table` whose first N columns are exactly these N, in any order. */
		int ncols = 1;
		for (const char *p = columns; *p != '\0'; p++)
			ncols += *p == ',';
		char q[512];
		snprintf(
		    q, sizeof(q),
		    "SELECT count(*) FROM pragma_index_list('%s') AS il WHERE "
		    "(SELECT count(*) FROM pragma_index_info(il.name) AS ii "
		    " WHERE ii.seqno < %d AND instr(',' || '%s' || ',', ',' || ii.name || ',') > 0)"
		    " = %d",
		    table, ncols, columns, ncols);
		if (query_int(f->db, q) == 0)
			fail_msg("foreign key %s(%s) has no index", table, columns);
		checked++;
	}
	sqlite3_finalize(fks);
	assert_int_equal(checked, 13);
	free(sql);
}

/* Two users, two groups, three memberships, a network, a resource, two policies, a device
 * and a connector. */
static void seed(sqlite3 *db)
{
	/* clang-format off */
	static const char *const rows[] = {
		"INSERT INTO users (id, issuer, subject, email, created_at, updated_at) VALUES"
		" ('" ID1 "', 'https://idp.example', 'alice', 'alice@example.com', 1, 1),"
		" ('" ID2 "', 'https://idp.example', 'bob', 'bob@example.com', 1, 1)",
		"INSERT INTO groups (id, name, created_at, updated_at) VALUES"
		" ('" ID1 "', 'engineering', 1, 1), ('" ID2 "', 'finance', 1, 1)",
		"INSERT INTO memberships (user_id, group_id, created_at) VALUES"
		" ('" ID1 "', '" ID1 "', 1), ('" ID2 "', '" ID1 "', 1),"
		" ('" ID2 "', '" ID2 "', 1)",
		"INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES"
		" ('" ID1 "', 'aws-prod', 1, 1)",
		"INSERT INTO resources (id, network_id, name, address, tcp_ports, created_at,"
		" updated_at) VALUES ('" ID1 "', '" ID1 "', 'Grafana',"
		" 'grafana.corp.example', '[\"443\"]', 1, 1)",
		"INSERT INTO policies (id, group_id, resource_id, created_at, updated_at) VALUES"
		" ('" ID1 "', '" ID1 "', '" ID1 "', 1, 1),"
		" ('" ID2 "', '" ID2 "', '" ID1 "', 1, 1)",
		"INSERT INTO devices (id, user_id, public_key_thumbprint, public_key_pem, state,"
		" first_seen_at, last_seen_at, updated_at) VALUES ('" ID1 "', '" ID1 "',"
		" 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs', 'PEM', 'approved', 1, 1, 1)",
		"INSERT INTO connectors (id, network_id, name, public_key_digest, public_key_pem,"
		" enrolled_at, updated_at) VALUES ('" ID1 "', '" ID1 "', 'c1',"
		" '" HASH_AB12 "', 'PEM', 1, 1)",
	};
	/* clang-format on */
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		if (run(db, rows[i]) != SQLITE_OK)
			fail_msg("seeding failed: %s: %s", sqlite3_errmsg(db), rows[i]);
	}
}

static void test_initial_schema_enforces_its_rules(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db = f->db;
	char *sql = NULL;
	apply_initial_schema(f, &sql);
	seed(db);

	/* Foreign keys: a membership of a missing user. */
	assert_int_equal(run(db, "INSERT INTO memberships (user_id, group_id, created_at)"
	                         " VALUES ('" ID9 "', '" ID1 "', 1)"),
	                 SQLITE_CONSTRAINT_FOREIGNKEY);
	/* A session on someone else's device. */
	assert_int_equal(run(db, "INSERT INTO sessions (id, user_id, device_id, auth_method,"
	                         " auth_time, created_at, last_used_at, expires_at) VALUES"
	                         " ('" ID1 "', '" ID2 "', '" ID1 "', 'oidc', 1, 1, 1, 2)"),
	                 SQLITE_CONSTRAINT_FOREIGNKEY);
	assert_int_equal(run(db, "INSERT INTO sessions (id, user_id, device_id, auth_method,"
	                         " auth_time, amr, created_at, last_used_at, expires_at) VALUES"
	                         " ('" ID1 "', '" ID1 "', '" ID1 "', 'oidc', 1,"
	                         " '[\"pwd\",\"otp\"]', 1, 1, 2)"),
	                 SQLITE_OK);

	/* CHECK constraints on enums, booleans, ids, JSON, pairs of columns. */
	static const char *const refused[] = {
		"INSERT INTO api_keys (id, name, role, key_hash, prefix, created_at) VALUES"
		" ('" ID1 "', 'ci', 'root', '" HASH_0F0F "', 'spk_ab12', 1)",
		"UPDATE devices SET state = 'weird'",
		"UPDATE devices SET public_key_thumbprint = 'short'",
		"UPDATE users SET disabled = 2",
		"UPDATE users SET id = 'NOT-HEX-0000000000000000000000000' WHERE id = '" ID2 "'",
		"UPDATE groups SET source = 'ldap'",
		"UPDATE resources SET tcp_ports = 'all'",
		"UPDATE resources SET tcp_ports = '5'",
		"UPDATE resources SET udp_ports = '{\"all\":1}'",
		"UPDATE policies SET max_session_age_s = -1",
		"UPDATE sessions SET revoked_at = 5",
		"UPDATE sessions SET revoke_reason = 'admin'",
		"UPDATE sessions SET amr = '\"pwd\"'",
		"UPDATE connectors SET public_key_digest = 'AB12'",
		"INSERT INTO users (id, kind, issuer, subject, created_at, updated_at) VALUES"
		" ('" ID3 "', 'service', 'https://idp.example', 'svc', 1, 1)",
		"INSERT INTO users (id, kind, created_at, updated_at) VALUES"
		" ('" ID3 "', 'person', 1, 1)",
		"INSERT INTO settings (id, instance_id, created_at, updated_at) VALUES"
		" (2, '" ID2 "', 1, 1)",
		"INSERT INTO flow_events (time, flow_id, protocol, decision) VALUES"
		" (1, 'f1', 'tcp', 'deny')",
		"INSERT INTO flow_events (time, flow_id, protocol, decision, reason) VALUES"
		" (1, 'f1', 'sctp', 'allow', NULL)",
		"INSERT INTO audit_events (time, actor_type, action)"
		" VALUES (1, 'user', 'Group Create')",
		"INSERT INTO signing_keys (kid, private_key_pem, created_at, not_before, not_after,"
		" retire_after) VALUES ('k1', 'PEM', 10, 10, 20, 15)",
		"INSERT INTO connector_enrollment_tokens (id, network_id, token_hash, created_at,"
		" expires_at) VALUES ('" ID1 "', '" ID1 "', '" HASH_1234 "', 10, 10)",
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		int rc = run(db, refused[i]);
		if (rc != SQLITE_CONSTRAINT_CHECK)
			fail_msg("expected a CHECK failure (%d), got %d for: %s",
			         SQLITE_CONSTRAINT_CHECK, rc, refused[i]);
	}
	/* STRICT: no text in an integer column. */
	assert_int_equal(run(db, "UPDATE users SET created_at = 'yesterday'"),
	                 SQLITE_CONSTRAINT_DATATYPE);
	/* Valid port specs. */
	assert_int_equal(run(db, "UPDATE resources SET tcp_ports = '\"all\"',"
	                         " udp_ports = '[\"53\",\"5000-5100\"]'"),
	                 SQLITE_OK);

	/* Uniqueness. */
	assert_int_equal(run(db, "INSERT INTO groups (id, name, created_at, updated_at) VALUES"
	                         " ('" ID3 "', 'engineering', 1, 1)"),
	                 SQLITE_CONSTRAINT_UNIQUE);
	assert_int_equal(run(db, "INSERT INTO users (id, issuer, subject, created_at, updated_at)"
	                         " VALUES ('" ID3 "', 'https://idp.example', 'alice', 1, 1)"),
	                 SQLITE_CONSTRAINT_UNIQUE);
	/* Same subject at another issuer is another person. */
	assert_int_equal(run(db, "INSERT INTO users (id, issuer, subject, created_at, updated_at)"
	                         " VALUES ('" ID3 "', 'https://other.example', 'alice', 1, 1)"),
	                 SQLITE_OK);
	assert_int_equal(run(db, "INSERT INTO policies (id, group_id, resource_id, created_at,"
	                         " updated_at) VALUES ('" ID3 "', '" ID1 "', '" ID1 "', 1, 1)"),
	                 SQLITE_CONSTRAINT_UNIQUE);
	/* Flow events: a resend is recognised. */
	assert_int_equal(run(db, "INSERT INTO flow_events (time, flow_id, connector_id, protocol,"
	                         " decision, reason) VALUES (1, 'f1', 'c1', 'tcp', 'deny',"
	                         " 'no_policy')"),
	                 SQLITE_OK);
	assert_int_equal(run(db, "INSERT INTO flow_events (time, flow_id, connector_id, protocol,"
	                         " decision) VALUES (2, 'f1', 'c1', 'tcp', 'allow')"),
	                 SQLITE_CONSTRAINT_UNIQUE);

	/* The settings row cannot be deleted. */
	assert_int_not_equal(run(db, "DELETE FROM settings"), SQLITE_OK);
	assert_int_equal(query_int(db, "SELECT count(*) FROM settings"), 1);

	/* A network in use cannot be deleted (RESTRICT), and nothing went. */
	/* (SQLite reports RESTRICT as SQLITE_CONSTRAINT_TRIGGER; the message is the same.) */
	assert_int_not_equal(run(db, "DELETE FROM remote_networks"), SQLITE_OK);
	assert_string_equal(sqlite3_errmsg(db), "FOREIGN KEY constraint failed");
	assert_int_equal(query_int(db, "SELECT count(*) FROM resources"), 1);
	free(sql);
}

static void test_initial_schema_cascades_and_feeds_changes(void **state)
{
	struct fixture *f = *state;
	sqlite3 *db = f->db;
	char *sql = NULL;
	apply_initial_schema(f, &sql);
	seed(db);
	assert_int_equal(run(db, "INSERT INTO sessions (id, user_id, device_id, auth_method,"
	                         " auth_time, created_at, last_used_at, expires_at) VALUES"
	                         " ('" ID1 "', '" ID1 "', '" ID1 "', 'oidc', 1, 1, 1, 2);"
	                         "INSERT INTO refresh_tokens (id, session_id, family_id,"
	                         " token_hash, issued_at, expires_at) VALUES ('" ID1 "',"
	                         " '" ID1 "', '" ID1 "', '" HASH_BEEF "', 1, 2);"),
	                 SQLITE_OK);
	long long before = query_int(db, "SELECT max(seq) FROM changes");
	assert_true(before > 0);

	/* Deleting a group removes its memberships and policies, and the feed sees all. */
	assert_int_equal(run(db, "DELETE FROM groups WHERE id = '" ID1 "'"), SQLITE_OK);
	assert_int_equal(query_int(db, "SELECT count(*) FROM memberships"), 1);
	assert_int_equal(
	    query_int(db, "SELECT count(*) FROM memberships WHERE group_id = '" ID1 "'"), 0);
	assert_int_equal(query_int(db, "SELECT count(*) FROM policies"), 1);
	assert_int_equal(query_int(db, "SELECT count(*) FROM users"), 2);
	char q[256];
	snprintf(q, sizeof(q),
	         "SELECT count(*) FROM changes WHERE seq > %lld AND op = 'delete' AND "
	         "kind IN ('group', 'membership', 'policy')",
	         before);
	assert_int_equal(query_int(db, q), 4); /* the group, two memberships, one policy */
	char detail[160];
	snprintf(q, sizeof(q), "SELECT detail FROM changes WHERE seq > %lld AND kind = 'policy'",
	         before);
	query_text(db, q, detail, sizeof(detail));
	assert_string_equal(detail, "{\"group_id\":\"" ID1 "\",\"resource_id\":\"" ID1 "\"}");

	/* Heartbeats are not changes; a state change is. */
	before = query_int(db, "SELECT max(seq) FROM changes");
	assert_int_equal(run(db, "UPDATE connectors SET last_seen_at = 99, updated_at = 99;"
	                         "UPDATE devices SET last_seen_at = 99;"
	                         "UPDATE sessions SET last_used_at = 99;"
	                         "UPDATE devices SET state = 'approved';"),
	                 SQLITE_OK);
	assert_int_equal(query_int(db, "SELECT max(seq) FROM changes"), before);
	assert_int_equal(run(db, "UPDATE sessions SET revoked_at = 100, revoke_reason = 'admin'"),
	                 SQLITE_OK);
	snprintf(q, sizeof(q),
	         "SELECT count(*) FROM changes WHERE seq > %lld AND kind = 'session' AND "
	         "op = 'update' AND entity_id = '" ID1 "'",
	         before);
	assert_int_equal(query_int(db, q), 1);

	/* Deleting a user takes its devices, sessions and refresh tokens with it. */
	assert_int_equal(run(db, "DELETE FROM users WHERE id = '" ID1 "'"), SQLITE_OK);
	assert_int_equal(query_int(db, "SELECT count(*) FROM devices"), 0);
	assert_int_equal(query_int(db, "SELECT count(*) FROM sessions"), 0);
	assert_int_equal(query_int(db, "SELECT count(*) FROM refresh_tokens"), 0);
	/* Deleting a resource takes its remaining policy; then the network can go. */
	assert_int_equal(run(db, "DELETE FROM resources; DELETE FROM connectors;"
	                         "DELETE FROM remote_networks;"),
	                 SQLITE_OK);
	assert_int_equal(query_int(db, "SELECT count(*) FROM policies"), 0);
	assert_int_equal(query_int(db, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
	free(sql);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_fresh_database_gets_all_then_none),
		T(test_partial_list_then_rest),
		T(test_newer_database_is_refused_untouched),
		T(test_edited_or_renamed_migration_is_refused),
		T(test_applied_migration_missing_from_list_is_refused),
		T(test_gap_below_applied_is_refused),
		T(test_syntax_error_rolls_back_the_whole_migration),
		T(test_runtime_error_rolls_back),
		T(test_forbidden_statements_are_refused),
		T(test_foreign_key_violation_is_refused),
		T(test_table_rebuild_keeps_children),
		T(test_bad_lists_are_refused_before_touching_anything),
		T(test_foreign_database_is_refused),
		T(test_open_transaction_is_refused),
		T(test_empty_list_and_current_version),
		T(test_second_connection_sees_migrations_applied),
		T(test_open_sets_and_reads_back_pragmas),
		T(test_open_refuses_bad_paths),
		T(test_open_refuses_loose_permissions),
		T(test_initial_schema_applies_cleanly),
		T(test_initial_schema_indexes_every_foreign_key),
		T(test_initial_schema_enforces_its_rules),
		T(test_initial_schema_cascades_and_feeds_changes),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
