/* controller/connector_api.c — see connector_api.h. */
#include "controller/connector_api.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "controller/app.h"
#include "controller/audit.h"
#include "controller/routes.h"
#include "controller/store.h"
#include "shared/keys.h"
#include "shared/log.h"
#include "shared/secret.h"

/* ---- validation (pure) ---- */

/* 1 when every byte is printable ASCII (no control characters, no DEL, no 8-bit). */
static int printable(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return 0;
	return 1;
}

/*
 * Reads member `name` of obj as a string of min..max bytes. Absent (or null when
 * nullable) leaves *out NULL and is an error only when required. `where` prefixes the
 * field name in the diag ("" or "events[3].").
 */
static int member_string(const json_t *obj, const char *where, const char *name, size_t min,
                         size_t max, int required, int nullable, int need_printable,
                         const char **out, struct sp_diag *diag)
{
	*out = NULL;
	const json_t *v = json_object_get(obj, name);
	if (v == NULL || (nullable && json_is_null(v))) {
		if (required)
			return sp_diag_set(diag, SP_ERR_INVALID, "%s%s is required", where, name);
		return 0;
	}
	if (!json_is_string(v))
		return sp_diag_set(diag, SP_ERR_INVALID, "%s%s must be a string%s", where, name,
		                   nullable ? " or null" : "");
	size_t len = json_string_length(v);
	const char *s = json_string_value(v);
	if (len < min || len > max || strlen(s) != len)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s%s must be %zu to %zu characters long",
		                   where, name, min, max);
	if (need_printable && !printable(s))
		return sp_diag_set(diag, SP_ERR_INVALID,
		                   "%s%s must hold printable ASCII characters only", where, name);
	*out = s;
	return 0;
}

/* Reads member `name` as an integer in lo..hi; absent gives `dflt` unless required. */
static int member_integer(const json_t *obj, const char *where, const char *name, int64_t lo,
                          int64_t hi, int required, int64_t dflt, int64_t *out,
                          struct sp_diag *diag)
{
	*out = dflt;
	const json_t *v = json_object_get(obj, name);
	if (v == NULL || json_is_null(v)) {
		if (required)
			return sp_diag_set(diag, SP_ERR_INVALID, "%s%s is required", where, name);
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s%s must be an integer from %lld to %lld",
		                   where, name, (long long)lo, (long long)hi);
	*out = (int64_t)json_integer_value(v);
	return 0;
}

/* Refuses any member of obj not listed in `known` (NULL-terminated). */
static int only_members(const json_t *obj, const char *where, const char *const *known,
                        struct sp_diag *diag)
{
	const char *key;
	const json_t *value;
	json_object_foreach ((json_t *)obj, key, value) {
		int found = 0;
		for (size_t i = 0; known[i] != NULL && !found; i++)
			found = strcmp(key, known[i]) == 0;
		if (!found)
			return sp_diag_set(diag, SP_ERR_INVALID, "%s%.64s is not a known field", where, key);
	}
	return 0;
}

int connector_check_direct_address(const char *text)
{
	const char *port;
	if (text == NULL || text[0] == '\0' || strlen(text) > 300)
		return SP_ERR_INVALID;
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (close == NULL || close == text + 1 || close[1] != ':')
			return SP_ERR_INVALID;
		for (const char *p = text + 1; p < close; p++)
			if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
			      (*p >= 'A' && *p <= 'F') || *p == ':' || *p == '.'))
				return SP_ERR_INVALID;
		port = close + 2;
	} else {
		const char *colon = strrchr(text, ':');
		if (colon == NULL || colon == text)
			return SP_ERR_INVALID;
		for (const char *p = text; p < colon; p++)
			if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
			      (*p >= 'A' && *p <= 'Z') || *p == '.' || *p == '-'))
				return SP_ERR_INVALID;
		port = colon + 1;
	}
	if (port[0] == '\0' || strlen(port) > 5)
		return SP_ERR_INVALID;
	long value = 0;
	for (const char *p = port; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return SP_ERR_INVALID;
		value = value * 10 + (*p - '0');
	}
	return value >= 1 && value <= 65535 ? 0 : SP_ERR_INVALID;
}

int connector_enroll_validate(const json_t *body, struct connector_enroll_request *out,
                              struct sp_diag *diag)
{
	static const char *const known[] = {"token", "name", "public_key_pem", "direct_address",
	                                    "version", NULL};
	memset(out, 0, sizeof(*out));
	int r;
	if (!json_is_object(body))
		return sp_diag_set(diag, SP_ERR_INVALID, "the request body must be a JSON object");
	if ((r = only_members(body, "", known, diag)) < 0 ||
	    (r = member_string(body, "", "token", 1, 128, 1, 0, 1, &out->token, diag)) < 0 ||
	    (r = member_string(body, "", "name", 1, 128, 1, 0, 1, &out->name, diag)) < 0 ||
	    (r = member_string(body, "", "public_key_pem", 1, 16384, 1, 0, 0, &out->public_key_pem,
	                       diag)) < 0 ||
	    (r = member_string(body, "", "direct_address", 1, 300, 0, 1, 1, &out->direct_address,
	                       diag)) < 0 ||
	    (r = member_string(body, "", "version", 1, 64, 0, 0, 1, &out->version, diag)) < 0)
		return r;
	if (out->direct_address != NULL && connector_check_direct_address(out->direct_address) < 0)
		return sp_diag_set(diag, SP_ERR_INVALID,
		                   "direct_address must be host:port or [v6]:port with a port 1-65535");
	return 0;
}

