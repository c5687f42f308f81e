/*
 * controller/auth.c — see auth.h: the browser sign-in (/auth/login, /auth/callback), client
 * sessions, service accounts and console sessions. The device flow is in auth_device.c.
 */
#include "controller/auth.h"
#include "controller/auth_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "controller/audit.h"
#include "controller/routes.h"
#include "controller/session.h"
#include "controller/store.h"
#include "shared/log.h"
#include "shared/secret.h"

const char *const auth_login_kind_names[] = {"console", "native", "device"};

int auth_open(struct controller *c, struct sp_diag *diag)
{
	struct auth_state *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return sp_diag_set(diag, SP_ERR_NOMEM, "out of memory");
	const struct controller_settings *s = &c->settings;
	sp_jwks_init(&a->oidc.jwks);
	if (s->oidc_issuer[0] != '\0') {
		int r = oidc_client_init(&a->oidc, s->oidc_issuer, s->oidc_client_id,
		                         s->oidc_client_secret,
		                         strcmp(s->oidc_token_auth, "client_secret_post") == 0, diag);
		if (r < 0) {
			free(a);
			return r;
		}
		a->configured = 1;
	}
	pthread_mutex_init(&a->oidc_lock, NULL);
	pthread_mutex_init(&a->workers_lock, NULL);
	pthread_cond_init(&a->workers_idle, NULL);
	snprintf(a->callback_uri, sizeof(a->callback_uri), "%s/auth/callback", s->public_url);
	snprintf(a->device_uri, sizeof(a->device_uri), "%s/auth/device", s->public_url);
	c->auth = a;
	return 0;
}

void auth_drain(struct controller *c)
{
	struct auth_state *a = c->auth;
	if (a == NULL)
		return;
	pthread_mutex_lock(&a->workers_lock);
	a->stopping = 1;
	while (a->workers > 0)
		pthread_cond_wait(&a->workers_idle, &a->workers_lock);
	pthread_mutex_unlock(&a->workers_lock);
}

void auth_close(struct controller *c)
{
	if (c->auth == NULL)
		return;
	auth_drain(c);
	pthread_mutex_destroy(&c->auth->oidc_lock);
	pthread_mutex_destroy(&c->auth->workers_lock);
	pthread_cond_destroy(&c->auth->workers_idle);
	oidc_client_free(&c->auth->oidc);
	OPENSSL_cleanse(c->auth, sizeof(*c->auth));
	free(c->auth);
	c->auth = NULL;
}

struct oidc_client *auth_oidc(struct controller *c)
{
	return c->auth != NULL && c->auth->configured ? &c->auth->oidc : NULL;
}

int auth_loopback_redirect_ok(const char *uri)
{
	if (uri == NULL || strlen(uri) > 512 || strchr(uri, '#') != NULL)
		return 0;
	const char *p;
	if (strncmp(uri, "http://127.0.0.1:", 17) == 0)
		p = uri + 17;
	else if (strncmp(uri, "http://[::1]:", 13) == 0)
		p = uri + 13;
	else
		return 0;
	size_t digits = 0;
	long port = 0;
	while (p[digits] >= '0' && p[digits] <= '9' && digits < 6)
		port = port * 10 + (p[digits++] - '0');
	if (digits == 0 || digits > 5 || port < 1 || port > 65535 || p[digits] != '/')
		return 0;
	for (p += digits; *p != '\0'; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '"' || *p == '<' ||
		    *p == '>' || *p == '\\')
			return 0;
	return 1;
}

/* Unreserved characters only (RFC 3986), 1..max long: safe to echo in a URL. */
static int unreserved(const char *s, size_t max)
{
	size_t n = s != NULL ? strlen(s) : 0;
	if (n == 0 || n > max)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		      ch == '-' || ch == '.' || ch == '_' || ch == '~'))
			return 0;
	}
	return 1;
}

static const char *cookie_secure(struct controller *c)
{
	return strncmp(c->settings.public_url, "https://", 8) == 0 ? "; Secure" : "";
}

/* Records a refused sign-in in its own transaction, counts it, and answers. */
void auth_refuse_sign_in(struct controller *c, struct http_request *req, unsigned status,
                           const char *reason, const char *detail, const char *client)
{
	struct sp_diag d;
	json_t *after = json_pack("{s:s, s:s, s:s}", "reason", reason, "detail", detail, "client",
	                          client != NULL ? client : "unknown");
	struct audit_event e = {.time = c->now(), .action = "auth.sign_in", .outcome = "failed",
	                        .after = after};
	audit_from_request(&e, req);
	if (store_begin(c, &d) == 0 && audit_record(c->db, &e) == 0)
		(void)store_commit(c, &d);
	else
		store_rollback(c);
	json_decref(after);
	sp_metric_add(&c->metrics.sign_in_failures, 1);
	SP_LOG(SP_LOG_WARN, "sign-in refused", SP_LOG_STR("reason", reason),
	       SP_LOG_STR("detail", detail), SP_LOG_STR("request_id", req->request_id));
	const char *code = strcmp(reason, "idp_unavailable") == 0 ? "idp_unavailable"
	                   : status >= 500                        ? "internal"
	                   : status == 401                        ? "unauthorized"
	                                                          : "sign_in_failed";
	http_reply_error(req, status, code, "sign-in refused (%s): %s", reason, detail);
}

