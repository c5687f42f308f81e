/*
 * controller/change_watch.h — notices changes committed by other processes and tells
 * the feed.
 *
 * The controller's own commits reach the feed through store_commit. Rows written by
 * anything else on the same database — the `sallyport-controller` command line, an
 * operator's database shell, or another controller replica sharing the store — fill the
 * `changes` table through the schema's triggers but publish nothing. This watcher closes
 * that gap: a thread with its own read-only connection (controller/db.h) reads
 * `SELECT max(seq) FROM changes` every `interval_ms` (an index lookup on the rowid) and
 * calls feed_publish when it grew, so parked long polls learn such a change within one
 * interval. It never writes and never touches the HTTP thread's connection.
 *
 * Ownership: the controller owns the watcher; change_watch_stop joins the thread and
 * closes its connection, and must run before the feed it publishes to is freed.
 */
#ifndef SALLYPORT_CONTROLLER_CHANGE_WATCH_H
#define SALLYPORT_CONTROLLER_CHANGE_WATCH_H

#include "controller/db.h"
#include "controller/feed.h"
#include "shared/error.h"

#define CHANGE_WATCH_DEFAULT_INTERVAL_MS 50

struct change_watch;

/*
 * Opens `db_path` read-only through `driver` (the one of the controller's own
 * connection) and starts the thread. interval_ms 0 means the default.
 */
int change_watch_start(const struct db_driver *driver, const char *db_path, struct feed *feed,
		       unsigned interval_ms, struct change_watch **out, struct sp_diag *diag);
/* Stops the thread and closes the connection. Safe on NULL. */
void change_watch_stop(struct change_watch *watch);

#endif
