/*
 * controller/policy_routes.c — the HTTP side of policy.h:
 *
 *   POST /api/v1/access/check        (admin read)  may this user reach address:port/proto?
 *   GET  /api/client/v1/resources    (client)      the signed list of reachable resources
 *   POST /api/client/v1/grants       (client)      a flow grant for one resource
 *
 * Handlers only read: they gather the caller's groups and session facts, ask the pure
 * functions of policy.c, and sign. Grants are not written to the audit log (a client asks
 * for one per resource every few minutes); they are counted in
 * sallyport_controller_grants_issued_total, and every flow they lead to is decided again
 * and recorded by the connector as a flow event.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/app.h"
#include "controller/policy.h"
#include "controller/routes.h"
#include "shared/resource.h"
#include "shared/secret.h"

static void reply_database_error(struct http_request *req)
{
	http_reply_error(req, 503, "unavailable", "the store cannot be read now");
}

/* The snapshot, or NULL after replying 503. */
static const struct policy_snapshot *current_snapshot(struct controller *c,
                                                      struct http_request *req)
{
	const struct policy_snapshot *s = NULL;
	struct sp_diag d;
	if (policy_current(c, &s, &d) < 0) {
		http_reply_error(req, 503, "unavailable", "the policies cannot be read now: %s",
		                 d.message);
		return NULL;
	}
	return s;
}

/* 1 when settings.device_approval requires an admin to approve new devices. */
static int approval_by_admin(struct db *db, int *by_admin)
{
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE;
	if (db_prepare(db, "SELECT device_approval FROM settings WHERE id = 1", &st) == 0 &&
	    db_step(st) == DB_ROW) {
		const char *mode = (const char *)db_column_text(st, 0);
		*by_admin = mode != NULL && strcmp(mode, "admin") == 0;
		r = 0;
	}
	db_finalize(st);
	return r;
}

/*
 * The device's state and key thumbprint. SP_ERR_NOT_FOUND when the user has no such
 * device.
 */
static int load_device(struct db *db, const char *user_id, const char *device_id, char state[16],
		       char jkt[SP_JWK_THUMBPRINT_LEN + 1])
{
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE;
	if (db_prepare(db,
		       "SELECT state, public_key_thumbprint FROM devices"
		       " WHERE id = ? AND user_id = ?",
		       &st) != 0)
		goto out;
	db_bind_text(st, 1, device_id, -1, DB_STATIC);
	db_bind_text(st, 2, user_id, -1, DB_STATIC);
	int step = db_step(st);
	if (step == DB_DONE) {
		r = SP_ERR_NOT_FOUND;
	} else if (step == DB_ROW) {
		snprintf(state, 16, "%s", (const char *)db_column_text(st, 0));
		snprintf(jkt, SP_JWK_THUMBPRINT_LEN + 1, "%s", (const char *)db_column_text(st, 1));
		r = 0;
	}
out:
	db_finalize(st);
	return r;
}

/*
 * What a client request needs: the device key thumbprint, the session's facts and the
 * user's groups. Returns 0, or non-zero after replying (403 device_not_approved, 503).
 */
struct client_context {
	char jkt[SP_JWK_THUMBPRINT_LEN + 1];
	struct policy_groups groups;
	struct policy_subject subject;
};

static int client_context(struct controller *c, struct http_request *req,
                          struct client_context *ctx)
{
	memset(ctx, 0, sizeof(*ctx));
	char state[16];
	int by_admin = 0;
	int r = load_device(c->db, req->actor_id, req->actor_device, state, ctx->jkt);
	if (r == SP_ERR_NOT_FOUND) {
		http_reply_error(req, 401, "unauthorized", "the device of this session is unknown");
		return 1;
	}
	if (r < 0 || approval_by_admin(c->db, &by_admin) < 0) {
		reply_database_error(req);
		return 1;
	}
	/* The gate already refused blocked devices; here the approval step is enforced. */
	if (strcmp(state, "approved") != 0 && by_admin) {
		http_reply_error(req, 403, "device_not_approved",
		                 "this device waits for an administrator's approval");
		return 1;
	}
	int mfa = 0;
	int64_t auth_time = 0;
	if (policy_load_session(c->db, req->actor_session, &mfa, &auth_time) < 0 ||
	    policy_load_groups(c->db, req->actor_id, &ctx->groups) < 0) {
		reply_database_error(req);
		return 1;
	}
	ctx->subject = (struct policy_subject){.group_ids = ctx->groups.list,
	                                       .group_count = ctx->groups.count,
	                                       .mfa = mfa,
	                                       .auth_time = auth_time};
	return 0;
}

