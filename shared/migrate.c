/* shared/migrate.c — open the sqlite database safely and apply schema migrations. */
#include "shared/migrate.h"

#include "shared/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#define SHA256_HEX_LEN 64

/* Text of the current time in unix seconds, understood by SQLite 3.37 (unixepoch() is 3.38). */
#define SQL_NOW "CAST(strftime('%s', 'now') AS INTEGER)"
#define STRINGIFY_VALUE(x) #x
#define STRINGIFY(x) STRINGIFY_VALUE(x)

/* ---- small sqlite helpers ------------------------------------------------------------ */

/* Runs SQL without results; on failure names `what` and SQLite's message. */
static int exec_sql(sqlite3 *db, const char *sql, const char *what, struct sp_diag *diag)
{
	char *err = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK)
		return 0;
	int r = sp_diag_set(diag, SP_ERR_DATABASE, "%s failed: %s", what,
	                    err != NULL ? err : sqlite3_errmsg(db));
	sqlite3_free(err);
	return r;
}

/*
 * Runs a statement that returns one row and reads its first column as a number (num)
 * and, when text is not NULL, as text. No row is SP_ERR_NOT_FOUND; a NULL value reads
 * as 0 and "".
 */
static int query_one(sqlite3 *db, const char *sql, sqlite3_int64 *num, char *text, size_t text_size,
                     struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	sqlite3_stmt *st = NULL;

	*num = 0;
	if (text != NULL && text_size > 0)
		text[0] = '\0';
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "%s failed: %s", sql, sqlite3_errmsg(db));
		goto out;
	}
	int rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		r = sp_diag_set(diag, SP_ERR_NOT_FOUND, "%s returned no row", sql);
		goto out;
	}
	if (rc != SQLITE_ROW) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "%s failed: %s", sql, sqlite3_errmsg(db));
		goto out;
	}
	*num = sqlite3_column_int64(st, 0);
	if (text != NULL && text_size > 0) {
		const unsigned char *t = sqlite3_column_text(st, 0);
		if (t != NULL) {
			size_t n = strnlen((const char *)t, text_size - 1);
			memcpy(text, t, n);
			text[n] = '\0';
		}
	}
	r = 0;
out:
	sqlite3_finalize(st);
	return r;
}

/* *exists = whether a table named `name` exists in the main database. */
static int object_exists(sqlite3 *db, const char *name, int *exists, struct sp_diag *diag)
{
	sqlite3_stmt *st = NULL;
	int r = SP_ERR_INTERNAL;

	*exists = 0;
	if (sqlite3_prepare_v2(
	        db, "SELECT 1 FROM main.sqlite_schema WHERE type = 'table' AND name = ?1", -1, &st,
	        NULL) != SQLITE_OK ||
	    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC) != SQLITE_OK) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "reading the schema failed: %s",
		                sqlite3_errmsg(db));
		goto out;
	}
	int rc = sqlite3_step(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "reading the schema failed: %s",
		                sqlite3_errmsg(db));
		goto out;
	}
	*exists = rc == SQLITE_ROW;
	r = 0;
out:
	sqlite3_finalize(st);
	return r;
}

