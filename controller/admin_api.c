/* controller/admin_api.c — see admin_api.h. */
#include "controller/admin_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "controller/audit.h"
#include "controller/store.h"
#include "shared/buf.h"
#include "shared/portset.h"
#include "shared/resource.h"

/* ---- pure helpers ---- */

int admin_id_valid(const char *text)
{
	if (text == NULL || strlen(text) != 32)
		return 0;
	for (size_t i = 0; i < 32; i++)
		if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
			return 0;
	return 1;
}

int admin_parse_int(const char *text, const char *field, int64_t *out, struct sp_diag *diag)
{
	*out = 0;
	size_t len = text != NULL ? strlen(text) : 0;
	if (len == 0 || len > 18)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s must be a non-negative integer",
				   field);
	int64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (text[i] < '0' || text[i] > '9')
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "%s must be a non-negative integer", field);
		v = v * 10 + (text[i] - '0');
	}
	*out = v;
	return 0;
}

int admin_parse_limit(const char *text, unsigned def, unsigned max, unsigned *out,
		      struct sp_diag *diag)
{
	*out = def;
	if (text == NULL)
		return 0;
	int64_t v = 0;
	if (admin_parse_int(text, "limit", &v, NULL) < 0 || v < 1 || v > (int64_t)max) {
		*out = def;
		return sp_diag_set(diag, SP_ERR_INVALID, "limit must be an integer from 1 to %u",
				   max);
	}
	*out = (unsigned)v;
	return 0;
}

int admin_text_check(const char *text, size_t len, size_t min, size_t max, const char *field,
		     struct sp_diag *diag)
{
	if (strlen(text) != len)
		return sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\" holds a NUL character",
				   field);
	if (len < min || len > max)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "field \"%s\" must be %zu to %zu bytes long", field, min, max);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "field \"%s\" holds a control character at byte %zu",
					   field, i + 1);
	return 0;
}

static const struct admin_field *find_field(const struct admin_field *fields, size_t count,
					    const char *name)
{
	for (size_t i = 0; i < count; i++)
		if (strcmp(fields[i].name, name) == 0)
			return &fields[i];
	return NULL;
}

/* Checks one value and returns its canonical form (a new reference) in *out. */
static int field_value(const struct admin_field *f, json_t *value, json_t **out,
		       struct sp_diag *diag)
{
	*out = NULL;
	if (json_is_null(value)) {
		if (!(f->flags & ADMIN_NULLABLE))
			return sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\" must not be null",
					   f->name);
		*out = json_null();
		return 0;
	}
	switch (f->type) {
	case ADMIN_FIELD_BOOL:
		if (!json_is_boolean(value))
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "field \"%s\" must be true or false", f->name);
		*out = json_incref(value);
		return 0;
	case ADMIN_FIELD_INT: {
		if (!json_is_integer(value))
			return sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\" must be an integer",
					   f->name);
		json_int_t v = json_integer_value(value);
		if (v < f->min || v > f->max)
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "field \"%s\" must be between %lld and %lld", f->name,
					   (long long)f->min, (long long)f->max);
		*out = json_incref(value);
		return 0;
	}
	case ADMIN_FIELD_PORTS: {
		struct sp_portset set = {0};
		json_t *canonical = NULL;
		int r = sp_portset_from_json(value, f->name, &set, diag);
		if (r == 0)
			r = sp_portset_to_json(&set, &canonical);
		sp_portset_free(&set);
		if (r < 0)
			return r == SP_ERR_TOO_LARGE ? sp_diag_set(diag, SP_ERR_INVALID,
								   "field \"%s\" "
								   "lists too many ports",
								   f->name)
						     : r;
		*out = canonical;
		return 0;
	}
	default:
		break;
	}
	if (!json_is_string(value))
		return sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\" must be a string", f->name);
	const char *s = json_string_value(value);
	size_t len = json_string_length(value);
	int r;
	switch (f->type) {
	case ADMIN_FIELD_TEXT:
		if (f->flags & ADMIN_MULTILINE) {
			/* Line breaks are allowed; every other control character is still refused.
			 */
			char *copy = malloc(len + 1);
			if (copy == NULL)
				return SP_ERR_NOMEM;
			memcpy(copy, s, len + 1);
			for (size_t i = 0; i < len; i++)
				if (copy[i] == '\n' || copy[i] == '\r')
					copy[i] = ' ';
			r = admin_text_check(copy, len, (size_t)f->min, (size_t)f->max, f->name,
					     diag);
			free(copy);
		} else {
			r = admin_text_check(s, len, (size_t)f->min, (size_t)f->max, f->name, diag);
		}
		if (r < 0)
			return r;
		*out = json_incref(value);
		return 0;
	case ADMIN_FIELD_ID:
		if (strlen(s) != len || !admin_id_valid(s))
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "field \"%s\" must be an id (32 lower-case hex digits)",
					   f->name);
		*out = json_incref(value);
		return 0;
	case ADMIN_FIELD_ENUM:
		for (size_t i = 0; f->values != NULL && f->values[i] != NULL; i++)
			if (strlen(s) == len && strcmp(s, f->values[i]) == 0) {
				*out = json_incref(value);
				return 0;
			}
		return sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\" must be one of: %s%s%s%s%s",
				   f->name, f->values[0], f->values[1] ? ", " : "",
				   f->values[1] ? f->values[1] : "",
				   f->values[1] && f->values[2] ? ", " : "",
				   f->values[1] && f->values[2] ? f->values[2] : "");
	case ADMIN_FIELD_ADDRESS: {
		struct sp_resource_address address;
		struct sp_diag inner = {{0}};
		char text[SP_RESOURCE_ADDRESS_TEXT_MAX];
		if (strlen(s) != len)
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "field \"%s\" holds a NUL character", f->name);
		r = sp_resource_address_parse(s, &address, &inner);
		if (r < 0)
			return sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\": %s", f->name,
					   inner.message);
		r = sp_resource_address_format(&address, text, sizeof(text));
		sp_resource_address_free(&address);
		if (r < 0)
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "field \"%s\" cannot be written back", f->name);
		*out = json_string(text);
		return *out != NULL ? 0 : SP_ERR_NOMEM;
	}
	case ADMIN_FIELD_ALIAS: {
		char normal[SP_RESOURCE_NAME_BUF];
		size_t normal_len = 0;
		struct sp_diag inner = {{0}};
		if (strlen(s) != len)
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "field \"%s\" holds a NUL character", f->name);
		if (sp_resource_name_normalize(s, normal, &normal_len, &inner) < 0)
			return sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\": %s", f->name,
					   inner.message);
		*out = json_stringn(normal, normal_len);
		return *out != NULL ? 0 : SP_ERR_NOMEM;
	}
	default:
		return SP_ERR_INTERNAL;
	}
}

