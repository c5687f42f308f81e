/* controller/policy.c — the pure part of policy.h: snapshot, decisions, claim sets. */
#include "controller/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/portset.h"
#include "shared/resource.h"

const char *policy_reason_name(enum policy_reason reason)
{
	switch (reason) {
	case POLICY_ALLOWED:
		return "allowed";
	case POLICY_NO_RESOURCE:
		return "no_resource";
	case POLICY_NO_POLICY:
		return "no_policy";
	case POLICY_PROTOCOL_NOT_ALLOWED:
		return "protocol_not_allowed";
	case POLICY_PORT_NOT_ALLOWED:
		return "port_not_allowed";
	case POLICY_MFA_REQUIRED:
		return "mfa_required";
	case POLICY_SESSION_TOO_OLD:
		return "session_too_old";
	}
	return "unknown";
}

/* strdup that keeps NULL as NULL; *failed is set when a non-NULL copy fails. */
static char *copy(const char *s, int *failed)
{
	if (s == NULL)
		return NULL;
	char *c = strdup(s);
	if (c == NULL)
		*failed = 1;
	return c;
}

void policy_snapshot_free(struct policy_snapshot *s)
{
	if (s == NULL)
		return;
	sp_resource_index_free(s->index);
	for (size_t i = 0; i < s->resource_count; i++) {
		free(s->resources[i].id);
		free(s->resources[i].network_id);
		free(s->resources[i].name);
		free(s->resources[i].address);
		free(s->resources[i].alias);
	}
	free(s->resources);
	for (size_t i = 0; i < s->rule_count; i++) {
		free(s->rules[i].id);
		free(s->rules[i].group_id);
	}
	free(s->rules);
	free(s->groups);
	free(s->rules_by_group);
	for (size_t i = 0; i < s->connector_count; i++) {
		free(s->connectors[i].id);
		free(s->connectors[i].network_id);
		free(s->connectors[i].name);
		free(s->connectors[i].public_key_digest);
		free(s->connectors[i].direct_address);
	}
	free(s->connectors);
	free(s);
}

static int compare_resource_rows(const void *a, const void *b)
{
	const struct policy_resource_row *x = *(const struct policy_resource_row *const *)a;
	const struct policy_resource_row *y = *(const struct policy_resource_row *const *)b;
	return strcmp(x->id, y->id);
}

static int compare_rules(const void *a, const void *b)
{
	const struct policy_rule *x = a, *y = b;
	if (x->resource != y->resource)
		return x->resource < y->resource ? -1 : 1;
	int c = strcmp(x->group_id, y->group_id);
	return c != 0 ? c : strcmp(x->id, y->id);
}

static int compare_connectors(const void *a, const void *b)
{
	const struct policy_connector *x = a, *y = b;
	int c = strcmp(x->network_id, y->network_id);
	if (c == 0)
		c = strcmp(x->name, y->name);
	return c != 0 ? c : strcmp(x->id, y->id);
}

/* Sort key for building rules_by_group. */
struct group_entry {
	const char *group_id;
	size_t rule;
};

static int compare_group_entries(const void *a, const void *b)
{
	const struct group_entry *x = a, *y = b;
	int c = strcmp(x->group_id, y->group_id);
	if (c != 0)
		return c;
	return x->rule < y->rule ? -1 : x->rule > y->rule;
}

