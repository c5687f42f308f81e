/*
 * controller/auth_device.c — the device authorization grant (RFC 8628) for headless
 * machines: POST /auth/device/code, the user-code page GET /auth/device (which starts the
 * browser sign-in of controller/auth.c for that code), the confirmation POST
 * /auth/device/approve, and polling at POST /auth/device/token. See docs/auth.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "controller/audit.h"
#include "controller/auth_internal.h"
#include "controller/store.h"
#include "shared/keys.h"
#include "shared/log.h"

#define DEVICE_CODE_KIND "spd"
#define DEVICE_CODE_ALPHABET "BCDFGHJKLMNPQRSTVWXZ" /* no vowels: no words, no 0/O, 1/I */

static void html_escaped(struct sp_buf *b, const char *text)
{
	for (; *text != '\0'; text++) {
		switch (*text) {
		case '<': sp_buf_put_str(b, "&lt;"); break;
		case '>': sp_buf_put_str(b, "&gt;"); break;
		case '&': sp_buf_put_str(b, "&amp;"); break;
		case '"': sp_buf_put_str(b, "&quot;"); break;
		case '\'': sp_buf_put_str(b, "&#39;"); break;
		default: sp_buf_put(b, text, 1);
		}
	}
}

/* A small HTML page: title, then paragraphs/forms given as ready HTML (body_html). */
static void reply_page(struct http_request *req, unsigned status, const char *id,
                       const char *title, const char *body_html)
{
	struct sp_buf b;
	sp_buf_init(&b, 64 * 1024);
	sp_buf_printf(&b, "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sallyport: ");
	html_escaped(&b, title);
	sp_buf_printf(&b, "</title></head><body><h1 id=\"%s\">", id);
	html_escaped(&b, title);
	sp_buf_printf(&b, "</h1>%s</body></html>", body_html);
	http_reply_text(req, status, "text/html; charset=utf-8", (const char *)b.data, b.len);
	/* Our pages are never framed (clickjacking of the approval button). */
	http_add_header(req, "X-Frame-Options", "DENY");
	http_add_header(req, "Content-Security-Policy", "default-src 'none'; form-action 'self'; "
	                "frame-ancestors 'none'");
	sp_buf_free(&b);
}

int auth_user_code_normalize(const char *in, char out[9])
{
	size_t n = 0;
	for (; in != NULL && *in != '\0'; in++) {
		if (*in == '-' || *in == ' ')
			continue;
		char ch = (char)(*in >= 'a' && *in <= 'z' ? *in - 'a' + 'A' : *in);
		if (n == 8 || strchr(DEVICE_CODE_ALPHABET, ch) == NULL || ch == '\0')
			return 0;
		out[n++] = ch;
	}
	out[n] = '\0';
	return n == 8;
}

static struct device_grant *find_device_by_user_code(struct auth_state *a, const char *code)
{
	for (size_t i = 0; i < AUTH_DEVICE_MAX; i++)
		if (a->devices[i].in_use && strcmp(a->devices[i].user_code, code) == 0)
			return &a->devices[i];
	return NULL;
}

/* Called from the callback once the person is signed in: asks them to confirm. */
void auth_device_signed_in(struct controller *c, struct http_request *req,
                             const char *user_code, const struct session_user *user,
                             const json_t *claims)
{
	struct device_grant *g = find_device_by_user_code(c->auth, user_code);
	if (g == NULL || g->status != DEVICE_PENDING || g->expires <= c->now()) {
		reply_page(req, 400, "device-error", "This device code has expired",
		           "<p>Start the sign-in on the device again.</p>");
		return;
	}
	char confirm[33];
	if (sp_random_hex(16, confirm, sizeof(confirm)) < 0 ||
	    sp_secret_hash(confirm, strlen(confirm), g->confirm_hash) < 0) {
		http_reply_error(req, 500, "internal", "cannot make a confirmation");
		return;
	}
	g->status = DEVICE_SIGNED_IN;
	snprintf(g->user_id, sizeof(g->user_id), "%s", user->id);
	snprintf(g->email, sizeof(g->email), "%s", user->email);
	g->auth_time = auth_claim_int(claims, "auth_time", c->now());
	auth_amr_text(claims, g->amr, sizeof(g->amr));
	struct sp_buf b;
	sp_buf_init(&b, 16 * 1024);
	sp_buf_printf(&b, "<p>Sign in the device <b id=\"device-name\">");
	html_escaped(&b, g->device_name[0] != '\0' ? g->device_name : "(unnamed)");
	sp_buf_printf(&b, "</b> showing code <b id=\"user-code\">%.4s-%.4s</b> as <b>", g->user_code,
	              g->user_code + 4);
	html_escaped(&b, user->email);
	sp_buf_printf(&b, "</b>? Only approve a device you are using right now.</p>"
	              "<form id=\"device-confirm\" method=\"post\" action=\"/auth/device/approve\">"
	              "<input type=\"hidden\" name=\"confirm\" value=\"%s\">"
	              "<button id=\"approve\" name=\"decision\" value=\"approve\">Approve</button> "
	              "<button id=\"deny\" name=\"decision\" value=\"deny\">Deny</button></form>",
	              confirm);
	if (sp_buf_cstr(&b) != NULL)
		reply_page(req, 200, "device-confirm-title", "Approve this device?",
		           (const char *)b.data);
	else
		http_reply_error(req, 500, "internal", "cannot build the page");
	sp_buf_free(&b);
	OPENSSL_cleanse(confirm, sizeof(confirm));
}