/* A lower-case reason code as the schema allows: [a-z0-9_]{1,64}. */
static int reason_code(const char *s)
{
	for (const char *p = s; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return 0;
	return 1;
}

static int validate_flow_event(const json_t *ev, size_t index, struct connector_flow_event *out,
                               struct sp_diag *diag)
{
	static const char *const known[] = {
		"flow_id", "time", "user_id", "device_id", "session_id", "resource_id", "protocol",
		"destination_host", "destination_ip", "destination_port", "decision", "reason",
		"bytes_up", "bytes_down", "duration_ms", NULL};
	char where[32];
	snprintf(where, sizeof(where), "events[%zu].", index);
	memset(out, 0, sizeof(*out));
	if (!json_is_object(ev))
		return sp_diag_set(diag, SP_ERR_INVALID, "events[%zu] must be a JSON object", index);
	int r;
	if ((r = only_members(ev, where, known, diag)) < 0 ||
	    (r = member_string(ev, where, "flow_id", 1, 64, 1, 0, 1, &out->flow_id, diag)) < 0 ||
	    (r = member_integer(ev, where, "time", 0, INT64_MAX, 1, 0, &out->time, diag)) < 0 ||
	    (r = member_string(ev, where, "user_id", 1, 64, 0, 1, 1, &out->user_id, diag)) < 0 ||
	    (r = member_string(ev, where, "device_id", 1, 64, 0, 1, 1, &out->device_id, diag)) < 0 ||
	    (r = member_string(ev, where, "session_id", 1, 64, 0, 1, 1, &out->session_id, diag)) < 0 ||
	    (r = member_string(ev, where, "resource_id", 1, 64, 0, 1, 1, &out->resource_id, diag)) <
	            0 ||
	    (r = member_string(ev, where, "protocol", 1, 8, 1, 0, 1, &out->protocol, diag)) < 0 ||
	    (r = member_string(ev, where, "destination_host", 1, 255, 0, 1, 1,
	                       &out->destination_host, diag)) < 0 ||
	    (r = member_string(ev, where, "destination_ip", 2, 45, 0, 1, 1, &out->destination_ip,
	                       diag)) < 0 ||
	    (r = member_integer(ev, where, "destination_port", 0, 65535, 0, -1,
	                        &out->destination_port, diag)) < 0 ||
	    (r = member_string(ev, where, "decision", 1, 8, 1, 0, 1, &out->decision, diag)) < 0 ||
	    (r = member_string(ev, where, "reason", 1, 64, 0, 1, 1, &out->reason, diag)) < 0 ||
	    (r = member_integer(ev, where, "bytes_up", 0, INT64_MAX, 0, 0, &out->bytes_up, diag)) <
	            0 ||
	    (r = member_integer(ev, where, "bytes_down", 0, INT64_MAX, 0, 0, &out->bytes_down,
	                        diag)) < 0 ||
	    (r = member_integer(ev, where, "duration_ms", 0, INT64_MAX, 0, 0, &out->duration_ms,
	                        diag)) < 0)
		return r;
	if (strcmp(out->protocol, "tcp") != 0 && strcmp(out->protocol, "udp") != 0 &&
	    strcmp(out->protocol, "icmp") != 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "%sprotocol must be tcp, udp or icmp", where);
	if (strcmp(out->decision, "allow") != 0 && strcmp(out->decision, "deny") != 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "%sdecision must be allow or deny", where);
	if (out->reason != NULL && !reason_code(out->reason))
		return sp_diag_set(diag, SP_ERR_INVALID,
		                   "%sreason must be a lower-case code such as no_policy", where);
	if (strcmp(out->decision, "deny") == 0 && out->reason == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "%sreason is required when decision is deny",
		                   where);
	if (out->destination_ip != NULL) {
		unsigned char addr[16];
		if (inet_pton(AF_INET, out->destination_ip, addr) != 1 &&
		    inet_pton(AF_INET6, out->destination_ip, addr) != 1)
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "%sdestination_ip must be an IPv4 or IPv6 address", where);
	}
	return 0;
}

