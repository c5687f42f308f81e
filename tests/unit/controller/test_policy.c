/*
 * Tests for controller/policy.c, the pure part: snapshot building, every decision
 * reason and their precedence, MFA and session-age rules, the most specific resource
 * winning, many groups, and the claim sets of resource lists and grants.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "controller/policy.h"
#include "shared/resource.h"

#define NOW 1700000000
#define TCP SP_RESOURCE_PROTOCOL_TCP
#define UDP SP_RESOURCE_PROTOCOL_UDP
#define ICMP SP_RESOURCE_PROTOCOL_ICMP

/*
 * Resources:            groups with a policy:
 *   r-grafana   grafana.corp.example tcp 443            g-eng (mfa), g-ops (age 3600)
 *   r-wild      *.corp.example       tcp all            g-eng
 *   r-db        db.corp.example      tcp 5432           (none)
 *   r-net       10.0.0.0/8           tcp 22, udp none   g-ops
 *   r-host      10.1.2.3             udp 53, icmp       g-ops
 *   r-bad       "not a valid address!"                  g-ops (dropped with it)
 */
static const struct policy_resource_row resources[] = {
	{"r-grafana", "n-1", "Grafana", "grafana.corp.example", "grafana.sp", "[\"443\"]",
	 "\"none\"", 0},
	{"r-wild", "n-1", "Corp", "*.corp.example", NULL, "\"all\"", "\"none\"", 0},
	{"r-db", "n-1", "DB", "db.corp.example", NULL, "[\"5432\"]", "\"none\"", 0},
	{"r-net", "n-2", "Lab", "10.0.0.0/8", NULL, "[\"22\"]", "\"none\"", 0},
	{"r-host", "n-2", "DNS", "10.1.2.3", NULL, "\"none\"", "[\"53\"]", 1},
	{"r-bad", "n-2", "Bad", "not a valid address!", NULL, "\"all\"", "\"all\"", 0},
};
static const struct policy_rule_row rules[] = {
	{"p-eng-grafana", "g-eng", "r-grafana", 1, 0},
	{"p-ops-grafana", "g-ops", "r-grafana", 0, 3600},
	{"p-eng-wild", "g-eng", "r-wild", 0, 0},
	{"p-ops-net", "g-ops", "r-net", 0, 0},
	{"p-ops-host", "g-ops", "r-host", 0, 0},
	{"p-ops-bad", "g-ops", "r-bad", 0, 0},
	{"p-orphan", "g-ops", "r-missing", 0, 0},
};
static const struct policy_connector_row connectors[] = {
	{"c-b", "n-1", "beta", "bbbb", "203.0.113.7:8443"},
	{"c-a", "n-1", "alpha", "aaaa", NULL},
	{"c-z", "n-2", "zulu", "zzzz", NULL},
	{"c-other", "n-9", "elsewhere", "9999", NULL},
};

static struct policy_snapshot *snap;

static int setup(void **state)
{
	(void)state;
	struct policy_rows rows = {resources, sizeof(resources) / sizeof(resources[0]), rules,
	                           sizeof(rules) / sizeof(rules[0]), connectors,
	                           sizeof(connectors) / sizeof(connectors[0])};
	return policy_snapshot_build(&rows, 42, &snap, NULL);
}

static int teardown(void **state)
{
	(void)state;
	policy_snapshot_free(snap);
	return 0;
}

static const char *const eng[] = {"g-eng"};
static const char *const ops[] = {"g-ops"};
static const char *const both[] = {"g-eng", "g-ops"};
static const char *const nobody[] = {"g-sales"};

static struct policy_decision decide(const char *const *groups, size_t n, int mfa,
                                     int64_t auth_time, const char *dest, int proto,
                                     uint16_t port)
{
	struct policy_subject who = {groups, n, mfa, auth_time};
	struct policy_decision d;
	assert_int_equal(policy_evaluate(snap, &who, dest, proto, port, NOW, &d), 0);
	return d;
}