void auth_handle_device_code(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct auth_state *a = c->auth;
	if (a == NULL || !a->configured) {
		http_reply_error(req, 503, "sign_in_not_configured", "sign-in is not configured");
		return;
	}
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return;
	static const char *const names[] = {"device_public_key_pem", "device_name", NULL};
	static const int required[] = {1, 0};
	const char *v[2] = {NULL, NULL};
	EVP_PKEY *key = NULL;
	char secret[SP_SECRET_TEXT_MAX] = "";
	if (auth_body_strings(req, body, names, v, required) < 0)
		goto out;
	if (strlen(v[0]) >= sizeof(a->devices[0].public_key_pem) ||
	    sp_key_from_pem(v[0], strlen(v[0]), 1, &key, NULL) < 0 || !sp_key_is_p256(key) ||
	    sp_key_has_private(key)) {
		http_reply_error(req, 400, "invalid_request", "device_public_key_pem must be a P-256 "
		                 "public key in PEM form");
		goto out;
	}
	if (v[1] != NULL && (strlen(v[1]) == 0 || strlen(v[1]) > 256)) {
		http_reply_error(req, 400, "invalid_request", "device_name must be 1-256 characters");
		goto out;
	}
	int64_t now = c->now();
	auth_purge_expired(a, now);
	struct device_grant *slot = auth_device_slot(a->devices, AUTH_DEVICE_MAX,
	                                             req->client_address);
	if (slot->in_use && strcmp(slot->address, req->client_address) != 0)
		SP_LOG(SP_LOG_WARN, "device grant table full: replacing the oldest",
		       SP_LOG_STR("client", req->client_address));
	struct device_grant fresh = {.in_use = 1, .expires = now + AUTH_DEVICE_TTL_S,
	                             .interval = AUTH_DEVICE_INTERVAL_S};
	snprintf(fresh.address, sizeof(fresh.address), "%s", req->client_address);
	/* 8 characters of 20 (about 2^34 codes), unbiased: bytes >= 240 are dropped. */
	for (int attempt = 0; attempt < 8; attempt++) {
		uint8_t rnd[32];
		size_t n = 0;
		if (RAND_bytes(rnd, sizeof(rnd)) != 1)
			goto internal;
		for (size_t i = 0; i < sizeof(rnd) && n < 8; i++)
			if (rnd[i] < 240)
				fresh.user_code[n++] = DEVICE_CODE_ALPHABET[rnd[i] % 20];
		fresh.user_code[n] = '\0';
		if (n == 8 && find_device_by_user_code(a, fresh.user_code) == NULL)
			break;
		fresh.user_code[0] = '\0';
	}
	if (strlen(fresh.user_code) != 8 ||
	    sp_secret_new(DEVICE_CODE_KIND, secret, sizeof(secret)) < 0 ||
	    sp_secret_hash(secret, strlen(secret), fresh.device_code_hash) < 0)
		goto internal;
	snprintf(fresh.public_key_pem, sizeof(fresh.public_key_pem), "%s", v[0]);
	snprintf(fresh.device_name, sizeof(fresh.device_name), "%s", v[1] != NULL ? v[1] : "");
	*slot = fresh;
	char user_code[10], complete[700];
	snprintf(user_code, sizeof(user_code), "%.4s-%.4s", fresh.user_code, fresh.user_code + 4);
	snprintf(complete, sizeof(complete), "%s?user_code=%s", a->device_uri, user_code);
	http_reply_json(req, 200,
	                json_pack("{s:s, s:s, s:s, s:s, s:i, s:i}", "device_code", secret,
	                          "user_code", user_code, "verification_uri", a->device_uri,
	                          "verification_uri_complete", complete, "expires_in",
	                          AUTH_DEVICE_TTL_S, "interval", AUTH_DEVICE_INTERVAL_S));
	goto out;
internal:
	http_reply_error(req, 500, "internal", "cannot make a device code");
out:
	OPENSSL_cleanse(secret, sizeof(secret));
	EVP_PKEY_free(key);
	json_decref(body);
}