int connector_flow_events_validate(const json_t *body, struct connector_flow_event *out,
                                   size_t *count, struct sp_diag *diag)
{
	static const char *const known[] = {"events", NULL};
	*count = 0;
	int r;
	if (!json_is_object(body))
		return sp_diag_set(diag, SP_ERR_INVALID, "the request body must be a JSON object");
	if ((r = only_members(body, "", known, diag)) < 0)
		return r;
	const json_t *events = json_object_get(body, "events");
	if (!json_is_array(events))
		return sp_diag_set(diag, SP_ERR_INVALID, "events must be an array of flow events");
	size_t n = json_array_size(events);
	if (n == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "events must hold at least one flow event");
	if (n > CONNECTOR_FLOW_BATCH_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE,
		                   "events holds %zu flow events; at most %d per request", n,
		                   CONNECTOR_FLOW_BATCH_MAX);
	for (size_t i = 0; i < n; i++)
		if ((r = validate_flow_event(json_array_get(events, i), i, &out[i], diag)) < 0)
			return r;
	*count = n;
	return 0;
}

/* ---- the signed config ---- */

static int id_list(struct db *db, const char *sql, int64_t bind_time, json_t *into)
{
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE;
	if (db_prepare(db, sql, &st) != 0)
		goto out;
	if (bind_time >= 0)
		db_bind_int64(st, 1, bind_time);
	int s;
	while ((s = db_step(st)) == DB_ROW)
		if (json_array_append_new(into, json_string((const char *)db_column_text(st, 0))) <
		    0)
			goto out;
	if (s == DB_DONE)
		r = 0;
out:
	db_finalize(st);
	return r;
}

/* Runs one level of connector_access_revocations; *rows = the number of rows read. */
static int access_level(struct db *db, const char *sql, const char *network_id, int64_t now,
                        size_t cap, json_t *into, size_t *rows)
{
	*rows = 0;
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE;
	if (db_prepare(db, sql, &st) != 0)
		goto out;
	db_bind_text(st, 1, network_id, -1, DB_STATIC);
	db_bind_int64(st, 2, now);
	db_bind_int64(st, 3, (int64_t)cap + 1);
	int s;
	while ((s = db_step(st)) == DB_ROW) {
		const char *user = (const char *)db_column_text(st, 0);
		const char *res = (const char *)db_column_text(st, 1);
		if (user == NULL || res == NULL || db_column_type(st, 2) == DB_NULL)
			continue; /* the aggregate of no rows */
		if (++*rows > cap)
			continue;
		r = SP_ERR_NOMEM;
		if (json_array_append_new(into, json_pack("{s:s, s:s, s:I}", "user", user,
		                                          "resource", res, "at",
		                                          (json_int_t)db_column_int64(st, 2))) < 0)
			goto out;
		r = SP_ERR_DATABASE;
	}
	if (s == DB_DONE)
		r = 0;
out:
	db_finalize(st);
	if (r == 0 && *rows > cap)
		json_array_clear(into);
	return r;
}

int connector_access_revocations(struct db *db, const char *network_id, int64_t now, size_t cap,
                                 json_t *into)
{
	static const char *const levels[] = {
	        "SELECT a.user_id, a.resource_id, a.revoked_at FROM access_revocations a"
	        " JOIN resources r ON r.id = a.resource_id"
	        " WHERE r.network_id = ?1 AND a.expires_at > ?2"
	        " ORDER BY a.user_id, a.resource_id LIMIT ?3",
	        "SELECT a.user_id, '*', max(a.revoked_at) FROM access_revocations a"
	        " JOIN resources r ON r.id = a.resource_id"
	        " WHERE r.network_id = ?1 AND a.expires_at > ?2"
	        " GROUP BY a.user_id ORDER BY a.user_id LIMIT ?3",
	        "SELECT '*', '*', max(a.revoked_at) FROM access_revocations a"
	        " JOIN resources r ON r.id = a.resource_id"
	        " WHERE r.network_id = ?1 AND a.expires_at > ?2 AND ?3 > 0",
	};
	if (db == NULL || network_id == NULL || into == NULL || cap == 0)
		return SP_ERR_INVALID;
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		size_t rows = 0;
		int r = access_level(db, levels[i], network_id, now, cap, into, &rows);
		if (r < 0 || rows <= cap)
			return r;
	}
	return 0; /* not reached: the last level has at most one row */
}

/* A port column (canonical JSON "all", "none" or an array of strings) as JSON. */
static json_t *port_spec(struct db_stmt *st, int column)
{
	const char *text = (const char *)db_column_text(st, column);
	if (text == NULL)
		return NULL;
	return json_loadb(text, (size_t)db_column_bytes(st, column), JSON_DECODE_ANY, NULL);
}

