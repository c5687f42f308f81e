/*
 * controller/admin_api.h — the machinery shared by the admin REST API (/api/v1).
 *
 * Most collections are rows of one table with the same five operations: list (paged by
 * an opaque cursor, the last id seen), get, create, update (PATCH of the given fields
 * only) and delete. A collection describes itself once in a struct admin_collection:
 * the table, the SELECT that renders its objects, the fields a caller may write with
 * their types and limits, the query filters, and optional hooks for what is special
 * (an IdP group that may not be edited, a resource whose address and ports must parse).
 * The generic handlers here do the rest: request checks, one transaction per mutation
 * with its audit event (before and after), the change feed on commit, and constraint
 * violations turned into 409/404 answers that name the field.
 *
 * The modules that serve the collections (admin_resources.c, admin_identity.c,
 * admin_events.c) own their descriptors and routes; this module owns no state.
 *
 * Pure parts (limit and cursor parsing, id and text checks, field checking with unknown
 * field refusal, constraint messages) take values and return results, and are
 * unit-tested in tests/unit/controller/test_admin_api.c.
 *
 * Handlers run on the HTTP thread only, like every user of c->db.
 */
#ifndef SALLYPORT_CONTROLLER_ADMIN_API_H
#define SALLYPORT_CONTROLLER_ADMIN_API_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include "controller/db.h"

#include "controller/app.h"
#include "controller/http.h"
#include "shared/error.h"
#include "shared/secret.h"

#define ADMIN_LIMIT_DEFAULT 100u
#define ADMIN_LIMIT_MAX 1000u
/* Rows one JSON-lines export may carry; the X-Next-Cursor header continues it. */
#define ADMIN_EXPORT_MAX 100000u
/* Bytes one JSON-lines export may carry; past them the export is cut the same way. */
#define ADMIN_EXPORT_MAX_BYTES (32u << 20)

/* ---- pure helpers ---- */

/* 1 when text is an id: 32 lower-case hex digits. */
int admin_id_valid(const char *text);

/*
 * Parses the `limit` query parameter: NULL gives def; otherwise decimal 1..max.
 * SP_ERR_INVALID with a diag naming "limit" otherwise.
 */
int admin_parse_limit(const char *text, unsigned def, unsigned max, unsigned *out,
		      struct sp_diag *diag);

/* Parses a non-negative decimal integer (query values, integer cursors). */
int admin_parse_int(const char *text, const char *field, int64_t *out, struct sp_diag *diag);

/*
 * Checks a text value: length in bytes between min and max, no NUL and no control
 * characters (below 0x20, or 0x7f). The diag names `field`.
 */
int admin_text_check(const char *text, size_t len, size_t min, size_t max, const char *field,
		     struct sp_diag *diag);

enum admin_field_type {
	ADMIN_FIELD_TEXT,    /* a string, length min..max */
	ADMIN_FIELD_ID,	     /* an id of another row (ref_table), 32 hex digits */
	ADMIN_FIELD_BOOL,    /* true / false, stored as 0 / 1 */
	ADMIN_FIELD_INT,     /* an integer between min and max */
	ADMIN_FIELD_ENUM,    /* one of values[] */
	ADMIN_FIELD_ADDRESS, /* a resource address: host, pattern, IP or CIDR (canonical text) */
	ADMIN_FIELD_ALIAS,   /* a host name (normalised) */
	ADMIN_FIELD_PORTS,   /* "all" | "none" | ["22","8000-8100"], stored as canonical JSON */
};

#define ADMIN_REQUIRED 0x1u    /* must be given on create */
#define ADMIN_NULLABLE 0x2u    /* null is accepted and stored as NULL */
#define ADMIN_CREATE_ONLY 0x4u /* may be given on create but not changed afterwards */
#define ADMIN_UPDATE_ONLY 0x8u /* may be changed but not given on create */
#define ADMIN_MULTILINE 0x10u  /* TEXT: line breaks allowed (PEM) */

struct admin_field {
	const char *name;   /* JSON name */
	const char *column; /* column of the collection's table */
	enum admin_field_type type;
	unsigned flags;
	int64_t min, max;		/* TEXT: length bounds; INT: value bounds */
	const char *const *values;	/* ENUM: NULL-terminated */
	const char *ref_table;		/* ID: the table whose `id` it names */
	const char *ref_label;		/* ID: "remote network", for messages */
	json_t *(*default_value)(void); /* on create when absent; NULL: the column default */
};

/*
 * Checks a request body against the fields: every key must be a known field (creating:
 * not UPDATE_ONLY; updating: not CREATE_ONLY), of the right type and within its limits;
 * on create every REQUIRED field must be present. On success *normalized is a new object
 * holding the given fields in canonical form (addresses, aliases and port sets
 * normalised) plus defaults when creating. SP_ERR_INVALID with a diag naming the field
 * otherwise.
 */
int admin_fields_check(const json_t *body, const struct admin_field *fields, size_t count,
		       int creating, json_t **normalized, struct sp_diag *diag);

/*
 * Turns a failed store step into an HTTP status and a message, from what db_constraint
 * said of it (`columns`: its list for a UNIQUE violation, "network_id, name") and the
 * store's message: a UNIQUE violation is 409 naming the columns ("a resource with this
 * network_id and name already exists"), a FOREIGN KEY violation 409 when deleting (still
 * in use) and 404 otherwise, a rule of the schema 409 with its message, a CHECK or NOT
 * NULL violation 400, anything else 500. `label` names the collection's object.
 */
