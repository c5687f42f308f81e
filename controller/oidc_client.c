/* controller/oidc_client.c — see oidc_client.h. */
#include "controller/oidc_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "shared/buf.h"
#include "shared/token.h"

int oidc_client_init(struct oidc_client *cl, const char *issuer, const char *client_id,
                     const char *client_secret, int secret_post, struct sp_diag *diag)
{
	memset(cl, 0, sizeof(*cl));
	sp_jwks_init(&cl->jwks);
	if (issuer == NULL || issuer[0] == '\0' || client_id == NULL || client_id[0] == '\0')
		return sp_diag_set(diag, SP_ERR_INVALID,
		                   "sign-in is not configured: set oidc_issuer and oidc_client_id");
	if (strlen(issuer) >= sizeof(cl->issuer) || strlen(client_id) >= sizeof(cl->client_id) ||
	    (client_secret != NULL && strlen(client_secret) >= sizeof(cl->client_secret)))
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "oidc_issuer, oidc_client_id or "
		                   "oidc_client_secret is too long");
	if (!oidc_url_is_acceptable(issuer))
		return sp_diag_set(diag, SP_ERR_INVALID, "oidc_issuer must be https:// (http:// only "
		                   "to a loopback address)");
	snprintf(cl->issuer, sizeof(cl->issuer), "%s", issuer);
	snprintf(cl->client_id, sizeof(cl->client_id), "%s", client_id);
	snprintf(cl->client_secret, sizeof(cl->client_secret), "%s",
	         client_secret != NULL ? client_secret : "");
	cl->secret_post = secret_post;
	return 0;
}

void oidc_client_free(struct oidc_client *cl)
{
	if (cl == NULL)
		return;
	sp_jwks_free(&cl->jwks);
	OPENSSL_cleanse(cl->client_secret, sizeof(cl->client_secret));
}

/* ---- bounded HTTP with libcurl ---- */

static size_t collect(char *data, size_t size, size_t n, void *userdata)
{
	struct sp_buf *b = userdata;
	if (sp_buf_put(b, data, size * n) < 0)
		return 0; /* over the cap: curl aborts the transfer */
	return size * n;
}

/*
 * One request: GET, or POST of form (application/x-www-form-urlencoded) when form is not
 * NULL. user/password for HTTP basic auth (may be NULL), bearer for Authorization: Bearer.
 * On success *status holds the HTTP status and body the answer (NUL-terminated text).
 */
static int fetch(const char *url, const char *form, const char *user, const char *password,
                 const char *bearer, long *status, struct sp_buf *body, struct sp_diag *diag)
{
	int r = SP_ERR_IO;
	struct curl_slist *headers = NULL;
	char auth[4096];
	*status = 0;
	if (!oidc_url_is_acceptable(url))
		return sp_diag_set(diag, SP_ERR_INVALID, "refusing to fetch %s: the IdP must be "
		                   "reached over https (http only on loopback)", url);
	CURL *h = curl_easy_init();
	if (h == NULL)
		return sp_diag_set(diag, SP_ERR_NOMEM, "cannot make an HTTP request");
	sp_buf_reset(body);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)OIDC_CONNECT_TIMEOUT_S);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)OIDC_TRANSFER_TIMEOUT_S);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE, (long)OIDC_DOCUMENT_MAX);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "sallyport-controller");
	headers = curl_slist_append(headers, "Accept: application/json");
	if (bearer != NULL) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", bearer);
		headers = curl_slist_append(headers, auth);
		OPENSSL_cleanse(auth, sizeof(auth));
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	if (user != NULL) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, user);
		curl_easy_setopt(h, CURLOPT_PASSWORD, password != NULL ? password : "");
	}
	if (form != NULL)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
	CURLcode cr = curl_easy_perform(h);
	if (cr != CURLE_OK) {
		if (cr == CURLE_WRITE_ERROR || cr == CURLE_FILESIZE_EXCEEDED)
			r = sp_diag_set(diag, SP_ERR_TOO_LARGE, "%s answered more than %d bytes", url,
			                OIDC_DOCUMENT_MAX);
		else
			r = sp_diag_set(diag, SP_ERR_IO, "cannot reach %s: %s", url,
			                curl_easy_strerror(cr));
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	if (sp_buf_cstr(body) == NULL) {
		r = sp_diag_set(diag, SP_ERR_TOO_LARGE, "%s answered too much", url);
		goto out;
	}
	r = 0;
out:
	curl_slist_free_all(headers);
	curl_easy_cleanup(h);
	return r;
}