static void reply_sign_error(struct http_request *req, int r)
{
	if (r == SP_ERR_TOO_LARGE)
		http_reply_error(req, 500, "too_large",
		                 "the signed document would exceed the token size limit");
	else
		http_reply_error(req, 503, "unavailable", "no signing key is available");
}

static void handle_client_resources(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct client_context ctx;
	json_t *claims = NULL;
	char *jws = NULL;
	if (client_context(c, req, &ctx) != 0)
		return;
	const struct policy_snapshot *s = current_snapshot(c, req);
	if (s == NULL)
		goto out;
	if (policy_resources_claims(s, &ctx.subject, c->settings.public_url, req->actor_id,
	                            req->actor_device, c->now(), &claims) < 0) {
		http_reply_error(req, 500, "internal", "the resource list could not be built");
		goto out;
	}
	int r = authority_sign_document(&c->authority, claims, &jws);
	if (r < 0) {
		reply_sign_error(req, r);
		goto out;
	}
	http_reply_json(req, 200, json_pack("{s:s}", "document", jws));
	http_add_header(req, "Cache-Control", "no-store");
out:
	free(jws);
	json_decref(claims);
	policy_groups_free(&ctx.groups);
}

/* A JSON body's keys must all be in `allowed` (NULL-terminated); else 400 naming one. */
static int only_known_fields(struct http_request *req, json_t *body, const char *const *allowed)
{
	const char *key;
	json_t *value;
	json_object_foreach(body, key, value) {
		int known = 0;
		for (size_t i = 0; allowed[i] != NULL; i++)
			known |= strcmp(key, allowed[i]) == 0;
		if (!known) {
			http_reply_error(req, 400, "invalid", "unknown field \"%.64s\"", key);
			return 0;
		}
	}
	return 1;
}

/* A string field of 1..max bytes, or NULL after replying 400 (when required or mistyped). */
static const char *string_field(struct http_request *req, json_t *body, const char *name,
                                size_t max, int required, int *failed)
{
	json_t *v = json_object_get(body, name);
	if (v == NULL && !required)
		return NULL;
	if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		http_reply_error(req, 400, "invalid", "%s: %s", name,
		                 v == NULL ? "is required" : "must be a non-empty string of at most "
		                                             "the allowed length");
		*failed = 1;
		return NULL;
	}
	return json_string_value(v);
}

static void handle_client_grant(struct http_request *req, void *app)
{
	struct controller *c = app;
	static const char *const fields[] = {"resource_id", NULL};
	struct client_context ctx;
	memset(&ctx, 0, sizeof(ctx));
	json_t *claims = NULL;
	char *jws = NULL;
	int failed = 0;
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return;
	if (!only_known_fields(req, body, fields))
		goto out;
	const char *resource_id = string_field(req, body, "resource_id", 64, 1, &failed);
	if (failed || client_context(c, req, &ctx) != 0)
		goto out;
	const struct policy_snapshot *s = current_snapshot(c, req);
	if (s == NULL)
		goto out;
	char jti[33];
	if (sp_random_hex(16, jti, sizeof(jti)) < 0) {
		http_reply_error(req, 500, "internal", "no random bytes for the grant id");
		goto out;
	}
	struct policy_grant_request q = {.issuer = c->settings.public_url,
	                                 .user_id = req->actor_id,
	                                 .session_id = req->actor_session,
	                                 .device_id = req->actor_device,
	                                 .device_jkt = ctx.jkt,
	                                 .jti = jti,
	                                 .now = c->now(),
	                                 .ttl_s = c->settings.grant_ttl_s > 0 ? c->settings.grant_ttl_s
	                                                                       : 300};
	struct policy_decision d;
	if (policy_grant_claims(s, &ctx.subject, &q, resource_id, &d, &claims) < 0) {
		http_reply_error(req, 500, "internal", "the grant could not be built");
		goto out;
	}
	if (d.reason != POLICY_ALLOWED) {
		char why[512];
		if (d.reason == POLICY_NO_RESOURCE)
			snprintf(why, sizeof(why), "resource_id: there is no resource %.64s", resource_id);
		else
			policy_explain(&d, d.resource->address, "tcp", 0, why, sizeof(why));
		http_reply_error(req, 403, policy_reason_name(d.reason), "%s", why);
		goto out;
	}
	int r = authority_sign(&c->authority, claims, &jws);
	if (r < 0) {
		reply_sign_error(req, r);
		goto out;
	}
	sp_metric_add(&c->metrics.grants_issued, 1);
	http_reply_json(req, 200, json_pack("{s:s, s:I}", "grant", jws, "expires_at",
	                                    (json_int_t)(q.now + q.ttl_s)));
	http_add_header(req, "Cache-Control", "no-store");
out:
	free(jws);
	json_decref(claims);
	json_decref(body);
	policy_groups_free(&ctx.groups);
}