void auth_purge_expired(struct auth_state *a, int64_t now)
{
	for (size_t i = 0; i < AUTH_PENDING_MAX; i++)
		if (a->pending[i].in_use && a->pending[i].expires <= now)
			OPENSSL_cleanse(&a->pending[i], sizeof(a->pending[i]));
	for (size_t i = 0; i < AUTH_CODES_MAX; i++)
		if (a->codes[i].in_use && a->codes[i].expires <= now)
			OPENSSL_cleanse(&a->codes[i], sizeof(a->codes[i]));
	for (size_t i = 0; i < AUTH_CONSOLE_MAX; i++)
		if (a->console[i].in_use && a->console[i].expires <= now)
			OPENSSL_cleanse(&a->console[i], sizeof(a->console[i]));
	/* Device grants linger a while past expiry so a late poll learns expired_token. */
	for (size_t i = 0; i < AUTH_DEVICE_MAX; i++)
		if (a->devices[i].in_use && a->devices[i].expires + AUTH_DEVICE_TTL_S <= now)
			OPENSSL_cleanse(&a->devices[i], sizeof(a->devices[i]));
}

struct pending_login *auth_pending_slot(struct pending_login *table, size_t n,
                                        const char *address)
{
	struct pending_login *free_slot = NULL, *own_oldest = NULL, *used_oldest = NULL,
	                     *oldest = NULL;
	size_t own = 0;
	for (size_t i = 0; i < n; i++) {
		struct pending_login *p = &table[i];
		if (!p->in_use) {
			if (free_slot == NULL)
				free_slot = p;
			continue;
		}
		if (strcmp(p->address, address) == 0) {
			own++;
			if (own_oldest == NULL || p->expires < own_oldest->expires)
				own_oldest = p;
		}
		if (p->used && (used_oldest == NULL || p->expires < used_oldest->expires))
			used_oldest = p;
		if (oldest == NULL || p->expires < oldest->expires)
			oldest = p;
	}
	if (own >= AUTH_PENDING_PER_ADDRESS && own_oldest != NULL)
		return own_oldest;
	if (free_slot != NULL)
		return free_slot;
	return used_oldest != NULL ? used_oldest : oldest;
}

/* ---- GET /auth/login ---- */

static void handle_login(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct auth_state *a = c->auth;
	if (a == NULL || !a->configured) {
		http_reply_error(req, 503, "sign_in_not_configured", "sign-in is not configured: set "
		                 "oidc_issuer, oidc_client_id and oidc_client_secret");
		return;
	}
	const char *client = http_query(req, "client");
	int native = 0;
	if (client == NULL || strcmp(client, "console") == 0) {
		client = "console";
	} else if (strcmp(client, "native") == 0) {
		native = 1;
	} else {
		http_reply_error(req, 400, "invalid_request", "client must be \"console\" or \"native\"");
		return;
	}
	const char *redirect_uri = http_query(req, "redirect_uri");
	const char *challenge = http_query(req, "code_challenge");
	const char *method = http_query(req, "code_challenge_method");
	const char *client_state = http_query(req, "state");
	if (native) {
		uint8_t raw[64];
		size_t raw_len = 0;
		if (!auth_loopback_redirect_ok(redirect_uri)) {
			http_reply_error(req, 400, "invalid_request", "redirect_uri must be a loopback URL "
			                 "http://127.0.0.1:PORT/... or http://[::1]:PORT/... (RFC 8252)");
			return;
		}
		if (challenge == NULL || strlen(challenge) != 43 ||
		    sp_jwk_base64url_decode(challenge, 43, raw, sizeof(raw), &raw_len) < 0 ||
		    raw_len != 32 || (method != NULL && strcmp(method, "S256") != 0)) {
			http_reply_error(req, 400, "invalid_request", "code_challenge must be a PKCE S256 "
			                 "challenge (43 base64url characters)");
			return;
		}
		if (!unreserved(client_state, 256)) {
			http_reply_error(req, 400, "invalid_request", "state must be 1-256 characters of "
			                 "A-Z a-z 0-9 - . _ ~");
			return;
		}
	}
	struct pending_login fresh = {.kind = native ? LOGIN_NATIVE : LOGIN_CONSOLE};
	if (native) {
		snprintf(fresh.redirect_uri, sizeof(fresh.redirect_uri), "%s", redirect_uri);
		snprintf(fresh.challenge, sizeof(fresh.challenge), "%s", challenge);
		snprintf(fresh.client_state, sizeof(fresh.client_state), "%s", client_state);
	}
	auth_start_login(c, req, &fresh);
	OPENSSL_cleanse(&fresh, sizeof(fresh));
}

/*
 * Stores a pending login made from `fresh` (kind and the kind's fields filled in) and
 * answers with the redirect to the IdP's authorization endpoint.
 */