int oidc_client_discover(struct oidc_client *cl, int64_t now, struct sp_diag *diag)
{
	if (cl->discovered)
		return 0;
	if (cl->discovery_failed_at != 0 && now - cl->discovery_failed_at < OIDC_RETRY_S)
		return sp_diag_set(diag, SP_ERR_IO, "the identity provider %s could not be reached "
		                   "moments ago; try again in a few seconds", cl->issuer);
	char url[OIDC_URL_MAX + 64];
	size_t n = strlen(cl->issuer);
	while (n > 0 && cl->issuer[n - 1] == '/')
		n--;
	snprintf(url, sizeof(url), "%.*s/.well-known/openid-configuration", (int)n, cl->issuer);
	struct sp_buf body;
	sp_buf_init(&body, OIDC_DOCUMENT_MAX + 1);
	long status = 0;
	cl->discovery_fetches++;
	int r = fetch(url, NULL, NULL, NULL, NULL, &status, &body, diag);
	if (r == 0 && status != 200)
		r = sp_diag_set(diag, SP_ERR_IO, "%s answered HTTP %ld", url, status);
	if (r == 0)
		r = oidc_discovery_parse((const char *)body.data, body.len, cl->issuer, &cl->provider,
		                         diag);
	if (r == 0) {
		/* Remember the offered scopes so only those are asked for (some IdPs refuse
		 * an authorization request naming a scope they do not know). */
		json_t *doc = json_loadb((const char *)body.data, body.len, 0, NULL);
		const json_t *list = json_object_get(doc, "scopes_supported");
		size_t i, used = 0;
		const json_t *item;
		cl->scopes[0] = '\0';
		json_array_foreach(list, i, item) {
			const char *v = json_string_value(item);
			if (v == NULL || strchr(v, ' ') != NULL ||
			    used + strlen(v) + 2 > sizeof(cl->scopes))
				continue;
			used += (size_t)snprintf(cl->scopes + used, sizeof(cl->scopes) - used, " %s", v);
		}
		json_decref(doc);
	}
	sp_buf_free(&body);
	if (r < 0) {
		cl->discovery_failed_at = now;
		return r;
	}
	cl->discovered = 1;
	return 0;
}

static int fetch_jwks(struct oidc_client *cl, int64_t now, struct sp_diag *diag)
{
	struct sp_buf body;
	sp_buf_init(&body, SP_JWKS_DOC_MAX + 1);
	long status = 0;
	struct sp_jwks fresh;
	sp_jwks_init(&fresh);
	cl->jwks_fetches++;
	int r = fetch(cl->provider.jwks_uri, NULL, NULL, NULL, NULL, &status, &body, diag);
	if (r == 0 && status != 200)
		r = sp_diag_set(diag, SP_ERR_IO, "%s answered HTTP %ld", cl->provider.jwks_uri, status);
	if (r == 0)
		r = sp_jwks_parse((const char *)body.data, body.len, &fresh, diag);
	if (r == 0 && fresh.count == 0)
		r = sp_diag_set(diag, SP_ERR_NOT_FOUND, "the IdP's JWKS holds no usable signing key");
	sp_buf_free(&body);
	if (r < 0) {
		sp_jwks_free(&fresh);
		return r;
	}
	sp_jwks_free(&cl->jwks);
	cl->jwks = fresh;
	cl->jwks_loaded = 1;
	cl->jwks_fetched_at = now;
	return 0;
}

static int x_www_form_append(struct sp_buf *b, const char *name, const char *value)
{
	char *escaped = curl_easy_escape(NULL, value, 0);
	if (escaped == NULL)
		return SP_ERR_NOMEM;
	int r = sp_buf_printf(b, "%s%s=%s", b->len > 0 ? "&" : "", name, escaped);
	OPENSSL_cleanse(escaped, strlen(escaped));
	curl_free(escaped);
	return r;
}