static void test_snapshot_shape(void **state)
{
	(void)state;
	assert_int_equal(snap->seq, 42);
	assert_int_equal(snap->resource_count, 5);
	assert_int_equal(snap->skipped_resources, 1);
	assert_int_equal(snap->rule_count, 5); /* r-bad's and the orphan's policies dropped */
	assert_int_equal(snap->group_count, 2);
	assert_int_equal(snap->connector_count, 4);
	assert_string_equal(snap->resources[0].id, "r-db"); /* sorted by id */
	assert_non_null(policy_find_resource(snap, "r-host"));
	assert_null(policy_find_resource(snap, "r-bad"));
	assert_null(policy_find_resource(snap, "r-missing"));
	const struct policy_resource *g = policy_find_resource(snap, "r-grafana");
	assert_int_equal(g->rule_count, 2);
	assert_string_equal(snap->rules[g->first_rule].group_id, "g-eng");
	assert_string_equal(snap->rules[g->first_rule + 1].group_id, "g-ops");
	assert_string_equal(snap->connectors[0].name, "alpha");
	assert_string_equal(snap->connectors[1].name, "beta");
}

static void test_reason_names(void **state)
{
	(void)state;
	assert_string_equal(policy_reason_name(POLICY_ALLOWED), "allowed");
	assert_string_equal(policy_reason_name(POLICY_NO_RESOURCE), "no_resource");
	assert_string_equal(policy_reason_name(POLICY_NO_POLICY), "no_policy");
	assert_string_equal(policy_reason_name(POLICY_PORT_NOT_ALLOWED), "port_not_allowed");
	assert_string_equal(policy_reason_name(POLICY_PROTOCOL_NOT_ALLOWED), "protocol_not_allowed");
	assert_string_equal(policy_reason_name(POLICY_MFA_REQUIRED), "mfa_required");
	assert_string_equal(policy_reason_name(POLICY_SESSION_TOO_OLD), "session_too_old");
}

static void test_every_reason(void **state)
{
	(void)state;
	struct policy_decision d;
	d = decide(ops, 1, 0, NOW, "www.example.org", TCP, 443);
	assert_int_equal(d.reason, POLICY_NO_RESOURCE);
	assert_null(d.resource);
	assert_null(d.rule);

	d = decide(nobody, 1, 1, NOW, "grafana.corp.example", TCP, 443);
	assert_int_equal(d.reason, POLICY_NO_POLICY);
	assert_string_equal(d.resource->id, "r-grafana");
	assert_null(d.rule);

	d = decide(ops, 1, 0, NOW, "10.9.9.9", TCP, 80);
	assert_int_equal(d.reason, POLICY_PORT_NOT_ALLOWED);
	assert_string_equal(d.resource->id, "r-net");
	assert_null(d.rule);

	d = decide(ops, 1, 0, NOW, "10.9.9.9", UDP, 53);
	assert_int_equal(d.reason, POLICY_PROTOCOL_NOT_ALLOWED);

	d = decide(eng, 1, 0, NOW, "grafana.corp.example", TCP, 443);
	assert_int_equal(d.reason, POLICY_MFA_REQUIRED);
	assert_string_equal(d.rule->id, "p-eng-grafana");

	d = decide(ops, 1, 0, NOW - 3601, "grafana.corp.example", TCP, 443);
	assert_int_equal(d.reason, POLICY_SESSION_TOO_OLD);
	assert_string_equal(d.rule->id, "p-ops-grafana");

	d = decide(ops, 1, 0, NOW, "10.1.2.3", UDP, 53);
	assert_int_equal(d.reason, POLICY_ALLOWED);
	assert_string_equal(d.resource->id, "r-host");
	assert_string_equal(d.rule->id, "p-ops-host");
	d = decide(ops, 1, 0, NOW, "10.1.2.3", ICMP, 0);
	assert_int_equal(d.reason, POLICY_ALLOWED);

	/* Not a host name nor an IP: an error, and still a deny. */
	struct policy_subject who = {ops, 1, 0, NOW};
	assert_int_equal(policy_evaluate(snap, &who, "bad name!", TCP, 22, NOW, &d), SP_ERR_INVALID);
	assert_int_equal(d.reason, POLICY_NO_RESOURCE);
	/* The dropped resource is unreachable, although a policy named it. */
	d = decide(ops, 1, 0, NOW, "not-a-valid-address", TCP, 22);
	assert_int_equal(d.reason, POLICY_NO_RESOURCE);
}

