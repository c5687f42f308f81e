/* controller/router.c — see router.h. */
#include "controller/router.h"

#include <string.h>

#include "shared/error.h"

/* The first len bytes of path are clean when they start with '/', have no empty, "." or
 * ".." segments (except a lone "/"), and no bytes below 0x21 or 0x7f. */
static int path_is_clean(const char *path, size_t len)
{
	if (len == 0 || len > ROUTER_MAX_PATH || path[0] != '/')
		return 0;
	if (len == 1)
		return 1;
	const char *seg = path + 1, *stop = path + len;
	for (;;) {
		const char *end = memchr(seg, '/', (size_t)(stop - seg));
		size_t n = end != NULL ? (size_t)(end - seg) : (size_t)(stop - seg);
		if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return 0;
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)seg[i];
			if (c < 0x21 || c == 0x7f)
				return 0;
		}
		if (end == NULL)
			return 1;
		seg = end + 1;
	}
}

/* 1 on match, 0 on mismatch, negative on a capture that does not fit. */
static int pattern_match(const char *pattern, const char *path, struct route_match *m)
{
	size_t count = 0;
	const char *p = pattern, *s = path;
	while (*p != '\0' && *s != '\0') {
		if (*p != '/' || *s != '/')
			return 0;
		p++;
		s++;
		const char *pend = strchr(p, '/');
		const char *send = strchr(s, '/');
		size_t plen = pend != NULL ? (size_t)(pend - p) : strlen(p);
		size_t slen = send != NULL ? (size_t)(send - s) : strlen(s);
		if (plen >= 2 && p[0] == '{' && p[plen - 1] == '}') {
			if (slen == 0)
				return 0;
			if (count == ROUTER_MAX_PARAMS || slen >= ROUTER_MAX_PARAM_LEN)
				return SP_ERR_INVALID;
			memcpy(m->params[count], s, slen);
			m->params[count][slen] = '\0';
			count++;
		} else if (plen != slen || memcmp(p, s, plen) != 0) {
			return 0;
		}
		p += plen;
		s += slen;
	}
	if (*p != '\0' || *s != '\0')
		return 0;
	m->param_count = count;
	return 1;
}

int router_match(const struct route *table, size_t count, const char *method, const char *path,
                 struct route_match *match)
{
	memset(match, 0, sizeof(*match));
	size_t len = strlen(path);
	/* One trailing '/' is allowed only for patterns written with it ("/admin/"). */
	int trailing = len > 2 && path[len - 1] == '/'; /* "//" stays unclean */
	if (!path_is_clean(path, trailing ? len - 1 : len))
		return SP_ERR_INVALID;
	int path_known = 0;
	for (size_t i = 0; i < count; i++) {
		size_t plen = strlen(table[i].pattern);
		if (trailing && (plen < 2 || table[i].pattern[plen - 1] != '/'))
			continue;
		struct route_match candidate;
		memset(&candidate, 0, sizeof(candidate));
		int r = pattern_match(table[i].pattern, path, &candidate);
		if (r < 0)
			return r;
		if (r == 0)
			continue;
		if (strcmp(table[i].method, method) == 0) {
			*match = candidate;
			match->route = &table[i];
			return 0;
		}
		/* Remember the methods this path supports, for the Allow header. */
		size_t used = strlen(match->allow);
		size_t need = strlen(table[i].method) + (used != 0 ? 2 : 0);
		if (used + need < sizeof(match->allow) && strstr(match->allow, table[i].method) == NULL) {
			if (used != 0) {
				memcpy(match->allow + used, ", ", 2);
				used += 2;
			}
			memcpy(match->allow + used, table[i].method, strlen(table[i].method) + 1);
		}
		path_known = 1;
	}
	if (path_known)
		return SP_ERR_UNSUPPORTED;
	return trailing ? SP_ERR_INVALID : SP_ERR_NOT_FOUND;
}

const char *router_param(const struct route_match *match, size_t i)
{
	return i < match->param_count ? match->params[i] : "";
}