void auth_start_login(struct controller *c, struct http_request *req,
                        const struct pending_login *template)
{
	struct auth_state *a = c->auth;
	struct sp_diag d = {{0}};
	int64_t now = c->now();
	const char *client = auth_login_kind_names[template->kind];
	if (oidc_client_discover(&a->oidc, now, &d) < 0) {
		auth_refuse_sign_in(c, req, 503, "idp_unavailable", d.message, client);
		return;
	}
	auth_purge_expired(a, now);
	struct pending_login *p = auth_pending_slot(a->pending, AUTH_PENDING_MAX, req->client_address);
	if (p->in_use && strcmp(p->address, req->client_address) != 0)
		SP_LOG(SP_LOG_WARN, "pending sign-in table full: replacing the oldest",
		       SP_LOG_STR("client", req->client_address));
	/* The browser binding: the callback must come from the browser that started here. */
	char binding[SP_SECRET_TEXT_MAX];
	const char *presented = http_cookie(req, AUTH_LOGIN_COOKIE);
	if (presented != NULL &&
	    sp_secret_check_format(LOGIN_BINDING_KIND, presented, strlen(presented)) == 0)
		snprintf(binding, sizeof(binding), "%s", presented);
	else if (sp_secret_new(LOGIN_BINDING_KIND, binding, sizeof(binding)) < 0)
		goto internal;
	struct oidc_pkce pkce;
	struct pending_login fresh = *template;
	fresh.in_use = 1;
	fresh.used = 0;
	fresh.expires = now + AUTH_PENDING_TTL_S;
	snprintf(fresh.address, sizeof(fresh.address), "%s", req->client_address);
	if (sp_random_hex(16, fresh.state, sizeof(fresh.state)) < 0 ||
	    sp_random_hex(16, fresh.nonce, sizeof(fresh.nonce)) < 0 || oidc_pkce_new(&pkce) < 0 ||
	    sp_secret_hash(binding, strlen(binding), fresh.browser_hash) < 0)
		goto internal;
	snprintf(fresh.verifier, sizeof(fresh.verifier), "%s", pkce.verifier);
	char scope[256];
	const char *groups = c->settings.oidc_groups_claim;
	snprintf(scope, sizeof(scope), "openid email profile%s%s",
	         groups[0] != '\0' && oidc_client_offers_scope(&a->oidc, groups) ? " " : "",
	         groups[0] != '\0' && oidc_client_offers_scope(&a->oidc, groups) ? groups : "");
	struct oidc_auth_request ar = {.client_id = a->oidc.client_id,
	                               .redirect_uri = a->callback_uri,
	                               .scope = scope,
	                               .state = fresh.state,
	                               .nonce = fresh.nonce,
	                               .code_challenge = pkce.challenge};
	struct sp_buf url;
	sp_buf_init(&url, 2000);
	if (oidc_authorization_url(&a->oidc.provider, &ar, &url) < 0 || sp_buf_cstr(&url) == NULL) {
		sp_buf_free(&url);
		goto internal;
	}
	char cookie[256];
	snprintf(cookie, sizeof(cookie), AUTH_LOGIN_COOKIE "=%s; Path=/auth/; HttpOnly; "
	         "SameSite=Lax; Max-Age=%d%s", binding, AUTH_PENDING_TTL_S, cookie_secure(c));
	if (http_add_header(req, "Location", (const char *)url.data) < 0) {
		sp_buf_free(&url);
		goto internal;
	}
	sp_buf_free(&url);
	http_add_header(req, "Set-Cookie", cookie);
	*p = fresh;
	OPENSSL_cleanse(&fresh, sizeof(fresh));
	OPENSSL_cleanse(&pkce, sizeof(pkce));
	OPENSSL_cleanse(binding, sizeof(binding));
	http_reply_text(req, 302, "text/plain", "", 0);
	return;
internal:
	OPENSSL_cleanse(binding, sizeof(binding));
	req->header_count = 0;
	http_reply_error(req, 500, "internal", "cannot start the sign-in");
}

/* ---- GET /auth/callback ---- */

/* A short reason code for the audit event from a validation failure. */
static const char *validation_reason(int r, const char *detail)
{
	if (strstr(detail, "azp") != NULL)
		return "azp_mismatch";
	if (strstr(detail, "nonce") != NULL)
		return "nonce_mismatch";
	if (strstr(detail, "email_verified") != NULL)
		return "email_not_verified";
	switch (r) {
	case SP_ERR_BAD_SIGNATURE: return "bad_signature";
	case SP_ERR_BAD_ALGORITHM: return "bad_algorithm";
	case SP_ERR_ISSUER: return "wrong_issuer";
	case SP_ERR_AUDIENCE: return "wrong_audience";
	case SP_ERR_EXPIRED: return "token_expired";
	case SP_ERR_NOT_YET_VALID: return "token_not_yet_valid";
	case SP_ERR_NOT_FOUND: return "unknown_signing_key";
	case SP_ERR_CLAIM: return "bad_claim";
	case SP_ERR_IO: return "idp_unavailable";
	default: return "invalid_id_token";
	}
}

int64_t auth_claim_int(const json_t *claims, const char *name, int64_t fallback)
{
	const json_t *v = json_object_get(claims, name);
	return json_is_integer(v) && json_integer_value(v) >= 0 ? (int64_t)json_integer_value(v)
	                                                        : fallback;
}

/* The amr claim as JSON array text of strings (at most 1024 bytes), or "[]". */
void auth_amr_text(const json_t *claims, char *out, size_t size)
{
	snprintf(out, size, "[]");
	const json_t *amr = json_object_get(claims, "amr");
	if (!json_is_array(amr))
		return;
	size_t i;
	const json_t *v;
	json_array_foreach(amr, i, v) if (!json_is_string(v)) return;
	char *text = json_dumps(amr, JSON_COMPACT);
	if (text != NULL && strlen(text) < size && strlen(text) <= 1024)
		snprintf(out, size, "%s", text);
	free(text);
}

void auth_console_end_user(struct controller *c, const char *user_id)
{
	struct auth_state *a = c->auth;
	for (size_t i = 0; a != NULL && i < AUTH_CONSOLE_MAX; i++)
		if (a->console[i].in_use && strcmp(a->console[i].user_id, user_id) == 0)
			OPENSSL_cleanse(&a->console[i], sizeof(a->console[i]));
}

