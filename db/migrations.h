/*
 * db/migrations.h — the schema migrations compiled into the programs.
 * sp_migrations[] holds sp_migrations_count entries in ascending version order
 * (plus a zeroed terminator); each `sql` is the whole file, run in one transaction.
 */
#ifndef SALLYPORT_DB_MIGRATIONS_H
#define SALLYPORT_DB_MIGRATIONS_H

#include <stddef.h>

struct sp_migration {
	int version;
	const char *name;
	const char *sql;
};

extern const struct sp_migration sp_migrations[];
extern const size_t sp_migrations_count;

#endif
