/*
 * controller/relay_api.c — the controller side of the relay (docs/protocol.md §3):
 *
 *   POST /api/connector/v1/relay-token   (connector)  a relay-connector token, 10 min
 *   POST /api/client/v1/relay-tickets    (client)     a relay ticket for one connector, 60 s
 *
 * The pure parts (the decision and the claims) are in relay_api.h and unit-tested; the
 * handlers read the caller's groups and session like the grant route and sign with the
 * authority. Neither is written to the audit log: like grants they are short-lived and
 * asked for often; the relay counts what it pairs.
 */
#include "controller/relay_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/app.h"
#include "controller/relay.h"
#include "controller/routes.h"
#include "shared/secret.h"

int relay_ticket_allowed(const struct policy_snapshot *s, const struct policy_subject *subject,
                         const char *connector_id, int64_t now)
{
	const struct policy_connector *conn = NULL;
	for (size_t i = 0; i < s->connector_count && conn == NULL; i++)
		if (strcmp(s->connectors[i].id, connector_id) == 0)
			conn = &s->connectors[i];
	if (conn == NULL)
		return 0; /* unknown or not active */
	for (size_t i = 0; i < s->resource_count; i++) {
		if (strcmp(s->resources[i].network_id, conn->network_id) != 0)
			continue;
		struct policy_decision d;
		policy_evaluate_resource(s, subject, &s->resources[i], now, &d);
		if (d.reason == POLICY_ALLOWED)
			return 1;
	}
	return 0;
}

static json_t *relay_claims(const char *typ, const char *connector_id, const char *jti,
                            int64_t now, int64_t ttl)
{
	char cid[SP_JWK_THUMBPRINT_LEN + 1];
	if (relay_connector_cid(connector_id, cid) < 0)
		return NULL;
	json_t *claims = json_pack("{s:i, s:s, s:s, s:I, s:I, s:s}", "v", 1, "typ", typ, "aud",
	                           RELAY_AUDIENCE, "iat", (json_int_t)now, "exp",
	                           (json_int_t)(now + ttl), "cid", cid);
	if (claims != NULL && jti != NULL && json_object_set_new(claims, "jti", json_string(jti)) < 0) {
		json_decref(claims);
		return NULL;
	}
	return claims;
}

json_t *relay_ticket_claims(const char *connector_id, const char *jti, int64_t now)
{
	return relay_claims(RELAY_TICKET_TYP, connector_id, jti, now, RELAY_TICKET_TTL_S);
}

json_t *relay_connector_token_claims(const char *connector_id, int64_t now)
{
	return relay_claims(RELAY_CONNECTOR_TYP, connector_id, NULL, now,
	                    RELAY_CONNECTOR_TOKEN_TTL_S);
}

json_t *relay_public_list(const char *relay_public, const char *relay_listen,
                          uint16_t bound_port)
{
	json_t *list = json_array();
	if (list == NULL)
		return NULL;
	if (relay_public != NULL && relay_public[0] != '\0') {
		const char *p = relay_public;
		for (;;) {
			const char *end = strchr(p, ',');
			size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
			if (len > 0 && json_array_append_new(list, json_stringn(p, len)) < 0)
				goto fail;
			if (end == NULL)
				return list;
			p = end + 1;
		}
	}
	if (bound_port == 0 || relay_listen == NULL)
		return list;
	const char *colon = strrchr(relay_listen, ':');
	if (colon == NULL)
		return list;
	char text[160];
	int n = snprintf(text, sizeof(text), "%.*s:%u", (int)(colon - relay_listen), relay_listen,
	                 (unsigned)bound_port);
	if (n > 0 && (size_t)n < sizeof(text) && json_array_append_new(list, json_string(text)) < 0)
		goto fail;
	return list;
fail:
	json_decref(list);
	return NULL;
}

static void reply_signed(struct controller *c, struct http_request *req, json_t *claims,
                         const char *member)
{
	char *jws = NULL;
	if (claims == NULL) {
		http_reply_error(req, 500, "internal", "the token could not be built");
		return;
	}
	if (authority_sign(&c->authority, claims, &jws) < 0) {
		http_reply_error(req, 503, "unavailable", "no signing key is available");
		return;
	}
	json_t *exp = json_object_get(claims, "exp");
	json_t *relays = relay_public_list(c->settings.relay_public, c->settings.relay_listen,
	                                   c->relay != NULL ? relay_port(c->relay) : 0);
	http_reply_json(req, 200, json_pack("{s:s, s:I, s:o*}", member, jws, "expires_at",
	                                    (json_int_t)json_integer_value(exp), "relays", relays));
	http_add_header(req, "Cache-Control", "no-store");
	free(jws);
}