void auth_handle_device_page(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct auth_state *a = c->auth;
	const char *entered = http_query(req, "user_code");
	if (entered == NULL) {
		reply_page(req, 200, "device-title", "Sign in a device",
		           "<form id=\"device-form\" method=\"get\" action=\"/auth/device\">"
		           "<label for=\"user_code\">Code shown on the device</label> "
		           "<input id=\"user_code\" name=\"user_code\" autocomplete=\"off\" "
		           "placeholder=\"XXXX-XXXX\"> <button id=\"continue\">Continue</button></form>");
		return;
	}
	char code[9];
	struct device_grant *g = NULL;
	if (a != NULL && a->configured && auth_user_code_normalize(entered, code))
		g = find_device_by_user_code(a, code);
	if (g == NULL || g->status != DEVICE_PENDING || g->expires <= c->now()) {
		reply_page(req, 400, "device-error", "Unknown or expired code",
		           "<p>Check the code on the device, or start its sign-in again.</p>"
		           "<p><a href=\"/auth/device\">Enter another code</a></p>");
		return;
	}
	struct pending_login fresh = {.kind = LOGIN_DEVICE};
	snprintf(fresh.user_code, sizeof(fresh.user_code), "%s", code);
	auth_start_login(c, req, &fresh);
}

int auth_form_value(const uint8_t *body, size_t body_len, const char *name, char *out,
                    size_t size)
{
	size_t n = strlen(name), i = 0;
	const char *text = (const char *)body;
	out[0] = '\0';
	while (i < body_len) {
		size_t end = i;
		while (end < body_len && text[end] != '&')
			end++;
		if (end - i > n && strncmp(text + i, name, n) == 0 && text[i + n] == '=') {
			size_t len = end - i - n - 1;
			if (len == 0 || len >= size)
				return -1;
			for (size_t k = 0; k < len; k++) {
				char ch = text[i + n + 1 + k];
				if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')))
					return -1;
				out[k] = ch;
			}
			out[len] = '\0';
			return 0;
		}
		i = end + 1;
	}
	return -1;
}

void auth_handle_device_approve(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct auth_state *a = c->auth;
	char confirm[40], decision[16], hash[SP_SECRET_HASH_HEX];
	struct device_grant *g = NULL;
	if (a != NULL &&
	    auth_form_value(req->body.data, req->body.len, "confirm", confirm, sizeof(confirm)) == 0 &&
	    auth_form_value(req->body.data, req->body.len, "decision", decision,
	                    sizeof(decision)) == 0 &&
	    (strcmp(decision, "approve") == 0 || strcmp(decision, "deny") == 0) &&
	    sp_secret_hash(confirm, strlen(confirm), hash) == 0)
		for (size_t i = 0; i < AUTH_DEVICE_MAX && g == NULL; i++)
			if (a->devices[i].in_use && a->devices[i].status == DEVICE_SIGNED_IN &&
			    sp_secret_hash_equal(a->devices[i].confirm_hash, hash))
				g = &a->devices[i];
	if (g == NULL || g->expires <= c->now()) {
		reply_page(req, 400, "device-error", "This approval is not valid",
		           "<p>It expired or was already answered. Start the sign-in on the device "
		           "again.</p>");
		return;
	}
	int approve = strcmp(decision, "approve") == 0;
	g->status = approve ? DEVICE_APPROVED : DEVICE_DENIED;
	OPENSSL_cleanse(g->confirm_hash, sizeof(g->confirm_hash));
	struct sp_diag d;
	json_t *after = json_pack("{s:s, s:s}", "user_code", g->user_code, "device_name",
	                          g->device_name);
	struct audit_event e = {.time = c->now(), .action = "auth.device_approve",
	                        .outcome = approve ? "success" : "denied", .target_type = "user",
	                        .target_id = g->user_id, .after = after};
	audit_from_request(&e, req);
	e.actor_type = "user";
	e.actor_id = g->user_id;
	e.actor_label = g->email;
	if (store_begin(c, &d) == 0 && audit_record(c->db, &e) == 0)
		(void)store_commit(c, &d);
	else
		store_rollback(c);
	json_decref(after);
	if (approve)
		reply_page(req, 200, "device-approved", "Device approved",
		           "<p>The device is signing in. You can close this window.</p>");
	else
		reply_page(req, 200, "device-denied", "Device refused",
		           "<p>The device was not signed in.</p>");
}

