/* controller/http.c — see http.h. */
#include "controller/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "shared/error.h"
#include "shared/secret.h"
#include "shared/clock.h"

struct http_server {
	struct MHD_Daemon *daemon;
	const struct route *routes;
	size_t route_count;
	void *app;
	http_gate gate;
	void (*on_response)(struct http_request *req, void *app);
	uint16_t port;
};

/* Parses "a.b.c.d:port" or "[v6]:port" into a sockaddr. Pure. */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                        struct sp_diag *diag)
{
	char host[64];
	const char *colon;
	memset(ss, 0, sizeof(*ss));
	if (listen == NULL || listen[0] == '\0')
		return sp_diag_set(diag, SP_ERR_INVALID, "listen address is empty");
	if (listen[0] == '[') {
		const char *close = strchr(listen, ']');
		if (close == NULL || close[1] != ':')
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "listen address \"%s\" must look like [::1]:8080", listen);
		size_t n = (size_t)(close - listen - 1);
		if (n >= sizeof(host))
			return sp_diag_set(diag, SP_ERR_INVALID, "listen host is too long");
		memcpy(host, listen + 1, n);
		host[n] = '\0';
		colon = close + 1;
	} else {
		colon = strrchr(listen, ':');
		if (colon == NULL)
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "listen address \"%s\" needs a port (host:port)", listen);
		size_t n = (size_t)(colon - listen);
		if (n >= sizeof(host))
			return sp_diag_set(diag, SP_ERR_INVALID, "listen host is too long");
		memcpy(host, listen, n);
		host[n] = '\0';
	}
	char *end = NULL;
	long port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535)
		return sp_diag_set(diag, SP_ERR_INVALID,
		                   "listen address \"%s\": port must be 0-65535", listen);
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
		return 0;
	}
	return sp_diag_set(diag, SP_ERR_INVALID,
	                   "listen address \"%s\": \"%s\" is not an IP address", listen, host);
}

static void request_free(struct http_request *req)
{
	if (req == NULL)
		return;
	if (req->state_free != NULL && req->state != NULL)
		req->state_free(req->state);
	sp_buf_free_secret(&req->body); /* bodies may carry secrets (client_secret, tokens) */
	sp_buf_free(&req->response);
	free(req);
}

static void set_reply_body(struct http_request *req, unsigned status, const char *type,
                           const char *text, size_t len)
{
	sp_buf_reset(&req->response);
	req->status = status;
	req->content_type = type;
	req->replied = 1;
	if (sp_buf_put(&req->response, text, len) < 0) {
		/* Only possible on allocation failure; a short plain answer still goes out. */
		sp_buf_reset(&req->response);
		req->status = 500;
		req->content_type = "text/plain";
	}
}

void http_reply_text(struct http_request *req, unsigned status, const char *content_type,
                     const char *text, size_t len)
{
	set_reply_body(req, status, content_type, text, len);
}

void http_reply_json(struct http_request *req, unsigned status, json_t *body)
{
	char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (text == NULL) {
		http_reply_error(req, 500, "internal", "response could not be encoded");
		return;
	}
	set_reply_body(req, status, "application/json", text, strlen(text));
	free(text);
}

void http_reply_error(struct http_request *req, unsigned status, const char *code,
                      const char *fmt, ...)
{
	char message[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	json_t *body = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message);
	char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (text == NULL) {
		static const char fallback[] =
			"{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
		set_reply_body(req, 500, "application/json", fallback, sizeof(fallback) - 1);
		return;
	}
	set_reply_body(req, status, "application/json", text, strlen(text));
	free(text);
}

int http_add_header(struct http_request *req, const char *name, const char *value)
{
	if (req->header_count == HTTP_MAX_RESPONSE_HEADERS)
		return SP_ERR_TOO_LARGE;
	struct http_header *h = &req->headers[req->header_count];
	if (strlen(name) >= sizeof(h->name) || strlen(value) >= sizeof(h->value))
		return SP_ERR_TOO_LARGE;
	if (strpbrk(value, "\r\n") != NULL)
		return SP_ERR_INVALID;
	snprintf(h->name, sizeof(h->name), "%s", name);
	snprintf(h->value, sizeof(h->value), "%s", value);
	req->header_count++;
	return 0;
}

const char *http_header(struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

const char *http_query(struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->connection, MHD_GET_ARGUMENT_KIND, name);
}

struct query_check {
	const char *const *known;
	const char *seen[32];
	size_t seen_count;
	const char *bad;
};