/* Ends the open transaction, if SQLite has not already ended it after an error. */
static void rollback_if_open(sqlite3 *db)
{
	if (!sqlite3_get_autocommit(db))
		(void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

/* ---- opening ------------------------------------------------------------------------- */

/*
 * The directory that will hold the database, its -wal and its -shm: it must exist and
 * only its owner (us or root) may write it, or someone else could swap the files.
 */
static int check_directory(const char *path, struct sp_diag *diag)
{
	char dir[PATH_MAX];
	size_t len = strlen(path);
	const char *slash = strrchr(path, '/');

	if (len >= sizeof(dir))
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "database path is longer than %d bytes",
		                   PATH_MAX - 1);
	if (slash == NULL) {
		memcpy(dir, ".", 2);
	} else if (slash == path) {
		memcpy(dir, "/", 2);
	} else {
		size_t n = (size_t)(slash - path);
		memcpy(dir, path, n);
		dir[n] = '\0';
	}

	struct stat st;
	if (stat(dir, &st) == -1) {
		if (errno == ENOENT)
			return sp_diag_set(diag, SP_ERR_NOT_FOUND,
			                   "database directory %s does not exist", dir);
		return sp_diag_set(diag, SP_ERR_IO, "cannot stat database directory %s: %s", dir,
		                   strerror(errno));
	}
	if (!S_ISDIR(st.st_mode))
		return sp_diag_set(diag, SP_ERR_INVALID, "%s is not a directory", dir);
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
		return sp_diag_set(
		    diag, SP_ERR_PERMISSION,
		    "database directory %s has mode %04o; it must not be writable by "
		    "group or others (chmod 700 %s)",
		    dir, (unsigned)(st.st_mode & 07777), dir);
	if (st.st_uid != geteuid() && st.st_uid != 0)
		return sp_diag_set(diag, SP_ERR_PERMISSION,
		                   "database directory %s is owned by uid %u, not by us or root",
		                   dir, (unsigned)st.st_uid);
	return 0;
}

/*
 * Creates the database file with mode 0600 when it does not exist, and otherwise
 * checks it as key files are checked: a regular file, not a symlink, no group or
 * other bits, ours (unless we are root). The descriptor is closed before SQLite opens
 * the file, because closing any descriptor of a file drops the process's POSIX locks
 * on it, which SQLite relies on.
 */
static int check_or_create_file(const char *path, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	struct stat st;
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

	if (fd == -1 && errno == ENOENT) {
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd == -1)
			return sp_diag_set(diag, SP_ERR_IO, "cannot create database %s: %s", path,
			                   strerror(errno));
		/* The umask can only clear bits; be explicit anyway. */
		if (fchmod(fd, 0600) == -1) {
			r = sp_diag_set(diag, SP_ERR_IO, "cannot chmod database %s: %s", path,
			                strerror(errno));
			goto out;
		}
	}
	if (fd == -1) {
		if (errno == ELOOP)
			return sp_diag_set(diag, SP_ERR_PERMISSION,
			                   "database %s is a symbolic link", path);
		if (errno == EISDIR)
			return sp_diag_set(diag, SP_ERR_PERMISSION,
			                   "database %s is not a regular file", path);
		return sp_diag_set(diag, SP_ERR_IO, "cannot open database %s: %s", path,
		                   strerror(errno));
	}
	if (fstat(fd, &st) == -1) {
		r = sp_diag_set(diag, SP_ERR_IO, "cannot stat database %s: %s", path,
		                strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = sp_diag_set(diag, SP_ERR_PERMISSION, "database %s is not a regular file", path);
		goto out;
	}
	if ((st.st_mode & 077) != 0) {
		r = sp_diag_set(diag, SP_ERR_PERMISSION,
		                "database %s has mode %04o; it holds private keys and must not be "
		                "accessible to group or others (chmod 600 %s)",
		                path, (unsigned)(st.st_mode & 07777), path);
		goto out;
	}
	if (geteuid() != 0 && st.st_uid != geteuid()) {
		r = sp_diag_set(diag, SP_ERR_PERMISSION,
		                "database %s is owned by uid %u, not by us", path,
		                (unsigned)st.st_uid);
		goto out;
	}
	r = 0;
out:
	(void)close(fd);
	return r;
}

/* Runs `set` (when not NULL), then `get`, and requires `get` to read back `want`. */
static int pragma_expect_int(sqlite3 *db, const char *set, const char *get, sqlite3_int64 want,
                             struct sp_diag *diag)
{
	sqlite3_int64 got = 0;
	int r;
	if (set != NULL && (r = exec_sql(db, set, set, diag)) < 0)
		return r;
	if ((r = query_one(db, get, &got, NULL, 0, diag)) < 0)
		return r == SP_ERR_NOT_FOUND
		           ? sp_diag_set(diag, SP_ERR_DATABASE,
		                         "%s is not supported by this SQLite", get)
		           : r;
	if (got != want)
		return sp_diag_set(diag, SP_ERR_DATABASE,
		                   "%s reads back %lld after %s, expected %lld", get,
		                   (long long)got, set != NULL ? set : "opening", (long long)want);
	return 0;
}

static int configure_connection(sqlite3 *db, struct sp_diag *diag)
{
	int r;
	int on = 0;

	/*
	 * Defensive mode forbids what could corrupt the file from SQL (writable_schema,
	 * journal_mode=OFF, direct shadow-table writes).
	 */
	if (sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, &on) != SQLITE_OK || on != 1)
		return sp_diag_set(diag, SP_ERR_DATABASE, "cannot enable SQLite defensive mode: %s",
		                   sqlite3_errmsg(db));
	if (sqlite3_extended_result_codes(db, 1) != SQLITE_OK)
		return sp_diag_set(diag, SP_ERR_DATABASE, "cannot enable extended result codes");

	/* First, so that switching the journal mode waits for another process's lock. */
	if ((r = pragma_expect_int(db, NULL,
	                           "PRAGMA busy_timeout = " STRINGIFY(SP_DB_BUSY_TIMEOUT_MS),
	                           SP_DB_BUSY_TIMEOUT_MS, diag)) < 0)
		return r;

	char mode[16];
	sqlite3_int64 ignored = 0;
	if ((r = query_one(db, "PRAGMA journal_mode = WAL", &ignored, mode, sizeof(mode), diag)) <
	    0)
		return r;
	if (strcmp(mode, "wal") != 0)
		return sp_diag_set(diag, SP_ERR_DATABASE,
		                   "PRAGMA journal_mode = WAL left the journal mode at '%s'", mode);

	/* FULL: in WAL mode the log is synced at every commit, so a commit that returned
	 * survives a power cut (NORMAL could lose the last ones). */
	if ((r = pragma_expect_int(db, "PRAGMA synchronous = FULL", "PRAGMA synchronous", 2,
	                           diag)) < 0)
		return r;
	return pragma_expect_int(db, "PRAGMA foreign_keys = ON", "PRAGMA foreign_keys", 1, diag);
}

