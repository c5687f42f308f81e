/*
 * client/api.c — controller calls (see api.h).
 */
#include "client/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "client/state.h"
#include "shared/token.h"

static volatile int *abort_flag;

void api_set_abort_flag(volatile int *flag)
{
	abort_flag = flag;
}

static int on_progress(void *user, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
	(void)user;
	(void)a;
	(void)b;
	(void)c;
	(void)d;
	return abort_flag != NULL && *abort_flag ? 1 : 0;
}

struct answer_buf {
	char *data;
	size_t len;
	int too_large;
};

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
	struct answer_buf *b = user;
	size_t add = size * n;
	if (b->len + add > API_ANSWER_MAX) {
		b->too_large = 1;
		return 0;
	}
	char *g = realloc(b->data, b->len + add + 1);
	if (g == NULL)
		return 0;
	b->data = g;
	memcpy(b->data + b->len, p, add);
	b->len += add;
	b->data[b->len] = '\0';
	return add;
}

int api_call(const char *base, const char *method, const char *path, const char *body,
	     const char *bearer, long timeout_s, long *status, json_t **answer,
	     struct sp_diag *diag)
{
	*status = 0;
	*answer = NULL;
	int rc = 0;
	char url[4096];
	char *auth = NULL;
	struct curl_slist *headers = NULL;
	struct answer_buf b = {0};
	CURL *c = curl_easy_init();
	if (c == NULL)
		return SP_ERR_NOMEM;
	if (snprintf(url, sizeof(url), "%s%s", base, path) >= (int)sizeof(url)) {
		rc = sp_diag_set(diag, SP_ERR_TOO_LARGE, "URL too long");
		goto out;
	}
	if (bearer != NULL) {
		size_t alen = strlen(bearer) + 32;
		auth = malloc(alen);
		if (auth == NULL) {
			rc = SP_ERR_NOMEM;
			goto out;
		}
		snprintf(auth, alen, "Authorization: Bearer %s", bearer);
		headers = curl_slist_append(headers, auth);
	}
	headers = curl_slist_append(headers, "Content-Type: application/json");
	headers = curl_slist_append(headers, "Accept: application/json");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	if (strcmp(method, "POST") == 0)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body != NULL ? body : "{}");
	CURLcode cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		rc = sp_diag_set(diag, SP_ERR_IO, "%s: %s", url,
				 b.too_large ? "answer too large" : curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	if (b.data != NULL)
		*answer = json_loadb(b.data, b.len, 0, NULL);
out:
	if (b.data != NULL) {
		OPENSSL_cleanse(b.data, b.len);
		free(b.data);
	}
	if (auth != NULL) {
		OPENSSL_cleanse(auth, strlen(auth));
		free(auth);
	}
	curl_slist_free_all(headers);
	curl_easy_cleanup(c);
	return rc;
}

const char *api_error_code(const json_t *answer)
{
	const char *code =
	    json_string_value(json_object_get(json_object_get(answer, "error"), "code"));
	return code != NULL ? code : "?";
}