static enum MHD_Result query_check_one(void *cls, enum MHD_ValueKind kind, const char *key,
                                       const char *value)
{
	(void)kind;
	(void)value;
	struct query_check *q = cls;
	size_t i = 0;
	while (q->known[i] != NULL && strcmp(q->known[i], key) != 0)
		i++;
	if (q->known[i] == NULL || q->seen_count == sizeof(q->seen) / sizeof(q->seen[0])) {
		q->bad = key;
		return MHD_NO;
	}
	for (size_t j = 0; j < q->seen_count; j++) {
		if (q->seen[j] == q->known[i]) {
			q->bad = key;
			return MHD_NO;
		}
	}
	q->seen[q->seen_count++] = q->known[i];
	return MHD_YES;
}

const char *http_query_unexpected(struct http_request *req, const char *const *known)
{
	struct query_check q = {.known = known};
	(void)MHD_get_connection_values(req->connection, MHD_GET_ARGUMENT_KIND, query_check_one,
	                                &q);
	return q.bad;
}

const char *http_cookie(struct http_request *req, const char *name)
{
	return MHD_lookup_connection_value(req->connection, MHD_COOKIE_KIND, name);
}

json_t *http_body_json_object(struct http_request *req)
{
	const char *type = http_header(req, "Content-Type");
	if (type == NULL || strncasecmp(type, "application/json", 16) != 0 ||
	    (type[16] != '\0' && type[16] != ';')) {
		http_reply_error(req, 415, "unsupported_media_type",
		                 "the request body must be application/json");
		return NULL;
	}
	if (req->body.len == 0) {
		http_reply_error(req, 400, "invalid_json", "the request body is empty");
		return NULL;
	}
	json_error_t err;
	json_t *value = json_loadb((const char *)req->body.data, req->body.len,
	                           JSON_REJECT_DUPLICATES, &err);
	if (value == NULL) {
		http_reply_error(req, 400, "invalid_json", "the request body is not valid JSON: %s "
		                 "(line %d, column %d)", err.text, err.line, err.column);
		return NULL;
	}
	if (!json_is_object(value)) {
		json_decref(value);
		http_reply_error(req, 400, "invalid_json", "the request body must be a JSON object");
		return NULL;
	}
	return value;
}

void http_suspend(struct http_request *req)
{
	req->suspended = 1;
	MHD_suspend_connection(req->connection);
}

void http_resume(struct http_request *req)
{
	MHD_resume_connection(req->connection);
}

static enum MHD_Result send_response(struct http_request *req)
{
	if (req->server->on_response != NULL)
		req->server->on_response(req, req->server->app);
	struct MHD_Response *resp = MHD_create_response_from_buffer(
		req->response.len, req->response.data, MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type",
	                        req->content_type != NULL ? req->content_type : "text/plain");
	MHD_add_response_header(resp, "X-Request-Id", req->request_id);
	MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
	int has_cache = 0;
	for (size_t i = 0; i < req->header_count; i++) {
		MHD_add_response_header(resp, req->headers[i].name, req->headers[i].value);
		if (strcasecmp(req->headers[i].name, "Cache-Control") == 0)
			has_cache = 1;
	}
	if (!has_cache)
		MHD_add_response_header(resp, "Cache-Control", "no-store");
	enum MHD_Result r = MHD_queue_response(req->connection, req->status, resp);
	MHD_destroy_response(resp);
	return r;
}

static void dispatch(struct http_server *server, struct http_request *req)
{
	/* The gate runs once per request, not again when a parked request resumes. */
	if (server->gate != NULL && req->state == NULL && !req->gated) {
		req->gated = 1;
		req->replied = 0;
		if (server->gate(req, server->app) != 0) {
			if (!req->replied)
				http_reply_error(req, 403, "forbidden", "not allowed");
			return;
		}
	}
	req->replied = 0;
	req->suspended = 0;
	((http_handler)req->match.route->handler)(req, server->app);
	if (!req->suspended && !req->replied)
		http_reply_error(req, 500, "internal", "the handler produced no response");
}