int sp_db_open(const char *path, sqlite3 **out, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	sqlite3 *db = NULL;

	*out = NULL;
	if (path == NULL || path[0] == '\0')
		return sp_diag_set(diag, SP_ERR_INVALID, "database path is empty");
	if (path[0] == ':' || strncmp(path, "file:", 5) == 0)
		return sp_diag_set(
		    diag, SP_ERR_INVALID,
		    "database path %s is not a plain file name (write ./%s for a file "
		    "of that name)",
		    path, path);
	if (sqlite3_libversion_number() < SP_DB_SQLITE_MIN_VERSION)
		return sp_diag_set(diag, SP_ERR_UNSUPPORTED,
		                   "SQLite %s is too old: Sallyport needs 3.37 or newer (STRICT "
		                   "tables)",
		                   sqlite3_libversion());
	if ((r = check_directory(path, diag)) < 0)
		return r;
	if ((r = check_or_create_file(path, diag)) < 0)
		return r;

	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL);
	if (rc != SQLITE_OK) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "cannot open database %s: %s", path,
		                db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		goto out;
	}
	if ((r = configure_connection(db, diag)) < 0) {
		if (diag != NULL) {
			char inner[sizeof(diag->message)];
			memcpy(inner, diag->message, sizeof(inner));
			sp_diag_set(diag, r, "database %s: %.200s", path, inner);
		}
		goto out;
	}
	*out = db;
	db = NULL;
	r = 0;
out:
	sqlite3_close_v2(db);
	return r;
}

void sp_db_close(sqlite3 *db)
{
	/* close_v2 cannot fail on a valid handle; it finalizes lazily if a statement leaked. */
	(void)sqlite3_close_v2(db);
}

