/*
 * bench/micro.h — the micro-benchmark program's parts. Each module file
 * (micro_dns.c, micro_token.c, ...) defines one bench_* function that measures its
 * module and prints lines through bench_report. micro_main.c calls them in turn.
 */
#ifndef SALLYPORT_BENCH_MICRO_H
#define SALLYPORT_BENCH_MICRO_H

#include <stdint.h>

/* Monotonic seconds. */
double bench_now(void);
/* Prints "  name: value unit (note)" in one aligned line; note may be NULL. */
void bench_report(const char *name, double value, const char *unit, const char *note);
/* Keeps the compiler from discarding a computed value. */
void bench_sink(uint64_t value);

/* Each returns 0, or non-zero when it could not run (it then prints why). */
int bench_token(void);     /* ES256 sign/verify via our token module and via raw OpenSSL */
int bench_dns(void);       /* DNS query parse + answer build */
int bench_resource(void);  /* resource lookup among 10,000 resources */
int bench_controller_policy(void); /* grants/s and access decisions (controller) */
int bench_tunnel(void);    /* tunnel throughput and flow churn */

#endif