int admin_fields_check(const json_t *body, const struct admin_field *fields, size_t count,
		       int creating, json_t **normalized, struct sp_diag *diag)
{
	*normalized = NULL;
	if (!json_is_object(body))
		return sp_diag_set(diag, SP_ERR_INVALID, "the request body must be a JSON object");
	json_t *out = json_object();
	if (out == NULL)
		return SP_ERR_NOMEM;
	int r = 0;
	const char *key;
	json_t *value;
	json_t *mutable_body = (json_t *)body; /* jansson's iteration only reads it here */
	json_object_foreach (mutable_body, key, value) {
		const struct admin_field *f = find_field(fields, count, key);
		if (f == NULL || (creating && (f->flags & ADMIN_UPDATE_ONLY))) {
			r = sp_diag_set(diag, SP_ERR_INVALID, "unknown field \"%.64s\"", key);
			goto out;
		}
		if (!creating && (f->flags & ADMIN_CREATE_ONLY)) {
			r = sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\" cannot be changed",
					key);
			goto out;
		}
		json_t *canonical = NULL;
		if ((r = field_value(f, value, &canonical, diag)) < 0)
			goto out;
		if (json_object_set_new(out, f->name, canonical) < 0) {
			r = SP_ERR_NOMEM;
			goto out;
		}
	}
	for (size_t i = 0; creating && i < count; i++) {
		if (json_object_get(out, fields[i].name) != NULL)
			continue;
		if (fields[i].flags & ADMIN_REQUIRED) {
			r = sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\" is missing",
					fields[i].name);
			goto out;
		}
		if (fields[i].default_value != NULL &&
		    json_object_set_new(out, fields[i].name, fields[i].default_value()) < 0) {
			r = SP_ERR_NOMEM;
			goto out;
		}
	}
out:
	if (r < 0)
		json_decref(out);
	else
		*normalized = out;
	return r;
}

unsigned admin_constraint_status(enum db_constraint kind, const char *columns,
				 const char *store_message, const char *label, int deleting,
				 char *message, size_t message_size)
{
	const char *msg = store_message != NULL ? store_message : "";
	switch (kind) {
	case DB_CONSTRAINT_UNIQUE: {
		/* "network_id, name" reads "network_id and name" */
		char names[200] = "";
		size_t used = 0;
		const char *p = columns != NULL ? columns : "";
		while (*p != '\0') {
			const char *end = strchr(p, ',');
			size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
			int n = snprintf(names + used, sizeof(names) - used, "%s%.*s",
					 used > 0 ? " and " : "", (int)len, p);
			if (n < 0 || (size_t)n >= sizeof(names) - used) {
				names[used] = '\0';
				break;
			}
			used += (size_t)n;
			if (end == NULL)
				break;
			p = end + 1;
			while (*p == ' ')
				p++;
		}
		if (used > 0)
			snprintf(message, message_size, "a %s with this %s already exists", label,
				 names);
		else
			snprintf(message, message_size, "this %s already exists", label);
		return 409;
	}
	case DB_CONSTRAINT_RULE:
		snprintf(message, message_size, "the %s cannot be changed: %s", label, msg);
		return 409;
	case DB_CONSTRAINT_FOREIGN_KEY:
		if (deleting) {
			snprintf(message, message_size,
				 "the %s is still in use; remove what refers to "
				 "it first",
				 label);
			return 409;
		}
		snprintf(message, message_size, "the %s refers to something that does not exist",
			 label);
		return 404;
	case DB_CONSTRAINT_CHECK:
		snprintf(message, message_size, "a value of the %s is not allowed (%s)", label,
			 msg);
		return 400;
	default:
		snprintf(message, message_size, "the store failed: %s", msg);
		return 500;
	}
}