static void handle_relay_token(struct http_request *req, void *app)
{
	struct controller *c = app;
	/* No body, or an empty object. */
	if (req->body.len > 0) {
		json_t *body = http_body_json_object(req);
		if (body == NULL)
			return;
		size_t fields = json_object_size(body);
		json_decref(body);
		if (fields != 0) {
			http_reply_error(req, 400, "invalid", "the body must be empty or {}");
			return;
		}
	}
	json_t *claims = relay_connector_token_claims(req->actor_id, c->now());
	reply_signed(c, req, claims, "token");
	json_decref(claims);
}

/* Device state and the approval mode: 0, or non-zero after replying. */
static int device_may_ask(struct controller *c, struct http_request *req)
{
	struct db_stmt *st = NULL;
	int r = -1, by_admin = 0, approved = 0, found = 0;
	if (db_prepare(c->db,
		       "SELECT CASE WHEN d.state = 'approved' THEN 1 ELSE 0 END,"
		       " CASE WHEN s.device_approval = 'admin' THEN 1 ELSE 0 END"
		       " FROM devices d, settings s WHERE d.id = ? AND d.user_id = ?"
		       " AND s.id = 1",
		       &st) == 0) {
		db_bind_text(st, 1, req->actor_device, -1, DB_STATIC);
		db_bind_text(st, 2, req->actor_id, -1, DB_STATIC);
		int step = db_step(st);
		if (step == DB_ROW) {
			found = 1;
			approved = db_column_int(st, 0);
			by_admin = db_column_int(st, 1);
			r = 0;
		} else if (step == DB_DONE) {
			r = 0;
		}
	}
	db_finalize(st);
	if (r < 0) {
		http_reply_error(req, 503, "unavailable", "the store cannot be read now");
		return 1;
	}
	if (!found) {
		http_reply_error(req, 401, "unauthorized", "the device of this session is unknown");
		return 1;
	}
	if (!approved && by_admin) {
		http_reply_error(req, 403, "device_not_approved",
		                 "this device waits for an administrator's approval");
		return 1;
	}
	return 0;
}

static void handle_relay_ticket(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct policy_groups groups;
	memset(&groups, 0, sizeof(groups));
	json_t *claims = NULL;
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return;
	json_t *id = json_object_get(body, "connector_id");
	if (json_object_size(body) != 1 || !json_is_string(id) || json_string_length(id) == 0 ||
	    json_string_length(id) > 64 || strlen(json_string_value(id)) != json_string_length(id)) {
		http_reply_error(req, 400, "invalid",
		                 json_object_size(body) != 1 || id == NULL
		                     ? "the body must be exactly {\"connector_id\": \"<id>\"}"
		                     : "connector_id: must be a non-empty string of at most 64 bytes");
		goto out;
	}
	if (device_may_ask(c, req) != 0)
		goto out;
	int mfa = 0;
	int64_t auth_time = 0;
	struct sp_diag d;
	const struct policy_snapshot *s = NULL;
	if (policy_load_session(c->db, req->actor_session, &mfa, &auth_time) < 0 ||
	    policy_load_groups(c->db, req->actor_id, &groups) < 0 || policy_current(c, &s, &d) < 0) {
		http_reply_error(req, 503, "unavailable", "the store cannot be read now");
		goto out;
	}
	struct policy_subject subject = {.group_ids = groups.list,
	                                 .group_count = groups.count,
	                                 .mfa = mfa,
	                                 .auth_time = auth_time};
	int64_t now = c->now();
	if (!relay_ticket_allowed(s, &subject, json_string_value(id), now)) {
		http_reply_error(req, 403, "no_policy",
		                 "connector_id: no active connector of a network with a resource you "
		                 "may reach");
		goto out;
	}
	char jti[33];
	if (sp_random_hex(16, jti, sizeof(jti)) < 0) {
		http_reply_error(req, 500, "internal", "no random bytes for the ticket id");
		goto out;
	}
	claims = relay_ticket_claims(json_string_value(id), jti, now);
	reply_signed(c, req, claims, "ticket");
out:
	json_decref(claims);
	json_decref(body);
	policy_groups_free(&groups);
}

const struct route relay_api_routes[] = {
	{"POST", "/api/connector/v1/relay-token", (void *)handle_relay_token, ROUTE_CONNECTOR},
	{"POST", "/api/client/v1/relay-tickets", (void *)handle_relay_ticket, ROUTE_CLIENT},
};
const size_t relay_api_route_count = sizeof(relay_api_routes) / sizeof(relay_api_routes[0]);
