/* controller/routes.c — assembles every module's routes into the server's one table. */
#include <stdlib.h>
#include <string.h>

#include "controller/app.h"
#include "controller/routes.h"

struct route_module {
	const struct route *routes;
	const size_t *count;
};

static const struct route_module modules[] = {
	{ops_routes, &ops_route_count},
	{policy_routes, &policy_route_count},
	{connector_api_routes, &connector_api_route_count},
	{feed_api_routes, &feed_api_route_count},
	{admin_resources_routes, &admin_resources_route_count},
	{admin_identity_routes, &admin_identity_route_count},
	{admin_events_routes, &admin_events_route_count},
	{auth_routes, &auth_route_count},
	{console_routes, &console_route_count},
	{relay_api_routes, &relay_api_route_count},
};

/* Built once at start-up (before the server thread exists) and kept for the process. */
static struct route *table;
static size_t table_count;

const struct route *controller_routes(size_t *count)
{
	if (table == NULL) {
		size_t total = 0;
		for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++)
			total += *modules[i].count;
		table = calloc(total, sizeof(*table));
		if (table == NULL) {
			*count = 0;
			return NULL;
		}
		for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++) {
			memcpy(table + table_count, modules[i].routes,
			       *modules[i].count * sizeof(*table));
			table_count += *modules[i].count;
		}
	}
	*count = table_count;
	return table;
}
