/*
 * controller/admin_resources.c — the admin API's network side: remote networks, their
 * resources, their connectors and connector enrollment tokens (/api/v1).
 *
 * Resources are checked field by field (address, alias and port sets are normalised to
 * the canonical forms of shared/resource.h) and then as a whole with
 * sp_resource_from_json, so every stored row is one the connector and client parse.
 * The generic handlers of controller/admin_api.c do the rest.
 */
#include <string.h>

#include <openssl/crypto.h>

#include "controller/admin_api.h"
#include "controller/routes.h"
#include "controller/store.h"
#include "shared/resource.h"

/* ---- remote networks ---- */

static const struct admin_field network_fields[] = {
    {.name = "name",
     .column = "name",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_REQUIRED,
     .min = 1,
     .max = 128},
    {.name = "description",
     .column = "description",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_NULLABLE,
     .min = 0,
     .max = 1024},
};

static const struct admin_filter network_filters[] = {
    {"name", "name = ?", ADMIN_FILTER_TEXT},
};

static const struct admin_collection networks = {
    .kind = "remote_network",
    .label = "remote network",
    .table = "remote_networks",
    .key_column = "id",
    .select = "SELECT id, name, description, created_at, updated_at FROM remote_networks",
    .select_key = "id",
    .fields = network_fields,
    .field_count = sizeof(network_fields) / sizeof(network_fields[0]),
    .filters = network_filters,
    .filter_count = sizeof(network_filters) / sizeof(network_filters[0]),
    .timestamps = ADMIN_CREATED_AT | ADMIN_UPDATED_AT,
};

ADMIN_HANDLER(list_networks, list, networks)
ADMIN_HANDLER(get_network, get, networks)
ADMIN_HANDLER(create_network, create, networks)
ADMIN_HANDLER(update_network, update, networks)
ADMIN_HANDLER(delete_network, delete, networks)

/* ---- resources ---- */

/* A resource given only by its address is the whole host (shared/resource.h). */
static json_t *ports_all(void)
{
	return json_string("all");
}
static json_t *icmp_default(void)
{
	return json_true();
}

static const struct admin_field resource_fields[] = {
    {.name = "name",
     .column = "name",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_REQUIRED,
     .min = 1,
     .max = SP_RESOURCE_DISPLAY_NAME_MAX},
    {.name = "network_id",
     .column = "network_id",
     .type = ADMIN_FIELD_ID,
     .flags = ADMIN_REQUIRED,
     .ref_table = "remote_networks",
     .ref_label = "remote network"},
    {.name = "address", .column = "address", .type = ADMIN_FIELD_ADDRESS, .flags = ADMIN_REQUIRED},
    {.name = "alias", .column = "alias", .type = ADMIN_FIELD_ALIAS, .flags = ADMIN_NULLABLE},
    {.name = "tcp", .column = "tcp_ports", .type = ADMIN_FIELD_PORTS, .default_value = ports_all},
    {.name = "udp", .column = "udp_ports", .type = ADMIN_FIELD_PORTS, .default_value = ports_all},
    {.name = "icmp", .column = "icmp", .type = ADMIN_FIELD_BOOL, .default_value = icmp_default},
};

static const struct admin_filter resource_filters[] = {
    {"network_id", "network_id = ?", ADMIN_FILTER_ID},
    {"name", "name = ?", ADMIN_FILTER_TEXT},
    {"alias", "alias = ?", ADMIN_FILTER_TEXT},
};

static const char *const resource_json_columns[] = {"tcp", "udp", NULL};
static const char *const resource_bool_columns[] = {"icmp", NULL};

