/* controller/oidc.c — see oidc.h. */
#include "controller/oidc.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "shared/jwk.h"

static int host_is_loopback(const char *host, size_t len)
{
	char text[64];
	if (len == 0 || len >= sizeof(text))
		return 0;
	memcpy(text, host, len);
	text[len] = '\0';
	if (strcasecmp(text, "localhost") == 0 || strcmp(text, "[::1]") == 0)
		return 1;
	struct in_addr v4;
	if (inet_pton(AF_INET, text, &v4) == 1)
		return (ntohl(v4.s_addr) >> 24) == 127;
	return 0;
}

int oidc_url_is_acceptable(const char *url)
{
	if (url == NULL)
		return 0;
	for (const char *p = url; *p != '\0'; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			return 0;
	if (strncmp(url, "https://", 8) == 0)
		return url[8] != '\0' && url[8] != '/';
	if (strncmp(url, "http://", 7) != 0)
		return 0;
	const char *host = url + 7;
	size_t len;
	if (host[0] == '[') {
		const char *close = strchr(host, ']');
		if (close == NULL)
			return 0;
		len = (size_t)(close - host) + 1;
	} else {
		len = strcspn(host, ":/?#");
	}
	if (host[len] != '\0' && host[len] != ':' && host[len] != '/' && host[len] != '?')
		return 0;
	return host_is_loopback(host, len);
}

/* Copies a string member; required ones must be present and acceptable URLs. */
static int copy_url(json_t *doc, const char *key, int required, char out[OIDC_URL_MAX],
                    struct sp_diag *diag)
{
	out[0] = '\0';
	json_t *v = json_object_get(doc, key);
	if (v == NULL) {
		if (required)
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "provider discovery document has no \"%s\"", key);
		return 0;
	}
	if (!json_is_string(v))
		return sp_diag_set(diag, SP_ERR_INVALID,
		                   "provider discovery \"%s\" is not a string", key);
	const char *s = json_string_value(v);
	if (strlen(s) >= OIDC_URL_MAX)
		return sp_diag_set(diag, SP_ERR_INVALID, "provider discovery \"%s\" is too long", key);
	if (!oidc_url_is_acceptable(s))
		return sp_diag_set(diag, SP_ERR_INVALID,
		                   "provider discovery \"%s\" must be an https URL (http only to "
		                   "loopback): %.200s", key, s);
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

/* 1 when the string array member contains value; absent member counts as `absent`. */
static int array_has(json_t *doc, const char *key, const char *value, int absent)
{
	json_t *arr = json_object_get(doc, key);
	if (arr == NULL)
		return absent;
	if (!json_is_array(arr))
		return 0;
	size_t i;
	json_t *item;
	json_array_foreach (arr, i, item)
		if (json_is_string(item) && strcmp(json_string_value(item), value) == 0)
			return 1;
	return 0;
}

int oidc_discovery_parse(const char *json, size_t len, const char *expected_issuer,
                         struct oidc_provider *out, struct sp_diag *diag)
{
	int r = SP_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (len > OIDC_DOCUMENT_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "provider discovery document is larger "
		                   "than %d bytes", OIDC_DOCUMENT_MAX);
	json_error_t err;
	json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
	if (doc == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID,
		                   "provider discovery document is not JSON: %s", err.text);
	if (!json_is_object(doc)) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "provider discovery document is not an object");
		goto out;
	}
	json_t *issuer = json_object_get(doc, "issuer");
	if (!json_is_string(issuer) || strcmp(json_string_value(issuer), expected_issuer) != 0) {
		r = sp_diag_set(diag, SP_ERR_ISSUER,
		                "provider discovery names issuer \"%.200s\", configured issuer is "
		                "\"%.200s\"; they must be identical",
		                json_is_string(issuer) ? json_string_value(issuer) : "(none)",
		                expected_issuer);
		goto out;
	}
	if (strlen(expected_issuer) >= OIDC_URL_MAX || !oidc_url_is_acceptable(expected_issuer)) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "issuer must be an https URL (http only to "
		                "loopback)");
		goto out;
	}
	memcpy(out->issuer, expected_issuer, strlen(expected_issuer) + 1);
	if ((r = copy_url(doc, "authorization_endpoint", 1, out->authorization_endpoint, diag)) ||
	    (r = copy_url(doc, "token_endpoint", 1, out->token_endpoint, diag)) ||
	    (r = copy_url(doc, "jwks_uri", 1, out->jwks_uri, diag)) ||
	    (r = copy_url(doc, "userinfo_endpoint", 0, out->userinfo_endpoint, diag)) ||
	    (r = copy_url(doc, "device_authorization_endpoint", 0,
	                  out->device_authorization_endpoint, diag)) ||
	    (r = copy_url(doc, "end_session_endpoint", 0, out->end_session_endpoint, diag)))
		goto out;
	/* When the provider does not list algorithms, RS256 is the specification's default. */
	out->supports_es256 = array_has(doc, "id_token_signing_alg_values_supported", "ES256", 0);
	out->supports_rs256 = array_has(doc, "id_token_signing_alg_values_supported", "RS256", 1);
	if (!out->supports_es256 && !out->supports_rs256) {
		r = sp_diag_set(diag, SP_ERR_UNSUPPORTED,
		                "provider signs ID tokens with neither ES256 nor RS256");
		goto out;
	}
	if (!array_has(doc, "code_challenge_methods_supported", "S256", 1)) {
		r = sp_diag_set(diag, SP_ERR_UNSUPPORTED, "provider does not support PKCE S256");
		goto out;
	}
	if (!array_has(doc, "response_types_supported", "code", 1)) {
		r = sp_diag_set(diag, SP_ERR_UNSUPPORTED,
		                "provider does not support the authorization code flow");
		goto out;
	}
	r = 0;