static void test_precedence(void **state)
{
	(void)state;
	struct policy_decision d;
	/* no_policy before the port: a stranger learns nothing about the ports. */
	d = decide(nobody, 1, 1, NOW, "10.9.9.9", TCP, 80);
	assert_int_equal(d.reason, POLICY_NO_POLICY);
	/* The port before MFA: eng may use grafana only with MFA, but 8443 is never open. */
	d = decide(eng, 1, 0, NOW, "grafana.corp.example", TCP, 8443);
	assert_int_equal(d.reason, POLICY_PORT_NOT_ALLOWED);
	/* The exact name beats the wildcard, and alone decides: eng has the wildcard's
	 * policy but not db's, so db.corp.example is no_policy for eng. */
	d = decide(eng, 1, 1, NOW, "db.corp.example", TCP, 5432);
	assert_int_equal(d.reason, POLICY_NO_POLICY);
	assert_string_equal(d.resource->id, "r-db");
	d = decide(eng, 1, 1, NOW, "wiki.corp.example", TCP, 80);
	assert_int_equal(d.reason, POLICY_ALLOWED);
	assert_string_equal(d.resource->id, "r-wild");
	/* The alias is an exact name too. */
	d = decide(ops, 1, 0, NOW, "GRAFANA.SP.", TCP, 443);
	assert_int_equal(d.reason, POLICY_ALLOWED);
	assert_string_equal(d.resource->id, "r-grafana");
	/* The longest prefix wins: 10.1.2.3 is r-host (no tcp) even though r-net allows 22. */
	d = decide(ops, 1, 0, NOW, "10.1.2.3", TCP, 22);
	assert_int_equal(d.reason, POLICY_PROTOCOL_NOT_ALLOWED);
	assert_string_equal(d.resource->id, "r-host");
	d = decide(ops, 1, 0, NOW, "10.1.2.4", TCP, 22);
	assert_int_equal(d.reason, POLICY_ALLOWED);
	assert_string_equal(d.resource->id, "r-net");
	d = decide(ops, 1, 0, NOW, "::ffff:10.1.2.4", TCP, 22);
	assert_int_equal(d.reason, POLICY_ALLOWED);
}

static void test_mfa_and_age(void **state)
{
	(void)state;
	struct policy_decision d;
	/* eng needs MFA (no age limit): an old MFA session is fine. */
	d = decide(eng, 1, 1, 0, "grafana.corp.example", TCP, 443);
	assert_int_equal(d.reason, POLICY_ALLOWED);
	assert_string_equal(d.rule->id, "p-eng-grafana");
	/* ops: age limit 3600 s, inclusive. */
	d = decide(ops, 1, 0, NOW - 3600, "grafana.corp.example", TCP, 443);
	assert_int_equal(d.reason, POLICY_ALLOWED);
	d = decide(ops, 1, 0, NOW - 3601, "grafana.corp.example", TCP, 443);
	assert_int_equal(d.reason, POLICY_SESSION_TOO_OLD);
	/* Both groups: one satisfied policy is enough, whichever group it belongs to. */
	d = decide(both, 2, 0, NOW, "grafana.corp.example", TCP, 443);
	assert_int_equal(d.reason, POLICY_ALLOWED);
	assert_string_equal(d.rule->id, "p-ops-grafana");
	d = decide(both, 2, 1, NOW - 99999, "grafana.corp.example", TCP, 443);
	assert_int_equal(d.reason, POLICY_ALLOWED);
	assert_string_equal(d.rule->id, "p-eng-grafana");
	/* Both fail (no MFA, too old): MFA is named, a fresh MFA sign-in cures both. */
	d = decide(both, 2, 0, NOW - 99999, "grafana.corp.example", TCP, 443);
	assert_int_equal(d.reason, POLICY_MFA_REQUIRED);
	assert_string_equal(d.rule->id, "p-eng-grafana");
}

