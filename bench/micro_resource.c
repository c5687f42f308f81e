/*
 * bench/micro_resource.c — resource lookups among 10,000 resources.
 *
 * Builds an index over a mix like a mid-sized deployment's (exact FQDNs, some with
 * aliases; wildcard patterns; CIDR blocks; single IPs; IPv4 and IPv6), then times
 * lookups of hits and misses. Each sample is a batch of BATCH lookups timed with one
 * pair of clock reads and divided by BATCH, so the clock's own cost stays out of the
 * figure; the median and 99th percentile are over all batches. A linear scan over the
 * same resources is timed as the reference.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "bench/micro.h"
#include "shared/resource_index.h"

#define RESOURCES 10000
#define BATCH 64
#define BATCHES 2048
#define QUERIES (BATCH * BATCHES)
#define BUILD_RUNS 5
#define LINEAR_QUERIES 256

static uint64_t bench_rng_state = 0x2545f4914f6cdd1dULL;

static uint32_t bench_rng(uint32_t bound)
{
	bench_rng_state ^= bench_rng_state << 13;
	bench_rng_state ^= bench_rng_state >> 7;
	bench_rng_state ^= bench_rng_state << 17;
	return (uint32_t)(bench_rng_state % bound);
}

/* Resource i of the mix: 40% names (a quarter with aliases), 20% patterns, 20% CIDRs,
 * 20% single addresses. Teams and environments give the names realistic structure. */
static int make_resource(struct sp_resource *res, uint32_t i)
{
	char address[128], alias[128];
	const char *kinds[] = {"svc", "db", "api", "web", "cache"};
	uint32_t team = i % 500, slot = i / 500;
	alias[0] = '\0';
	switch (i % 10) {
	case 0:
	case 1:
	case 2:
	case 3:
		snprintf(address, sizeof(address), "%s-%u.team-%u.corp.example", kinds[slot % 5],
			 slot, team);
		if (i % 4 == 0)
			snprintf(alias, sizeof(alias), "%s-%u-%u.sp", kinds[slot % 5], slot, team);
		break;
	case 4:
		snprintf(address, sizeof(address), "*.team-%u.corp.example", team);
		if (slot % 2 == 1)
			snprintf(address, sizeof(address), "*.env-%u.team-%u.corp.example", slot,
				 team);
		break;
	case 5:
		snprintf(address, sizeof(address),
			 slot % 2 ? "db-??.team-%u.corp.example" : "*-api.team-%u.corp.example",
			 team);
		if (slot >= 2)
			snprintf(address, sizeof(address), "node-%u-*.team-%u.corp.example", slot,
				 team);
		break;
	case 6:
		snprintf(address, sizeof(address), "10.%u.%u.0/24", team % 250, slot);
		break;
	case 7:
		if (slot % 2 == 0)
			snprintf(address, sizeof(address), "172.16.%u.%u/28", team % 250,
				 (slot * 16) % 256);
		else
			snprintf(address, sizeof(address), "fd00:%x:%x::/64", team, slot);
		break;
	case 8:
		snprintf(address, sizeof(address), "10.%u.%u.%u", 100 + team % 100, slot,
			 team % 200 + 1);
		break;
	default:
		snprintf(address, sizeof(address), "fd00:%x:%x::%x", team, slot, i);
		break;
	}
	json_t *object = json_pack("{s:I,s:s,s:[s,s,s],s:[s]}", "id", (json_int_t)i, "address",
				   address, "tcp", "22", "443", "8000-8100", "udp", "53");
	if (object == NULL)
		return -1;
	if (alias[0] != '\0')
		json_object_set_new(object, "alias", json_string(alias));
	struct sp_diag diag;
	int r = sp_resource_from_json(object, res, &diag);
	json_decref(object);
	if (r < 0)
		fprintf(stderr, "bench: %s: %s\n", address, diag.message);
	return r;
}

struct ip_query {
	int family;
	uint8_t addr[16];
};

/* A name the pattern of res matches: each '*' becomes "h<random>", each '?' a digit. */
static void pattern_instance(const struct sp_resource *res, char *out, size_t len)
{
	size_t used = 0;
	for (const char *p = res->address.name; *p != '\0' && used + 8 < len; p++) {
		if (*p == '*')
			used += (size_t)snprintf(out + used, len - used, "h%u", bench_rng(100000));
		else if (*p == '?')
			out[used++] = (char)('0' + bench_rng(10));
		else
			out[used++] = *p;
	}
	out[used] = '\0';
}