/* ---- POST /api/v1/access/check ---- */

struct access_user {
	char id[33];
	int disabled;
};

/* Finds the user by id or (lower-cased) e-mail; replies 400/404/503 itself (returns 1). */
static int find_user(struct controller *c, struct http_request *req, const char *user_id,
                     const char *email, struct access_user *out)
{
	struct db_stmt *st = NULL;
	char lower[321];
	int found = 0, reply = 1;
	if (email != NULL) {
		size_t n = strlen(email);
		for (size_t i = 0; i < n && i < sizeof(lower) - 1; i++)
			lower[i] = (char)tolower((unsigned char)email[i]);
		lower[n < sizeof(lower) - 1 ? n : sizeof(lower) - 1] = '\0';
	}
	if (db_prepare(c->db,
		       email != NULL ? "SELECT id, disabled FROM users WHERE email = ?"
				       " ORDER BY id LIMIT 2"
				     : "SELECT id, disabled FROM users WHERE id = ?",
		       &st) != 0) {
		reply_database_error(req);
		goto out;
	}
	db_bind_text(st, 1, email != NULL ? lower : user_id, -1, DB_STATIC);
	int step;
	while ((step = db_step(st)) == DB_ROW) {
		if (found++ == 0) {
			snprintf(out->id, sizeof(out->id), "%s",
				 (const char *)db_column_text(st, 0));
			out->disabled = db_column_int(st, 1);
		}
	}
	if (step != DB_DONE) {
		reply_database_error(req);
	} else if (found == 0) {
		http_reply_error(req, 404, "not_found", "%s: no user %s", email != NULL ? "email" : "user_id",
		                 email != NULL ? "has this e-mail address" : "has this id");
	} else if (found > 1) {
		http_reply_error(req, 400, "invalid",
		                 "email: several users have this e-mail address; give user_id instead");
	} else {
		reply = 0;
	}
out:
	db_finalize(st);
	return reply;
}

/*
 * The facts of the device's newest live session. No live session means no MFA and an
 * authentication time of 0, so age and MFA conditions then fail, as they would.
 */
static int device_session_facts(struct controller *c, const char *user_id, const char *device_id,
                                int *mfa, int64_t *auth_time, int *has_session)
{
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE;
	*mfa = 0, *auth_time = 0, *has_session = 0;
	if (db_prepare(c->db,
		       "SELECT auth_time, amr FROM sessions WHERE user_id = ?"
		       " AND device_id = ? AND revoked_at IS NULL AND expires_at > ?"
		       " ORDER BY auth_time DESC, id LIMIT 1",
		       &st) != 0)
		goto out;
	db_bind_text(st, 1, user_id, -1, DB_STATIC);
	db_bind_text(st, 2, device_id, -1, DB_STATIC);
	db_bind_int64(st, 3, c->now());
	int step = db_step(st);
	if (step == DB_ROW) {
		*has_session = 1;
		*auth_time = db_column_int64(st, 0);
		const char *amr = (const char *)db_column_text(st, 1);
		*mfa = amr != NULL && policy_amr_has_mfa(amr, (size_t)db_column_bytes(st, 1));
	}
	if (step == DB_ROW || step == DB_DONE)
		r = 0;
out:
	db_finalize(st);
	return r;
}

static void reply_access(struct http_request *req, int allowed, const char *reason,
                         json_t *resource, const char *policy_id, const char *explanation)
{
	http_reply_json(req, 200,
	                json_pack("{s:b, s:s, s:o, s:s?, s:s}", "allowed", allowed, "reason", reason,
	                          "resource", resource != NULL ? resource : json_null(), "policy_id",
	                          policy_id, "explanation", explanation));
}

