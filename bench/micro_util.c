/* bench/micro_util.c — timing and printing shared by the micro-benchmarks. */
#include <stdio.h>
#include <time.h>

#include "bench/micro.h"

double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void bench_report(const char *name, double value, const char *unit, const char *note)
{
	printf("  %-44s %14.1f %-8s%s%s\n", name, value, unit, note != NULL ? "  " : "",
	       note != NULL ? note : "");
	fflush(stdout);
}

static volatile uint64_t bench_sink_value;

void bench_sink(uint64_t value)
{
	bench_sink_value += value;
}
