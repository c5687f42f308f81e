/*
 * controller/gate.c — authentication and authorisation of every request, by route flags
 * (see app.h). Handlers only run once the gate has admitted the caller, and find who it
 * is in req->actor_*.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "controller/apikey.h"
#include "controller/app.h"
#include "controller/auth.h"
#include "controller/session.h"
#include "shared/jwk.h"
#include "shared/keys.h"
#include "shared/log.h"
#include "shared/token.h"

/* The token of an "Authorization: Bearer <token>" header, or NULL. */
static const char *bearer_token(struct http_request *req)
{
	const char *h = http_header(req, "Authorization");
	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return NULL;
	h += 7;
	while (*h == ' ')
		h++;
	return *h != '\0' ? h : NULL;
}

static int unauthorized(struct http_request *req, const char *message)
{
	http_reply_error(req, 401, "unauthorized", "%s", message);
	http_add_header(req, "WWW-Authenticate", "Bearer realm=\"sallyport\"");
	return 1;
}

/* Copies a string claim into out; 0, or -1 when absent, not a string or too long. */
static int claim_string(const json_t *claims, const char *name, char *out, size_t size)
{
	const json_t *v = json_object_get(claims, name);
	if (!json_is_string(v) || strlen(json_string_value(v)) >= size)
		return -1;
	memcpy(out, json_string_value(v), strlen(json_string_value(v)) + 1);
	return 0;
}

/*
 * A client presents an access token (docs/protocol.md §1.3) signed by this controller.
 * Beyond the signature and times, the session must still be live, the user enabled and
 * the device not blocked, so a revocation takes effect on the next request.
 */
static int gate_client(struct controller *c, struct http_request *req)
{
	const char *token = bearer_token(req);
	if (token == NULL)
		return unauthorized(req, "this API needs an access token: sign in with `sallyport login`");
	json_t *claims = NULL;
	struct sp_diag d;
	int r = sp_token_verify(token, strlen(token), &c->authority.published, "ES256", &claims, &d);
	if (r == 0) {
		struct sp_token_expect e = {.issuer = c->settings.public_url,
		                            .audience = ACCESS_TOKEN_AUDIENCE,
		                            .now = c->now(),
		                            .max_skew_s = 60,
		                            .require_exp = 1};
		r = sp_token_check_claims(claims, &e, &d);
	}
	char typ[16], user[33];
	if (r == 0 && (claim_string(claims, "typ", typ, sizeof(typ)) < 0 ||
	               strcmp(typ, "access") != 0 ||
	               claim_string(claims, "sub", user, sizeof(user)) < 0 ||
	               claim_string(claims, "sid", req->actor_session, sizeof(req->actor_session)) < 0 ||
	               claim_string(claims, "dev", req->actor_device, sizeof(req->actor_device)) < 0))
		r = sp_diag_set(&d, SP_ERR_CLAIM, "not an access token");
	json_decref(claims);
	if (r < 0)
		return unauthorized(req, d.message);

	struct db_stmt *st = NULL;
	int live = 0;
	if (db_prepare(c->db,
		       "SELECT u.email FROM sessions s JOIN users u ON u.id = s.user_id"
		       " JOIN devices v ON v.id = s.device_id"
		       " WHERE s.id = ? AND s.user_id = ? AND s.device_id = ?"
		       " AND s.revoked_at IS NULL AND s.expires_at > ?"
		       " AND u.disabled = 0 AND v.state <> 'blocked'",
		       &st) == 0) {
		db_bind_text(st, 1, req->actor_session, -1, DB_STATIC);
		db_bind_text(st, 2, user, -1, DB_STATIC);
		db_bind_text(st, 3, req->actor_device, -1, DB_STATIC);
		db_bind_int64(st, 4, c->now());
		if (db_step(st) == DB_ROW) {
			live = 1;
			const char *email = db_column_text(st, 0);
			snprintf(req->actor_label, sizeof(req->actor_label), "%s",
			         email != NULL ? (const char *)email : user);
		}
	}
	db_finalize(st);
	if (!live)
		return unauthorized(req, "the session has ended, been revoked, or its device is blocked");
	req->actor_type = "user";
	snprintf(req->actor_id, sizeof(req->actor_id), "%s", user);
	req->actor_role = ROLE_CLIENT;
	return 0;
}