/* ---- migrations ---------------------------------------------------------------------- */

struct migration_guard {
	/* Set by the authorizer when it refused a statement: what was refused. */
	char refused[64];
};

/* Pragmas a migration must not set: they change the connection, not the schema. */
static const char *const forbidden_pragmas[] = {
	"foreign_keys", "journal_mode", "synchronous", "locking_mode", "writable_schema",
};

/*
 * Installed while a migration's statements are prepared. A migration runs inside the
 * transaction sp_migrate opened, so it must not end that transaction, reach into other
 * database files, or change the connection's settings.
 */
static int migration_authorizer(void *ctx, int action, const char *arg1, const char *arg2,
                                const char *db_name, const char *trigger)
{
	struct migration_guard *guard = ctx;
	(void)db_name;
	(void)trigger;

	switch (action) {
	case SQLITE_TRANSACTION:
		snprintf(guard->refused, sizeof(guard->refused), "%s", "BEGIN, COMMIT or ROLLBACK");
		return SQLITE_DENY;
	case SQLITE_ATTACH:
	case SQLITE_DETACH:
		snprintf(guard->refused, sizeof(guard->refused), "%s", "ATTACH or DETACH");
		return SQLITE_DENY;
	case SQLITE_INSERT:
	case SQLITE_UPDATE:
	case SQLITE_DELETE:
	case SQLITE_DROP_TABLE:
		/* The record of what was applied is the migrator's alone. */
		if (arg1 != NULL && strcasecmp(arg1, "schema_migrations") == 0) {
			snprintf(guard->refused, sizeof(guard->refused), "%s",
			         "writes to schema_migrations");
			return SQLITE_DENY;
		}
		return SQLITE_OK;
	case SQLITE_ALTER_TABLE:
		if (arg2 != NULL && strcasecmp(arg2, "schema_migrations") == 0) {
			snprintf(guard->refused, sizeof(guard->refused), "%s",
			         "writes to schema_migrations");
			return SQLITE_DENY;
		}
		return SQLITE_OK;
	case SQLITE_PRAGMA:
		if (arg1 == NULL || arg2 == NULL)
			return SQLITE_OK; /* reading a pragma is harmless */
		for (size_t i = 0; i < sizeof(forbidden_pragmas) / sizeof(forbidden_pragmas[0]);
		     i++) {
			if (strcasecmp(arg1, forbidden_pragmas[i]) == 0) {
				snprintf(guard->refused, sizeof(guard->refused), "PRAGMA %s",
				         forbidden_pragmas[i]);
				return SQLITE_DENY;
			}
		}
		return SQLITE_OK;
	default:
		return SQLITE_OK;
	}
}

static int validate_list(const struct sp_migration *list, size_t count, struct sp_diag *diag)
{
	if (count > SP_MIGRATE_MAX_COUNT)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "%zu migrations; at most %d are allowed",
		                   count, SP_MIGRATE_MAX_COUNT);
	if (count > 0 && list == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "migration list is NULL");
	for (size_t i = 0; i < count; i++) {
		const struct sp_migration *m = &list[i];
		if (m->name == NULL || m->name[0] == '\0')
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "migration #%zu (version %d) has no name", i,
			                   m->version);
		if (strnlen(m->name, SP_MIGRATE_NAME_MAX + 1) > SP_MIGRATE_NAME_MAX)
			return sp_diag_set(
			    diag, SP_ERR_INVALID,
			    "migration #%zu (version %d) has a name longer than %d bytes", i,
			    m->version, SP_MIGRATE_NAME_MAX);
		if (m->version <= 0)
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "migration %s has version %d; versions start at 1",
			                   m->name, m->version);
		if (m->sql == NULL)
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "migration %s (version %d) has no SQL", m->name,
			                   m->version);
		if (i == 0)
			continue;
		const struct sp_migration *prev = &list[i - 1];
		if (m->version == prev->version)
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "migrations %s and %s both have version %d", prev->name,
			                   m->name, m->version);
		if (m->version < prev->version)
			return sp_diag_set(
			    diag, SP_ERR_INVALID,
			    "migration %s (version %d) comes after %s (version %d); the "
			    "list must be in ascending order",
			    m->name, m->version, prev->name, prev->version);
	}
	return 0;
}