/* ---- store helpers ---- */

static int listed(const char *name, const char *const *list)
{
	for (size_t i = 0; list != NULL && list[i] != NULL; i++)
		if (strcmp(name, list[i]) == 0)
			return 1;
	return 0;
}

json_t *admin_row_object(struct db_stmt *st, const struct admin_collection *coll)
{
	json_t *row = store_row_json(st, coll->json_columns);
	if (row == NULL)
		return NULL;
	const char *key;
	json_t *value;
	json_object_foreach (row, key, value) {
		if (listed(key, coll->bool_columns) && json_is_integer(value))
			json_object_set_new(row, key, json_boolean(json_integer_value(value) != 0));
	}
	return row;
}

int admin_load(struct controller *c, const struct admin_collection *coll, const char *id,
	       json_t **out)
{
	*out = NULL;
	struct sp_buf sql;
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE;
	sp_buf_init(&sql, 8192);
	if (sp_buf_printf(&sql, "%s WHERE %s = ?", coll->select, coll->select_key) < 0 ||
	    sp_buf_cstr(&sql) == NULL)
		goto out;
	if (db_prepare(c->db, (const char *)sql.data, &st) != 0)
		goto out;
	if (coll->integer_key) {
		int64_t n = 0;
		if (admin_parse_int(id, "id", &n, NULL) < 0) {
			r = SP_ERR_NOT_FOUND;
			goto out;
		}
		db_bind_int64(st, 1, n);
	} else {
		db_bind_text(st, 1, id, -1, DB_TRANSIENT);
	}
	int step = db_step(st);
	if (step == DB_ROW) {
		*out = admin_row_object(st, coll);
		r = *out != NULL ? 0 : SP_ERR_NOMEM;
	} else if (step == DB_DONE) {
		r = SP_ERR_NOT_FOUND;
	}
out:
	db_finalize(st);
	sp_buf_free(&sql);
	return r;
}

int admin_path_id(struct http_request *req, size_t index, const char *label, char out[33])
{
	const char *p = router_param(&req->match, index);
	out[0] = '\0';
	if (!admin_id_valid(p)) {
		http_reply_error(req, 404, "not_found", "there is no %s with id \"%.40s\"", label,
				 p);
		return -1;
	}
	memcpy(out, p, 33);
	return 0;
}

int admin_audit(struct controller *c, struct http_request *req, const char *action,
		const char *target_type, const char *target_id, const json_t *before,
		const json_t *after)
{
	struct audit_event e = {.time = c->now(),
				.action = action,
				.target_type = target_type,
				.target_id = target_id,
				.before = before,
				.after = after};
	audit_from_request(&e, req);
	return audit_record(c->db, &e);
}

void admin_reply_store_error(struct http_request *req, struct controller *c, const char *label,
			     int deleting)
{
	char message[400];
	if (store_is_full(c)) {
		store_rollback(c);
		http_reply_error(req, 507, "insufficient_storage",
				 "the database disk is full: the %s change was not saved", label);
		return;
	}
	char columns[200];
	enum db_constraint kind = db_constraint(c->db, columns, sizeof(columns));
	unsigned status = admin_constraint_status(kind, columns, db_errmsg(c->db), label, deleting,
						  message, sizeof(message));
	store_rollback(c);
	http_reply_error(req, status,
			 status == 409	 ? "conflict"
			 : status == 404 ? "not_found"
			 : status == 400 ? "invalid"
					 : "internal",
			 "%s", message);
}

int admin_commit(struct http_request *req, struct controller *c)
{
	struct sp_diag d = {{0}};
	int r = store_commit(c, &d);
	if (r == SP_ERR_IO)
		http_reply_error(req, 507, "insufficient_storage", "%s", d.message);
	else if (r < 0)
		http_reply_error(req, 500, "internal", "%s", d.message);
	return r;
}

/* ---- listing ---- */