int api_refresh(const char *state_dir, json_t *session, char **access, int64_t *access_exp,
		struct sp_diag *diag)
{
	*access = NULL;
	*access_exp = 0;
	const char *base = json_string_value(json_object_get(session, "controller"));
	json_t *req = json_pack("{s:O}", "refresh_token", json_object_get(session, "refresh_token"));
	char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (body == NULL)
		return SP_ERR_NOMEM;
	long status = 0;
	json_t *ans = NULL;
	int rc = api_call(base, "POST", "/api/client/v1/session/refresh", body, NULL, 15, &status,
			  &ans, diag);
	OPENSSL_cleanse(body, strlen(body));
	free(body);
	if (rc < 0)
		goto out;
	if (status == 401 || status == 403) {
		rc = sp_diag_set(diag, SP_ERR_PERMISSION, "session ended (%s): sign in again",
				 api_error_code(ans));
		goto out;
	}
	const char *tok = json_string_value(json_object_get(ans, "access_token"));
	json_t *refresh = json_object_get(ans, "refresh_token");
	if (status != 200 || tok == NULL || !json_is_string(refresh)) {
		rc = sp_diag_set(diag, SP_ERR_IO, "refresh failed: HTTP %ld %s", status,
				 api_error_code(ans));
		goto out;
	}
	json_object_set(session, "refresh_token", refresh);
	json_t *v;
	if ((v = json_object_get(ans, "session_expires_at")) != NULL)
		json_object_set(session, "session_expires_at", v);
	if ((v = json_object_get(ans, "user")) != NULL && json_is_object(v))
		json_object_set(session, "user", v);
	rc = state_session_save(state_dir, session, diag);
	if (rc < 0)
		goto out;
	*access = strdup(tok);
	if (*access == NULL) {
		rc = SP_ERR_NOMEM;
		goto out;
	}
	*access_exp = json_integer_value(json_object_get(ans, "access_token_expires_at"));
out:
	json_decref(ans);
	return rc;
}

int api_fetch_jwks(const char *base, struct sp_jwks *keys, struct sp_diag *diag)
{
	long status = 0;
	json_t *ans = NULL;
	int rc = api_call(base, "GET", "/.well-known/jwks.json", NULL, NULL, 10, &status, &ans, diag);
	if (rc < 0)
		return rc;
	char *text = ans != NULL ? json_dumps(ans, JSON_COMPACT) : NULL;
	json_decref(ans);
	if (status != 200 || text == NULL) {
		free(text);
		return sp_diag_set(diag, SP_ERR_IO, "JWKS: HTTP %ld", status);
	}
	sp_jwks_free(keys);
	sp_jwks_init(keys);
	rc = sp_jwks_parse(text, strlen(text), keys, diag);
	free(text);
	return rc;
}

int api_fetch_resources(const char *base, const char *access, const char *device_id,
			struct sp_jwks *keys, int64_t now, json_t **claims, struct sp_diag *diag)
{
	*claims = NULL;
	long status = 0;
	json_t *ans = NULL;
	int rc = api_call(base, "GET", "/api/client/v1/resources", NULL, access, 30, &status, &ans,
			  diag);
	if (rc < 0)
		return rc;
	if (status == 401 || status == 403) {
		rc = sp_diag_set(diag, SP_ERR_PERMISSION, "resource list refused: %s",
				 api_error_code(ans));
		goto out;
	}
	const char *doc = json_string_value(json_object_get(ans, "document"));
	if (status != 200 || doc == NULL) {
		rc = sp_diag_set(diag, SP_ERR_IO, "resource list: HTTP %ld", status);
		goto out;
	}
	size_t len = strlen(doc);
	rc = sp_token_verify_max(doc, len, SP_TOKEN_DOCUMENT_MAX_LEN, keys, "ES256", claims, diag);
	if (rc == SP_ERR_NOT_FOUND) {
		rc = api_fetch_jwks(base, keys, diag);
		if (rc == 0)
			rc = sp_token_verify_max(doc, len, SP_TOKEN_DOCUMENT_MAX_LEN, keys, "ES256",
						 claims, diag);
	}
	if (rc < 0)
		goto out;
	char aud[256];
	snprintf(aud, sizeof(aud), "sallyport:client:%s", device_id);
	struct sp_token_expect e = {.issuer = base,
				    .audience = aud,
				    .now = now,
				    .max_skew_s = 60,
				    .require_exp = 1};
	rc = sp_token_check_claims(*claims, &e, diag);
	const char *typ = json_string_value(json_object_get(*claims, "typ"));
	if (rc == 0 && (typ == NULL || strcmp(typ, "resources") != 0))
		rc = sp_diag_set(diag, SP_ERR_CLAIM, "resource list: typ is not \"resources\"");
	if (rc < 0) {
		json_decref(*claims);
		*claims = NULL;
	}
out:
	json_decref(ans);
	return rc;
}