int auth_console_create(struct controller *c, const char *user_id,
                        char secret[SP_SECRET_TEXT_MAX], char csrf[33])
{
	struct auth_state *a = c->auth;
	int64_t now = c->now();
	secret[0] = '\0';
	csrf[0] = '\0';
	if (a == NULL)
		return SP_ERR_INTERNAL;
	auth_purge_expired(a, now);
	struct console_session *slot = NULL;
	for (size_t i = 0; i < AUTH_CONSOLE_MAX && slot == NULL; i++)
		if (!a->console[i].in_use)
			slot = &a->console[i];
	if (slot == NULL) { /* full: the session closest to its end makes room */
		slot = &a->console[0];
		for (size_t i = 1; i < AUTH_CONSOLE_MAX; i++)
			if (a->console[i].expires < slot->expires)
				slot = &a->console[i];
	}
	struct console_session fresh = {.in_use = 1, .expires = now + AUTH_CONSOLE_TTL_S};
	if (sp_secret_new(CONSOLE_KIND, secret, SP_SECRET_TEXT_MAX) < 0 ||
	    sp_secret_hash(secret, strlen(secret), fresh.hash) < 0 ||
	    sp_random_hex(16, fresh.csrf, sizeof(fresh.csrf)) < 0) {
		OPENSSL_cleanse(secret, SP_SECRET_TEXT_MAX);
		secret[0] = '\0';
		return SP_ERR_CRYPTO;
	}
	snprintf(fresh.user_id, sizeof(fresh.user_id), "%s", user_id);
	snprintf(csrf, 33, "%s", fresh.csrf);
	*slot = fresh;
	return 0;
}

/*
 * The IdP part of a callback (code exchange, ID token validation, userinfo) runs on a
 * worker thread while the request is suspended, so a slow IdP never holds the HTTP
 * thread: connectors' and clients' requests go on being answered. The worker only talks
 * to the IdP and touches the OIDC client under oidc_lock; everything touching the store
 * runs back on the HTTP thread once the worker resumes the request.
 */
struct callback_job {
	struct controller *c;
	struct http_request *req;
	/* Copied from the pending login, which the HTTP thread may reuse meanwhile. */
	int kind;
	char code[2049];
	char verifier[64];
	char nonce[33];
	char redirect_uri[513];
	char challenge[64];
	char client_state[257];
	char user_code[9];
	/* Results. */
	int done;
	int r;
	unsigned status;
	const char *reason;
	struct sp_diag diag;
	json_t *claims;
	json_t *userinfo;
};

static void callback_job_free(void *state)
{
	struct callback_job *j = state;
	if (j == NULL)
		return;
	json_decref(j->claims);
	json_decref(j->userinfo);
	OPENSSL_cleanse(j, sizeof(*j));
	free(j);
}

/* The IdP round trips of a callback. Any thread; serialised on oidc_lock. */
static void callback_work(struct callback_job *j)
{
	struct auth_state *a = j->c->auth;
	struct oidc_token_response tokens;
	memset(&tokens, 0, sizeof(tokens));
	pthread_mutex_lock(&a->oidc_lock);
	j->status = 400;
	int r = oidc_client_exchange_code(&a->oidc, j->code, a->callback_uri, j->verifier, &tokens,
	                                  &j->diag);
	if (r < 0) {
		j->status = r == SP_ERR_IO ? 503 : 400;
		j->reason = r == SP_ERR_IO ? "idp_unavailable" : "token_exchange_failed";
		goto out;
	}
	r = oidc_client_validate_id_token(&a->oidc, tokens.id_token, j->nonce, j->c->now(),
	                                  &j->claims, &j->diag);
	if (r < 0) {
		j->reason = validation_reason(r, j->diag.message);
		goto out;
	}
	const char *groups_claim = j->c->settings.oidc_groups_claim;
	if (groups_claim[0] != '\0' && json_object_get(j->claims, groups_claim) == NULL &&
	    a->oidc.provider.userinfo_endpoint[0] != '\0') {
		r = oidc_client_userinfo(&a->oidc, tokens.access_token,
		                         json_string_value(json_object_get(j->claims, "sub")),
		                         &j->userinfo, &j->diag);
		if (r < 0)
			j->reason = "userinfo_failed";
	}
out:
	pthread_mutex_unlock(&a->oidc_lock);
	j->r = r;
	oidc_token_response_clear(&tokens);
}

static void *callback_worker(void *arg)
{
	struct callback_job *j = arg;
	struct auth_state *a = j->c->auth;
	callback_work(j);
	pthread_mutex_lock(&a->workers_lock);
	j->done = 1;
	/* After the resume the HTTP thread may finish and free the job: no touching it. */
	http_resume(j->req);
	a->workers--;
	pthread_cond_broadcast(&a->workers_idle);
	pthread_mutex_unlock(&a->workers_lock);
	return NULL;
}