static int bind_filter(struct db_stmt *st, int index, const struct admin_filter *f,
		       const char *value, struct sp_diag *diag)
{
	int64_t n = 0;
	switch (f->type) {
	case ADMIN_FILTER_ID:
		if (!admin_id_valid(value))
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "%s must be an id (32 lower-case hex digits)", f->param);
		break;
	case ADMIN_FILTER_INT:
		if (admin_parse_int(value, f->param, &n, diag) < 0)
			return SP_ERR_INVALID;
		db_bind_int64(st, index, n);
		return 0;
	case ADMIN_FILTER_BOOL:
		if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0)
			return sp_diag_set(diag, SP_ERR_INVALID, "%s must be true or false",
					   f->param);
		db_bind_int(st, index, strcmp(value, "true") == 0);
		return 0;
	case ADMIN_FILTER_TEXT:
		if (admin_text_check(value, strlen(value), 1, 256, f->param, diag) < 0)
			return SP_ERR_INVALID;
		break;
	}
	db_bind_text(st, index, value, -1, DB_TRANSIENT);
	return 0;
}

static void list_rows(struct http_request *req, struct controller *c,
		      const struct admin_collection *coll, const char *scope_sql,
		      const char *scope_value)
{
	struct sp_diag d = {{0}};
	struct sp_buf sql;
	struct db_stmt *st = NULL;
	json_t *items = NULL;
	struct sp_buf lines;
	sp_buf_init(&sql, 8192);
	sp_buf_init(&lines, 0);

	/* An unknown or repeated parameter is refused: a misspelt filter would otherwise
	 * widen the listing to everything (and a script acting on it with it). */
	const char *known[40] = {"format", "limit", "cursor"};
	size_t nknown = 3;
	for (size_t i = 0; i < coll->filter_count && nknown + 1 < sizeof(known) / sizeof(known[0]);
	     i++)
		known[nknown++] = coll->filters[i].param;
	known[nknown] = NULL;
	const char *unexpected = http_query_unexpected(req, known);
	if (unexpected != NULL) {
		http_reply_error(req, 400, "invalid", "query parameter \"%.64s\" is unknown here or "
		                 "given twice", unexpected);
		goto out;
	}
	const char *format = http_query(req, "format");
	int jsonl = 0;
	if (format != NULL) {
		if (!coll->exportable || strcmp(format, "jsonl") != 0) {
			http_reply_error(req, 400, "invalid", "format must be %s",
					 coll->exportable
					     ? "\"jsonl\" (or absent for JSON)"
					     : "absent: this collection has no export");
			goto out;
		}
		jsonl = 1;
	}
	unsigned limit = 0;
	if (admin_parse_limit(http_query(req, "limit"),
			      jsonl ? ADMIN_EXPORT_MAX : ADMIN_LIMIT_DEFAULT,
			      jsonl ? ADMIN_EXPORT_MAX : ADMIN_LIMIT_MAX, &limit, &d) < 0) {
		http_reply_error(req, 400, "invalid", "%s", d.message);
		goto out;
	}
	const char *cursor = http_query(req, "cursor");
	int64_t cursor_n = 0;
	if (cursor != NULL &&
	    (coll->integer_key ? admin_parse_int(cursor, "cursor", &cursor_n, NULL) < 0
			       : !admin_id_valid(cursor))) {
		http_reply_error(req, 400, "invalid", "cursor is not one this API handed out");
		goto out;
	}
	int descending = coll->order != NULL && strcmp(coll->order, "DESC") == 0;
	int r = sp_buf_printf(&sql, "%s WHERE 1 = 1", coll->select);
	if (scope_sql != NULL)
		r |= sp_buf_printf(&sql, " AND %s", scope_sql);
	for (size_t i = 0; i < coll->filter_count; i++)
		if (http_query(req, coll->filters[i].param) != NULL)
			r |= sp_buf_printf(&sql, " AND %s", coll->filters[i].sql);
	if (cursor != NULL)
		r |= sp_buf_printf(&sql, " AND %s %s ?", coll->select_key, descending ? "<" : ">");
	r |= sp_buf_printf(&sql, " ORDER BY %s %s LIMIT ?", coll->select_key,
			   descending ? "DESC" : "ASC");
	if (r != 0 || sp_buf_cstr(&sql) == NULL ||
	    db_prepare(c->db, (const char *)sql.data, &st) != 0) {
		http_reply_error(req, 500, "internal", "the listing could not be prepared");
		goto out;
	}
	int index = 1;
	if (scope_sql != NULL)
		db_bind_text(st, index++, scope_value, -1, DB_TRANSIENT);
	for (size_t i = 0; i < coll->filter_count; i++) {
		const char *value = http_query(req, coll->filters[i].param);
		if (value == NULL)
			continue;
		if (bind_filter(st, index++, &coll->filters[i], value, &d) < 0) {
			http_reply_error(req, 400, "invalid", "%s", d.message);
			goto out;
		}
	}
	if (cursor != NULL) {
		if (coll->integer_key)
			db_bind_int64(st, index++, cursor_n);
		else
			db_bind_text(st, index++, cursor, -1, DB_TRANSIENT);
	}
	db_bind_int64(st, index, (int64_t)limit + 1);

	items = json_array();
	unsigned rows = 0;
	char next[40] = "", last[40] = "";
	int step;
	while ((step = db_step(st)) == DB_ROW) {
		if (rows == limit) {
			rows++; /* one more exists: the page continues */
			break;
		}
		json_t *row = admin_row_object(st, coll);
		if (row == NULL) {
			http_reply_error(req, 500, "internal", "a row could not be encoded");
			goto out;
		}
		memcpy(last, next, sizeof(last));
		/* Every collection's SELECT names its key first. */
		if (coll->integer_key)
			snprintf(next, sizeof(next), "%lld", (long long)db_column_int64(st, 0));
		else
			snprintf(next, sizeof(next), "%s", (const char *)db_column_text(st, 0));
		if (jsonl) {
			char *text = json_dumps(row, JSON_COMPACT);
			if (text != NULL && rows > 0 &&
			    lines.len + strlen(text) + 1 > ADMIN_EXPORT_MAX_BYTES) {
				/* Full: end here; X-Next-Cursor continues after the last line sent.
				 */
				free(text);
				json_decref(row);
				memcpy(next, last, sizeof(next));
				rows = limit + 1;
				break;
			}
			int put = text != NULL ? sp_buf_put_str(&lines, text) : SP_ERR_NOMEM;
			if (put == 0)
				put = sp_buf_put_u8(&lines, '\n');
			free(text);
			json_decref(row);
			if (put < 0) {
				http_reply_error(req, 500, "internal",
						 "the export could not be encoded");
				goto out;
			}
		} else {
			json_array_append_new(items, row);
		}
		rows++;
	}
	if (step != DB_ROW && step != DB_DONE) {
		http_reply_error(req, 500, "internal", "the listing failed: %s", db_errmsg(c->db));
		goto out;
	}
	int more = rows > limit;
	if (jsonl) {
		http_reply_text(req, 200, "application/x-ndjson",
				lines.len > 0 ? (const char *)lines.data : "", lines.len);
		if (more)
			http_add_header(req, "X-Next-Cursor", next);
		goto out;
	}
	http_reply_json(req, 200,
			json_pack("{s:O, s:o}", "items", items, "next_cursor",
				  more ? json_string(next) : json_null()));
out:
	json_decref(items);
	db_finalize(st);
	sp_buf_free(&sql);
	sp_buf_free(&lines);
}

