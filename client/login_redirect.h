/*
 * client/login_redirect.h — the browser's redirect to the client's loopback listener.
 *
 * During `sallyport login` the controller sends the browser to
 * http://127.0.0.1:PORT/cb?code=spn_...&state=... (docs/auth.md). Any local program can
 * connect to that port, so the request is untrusted: this pure parser takes the bytes of
 * the request head and returns the code and state only when the request line is exactly
 * "GET /cb?<query> HTTP/1.x" and both values are 1..LOGIN_VALUE_MAX characters of the
 * URL-safe set (A-Z a-z 0-9 - . _ ~), which is all the controller ever sends.
 */
#ifndef SALLYPORT_CLIENT_LOGIN_REDIRECT_H
#define SALLYPORT_CLIENT_LOGIN_REDIRECT_H
#include <stddef.h>
#include "shared/error.h"

#define LOGIN_VALUE_MAX 256
/* A request head longer than this without its end is refused. */
#define LOGIN_REQUEST_MAX 8192

/*
 * Parses the request head in data (len bytes; the "\r\n\r\n" need not have arrived, the
 * request line is enough). Returns 0 with code and state (NUL-terminated, each
 * LOGIN_VALUE_MAX + 1 bytes); SP_ERR_AGAIN before the request line is complete;
 * SP_ERR_TOO_LARGE past LOGIN_REQUEST_MAX; SP_ERR_NOT_FOUND for another path or no code;
 * SP_ERR_INVALID for anything malformed. code and state are "" on failure.
 */
int login_parse_redirect(const char *data, size_t len, char code[LOGIN_VALUE_MAX + 1],
			 char state[LOGIN_VALUE_MAX + 1]);
#endif
