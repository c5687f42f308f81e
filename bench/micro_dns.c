/*
 * bench/micro_dns.c — the client DNS stub's hot path: parse one query and build the
 * synthetic answer into a fixed buffer, on one core, for about a second per case. The
 * query is what `dig app.corp.test` sends (EDNS0 with a client cookie).
 */
#include <stdint.h>
#include <string.h>

#include "bench/micro.h"
#include "shared/dns.h"

#define BENCH_DNS_SECONDS 1.0
#define BENCH_DNS_BATCH 4096

static const uint8_t bench_query_template[] = {
	0x1a, 0x2b, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x03, 'a', 'p', 'p', 0x04, 'c', 'o', 'r', 'p', 0x04, 't', 'e', 's', 't', 0x00,
	0x00, 0x01, 0x00, 0x01,
	0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c,
	0x00, 0x0a, 0x00, 0x08, 0x5b, 0x1e, 0x8c, 0x77, 0x0f, 0x3a, 0xd2, 0x41,
};
#define QTYPE_LOW_BYTE 28

/* Parse + answer in a loop; returns operations per second, or -1 on a codec failure. */
static double run_case(uint16_t qtype, int build)
{
	uint8_t query[sizeof(bench_query_template)];
	uint8_t reply[SP_DNS_EDNS_PAYLOAD];
	const uint8_t address[16] = {0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0,
	                             0,    0,    0,    0,    0,    0,    0, 1};
	size_t address_len = qtype == SP_DNS_TYPE_A ? 4 : 16;
	struct sp_dns_query q;
	struct sp_buf out;
	uint64_t ops = 0, sum = 0;

	memcpy(query, bench_query_template, sizeof(query));
	query[QTYPE_LOW_BYTE] = (uint8_t)qtype;
	double start = bench_now(), elapsed;
	do {
		for (int i = 0; i < BENCH_DNS_BATCH; i++) {
			query[1] = (uint8_t)i; /* a different ID each time, as on the wire */
			if (sp_dns_parse_query(query, sizeof(query), &q) != 0)
				return -1;
			if (build) {
				sp_buf_init_fixed(&out, reply, sizeof(reply));
				if (sp_dns_build_addresses(&out, &q, qtype, address, address_len,
				                           60) != 0)
					return -1;
				sum += out.len + reply[1];
			} else {
				sum += q.question.name.text_len;
			}
		}
		ops += BENCH_DNS_BATCH;
		elapsed = bench_now() - start;
	} while (elapsed < BENCH_DNS_SECONDS);
	bench_sink(sum);
	return (double)ops / elapsed;
}

int bench_dns(void)
{
	double a = run_case(SP_DNS_TYPE_A, 1);
	double aaaa = run_case(SP_DNS_TYPE_AAAA, 1);
	double parse = run_case(SP_DNS_TYPE_A, 0);
	if (a < 0 || aaaa < 0 || parse < 0) {
		bench_report("dns codec failed on the benchmark query", 0, "", NULL);
		return 1;
	}
	bench_report("query parse + A answer (app.corp.test, EDNS)", a, "ops/s", "target >= 2e6");
	bench_report("query parse + AAAA answer", aaaa, "ops/s", "target >= 2e6");
	bench_report("query parse only (reference)", parse, "ops/s", NULL);
	return 0;
}