unsigned admin_constraint_status(enum db_constraint kind, const char *columns,
				 const char *store_message, const char *label, int deleting,
				 char *message, size_t message_size);

/* ---- collections ---- */

enum admin_filter_type {
	ADMIN_FILTER_TEXT, /* bound as text, 1..256 bytes */
	ADMIN_FILTER_ID,   /* an id (32 hex digits) */
	ADMIN_FILTER_INT,  /* a non-negative integer (times) */
	ADMIN_FILTER_BOOL, /* "true" or "false", bound as 1 / 0 */
};

struct admin_filter {
	const char *param; /* query parameter */
	const char *sql;   /* condition with one '?', e.g. "network_id = ?" */
	enum admin_filter_type type;
};

#define ADMIN_CREATED_AT 0x1u /* the table has created_at, set on insert */
#define ADMIN_UPDATED_AT 0x2u /* the table has updated_at, set on insert and update */

struct admin_collection {
	const char *kind;	/* audit target type and action prefix: "remote_network" */
	const char *label;	/* for messages: "remote network" */
	const char *table;	/* written by create, update, delete */
	const char *key_column; /* the table's key column: "id" */
	const char *select;	/* "SELECT ... FROM ..." rendering one object per row */
	const char *select_key; /* the key in that SELECT: "id", "s.user_id" */
	int integer_key;	/* the key is an INTEGER sequence (events) */
	const char *order;	/* "ASC" (default) or "DESC" for the listing */
	const struct admin_field *fields;
	size_t field_count;
	const struct admin_filter *filters;
	size_t filter_count;
	const char *const *json_columns; /* TEXT columns holding JSON (NULL-terminated) */
	const char *const *bool_columns; /* INTEGER 0/1 columns shown as booleans */
	unsigned timestamps;		 /* ADMIN_CREATED_AT | ADMIN_UPDATED_AT */
	int exportable;			 /* ?format=jsonl is allowed */

	/* Optional: refuse a mutation of `before` ("update", "delete"); replies itself. */
	int (*guard)(struct http_request *req, const json_t *before, const char *op);
	/* Optional: validate the whole object after a create or update is merged. */
	int (*check)(const json_t *merged, struct sp_diag *diag);
	/* Optional: more writes in the same transaction after an update. */
	int (*after_update)(struct controller *c, struct http_request *req, const char *id,
			    const json_t *before, const json_t *after, struct sp_diag *diag);
};

/* Generic handlers; each route's handler calls one with its collection. */
void admin_list(struct http_request *req, struct controller *c,
		const struct admin_collection *coll);
/* A listing restricted to rows where `scope_sql` (one '?') holds for scope_value. */
void admin_list_scoped(struct http_request *req, struct controller *c,
		       const struct admin_collection *coll, const char *scope_sql,
		       const char *scope_value);
void admin_get(struct http_request *req, struct controller *c, const struct admin_collection *coll);
void admin_create(struct http_request *req, struct controller *c,
		  const struct admin_collection *coll);
void admin_update(struct http_request *req, struct controller *c,
		  const struct admin_collection *coll);
void admin_delete(struct http_request *req, struct controller *c,
		  const struct admin_collection *coll);

/*
 * Loads one object by key into *out (a new reference). SP_ERR_NOT_FOUND when there is
 * no such row, SP_ERR_DATABASE on failure.
 */
int admin_load(struct controller *c, const struct admin_collection *coll, const char *id,
	       json_t **out);

/* The current row of `st` as the collection's object (JSON columns parsed, booleans). */
json_t *admin_row_object(struct db_stmt *st, const struct admin_collection *coll);

/*
 * The path parameter `index` as an id (32 hex digits) into out; on a malformed value
 * replies 404 naming the collection label and returns -1.
 */
int admin_path_id(struct http_request *req, size_t index, const char *label, char out[33]);

/* Records an audit event of this request's caller. 0 or SP_ERR_DATABASE. */
int admin_audit(struct controller *c, struct http_request *req, const char *action,
		const char *target_type, const char *target_id, const json_t *before,
		const json_t *after);

/* Replies for a failed store step (constraint mapping above); rolls back. */
void admin_reply_store_error(struct http_request *req, struct controller *c, const char *label,
			     int deleting);

/* Commits and replies 500 on failure. 0 or a negative error (already replied). */
int admin_commit(struct http_request *req, struct controller *c);

/* ---- connector enrollment tokens (shared with `connector-token create`) ---- */

#define ADMIN_TOKEN_TTL_DEFAULT_S (24 * 3600)
#define ADMIN_TOKEN_TTL_MIN_S 60
#define ADMIN_TOKEN_TTL_MAX_S (30 * 24 * 3600)

/*
 * Stores a one-time enrollment token for remote network `network_id` (which must exist),
 * valid for ttl_s seconds from now. The token is written to token_out (shown once, never
 * stored; only its SHA-256 is kept), the row id to id_out, and *after receives the audit
 * "after" object (no secret). Runs inside the caller's transaction.
 */
int admin_connector_token_create(struct db *db, const char *network_id, int64_t now, int64_t ttl_s,
				 char token_out[SP_SECRET_TEXT_MAX], char id_out[33],
				 json_t **after, struct sp_diag *diag);

/*
 * A route handler that only hands the request to a generic one for a collection:
 * ADMIN_HANDLER(list_users, list, users) defines list_users(req, app) calling
 * admin_list(req, app, &users).
 */
#define ADMIN_HANDLER(name, op, collection)                                                \
	static void name(struct http_request *req, void *app)                              \
	{                                                                                  \
		admin_##op(req, app, &(collection));                                       \
	}

#endif
