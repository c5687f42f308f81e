/*
 * controller/policy.h — who may reach what: policy evaluation, the client's signed
 * resource list and flow grants (DESIGN.md §2 steps 2, 3 and 5; docs/protocol.md §1).
 *
 * Three layers, one prefix:
 *
 *   - the snapshot (pure, policy.c): resources, policies and active connectors built
 *     from store rows into lookup structures — a shared/resource_index.h index over the
 *     resources (most specific resource wins), each resource's policies sorted by group
 *     id, each group's policies, connectors by network. policy_evaluate decides one
 *     flow in microseconds against it; policy_resources_claims and policy_grant_claims
 *     build the claim sets the controller signs. Nothing here touches the database or a clock.
 *   - the store side (policy_store.c): reads the rows, keeps the current snapshot in
 *     struct policy_state (c->policy) and rebuilds it lazily when the change feed's
 *     sequence (store_latest_change) has moved; reads a user's memberships and a
 *     session's facts.
 *   - the routes (policy_routes.c): POST /api/v1/access/check, GET
 *     /api/client/v1/resources, POST /api/client/v1/grants.
 *
 * Decision order (default deny; the first failing step gives the reason):
 *   1. no_resource           no resource covers the destination (or the id is unknown);
 *   2. no_policy             none of the user's groups has a policy for that resource;
 *   3. protocol_not_allowed  the resource allows no port of the protocol (or no ICMP);
 *      port_not_allowed      the protocol is allowed, the port is not;
 *   4. mfa_required          every applicable policy failed, and one of them on MFA;
 *      session_too_old       every applicable policy failed on the session's age.
 * One satisfied policy of any of the user's groups allows. The most specific resource
 * alone decides (shared/resource_index.h): a broader resource is never consulted.
 * no_policy comes before the port checks so a caller learns nothing about the ports of
 * a resource it may not use.
 *
 * Ownership: a snapshot is immutable once built and owns copies of every string; the
 * resources and rules that decisions point to live until policy_snapshot_free. The
 * controller's struct policy_state is used from the HTTP thread only (like c->db).
 */
#ifndef SALLYPORT_CONTROLLER_POLICY_H
#define SALLYPORT_CONTROLLER_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include "controller/db.h"

#include "shared/error.h"
#include "shared/resource_index.h"

/* Lifetime of the signed resource list (docs/protocol.md §1). */
#define POLICY_RESOURCES_TTL_S 600
/* The amr value that proves multi-factor authentication. */
#define POLICY_AMR_MFA "mfa"

enum policy_reason {
	POLICY_ALLOWED = 0,
	POLICY_NO_RESOURCE,
	POLICY_NO_POLICY,
	POLICY_PROTOCOL_NOT_ALLOWED,
	POLICY_PORT_NOT_ALLOWED,
	POLICY_MFA_REQUIRED,
	POLICY_SESSION_TOO_OLD,
};

/* "allowed", "no_resource", "no_policy", ... (the codes of flow events and API errors). */
const char *policy_reason_name(enum policy_reason reason);

/* ---- rows, as the store holds them (borrowed strings; NULL where the column is) ---- */

struct policy_resource_row {
	const char *id;
	const char *network_id;
	const char *name;
	const char *address;
	const char *alias;    /* NULL when none */
	const char *tcp_json; /* canonical port spec: "all", "none" or ["22","8000-8100"] */
	const char *udp_json;
	int icmp;
};

struct policy_rule_row {
	const char *id;
	const char *group_id;
	const char *resource_id;
	int require_mfa;
	int64_t max_session_age_s; /* 0: no limit */
};

/* Only active connectors are given to the snapshot. */
struct policy_connector_row {
	const char *id;
	const char *network_id;
	const char *name;
	const char *public_key_digest; /* SPKI SHA-256, 64 lower-case hex digits */
	const char *direct_address;    /* NULL when the connector takes relayed tunnels only */
};

struct policy_rows {
	const struct policy_resource_row *resources;
	size_t resource_count;
	const struct policy_rule_row *rules;
	size_t rule_count;
	const struct policy_connector_row *connectors;
	size_t connector_count;
};

/* ---- the snapshot ---- */

/* One resource. Its position in snapshot->resources is its sp_resource id in the index. */
struct policy_resource {
	char *id;
	char *network_id;
	char *name;
	char *address; /* as the admin typed it */
	char *alias;   /* NULL when none */
	size_t first_rule; /* its rules: rules[first_rule .. first_rule + rule_count), by group id */
	size_t rule_count;
};

struct policy_rule {
	char *id;
	char *group_id;
	size_t resource; /* position in snapshot->resources */
	int require_mfa;
	int64_t max_session_age_s;
};

struct policy_group {
	char *id;     /* borrowed from one of its rules */
	size_t first; /* its rules: rules_by_group[first .. first + count) */
	size_t count;
};

struct policy_connector {
	char *id;
	char *network_id;
	char *name;
	char *public_key_digest;
	char *direct_address;
};

struct policy_snapshot {
	int64_t seq; /* the change sequence the rows were read at */
	struct sp_resource_index *index;
	struct policy_resource *resources; /* sorted by id */
	size_t resource_count;
	size_t skipped_resources; /* rows whose address or ports did not parse (never reachable) */
	struct policy_rule *rules; /* sorted by (resource, group id) */
	size_t rule_count;
	struct policy_group *groups; /* groups having at least one policy, sorted by id */
	size_t group_count;
	size_t *rules_by_group;
	struct policy_connector *connectors; /* sorted by (network id, name) */
	size_t connector_count;
};

