/*
 * shared/metrics.h — counters, gauges and histograms rendered in the Prometheus text
 * exposition format (version 0.0.4).
 *
 * A program declares its metrics once at start-up (usually as static structs) and
 * registers them with a registry; any thread then updates them with relaxed atomics, and
 * the /metrics handler renders the registry into an sp_buf. Series of one family (same
 * name, different labels) are registered as separate structs sharing the name; the
 * renderer writes each family once (HELP, TYPE, then its series), in the order the
 * families were first registered.
 *
 * Ownership: the registry and the metric structs belong to the program and must outlive
 * every render; the registry never frees them. Registration is not thread-safe (do it
 * before starting threads); updates and rendering are.
 */
#ifndef SALLYPORT_SHARED_METRICS_H
#define SALLYPORT_SHARED_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/buf.h"

enum sp_metric_type { SP_METRIC_COUNTER, SP_METRIC_GAUGE, SP_METRIC_HISTOGRAM };

#define SP_METRIC_MAX_BUCKETS 16

struct sp_metric {
	const char *name;   /* "sallyport_flows_total": [a-zA-Z_:][a-zA-Z0-9_:]* */
	const char *help;
	const char *labels; /* NULL or already-quoted pairs: reason="no_policy",proto="tcp" */
	enum sp_metric_type type;
	_Atomic int64_t value;                  /* counter or gauge */
	/* Histograms: upper bounds in ascending order, in the metric's unit (e.g. seconds). */
	const double *bounds;
	size_t bound_count;
	_Atomic uint64_t buckets[SP_METRIC_MAX_BUCKETS + 1]; /* last is +Inf */
	_Atomic uint64_t sum_micro;             /* sum of observations x 1e6 */
	struct sp_metric *next;                 /* registry link */
};

struct sp_metrics_registry {
	struct sp_metric *first;
	struct sp_metric *last;
};

/* Adds a metric. SP_ERR_INVALID for a bad name, histogram bounds or a metric added twice. */
int sp_metrics_register(struct sp_metrics_registry *registry, struct sp_metric *metric);

static inline void sp_metric_add(struct sp_metric *m, int64_t delta)
{
	atomic_fetch_add_explicit(&m->value, delta, memory_order_relaxed);
}

static inline void sp_metric_set(struct sp_metric *m, int64_t value)
{
	atomic_store_explicit(&m->value, value, memory_order_relaxed);
}

/* Records one observation in a histogram (value in the histogram's unit, >= 0). */
void sp_metric_observe(struct sp_metric *m, double value);

/* Renders every registered metric. SP_ERR_TOO_LARGE when out's limit is reached. */
int sp_metrics_render(const struct sp_metrics_registry *registry, struct sp_buf *out);

#endif