/* Parses one row into an sp_resource whose id is `position`. */
static int parse_resource(const struct policy_resource_row *row, size_t position,
                          struct sp_resource *out, struct sp_diag *diag)
{
	json_error_t e;
	json_t *tcp = json_loads(row->tcp_json != NULL ? row->tcp_json : "\"none\"",
	                         JSON_DECODE_ANY, &e);
	json_t *udp = json_loads(row->udp_json != NULL ? row->udp_json : "\"none\"",
	                         JSON_DECODE_ANY, &e);
	json_t *obj = NULL;
	int r = SP_ERR_INVALID;
	if (tcp == NULL || udp == NULL || row->address == NULL) {
		sp_diag_set(diag, r, "resource %s: port specs are not JSON", row->id);
		goto out;
	}
	obj = json_pack("{s:I, s:s, s:O, s:O, s:b}", "id", (json_int_t)position, "address",
	                row->address, "tcp", tcp, "udp", udp, "icmp", row->icmp != 0);
	if (obj == NULL || (row->alias != NULL &&
	                    json_object_set_new(obj, "alias", json_string(row->alias)) < 0)) {
		r = SP_ERR_NOMEM;
		goto out;
	}
	r = sp_resource_from_json(obj, out, diag);
out:
	json_decref(tcp);
	json_decref(udp);
	json_decref(obj);
	return r;
}

int policy_snapshot_build(const struct policy_rows *rows, int64_t seq,
                          struct policy_snapshot **out, struct sp_diag *diag)
{
	*out = NULL;
	if (rows->resource_count > SP_RESOURCE_MAX_COUNT)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "more than %d resources",
		                   SP_RESOURCE_MAX_COUNT);
	int r = SP_ERR_NOMEM, failed = 0;
	const struct policy_resource_row **order = NULL;
	struct sp_resource *parsed = NULL;
	struct group_entry *entries = NULL;
	size_t parsed_count = 0;
	struct policy_snapshot *s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto out;
	s->seq = seq;

	/* Resources, sorted by id; a row that does not parse is left out. */
	size_t n = rows->resource_count;
	order = calloc(n + 1, sizeof(*order));
	parsed = calloc(n + 1, sizeof(*parsed));
	s->resources = calloc(n + 1, sizeof(*s->resources));
	if (order == NULL || parsed == NULL || s->resources == NULL)
		goto out;
	for (size_t i = 0; i < n; i++)
		order[i] = &rows->resources[i];
	qsort(order, n, sizeof(*order), compare_resource_rows);
	for (size_t i = 0; i < n; i++) {
		const struct policy_resource_row *row = order[i];
		if (row->id == NULL || row->network_id == NULL ||
		    (parsed_count > 0 && strcmp(s->resources[parsed_count - 1].id, row->id) == 0) ||
		    parse_resource(row, parsed_count, &parsed[parsed_count], NULL) < 0) {
			s->skipped_resources++;
			continue;
		}
		struct policy_resource *res = &s->resources[parsed_count++];
		res->id = copy(row->id, &failed);
		res->network_id = copy(row->network_id, &failed);
		res->name = copy(row->name != NULL ? row->name : row->address, &failed);
		res->address = copy(row->address, &failed);
		res->alias = copy(row->alias, &failed);
		s->resource_count = parsed_count;
		if (failed)
			goto out;
	}
	if ((r = sp_resource_index_build(parsed, parsed_count, &s->index, diag)) < 0)
		goto out;
	r = SP_ERR_NOMEM;

	/* Rules, resolved to resource positions, sorted by (resource, group). */
	s->rules = calloc(rows->rule_count + 1, sizeof(*s->rules));
	if (s->rules == NULL)
		goto out;
	for (size_t i = 0; i < rows->rule_count; i++) {
		const struct policy_rule_row *row = &rows->rules[i];
		if (row->id == NULL || row->group_id == NULL || row->resource_id == NULL)
			continue;
		const struct policy_resource *res = policy_find_resource(s, row->resource_id);
		if (res == NULL)
			continue;
		struct policy_rule *rule = &s->rules[s->rule_count++];
		rule->id = copy(row->id, &failed);
		rule->group_id = copy(row->group_id, &failed);
		rule->resource = (size_t)(res - s->resources);
		rule->require_mfa = row->require_mfa != 0;
		rule->max_session_age_s = row->max_session_age_s > 0 ? row->max_session_age_s : 0;
		if (failed)
			goto out;
	}
	qsort(s->rules, s->rule_count, sizeof(*s->rules), compare_rules);
	for (size_t i = 0; i < s->rule_count; i++) {
		struct policy_resource *res = &s->resources[s->rules[i].resource];
		if (res->rule_count == 0)
			res->first_rule = i;
		res->rule_count++;
	}

	/* Groups: each group's rules, for listing what a user may reach. */
	entries = calloc(s->rule_count + 1, sizeof(*entries));
	s->rules_by_group = calloc(s->rule_count + 1, sizeof(*s->rules_by_group));
	s->groups = calloc(s->rule_count + 1, sizeof(*s->groups));
	if (entries == NULL || s->rules_by_group == NULL || s->groups == NULL)
		goto out;
	for (size_t i = 0; i < s->rule_count; i++)
		entries[i] = (struct group_entry){s->rules[i].group_id, i};
	qsort(entries, s->rule_count, sizeof(*entries), compare_group_entries);
	for (size_t i = 0; i < s->rule_count; i++) {
		s->rules_by_group[i] = entries[i].rule;
		if (s->group_count == 0 ||
		    strcmp(s->groups[s->group_count - 1].id, entries[i].group_id) != 0)
			s->groups[s->group_count++] = (struct policy_group){
				.id = s->rules[entries[i].rule].group_id, .first = i, .count = 0};
		s->groups[s->group_count - 1].count++;
	}

	/* Connectors, grouped by network. */
	s->connectors = calloc(rows->connector_count + 1, sizeof(*s->connectors));
	if (s->connectors == NULL)
		goto out;
	for (size_t i = 0; i < rows->connector_count; i++) {
		const struct policy_connector_row *row = &rows->connectors[i];
		if (row->id == NULL || row->network_id == NULL || row->name == NULL ||
		    row->public_key_digest == NULL)
			continue;
		struct policy_connector *con = &s->connectors[s->connector_count++];
		con->id = copy(row->id, &failed);
		con->network_id = copy(row->network_id, &failed);
		con->name = copy(row->name, &failed);
		con->public_key_digest = copy(row->public_key_digest, &failed);
		con->direct_address = copy(row->direct_address, &failed);
		if (failed)
			goto out;
	}
	qsort(s->connectors, s->connector_count, sizeof(*s->connectors), compare_connectors);
	r = 0;