int connector_config_claims(struct db *db, const char *issuer, const char *connector_id,
			    const char *network_id, int64_t now, int64_t seq, json_t **out)
{
	*out = NULL;
	int r = SP_ERR_NOMEM;
	struct db_stmt *st = NULL;
	char audience[sizeof(CONNECTOR_CONFIG_AUDIENCE_PREFIX) + 64];
	snprintf(audience, sizeof(audience), CONNECTOR_CONFIG_AUDIENCE_PREFIX "%s", connector_id);
	json_t *resources = json_array();
	json_t *sessions = json_array(), *devices = json_array(), *users = json_array();
	json_t *access = json_array();
	json_t *claims = NULL;
	if (resources == NULL || sessions == NULL || devices == NULL || users == NULL ||
	    access == NULL)
		goto out;

	r = SP_ERR_DATABASE;
	if (db_prepare(db,
		       "SELECT id, name, address, alias, tcp_ports, udp_ports, icmp"
		       " FROM resources WHERE network_id = ? ORDER BY id",
		       &st) != 0)
		goto out;
	db_bind_text(st, 1, network_id, -1, DB_STATIC);
	int s;
	while ((s = db_step(st)) == DB_ROW) {
		const char *alias = (const char *)db_column_text(st, 3);
		json_t *res = json_pack("{s:s, s:s, s:s, s:o, s:o*, s:o*, s:b}", "id",
					(const char *)db_column_text(st, 0), "name",
					(const char *)db_column_text(st, 1), "address",
					(const char *)db_column_text(st, 2), "alias",
					alias != NULL ? json_string(alias) : json_null(), "tcp",
					port_spec(st, 4), "udp", port_spec(st, 5), "icmp",
					db_column_int(st, 6) != 0);
		if (res == NULL || json_object_get(res, "tcp") == NULL ||
		    json_object_get(res, "udp") == NULL) {
			json_decref(res);
			goto out;
		}
		if (json_array_append_new(resources, res) < 0)
			goto out;
	}
	if (s != DB_DONE)
		goto out;
	db_finalize(st);
	st = NULL;

	/* Revocations a connector enforces on live streams (docs/protocol.md §1.1): a revoked
	 * session matters only until it would have expired anyway. */
	if (id_list(db,
	            "SELECT id FROM sessions WHERE revoked_at IS NOT NULL AND expires_at > ?"
	            " ORDER BY id",
	            now, sessions) < 0 ||
	    id_list(db, "SELECT id FROM devices WHERE state = 'blocked' ORDER BY id", -1, devices) <
	            0 ||
	    id_list(db, "SELECT id FROM users WHERE disabled = 1 ORDER BY id", -1, users) < 0)
		goto out;
	/* Pairs whose access ended (policy, membership or group removed) while a grant issued
	 * before may still be valid. */
	r = connector_access_revocations(db, network_id, now, CONNECTOR_ACCESS_MAX, access);
	if (r < 0)
		goto out;

	r = SP_ERR_NOMEM;
	claims = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:o, s:{s:o, s:o, s:o, s:o}, s:I}",
	                   "v", 1, "typ", "connector-config", "iss", issuer, "aud", audience,
	                   "iat", (json_int_t)now, "exp", (json_int_t)(now + CONNECTOR_CONFIG_TTL_S),
	                   "network_id", network_id, "resources", resources, "revocations",
	                   "sessions", sessions, "devices", devices, "users", users, "access",
	                   access, "seq", (json_int_t)seq);
	/* json_pack's "o" steals its references even on failure. */
	resources = sessions = devices = users = access = NULL;
	if (claims == NULL)
		goto out;
	*out = claims;
	r = 0;
out:
	db_finalize(st);
	json_decref(resources);
	json_decref(sessions);
	json_decref(devices);
	json_decref(users);
	json_decref(access);
	return r;
}

int connector_config_document(struct db *db, struct authority *authority, const char *issuer,
			      const char *connector_id, const char *network_id, int64_t now,
			      int64_t seq, char **out)
{
	*out = NULL;
	json_t *claims = NULL;
	int r = connector_config_claims(db, issuer, connector_id, network_id, now, seq, &claims);
	if (r == 0)
		r = authority_sign_document(authority, claims, out);
	json_decref(claims);
	return r;
}

/* ---- handlers ---- */

static void reply_store_error(struct http_request *req, const struct sp_diag *d)
{
	SP_LOG(SP_LOG_WARN, "connector API store failure", SP_LOG_STR("reason", d->message),
	       SP_LOG_STR("request_id", req->request_id));
	http_reply_error(req, 503, "unavailable", "the store cannot be written now; retry");
}

/* Records a refused enrollment in its own transaction (the attempt itself changed nothing). */
static void audit_enroll_refused(struct controller *c, struct http_request *req,
                                 const char *name, const char *token_id, const char *cause)
{
	struct sp_diag d;
	json_t *after = json_pack("{s:s, s:s}", "name", name, "cause", cause);
	struct audit_event e = {.time = c->now(), .actor_type = "connector", .actor_label = name,
	                        .action = "connector.enroll", .outcome = "denied",
	                        .target_type = "connector_enrollment_token", .target_id = token_id,
	                        .after = after, .request_id = req->request_id,
	                        .source_address = req->client_address};
	if (store_begin(c, &d) == 0) {
		if (audit_record(c->db, &e) == 0)
			(void)store_commit(c, &d);
		else
			store_rollback(c);
	}
	json_decref(after);
}

