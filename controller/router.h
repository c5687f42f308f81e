/*
 * controller/router.h — maps (method, path) to a route, sans I/O.
 *
 * Routes are written as patterns of '/'-separated segments where "{name}" captures one
 * non-empty segment: "/api/v1/groups/{id}/members/{user_id}". Matching is exact
 * otherwise (no prefix matching, no trailing-slash folding: a path ending in '/' matches
 * only a pattern written with that '/', like "/admin/"), so the OpenAPI file and
 * the table below can be compared route for route. A path that matches a pattern with
 * another method yields SP_ERR_UNSUPPORTED so the server can answer 405 with Allow.
 *
 * Ownership: the route table is static data owned by the caller; a match borrows
 * pointers into the table and copies captured segments into the match struct.
 */
#ifndef SALLYPORT_CONTROLLER_ROUTER_H
#define SALLYPORT_CONTROLLER_ROUTER_H

#include <stddef.h>

#define ROUTER_MAX_PARAMS 4
#define ROUTER_MAX_PARAM_LEN 128
#define ROUTER_MAX_PATH 2048

struct route {
	const char *method;  /* "GET", "POST", ... */
	const char *pattern; /* "/api/v1/resources/{id}" */
	void *handler;       /* opaque to the router */
	unsigned flags;      /* opaque to the router (auth requirements) */
};

struct route_match {
	const struct route *route;
	size_t param_count;
	char params[ROUTER_MAX_PARAMS][ROUTER_MAX_PARAM_LEN];
	/* For 405: the methods that would have matched, comma-separated. */
	char allow[64];
};

/*
 * Finds the route for method and path (path without query string).
 * 0 on a match; SP_ERR_NOT_FOUND when no pattern matches the path;
 * SP_ERR_UNSUPPORTED when patterns match but not with this method (allow is filled);
 * SP_ERR_INVALID for a path that is not a clean absolute path (empty segments, "." or
 * "..", control characters, over ROUTER_MAX_PATH), a path with a trailing '/' that no
 * pattern ending in '/' matches, or a captured segment too long.
 */
int router_match(const struct route *table, size_t count, const char *method, const char *path,
                 struct route_match *match);

/* The value of parameter i, or "" when there is none. */
const char *router_param(const struct route_match *match, size_t i);

#endif
