/*
 * controller/routes.h — each module's routes. A module defines `NAME_routes[]` and
 * `NAME_route_count` in its own file and is listed once in routes.c; nothing else needs
 * to know its handlers.
 */
#ifndef SALLYPORT_CONTROLLER_ROUTES_H
#define SALLYPORT_CONTROLLER_ROUTES_H

#include <stddef.h>

#include "controller/router.h"

extern const struct route ops_routes[];
extern const size_t ops_route_count;
extern const struct route policy_routes[];
extern const size_t policy_route_count;
extern const struct route connector_api_routes[];
extern const size_t connector_api_route_count;
extern const struct route feed_api_routes[];
extern const size_t feed_api_route_count;
extern const struct route admin_resources_routes[];
extern const size_t admin_resources_route_count;
extern const struct route admin_identity_routes[];
extern const size_t admin_identity_route_count;
extern const struct route admin_events_routes[];
extern const size_t admin_events_route_count;
extern const struct route auth_routes[];
extern const size_t auth_route_count;
extern const struct route console_routes[];
extern const size_t console_route_count;
extern const struct route relay_api_routes[];
extern const size_t relay_api_route_count;

#endif
