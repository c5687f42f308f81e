/*
 * connector/http_client.h — one blocking HTTP exchange with the controller (libcurl),
 * used only by the connector's control threads. Bodies are bounded.
 */
#ifndef SALLYPORT_CONNECTOR_HTTP_CLIENT_H
#define SALLYPORT_CONNECTOR_HTTP_CLIENT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/error.h"

/* The answer. body is NUL-terminated heap text (free()); status 0 when none came. */
struct connector_http_response {
	long status;
	char *body;
	size_t body_len;
	int64_t date; /* the answer's Date header, seconds since 1970; 0 when absent */
};

/*
 * Sends method to base_url + path with an optional JSON body and bearer token, waits at
 * most timeout_s, keeps at most max_body bytes of the answer (more is SP_ERR_TOO_LARGE).
 * When `stop` is set and becomes non-zero the transfer is abandoned (SP_ERR_AGAIN).
 * Returns 0 when an HTTP answer arrived (any status), SP_ERR_IO with a diag naming the
 * transport error otherwise.
 */
int connector_http(const char *base_url, const char *method, const char *path,
		   const char *json_body, const char *bearer, long timeout_s, size_t max_body,
		   const atomic_int *stop, struct connector_http_response *out, struct sp_diag *diag);

void connector_http_response_free(struct connector_http_response *resp);

#endif