int oidc_client_exchange_code(struct oidc_client *cl, const char *code, const char *redirect_uri,
                              const char *code_verifier, struct oidc_token_response *out,
                              struct sp_diag *diag)
{
	memset(out, 0, sizeof(*out));
	if (!cl->discovered)
		return sp_diag_set(diag, SP_ERR_INTERNAL, "the IdP has not been discovered");
	struct sp_buf form, body;
	sp_buf_init(&form, 16384);
	sp_buf_init(&body, OIDC_DOCUMENT_MAX + 1);
	int r = 0;
	char user[1024] = "", password[1600] = "";
	if ((r = x_www_form_append(&form, "grant_type", "authorization_code")) < 0 ||
	    (r = x_www_form_append(&form, "code", code)) < 0 ||
	    (r = x_www_form_append(&form, "redirect_uri", redirect_uri)) < 0 ||
	    (r = x_www_form_append(&form, "code_verifier", code_verifier)) < 0)
		goto out;
	if (cl->secret_post || cl->client_secret[0] == '\0') {
		if ((r = x_www_form_append(&form, "client_id", cl->client_id)) < 0)
			goto out;
		if (cl->client_secret[0] != '\0' &&
		    (r = x_www_form_append(&form, "client_secret", cl->client_secret)) < 0)
			goto out;
	} else {
		/* RFC 6749 §2.3.1: both halves are form-urlencoded before the basic encoding. */
		char *u = curl_easy_escape(NULL, cl->client_id, 0);
		char *p = curl_easy_escape(NULL, cl->client_secret, 0);
		if (u != NULL && p != NULL) {
			snprintf(user, sizeof(user), "%s", u);
			snprintf(password, sizeof(password), "%s", p);
		}
		if (p != NULL)
			OPENSSL_cleanse(p, strlen(p));
		curl_free(u);
		curl_free(p);
		if (user[0] == '\0') {
			r = SP_ERR_NOMEM;
			goto out;
		}
	}
	if (sp_buf_cstr(&form) == NULL) {
		r = SP_ERR_TOO_LARGE;
		goto out;
	}
	long status = 0;
	r = fetch(cl->provider.token_endpoint, (const char *)form.data, user[0] ? user : NULL,
	          user[0] ? password : NULL, NULL, &status, &body, diag);
	if (r < 0)
		goto out;
	/* Success and error answers are both JSON; the parser turns {"error":...} into a diag. */
	r = oidc_token_response_parse((const char *)body.data, body.len, out, diag);
	if (r == 0 && status != 200) {
		oidc_token_response_clear(out);
		r = sp_diag_set(diag, SP_ERR_INVALID, "the token endpoint answered HTTP %ld", status);
	}
out:
	if (r < 0 && diag != NULL && diag->message[0] == '\0')
		sp_diag_set(diag, r, "the code exchange failed: %s", sp_strerror(r));
	OPENSSL_cleanse(password, sizeof(password));
	sp_buf_free_secret(&form);
	sp_buf_free_secret(&body);
	return r;
}

/* The alg of a compact JWS's protected header ("" when unreadable). */
int oidc_check_id_token_claims(const json_t *claims, const char *issuer, const char *client_id,
                               const char *nonce, int64_t now, struct sp_diag *diag)
{
	if (nonce == NULL || nonce[0] == '\0')
		return sp_diag_set(diag, SP_ERR_INTERNAL, "no nonce to check the ID token against");
	struct sp_token_expect e = {.issuer = issuer,
	                            .audience = client_id,
	                            .authorized_party = client_id,
	                            .now = now,
	                            .max_skew_s = OIDC_SKEW_S,
	                            .nonce = nonce,
	                            .require_exp = 1};
	int r = sp_token_check_claims(claims, &e, diag);
	if (r < 0)
		return r;
	if (!json_is_integer(json_object_get(claims, "iat")))
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"iat\" is missing");
	const json_t *sub = json_object_get(claims, "sub");
	if (!json_is_string(sub) || json_string_length(sub) == 0 || json_string_length(sub) > 255)
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"sub\" is missing or longer than 255");
	const json_t *email = json_object_get(claims, "email");
	if (!json_is_string(email) || json_string_length(email) < 3 ||
	    json_string_length(email) > 320 || strchr(json_string_value(email), '@') == NULL)
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"email\" is missing or not an e-mail "
		                   "address (the IdP must release the email scope)");
	if (!json_is_true(json_object_get(claims, "email_verified")))
		return sp_diag_set(diag, SP_ERR_CLAIM, "claim \"email_verified\" is not true: the IdP "
		                   "has not verified this e-mail address");
	return 0;
}

