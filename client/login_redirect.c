/*
 * client/login_redirect.c — parser for the sign-in redirect (see login_redirect.h).
 */
#include "client/login_redirect.h"

#include <string.h>

static int url_safe(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_' || c == '~';
}

/* Copies one query value of n bytes after checking it. */
static int take(const char *v, size_t n, char out[LOGIN_VALUE_MAX + 1])
{
	if (n == 0 || n > LOGIN_VALUE_MAX)
		return SP_ERR_INVALID;
	for (size_t i = 0; i < n; i++)
		if (!url_safe(v[i]))
			return SP_ERR_INVALID;
	memcpy(out, v, n);
	out[n] = '\0';
	return 0;
}

int login_parse_redirect(const char *data, size_t len, char code[LOGIN_VALUE_MAX + 1],
			 char state[LOGIN_VALUE_MAX + 1])
{
	code[0] = state[0] = '\0';
	size_t scan = len < LOGIN_REQUEST_MAX ? len : LOGIN_REQUEST_MAX;
	const char *eol = memchr(data, '\r', scan);
	if (eol == NULL)
		return len >= LOGIN_REQUEST_MAX ? SP_ERR_TOO_LARGE : SP_ERR_AGAIN;
	size_t line = (size_t)(eol - data);
	if (line < 4 || memcmp(data, "GET ", 4) != 0)
		return SP_ERR_INVALID;
	const char *target = data + 4;
	const char *sp = memchr(target, ' ', line - 4);
	if (sp == NULL)
		return SP_ERR_INVALID;
	size_t vlen = (size_t)(eol - (sp + 1));
	if (vlen != 8 || (memcmp(sp + 1, "HTTP/1.1", 8) != 0 && memcmp(sp + 1, "HTTP/1.0", 8) != 0))
		return SP_ERR_INVALID;
	size_t tlen = (size_t)(sp - target);
	if (tlen < 4 || memcmp(target, "/cb?", 4) != 0)
		return SP_ERR_NOT_FOUND;
	const char *q = target + 4, *end = sp;
	int have_code = 0, have_state = 0;
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *pair_end = amp != NULL ? amp : end;
		const char *eq = memchr(q, '=', (size_t)(pair_end - q));
		if (eq != NULL) {
			size_t klen = (size_t)(eq - q), n = (size_t)(pair_end - (eq + 1));
			int rc = 0;
			if (klen == 4 && memcmp(q, "code", 4) == 0) {
				rc = have_code ? SP_ERR_INVALID : take(eq + 1, n, code);
				have_code = 1;
			} else if (klen == 5 && memcmp(q, "state", 5) == 0) {
				rc = have_state ? SP_ERR_INVALID : take(eq + 1, n, state);
				have_state = 1;
			}
			if (rc < 0) {
				code[0] = state[0] = '\0';
				return rc;
			}
		}
		q = pair_end + (amp != NULL ? 1 : 0);
	}
	if (!have_code || !have_state) {
		code[0] = state[0] = '\0';
		return SP_ERR_NOT_FOUND;
	}
	return 0;
}