void admin_list(struct http_request *req, struct controller *c, const struct admin_collection *coll)
{
	list_rows(req, c, coll, NULL, NULL);
}

void admin_list_scoped(struct http_request *req, struct controller *c,
		       const struct admin_collection *coll, const char *scope_sql,
		       const char *scope_value)
{
	list_rows(req, c, coll, scope_sql, scope_value);
}

/* The id in the path, checked as the collection's key; replies 404 itself. */
static int path_key(struct http_request *req, const struct admin_collection *coll, char out[40])
{
	const char *p = router_param(&req->match, 0);
	int64_t n = 0;
	if (coll->integer_key ? admin_parse_int(p, "id", &n, NULL) < 0 : !admin_id_valid(p)) {
		http_reply_error(req, 404, "not_found", "there is no %s with id \"%.40s\"",
				 coll->label, p);
		return -1;
	}
	snprintf(out, 40, "%s", p);
	return 0;
}

void admin_get(struct http_request *req, struct controller *c, const struct admin_collection *coll)
{
	char id[40];
	json_t *obj = NULL;
	if (path_key(req, coll, id) < 0)
		return;
	int r = admin_load(c, coll, id, &obj);
	if (r == SP_ERR_NOT_FOUND)
		http_reply_error(req, 404, "not_found", "there is no %s with id \"%s\"",
				 coll->label, id);
	else if (r < 0)
		http_reply_error(req, 500, "internal", "the %s could not be read", coll->label);
	else
		http_reply_json(req, 200, obj);
}

/* ---- writing ---- */

static int bind_field(struct db_stmt *st, int index, const struct admin_field *f,
		      const json_t *value)
{
	if (json_is_null(value))
		return db_bind_null(st, index);
	switch (f->type) {
	case ADMIN_FIELD_BOOL:
		return db_bind_int(st, index, json_is_true(value));
	case ADMIN_FIELD_INT:
		return db_bind_int64(st, index, (int64_t)json_integer_value(value));
	case ADMIN_FIELD_PORTS: {
		char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
		int r =
		    text != NULL ? db_bind_text(st, index, text, -1, DB_TRANSIENT) : SP_ERR_NOMEM;
		free(text);
		return r;
	}
	default:
		return db_bind_text(st, index, json_string_value(value), -1, DB_TRANSIENT);
	}
}

/*
 * Every ID field that names another row must name an existing one: 404 naming the
 * field (checked inside the transaction, so it cannot change before the write).
 */