/*
 * Inside one IMMEDIATE transaction: creates schema_migrations when missing and checks
 * what is recorded there against the list. *max_applied is the highest applied
 * version. Any refusal rolls back, so a refused database is left exactly as it was.
 */
static int check_applied(sqlite3 *db, const struct sp_migration *list, size_t count,
                         char (*hashes)[SHA256_HEX_LEN + 1], sqlite3_int64 *max_applied,
                         struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	sqlite3_stmt *st = NULL;
	int exists = 0;

	*max_applied = 0;
	if ((r = exec_sql(db, "BEGIN IMMEDIATE", "starting the migration check", diag)) < 0)
		return r;
	if ((r = object_exists(db, "schema_migrations", &exists, diag)) < 0)
		goto out;
	if (!exists) {
		char other[128];
		sqlite3_int64 ignored = 0;
		r = query_one(db,
		              "SELECT name FROM main.sqlite_schema "
		              "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' LIMIT 1",
		              &ignored, other, sizeof(other), diag);
		if (r == 0) {
			r = sp_diag_set(
			    diag, SP_ERR_INVALID,
			    "the database holds '%s' but no schema_migrations table: it "
			    "was not created by Sallyport",
			    other);
			goto out;
		}
		if (r != SP_ERR_NOT_FOUND)
			goto out;
		r = exec_sql(db,
		             "CREATE TABLE schema_migrations ("
		             " version INTEGER PRIMARY KEY,"
		             " name TEXT NOT NULL,"
		             " sha256 TEXT NOT NULL,"
		             " applied_at INTEGER NOT NULL"
		             ") STRICT",
		             "creating schema_migrations", diag);
		if (r < 0)
			goto out;
	}

	sqlite3_int64 highest = 0;
	if ((r = query_one(db, "SELECT coalesce(max(version), 0) FROM schema_migrations", &highest,
	                   NULL, 0, diag)) < 0)
		goto out;
	const struct sp_migration *newest = count > 0 ? &list[count - 1] : NULL;
	if (highest > (newest != NULL ? newest->version : 0)) {
		if (newest != NULL)
			r = sp_diag_set(
			    diag, SP_ERR_VERSION,
			    "the database is at schema version %lld, newer than the newest "
			    "migration this program knows (version %d, %s): run a newer "
			    "Sallyport or restore a matching backup",
			    (long long)highest, newest->version, newest->name);
		else
			r = sp_diag_set(
			    diag, SP_ERR_VERSION,
			    "the database is at schema version %lld but this program knows "
			    "no migrations (version 0)",
			    (long long)highest);
		goto out;
	}

	if (sqlite3_prepare_v2(
	        db, "SELECT version, name, sha256 FROM schema_migrations ORDER BY version", -1, &st,
	        NULL) != SQLITE_OK) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "reading schema_migrations failed: %s",
		                sqlite3_errmsg(db));
		goto out;
	}
	size_t next = 0; /* list index of the first entry not yet matched */
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		sqlite3_int64 version = sqlite3_column_int64(st, 0);
		const char *name = (const char *)sqlite3_column_text(st, 1);
		const char *sha = (const char *)sqlite3_column_text(st, 2);
		name = name != NULL ? name : "";
		sha = sha != NULL ? sha : "";
		if (next < count && list[next].version < version) {
			r = sp_diag_set(
			    diag, SP_ERR_INVALID,
			    "migration %d (%s) is not applied but the later %lld (%.100s) "
			    "is: migrations must be applied in order",
			    list[next].version, list[next].name, (long long)version, name);
			goto out;
		}
		if (next >= count || list[next].version != version) {
			r = sp_diag_set(
			    diag, SP_ERR_INVALID,
			    "applied migration %lld (%.100s) is not one this program knows",
			    (long long)version, name);
			goto out;
		}
		if (strcmp(sha, hashes[next]) != 0) {
			r = sp_diag_set(
			    diag, SP_ERR_INVALID,
			    "migration %d (%s) was edited after it was applied: recorded "
			    "sha256 %.64s, this program's %s",
			    list[next].version, list[next].name, sha, hashes[next]);
			goto out;
		}
		if (strcmp(name, list[next].name) != 0) {
			r = sp_diag_set(diag, SP_ERR_INVALID,
			                "migration %d was applied as %.100s but is now named %s",
			                list[next].version, name, list[next].name);
			goto out;
		}
		next++;
	}
	if (rc != SQLITE_DONE) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "reading schema_migrations failed: %s",
		                sqlite3_errmsg(db));
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	if ((r = exec_sql(db, "COMMIT", "committing the migration check", diag)) < 0)
		goto out;
	*max_applied = highest;
	r = 0;