out:
	if (r == SP_ERR_NOMEM)
		sp_diag_set(diag, r, "out of memory building the policy snapshot");
	sp_resource_list_free(parsed, parsed_count);
	free(order);
	free(entries);
	if (r < 0)
		policy_snapshot_free(s);
	else
		*out = s;
	return r;
}

const struct policy_resource *policy_find_resource(const struct policy_snapshot *s,
                                                   const char *id)
{
	size_t lo = 0, hi = s->resource_count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->resources[mid].id, id);
		if (c == 0)
			return &s->resources[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const struct sp_resource *policy_resource_parsed(const struct policy_snapshot *s,
                                                 const struct policy_resource *resource)
{
	return sp_resource_index_get(s->index, (size_t)(resource - s->resources));
}

static const struct policy_group *find_group(const struct policy_snapshot *s, const char *id)
{
	size_t lo = 0, hi = s->group_count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->groups[mid].id, id);
		if (c == 0)
			return &s->groups[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int subject_in_group(const struct policy_subject *subject, const char *group_id)
{
	size_t lo = 0, hi = subject->group_count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(subject->group_ids[mid], group_id);
		if (c == 0)
			return 1;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* The conditions of one policy for this session: ALLOWED, MFA_REQUIRED or SESSION_TOO_OLD. */
static enum policy_reason rule_admits(const struct policy_rule *rule,
                                      const struct policy_subject *subject, int64_t now)
{
	if (rule->require_mfa && !subject->mfa)
		return POLICY_MFA_REQUIRED;
	if (rule->max_session_age_s > 0 && now - subject->auth_time > rule->max_session_age_s)
		return POLICY_SESSION_TOO_OLD;
	return POLICY_ALLOWED;
}

/*
 * Steps 2 and 4 for one resource: each of its policies whose group is one of the
 * subject's (a binary search in the subject's sorted groups), in group-id order.
 */
static void decide_rules(const struct policy_snapshot *s, const struct policy_subject *subject,
                         const struct policy_resource *res, int64_t now,
                         struct policy_decision *out)
{
	const struct policy_rule *failed_mfa = NULL, *failed_age = NULL;
	int applicable = 0;
	for (size_t i = 0; i < res->rule_count; i++) {
		const struct policy_rule *rule = &s->rules[res->first_rule + i];
		if (!subject_in_group(subject, rule->group_id))
			continue;
		applicable = 1;
		enum policy_reason why = rule_admits(rule, subject, now);
		if (why == POLICY_ALLOWED) {
			out->reason = POLICY_ALLOWED;
			out->rule = rule;
			return;
		}
		if (why == POLICY_MFA_REQUIRED && failed_mfa == NULL)
			failed_mfa = rule;
		if (why == POLICY_SESSION_TOO_OLD && failed_age == NULL)
			failed_age = rule;
	}
	/* A fresh sign-in with MFA cures both, so MFA is the reason worth naming first. */
	out->reason = !applicable            ? POLICY_NO_POLICY
	              : failed_mfa != NULL ? POLICY_MFA_REQUIRED
	                                   : POLICY_SESSION_TOO_OLD;
	out->rule = failed_mfa != NULL ? failed_mfa : failed_age;
}

void policy_evaluate_resource(const struct policy_snapshot *s,
                              const struct policy_subject *subject,
                              const struct policy_resource *resource, int64_t now,
                              struct policy_decision *out)
{
	memset(out, 0, sizeof(*out));
	out->reason = POLICY_NO_RESOURCE;
	if (resource == NULL)
		return;
	out->resource = resource;
	decide_rules(s, subject, resource, now, out);
}

int policy_evaluate(const struct policy_snapshot *s, const struct policy_subject *subject,
                    const char *destination, int protocol, uint16_t port, int64_t now,
                    struct policy_decision *out)
{
	memset(out, 0, sizeof(*out));
	out->reason = POLICY_NO_RESOURCE;
	const struct sp_resource *match = NULL;
	enum sp_resource_reason port_reason = SP_RESOURCE_NO_RESOURCE;
	int r = sp_resource_index_match(s->index, destination, protocol, port, &match,
	                                &port_reason);
	if (r < 0 || match == NULL)
		return r < 0 ? SP_ERR_INVALID : 0;
	const struct policy_resource *res = &s->resources[(size_t)match->id];
	out->resource = res;
	decide_rules(s, subject, res, now, out);
	if (out->reason == POLICY_NO_POLICY)
		return 0;
	if (port_reason == SP_RESOURCE_PROTOCOL_NOT_ALLOWED ||
	    port_reason == SP_RESOURCE_PORT_NOT_ALLOWED) {
		out->reason = port_reason == SP_RESOURCE_PORT_NOT_ALLOWED ? POLICY_PORT_NOT_ALLOWED
		                                                          : POLICY_PROTOCOL_NOT_ALLOWED;
		out->rule = NULL;
	}
	return 0;
}

int policy_explain(const struct policy_decision *d, const char *destination, const char *protocol,
                   uint16_t port, char *out, size_t size)
{
	const struct policy_resource *res = d->resource;
	const struct policy_rule *rule = d->rule;
	int n = 0;
	switch (d->reason) {
	case POLICY_ALLOWED:
		n = snprintf(out, size,
		             "Allowed: %s matches resource \"%s\" (%s), and policy %s of group %s "
		             "grants it%s.",
		             destination, res->name, res->address, rule->id, rule->group_id,
		             rule->require_mfa ? " (MFA required and present)" : "");
		break;
	case POLICY_NO_RESOURCE:
		n = snprintf(out, size, "Denied: no resource covers %s, so nothing may reach it.",
		             destination);
		break;
	case POLICY_NO_POLICY:
		n = snprintf(out, size,
		             "Denied: %s matches resource \"%s\" (%s), but none of the user's groups "
		             "has a policy for it.",
		             destination, res->name, res->address);
		break;
	case POLICY_PROTOCOL_NOT_ALLOWED:
		n = snprintf(out, size,
		             "Denied: resource \"%s\" (%s) allows no %s traffic.", res->name,
		             res->address, protocol);
		break;
	case POLICY_PORT_NOT_ALLOWED:
		n = snprintf(out, size,
		             "Denied: resource \"%s\" (%s) does not allow %s port %u.", res->name,
		             res->address, protocol, (unsigned)port);
		break;
	case POLICY_MFA_REQUIRED:
		n = snprintf(out, size,
		             "Denied: policy %s of group %s grants resource \"%s\" only to sessions "
		             "signed in with multi-factor authentication.",
		             rule->id, rule->group_id, res->name);
		break;
	case POLICY_SESSION_TOO_OLD:
		n = snprintf(out, size,
		             "Denied: policy %s of group %s grants resource \"%s\" only within %lld "
		             "seconds of signing in; the user must sign in again.",
		             rule->id, rule->group_id, res->name, (long long)rule->max_session_age_s);
		break;
	}
	return n < 0 || (size_t)n >= size ? SP_ERR_TOO_LARGE : 0;
}

/* ---- claim sets ---- */

json_t *policy_resource_to_json(const struct policy_snapshot *s, const struct policy_resource *res)
{
	const struct sp_resource *parsed = policy_resource_parsed(s, res);
	json_t *tcp = NULL, *udp = NULL;
	if (parsed == NULL || sp_portset_to_json(&parsed->tcp, &tcp) < 0 ||
	    sp_portset_to_json(&parsed->udp, &udp) < 0) {
		json_decref(tcp);
		return NULL;
	}
	return json_pack("{s:s, s:s, s:s, s:s, s:s?, s:o, s:o, s:b}", "id", res->id, "name",
	                 res->name, "network_id", res->network_id, "address", res->address,
	                 "alias", res->alias, "tcp", tcp, "udp", udp, "icmp", parsed->icmp);
}

static int compare_network_ids(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first connector of a network (connectors are sorted by network id), or count. */
static size_t first_connector(const struct policy_snapshot *s, const char *network_id)
{
	size_t lo = 0, hi = s->connector_count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(s->connectors[mid].network_id, network_id) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static json_t *network_json(const struct policy_snapshot *s, const char *network_id)
{
	json_t *connectors = json_array();
	json_t *net = json_pack("{s:s, s:o}", "id", network_id, "connectors", connectors);
	if (net == NULL)
		return NULL;
	for (size_t i = first_connector(s, network_id);
	     i < s->connector_count && strcmp(s->connectors[i].network_id, network_id) == 0; i++) {
		const struct policy_connector *con = &s->connectors[i];
		json_t *j = json_pack("{s:s, s:s, s:s, s:s?}", "id", con->id, "name", con->name,
		                      "public_key_digest", con->public_key_digest, "direct_address",
		                      con->direct_address);
		if (j == NULL || json_array_append_new(connectors, j) < 0) {
			json_decref(net);
			return NULL;
		}
	}
	return net;
}

int policy_resources_claims(const struct policy_snapshot *s, const struct policy_subject *subject,
                            const char *issuer, const char *user_id, const char *device_id,
                            int64_t now, json_t **out)
{
	*out = NULL;
	int r = SP_ERR_NOMEM;
	unsigned char *reachable = calloc(s->resource_count + 1, 1);
	const char **networks = NULL;
	size_t network_count = 0, reachable_count = 0;
	json_t *claims = NULL, *resources = json_array(), *nets = json_array();
	char aud[128];
	if (reachable == NULL || resources == NULL || nets == NULL)
		goto out;

	/* Mark every resource one of the subject's groups reaches under a satisfied policy. */
	for (size_t g = 0; g < subject->group_count; g++) {
		const struct policy_group *group = find_group(s, subject->group_ids[g]);
		for (size_t k = 0; group != NULL && k < group->count; k++) {
			const struct policy_rule *rule = &s->rules[s->rules_by_group[group->first + k]];
			if (!reachable[rule->resource] && rule_admits(rule, subject, now) == POLICY_ALLOWED) {
				reachable[rule->resource] = 1;
				reachable_count++;
			}
		}
	}
	networks = calloc(reachable_count + 1, sizeof(*networks));
	if (networks == NULL)
		goto out;
	for (size_t i = 0; i < s->resource_count; i++) {
		if (!reachable[i])
			continue;
		json_t *j = policy_resource_to_json(s, &s->resources[i]);
		if (j == NULL || json_array_append_new(resources, j) < 0)
			goto out;
		networks[network_count++] = s->resources[i].network_id;
	}
	qsort(networks, network_count, sizeof(*networks), compare_network_ids);
	for (size_t i = 0; i < network_count; i++) {
		if (i > 0 && strcmp(networks[i], networks[i - 1]) == 0)
			continue;
		json_t *j = network_json(s, networks[i]);
		if (j == NULL || json_array_append_new(nets, j) < 0)
			goto out;
	}
	snprintf(aud, sizeof(aud), "sallyport:client:%s", device_id);
	claims = json_pack("{s:i, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:O, s:O}", "v", 1, "typ",
	                   "resources", "iss", issuer, "aud", aud, "sub", user_id, "iat",
	                   (json_int_t)now, "exp", (json_int_t)(now + POLICY_RESOURCES_TTL_S), "seq",
	                   (json_int_t)s->seq, "resources", resources, "networks", nets);
	if (claims != NULL) {
		*out = claims;
		r = 0;
	}
out:
	free(reachable);
	free(networks);
	json_decref(resources);
	json_decref(nets);
	return r;
}

int policy_grant_claims(const struct policy_snapshot *s, const struct policy_subject *subject,
                        const struct policy_grant_request *q, const char *resource_id,
                        struct policy_decision *decision, json_t **out)
{
	*out = NULL;
	policy_evaluate_resource(s, subject, policy_find_resource(s, resource_id), q->now, decision);
	if (decision->reason != POLICY_ALLOWED)
		return 0;
	const struct policy_resource *res = decision->resource;
	const struct sp_resource *parsed = policy_resource_parsed(s, res);
	json_t *tcp = NULL, *udp = NULL;
	if (parsed == NULL || sp_portset_to_json(&parsed->tcp, &tcp) < 0 ||
	    sp_portset_to_json(&parsed->udp, &udp) < 0) {
		json_decref(tcp);
		return SP_ERR_NOMEM;
	}
	char aud[128];
	snprintf(aud, sizeof(aud), "sallyport:network:%s", res->network_id);
	*out = json_pack("{s:i, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:{s:s}, s:s, s:s, "
	                 "s:s, s:o, s:o}",
	                 "v", 1, "typ", "grant", "iss", q->issuer, "aud", aud, "jti", q->jti, "iat",
	                 (json_int_t)q->now, "exp", (json_int_t)(q->now + q->ttl_s), "sub",
	                 q->user_id, "sid", q->session_id, "dev", q->device_id, "cnf", "jkt",
	                 q->device_jkt, "res", res->id, "net", res->network_id, "dst", res->address,
	                 "tcp", tcp, "udp", udp);
	return *out != NULL ? 0 : SP_ERR_NOMEM;
}
