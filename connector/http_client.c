/*
 * connector/http_client.c — see http_client.h.
 */
#include "connector/http_client.h"

#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

struct body_sink {
	char *data;
	size_t len;
	size_t max;
	int too_large;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *user)
{
	struct body_sink *sink = user;
	size_t n = size * nmemb;
	if (sink->len + n > sink->max) {
		sink->too_large = 1;
		return 0;
	}
	char *grown = realloc(sink->data, sink->len + n + 1);
	if (grown == NULL)
		return 0;
	sink->data = grown;
	memcpy(sink->data + sink->len, ptr, n);
	sink->len += n;
	sink->data[sink->len] = '\0';
	return n;
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	const atomic_int *stop = user;
	return stop != NULL && atomic_load(stop) ? 1 : 0;
}

int connector_http(const char *base_url, const char *method, const char *path,
		   const char *json_body, const char *bearer, long timeout_s, size_t max_body,
		   const atomic_int *stop, struct connector_http_response *out, struct sp_diag *diag)
{
	memset(out, 0, sizeof(*out));
	int r = SP_ERR_NOMEM;
	struct body_sink sink = {.max = max_body};
	struct curl_slist *headers = NULL;
	char *url = NULL;
	char *auth = NULL;
	CURL *curl = curl_easy_init();
	if (curl == NULL)
		goto out;
	size_t base_len = strlen(base_url);
	while (base_len > 0 && base_url[base_len - 1] == '/')
		base_len--;
	size_t url_len = base_len + strlen(path) + 1;
	url = malloc(url_len);
	if (url == NULL)
		goto out;
	snprintf(url, url_len, "%.*s%s", (int)base_len, base_url, path);
	if (bearer != NULL) {
		size_t n = strlen(bearer) + 32;
		auth = malloc(n);
		if (auth == NULL)
			goto out;
		snprintf(auth, n, "Authorization: Bearer %s", bearer);
		headers = curl_slist_append(headers, auth);
	}
	if (json_body != NULL)
		headers = curl_slist_append(headers, "Content-Type: application/json");
	headers = curl_slist_append(headers, "Accept: application/json");
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout_s);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, (void *)stop);
	if (json_body != NULL) {
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, json_body);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(json_body));
	}
	CURLcode cr = curl_easy_perform(curl);
	if (cr == CURLE_ABORTED_BY_CALLBACK) {
		r = sp_diag_set(diag, SP_ERR_AGAIN, "%s %s: stopped", method, path);
		goto out;
	}
	if (sink.too_large) {
		r = sp_diag_set(diag, SP_ERR_TOO_LARGE, "%s %s: answer larger than %zu bytes",
				method, path, max_body);
		goto out;
	}
	if (cr != CURLE_OK) {
		r = sp_diag_set(diag, SP_ERR_IO, "%s %.200s: %s", method, url,
				curl_easy_strerror(cr));
		goto out;
	}
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out->status);
	struct curl_header *date = NULL;
	if (curl_easy_header(curl, "Date", 0, CURLH_HEADER, -1, &date) == CURLHE_OK &&
	    date != NULL) {
		time_t t = curl_getdate(date->value, NULL);
		out->date = t > 0 ? (int64_t)t : 0;
	}
	if (sink.data == NULL) {
		sink.data = calloc(1, 1);
		if (sink.data == NULL)
			goto out;
	}
	out->body = sink.data;
	out->body_len = sink.len;
	sink.data = NULL;
	r = 0;
out:
	free(sink.data);
	free(url);
	if (auth != NULL) {
		/* the bearer token is a credential for a few minutes: wipe our copy */
		memset(auth, 0, strlen(auth));
		free(auth);
	}
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	return r;
}

void connector_http_response_free(struct connector_http_response *resp)
{
	if (resp == NULL)
		return;
	free(resp->body);
	resp->body = NULL;
	resp->body_len = 0;
}