/* The merged object must parse as a resource exactly as clients and connectors parse it. */
static int resource_check(const json_t *merged, struct sp_diag *diag)
{
	static const char *const parts[] = {"address", "alias", "tcp", "udp", "icmp"};
	json_t *shape = json_object();
	struct sp_resource res;
	int r = shape != NULL ? 0 : SP_ERR_NOMEM;
	for (size_t i = 0; r == 0 && i < sizeof(parts) / sizeof(parts[0]); i++) {
		json_t *v = json_object_get(merged, parts[i]);
		if (v != NULL && json_object_set(shape, parts[i], v) < 0)
			r = SP_ERR_NOMEM;
	}
	if (r == 0)
		r = sp_resource_from_json(shape, &res, diag);
	if (r == 0)
		sp_resource_free(&res);
	json_decref(shape);
	return r;
}

static const struct admin_collection resources = {
    .kind = "resource",
    .label = "resource",
    .table = "resources",
    .key_column = "id",
    .select = "SELECT id, network_id, name, address, alias, tcp_ports AS tcp,"
	      " udp_ports AS udp, icmp, created_at, updated_at FROM resources",
    .select_key = "id",
    .fields = resource_fields,
    .field_count = sizeof(resource_fields) / sizeof(resource_fields[0]),
    .filters = resource_filters,
    .filter_count = sizeof(resource_filters) / sizeof(resource_filters[0]),
    .json_columns = resource_json_columns,
    .bool_columns = resource_bool_columns,
    .timestamps = ADMIN_CREATED_AT | ADMIN_UPDATED_AT,
    .check = resource_check,
};

ADMIN_HANDLER(list_resources, list, resources)
ADMIN_HANDLER(get_resource, get, resources)
ADMIN_HANDLER(create_resource, create, resources)
ADMIN_HANDLER(update_resource, update, resources)
ADMIN_HANDLER(delete_resource, delete, resources)

/* ---- connectors ---- */

static const char *const connector_states[] = {"active", "disabled", NULL};

static const struct admin_field connector_fields[] = {
    {.name = "state",
     .column = "state",
     .type = ADMIN_FIELD_ENUM,
     .flags = ADMIN_UPDATE_ONLY,
     .values = connector_states},
};

static const struct admin_filter connector_filters[] = {
    {"network_id", "network_id = ?", ADMIN_FILTER_ID},
    {"state", "state = ?", ADMIN_FILTER_TEXT},
};

/* A revoked connector stays revoked: it must enroll again under a new identity. */
static int connector_guard(struct http_request *req, const json_t *before, const char *op)
{
	const char *state = json_string_value(json_object_get(before, "state"));
	if (strcmp(op, "update") == 0 && state != NULL && strcmp(state, "revoked") == 0) {
		http_reply_error(req, 409, "conflict",
				 "the connector is revoked; enroll it again with a new token");
		return 1;
	}
	return 0;
}

static const struct admin_collection connectors = {
    .kind = "connector",
    .label = "connector",
    .table = "connectors",
    .key_column = "id",
    .select = "SELECT id, network_id, name, public_key_digest, state, direct_address, version,"
	      " enrolled_at, last_seen_at, updated_at FROM connectors",
    .select_key = "id",
    .fields = connector_fields,
    .field_count = sizeof(connector_fields) / sizeof(connector_fields[0]),
    .filters = connector_filters,
    .filter_count = sizeof(connector_filters) / sizeof(connector_filters[0]),
    .timestamps = ADMIN_UPDATED_AT,
    .guard = connector_guard,
};

ADMIN_HANDLER(list_connectors, list, connectors)
ADMIN_HANDLER(get_connector, get, connectors)
ADMIN_HANDLER(update_connector, update, connectors)
ADMIN_HANDLER(delete_connector, delete, connectors)