/*
 * Parsed connector keys, so a connector's requests do not each pay for PEM parsing and
 * cjose key set-up. Keyed by connector id and key digest: a re-enrolled key is a miss.
 * The state check stays a database read on every request, so disabling a connector
 * takes effect at once. Used from the HTTP thread only.
 */
#define CONNECTOR_KEY_CACHE 64

static struct connector_key_entry {
	char id[33];
	char digest[65];
	struct sp_jwks keys;
} connector_key_cache[CONNECTOR_KEY_CACHE];
static size_t connector_key_next; /* round-robin replacement */

static const struct sp_jwks *connector_keys(const char *id, const char *digest, const char *pem,
                                            size_t pem_len)
{
	if (digest == NULL || pem == NULL)
		return NULL;
	for (size_t i = 0; i < CONNECTOR_KEY_CACHE; i++) {
		struct connector_key_entry *e = &connector_key_cache[i];
		if (e->keys.count == 1 && strcmp(e->id, id) == 0 && strcmp(e->digest, digest) == 0)
			return &e->keys;
	}
	EVP_PKEY *key = NULL;
	if (sp_key_from_pem(pem, pem_len, 1, &key, NULL) < 0)
		return NULL;
	struct connector_key_entry *e = &connector_key_cache[connector_key_next];
	connector_key_next = (connector_key_next + 1) % CONNECTOR_KEY_CACHE;
	sp_jwks_free(&e->keys);
	sp_jwks_init(&e->keys);
	snprintf(e->id, sizeof(e->id), "%s", id);
	snprintf(e->digest, sizeof(e->digest), "%s", digest);
	int r = sp_jwks_add_es256(&e->keys, id, key);
	EVP_PKEY_free(key);
	return r == 0 ? &e->keys : NULL;
}

void controller_gate_forget_keys(void)
{
	for (size_t i = 0; i < CONNECTOR_KEY_CACHE; i++) {
		sp_jwks_free(&connector_key_cache[i].keys);
		memset(&connector_key_cache[i], 0, sizeof(connector_key_cache[i]));
	}
	connector_key_next = 0;
}

/*
 * A connector proves itself with a short token it signs with its own enrolled key
 * (docs/protocol.md §1.4): kid and iss are its id, aud the controller, lifetime at most
 * five minutes. No shared secret exists to steal from the controller's database.
 */
static int gate_connector(struct controller *c, struct http_request *req)
{
	const char *token = bearer_token(req);
	char id[33];
	if (token == NULL || sp_token_header_string(token, strlen(token), "kid", id, sizeof(id)) < 0)
		return unauthorized(req, "this API needs a connector token signed with its enrolled key");
	struct db_stmt *st = NULL;
	const struct sp_jwks *keys = NULL;
	if (db_prepare(c->db,
		       "SELECT public_key_pem, network_id, name, public_key_digest"
		       " FROM connectors WHERE id = ? AND state = 'active'",
		       &st) == 0) {
		db_bind_text(st, 1, id, -1, DB_STATIC);
		if (db_step(st) == DB_ROW) {
			keys = connector_keys(id, (const char *)db_column_text(st, 3),
					      (const char *)db_column_text(st, 0),
					      (size_t)db_column_bytes(st, 0));
			snprintf(req->actor_network, sizeof(req->actor_network), "%s",
				 (const char *)db_column_text(st, 1));
			snprintf(req->actor_label, sizeof(req->actor_label), "%s",
				 (const char *)db_column_text(st, 2));
		}
	}
	db_finalize(st);
	if (keys == NULL)
		return unauthorized(req, "unknown, disabled or revoked connector");

	json_t *claims = NULL;
	struct sp_diag d;
	int r = sp_token_verify(token, strlen(token), keys, "ES256", &claims, &d);
	if (r == 0) {
		struct sp_token_expect e = {.issuer = id,
		                            .audience = CONNECTOR_TOKEN_AUDIENCE,
		                            .now = c->now(),
		                            .max_skew_s = 60,
		                            .require_exp = 1};
		r = sp_token_check_claims(claims, &e, &d);
	}
	if (r == 0) {
		if (!session_lifetime_within(claims, 300))
			r = sp_diag_set(&d, SP_ERR_CLAIM, "connector tokens must have iat and live at "
			                "most 300 seconds");
	}
	json_decref(claims);
	if (r < 0)
		return unauthorized(req, d.message);
	req->actor_type = "connector";
	snprintf(req->actor_id, sizeof(req->actor_id), "%s", id);
	req->actor_role = ROLE_CONNECTOR;
	return 0;
}