out:
	sqlite3_finalize(st);
	if (r < 0)
		rollback_if_open(db);
	return r;
}

/* Line (from 1) of the first character of the statement that starts at or after `at`. */
static int statement_line(const char *sql, const char *at)
{
	/* Skip the blanks and comments between the previous statement and this one. */
	for (;;) {
		while (*at == ' ' || *at == '\t' || *at == '\n' || *at == '\r' || *at == ';')
			at++;
		if (at[0] == '-' && at[1] == '-') {
			while (*at != '\0' && *at != '\n')
				at++;
		} else if (at[0] == '/' && at[1] == '*') {
			const char *end = strstr(at + 2, "*/");
			at = end != NULL ? end + 2 : at + strlen(at);
		} else {
			break;
		}
	}
	int line = 1;
	for (const char *p = sql; p < at; p++)
		line += *p == '\n';
	return line;
}

/* Runs every statement of m->sql in order; the first failure stops and is reported. */
static int run_statements(sqlite3 *db, const struct sp_migration *m,
                          const struct migration_guard *guard, struct sp_diag *diag)
{
	const char *at = m->sql;
	int number = 0;

	while (*at != '\0') {
		sqlite3_stmt *st = NULL;
		const char *tail = NULL;
		int rc = sqlite3_prepare_v2(db, at, -1, &st, &tail);
		if (rc == SQLITE_OK && st == NULL)
			break; /* only blanks and comments were left */
		number++;
		if (rc == SQLITE_OK) {
			while ((rc = sqlite3_step(st)) == SQLITE_ROW)
				;
			if (rc == SQLITE_DONE)
				rc = SQLITE_OK;
		}
		if (rc != SQLITE_OK) {
			int line = statement_line(m->sql, at);
			int r;
			if (guard->refused[0] != '\0')
				r = sp_diag_set(
				    diag, SP_ERR_INVALID,
				    "migration %s (version %d), statement %d at line %d: "
				    "a migration may not use %s",
				    m->name, m->version, number, line, guard->refused);
			else
				r = sp_diag_set(
				    diag, SP_ERR_DATABASE,
				    "migration %s (version %d), statement %d at line %d: %s",
				    m->name, m->version, number, line, sqlite3_errmsg(db));
			sqlite3_finalize(st);
			return r;
		}
		sqlite3_finalize(st);
		at = tail;
	}
	return 0;
}