/* Back on the HTTP thread: provisioning and the answer for each kind of sign-in. */
static void callback_finish(struct controller *c, struct http_request *req,
                            struct callback_job *j)
{
	struct auth_state *a = c->auth;
	struct sp_diag d = {{0}};
	const char *client = auth_login_kind_names[j->kind];
	int64_t now = c->now();
	if (j->r < 0) {
		auth_refuse_sign_in(c, req, j->status, j->reason, j->diag.message, client);
		return;
	}
	const char *groups_claim = c->settings.oidc_groups_claim;
	const json_t *groups = NULL;
	if (groups_claim[0] != '\0') {
		groups = json_object_get(j->claims, groups_claim);
		if (groups == NULL)
			groups = json_object_get(j->userinfo, groups_claim);
	}
	if (groups != NULL && !json_is_array(groups)) {
		auth_refuse_sign_in(c, req, 400, "bad_claim", "the groups claim is not an array", client);
		return;
	}
	struct session_user user;
	int r = session_provision_user(c, j->claims, groups, client, req, &user, &d);
	if (r < 0) {
		auth_refuse_sign_in(c, req, r == SP_ERR_PERMISSION ? 403 : 500,
		               r == SP_ERR_PERMISSION ? "user_disabled" : "store_failed", d.message,
		               client);
		return;
	}
	sp_metric_add(&c->metrics.sign_ins, 1);
	if (j->kind == LOGIN_DEVICE) {
		auth_device_signed_in(c, req, j->user_code, &user, j->claims);
		return;
	}
	if (j->kind == LOGIN_CONSOLE) {
		char cookie[256], value[SP_SECRET_TEXT_MAX], csrf[33];
		if (auth_console_create(c, user.id, value, csrf) < 0) {
			http_reply_error(req, 500, "internal", "cannot make a console session");
			return;
		}
		snprintf(cookie, sizeof(cookie), AUTH_CONSOLE_COOKIE "=%s; Path=/; HttpOnly; "
		         "SameSite=Lax; Max-Age=%d%s", value, AUTH_CONSOLE_TTL_S, cookie_secure(c));
		http_add_header(req, "Set-Cookie", cookie);
		OPENSSL_cleanse(cookie, sizeof(cookie));
		OPENSSL_cleanse(value, sizeof(value));
		http_add_header(req, "Location", "/admin/");
		http_reply_text(req, 302, "text/plain", "", 0);
		return;
	}
	/* Native: a one-time code for the client's loopback listener. */
	auth_purge_expired(a, now);
	struct native_code *slot = NULL;
	for (size_t i = 0; i < AUTH_CODES_MAX && slot == NULL; i++)
		if (!a->codes[i].in_use)
			slot = &a->codes[i];
	char secret[SP_SECRET_TEXT_MAX];
	if (slot == NULL || sp_secret_new(NATIVE_CODE_KIND, secret, sizeof(secret)) < 0) {
		http_reply_error(req, 503, "busy", "too many sign-ins in progress; try again shortly");
		return;
	}
	struct native_code fresh = {.in_use = 1, .expires = now + AUTH_CODE_TTL_S,
	                            .auth_time = auth_claim_int(j->claims, "auth_time", now)};
	(void)sp_secret_hash(secret, strlen(secret), fresh.hash);
	snprintf(fresh.user_id, sizeof(fresh.user_id), "%s", user.id);
	snprintf(fresh.challenge, sizeof(fresh.challenge), "%s", j->challenge);
	auth_amr_text(j->claims, fresh.amr, sizeof(fresh.amr));
	*slot = fresh;
	char location[1100];
	snprintf(location, sizeof(location), "%s%ccode=%s&state=%s", j->redirect_uri,
	         strchr(j->redirect_uri, '?') != NULL ? '&' : '?', secret, j->client_state);
	http_add_header(req, "Location", location);
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(location, sizeof(location));
	http_reply_text(req, 302, "text/plain", "", 0);
}