/* POST /api/v1/remote-networks/{id}/connector-tokens {"ttl_s": 86400} (body optional). */
static void create_connector_token(struct http_request *req, void *app)
{
	struct controller *c = app;
	char network_id[33], token[SP_SECRET_TEXT_MAX], id[33];
	json_t *body = NULL, *after = NULL, *network = NULL;
	int64_t ttl_s = ADMIN_TOKEN_TTL_DEFAULT_S;
	struct sp_diag d = {{0}};
	if (admin_path_id(req, 0, "remote network", network_id) < 0)
		return;
	if (req->body.len > 0) {
		static const struct admin_field fields[] = {
		    {.name = "ttl_s",
		     .column = "",
		     .type = ADMIN_FIELD_INT,
		     .min = ADMIN_TOKEN_TTL_MIN_S,
		     .max = ADMIN_TOKEN_TTL_MAX_S},
		};
		json_t *raw = http_body_json_object(req);
		if (raw == NULL)
			return;
		int r = admin_fields_check(raw, fields, 1, 1, &body, &d);
		json_decref(raw);
		if (r < 0) {
			http_reply_error(req, 400, "invalid", "%s", d.message);
			return;
		}
		if (json_object_get(body, "ttl_s") != NULL)
			ttl_s = (int64_t)json_integer_value(json_object_get(body, "ttl_s"));
	}
	if (store_begin(c, &d) < 0) {
		http_reply_error(req, 503, "unavailable", "%s", d.message);
		goto out;
	}
	int r = admin_load(c, &networks, network_id, &network);
	if (r < 0) {
		store_rollback(c);
		if (r == SP_ERR_NOT_FOUND)
			http_reply_error(req, 404, "not_found",
					 "there is no remote network with id \"%s\"", network_id);
		else
			http_reply_error(req, 500, "internal",
					 "the remote network could not be read");
		goto out;
	}
	if (admin_connector_token_create(c->db, network_id, c->now(), ttl_s, token, id, &after,
					 &d) < 0 ||
	    admin_audit(c, req, "connector_token.create", "connector_enrollment_token", id, NULL,
			after) < 0) {
		store_rollback(c);
		http_reply_error(req, 500, "internal", "the token could not be stored");
		goto out;
	}
	if (admin_commit(req, c) < 0)
		goto out;
	/* The token is shown this once; only its hash is kept. */
	json_object_set_new(after, "token", json_string(token));
	http_reply_json(req, 201, after);
	after = NULL;
out:
	OPENSSL_cleanse(token, sizeof(token));
	json_decref(body);
	json_decref(after);
	json_decref(network);
}

const struct route admin_resources_routes[] = {
    {"GET", "/api/v1/remote-networks", (void *)list_networks, ROUTE_ADMIN_READ},
    {"POST", "/api/v1/remote-networks", (void *)create_network, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/remote-networks/{id}", (void *)get_network, ROUTE_ADMIN_READ},
    {"PATCH", "/api/v1/remote-networks/{id}", (void *)update_network, ROUTE_ADMIN_WRITE},
    {"DELETE", "/api/v1/remote-networks/{id}", (void *)delete_network, ROUTE_ADMIN_WRITE},
    {"POST", "/api/v1/remote-networks/{id}/connector-tokens", (void *)create_connector_token,
     ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/resources", (void *)list_resources, ROUTE_ADMIN_READ},
    {"POST", "/api/v1/resources", (void *)create_resource, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/resources/{id}", (void *)get_resource, ROUTE_ADMIN_READ},
    {"PATCH", "/api/v1/resources/{id}", (void *)update_resource, ROUTE_ADMIN_WRITE},
    {"DELETE", "/api/v1/resources/{id}", (void *)delete_resource, ROUTE_ADMIN_WRITE},
    {"GET", "/api/v1/connectors", (void *)list_connectors, ROUTE_ADMIN_READ},
    {"GET", "/api/v1/connectors/{id}", (void *)get_connector, ROUTE_ADMIN_READ},
    {"PATCH", "/api/v1/connectors/{id}", (void *)update_connector, ROUTE_ADMIN_WRITE},
    {"DELETE", "/api/v1/connectors/{id}", (void *)delete_connector, ROUTE_ADMIN_WRITE},
};
const size_t admin_resources_route_count =
    sizeof(admin_resources_routes) / sizeof(admin_resources_routes[0]);