/* Looks up the token by hash and takes it for this enrollment. Returns the HTTP status to
 * answer on refusal (0 when taken), with code and message filled. */
static unsigned take_token(struct controller *c, const char *hash, int64_t now, char token_id[33],
                           char network_id[33], char network_name[129], const char **code,
                           const char **message)
{
	struct db_stmt *st = NULL;
	unsigned status = 503;
	*code = "unavailable";
	*message = "the store cannot be read now";
	if (db_prepare(c->db,
		       "SELECT t.id, t.network_id, t.expires_at, t.used_at, n.name"
		       " FROM connector_enrollment_tokens t"
		       " JOIN remote_networks n ON n.id = t.network_id WHERE t.token_hash = ?",
		       &st) != 0)
		goto out;
	db_bind_text(st, 1, hash, -1, DB_STATIC);
	int s = db_step(st);
	if (s == DB_DONE) {
		status = 401;
		*code = "token_unknown";
		*message = "the enrollment token is unknown: create one with `sallyport-controller "
		           "connector-token create --network NAME`";
		goto out;
	}
	if (s != DB_ROW)
		goto out;
	snprintf(token_id, 33, "%s", (const char *)db_column_text(st, 0));
	snprintf(network_id, 33, "%s", (const char *)db_column_text(st, 1));
	snprintf(network_name, 129, "%s", (const char *)db_column_text(st, 4));
	if (db_column_type(st, 3) != DB_NULL) {
		status = 409;
		*code = "token_used";
		*message = "the enrollment token was already used; each token enrolls one connector";
		goto out;
	}
	if (db_column_int64(st, 2) <= now) {
		status = 401;
		*code = "token_expired";
		*message = "the enrollment token has expired; create a new one";
		goto out;
	}
	db_finalize(st);
	st = NULL;
	if (db_prepare(c->db,
		       "UPDATE connector_enrollment_tokens SET used_at = ?"
		       " WHERE id = ? AND used_at IS NULL",
		       &st) != 0)
		goto out;
	db_bind_int64(st, 1, now);
	db_bind_text(st, 2, token_id, -1, DB_STATIC);
	if (db_step(st) != DB_DONE || db_changes(c->db) != 1)
		goto out;
	status = 0;
out:
	db_finalize(st);
	return status;
}

/* 1 when a row matches `sql` with the two bound texts, 0 when none, <0 on error. */
static int row_exists(struct db *db, const char *sql, const char *a, const char *b)
{
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE;
	if (db_prepare(db, sql, &st) == 0) {
		db_bind_text(st, 1, a, -1, DB_STATIC);
		if (b != NULL)
			db_bind_text(st, 2, b, -1, DB_STATIC);
		int s = db_step(st);
		r = s == DB_ROW ? 1 : s == DB_DONE ? 0 : SP_ERR_DATABASE;
	}
	db_finalize(st);
	return r;
}