/* An address inside the CIDR of res, host bits random. */
static void ip_instance(const struct sp_resource *res, struct ip_query *q)
{
	const struct sp_cidr *cidr = &res->address.cidr;
	unsigned bits = sp_cidr_family_bits(cidr->family);
	memset(q, 0, sizeof(*q));
	q->family = cidr->family;
	for (unsigned bit = cidr->prefix_len; bit < bits; bit++)
		if (bench_rng(2))
			q->addr[bit / 8] |= (uint8_t)(0x80u >> (bit % 8));
	for (unsigned i = 0; i < bits / 8; i++)
		q->addr[i] |= cidr->addr[i];
}

static int compare_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : (x > y ? 1 : 0);
}

/* Median and p99 of the per-lookup times in samples (sorted in place). */
static void report_samples(const char *name, double *samples, size_t n, uint64_t count,
			   const char *what)
{
	char label[96], note[64];
	qsort(samples, n, sizeof(samples[0]), compare_double);
	snprintf(note, sizeof(note), "%llu of %d %s", (unsigned long long)count, QUERIES, what);
	snprintf(label, sizeof(label), "%s median", name);
	bench_report(label, samples[n / 2], "ns", note);
	snprintf(label, sizeof(label), "%s p99", name);
	bench_report(label, samples[n * 99 / 100], "ns", NULL);
}

static void time_names(const struct sp_resource_index *index, char (*names)[128], const char *label,
		       double *samples)
{
	uint64_t hits = 0;
	for (size_t b = 0; b < BATCHES; b++) { /* warm-up */
		for (size_t k = 0; k < BATCH; k++)
			bench_sink(
			    (uintptr_t)sp_resource_index_match_name(index, names[b * BATCH + k]));
	}
	for (size_t b = 0; b < BATCHES; b++) {
		double start = bench_now();
		for (size_t k = 0; k < BATCH; k++)
			hits += sp_resource_index_match_name(index, names[b * BATCH + k]) != NULL;
		samples[b] = (bench_now() - start) * 1e9 / BATCH;
	}
	bench_sink(hits);
	report_samples(label, samples, BATCHES, hits, "found a resource");
}

static void time_ips(const struct sp_resource_index *index, const struct ip_query *ips,
		     const char *label, double *samples)
{
	uint64_t hits = 0;
	for (size_t b = 0; b < BATCHES; b++)
		for (size_t k = 0; k < BATCH; k++) {
			const struct ip_query *q = &ips[b * BATCH + k];
			bench_sink(
			    (uintptr_t)sp_resource_index_match_ip(index, q->family, q->addr));
		}
	for (size_t b = 0; b < BATCHES; b++) {
		double start = bench_now();
		for (size_t k = 0; k < BATCH; k++) {
			const struct ip_query *q = &ips[b * BATCH + k];
			hits += sp_resource_index_match_ip(index, q->family, q->addr) != NULL;
		}
		samples[b] = (bench_now() - start) * 1e9 / BATCH;
	}
	bench_sink(hits);
	report_samples(label, samples, BATCHES, hits, "found a resource");
}

static void time_decisions(const struct sp_resource_index *index, char (*names)[128],
			   double *samples)
{
	uint64_t allowed = 0;
	for (size_t b = 0; b < BATCHES; b++) {
		double start = bench_now();
		for (size_t k = 0; k < BATCH; k++) {
			const struct sp_resource *res;
			enum sp_resource_reason reason;
			sp_resource_index_match(index, names[b * BATCH + k],
						SP_RESOURCE_PROTOCOL_TCP, 443, &res, &reason);
			allowed += reason == SP_RESOURCE_ALLOWED;
		}
		samples[b] = (bench_now() - start) * 1e9 / BATCH;
	}
	bench_sink(allowed);
	report_samples("match (name or IP, tcp/443)", samples, BATCHES, allowed, "allowed");
}

/* The reference: the linear scan an index replaces. */
static void time_linear(const struct sp_resource *list, char (*names)[128])
{
	double start = bench_now();
	uint64_t hits = 0;
	for (size_t q = 0; q < LINEAR_QUERIES; q++) {
		char name[SP_RESOURCE_NAME_BUF];
		size_t len;
		if (sp_resource_name_normalize(names[q], name, &len, NULL) < 0)
			continue;
		for (size_t i = 0; i < RESOURCES; i++)
			if (sp_resource_matches_name(&list[i], name, len)) {
				hits++;
				break;
			}
	}
	bench_sink(hits);
	bench_report("linear scan, name (reference) mean",
		     (bench_now() - start) * 1e9 / LINEAR_QUERIES, "ns",
		     "first match only, no precedence");
}

