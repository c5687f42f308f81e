/*
 * bench/micro_controller_policy.c — the controller's policy hot paths at the scale of a
 * large deployment: 10,000 resources (exact names, aliases, wildcards, CIDRs) over 50
 * networks, 1,000 groups, about 30,000 policies.
 *
 * Prints:
 *   - snapshot rebuild time: from rows in memory (policy_snapshot_build) and from the
 *     sqlite store (policy_snapshot_load, what a change costs the first request after it);
 *   - access-check decision latency p50/p99, each decision timed on its own, for a user in
 *     20 groups and one in all 1,000 groups, over a mix of hits and misses; and the same
 *     with what a request adds (the change-sequence probe and the membership query);
 *   - flow grants per second on one core: decision + claims + ES256 signature.
 *
 * It needs the controller's core library, so it is compiled only with
 * SALLYPORT_BENCH_CONTROLLER defined and sallyport_controller_core linked (see the
 * report of the policy branch); micro_main.c runs it as the part "controller_policy".
 */
#ifdef SALLYPORT_BENCH_CONTROLLER

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/micro.h"
#include "controller/app.h"
#include "controller/policy.h"
#include "controller/store.h"
#include "controller/db.h"
#include "shared/resource.h"

int bench_controller_policy(void);

#define RESOURCES 10000
#define GROUPS 1000
#define NETWORKS 50
#define POLICIES_PER_RESOURCE 3
#define DESTINATIONS 4096
#define DECISIONS 200000
#define STORE_DECISIONS 20000
#define GRANT_SECONDS 2.0

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rng(uint32_t bound)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % bound);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int compare_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* All the generated text, kept for the run. */
struct fixture {
	char res_id[RESOURCES][33], net_of[RESOURCES][33], addr[RESOURCES][48], alias[RESOURCES][24];
	char group_id[GROUPS][33], net_id[NETWORKS][33];
	char rule_id[RESOURCES * POLICIES_PER_RESOURCE][33];
	char con_id[NETWORKS * 2][33], con_name[NETWORKS * 2][16], con_digest[NETWORKS * 2][65];
	char dest[DESTINATIONS][64];
	struct policy_resource_row resources[RESOURCES];
	struct policy_rule_row rules[RESOURCES * POLICIES_PER_RESOURCE];
	size_t rule_count;
	struct policy_connector_row connectors[NETWORKS * 2];
	const char *typical[20];
	size_t typical_count;
	const char *heavy[GROUPS];
	size_t reachable[20]; /* resources the typical user reaches */
};

static void hex_id(char out[33], unsigned kind, unsigned n)
{
	snprintf(out, 33, "%08x%08x%016x", kind, n * 2654435761u, n);
}