static void handle_enroll(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct sp_diag d;
	struct connector_enroll_request in;
	EVP_PKEY *key = NULL;
	char *pem = NULL;
	size_t pem_len = 0;
	struct db_stmt *st = NULL;
	json_t *jwks = NULL, *after = NULL;
	int in_tx = 0;
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return;
	if (connector_enroll_validate(body, &in, &d) < 0) {
		http_reply_error(req, 400, "invalid_request", "%s", d.message);
		goto out;
	}
	if (sp_key_from_pem(in.public_key_pem, strlen(in.public_key_pem), 1, &key, &d) < 0) {
		http_reply_error(req, 400, "invalid_public_key",
		                 "public_key_pem must be the PEM SubjectPublicKeyInfo of a P-256 key: %s",
		                 d.message);
		goto out;
	}
	if (sp_key_has_private(key)) {
		http_reply_error(req, 400, "invalid_public_key",
		                 "public_key_pem holds a private key; send only the public key");
		goto out;
	}
	uint8_t digest[SP_KEY_SPKI_DIGEST_LEN];
	char digest_hex[2 * SP_KEY_SPKI_DIGEST_LEN + 1];
	if (sp_key_spki_sha256(key, digest) < 0 || sp_key_public_pem(key, &pem, &pem_len) < 0) {
		http_reply_error(req, 400, "invalid_public_key",
		                 "public_key_pem could not be re-encoded as a P-256 public key");
		goto out;
	}
	sp_hex_encode(digest, sizeof(digest), digest_hex);

	char hash[SP_SECRET_HASH_HEX];
	if (sp_secret_check_format("spe", in.token, strlen(in.token)) < 0 ||
	    sp_secret_hash(in.token, strlen(in.token), hash) < 0) {
		audit_enroll_refused(c, req, in.name, NULL, "token_unknown");
		http_reply_error(req, 401, "token_unknown",
		                 "token is not an enrollment token (spe_ followed by 43 characters)");
		goto out;
	}

	int64_t now = c->now();
	char token_id[33] = "", network_id[33] = "", network_name[129] = "", id[33];
	const char *code = NULL, *message = NULL;
	if (store_begin(c, &d) < 0) {
		reply_store_error(req, &d);
		goto out;
	}
	in_tx = 1;
	unsigned status = take_token(c, hash, now, token_id, network_id, network_name, &code,
	                             &message);
	if (status != 0) {
		store_rollback(c);
		in_tx = 0;
		if (status != 503)
			audit_enroll_refused(c, req, in.name, token_id[0] != '\0' ? token_id : NULL, code);
		http_reply_error(req, status, code, "%s", message);
		goto out;
	}
	int exists = row_exists(c->db, "SELECT 1 FROM connectors WHERE public_key_digest = ?",
	                        digest_hex, NULL);
	if (exists == 1) {
		store_rollback(c);
		in_tx = 0;
		http_reply_error(req, 409, "key_in_use",
		                 "public_key_pem is already enrolled as another connector; generate a "
		                 "new key for each connector");
		goto out;
	}
	if (exists == 0)
		exists = row_exists(c->db,
		                    "SELECT 1 FROM connectors WHERE network_id = ? AND name = ?",
		                    network_id, in.name);
	if (exists == 1) {
		store_rollback(c);
		in_tx = 0;
		http_reply_error(req, 409, "name_in_use",
		                 "name \"%s\" is already used by a connector of network \"%s\"", in.name,
		                 network_name);
		goto out;
	}
	if (exists < 0 || store_new_id(id) < 0 ||
	    db_prepare(c->db,
		       "INSERT INTO connectors (id, network_id, name, public_key_digest,"
		       " public_key_pem, state, direct_address, version, enrolled_at,"
		       " last_seen_at, updated_at) VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?,"
		       " ?, ?)",
		       &st) != 0) {
		sp_diag_set(&d, SP_ERR_DATABASE, "enroll: %s", db_errmsg(c->db));
		reply_store_error(req, &d);
		goto out;
	}
	db_bind_text(st, 1, id, -1, DB_STATIC);
	db_bind_text(st, 2, network_id, -1, DB_STATIC);
	db_bind_text(st, 3, in.name, -1, DB_STATIC);
	db_bind_text(st, 4, digest_hex, -1, DB_STATIC);
	db_bind_text(st, 5, pem, (int)pem_len, DB_STATIC);
	if (in.direct_address != NULL)
		db_bind_text(st, 6, in.direct_address, -1, DB_STATIC);
	if (in.version != NULL)
		db_bind_text(st, 7, in.version, -1, DB_STATIC);
	db_bind_int64(st, 8, now);
	db_bind_int64(st, 9, now);
	db_bind_int64(st, 10, now);
	if (db_step(st) != DB_DONE) {
		sp_diag_set(&d, SP_ERR_DATABASE, "enroll: %s", db_errmsg(c->db));
		reply_store_error(req, &d);
		goto out;
	}
	after = json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s?}", "id", id, "network_id", network_id,
	                  "name", in.name, "public_key_digest", digest_hex, "direct_address",
	                  in.direct_address, "version", in.version);
	struct audit_event e = {.time = now, .actor_type = "connector", .actor_id = id,
	                        .actor_label = in.name, .action = "connector.enroll",
	                        .target_type = "connector", .target_id = id, .after = after,
	                        .request_id = req->request_id, .source_address = req->client_address};
	if (audit_record(c->db, &e) < 0) {
		sp_diag_set(&d, SP_ERR_DATABASE, "audit: %s", db_errmsg(c->db));
		reply_store_error(req, &d);
		goto out;
	}
	if (store_commit(c, &d) < 0) {
		in_tx = 0;
		reply_store_error(req, &d);
		goto out;
	}
	in_tx = 0;
	size_t jwks_len = 0;
	const char *jwks_text = authority_jwks(&c->authority, &jwks_len);
	jwks = jwks_text != NULL ? json_loadb(jwks_text, jwks_len, 0, NULL) : json_object();
	SP_LOG(SP_LOG_INFO, "connector enrolled", SP_LOG_STR("connector_id", id),
	       SP_LOG_STR("network", network_name), SP_LOG_STR("name", in.name));
	http_reply_json(req, 201, json_pack("{s:s, s:s, s:s, s:O}", "connector_id", id,
	                                    "network_id", network_id, "network_name", network_name,
	                                    "controller_jwks", jwks));
out:
	if (in_tx)
		store_rollback(c);
	db_finalize(st);
	json_decref(after);
	json_decref(jwks);
	free(pem);
	EVP_PKEY_free(key);
	json_decref(body);
}