static void test_one_policy_with_both_conditions(void **state)
{
	(void)state;
	struct policy_resource_row res[] = {{"r", "n", "R", "r.example", NULL, "\"all\"", "\"all\"", 1}};
	struct policy_rule_row rule[] = {{"p", "g", "r", 1, 60}};
	struct policy_rows rows = {res, 1, rule, 1, NULL, 0};
	struct policy_snapshot *s = NULL;
	assert_int_equal(policy_snapshot_build(&rows, 1, &s, NULL), 0);
	const char *const g[] = {"g"};
	struct policy_decision d;
	struct policy_subject who = {g, 1, 0, NOW};
	assert_int_equal(policy_evaluate(s, &who, "r.example", TCP, 1, NOW, &d), 0);
	assert_int_equal(d.reason, POLICY_MFA_REQUIRED);
	who.mfa = 1;
	who.auth_time = NOW - 61;
	assert_int_equal(policy_evaluate(s, &who, "r.example", TCP, 1, NOW, &d), 0);
	assert_int_equal(d.reason, POLICY_SESSION_TOO_OLD);
	who.auth_time = NOW - 60;
	assert_int_equal(policy_evaluate(s, &who, "r.example", UDP, 65535, NOW, &d), 0);
	assert_int_equal(d.reason, POLICY_ALLOWED);
	/* Default deny: no groups at all. */
	struct policy_subject none = {NULL, 0, 1, NOW};
	assert_int_equal(policy_evaluate(s, &none, "r.example", TCP, 1, NOW, &d), 0);
	assert_int_equal(d.reason, POLICY_NO_POLICY);
	policy_snapshot_free(s);
}

/* 1,000 groups, 2,000 resources; the user is in the odd groups. */
static void test_many_groups(void **state)
{
	(void)state;
	enum { GROUPS = 1000, RESOURCES = 2000 };
	static char group_ids[GROUPS][16], res_ids[RESOURCES][16], addrs[RESOURCES][32],
		rule_ids[GROUPS + RESOURCES][16];
	struct policy_resource_row *res = calloc(RESOURCES, sizeof(*res));
	struct policy_rule_row *rule = calloc(GROUPS + RESOURCES, sizeof(*rule));
	assert_non_null(res);
	assert_non_null(rule);
	for (int i = 0; i < GROUPS; i++)
		snprintf(group_ids[i], sizeof(group_ids[i]), "g%05d", i);
	size_t nrules = 0;
	for (int i = 0; i < RESOURCES; i++) {
		snprintf(res_ids[i], sizeof(res_ids[i]), "r%05d", i);
		snprintf(addrs[i], sizeof(addrs[i]), "svc%d.corp.example", i);
		res[i] = (struct policy_resource_row){res_ids[i], "n", NULL, addrs[i], NULL, "\"all\"",
		                                      "\"none\"", 0};
		/* Resource i: a policy for even group (i % 1000) & ~1. */
		snprintf(rule_ids[nrules], sizeof(rule_ids[0]), "p%05zu", nrules);
		rule[nrules] = (struct policy_rule_row){rule_ids[nrules], group_ids[(i % GROUPS) & ~1],
		                                        res_ids[i], 0, 0};
		nrules++;
	}
	/* Resource 7 is granted to every group; the user's own (odd) one is g00999. */
	for (int g = 0; g < GROUPS; g++) {
		if (g == 6)
			continue; /* already there */
		snprintf(rule_ids[nrules], sizeof(rule_ids[0]), "p%05zu", nrules);
		rule[nrules] = (struct policy_rule_row){rule_ids[nrules], group_ids[g], res_ids[7], 0, 0};
		nrules++;
	}
	struct policy_rows rows = {res, RESOURCES, rule, nrules, NULL, 0};
	struct policy_snapshot *s = NULL;
	assert_int_equal(policy_snapshot_build(&rows, 1, &s, NULL), 0);
	assert_int_equal(s->group_count, GROUPS);
	const char *mine[GROUPS / 2];
	for (int i = 0; i < GROUPS / 2; i++)
		mine[i] = group_ids[2 * i + 1];
	struct policy_subject who = {mine, GROUPS / 2, 0, NOW};
	struct policy_decision d;
	assert_int_equal(policy_evaluate(s, &who, "svc8.corp.example", TCP, 80, NOW, &d), 0);
	assert_int_equal(d.reason, POLICY_NO_POLICY);
	assert_int_equal(policy_evaluate(s, &who, "svc7.corp.example", TCP, 80, NOW, &d), 0);
	assert_int_equal(d.reason, POLICY_ALLOWED);
	assert_string_equal(d.rule->group_id, "g00001"); /* first of the user's, by id */
	/* The resource list of this user holds exactly resource 7. */
	json_t *claims = NULL;
	assert_int_equal(policy_resources_claims(s, &who, "https://c", "u", "d", NOW, &claims), 0);
	json_t *list = json_object_get(claims, "resources");
	assert_int_equal(json_array_size(list), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "id")),
	                    "r00007");
	json_decref(claims);
	/* A member of g00000 reaches resources 0, 1, 7, 1000, 1001. */
	const char *first[] = {"g00000"};
	struct policy_subject zero = {first, 1, 0, NOW};
	assert_int_equal(policy_resources_claims(s, &zero, "https://c", "u", "d", NOW, &claims), 0);
	assert_int_equal(json_array_size(json_object_get(claims, "resources")), 5);
	json_decref(claims);
	policy_snapshot_free(s);
	free(res);
	free(rule);
}