/*
 * The admin console: a cookie session of a person whose users.role is admin (read and
 * write) or auditor (read). Requests that change state must also carry the session's
 * X-CSRF-Token; API keys are exempt because a browser never attaches them on its own.
 */
static int gate_console(struct controller *c, struct http_request *req, unsigned flags)
{
	struct auth_console_identity who;
	int r = auth_console_authenticate(c, req, &who);
	if (r == SP_ERR_PERMISSION) {
		http_reply_error(req, 403, "csrf", "X-CSRF-Token is missing or wrong (GET /auth/session "
		                 "gives it)");
		return 1;
	}
	if (r < 0)
		return unauthorized(req, "this API needs an API key (Authorization: Bearer spk_...) "
		                    "or a console session");
	req->actor_type = "user";
	snprintf(req->actor_id, sizeof(req->actor_id), "%s", who.user_id);
	snprintf(req->actor_label, sizeof(req->actor_label), "%s", who.email);
	req->actor_role = who.role;
	if (who.role != ROLE_ADMIN && who.role != ROLE_AUDITOR) {
		http_reply_error(req, 403, "forbidden", "%s has no console role (admin or auditor)",
		                 who.email);
		return 1;
	}
	if ((flags & ROUTE_ADMIN_WRITE) && who.role != ROLE_ADMIN) {
		http_reply_error(req, 403, "forbidden", "%s is an auditor, who may only read", who.email);
		return 1;
	}
	return 0;
}

int controller_gate(struct http_request *req, void *app)
{
	struct controller *c = app;
	/* Key rotation rides on request handling: the check is one comparison when nothing is
	 * due, and the authority is only ever touched from this thread. */
	struct sp_diag d;
	if (authority_refresh(&c->authority, c->db, c->now(), &d) < 0)
		SP_LOG(SP_LOG_WARN, "signing key rotation failed", SP_LOG_STR("reason", d.message));
	/* The relay verifies with its own copy of the published keys: hand over a new set. */
	size_t jwks_len = 0;
	const char *jwks = authority_jwks(&c->authority, &jwks_len);
	relay_sync_keys(c->relay, jwks, jwks_len);
	unsigned flags = req->match.route->flags;
	if (flags == ROUTE_PUBLIC)
		return 0;
	if (flags & (ROUTE_ADMIN_READ | ROUTE_ADMIN_WRITE)) {
		const char *token = bearer_token(req);
		if (token == NULL)
			return gate_console(c, req, flags);
		struct apikey_identity who;
		int r = apikey_authenticate(c->db, token, c->now(), &who);
		if (r == SP_ERR_DATABASE) {
			http_reply_error(req, 503, "unavailable", "the store cannot be read now");
			return 1;
		}
		if (r < 0)
			return unauthorized(req, "the API key is unknown, revoked or expired");
		req->actor_type = "api_key";
		snprintf(req->actor_id, sizeof(req->actor_id), "%s", who.id);
		snprintf(req->actor_label, sizeof(req->actor_label), "%s", who.name);
		req->actor_role = who.role;
		if ((flags & ROUTE_ADMIN_WRITE) && who.role != ROLE_ADMIN) {
			http_reply_error(req, 403, "forbidden",
			                 "the API key \"%s\" has role auditor, which may only read",
			                 who.name);
			return 1;
		}
		return 0;
	}
	if (flags & ROUTE_CLIENT)
		return gate_client(c, req);
	if (flags & ROUTE_CONNECTOR)
		return gate_connector(c, req);
	return unauthorized(req, "this route admits nobody");
}