static void make_fixture(struct fixture *f)
{
	for (unsigned i = 0; i < NETWORKS; i++)
		hex_id(f->net_id[i], 1, i);
	for (unsigned i = 0; i < GROUPS; i++)
		hex_id(f->group_id[i], 2, i);
	for (unsigned i = 0; i < RESOURCES; i++) {
		hex_id(f->res_id[i], 3, i);
		memcpy(f->net_of[i], f->net_id[i % NETWORKS], 33);
		switch (i % 5) {
		case 3:
			snprintf(f->addr[i], sizeof(f->addr[i]), "*.w%u.corp.example", i);
			break;
		case 4:
			snprintf(f->addr[i], sizeof(f->addr[i]), "10.%u.%u.0/24", (i / 256) % 256, i % 256);
			break;
		default:
			snprintf(f->addr[i], sizeof(f->addr[i]), "svc%u.team%u.corp.example", i, i % 200);
		}
		snprintf(f->alias[i], sizeof(f->alias[i]), "s%u.sp", i);
		f->resources[i] = (struct policy_resource_row){
			f->res_id[i], f->net_of[i], NULL, f->addr[i], i % 10 == 0 ? f->alias[i] : NULL,
			"[\"443\",\"8000-8100\"]", i % 4 == 0 ? "[\"53\"]" : "\"none\"", i % 7 == 0};
		unsigned groups[POLICIES_PER_RESOURCE] = {(i * 7) % GROUPS, (i * 13 + 1) % GROUPS,
		                                          (i * 31 + 2) % GROUPS};
		for (unsigned k = 0; k < POLICIES_PER_RESOURCE; k++) {
			int dup = 0;
			for (unsigned j = 0; j < k; j++)
				dup |= groups[j] == groups[k];
			if (dup)
				continue;
			size_t n = f->rule_count++;
			hex_id(f->rule_id[n], 4, (unsigned)n);
			/* The first policy of a resource has no conditions; the others sometimes do. */
			f->rules[n] = (struct policy_rule_row){f->rule_id[n], f->group_id[groups[k]],
			                                       f->res_id[i], k > 0 && n % 10 == 1,
			                                       k > 0 && n % 10 == 2 ? 3600 : 0};
		}
	}
	for (unsigned i = 0; i < NETWORKS * 2; i++) {
		hex_id(f->con_id[i], 5, i);
		snprintf(f->con_name[i], sizeof(f->con_name[i]), "connector-%u", i);
		snprintf(f->con_digest[i], sizeof(f->con_digest[i]), "%064x", i);
		f->connectors[i] = (struct policy_connector_row){f->con_id[i], f->net_id[i / 2],
		                                                 f->con_name[i], f->con_digest[i], NULL};
	}
	/* The typical user is in the unconditional groups of resources 0..19. */
	for (unsigned i = 0; i < 20; i++) {
		const char *g = f->group_id[(i * 7) % GROUPS];
		int seen = 0;
		for (size_t k = 0; k < f->typical_count; k++)
			seen |= f->typical[k] == g;
		if (!seen)
			f->typical[f->typical_count++] = g;
		f->reachable[i] = i;
	}
	qsort(f->typical, f->typical_count, sizeof(f->typical[0]), compare_str);
	for (unsigned i = 0; i < GROUPS; i++)
		f->heavy[i] = f->group_id[i];
	/* Destinations: 70% hits on every kind of resource, 30% misses. */
	for (unsigned i = 0; i < DESTINATIONS; i++) {
		unsigned r = rng(RESOURCES);
		if (rng(10) >= 7)
			snprintf(f->dest[i], sizeof(f->dest[i]), "host%u.elsewhere.example", r);
		else if (r % 5 == 3)
			snprintf(f->dest[i], sizeof(f->dest[i]), "app.w%u.corp.example", r);
		else if (r % 5 == 4)
			snprintf(f->dest[i], sizeof(f->dest[i]), "10.%u.%u.7", (r / 256) % 256, r % 256);
		else
			snprintf(f->dest[i], sizeof(f->dest[i]), "%s", f->addr[r]);
	}
}

static int insert_rows(struct db *db, const struct fixture *f)
{
	struct db_stmt *st = NULL;
	int ok = db_begin_read(db) == 0;
	char name[32];
	ok = ok && db_prepare(db,
			      "INSERT INTO remote_networks (id, name, created_at,"
			      " updated_at) VALUES (?, ?, 1, 1)",
			      &st) == 0;
	for (unsigned i = 0; ok && i < NETWORKS; i++) {
		snprintf(name, sizeof(name), "net%u", i);
		db_bind_text(st, 1, f->net_id[i], -1, DB_STATIC);
		db_bind_text(st, 2, name, -1, DB_TRANSIENT);
		ok = db_step(st) == DB_DONE && db_reset(st) == 0;
	}
	db_finalize(st);
	st = NULL;
	ok = ok && db_prepare(db,
			      "INSERT INTO groups (id, name, created_at, updated_at)"
			      " VALUES (?, ?, 1, 1)",
			      &st) == 0;
	for (unsigned i = 0; ok && i < GROUPS; i++) {
		snprintf(name, sizeof(name), "group%u", i);
		db_bind_text(st, 1, f->group_id[i], -1, DB_STATIC);
		db_bind_text(st, 2, name, -1, DB_TRANSIENT);
		ok = db_step(st) == DB_DONE && db_reset(st) == 0;
	}
	db_finalize(st);
	st = NULL;
	ok = ok && db_prepare(db,
			      "INSERT INTO resources (id, network_id, name, address, alias,"
			      " tcp_ports, udp_ports, icmp, created_at, updated_at) VALUES"
			      " (?, ?, ?, ?, ?, ?, ?, ?, 1, 1)",
			      &st) == 0;
	for (unsigned i = 0; ok && i < RESOURCES; i++) {
		const struct policy_resource_row *r = &f->resources[i];
		db_bind_text(st, 1, r->id, -1, DB_STATIC);
		db_bind_text(st, 2, r->network_id, -1, DB_STATIC);
		db_bind_text(st, 3, r->id, -1, DB_STATIC);
		db_bind_text(st, 4, r->address, -1, DB_STATIC);
		if (r->alias != NULL)
			db_bind_text(st, 5, r->alias, -1, DB_STATIC);
		else
			db_bind_null(st, 5);
		db_bind_text(st, 6, r->tcp_json, -1, DB_STATIC);
		db_bind_text(st, 7, r->udp_json, -1, DB_STATIC);
		db_bind_int(st, 8, r->icmp);
		ok = db_step(st) == DB_DONE && db_reset(st) == 0;
	}
	db_finalize(st);
	st = NULL;
	ok = ok && db_prepare(db,
			      "INSERT INTO policies (id, group_id, resource_id, require_mfa,"
			      " max_session_age_s, created_at, updated_at) VALUES"
			      " (?, ?, ?, ?, ?, 1, 1)",
			      &st) == 0;
	for (size_t i = 0; ok && i < f->rule_count; i++) {
		const struct policy_rule_row *p = &f->rules[i];
		db_bind_text(st, 1, p->id, -1, DB_STATIC);
		db_bind_text(st, 2, p->group_id, -1, DB_STATIC);
		db_bind_text(st, 3, p->resource_id, -1, DB_STATIC);
		db_bind_int(st, 4, p->require_mfa);
		db_bind_int64(st, 5, p->max_session_age_s);
		ok = db_step(st) == DB_DONE && db_reset(st) == 0;
	}
	db_finalize(st);
	st = NULL;
	ok = ok && db_prepare(db,
			      "INSERT INTO connectors (id, network_id, name,"
			      " public_key_digest, public_key_pem, enrolled_at, updated_at)"
			      " VALUES (?, ?, ?, ?, 'pem', 1, 1)",
			      &st) == 0;
	for (unsigned i = 0; ok && i < NETWORKS * 2; i++) {
		const struct policy_connector_row *c = &f->connectors[i];
		db_bind_text(st, 1, c->id, -1, DB_STATIC);
		db_bind_text(st, 2, c->network_id, -1, DB_STATIC);
		db_bind_text(st, 3, c->name, -1, DB_STATIC);
		db_bind_text(st, 4, c->public_key_digest, -1, DB_STATIC);
		ok = db_step(st) == DB_DONE && db_reset(st) == 0;
	}
	db_finalize(st);
	/* One user in the typical user's groups. */
	ok = ok && db_exec(db, "INSERT INTO users (id, issuer, subject, created_at, updated_at)"
			       " VALUES ('00000000000000000000000000000001', 'i', 's', 1, 1)") == 0;
	st = NULL;
	ok = ok && db_prepare(db,
			      "INSERT INTO memberships (user_id, group_id, created_at)"
			      " VALUES ('00000000000000000000000000000001', ?, 1)",
			      &st) == 0;
	for (size_t i = 0; ok && i < f->typical_count; i++) {
		db_bind_text(st, 1, f->typical[i], -1, DB_STATIC);
		ok = db_step(st) == DB_DONE && db_reset(st) == 0;
	}
	db_finalize(st);
	ok = ok && db_commit(db) == 0;
	return ok ? 0 : -1;
}

