/* controller/audit.c — see audit.h. */
#include "controller/audit.h"

#include <stdlib.h>

#include "shared/error.h"

static void bind_optional_text(struct db_stmt *st, int index, const char *value)
{
	if (value != NULL && value[0] != '\0')
		db_bind_text(st, index, value, -1, DB_TRANSIENT);
	else
		db_bind_null(st, index);
}

static void bind_optional_json(struct db_stmt *st, int index, const json_t *value)
{
	char *text = value != NULL ? json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	if (text != NULL)
		db_bind_text(st, index, text, -1, DB_TRANSIENT);
	else
		db_bind_null(st, index);
	free(text);
}

int audit_record(struct db *db, const struct audit_event *e)
{
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE;
	if (db_prepare(db,
		       "INSERT INTO audit_events (time, actor_type, actor_id, actor_label,"
		       " action, outcome, target_type, target_id, before_json, after_json,"
		       " request_id, source_address)"
		       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
		       &st) != 0)
		return r;
	db_bind_int64(st, 1, e->time);
	db_bind_text(st, 2, e->actor_type != NULL ? e->actor_type : "system", -1, DB_STATIC);
	bind_optional_text(st, 3, e->actor_id);
	bind_optional_text(st, 4, e->actor_label);
	db_bind_text(st, 5, e->action, -1, DB_STATIC);
	db_bind_text(st, 6, e->outcome != NULL ? e->outcome : "success", -1, DB_STATIC);
	bind_optional_text(st, 7, e->target_type);
	bind_optional_text(st, 8, e->target_id);
	bind_optional_json(st, 9, e->before);
	bind_optional_json(st, 10, e->after);
	bind_optional_text(st, 11, e->request_id);
	bind_optional_text(st, 12, e->source_address);
	if (db_step(st) == DB_DONE)
		r = 0;
	db_finalize(st);
	return r;
}

void audit_from_request(struct audit_event *event, const struct http_request *req)
{
	event->actor_type = req->actor_type != NULL ? req->actor_type : "system";
	event->actor_id = req->actor_id;
	event->actor_label = req->actor_label;
	event->request_id = req->request_id;
	event->source_address = req->client_address;
}