static void test_explanations(void **state)
{
	(void)state;
	char text[512];
	struct policy_decision d;
	d = decide(ops, 1, 0, NOW, "10.1.2.3", UDP, 53);
	assert_int_equal(policy_explain(&d, "10.1.2.3", "udp", 53, text, sizeof(text)), 0);
	assert_non_null(strstr(text, "Allowed"));
	assert_non_null(strstr(text, "p-ops-host"));
	d = decide(ops, 1, 0, NOW, "10.9.9.9", TCP, 80);
	assert_int_equal(policy_explain(&d, "10.9.9.9", "tcp", 80, text, sizeof(text)), 0);
	assert_non_null(strstr(text, "does not allow tcp port 80"));
	d = decide(eng, 1, 0, NOW, "grafana.corp.example", TCP, 443);
	assert_int_equal(policy_explain(&d, "grafana.corp.example", "tcp", 443, text, sizeof(text)), 0);
	assert_non_null(strstr(text, "multi-factor"));
	d = decide(ops, 1, 0, 0, "grafana.corp.example", TCP, 443);
	assert_int_equal(policy_explain(&d, "grafana.corp.example", "tcp", 443, text, sizeof(text)), 0);
	assert_non_null(strstr(text, "3600 seconds"));
	d = decide(nobody, 1, 0, 0, "grafana.corp.example", TCP, 443);
	assert_int_equal(policy_explain(&d, "grafana.corp.example", "tcp", 443, text, sizeof(text)), 0);
	assert_non_null(strstr(text, "none of the user's groups"));
	d = decide(nobody, 1, 0, 0, "x.example.org", TCP, 443);
	assert_int_equal(policy_explain(&d, "x.example.org", "tcp", 443, text, sizeof(text)), 0);
	assert_non_null(strstr(text, "no resource covers x.example.org"));
	d = decide(ops, 1, 0, NOW, "10.9.9.9", UDP, 53);
	assert_int_equal(policy_explain(&d, "10.9.9.9", "udp", 53, text, sizeof(text)), 0);
	assert_non_null(strstr(text, "allows no udp traffic"));
	assert_int_equal(policy_explain(&d, "10.9.9.9", "udp", 53, text, 8), SP_ERR_TOO_LARGE);
}