void auth_handle_device_token(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct auth_state *a = c->auth;
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return;
	static const char *const names[] = {"device_code", NULL};
	static const int required[] = {1};
	const char *v[1] = {NULL};
	struct sp_diag d = {{0}};
	struct session_grant sg;
	memset(&sg, 0, sizeof(sg));
	if (auth_body_strings(req, body, names, v, required) < 0)
		goto out;
	char hash[SP_SECRET_HASH_HEX];
	struct device_grant *g = NULL;
	if (a != NULL && sp_secret_check_format(DEVICE_CODE_KIND, v[0], strlen(v[0])) == 0 &&
	    sp_secret_hash(v[0], strlen(v[0]), hash) == 0)
		for (size_t i = 0; i < AUTH_DEVICE_MAX && g == NULL; i++)
			if (a->devices[i].in_use && sp_secret_hash_equal(a->devices[i].device_code_hash, hash))
				g = &a->devices[i];
	int64_t now = c->now();
	if (g == NULL) {
		http_reply_error(req, 400, "invalid_grant", "device_code is unknown or already used");
		goto out;
	}
	if (g->expires <= now) {
		http_reply_error(req, 400, "expired_token", "the device code expired; start again");
		goto out;
	}
	if (g->last_poll != 0 && now - g->last_poll < g->interval) {
		g->last_poll = now;
		g->interval += 5;
		http_reply_error(req, 400, "slow_down", "polling too fast: wait %lld seconds between "
		                 "requests", (long long)g->interval);
		goto out;
	}
	g->last_poll = now;
	if (g->status == DEVICE_DENIED) {
		OPENSSL_cleanse(g, sizeof(*g));
		http_reply_error(req, 400, "access_denied", "the person refused this device");
		goto out;
	}
	if (g->status != DEVICE_APPROVED) {
		http_reply_error(req, 400, "authorization_pending", "waiting for the person to sign in "
		                 "at the verification URI");
		goto out;
	}
	struct device_grant held = *g;
	OPENSSL_cleanse(g, sizeof(*g)); /* redeemed once */
	int r = session_create(c, held.user_id, "device_code", held.auth_time, held.amr,
	                       held.public_key_pem, held.device_name[0] != '\0' ? held.device_name
	                                                                        : NULL,
	                       req, &sg, &d);
	OPENSSL_cleanse(&held, sizeof(held));
	if (r == SP_ERR_EXISTS)
		http_reply_error(req, 409, "device_key_taken", "%s", d.message);
	else if (r == SP_ERR_PERMISSION)
		http_reply_error(req, 403, "forbidden", "%s", d.message);
	else if (r < 0)
		http_reply_error(req, r == SP_ERR_INVALID ? 400 : 500,
		                 r == SP_ERR_INVALID ? "invalid_request" : "internal", "%s", d.message);
	else
		auth_reply_grant(req, c, 200, &sg);
out:
	session_grant_clear(&sg);
	json_decref(body);
}

struct device_grant *auth_device_slot(struct device_grant *table, size_t n,
                                      const char *address)
{
	struct device_grant *free_slot = NULL, *own_oldest = NULL, *oldest = NULL;
	size_t own = 0;
	for (size_t i = 0; i < n; i++) {
		struct device_grant *g = &table[i];
		if (!g->in_use) {
			if (free_slot == NULL)
				free_slot = g;
			continue;
		}
		if (strcmp(g->address, address) == 0) {
			own++;
			if (own_oldest == NULL || g->expires < own_oldest->expires)
				own_oldest = g;
		}
		if (oldest == NULL || g->expires < oldest->expires)
			oldest = g;
	}
	if (own >= AUTH_DEVICE_PER_ADDRESS && own_oldest != NULL)
		return own_oldest;
	return free_slot != NULL ? free_slot : oldest;
}