static void handle_callback(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct auth_state *a = c->auth;
	if (req->state != NULL) { /* resumed: the worker is done */
		struct callback_job *j = req->state;
		pthread_mutex_lock(&a->workers_lock);
		int done = j->done;
		pthread_mutex_unlock(&a->workers_lock);
		if (done)
			callback_finish(c, req, j);
		else
			http_suspend(req);
		return;
	}
	int64_t now = c->now();
	if (a == NULL || !a->configured) {
		http_reply_error(req, 503, "sign_in_not_configured", "sign-in is not configured");
		return;
	}
	const char *state = http_query(req, "state");
	if (state == NULL || state[0] == '\0') {
		auth_refuse_sign_in(c, req, 400, "state_missing", "the callback carries no state", NULL);
		return;
	}
	struct pending_login *p = NULL;
	for (size_t i = 0; i < AUTH_PENDING_MAX && p == NULL; i++)
		if (a->pending[i].in_use && strlen(state) == strlen(a->pending[i].state) &&
		    CRYPTO_memcmp(state, a->pending[i].state, strlen(state)) == 0)
			p = &a->pending[i];
	if (p == NULL) {
		auth_refuse_sign_in(c, req, 400, "state_unknown", "the sign-in state is unknown or expired; "
		               "start again", NULL);
		return;
	}
	const char *client = auth_login_kind_names[p->kind];
	if (p->used) {
		auth_refuse_sign_in(c, req, 400, "state_replayed", "this sign-in was already completed; "
		               "start again", client);
		return;
	}
	if (p->expires <= now) {
		OPENSSL_cleanse(p, sizeof(*p));
		auth_refuse_sign_in(c, req, 400, "state_expired", "the sign-in took longer than 10 minutes; "
		               "start again", client);
		return;
	}
	p->used = 1; /* one attempt per state, whatever happens next */
	const char *binding = http_cookie(req, AUTH_LOGIN_COOKIE);
	char hash[SP_SECRET_HASH_HEX];
	if (binding == NULL || sp_secret_hash(binding, strlen(binding), hash) < 0 ||
	    !sp_secret_hash_equal(hash, p->browser_hash)) {
		auth_refuse_sign_in(c, req, 400, "state_not_bound_to_browser", "the callback did not come "
		               "from the browser that started the sign-in", client);
		return;
	}
	/* RFC 9207: an IdP that names itself in the callback must name our issuer (mix-up). */
	const char *callback_iss = http_query(req, "iss");
	if (callback_iss != NULL && strcmp(callback_iss, a->oidc.issuer) != 0) {
		auth_refuse_sign_in(c, req, 400, "wrong_issuer", "the callback's iss names another "
		               "identity provider", client);
		return;
	}
	const char *error = http_query(req, "error");
	if (error != NULL) {
		char detail[200];
		snprintf(detail, sizeof(detail), "the IdP answered error \"%.60s\"", error);
		auth_refuse_sign_in(c, req, 400, "idp_error", detail, client);
		return;
	}
	const char *code = http_query(req, "code");
	if (code == NULL || code[0] == '\0' || strlen(code) > 2048) {
		auth_refuse_sign_in(c, req, 400, "code_missing", "the callback carries no code", client);
		return;
	}
	struct callback_job *j = calloc(1, sizeof(*j));
	if (j == NULL) {
		http_reply_error(req, 503, "busy", "out of memory");
		return;
	}
	j->c = c;
	j->req = req;
	j->kind = p->kind;
	snprintf(j->code, sizeof(j->code), "%s", code);
	snprintf(j->verifier, sizeof(j->verifier), "%s", p->verifier);
	snprintf(j->nonce, sizeof(j->nonce), "%s", p->nonce);
	snprintf(j->redirect_uri, sizeof(j->redirect_uri), "%s", p->redirect_uri);
	snprintf(j->challenge, sizeof(j->challenge), "%s", p->challenge);
	snprintf(j->client_state, sizeof(j->client_state), "%s", p->client_state);
	snprintf(j->user_code, sizeof(j->user_code), "%s", p->user_code);
	/* The state stays to recognise a replay; the secrets of this attempt move to the job. */
	OPENSSL_cleanse(p->verifier, sizeof(p->verifier));
	OPENSSL_cleanse(p->nonce, sizeof(p->nonce));
	req->state = j;
	req->state_free = callback_job_free;

	pthread_mutex_lock(&a->workers_lock);
	int started = 0;
	if (!a->stopping && a->workers < AUTH_WORKERS_MAX) {
		pthread_t thread;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&thread, &attr, callback_worker, j) == 0) {
			a->workers++;
			started = 1;
			http_suspend(req); /* inside the lock: the worker cannot resume before this */
		}
		pthread_attr_destroy(&attr);
	}
	pthread_mutex_unlock(&a->workers_lock);
	if (!started)
		http_reply_error(req, 503, "busy", "too many sign-ins in progress; try again shortly");
}

/* ---- client sessions ---- */

/* The body's string members named in `names`; any other member or type is a 400. */
int auth_body_strings(struct http_request *req, json_t *body, const char *const *names,
                        const char **values, const int *required)
{
	const char *key;
	json_t *v;
	json_object_foreach(body, key, v) {
		size_t i;
		for (i = 0; names[i] != NULL && strcmp(names[i], key) != 0; i++)
			;
		if (names[i] == NULL) {
			http_reply_error(req, 400, "invalid_request", "unknown field \"%.64s\"", key);
			return -1;
		}
		if (!json_is_string(v)) {
			http_reply_error(req, 400, "invalid_request", "%s must be a string", key);
			return -1;
		}
		values[i] = json_string_value(v);
	}
	for (size_t i = 0; names[i] != NULL; i++)
		if (required[i] && values[i] == NULL) {
			http_reply_error(req, 400, "invalid_request", "%s is required", names[i]);
			return -1;
		}
	return 0;
}

void auth_reply_grant(struct http_request *req, struct controller *c, unsigned status,
                        struct session_grant *g)
{
	json_t *body = session_response(c, g);
	if (body == NULL)
		http_reply_error(req, 500, "internal", "cannot build the session answer");
	else
		http_reply_json(req, status, body);
}

static void handle_session_create(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct auth_state *a = c->auth;
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return;
	static const char *const names[] = {"code", "code_verifier", "device_public_key_pem",
	                                    "device_name", NULL};
	static const int required[] = {1, 1, 1, 0};
	const char *v[4] = {NULL, NULL, NULL, NULL};
	struct sp_diag d = {{0}};
	struct session_grant g;
	memset(&g, 0, sizeof(g));
	if (auth_body_strings(req, body, names, v, required) < 0)
		goto out;
	int64_t now = c->now();
	char hash[SP_SECRET_HASH_HEX];
	struct native_code *code = NULL;
	if (a != NULL && sp_secret_check_format(NATIVE_CODE_KIND, v[0], strlen(v[0])) == 0 &&
	    sp_secret_hash(v[0], strlen(v[0]), hash) == 0)
		for (size_t i = 0; i < AUTH_CODES_MAX && code == NULL; i++)
			if (a->codes[i].in_use && sp_secret_hash_equal(a->codes[i].hash, hash))
				code = &a->codes[i];
	if (code == NULL || code->expires <= now) {
		auth_refuse_sign_in(c, req, 400, "code_unknown", "code is unknown, already used or expired; "
		               "sign in again", "native");
		goto out;
	}
	struct native_code held = *code;
	OPENSSL_cleanse(code, sizeof(*code)); /* once only, even when the verifier is wrong */
	char challenge[64];
	if (oidc_pkce_challenge(v[1], challenge) < 0 || strlen(challenge) != strlen(held.challenge) ||
	    CRYPTO_memcmp(challenge, held.challenge, strlen(challenge)) != 0) {
		OPENSSL_cleanse(&held, sizeof(held));
		auth_refuse_sign_in(c, req, 400, "pkce_mismatch", "code_verifier does not match the "
		               "code_challenge sent to /auth/login", "native");
		goto out;
	}
	int r = session_create(c, held.user_id, "oidc", held.auth_time, held.amr, v[2], v[3], req, &g,
	                       &d);
	OPENSSL_cleanse(&held, sizeof(held));
	if (r == SP_ERR_INVALID)
		http_reply_error(req, 400, "invalid_request", "%s", d.message);
	else if (r == SP_ERR_EXISTS)
		http_reply_error(req, 409, "device_key_taken", "%s", d.message);
	else if (r == SP_ERR_PERMISSION)
		http_reply_error(req, 403, "forbidden", "%s", d.message);
	else if (r < 0)
		http_reply_error(req, 500, "internal", "%s", d.message);
	else
		auth_reply_grant(req, c, 201, &g);
out:
	session_grant_clear(&g);
	json_decref(body);
}