static void test_resources_claims(void **state)
{
	(void)state;
	struct policy_subject who = {ops, 1, 0, NOW - 10};
	json_t *c = NULL;
	assert_int_equal(policy_resources_claims(snap, &who, "https://ctl.example", "u1", "dev1",
	                                         NOW, &c), 0);
	assert_int_equal(json_object_size(c), 10);
	assert_int_equal(json_integer_value(json_object_get(c, "v")), 1);
	assert_string_equal(json_string_value(json_object_get(c, "typ")), "resources");
	assert_string_equal(json_string_value(json_object_get(c, "iss")), "https://ctl.example");
	assert_string_equal(json_string_value(json_object_get(c, "aud")), "sallyport:client:dev1");
	assert_string_equal(json_string_value(json_object_get(c, "sub")), "u1");
	assert_int_equal(json_integer_value(json_object_get(c, "iat")), NOW);
	assert_int_equal(json_integer_value(json_object_get(c, "exp")), NOW + 600);
	assert_int_equal(json_integer_value(json_object_get(c, "seq")), 42);
	/* ops reaches grafana (age ok), r-host and r-net, in id order. */
	json_t *list = json_object_get(c, "resources");
	assert_int_equal(json_array_size(list), 3);
	json_t *g = json_array_get(list, 0);
	assert_string_equal(json_string_value(json_object_get(g, "id")), "r-grafana");
	assert_int_equal(json_object_size(g), 8);
	assert_string_equal(json_string_value(json_object_get(g, "name")), "Grafana");
	assert_string_equal(json_string_value(json_object_get(g, "network_id")), "n-1");
	assert_string_equal(json_string_value(json_object_get(g, "address")), "grafana.corp.example");
	assert_string_equal(json_string_value(json_object_get(g, "alias")), "grafana.sp");
	assert_string_equal(json_string_value(json_array_get(json_object_get(g, "tcp"), 0)), "443");
	assert_string_equal(json_string_value(json_object_get(g, "udp")), "none");
	assert_true(json_is_false(json_object_get(g, "icmp")));
	json_t *h = json_array_get(list, 1);
	assert_string_equal(json_string_value(json_object_get(h, "id")), "r-host");
	assert_true(json_is_null(json_object_get(h, "alias")));
	assert_true(json_is_true(json_object_get(h, "icmp")));
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 2), "id")), "r-net");
	/* Networks n-1 and n-2 with their connectors; n-9 is nobody's business. */
	json_t *nets = json_object_get(c, "networks");
	assert_int_equal(json_array_size(nets), 2);
	json_t *n1 = json_array_get(nets, 0);
	assert_int_equal(json_object_size(n1), 2);
	assert_string_equal(json_string_value(json_object_get(n1, "id")), "n-1");
	json_t *cons = json_object_get(n1, "connectors");
	assert_int_equal(json_array_size(cons), 2);
	json_t *a = json_array_get(cons, 0);
	assert_int_equal(json_object_size(a), 4);
	assert_string_equal(json_string_value(json_object_get(a, "id")), "c-a");
	assert_string_equal(json_string_value(json_object_get(a, "name")), "alpha");
	assert_string_equal(json_string_value(json_object_get(a, "public_key_digest")), "aaaa");
	assert_true(json_is_null(json_object_get(a, "direct_address")));
	assert_string_equal(json_string_value(json_object_get(json_array_get(cons, 1),
	                                                      "direct_address")), "203.0.113.7:8443");
	json_t *n2 = json_array_get(nets, 1);
	assert_string_equal(json_string_value(json_object_get(n2, "id")), "n-2");
	assert_int_equal(json_array_size(json_object_get(n2, "connectors")), 1);
	json_decref(c);

	/* Too old for ops' grafana policy: grafana leaves the list. eng without MFA: only the
	 * wildcard. A stranger: nothing, and no networks. */
	who.auth_time = NOW - 4000;
	assert_int_equal(policy_resources_claims(snap, &who, "i", "u", "d", NOW, &c), 0);
	assert_int_equal(json_array_size(json_object_get(c, "resources")), 2);
	json_decref(c);
	struct policy_subject e = {eng, 1, 0, NOW};
	assert_int_equal(policy_resources_claims(snap, &e, "i", "u", "d", NOW, &c), 0);
	list = json_object_get(c, "resources");
	assert_int_equal(json_array_size(list), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "id")), "r-wild");
	json_decref(c);
	struct policy_subject s = {nobody, 1, 1, NOW};
	assert_int_equal(policy_resources_claims(snap, &s, "i", "u", "d", NOW, &c), 0);
	assert_int_equal(json_array_size(json_object_get(c, "resources")), 0);
	assert_int_equal(json_array_size(json_object_get(c, "networks")), 0);
	json_decref(c);
}