/* Refuses to commit a migration that leaves a row pointing at a missing parent. */
static int check_foreign_keys(sqlite3 *db, const struct sp_migration *m, struct sp_diag *diag)
{
	sqlite3_stmt *st = NULL;
	int r = SP_ERR_INTERNAL;

	if (sqlite3_prepare_v2(db, "PRAGMA foreign_key_check", -1, &st, NULL) != SQLITE_OK) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "migration %s: foreign_key_check failed: %s",
		                m->name, sqlite3_errmsg(db));
		goto out;
	}
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *table = (const char *)sqlite3_column_text(st, 0);
		const char *parent = (const char *)sqlite3_column_text(st, 2);
		r = sp_diag_set(diag, SP_ERR_INVALID,
		                "migration %s (version %d) leaves a foreign key violation: a row "
		                "(rowid %lld) of %.60s refers to a missing row of %.60s",
		                m->name, m->version, (long long)sqlite3_column_int64(st, 1),
		                table != NULL ? table : "?", parent != NULL ? parent : "?");
		goto out;
	}
	if (rc != SQLITE_DONE) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "migration %s: foreign_key_check failed: %s",
		                m->name, sqlite3_errmsg(db));
		goto out;
	}
	r = 0;
out:
	sqlite3_finalize(st);
	return r;
}

static int record_migration(sqlite3 *db, const struct sp_migration *m, const char *sha,
                            struct sp_diag *diag)
{
	sqlite3_stmt *st = NULL;
	int r = SP_ERR_INTERNAL;

