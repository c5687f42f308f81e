/* shared/metrics.c — see metrics.h. */
#include "shared/metrics.h"

#include <string.h>

#include "shared/error.h"

static int name_is_valid(const char *name)
{
	if (name == NULL || name[0] == '\0')
		return 0;
	for (size_t i = 0; name[i] != '\0'; i++) {
		char c = name[i];
		int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
		if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
			return 0;
	}
	return 1;
}

int sp_metrics_register(struct sp_metrics_registry *registry, struct sp_metric *metric)
{
	if (!name_is_valid(metric->name) || metric->help == NULL)
		return SP_ERR_INVALID;
	if (metric->type == SP_METRIC_HISTOGRAM) {
		if (metric->bound_count == 0 || metric->bound_count > SP_METRIC_MAX_BUCKETS ||
		    metric->bounds == NULL)
			return SP_ERR_INVALID;
		for (size_t i = 1; i < metric->bound_count; i++)
			if (!(metric->bounds[i] > metric->bounds[i - 1]))
				return SP_ERR_INVALID;
	}
	for (struct sp_metric *m = registry->first; m != NULL; m = m->next) {
		if (m == metric)
			return SP_ERR_INVALID;
		/* A family keeps one type. */
		if (strcmp(m->name, metric->name) == 0 && m->type != metric->type)
			return SP_ERR_INVALID;
	}
	metric->next = NULL;
	if (registry->last != NULL)
		registry->last->next = metric;
	else
		registry->first = metric;
	registry->last = metric;
	return 0;
}

void sp_metric_observe(struct sp_metric *m, double value)
{
	if (!(value >= 0))
		value = 0; /* NaN and negatives count as zero */
	size_t i = 0;
	while (i < m->bound_count && value > m->bounds[i])
		i++;
	atomic_fetch_add_explicit(&m->buckets[i], 1, memory_order_relaxed);
	double micro = value * 1e6;
	uint64_t add = micro >= 1.8e19 ? UINT64_MAX / 2 : (uint64_t)micro;
	atomic_fetch_add_explicit(&m->sum_micro, add, memory_order_relaxed);
}

static int family_seen_before(const struct sp_metrics_registry *registry,
                              const struct sp_metric *metric)
{
	for (const struct sp_metric *m = registry->first; m != metric; m = m->next)
		if (strcmp(m->name, metric->name) == 0)
			return 1;
	return 0;
}

static const char *type_name(enum sp_metric_type type)
{
	switch (type) {
	case SP_METRIC_COUNTER:
		return "counter";
	case SP_METRIC_GAUGE:
		return "gauge";
	case SP_METRIC_HISTOGRAM:
		return "histogram";
	}
	return "untyped";
}

static int render_histogram(const struct sp_metric *m, struct sp_buf *out)
{
	const char *labels = m->labels != NULL ? m->labels : "";
	const char *sep = labels[0] != '\0' ? "," : "";
	uint64_t cumulative = 0;
	int r = 0;
	for (size_t i = 0; i <= m->bound_count && r == 0; i++) {
		cumulative += atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
		if (i < m->bound_count)
			r = sp_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", m->name, labels, sep,
			                  m->bounds[i], (unsigned long long)cumulative);
		else
			r = sp_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", m->name, labels,
			                  sep, (unsigned long long)cumulative);
	}
	if (r == 0) {
		double sum = (double)atomic_load_explicit(&m->sum_micro, memory_order_relaxed) / 1e6;
		if (labels[0] != '\0')
			r = sp_buf_printf(out, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", m->name, labels,
			                  sum, m->name, labels, (unsigned long long)cumulative);
		else
			r = sp_buf_printf(out, "%s_sum %.6f\n%s_count %llu\n", m->name, sum, m->name,
			                  (unsigned long long)cumulative);
	}
	return r;
}

static int render_series(const struct sp_metric *m, struct sp_buf *out)
{
	if (m->type == SP_METRIC_HISTOGRAM)
		return render_histogram(m, out);
	long long v = (long long)atomic_load_explicit(&m->value, memory_order_relaxed);
	if (m->labels != NULL && m->labels[0] != '\0')
		return sp_buf_printf(out, "%s{%s} %lld\n", m->name, m->labels, v);
	return sp_buf_printf(out, "%s %lld\n", m->name, v);
}

int sp_metrics_render(const struct sp_metrics_registry *registry, struct sp_buf *out)
{
	/* The format wants each family's series together: render a family when its first
	 * member comes up, then skip the later members. Registries hold tens of metrics. */
	int r = 0;
	for (const struct sp_metric *m = registry->first; m != NULL && r == 0; m = m->next) {
		if (family_seen_before(registry, m))
			continue;
		r = sp_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
		                  type_name(m->type));
		for (const struct sp_metric *s = m; s != NULL && r == 0; s = s->next)
			if (strcmp(s->name, m->name) == 0)
				r = render_series(s, out);
	}
	return r;
}