static struct http_request *request_new(struct http_server *server,
                                        struct MHD_Connection *connection, const char *method)
{
	struct http_request *req = calloc(1, sizeof(*req));
	if (req == NULL)
		return NULL;
	req->server = server;
	req->connection = connection;
	req->method = method;
	req->started_ms = sp_monotonic_ms();
	sp_buf_init(&req->body, HTTP_MAX_BODY);
	sp_buf_init(&req->response, 0);
	if (sp_random_hex(16, req->request_id, sizeof(req->request_id)) < 0)
		snprintf(req->request_id, sizeof(req->request_id), "%s", "unknown");
	const union MHD_ConnectionInfo *info =
		MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (info != NULL && info->client_addr != NULL) {
		const struct sockaddr *sa = info->client_addr;
		if (sa->sa_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
			          req->client_address, sizeof(req->client_address));
		else if (sa->sa_family == AF_INET6)
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
			          req->client_address, sizeof(req->client_address));
	}
	return req;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
	(void)version;
	struct http_server *server = cls;
	struct http_request *req = *con_cls;

	if (req == NULL) {
		req = request_new(server, connection, method);
		if (req == NULL)
			return MHD_NO;
		*con_cls = req;
		snprintf(req->path, sizeof(req->path), "%s", url);
		int r = strlen(url) >= sizeof(req->path)
		                ? SP_ERR_INVALID
		                : router_match(server->routes, server->route_count, method, url,
		                               &req->match);
		if (r == SP_ERR_NOT_FOUND) {
			http_reply_error(req, 404, "not_found", "no such path");
		} else if (r == SP_ERR_UNSUPPORTED) {
			http_reply_error(req, 405, "method_not_allowed", "%s is not allowed here",
			                 method);
			http_add_header(req, "Allow", req->match.allow);
		} else if (r < 0) {
			http_reply_error(req, 400, "bad_path", "the request path is not valid");
		} else {
			const char *length = MHD_lookup_connection_value(connection, MHD_HEADER_KIND,
			                                                 "Content-Length");
			if (length != NULL && strtoull(length, NULL, 10) > HTTP_MAX_BODY)
				http_reply_error(req, 413, "body_too_large",
				                 "the request body is larger than %u bytes", HTTP_MAX_BODY);
			else
				return MHD_YES; /* wait for the body */
		}
		return send_response(req);
	}

	if (*upload_data_size != 0) {
		if (!req->body_too_large &&
		    sp_buf_put(&req->body, upload_data, *upload_data_size) == SP_ERR_TOO_LARGE)
			req->body_too_large = 1;
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (req->replied && !req->suspended)
		return send_response(req);
	if (req->body_too_large) {
		http_reply_error(req, 413, "body_too_large", "the request body is larger than %u bytes",
		                 HTTP_MAX_BODY);
		return send_response(req);
	}
	dispatch(server, req);
	if (req->suspended)
		return MHD_YES;
	return send_response(req);
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
	(void)cls;
	(void)connection;
	(void)code;
	request_free(*con_cls);
	*con_cls = NULL;
}

int http_server_start(const struct http_server_options *opts, struct http_server **out,
                      struct sp_diag *diag)
{
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	*out = NULL;
	int r = parse_listen(opts->listen, &ss, &sslen, diag);
	if (r < 0)
		return r;
	struct http_server *server = calloc(1, sizeof(*server));
	if (server == NULL)
		return SP_ERR_NOMEM;
	server->routes = opts->routes;
	server->route_count = opts->route_count;
	server->app = opts->app;
	server->gate = opts->gate;
	server->on_response = opts->on_response;

	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
	if (ss.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (opts->tls_cert_pem != NULL)
		flags |= MHD_USE_TLS;
	unsigned limit = opts->connection_limit != 0 ? opts->connection_limit : 4096;
	unsigned timeout = opts->connection_timeout_s != 0 ? opts->connection_timeout_s : 120;
	if (opts->tls_cert_pem != NULL)
		server->daemon = MHD_start_daemon(
			flags, 0, NULL, NULL, on_request, server, MHD_OPTION_SOCK_ADDR, &ss,
			MHD_OPTION_NOTIFY_COMPLETED, on_completed, server, MHD_OPTION_CONNECTION_LIMIT,
			limit, MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_HTTPS_MEM_CERT,
			opts->tls_cert_pem, MHD_OPTION_HTTPS_MEM_KEY, opts->tls_key_pem, MHD_OPTION_END);
	else
		server->daemon = MHD_start_daemon(
			flags, 0, NULL, NULL, on_request, server, MHD_OPTION_SOCK_ADDR, &ss,
			MHD_OPTION_NOTIFY_COMPLETED, on_completed, server, MHD_OPTION_CONNECTION_LIMIT,
			limit, MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_END);
	if (server->daemon == NULL) {
		free(server);
		return sp_diag_set(diag, SP_ERR_IO,
		                   "cannot listen on %s (address in use, not local, or TLS material "
		                   "invalid)", opts->listen);
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(server->daemon,
	                                                       MHD_DAEMON_INFO_BIND_PORT);
	server->port = info != NULL ? info->port : 0;
	*out = server;
	return 0;
}

uint16_t http_server_port(const struct http_server *server)
{
	return server->port;
}

void http_server_stop(struct http_server *server)
{
	if (server == NULL)
		return;
	MHD_stop_daemon(server->daemon);
	free(server);
}