out:
	json_decref(doc);
	if (r != 0)
		memset(out, 0, sizeof(*out));
	return r;
}

int oidc_pkce_challenge(const char *verifier, char out[64])
{
	out[0] = '\0';
	size_t len = strlen(verifier);
	if (len < 43 || len > 128)
		return SP_ERR_INVALID;
	for (size_t i = 0; i < len; i++) {
		char c = verifier[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_' || c == '~'))
			return SP_ERR_INVALID;
	}
	uint8_t md[32];
	unsigned int md_len = 0;
	if (EVP_Digest(verifier, len, md, &md_len, EVP_sha256(), NULL) != 1)
		return SP_ERR_CRYPTO;
	return sp_jwk_base64url_encode(md, sizeof(md), out, 64);
}

int oidc_pkce_new(struct oidc_pkce *out)
{
	uint8_t raw[32];
	memset(out, 0, sizeof(*out));
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return SP_ERR_CRYPTO;
	int r = sp_jwk_base64url_encode(raw, sizeof(raw), out->verifier, sizeof(out->verifier));
	OPENSSL_cleanse(raw, sizeof(raw));
	if (r == 0)
		r = oidc_pkce_challenge(out->verifier, out->challenge);
	if (r != 0)
		OPENSSL_cleanse(out, sizeof(*out));
	return r;
}

static int put_param(struct sp_buf *out, char *sep, const char *name, const char *value)
{
	if (value == NULL)
		return 0;
	char *escaped = curl_easy_escape(NULL, value, 0);
	if (escaped == NULL)
		return SP_ERR_NOMEM;
	int r = sp_buf_printf(out, "%c%s=%s", *sep, name, escaped);
	curl_free(escaped);
	*sep = '&';
	return r;
}

int oidc_authorization_url(const struct oidc_provider *provider,
                           const struct oidc_auth_request *request, struct sp_buf *out)
{
	if (request->client_id == NULL || request->redirect_uri == NULL || request->state == NULL ||
	    request->nonce == NULL || request->code_challenge == NULL)
		return SP_ERR_INVALID;
	size_t mark = out->len;
	char sep = strchr(provider->authorization_endpoint, '?') != NULL ? '&' : '?';
	int r = sp_buf_put_str(out, provider->authorization_endpoint);
	if (r == 0)
		r = put_param(out, &sep, "response_type", "code");
	if (r == 0)
		r = put_param(out, &sep, "client_id", request->client_id);
	if (r == 0)
		r = put_param(out, &sep, "redirect_uri", request->redirect_uri);
	if (r == 0)
		r = put_param(out, &sep, "scope",
		              request->scope != NULL ? request->scope : "openid email profile");
	if (r == 0)
		r = put_param(out, &sep, "state", request->state);
	if (r == 0)
		r = put_param(out, &sep, "nonce", request->nonce);
	if (r == 0)
		r = put_param(out, &sep, "code_challenge", request->code_challenge);
	if (r == 0)
		r = put_param(out, &sep, "code_challenge_method", "S256");
	if (r == 0)
		r = put_param(out, &sep, "prompt", request->prompt);
	if (r != 0)
		out->len = mark;
	return r;
}

static char *dup_string_member(json_t *doc, const char *key)
{
	json_t *v = json_object_get(doc, key);
	return json_is_string(v) ? strdup(json_string_value(v)) : NULL;
}

int oidc_token_response_parse(const char *json, size_t len, struct oidc_token_response *out,
                              struct sp_diag *diag)
{
	int r = SP_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (len > OIDC_DOCUMENT_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "token response is too large");
	json_error_t err;
	json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
	if (!json_is_object(doc)) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "token response is not a JSON object");
		goto out;
	}
	json_t *error = json_object_get(doc, "error");
	if (error != NULL) {
		json_t *desc = json_object_get(doc, "error_description");
		r = sp_diag_set(diag, SP_ERR_INVALID, "identity provider refused the code: %.64s%s%.160s",
		                json_is_string(error) ? json_string_value(error) : "(malformed)",
		                json_is_string(desc) ? ": " : "",
		                json_is_string(desc) ? json_string_value(desc) : "");
		goto out;
	}
	json_t *type = json_object_get(doc, "token_type");
	if (!json_is_string(type) || strcasecmp(json_string_value(type), "Bearer") != 0) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "token response token_type is not Bearer");
		goto out;
	}
	snprintf(out->token_type, sizeof(out->token_type), "Bearer");
	json_t *id = json_object_get(doc, "id_token");
	json_t *access = json_object_get(doc, "access_token");
	if (!json_is_string(id) || !json_is_string(access)) {
		r = sp_diag_set(diag, SP_ERR_INVALID,
		                "token response lacks a string id_token and access_token");
		goto out;
	}
	json_t *refresh = json_object_get(doc, "refresh_token");
	if (refresh != NULL && !json_is_string(refresh)) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "token response refresh_token is not a string");
		goto out;
	}
	json_t *expires = json_object_get(doc, "expires_in");
	if (expires != NULL && (!json_is_integer(expires) || json_integer_value(expires) < 0)) {
		r = sp_diag_set(diag, SP_ERR_INVALID,
		                "token response expires_in is not a non-negative integer");
		goto out;
	}
	out->expires_in = expires != NULL ? (int64_t)json_integer_value(expires) : 0;
	out->id_token = dup_string_member(doc, "id_token");
	out->access_token = dup_string_member(doc, "access_token");
	out->refresh_token = dup_string_member(doc, "refresh_token");
	if (out->id_token == NULL || out->access_token == NULL ||
	    (refresh != NULL && out->refresh_token == NULL)) {
		r = SP_ERR_NOMEM;
		goto out;
	}
	r = 0;
out:
	json_decref(doc);
	if (r != 0)
		oidc_token_response_clear(out);
	return r;
}

static void free_secret_string(char **s)
{
	if (*s != NULL) {
		OPENSSL_cleanse(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

void oidc_token_response_clear(struct oidc_token_response *response)
{
	if (response == NULL)
		return;
	free_secret_string(&response->id_token);
	free_secret_string(&response->access_token);
	free_secret_string(&response->refresh_token);
	memset(response, 0, sizeof(*response));
}
