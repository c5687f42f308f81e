/* Unit tests for shared/metrics.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "shared/error.h"
#include "shared/metrics.h"

static void test_render_families_once(void **state)
{
	(void)state;
	struct sp_metrics_registry reg = {0};
	struct sp_metric flows = {.name = "sp_flows_total", .help = "Flows.",
	                          .type = SP_METRIC_COUNTER};
	struct sp_metric denied_a = {.name = "sp_denied_total", .help = "Denials.",
	                             .labels = "reason=\"no_policy\"", .type = SP_METRIC_COUNTER};
	struct sp_metric denied_b = {.name = "sp_denied_total", .help = "Denials.",
	                             .labels = "reason=\"revoked\"", .type = SP_METRIC_COUNTER};
	struct sp_metric tunnels = {.name = "sp_tunnels", .help = "Open tunnels.",
	                            .type = SP_METRIC_GAUGE};
	assert_int_equal(sp_metrics_register(&reg, &flows), 0);
	assert_int_equal(sp_metrics_register(&reg, &denied_a), 0);
	assert_int_equal(sp_metrics_register(&reg, &tunnels), 0);
	assert_int_equal(sp_metrics_register(&reg, &denied_b), 0); /* late member still grouped */
	sp_metric_add(&flows, 3);
	sp_metric_add(&denied_b, 1);
	sp_metric_set(&tunnels, -2);

	struct sp_buf out;
	sp_buf_init(&out, 0);
	assert_int_equal(sp_metrics_render(&reg, &out), 0);
	assert_string_equal(sp_buf_cstr(&out),
	                    "# HELP sp_flows_total Flows.\n# TYPE sp_flows_total counter\n"
	                    "sp_flows_total 3\n"
	                    "# HELP sp_denied_total Denials.\n# TYPE sp_denied_total counter\n"
	                    "sp_denied_total{reason=\"no_policy\"} 0\n"
	                    "sp_denied_total{reason=\"revoked\"} 1\n"
	                    "# HELP sp_tunnels Open tunnels.\n# TYPE sp_tunnels gauge\n"
	                    "sp_tunnels -2\n");
	sp_buf_free(&out);
}

static void test_histogram_cumulative(void **state)
{
	(void)state;
	static const double bounds[] = {0.001, 0.01, 0.1};
	struct sp_metrics_registry reg = {0};
	struct sp_metric lat = {.name = "sp_latency_seconds", .help = "Latency.",
	                        .type = SP_METRIC_HISTOGRAM, .bounds = bounds, .bound_count = 3};
	assert_int_equal(sp_metrics_register(&reg, &lat), 0);
	sp_metric_observe(&lat, 0.0005);
	sp_metric_observe(&lat, 0.001); /* le is inclusive */
	sp_metric_observe(&lat, 0.05);
	sp_metric_observe(&lat, 2.0);
	sp_metric_observe(&lat, -1.0);
	struct sp_buf out;
	sp_buf_init(&out, 0);
	assert_int_equal(sp_metrics_render(&reg, &out), 0);
	assert_string_equal(sp_buf_cstr(&out),
	                    "# HELP sp_latency_seconds Latency.\n"
	                    "# TYPE sp_latency_seconds histogram\n"
	                    "sp_latency_seconds_bucket{le=\"0.001\"} 3\n"
	                    "sp_latency_seconds_bucket{le=\"0.01\"} 3\n"
	                    "sp_latency_seconds_bucket{le=\"0.1\"} 4\n"
	                    "sp_latency_seconds_bucket{le=\"+Inf\"} 5\n"
	                    "sp_latency_seconds_sum 2.051500\n"
	                    "sp_latency_seconds_count 5\n");
	sp_buf_free(&out);
}

static void test_register_refusals(void **state)
{
	(void)state;
	static const double unsorted[] = {1.0, 0.5};
	struct sp_metrics_registry reg = {0};
	struct sp_metric bad_name = {.name = "9lives", .help = "x"};
	struct sp_metric dash = {.name = "a-b", .help = "x"};
	struct sp_metric no_help = {.name = "ok"};
	struct sp_metric hist = {.name = "h", .help = "x", .type = SP_METRIC_HISTOGRAM,
	                         .bounds = unsorted, .bound_count = 2};
	struct sp_metric good = {.name = "fam", .help = "x", .type = SP_METRIC_COUNTER};
	struct sp_metric other_type = {.name = "fam", .help = "x", .type = SP_METRIC_GAUGE};
	assert_int_equal(sp_metrics_register(&reg, &bad_name), SP_ERR_INVALID);
	assert_int_equal(sp_metrics_register(&reg, &dash), SP_ERR_INVALID);
	assert_int_equal(sp_metrics_register(&reg, &no_help), SP_ERR_INVALID);
	assert_int_equal(sp_metrics_register(&reg, &hist), SP_ERR_INVALID);
	assert_int_equal(sp_metrics_register(&reg, &good), 0);
	assert_int_equal(sp_metrics_register(&reg, &good), SP_ERR_INVALID);
	assert_int_equal(sp_metrics_register(&reg, &other_type), SP_ERR_INVALID);
}

static void test_render_respects_buffer_limit(void **state)
{
	(void)state;
	struct sp_metrics_registry reg = {0};
	struct sp_metric m = {.name = "sp_some_long_metric_name", .help = "Some help text.",
	                      .type = SP_METRIC_COUNTER};
	assert_int_equal(sp_metrics_register(&reg, &m), 0);
	uint8_t storage[32];
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, sizeof(storage));
	assert_int_equal(sp_metrics_render(&reg, &out), SP_ERR_TOO_LARGE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render_families_once),
		cmocka_unit_test(test_histogram_cumulative),
		cmocka_unit_test(test_register_refusals),
		cmocka_unit_test(test_render_respects_buffer_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
