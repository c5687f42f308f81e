/*
 * controller/admin_events.c — the admin API's history (/api/v1): audit events and flow
 * events, read-only, filtered by query parameters, paged by id (oldest first) and
 * exported as JSON lines with ?format=jsonl (Content-Type application/x-ndjson; at
 * most ADMIN_EXPORT_MAX lines per answer, continued with the X-Next-Cursor header).
 */
#include "controller/admin_api.h"
#include "controller/routes.h"

static const struct admin_filter audit_filters[] = {
    {"action", "action = ?", ADMIN_FILTER_TEXT},
    {"actor_id", "actor_id = ?", ADMIN_FILTER_TEXT},
    {"actor_type", "actor_type = ?", ADMIN_FILTER_TEXT},
    {"target_type", "target_type = ?", ADMIN_FILTER_TEXT},
    {"target_id", "target_id = ?", ADMIN_FILTER_TEXT},
    {"outcome", "outcome = ?", ADMIN_FILTER_TEXT},
    {"since", "time >= ?", ADMIN_FILTER_INT},
    {"until", "time < ?", ADMIN_FILTER_INT},
};

/* before_json / after_json are parsed and shown as "before" / "after". */
static const struct admin_collection audit_events = {
    .kind = "audit_event",
    .label = "audit event",
    .table = "audit_events",
    .key_column = "id",
    .select = "SELECT id, time, actor_type, actor_id, actor_label, action, outcome, target_type,"
	      " target_id, before_json, after_json, request_id, source_address FROM audit_events",
    .select_key = "id",
    .integer_key = 1,
    .filters = audit_filters,
    .filter_count = sizeof(audit_filters) / sizeof(audit_filters[0]),
    .exportable = 1,
};

static const struct admin_filter flow_filters[] = {
    {"user_id", "user_id = ?", ADMIN_FILTER_TEXT},
    {"device_id", "device_id = ?", ADMIN_FILTER_TEXT},
    {"session_id", "session_id = ?", ADMIN_FILTER_TEXT},
    {"connector_id", "connector_id = ?", ADMIN_FILTER_TEXT},
    {"resource_id", "resource_id = ?", ADMIN_FILTER_TEXT},
    {"decision", "decision = ?", ADMIN_FILTER_TEXT},
    {"reason", "reason = ?", ADMIN_FILTER_TEXT},
    {"protocol", "protocol = ?", ADMIN_FILTER_TEXT},
    {"since", "time >= ?", ADMIN_FILTER_INT},
    {"until", "time < ?", ADMIN_FILTER_INT},
};

static const struct admin_collection flow_events = {
    .kind = "flow_event",
    .label = "flow event",
    .table = "flow_events",
    .key_column = "id",
    .select = "SELECT id, time, flow_id, connector_id, user_id, device_id, session_id,"
	      " resource_id, protocol, destination_host, destination_ip, destination_port,"
	      " decision, reason, bytes_up, bytes_down, duration_ms FROM flow_events",
    .select_key = "id",
    .integer_key = 1,
    .filters = flow_filters,
    .filter_count = sizeof(flow_filters) / sizeof(flow_filters[0]),
    .exportable = 1,
};

ADMIN_HANDLER(list_audit, list, audit_events)
ADMIN_HANDLER(get_audit, get, audit_events)
ADMIN_HANDLER(list_flows, list, flow_events)
ADMIN_HANDLER(get_flow, get, flow_events)

const struct route admin_events_routes[] = {
    {"GET", "/api/v1/audit-events", (void *)list_audit, ROUTE_ADMIN_READ},
    {"GET", "/api/v1/audit-events/{id}", (void *)get_audit, ROUTE_ADMIN_READ},
    {"GET", "/api/v1/flow-events", (void *)list_flows, ROUTE_ADMIN_READ},
    {"GET", "/api/v1/flow-events/{id}", (void *)get_flow, ROUTE_ADMIN_READ},
};
const size_t admin_events_route_count =
    sizeof(admin_events_routes) / sizeof(admin_events_routes[0]);