int oidc_client_validate_id_token(struct oidc_client *cl, const char *id_token,
                                  const char *nonce, int64_t now, json_t **claims,
                                  struct sp_diag *diag)
{
	*claims = NULL;
	if (!cl->discovered)
		return sp_diag_set(diag, SP_ERR_INTERNAL, "the IdP has not been discovered");
	char alg[16], kid[SP_JWK_KID_MAX + 1];
	(void)sp_token_header_string(id_token, strlen(id_token), "alg", alg, sizeof(alg));
	(void)sp_token_header_string(id_token, strlen(id_token), "kid", kid, sizeof(kid));
	/* The header names which of the provider's algorithms it used; only ES256 and RS256
	 * that the provider offers are accepted, and sp_token_verify then insists on it. */
	const char *expected = NULL;
	if (strcmp(alg, "ES256") == 0 && cl->provider.supports_es256)
		expected = "ES256";
	else if (strcmp(alg, "RS256") == 0 && cl->provider.supports_rs256)
		expected = "RS256";
	else
		return sp_diag_set(diag, SP_ERR_BAD_ALGORITHM, "ID token algorithm \"%s\" refused: only "
		                   "ES256 or RS256, as offered by the IdP, are accepted", alg);
	int r;
	if (!cl->jwks_loaded) {
		if ((r = fetch_jwks(cl, now, diag)) < 0)
			return r;
	} else if (now - cl->jwks_fetched_at > OIDC_JWKS_MAX_AGE_S &&
	           fetch_jwks(cl, now, NULL) < 0) {
		/* A failed routine refresh keeps the keys we have (an unknown kid still gets its
		 * one refetch below); try again in a minute rather than on every sign-in. */
		cl->jwks_fetched_at = now - OIDC_JWKS_MAX_AGE_S + 60;
	}
	r = sp_token_verify(id_token, strlen(id_token), &cl->jwks, expected, claims, diag);
	if (r == SP_ERR_NOT_FOUND && kid[0] != '\0' && strcmp(kid, cl->jwks_refetched_for) != 0 &&
	    (cl->jwks_refetched_at == 0 || now - cl->jwks_refetched_at >= OIDC_REFETCH_MIN_INTERVAL_S)) {
		/* The IdP may have rotated its keys: one refetch for this kid, then never again. */
		cl->jwks_refetched_at = now;
		snprintf(cl->jwks_refetched_for, sizeof(cl->jwks_refetched_for), "%s", kid);
		if ((r = fetch_jwks(cl, now, diag)) < 0)
			return r;
		r = sp_token_verify(id_token, strlen(id_token), &cl->jwks, expected, claims, diag);
	}
	if (r < 0)
		return r;
	r = oidc_check_id_token_claims(*claims, cl->issuer, cl->client_id, nonce, now, diag);
	if (r < 0) {
		json_decref(*claims);
		*claims = NULL;
	}
	return r;
}

int oidc_client_offers_scope(const struct oidc_client *cl, const char *scope)
{
	size_t n = strlen(scope);
	for (const char *p = strstr(cl->scopes, scope); n > 0 && p != NULL; p = strstr(p + 1, scope))
		if (p > cl->scopes && p[-1] == ' ' && (p[n] == ' ' || p[n] == '\0'))
			return 1;
	return 0;
}

int oidc_client_userinfo(struct oidc_client *cl, const char *access_token, const char *subject,
                         json_t **out, struct sp_diag *diag)
{
	*out = NULL;
	if (cl->provider.userinfo_endpoint[0] == '\0')
		return sp_diag_set(diag, SP_ERR_NOT_FOUND, "the IdP offers no userinfo endpoint");
	struct sp_buf body;
	sp_buf_init(&body, OIDC_DOCUMENT_MAX + 1);
	long status = 0;
	int r = fetch(cl->provider.userinfo_endpoint, NULL, NULL, NULL, access_token, &status, &body,
	              diag);
	if (r == 0 && status != 200)
		r = sp_diag_set(diag, SP_ERR_IO, "userinfo answered HTTP %ld", status);
	json_t *doc = NULL;
	if (r == 0) {
		doc = json_loadb((const char *)body.data, body.len, JSON_REJECT_DUPLICATES, NULL);
		const json_t *sub = json_object_get(doc, "sub");
		/* OpenID Connect Core 5.3.2: a userinfo answer for another subject is discarded. */
		if (!json_is_object(doc) || !json_is_string(sub) ||
		    strcmp(json_string_value(sub), subject) != 0)
			r = sp_diag_set(diag, SP_ERR_CLAIM, "userinfo is not a JSON object for the "
			                "signed-in subject");
	}
	sp_buf_free_secret(&body);
	if (r < 0) {
		json_decref(doc);
		return r;
	}
	*out = doc;
	return 0;
}