static void report_latency(const char *name, uint64_t *samples, size_t n)
{
	qsort(samples, n, sizeof(samples[0]), compare_u64);
	char label[96];
	snprintf(label, sizeof(label), "%s p50", name);
	bench_report(label, (double)samples[n / 2] / 1000.0, "us", NULL);
	snprintf(label, sizeof(label), "%s p99", name);
	bench_report(label, (double)samples[n * 99 / 100] / 1000.0, "us", NULL);
}

static void time_decisions(const char *name, const struct policy_snapshot *s,
                           const struct fixture *f, const char *const *groups, size_t count,
                           uint64_t *samples)
{
	struct policy_subject who = {groups, count, 1, 1700000000};
	uint64_t allowed = 0;
	for (size_t i = 0; i < DECISIONS; i++) {
		struct policy_decision d;
		uint64_t t0 = now_ns();
		policy_evaluate(s, &who, f->dest[i % DESTINATIONS], SP_RESOURCE_PROTOCOL_TCP, 443,
		                1700000000, &d);
		samples[i] = now_ns() - t0;
		allowed += d.reason == POLICY_ALLOWED;
	}
	bench_sink(allowed);
	report_latency(name, samples, DECISIONS);
}

int bench_controller_policy(void)
{
	int status = 1;
	struct fixture *f = calloc(1, sizeof(*f));
	uint64_t *samples = calloc(DECISIONS, sizeof(*samples));
	struct policy_snapshot *s = NULL;
	static struct controller c;
	char dir[64] = "/tmp/sp-bench-policy-XXXXXX", path[128];
	int have_dir = 0;
	if (f == NULL || samples == NULL)
		goto out;
	make_fixture(f);
	struct policy_rows rows = {f->resources, RESOURCES, f->rules, f->rule_count, f->connectors,
	                           NETWORKS * 2};

	/* Rebuild from rows (median of 5). */
	uint64_t build[5];
	for (int i = 0; i < 5; i++) {
		policy_snapshot_free(s);
		s = NULL;
		uint64_t t0 = now_ns();
		if (policy_snapshot_build(&rows, 1, &s, NULL) < 0) {
			printf("  snapshot build failed\n");
			goto out;
		}
		build[i] = now_ns() - t0;
	}
	qsort(build, 5, sizeof(build[0]), compare_u64);
	char note[96];
	snprintf(note, sizeof(note), "%zu resources, %zu policies, %zu groups", s->resource_count,
	         s->rule_count, s->group_count);
	bench_report("snapshot build from rows", (double)build[2] / 1e6, "ms", note);

	time_decisions("decision, user in 20 groups", s, f, f->typical, f->typical_count, samples);
	time_decisions("decision, user in 1000 groups", s, f, f->heavy, GROUPS, samples);

	/* The store: load time, and a request's extra cost (sequence probe + memberships). */
	if (mkdtemp(dir) == NULL)
		goto out;
	have_dir = 1;
	snprintf(path, sizeof(path), "%s/controller.db", dir);
	int applied = 0;
	if (db_open(&db_sqlite_driver, path, 0, &c.db, NULL) < 0 ||
	    db_migrate(c.db, &applied, NULL) < 0 || insert_rows(c.db, f) < 0) {
		printf("  cannot prepare the store: %s\n", c.db != NULL ? db_errmsg(c.db) : "open");
		goto out;
	}
	uint64_t load[5];
	for (int i = 0; i < 5; i++) {
		struct policy_snapshot *loaded = NULL;
		uint64_t t0 = now_ns();
		if (policy_snapshot_load(c.db, &loaded, NULL) < 0)
			goto out;
		load[i] = now_ns() - t0;
		policy_snapshot_free(loaded);
	}
	qsort(load, 5, sizeof(load[0]), compare_u64);
	bench_report("snapshot rebuild from sqlite", (double)load[2] / 1e6, "ms",
	             "what the first request after a change pays");

	const struct policy_snapshot *current = NULL;
	for (size_t i = 0; i < STORE_DECISIONS; i++) {
		struct policy_groups groups;
		struct policy_decision d;
		uint64_t t0 = now_ns();
		if (policy_current(&c, &current, NULL) < 0 ||
		    policy_load_groups(c.db, "00000000000000000000000000000001", &groups) < 0)
			goto out;
		struct policy_subject who = {groups.list, groups.count, 1, 1700000000};
		policy_evaluate(current, &who, f->dest[i % DESTINATIONS], SP_RESOURCE_PROTOCOL_TCP, 443,
		                1700000000, &d);
		samples[i] = now_ns() - t0;
		policy_groups_free(&groups);
	}
	report_latency("decision + seq probe + memberships query", samples, STORE_DECISIONS);

	/* Grants: decision, claims and signature, one core. */
	if (authority_open(&c.authority, c.db, NULL, 1700000000, NULL) < 0)
		goto out;
	struct policy_subject who = {f->typical, f->typical_count, 1, 1700000000};
	struct policy_grant_request q = {"https://controller.example", "00000000000000000000000000000001",
	                                 "00000000000000000000000000000002",
	                                 "00000000000000000000000000000003",
	                                 "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
	                                 "00112233445566778899aabbccddeeff", 1700000000, 300};
	uint64_t grants = 0, refused = 0;
	double start = bench_now(), elapsed = 0;
	while ((elapsed = bench_now() - start) < GRANT_SECONDS) {
		for (int k = 0; k < 64; k++) {
			struct policy_decision d;
			json_t *claims = NULL;
			char *jws = NULL;
			if (policy_grant_claims(current, &who, &q, f->res_id[f->reachable[grants % 20]], &d,
			                        &claims) < 0 || claims == NULL) {
				refused++;
				grants++;
				continue;
			}
			if (authority_sign(&c.authority, claims, &jws) == 0)
				bench_sink(strlen(jws));
			free(jws);
			json_decref(claims);
			grants++;
		}
	}
	if (refused > 0) {
		printf("  %llu grants were refused: the fixture is wrong\n", (unsigned long long)refused);
		goto out;
	}
	bench_report("flow grants issued (claims + ES256 sign)", (double)grants / elapsed, "/s",
	             "one core; target >= 5,000/s");
	status = 0;
out:
	authority_close(&c.authority);
	policy_state_free(&c);
	db_close(c.db);
	c.db = NULL;
	if (have_dir) {
		unlink(path);
		char side[160];
		snprintf(side, sizeof(side), "%s-wal", path);
		unlink(side);
		snprintf(side, sizeof(side), "%s-shm", path);
		unlink(side);
		rmdir(dir);
	}
	policy_snapshot_free(s);
	free(samples);
	free(f);
	return status;
}

#else
/* Built without the controller's core library: nothing to measure here. */
typedef int bench_controller_policy_not_built;
#endif