static void handle_access_check(struct http_request *req, void *app)
{
	struct controller *c = app;
	static const char *const fields[] = {"user_id", "email", "device_id", "address",
	                                     "port", "protocol", NULL};
	struct policy_groups groups;
	memset(&groups, 0, sizeof(groups));
	int failed = 0;
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return;
	if (!only_known_fields(req, body, fields))
		goto out;
	const char *user_id = string_field(req, body, "user_id", 32, 0, &failed);
	const char *email = failed ? NULL : string_field(req, body, "email", 320, 0, &failed);
	const char *device_id = failed ? NULL : string_field(req, body, "device_id", 32, 0, &failed);
	const char *address = failed ? NULL : string_field(req, body, "address", 255, 1, &failed);
	const char *protocol = failed ? NULL : string_field(req, body, "protocol", 8, 0, &failed);
	if (failed)
		goto out;
	if ((user_id == NULL) == (email == NULL)) {
		http_reply_error(req, 400, "invalid", "user_id or email: give exactly one of them");
		goto out;
	}
	if (protocol == NULL)
		protocol = "tcp";
	int proto = strcmp(protocol, "tcp") == 0    ? SP_RESOURCE_PROTOCOL_TCP
	            : strcmp(protocol, "udp") == 0  ? SP_RESOURCE_PROTOCOL_UDP
	            : strcmp(protocol, "icmp") == 0 ? SP_RESOURCE_PROTOCOL_ICMP
	                                            : 0;
	if (proto == 0) {
		http_reply_error(req, 400, "invalid", "protocol: must be \"tcp\", \"udp\" or \"icmp\"");
		goto out;
	}
	json_t *port_value = json_object_get(body, "port");
	json_int_t port = 0;
	if (port_value != NULL || proto != SP_RESOURCE_PROTOCOL_ICMP) {
		port = json_is_integer(port_value) ? json_integer_value(port_value) : -1;
		if (port < (proto == SP_RESOURCE_PROTOCOL_ICMP ? 0 : 1) || port > 65535) {
			http_reply_error(req, 400, "invalid", "port: %s",
			                 port_value == NULL ? "is required for tcp and udp"
			                                    : "must be an integer from 1 to 65535");
			goto out;
		}
	}

	struct access_user user;
	if (find_user(c, req, user_id, email, &user) != 0)
		goto out;
	int mfa = 1, has_session = 1;
	int64_t auth_time = c->now();
	char explanation[768];
	if (device_id != NULL) {
		char state[16], jkt[SP_JWK_THUMBPRINT_LEN + 1];
		int by_admin = 0;
		int r = load_device(c->db, user.id, device_id, state, jkt);
		if (r == SP_ERR_NOT_FOUND) {
			http_reply_error(req, 404, "not_found", "device_id: the user has no such device");
			goto out;
		}
		if (r < 0 || approval_by_admin(c->db, &by_admin) < 0 ||
		    device_session_facts(c, user.id, device_id, &mfa, &auth_time, &has_session) < 0) {
			reply_database_error(req);
			goto out;
		}
		if (strcmp(state, "blocked") == 0 || (strcmp(state, "approved") != 0 && by_admin)) {
			int blocked = strcmp(state, "blocked") == 0;
			snprintf(explanation, sizeof(explanation),
			         blocked ? "Denied: device %s is blocked."
			                 : "Denied: device %s waits for an administrator's approval.",
			         device_id);
			reply_access(req, 0, blocked ? "device_blocked" : "device_not_approved", NULL,
			             NULL, explanation);
			goto out;
		}
	}
	if (user.disabled) {
		snprintf(explanation, sizeof(explanation), "Denied: user %s is disabled.", user.id);
		reply_access(req, 0, "user_disabled", NULL, NULL, explanation);
		goto out;
	}
	const struct policy_snapshot *s = current_snapshot(c, req);
	if (s == NULL)
		goto out;
	if (policy_load_groups(c->db, user.id, &groups) < 0) {
		reply_database_error(req);
		goto out;
	}
	struct policy_subject subject = {.group_ids = groups.list,
	                                 .group_count = groups.count,
	                                 .mfa = mfa,
	                                 .auth_time = auth_time};
	struct policy_decision d;
	if (policy_evaluate(s, &subject, address, proto, (uint16_t)port, c->now(), &d) < 0) {
		http_reply_error(req, 400, "invalid", "address: not a host name or an IP address");
		goto out;
	}
	policy_explain(&d, address, protocol, (uint16_t)port, explanation, sizeof(explanation));
	size_t len = strlen(explanation);
	if (device_id == NULL && len + 1 < sizeof(explanation))
		snprintf(explanation + len, sizeof(explanation) - len,
		         " (No device given: assumed a fresh sign-in with MFA.)");
	else if (!has_session && len + 1 < sizeof(explanation))
		snprintf(explanation + len, sizeof(explanation) - len,
		         " (The device has no live session: assumed no MFA and no recent sign-in.)");
	json_t *resource = d.resource != NULL ? policy_resource_to_json(s, d.resource) : NULL;
	reply_access(req, d.reason == POLICY_ALLOWED, policy_reason_name(d.reason), resource,
	             d.rule != NULL ? d.rule->id : NULL, explanation);
out:
	json_decref(body);
	policy_groups_free(&groups);
}

const struct route policy_routes[] = {
	{"POST", "/api/v1/access/check", (void *)handle_access_check, ROUTE_ADMIN_READ},
	{"GET", "/api/client/v1/resources", (void *)handle_client_resources, ROUTE_CLIENT},
	{"POST", "/api/client/v1/grants", (void *)handle_client_grant, ROUTE_CLIENT},
};
const size_t policy_route_count = sizeof(policy_routes) / sizeof(policy_routes[0]);