static int check_references(struct http_request *req, struct controller *c,
			    const struct admin_collection *coll, const json_t *values)
{
	for (size_t i = 0; i < coll->field_count; i++) {
		const struct admin_field *f = &coll->fields[i];
		const json_t *v = json_object_get(values, f->name);
		if (f->type != ADMIN_FIELD_ID || f->ref_table == NULL || !json_is_string(v))
			continue;
		char sql[160];
		snprintf(sql, sizeof(sql), "SELECT 1 FROM %s WHERE id = ?", f->ref_table);
		struct db_stmt *st = NULL;
		int found = -1;
		if (db_prepare(c->db, sql, &st) == 0) {
			db_bind_text(st, 1, json_string_value(v), -1, DB_TRANSIENT);
			int step = db_step(st);
			found = step == DB_ROW ? 1 : step == DB_DONE ? 0 : -1;
		}
		db_finalize(st);
		if (found < 0) {
			http_reply_error(req, 500, "internal", "the store failed: %s",
					 db_errmsg(c->db));
			return -1;
		}
		if (found == 0) {
			http_reply_error(req, 404, "not_found",
					 "field \"%s\": there is no %s with id \"%s\"", f->name,
					 f->ref_label, json_string_value(v));
			return -1;
		}
	}
	return 0;
}

/* Parses and checks the body; replies 4xx itself and returns NULL on failure. */
static json_t *checked_body(struct http_request *req, const struct admin_collection *coll,
			    int creating)
{
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return NULL;
	json_t *values = NULL;
	struct sp_diag d = {{0}};
	if (admin_fields_check(body, coll->fields, coll->field_count, creating, &values, &d) < 0)
		http_reply_error(req, 400, "invalid", "%s", d.message);
	else if (!creating && json_object_size(values) == 0) {
		http_reply_error(req, 400, "invalid", "the body names no field to change");
		json_decref(values);
		values = NULL;
	}
	json_decref(body);
	return values;
}

/* Runs the collection's whole-object check on `base` with `values` merged over it. */
static int check_merged(struct http_request *req, const struct admin_collection *coll,
			const json_t *base, const json_t *values)
{
	if (coll->check == NULL)
		return 0;
	json_t *merged = base != NULL ? json_deep_copy(base) : json_object();
	struct sp_diag d = {{0}};
	int r =
	    merged != NULL && json_object_update(merged, (json_t *)values) == 0 ? 0 : SP_ERR_NOMEM;
	if (r == 0)
		r = coll->check(merged, &d);
	json_decref(merged);
	if (r < 0)
		http_reply_error(req, r == SP_ERR_NOMEM ? 500 : 400,
				 r == SP_ERR_NOMEM ? "internal" : "invalid", "%s",
				 r == SP_ERR_NOMEM ? "out of memory" : d.message);
	return r;
}

static void action_name(char *out, size_t size, const struct admin_collection *coll,
			const char *verb)
{
	snprintf(out, size, "%s.%s", coll->kind, verb);
}

void admin_create(struct http_request *req, struct controller *c,
		  const struct admin_collection *coll)
{
	json_t *values = checked_body(req, coll, 1), *after = NULL;
	struct sp_buf sql;
	struct db_stmt *st = NULL;
	char id[33];
	sp_buf_init(&sql, 8192);
	if (values == NULL)
		goto out;
	if (check_merged(req, coll, NULL, values) < 0)
		goto out;
	if (store_new_id(id) < 0) {
		http_reply_error(req, 500, "internal", "no id could be made");
		goto out;
	}
	int r = sp_buf_printf(&sql, "INSERT INTO %s (%s", coll->table, coll->key_column);
	size_t n = 0;
	for (size_t i = 0; i < coll->field_count; i++)
		if (json_object_get(values, coll->fields[i].name) != NULL) {
			r |= sp_buf_printf(&sql, ", %s", coll->fields[i].column);
			n++;
		}
	if (coll->timestamps & ADMIN_CREATED_AT)
		r |= sp_buf_put_str(&sql, ", created_at");
	if (coll->timestamps & ADMIN_UPDATED_AT)
		r |= sp_buf_put_str(&sql, ", updated_at");
	r |= sp_buf_put_str(&sql, ") VALUES (?");
	size_t extra = n + ((coll->timestamps & ADMIN_CREATED_AT) != 0) +
		       ((coll->timestamps & ADMIN_UPDATED_AT) != 0);
	for (size_t i = 0; i < extra; i++)
		r |= sp_buf_put_str(&sql, ", ?");
	r |= sp_buf_put_str(&sql, ")");
	if (r != 0 || sp_buf_cstr(&sql) == NULL) {
		http_reply_error(req, 500, "internal", "the statement could not be built");
		goto out;
	}
	struct sp_diag d = {{0}};
	if (store_begin(c, &d) < 0) {
		http_reply_error(req, 503, "unavailable", "%s", d.message);
		goto out;
	}
	if (check_references(req, c, coll, values) < 0) {
		store_rollback(c);
		goto out;
	}
	if (db_prepare(c->db, (const char *)sql.data, &st) != 0) {
		admin_reply_store_error(req, c, coll->label, 0);
		goto out;
	}
	int index = 1;
	int64_t now = c->now();
	db_bind_text(st, index++, id, -1, DB_TRANSIENT);
	for (size_t i = 0; i < coll->field_count; i++) {
		const json_t *v = json_object_get(values, coll->fields[i].name);
		if (v != NULL)
			bind_field(st, index++, &coll->fields[i], v);
	}
	if (coll->timestamps & ADMIN_CREATED_AT)
		db_bind_int64(st, index++, now);
	if (coll->timestamps & ADMIN_UPDATED_AT)
		db_bind_int64(st, index++, now);
	if (db_step(st) != DB_DONE) {
		admin_reply_store_error(req, c, coll->label, 0);
		goto out;
	}
	char action[80];
	action_name(action, sizeof(action), coll, "create");
	if (admin_load(c, coll, id, &after) < 0 ||
	    admin_audit(c, req, action, coll->kind, id, NULL, after) < 0) {
		admin_reply_store_error(req, c, coll->label, 0);
		goto out;
	}
	if (admin_commit(req, c) < 0)
		goto out;
	http_reply_json(req, 201, after);
	after = NULL;
out:
	db_finalize(st);
	sp_buf_free(&sql);
	json_decref(values);
	json_decref(after);
}

