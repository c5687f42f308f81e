/*
 * controller/db_driver.h — what a database driver (controller/db.h) shares with the
 * wrappers: the heads of its connection and statement structs.
 *
 * A driver's connection struct starts with a `struct db` whose `driver` points at the
 * driver's table, and its statement struct starts with a `struct db_stmt` whose `db`
 * points at the connection that prepared it; the wrappers in controller/db.c dispatch
 * through those. Only drivers include this header.
 */
#ifndef SALLYPORT_CONTROLLER_DB_DRIVER_H
#define SALLYPORT_CONTROLLER_DB_DRIVER_H

#include "controller/db.h"

struct db {
	const struct db_driver *driver;
};

struct db_stmt {
	struct db *db;
};

#endif