static void handle_session_refresh(struct http_request *req, void *app)
{
	struct controller *c = app;
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return;
	static const char *const names[] = {"refresh_token", NULL};
	static const int required[] = {1};
	const char *v[1] = {NULL};
	struct sp_diag d = {{0}};
	struct session_grant g;
	memset(&g, 0, sizeof(g));
	if (auth_body_strings(req, body, names, v, required) < 0)
		goto out;
	int r = session_refresh(c, v[0], req, &g, &d);
	if (r == SP_ERR_DATABASE) {
		http_reply_error(req, 503, "unavailable", "%s", d.message);
	} else if (r < 0) {
		http_reply_error(req, 401, "invalid_grant", "%s", d.message);
		http_add_header(req, "WWW-Authenticate", "Bearer realm=\"sallyport\"");
	} else {
		auth_reply_grant(req, c, 200, &g);
	}
out:
	session_grant_clear(&g);
	json_decref(body);
}

static void handle_session_logout(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct sp_diag d = {{0}};
	if (session_revoke(c, req->actor_session, "sign_out", req, &d) < 0) {
		http_reply_error(req, 503, "unavailable", "%s", d.message);
		return;
	}
	http_reply_json(req, 200, json_pack("{s:s}", "status", "signed_out"));
}

/* POST /api/client/v1/session/service: a service account signs in with its key. */
static void handle_session_service(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct auth_state *a = c->auth;
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return;
	static const char *const names[] = {"assertion", "device_public_key_pem", "device_name",
	                                    NULL};
	static const int required[] = {1, 1, 0};
	const char *v[3] = {NULL, NULL, NULL};
	struct sp_diag d = {{0}};
	struct session_grant g;
	memset(&g, 0, sizeof(g));
	char jkt[SP_JWK_THUMBPRINT_LEN + 1], user_id[33], jti[129];
	int64_t exp = 0, now = c->now();
	if (auth_body_strings(req, body, names, v, required) < 0)
		goto out;
	if (session_key_thumbprint(v[1], jkt) < 0) {
		http_reply_error(req, 400, "invalid_request", "device_public_key_pem must be a P-256 "
		                 "public key in PEM form");
		goto out;
	}
	int r = session_service_verify(c, v[0], jkt, user_id, jti, &exp, &d);
	if (r < 0) {
		auth_refuse_sign_in(c, req, 401, "bad_assertion", d.message, "service");
		goto out;
	}
	/* Each assertion once: a copy replayed within its lifetime is refused. */
	struct seen_jti *slot = NULL;
	for (size_t i = 0; a != NULL && i < AUTH_JTI_MAX; i++) {
		if (a->jtis[i].expires > now && strcmp(a->jtis[i].jti, jti) == 0) {
			auth_refuse_sign_in(c, req, 401, "assertion_replayed", "this assertion (jti) was "
			               "already used", "service");
			goto out;
		}
		if (a->jtis[i].expires <= now && slot == NULL)
			slot = &a->jtis[i];
	}
	if (slot == NULL) {
		http_reply_error(req, 503, "busy", "too many service sign-ins in progress; try again "
		                 "shortly");
		goto out;
	}
	slot->expires = exp + 60; /* past exp and its allowed skew */
	snprintf(slot->jti, sizeof(slot->jti), "%s", jti);
	r = session_create(c, user_id, "service_key", now, "[]", v[1], v[2], req, &g, &d);
	if (r == SP_ERR_EXISTS)
		http_reply_error(req, 409, "device_key_taken", "%s", d.message);
	else if (r == SP_ERR_PERMISSION)
		http_reply_error(req, 403, "forbidden", "%s", d.message);
	else if (r < 0)
		http_reply_error(req, r == SP_ERR_INVALID ? 400 : 500,
		                 r == SP_ERR_INVALID ? "invalid_request" : "internal", "%s", d.message);
	else
		auth_reply_grant(req, c, 201, &g);
out:
	session_grant_clear(&g);
	json_decref(body);
}

/* ---- console sessions ---- */