/* Loads the row named by the path inside the transaction; replies itself on failure. */
static json_t *load_for_change(struct http_request *req, struct controller *c,
			       const struct admin_collection *coll, const char *id)
{
	json_t *before = NULL;
	int r = admin_load(c, coll, id, &before);
	if (r == SP_ERR_NOT_FOUND) {
		store_rollback(c);
		http_reply_error(req, 404, "not_found", "there is no %s with id \"%s\"",
				 coll->label, id);
		return NULL;
	}
	if (r < 0) {
		store_rollback(c);
		http_reply_error(req, 500, "internal", "the %s could not be read", coll->label);
		return NULL;
	}
	return before;
}

void admin_update(struct http_request *req, struct controller *c,
		  const struct admin_collection *coll)
{
	char id[40];
	json_t *values = NULL, *before = NULL, *after = NULL;
	struct sp_buf sql;
	struct db_stmt *st = NULL;
	sp_buf_init(&sql, 8192);
	if (path_key(req, coll, id) < 0)
		goto out;
	if ((values = checked_body(req, coll, 0)) == NULL)
		goto out;
	int r = sp_buf_printf(&sql, "UPDATE %s SET ", coll->table);
	size_t n = 0;
	for (size_t i = 0; i < coll->field_count; i++)
		if (json_object_get(values, coll->fields[i].name) != NULL)
			r |= sp_buf_printf(&sql, "%s%s = ?", n++ > 0 ? ", " : "",
					   coll->fields[i].column);
	if (coll->timestamps & ADMIN_UPDATED_AT)
		r |= sp_buf_put_str(&sql, ", updated_at = ?");
	r |= sp_buf_printf(&sql, " WHERE %s = ?", coll->key_column);
	if (r != 0 || sp_buf_cstr(&sql) == NULL) {
		http_reply_error(req, 500, "internal", "the statement could not be built");
		goto out;
	}
	struct sp_diag d = {{0}};
	if (store_begin(c, &d) < 0) {
		http_reply_error(req, 503, "unavailable", "%s", d.message);
		goto out;
	}
	if ((before = load_for_change(req, c, coll, id)) == NULL)
		goto out;
	if (coll->guard != NULL && coll->guard(req, before, "update") != 0) {
		store_rollback(c);
		goto out;
	}
	if (check_merged(req, coll, before, values) < 0 ||
	    check_references(req, c, coll, values) < 0) {
		store_rollback(c);
		goto out;
	}
	if (db_prepare(c->db, (const char *)sql.data, &st) != 0) {
		admin_reply_store_error(req, c, coll->label, 0);
		goto out;
	}
	int index = 1;
	for (size_t i = 0; i < coll->field_count; i++) {
		const json_t *v = json_object_get(values, coll->fields[i].name);
		if (v != NULL)
			bind_field(st, index++, &coll->fields[i], v);
	}
	if (coll->timestamps & ADMIN_UPDATED_AT)
		db_bind_int64(st, index++, c->now());
	db_bind_text(st, index, id, -1, DB_TRANSIENT);
	if (db_step(st) != DB_DONE) {
		admin_reply_store_error(req, c, coll->label, 0);
		goto out;
	}
	char action[80];
	action_name(action, sizeof(action), coll, "update");
	if (admin_load(c, coll, id, &after) < 0 ||
	    (coll->after_update != NULL && coll->after_update(c, req, id, before, after, &d) < 0) ||
	    admin_audit(c, req, action, coll->kind, id, before, after) < 0) {
		admin_reply_store_error(req, c, coll->label, 0);
		goto out;
	}
	if (admin_commit(req, c) < 0)
		goto out;
	http_reply_json(req, 200, after);
	after = NULL;
out:
	db_finalize(st);
	sp_buf_free(&sql);
	json_decref(values);
	json_decref(before);
	json_decref(after);
}