static void handle_config(struct http_request *req, void *app)
{
	struct controller *c = app;
	/* The sequence is read before the data, so a change racing this request is at worst
	 * announced again by the feed, never lost. */
	int64_t seq = store_latest_change(c);
	char *doc = NULL;
	int r = connector_config_document(c->db, &c->authority, c->settings.public_url,
	                                  req->actor_id, req->actor_network, c->now(), seq, &doc);
	if (r == SP_ERR_TOO_LARGE) {
		http_reply_error(req, 500, "config_too_large",
		                 "the connector config is larger than a signed document may be");
		return;
	}
	if (r < 0) {
		http_reply_error(req, 503, "unavailable", "the connector config cannot be built now");
		return;
	}
	http_reply_json(req, 200, json_pack("{s:s}", "document", doc));
	free(doc);
}

/* A string column as a JSON value (null for NULL). */
static json_t *column_json(struct db_stmt *st, int i)
{
	const char *t = (const char *)db_column_text(st, i);
	return t != NULL ? json_string(t) : json_null();
}

static int same_text(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void handle_heartbeat(struct http_request *req, void *app)
{
	static const char *const known[] = {"direct_address", "version", NULL};
	struct controller *c = app;
	struct sp_diag d;
	struct db_stmt *st = NULL;
	json_t *before = NULL, *after = NULL;
	int in_tx = 0;
	const char *direct = NULL, *version = NULL;
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return;
	if (only_members(body, "", known, &d) < 0 ||
	    member_string(body, "", "direct_address", 1, 300, 0, 1, 1, &direct, &d) < 0 ||
	    member_string(body, "", "version", 1, 64, 0, 0, 1, &version, &d) < 0 ||
	    (direct != NULL && connector_check_direct_address(direct) < 0 &&
	     sp_diag_set(&d, SP_ERR_INVALID, "direct_address must be host:port or [v6]:port with a "
	                 "port 1-65535") < 0)) {
		http_reply_error(req, 400, "invalid_request", "%s", d.message);
		goto out;
	}
	int64_t now = c->now();
	if (store_begin(c, &d) < 0) {
		reply_store_error(req, &d);
		goto out;
	}
	in_tx = 1;
	if (db_prepare(c->db, "SELECT direct_address, version FROM connectors WHERE id = ?", &st) !=
	    0)
		goto db_error;
	db_bind_text(st, 1, req->actor_id, -1, DB_STATIC);
	if (db_step(st) != DB_ROW)
		goto db_error;
	before = json_pack("{s:o, s:o}", "direct_address", column_json(st, 0), "version",
	                   column_json(st, 1));
	/* Absent members keep what is stored; direct_address null clears it. */
	const char *new_direct = json_object_get(body, "direct_address") != NULL
	                                 ? direct
	                                 : json_string_value(json_object_get(before, "direct_address"));
	const char *new_version = version != NULL
	                                  ? version
	                                  : json_string_value(json_object_get(before, "version"));
	int changed =
		!same_text(new_direct, json_string_value(json_object_get(before, "direct_address"))) ||
		!same_text(new_version, json_string_value(json_object_get(before, "version")));
	after = json_pack("{s:s?, s:s?}", "direct_address", new_direct, "version", new_version);
	db_finalize(st);
	st = NULL;
	if (before == NULL || after == NULL ||
	    db_prepare(c->db,
		       "UPDATE connectors SET last_seen_at = ?, direct_address = ?,"
		       " version = ?, updated_at = CASE WHEN ? <> 0 THEN ? ELSE updated_at END"
		       " WHERE id = ?",
		       &st) != 0)
		goto db_error;
	db_bind_int64(st, 1, now);
	if (new_direct != NULL)
		db_bind_text(st, 2, new_direct, -1, DB_TRANSIENT);
	if (new_version != NULL)
		db_bind_text(st, 3, new_version, -1, DB_TRANSIENT);
	db_bind_int(st, 4, changed);
	db_bind_int64(st, 5, now);
	db_bind_text(st, 6, req->actor_id, -1, DB_STATIC);
	if (db_step(st) != DB_DONE)
		goto db_error;
	if (changed) {
		/* Liveness alone is not audited (it would flood the log); a new address or
		 * version is a change admins and clients see. */
		struct audit_event e = {.time = now, .action = "connector.update",
		                        .target_type = "connector", .target_id = req->actor_id,
		                        .before = before, .after = after};
		audit_from_request(&e, req);
		if (audit_record(c->db, &e) < 0)
			goto db_error;
	}
	in_tx = 0;
	if (store_commit(c, &d) < 0) {
		reply_store_error(req, &d);
		goto out;
	}
	http_reply_json(req, 200, json_pack("{s:I}", "time", (json_int_t)now));
	goto out;
db_error:
	sp_diag_set(&d, SP_ERR_DATABASE, "heartbeat: %s", db_errmsg(c->db));
	reply_store_error(req, &d);
out:
	if (in_tx)
		store_rollback(c);
	db_finalize(st);
	json_decref(before);
	json_decref(after);
	json_decref(body);
}

static void bind_optional_text(struct db_stmt *st, int i, const char *v)
{
	if (v != NULL)
		db_bind_text(st, i, v, -1, DB_STATIC);
	else
		db_bind_null(st, i);
}

static void handle_flow_events(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct sp_diag d;
	struct db_stmt *st = NULL;
	int in_tx = 0;
	size_t count = 0, accepted = 0;
	struct connector_flow_event *events = NULL;
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return;
	events = calloc(CONNECTOR_FLOW_BATCH_MAX, sizeof(*events));
	if (events == NULL) {
		http_reply_error(req, 503, "unavailable", "out of memory");
		goto out;
	}
	int r = connector_flow_events_validate(body, events, &count, &d);
	if (r < 0) {
		http_reply_error(req, r == SP_ERR_TOO_LARGE ? 413 : 400, "invalid_request", "%s",
		                 d.message);
		goto out;
	}
	if (store_begin(c, &d) < 0) {
		reply_store_error(req, &d);
		goto out;
	}
	in_tx = 1;
	/* ON CONFLICT names the one constraint a resend may hit; every other violation still
	 * fails the batch (INSERT OR IGNORE would silently drop rows failing a CHECK). */
	if (db_prepare(c->db,
		       "INSERT INTO flow_events (time, flow_id, connector_id, user_id,"
		       " device_id, session_id, resource_id, protocol, destination_host,"
		       " destination_ip, destination_port, decision, reason, bytes_up,"
		       " bytes_down, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
		       " ?, ?, ?, ?, ?) ON CONFLICT (connector_id, flow_id) DO NOTHING",
		       &st) != 0)
		goto db_error;
	for (size_t i = 0; i < count; i++) {
		const struct connector_flow_event *ev = &events[i];
		db_reset(st);
		db_clear_bindings(st);
		db_bind_int64(st, 1, ev->time);
		db_bind_text(st, 2, ev->flow_id, -1, DB_STATIC);
		db_bind_text(st, 3, req->actor_id, -1, DB_STATIC);
		bind_optional_text(st, 4, ev->user_id);
		bind_optional_text(st, 5, ev->device_id);
		bind_optional_text(st, 6, ev->session_id);
		bind_optional_text(st, 7, ev->resource_id);
		db_bind_text(st, 8, ev->protocol, -1, DB_STATIC);
		bind_optional_text(st, 9, ev->destination_host);
		bind_optional_text(st, 10, ev->destination_ip);
		if (ev->destination_port >= 0)
			db_bind_int64(st, 11, ev->destination_port);
		db_bind_text(st, 12, ev->decision, -1, DB_STATIC);
		bind_optional_text(st, 13, ev->reason);
		db_bind_int64(st, 14, ev->bytes_up);
		db_bind_int64(st, 15, ev->bytes_down);
		db_bind_int64(st, 16, ev->duration_ms);
		if (db_step(st) != DB_DONE) {
			sp_diag_set(&d, SP_ERR_DATABASE, "flow event %zu: %s", i, db_errmsg(c->db));
			store_rollback(c);
			in_tx = 0;
			http_reply_error(req, 400, "invalid_request", "events[%zu] was refused by the store",
			                 i);
			SP_LOG(SP_LOG_WARN, "flow event refused", SP_LOG_STR("reason", d.message));
			goto out;
		}
		accepted += (size_t)db_changes(c->db);
	}
	in_tx = 0;
	if (store_commit(c, &d) < 0) {
		reply_store_error(req, &d);
		goto out;
	}
	http_reply_json(req, 200, json_pack("{s:I, s:I}", "accepted", (json_int_t)accepted,
	                                    "duplicates", (json_int_t)(count - accepted)));
	goto out;
db_error:
	sp_diag_set(&d, SP_ERR_DATABASE, "flow events: %s", db_errmsg(c->db));
	reply_store_error(req, &d);
out:
	if (in_tx)
		store_rollback(c);
	db_finalize(st);
	free(events);
	json_decref(body);
}

const struct route connector_api_routes[] = {
	{"POST", "/api/connector/v1/enroll", (void *)handle_enroll, ROUTE_PUBLIC},
	{"GET", "/api/connector/v1/config", (void *)handle_config, ROUTE_CONNECTOR},
	{"POST", "/api/connector/v1/heartbeat", (void *)handle_heartbeat, ROUTE_CONNECTOR},
	{"POST", "/api/connector/v1/flow-events", (void *)handle_flow_events, ROUTE_CONNECTOR},
};
const size_t connector_api_route_count =
	sizeof(connector_api_routes) / sizeof(connector_api_routes[0]);