/*
 * Builds a snapshot from rows (copied). A resource whose address, alias or port specs do
 * not parse is left out and counted in skipped_resources, with its policies: one bad row
 * must not deny everything else. Policies naming an unknown resource are left out.
 * 0, SP_ERR_NOMEM, or SP_ERR_TOO_LARGE past SP_RESOURCE_MAX_COUNT resources.
 */
int policy_snapshot_build(const struct policy_rows *rows, int64_t seq,
                          struct policy_snapshot **out, struct sp_diag *diag);
/* Safe on NULL. */
void policy_snapshot_free(struct policy_snapshot *snapshot);

/* The resource with this id, or NULL. O(log n). */
const struct policy_resource *policy_find_resource(const struct policy_snapshot *snapshot,
                                                   const char *id);
/* The parsed resource (ports, ICMP) of a snapshot resource. */
const struct sp_resource *policy_resource_parsed(const struct policy_snapshot *snapshot,
                                                 const struct policy_resource *resource);

/* ---- decisions ---- */

/* Who asks: the user's groups and the facts of the session the request rides on. */
struct policy_subject {
	const char *const *group_ids; /* sorted ascending by strcmp, no duplicates */
	size_t group_count;
	int mfa;           /* the session's amr holds "mfa" */
	int64_t auth_time; /* when the IdP (or key) authenticated the user */
};

struct policy_decision {
	enum policy_reason reason;
	/* The resource that matched (NULL for no_resource). */
	const struct policy_resource *resource;
	/* Allowed: the policy that allows. mfa_required / session_too_old: the policy whose
	 * condition failed. NULL otherwise. */
	const struct policy_rule *rule;
};

/*
 * The decision for a flow of `protocol` (enum sp_resource_protocol) to `port` on
 * `destination` (a host name or IP literal) at time `now`. Returns 0 whenever a decision
 * was made; SP_ERR_INVALID (decision no_resource) when the destination is neither a host
 * name nor an IP address.
 */
int policy_evaluate(const struct policy_snapshot *snapshot, const struct policy_subject *subject,
                    const char *destination, int protocol, uint16_t port, int64_t now,
                    struct policy_decision *out);

/* Steps 2 and 4 of the decision for one known resource (no port): what a grant needs. */
void policy_evaluate_resource(const struct policy_snapshot *snapshot,
                              const struct policy_subject *subject,
                              const struct policy_resource *resource, int64_t now,
                              struct policy_decision *out);

/* A person's sentence explaining a decision ("Allowed by policy ... of group ..."). */
int policy_explain(const struct policy_decision *decision, const char *destination,
                   const char *protocol, uint16_t port, char *out, size_t size);

/*
 * A resource as the API and the client's list show it: {"id","name","network_id",
 * "address","alias" (null when none),"tcp","udp","icmp"}. NULL when out of memory.
 */
json_t *policy_resource_to_json(const struct policy_snapshot *snapshot,
                                const struct policy_resource *resource);

/* ---- signed documents (claims only; the caller signs with its authority) ---- */

/*
 * The claims of the client's resource list (docs/protocol.md §1.5): every resource the
 * subject may reach now, with its network's active connectors. *out is a new object.
 */
int policy_resources_claims(const struct policy_snapshot *snapshot,
                            const struct policy_subject *subject, const char *issuer,
                            const char *user_id, const char *device_id, int64_t now,
                            json_t **out);

struct policy_grant_request {
	const char *issuer;
	const char *user_id;
	const char *session_id;
	const char *device_id;
	const char *device_jkt; /* RFC 7638 thumbprint of the device key */
	const char *jti;        /* 128 random bits, hex */
	int64_t now;
	int64_t ttl_s;
};

/*
 * The claims of a flow grant (docs/protocol.md §1.1) for `resource_id`. Fills *decision;
 * *out is a new object when the decision is allowed, NULL otherwise. 0 or SP_ERR_NOMEM.
 */
int policy_grant_claims(const struct policy_snapshot *snapshot,
                        const struct policy_subject *subject,
                        const struct policy_grant_request *request, const char *resource_id,
                        struct policy_decision *decision, json_t **out);

/* ---- store side (policy_store.c), HTTP thread only ---- */

struct controller;

/* The controller's policy state (c->policy): the current snapshot. */
struct policy_state {
	struct policy_snapshot *snapshot;
	int64_t rebuilds;
};

/*
 * Reads every row the snapshot needs and the change sequence they belong to, in one read
 * transaction (or the caller's, when one is open), and builds the snapshot.
 */
int policy_snapshot_load(struct db *db, struct policy_snapshot **out, struct sp_diag *diag);

/*
 * The current snapshot, rebuilt first when the change sequence moved since it was built
 * (or none exists). Creates c->policy on first use. Borrowed until the next call.
 */
int policy_current(struct controller *c, const struct policy_snapshot **out,
                   struct sp_diag *diag);
/* Frees c->policy (main.c, at shutdown). Safe when none exists. */
void policy_state_free(struct controller *c);

/* A user's group ids, sorted. Release with policy_groups_free. */
struct policy_groups {
	char (*ids)[33];
	const char **list; /* pointers into ids, for struct policy_subject */
	size_t count;
};
int policy_load_groups(struct db *db, const char *user_id, struct policy_groups *out);
void policy_groups_free(struct policy_groups *groups);

/* MFA and auth time of a session. SP_ERR_NOT_FOUND when no such session. */
int policy_load_session(struct db *db, const char *session_id, int *mfa, int64_t *auth_time);
/* True when a JSON amr array holds "mfa". */
int policy_amr_has_mfa(const char *amr_json, size_t len);

#endif