static void test_grant_claims(void **state)
{
	(void)state;
	struct policy_subject who = {ops, 1, 0, NOW};
	struct policy_grant_request q = {"https://ctl.example", "u1", "s1", "d1",
	                                 "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
	                                 "00112233445566778899aabbccddeeff", NOW, 300};
	struct policy_decision d;
	json_t *c = NULL;
	assert_int_equal(policy_grant_claims(snap, &who, &q, "r-net", &d, &c), 0);
	assert_int_equal(d.reason, POLICY_ALLOWED);
	assert_non_null(c);
	assert_int_equal(json_object_size(c), 16);
	assert_int_equal(json_integer_value(json_object_get(c, "v")), 1);
	assert_string_equal(json_string_value(json_object_get(c, "typ")), "grant");
	assert_string_equal(json_string_value(json_object_get(c, "iss")), "https://ctl.example");
	assert_string_equal(json_string_value(json_object_get(c, "aud")), "sallyport:network:n-2");
	assert_string_equal(json_string_value(json_object_get(c, "jti")),
	                    "00112233445566778899aabbccddeeff");
	assert_int_equal(json_integer_value(json_object_get(c, "iat")), NOW);
	assert_int_equal(json_integer_value(json_object_get(c, "exp")), NOW + 300);
	assert_string_equal(json_string_value(json_object_get(c, "sub")), "u1");
	assert_string_equal(json_string_value(json_object_get(c, "sid")), "s1");
	assert_string_equal(json_string_value(json_object_get(c, "dev")), "d1");
	json_t *cnf = json_object_get(c, "cnf");
	assert_int_equal(json_object_size(cnf), 1);
	assert_string_equal(json_string_value(json_object_get(cnf, "jkt")),
	                    "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
	assert_string_equal(json_string_value(json_object_get(c, "res")), "r-net");
	assert_string_equal(json_string_value(json_object_get(c, "net")), "n-2");
	assert_string_equal(json_string_value(json_object_get(c, "dst")), "10.0.0.0/8");
	assert_int_equal(json_array_size(json_object_get(c, "tcp")), 1);
	assert_string_equal(json_string_value(json_array_get(json_object_get(c, "tcp"), 0)), "22");
	assert_string_equal(json_string_value(json_object_get(c, "udp")), "none");
	json_decref(c);

	assert_int_equal(policy_grant_claims(snap, &who, &q, "r-db", &d, &c), 0);
	assert_int_equal(d.reason, POLICY_NO_POLICY);
	assert_null(c);
	assert_int_equal(policy_grant_claims(snap, &who, &q, "r-nope", &d, &c), 0);
	assert_int_equal(d.reason, POLICY_NO_RESOURCE);
	assert_null(c);
	struct policy_subject e = {eng, 1, 0, NOW};
	assert_int_equal(policy_grant_claims(snap, &e, &q, "r-grafana", &d, &c), 0);
	assert_int_equal(d.reason, POLICY_MFA_REQUIRED);
	assert_null(c);
}

static void test_amr(void **state)
{
	(void)state;
	assert_true(policy_amr_has_mfa("[\"pwd\",\"mfa\"]", 13));
	assert_false(policy_amr_has_mfa("[\"pwd\",\"otp\"]", 13));
	assert_false(policy_amr_has_mfa("[]", 2));
	assert_false(policy_amr_has_mfa("{\"mfa\":1}", 9));
	assert_false(policy_amr_has_mfa("nope", 4));
}

static void test_empty_snapshot(void **state)
{
	(void)state;
	struct policy_rows rows = {NULL, 0, NULL, 0, NULL, 0};
	struct policy_snapshot *s = NULL;
	assert_int_equal(policy_snapshot_build(&rows, 0, &s, NULL), 0);
	struct policy_subject who = {ops, 1, 1, NOW};
	struct policy_decision d;
	assert_int_equal(policy_evaluate(s, &who, "a.example", TCP, 1, NOW, &d), 0);
	assert_int_equal(d.reason, POLICY_NO_RESOURCE);
	policy_snapshot_free(s);
	policy_snapshot_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_snapshot_shape),
		cmocka_unit_test(test_reason_names),
		cmocka_unit_test(test_every_reason),
		cmocka_unit_test(test_precedence),
		cmocka_unit_test(test_mfa_and_age),
		cmocka_unit_test(test_one_policy_with_both_conditions),
		cmocka_unit_test(test_many_groups),
		cmocka_unit_test(test_explanations),
		cmocka_unit_test(test_resources_claims),
		cmocka_unit_test(test_grant_claims),
		cmocka_unit_test(test_amr),
		cmocka_unit_test(test_empty_snapshot),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