void admin_delete(struct http_request *req, struct controller *c,
		  const struct admin_collection *coll)
{
	char id[40];
	json_t *before = NULL;
	struct db_stmt *st = NULL;
	char sql[160];
	if (path_key(req, coll, id) < 0)
		return;
	struct sp_diag d = {{0}};
	if (store_begin(c, &d) < 0) {
		http_reply_error(req, 503, "unavailable", "%s", d.message);
		return;
	}
	if ((before = load_for_change(req, c, coll, id)) == NULL)
		return;
	if (coll->guard != NULL && coll->guard(req, before, "delete") != 0) {
		store_rollback(c);
		goto out;
	}
	snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE %s = ?", coll->table, coll->key_column);
	if (db_prepare(c->db, sql, &st) != 0) {
		admin_reply_store_error(req, c, coll->label, 1);
		goto out;
	}
	db_bind_text(st, 1, id, -1, DB_TRANSIENT);
	if (db_step(st) != DB_DONE) {
		admin_reply_store_error(req, c, coll->label, 1);
		goto out;
	}
	char action[80];
	action_name(action, sizeof(action), coll, "delete");
	if (admin_audit(c, req, action, coll->kind, id, before, NULL) < 0) {
		admin_reply_store_error(req, c, coll->label, 1);
		goto out;
	}
	if (admin_commit(req, c) < 0)
		goto out;
	http_reply_text(req, 204, "application/json", "", 0);
out:
	db_finalize(st);
	json_decref(before);
}

/* ---- connector enrollment tokens ---- */

int admin_connector_token_create(struct db *db, const char *network_id, int64_t now, int64_t ttl_s,
				 char token_out[SP_SECRET_TEXT_MAX], char id_out[33],
				 json_t **after, struct sp_diag *diag)
{
	char hash[SP_SECRET_HASH_HEX];
	struct db_stmt *st = NULL;
	int r;
	token_out[0] = '\0';
	id_out[0] = '\0';
	*after = NULL;
	if (ttl_s < ADMIN_TOKEN_TTL_MIN_S || ttl_s > ADMIN_TOKEN_TTL_MAX_S)
		return sp_diag_set(diag, SP_ERR_INVALID, "ttl_s must be between %d and %d seconds",
				   ADMIN_TOKEN_TTL_MIN_S, ADMIN_TOKEN_TTL_MAX_S);
	if ((r = sp_secret_new("spe", token_out, SP_SECRET_TEXT_MAX)) < 0 ||
	    (r = sp_secret_hash(token_out, strlen(token_out), hash)) < 0 ||
	    (r = sp_random_hex(16, id_out, 33)) < 0) {
		sp_diag_set(diag, r, "cannot make a token: %s", sp_strerror(r));
		goto out;
	}
	r = SP_ERR_DATABASE;
	if (db_prepare(db,
		       "INSERT INTO connector_enrollment_tokens (id, network_id,"
		       " token_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
		       &st) != 0) {
		sp_diag_set(diag, r, "database: %s", db_errmsg(db));
		goto out;
	}
	db_bind_text(st, 1, id_out, -1, DB_STATIC);
	db_bind_text(st, 2, network_id, -1, DB_STATIC);
	db_bind_text(st, 3, hash, -1, DB_STATIC);
	db_bind_int64(st, 4, now);
	db_bind_int64(st, 5, now + ttl_s);
	if (db_step(st) != DB_DONE) {
		r = db_constraint(db, NULL, 0) == DB_CONSTRAINT_FOREIGN_KEY ? SP_ERR_NOT_FOUND
									    : SP_ERR_DATABASE;
		sp_diag_set(diag, r,
			    r == SP_ERR_NOT_FOUND ? "there is no remote network with id \"%s\""
						  : "database: %s",
			    r == SP_ERR_NOT_FOUND ? network_id : db_errmsg(db));
		goto out;
	}
	*after = json_pack("{s:s, s:s, s:I, s:I}", "id", id_out, "network_id", network_id,
			   "created_at", (json_int_t)now, "expires_at", (json_int_t)(now + ttl_s));
	r = *after != NULL ? 0 : SP_ERR_NOMEM;
out:
	db_finalize(st);
	if (r < 0) {
		OPENSSL_cleanse(token_out, SP_SECRET_TEXT_MAX);
		token_out[0] = '\0';
		id_out[0] = '\0';
	}
	return r;
}