int bench_resource(void)
{
	struct sp_resource *list = calloc(RESOURCES, sizeof(list[0]));
	char(*exact)[128] = malloc(sizeof(*exact) * QUERIES);
	char(*wild)[128] = malloc(sizeof(*wild) * QUERIES);
	char(*miss)[128] = malloc(sizeof(*miss) * QUERIES);
	char(*mixed)[128] = malloc(sizeof(*mixed) * QUERIES);
	struct ip_query *ip_hit = malloc(sizeof(*ip_hit) * QUERIES);
	struct ip_query *ip_miss = malloc(sizeof(*ip_miss) * QUERIES);
	double *samples = malloc(sizeof(*samples) * BATCHES);
	struct sp_resource_index *index = NULL;
	int r = 1;

	if (list == NULL || exact == NULL || wild == NULL || miss == NULL || mixed == NULL ||
	    ip_hit == NULL || ip_miss == NULL || samples == NULL) {
		printf("  out of memory\n");
		goto out;
	}
	for (uint32_t i = 0; i < RESOURCES; i++)
		if (make_resource(&list[i], i) < 0)
			goto out;

	double builds[BUILD_RUNS];
	for (int run = 0; run < BUILD_RUNS; run++) {
		sp_resource_index_free(index);
		index = NULL;
		double start = bench_now();
		if (sp_resource_index_build(list, RESOURCES, &index, NULL) < 0) {
			printf("  index build failed\n");
			goto out;
		}
		builds[run] = (bench_now() - start) * 1e3;
	}
	qsort(builds, BUILD_RUNS, sizeof(builds[0]), compare_double);
	bench_report("index build, 10000 resources (median of 5)", builds[BUILD_RUNS / 2], "ms",
		     "4000 names, 2000 patterns, 4000 IP/CIDR");

	for (size_t q = 0; q < QUERIES; q++) {
		/* An exact name (or alias) that exists, in the case a resolver might use. */
		uint32_t i = bench_rng(RESOURCES / 10) * 10 + bench_rng(4);
		const struct sp_resource *res = &list[i];
		snprintf(exact[q], sizeof(exact[q]), "%s",
			 q % 3 == 0 && res->alias ? res->alias : res->address.name);
		if (q % 5 == 0)
			exact[q][0] = (char)(exact[q][0] - 'a' + 'A');
		/* A name only a pattern covers: a pattern's wildcards filled in. */
		pattern_instance(&list[bench_rng(RESOURCES / 10) * 10 + 4 + bench_rng(2)], wild[q],
				 sizeof(wild[q]));
		/* Names nothing covers: other domains, and unknown teams that walk the buckets. */
		if (q % 2 == 0)
			snprintf(miss[q], sizeof(miss[q]), "www.site-%u.example.net",
				 bench_rng(100000));
		else
			snprintf(miss[q], sizeof(miss[q]), "svc-1.team-%u.corp.example",
				 1000 + bench_rng(100000));
		/* IPs inside a block or equal to an address, and IPs outside all of them. */
		struct ip_query *hit = &ip_hit[q], *out_ip = &ip_miss[q];
		memset(out_ip, 0, sizeof(*out_ip));
		ip_instance(&list[bench_rng(RESOURCES / 10) * 10 + 6 + bench_rng(4)], hit);
		out_ip->family = q % 3 == 0 ? AF_INET6 : AF_INET;
		if (out_ip->family == AF_INET) {
			const uint8_t v4[4] = {192, 168, (uint8_t)bench_rng(256),
					       (uint8_t)bench_rng(256)};
			memcpy(out_ip->addr, v4, 4);
		} else {
			const uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8,
						0,    0,    0,	  (uint8_t)bench_rng(256)};
			memcpy(out_ip->addr, v6, 16);
		}
		/* A mixed stream of destinations for the full decision. */
		switch (q % 4) {
		case 0:
			snprintf(mixed[q], sizeof(mixed[q]), "%s", exact[q]);
			break;
		case 1:
			snprintf(mixed[q], sizeof(mixed[q]), "%s", wild[q]);
			break;
		case 2:
			inet_ntop(hit->family, hit->addr, mixed[q], sizeof(mixed[q]));
			break;
		default:
			snprintf(mixed[q], sizeof(mixed[q]), "%s", miss[q]);
			break;
		}
	}

	time_names(index, exact, "name, exact hit", samples);
	time_names(index, wild, "name, wildcard hit", samples);
	time_names(index, miss, "name, miss", samples);
	time_ips(index, ip_hit, "ip, hit (v4 and v6)", samples);
	time_ips(index, ip_miss, "ip, miss", samples);
	time_decisions(index, mixed, samples);
	time_linear(list, wild);
	r = 0;
out:
	sp_resource_index_free(index);
	sp_resource_list_free(list, list != NULL ? RESOURCES : 0);
	free(exact);
	free(wild);
	free(miss);
	free(mixed);
	free(ip_hit);
	free(ip_miss);
	free(samples);
	return r;
}