static struct console_session *find_console(struct controller *c, struct http_request *req)
{
	struct auth_state *a = c->auth;
	const char *cookie = http_cookie(req, AUTH_CONSOLE_COOKIE);
	char hash[SP_SECRET_HASH_HEX];
	if (a == NULL || cookie == NULL ||
	    sp_secret_check_format(CONSOLE_KIND, cookie, strlen(cookie)) < 0 ||
	    sp_secret_hash(cookie, strlen(cookie), hash) < 0)
		return NULL;
	int64_t now = c->now();
	for (size_t i = 0; i < AUTH_CONSOLE_MAX; i++)
		if (a->console[i].in_use && a->console[i].expires > now &&
		    sp_secret_hash_equal(a->console[i].hash, hash))
			return &a->console[i];
	return NULL;
}

int auth_console_authenticate(struct controller *c, struct http_request *req,
                              struct auth_console_identity *out)
{
	memset(out, 0, sizeof(*out));
	struct console_session *s = find_console(c, req);
	if (s == NULL)
		return SP_ERR_NOT_FOUND;
	struct db_stmt *st = NULL;
	int r = SP_ERR_NOT_FOUND;
	if (db_prepare(c->db, "SELECT email, role FROM users WHERE id = ? AND disabled = 0", &st) ==
	    0) {
		db_bind_text(st, 1, s->user_id, -1, DB_STATIC);
		if (db_step(st) == DB_ROW) {
			const char *email = (const char *)db_column_text(st, 0);
			const char *role = (const char *)db_column_text(st, 1);
			snprintf(out->email, sizeof(out->email), "%s", email != NULL ? email : "");
			out->role = strcmp(role, "admin") == 0     ? ROLE_ADMIN
			            : strcmp(role, "auditor") == 0 ? ROLE_AUDITOR
			                                           : ROLE_NONE;
			snprintf(out->user_id, sizeof(out->user_id), "%s", s->user_id);
			r = 0;
		}
	}
	db_finalize(st);
	if (r < 0)
		return r;
	if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
		const char *token = http_header(req, "X-CSRF-Token");
		if (token == NULL || strlen(token) != strlen(s->csrf) ||
		    CRYPTO_memcmp(token, s->csrf, strlen(s->csrf)) != 0)
			return SP_ERR_PERMISSION;
	}
	return 0;
}

static void handle_console_session(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct auth_console_identity who;
	struct console_session *s = find_console(c, req);
	if (s == NULL || auth_console_authenticate(c, req, &who) < 0) {
		http_reply_error(req, 401, "unauthorized", "no console session: sign in at /auth/login");
		return;
	}
	const char *role = who.role == ROLE_ADMIN ? "admin" : who.role == ROLE_AUDITOR ? "auditor"
	                                                                               : "user";
	http_reply_json(req, 200,
	                json_pack("{s:{s:s, s:s, s:s}, s:s, s:I}", "user", "id", who.user_id,
	                          "email", who.email, "role", role, "csrf_token", s->csrf,
	                          "expires_at", (json_int_t)s->expires));
}

static void handle_console_logout(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct auth_console_identity who;
	struct console_session *s = find_console(c, req);
	int r = s != NULL ? auth_console_authenticate(c, req, &who) : SP_ERR_NOT_FOUND;
	if (r == SP_ERR_PERMISSION) {
		http_reply_error(req, 403, "csrf", "X-CSRF-Token is missing or wrong (GET /auth/session "
		                 "gives it)");
		return;
	}
	if (r < 0) {
		http_reply_error(req, 401, "unauthorized", "no console session");
		return;
	}
	OPENSSL_cleanse(s, sizeof(*s));
	struct sp_diag d;
	struct audit_event e = {.time = c->now(), .action = "auth.sign_out", .target_type = "user",
	                        .target_id = who.user_id};
	audit_from_request(&e, req);
	e.actor_type = "user";
	e.actor_id = who.user_id;
	e.actor_label = who.email;
	if (store_begin(c, &d) == 0 && audit_record(c->db, &e) == 0)
		(void)store_commit(c, &d);
	else
		store_rollback(c);
	char cookie[160];
	snprintf(cookie, sizeof(cookie), AUTH_CONSOLE_COOKIE "=; Path=/; HttpOnly; SameSite=Lax; "
	         "Max-Age=0%s", cookie_secure(c));
	http_add_header(req, "Set-Cookie", cookie);
	http_reply_json(req, 200, json_pack("{s:s}", "status", "signed_out"));
}


const struct route auth_routes[] = {
	{"GET", "/auth/login", (void *)handle_login, ROUTE_PUBLIC},
	{"GET", "/auth/callback", (void *)handle_callback, ROUTE_PUBLIC},
	{"GET", "/auth/session", (void *)handle_console_session, ROUTE_PUBLIC},
	{"POST", "/auth/logout", (void *)handle_console_logout, ROUTE_PUBLIC},
	{"POST", "/auth/device/code", (void *)auth_handle_device_code, ROUTE_PUBLIC},
	{"GET", "/auth/device", (void *)auth_handle_device_page, ROUTE_PUBLIC},
	{"POST", "/auth/device/approve", (void *)auth_handle_device_approve, ROUTE_PUBLIC},
	{"POST", "/auth/device/token", (void *)auth_handle_device_token, ROUTE_PUBLIC},
	{"POST", "/api/client/v1/session", (void *)handle_session_create, ROUTE_PUBLIC},
	{"POST", "/api/client/v1/session/service", (void *)handle_session_service, ROUTE_PUBLIC},
	{"POST", "/api/client/v1/session/refresh", (void *)handle_session_refresh, ROUTE_PUBLIC},
	{"POST", "/api/client/v1/session/logout", (void *)handle_session_logout, ROUTE_CLIENT},
};
const size_t auth_route_count = sizeof(auth_routes) / sizeof(auth_routes[0]);
