/*
 * controller/store.h — transactions over the controller's database, tied to the change
 * feed.
 *
 * Every mutation runs between store_begin and store_commit (or store_rollback), writes
 * its audit event inside the same transaction (controller/audit.h), and on commit the
 * feed learns the newest change sequence, which the schema's triggers advanced, so long
 * polls wake within milliseconds. Statements are prepared with bound parameters only.
 *
 * The functions run on the HTTP thread, like every use of c->db.
 */
#ifndef SALLYPORT_CONTROLLER_STORE_H
#define SALLYPORT_CONTROLLER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include "controller/db.h"

#include "controller/app.h"

/* BEGIN IMMEDIATE. 0 or SP_ERR_DATABASE (diag names the store's reason). */
int store_begin(struct controller *c, struct sp_diag *diag);
/* COMMIT, then feed_publish(latest change seq). */
int store_commit(struct controller *c, struct sp_diag *diag);
/* ROLLBACK; safe when no transaction is open. */
void store_rollback(struct controller *c);

/*
 * 1 when the last statement on c->db failed because the disk holding the database is full
 * (db_storage_full), after logging one error line naming the state directory; else 0. Call it
 * before store_rollback, which resets the error.
 */
int store_is_full(struct controller *c);

/* A new random id: 32 lower-case hex digits + NUL. */
int store_new_id(char id[33]);

/* The newest change sequence number (0 when none). */
int64_t store_latest_change(struct controller *c);

/*
 * The current row of a prepared statement as a JSON object: column names as keys,
 * INTEGER as integers, NULL as null, TEXT as strings, except columns whose name ends in
 * "_json" or that are listed in json_columns (NULL-terminated), which are parsed as JSON
 * and stored under the name without the suffix. Caller releases the result.
 */
json_t *store_row_json(struct db_stmt *st, const char *const *json_columns);

#endif