	if (sqlite3_prepare_v2(db,
	                       "INSERT INTO schema_migrations (version, name, sha256, applied_at) "
	                       "VALUES (?1, ?2, ?3, " SQL_NOW ")",
	                       -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_bind_int(st, 1, m->version) != SQLITE_OK ||
	    sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_bind_text(st, 3, sha, -1, SQLITE_STATIC) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_DONE) {
		r = sp_diag_set(diag, SP_ERR_DATABASE, "migration %s: recording it failed: %s",
		                m->name, sqlite3_errmsg(db));
		goto out;
	}
	r = 0;
out:
	sqlite3_finalize(st);
	return r;
}

/*
 * Applies one migration in its own IMMEDIATE transaction. Under the write lock it first
 * looks again at schema_migrations, since another process may have migrated meanwhile:
 * *applied is 0 when the migration was already there (with the same sha256).
 */
static int apply_one(sqlite3 *db, const struct sp_migration *m, const char *sha, int *applied,
                     struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	struct migration_guard guard;
	char recorded[2 * SHA256_HEX_LEN]; /* room to see a longer, wrong value */
	char query[128];
	char what[SP_MIGRATE_NAME_MAX + 64];
	sqlite3_int64 highest = 0;
	sqlite3_int64 ignored = 0;

	*applied = 0;
	memset(&guard, 0, sizeof(guard));
	snprintf(what, sizeof(what), "migration %s: BEGIN IMMEDIATE", m->name);
	if ((r = exec_sql(db, "BEGIN IMMEDIATE", what, diag)) < 0)
		return r;

	snprintf(query, sizeof(query), "SELECT sha256 FROM schema_migrations WHERE version = %d",
	         m->version);
	r = query_one(db, query, &ignored, recorded, sizeof(recorded), diag);
	if (r == 0) {
		if (strcmp(recorded, sha) != 0) {
			r = sp_diag_set(diag, SP_ERR_INVALID,
			                "migration %d (%s) was applied meanwhile with a different "
			                "sha256 (%s)",
			                m->version, m->name, recorded);
			goto out;
		}
		snprintf(what, sizeof(what), "migration %s: COMMIT", m->name);
		r = exec_sql(db, "COMMIT", what, diag);
		goto out;
	}
	if (r != SP_ERR_NOT_FOUND)
		goto out;
	if ((r = query_one(db, "SELECT coalesce(max(version), 0) FROM schema_migrations", &highest,
	                   NULL, 0, diag)) < 0)
		goto out;
	if (highest > m->version) {
		r = sp_diag_set(diag, SP_ERR_INVALID,
		                "migration %d (%s) is not applied but the later %lld was applied "
		                "meanwhile: migrations must be applied in order",
		                m->version, m->name, (long long)highest);
		goto out;
	}

	sqlite3_set_authorizer(db, migration_authorizer, &guard);
	r = run_statements(db, m, &guard, diag);
	sqlite3_set_authorizer(db, NULL, NULL);
	if (r < 0)
		goto out;
	if ((r = check_foreign_keys(db, m, diag)) < 0)
		goto out;
	if ((r = record_migration(db, m, sha, diag)) < 0)
		goto out;
	snprintf(what, sizeof(what), "migration %s: COMMIT", m->name);
	if ((r = exec_sql(db, "COMMIT", what, diag)) < 0)
		goto out;
	*applied = 1;
	r = 0;
out:
	if (r < 0)
		rollback_if_open(db);
	return r;
}

int sp_migrate(sqlite3 *db, const struct sp_migration *list, size_t count, int *applied_count,
               struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	int applied = 0;
	int restore_foreign_keys = 0;
	char(*hashes)[SHA256_HEX_LEN + 1] = NULL;
	sqlite3_int64 max_applied = 0;

	if (applied_count != NULL)
		*applied_count = 0;
	if (db == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "no database connection");
	if ((r = validate_list(list, count, diag)) < 0)
		return r;
	if (!sqlite3_get_autocommit(db))
		return sp_diag_set(diag, SP_ERR_INVALID,
		                   "cannot migrate inside an open transaction");

	if (count > 0) {
		hashes = calloc(count, sizeof(*hashes));
		if (hashes == NULL)
			return sp_diag_set(diag, SP_ERR_NOMEM, "out of memory hashing migrations");
	}
	for (size_t i = 0; i < count; i++) {
		if ((r = sp_secret_hash(list[i].sql, strlen(list[i].sql), hashes[i])) < 0) {
			r = sp_diag_set(diag, r, "cannot hash migration %s", list[i].name);
			goto out;
		}
	}

	if ((r = check_applied(db, list, count, hashes, &max_applied, diag)) < 0)
		goto out;
	if (count == 0 || list[count - 1].version <= max_applied) {
		r = 0;
		goto out;
	}

	/* Foreign keys off while migrating (SQLite only honours this outside a transaction). */
	sqlite3_int64 foreign_keys = 0;
	if ((r = query_one(db, "PRAGMA foreign_keys", &foreign_keys, NULL, 0, diag)) < 0)
		goto out;
	if (foreign_keys == 1) {
		if ((r = exec_sql(db, "PRAGMA foreign_keys = OFF", "turning foreign keys off",
		                  diag)) < 0)
			goto out;
		restore_foreign_keys = 1;
	}

	for (size_t i = 0; i < count; i++) {
		if (list[i].version <= max_applied)
			continue;
		int one = 0;
		if ((r = apply_one(db, &list[i], hashes[i], &one, diag)) < 0)
			goto out;
		applied += one;
	}
	r = 0;
out:
	if (restore_foreign_keys) {
		struct sp_diag restore_diag;
		int rr = pragma_expect_int(db, "PRAGMA foreign_keys = ON", "PRAGMA foreign_keys", 1,
		                           &restore_diag);
		if (rr < 0 && r == 0)
			r = sp_diag_set(diag, rr, "after migrating: %s", restore_diag.message);
	}
	free(hashes);
	if (applied_count != NULL)
		*applied_count = applied;
	return r;
}

int sp_migrate_current_version(sqlite3 *db, int *version)
{
	int exists = 0;
	sqlite3_int64 highest = 0;
	int r;

	*version = 0;
	if (db == NULL)
		return SP_ERR_INVALID;
	if ((r = object_exists(db, "schema_migrations", &exists, NULL)) < 0)
		return r;
	if (!exists)
		return 0;
	if ((r = query_one(db, "SELECT coalesce(max(version), 0) FROM schema_migrations", &highest,
	                   NULL, 0, NULL)) < 0)
		return r;
	if (highest < 0 || highest > INT_MAX)
		return SP_ERR_VERSION;
	*version = (int)highest;
	return 0;
}
