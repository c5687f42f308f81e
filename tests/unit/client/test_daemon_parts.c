/* Unit tests for the client daemon's pure parts: control protocol, grant cache, loopback
 * address allocation and listener plan. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client/control_proto.h"
#include "client/grant_cache.h"
#include "client/loopback.h"
#include "client/resource_list.h"

static int parse(const char *line, enum control_cmd *cmd)
{
	struct sp_diag diag = {{0}};
	return control_parse(line, strlen(line), cmd, &diag);
}

static void test_control_parse(void **state)
{
	(void)state;
	enum control_cmd cmd = 0;
	assert_int_equal(parse("{\"cmd\":\"status\"}\n", &cmd), 0);
	assert_int_equal(cmd, CONTROL_STATUS);
	assert_int_equal(parse("{\"cmd\":\"resources\"}\r\n", &cmd), 0);
	assert_int_equal(cmd, CONTROL_RESOURCES);
	assert_int_equal(parse("{\"cmd\": \"down\"}", &cmd), 0);
	assert_int_equal(cmd, CONTROL_DOWN);
	assert_int_equal(parse("{\"cmd\":\"reboot\"}", &cmd), SP_ERR_NOT_FOUND);
	assert_int_equal(cmd, 0);
	assert_int_equal(parse("{\"cmd\":1}", &cmd), SP_ERR_INVALID);
	assert_int_equal(parse("{}", &cmd), SP_ERR_INVALID);
	assert_int_equal(parse("[\"status\"]", &cmd), SP_ERR_INVALID);
	assert_int_equal(parse("{\"cmd\":\"status\",\"x\":1}", &cmd), SP_ERR_INVALID);
	assert_int_equal(parse("{\"cmd\":\"status\",\"cmd\":\"down\"}", &cmd), SP_ERR_INVALID);
	assert_int_equal(parse("{\"cmd\":\"status\"}\n{\"cmd\":\"down\"}", &cmd), SP_ERR_INVALID);
	assert_int_equal(parse("", &cmd), SP_ERR_INVALID);
	assert_int_equal(parse("status", &cmd), SP_ERR_INVALID);
	char big[CONTROL_LINE_MAX + 2];
	memset(big, ' ', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	struct sp_diag diag = {{0}};
	assert_int_equal(control_parse(big, strlen(big), &cmd, &diag), SP_ERR_TOO_LARGE);
	assert_non_null(strstr(diag.message, "longer"));
	assert_string_equal(control_cmd_name(CONTROL_DOWN), "down");
	assert_null(control_cmd_name((enum control_cmd)7));
}

static void test_grant_cache_expiry(void **state)
{
	(void)state;
	struct grant_cache *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	grant_cache_init(c);
	assert_null(grant_cache_get(c, "r1", 1000));
	assert_int_equal(grant_cache_put(c, "r1", "g.1.x", 1300, 1000), 0);
	assert_string_equal(grant_cache_get(c, "r1", 1000), "g.1.x");
	/* usable until exp - margin, exclusive */
	assert_string_equal(grant_cache_get(c, "r1", 1300 - GRANT_CACHE_MARGIN_S - 1), "g.1.x");
	assert_null(grant_cache_get(c, "r1", 1300 - GRANT_CACHE_MARGIN_S));
	assert_int_equal(c->count, 0); /* dropped when found stale */
	/* refused: already stale, empty or overlong id, empty grant */
	assert_int_equal(grant_cache_put(c, "r1", "g", 1029, 1000), SP_ERR_INVALID);
	assert_int_equal(grant_cache_put(c, "", "g", 2000, 1000), SP_ERR_INVALID);
	char longid[GRANT_CACHE_ID_MAX + 2];
	memset(longid, 'a', sizeof(longid));
	longid[sizeof(longid) - 1] = '\0';
	assert_int_equal(grant_cache_put(c, longid, "g", 2000, 1000), SP_ERR_INVALID);
	assert_int_equal(grant_cache_put(c, "r1", "", 2000, 1000), SP_ERR_INVALID);
	/* replace and remove */
	assert_int_equal(grant_cache_put(c, "r1", "old", 2000, 1000), 0);
	assert_int_equal(grant_cache_put(c, "r1", "new", 2100, 1000), 0);
	assert_int_equal(c->count, 1);
	assert_string_equal(grant_cache_get(c, "r1", 1000), "new");
	grant_cache_remove(c, "r1");
	assert_null(grant_cache_get(c, "r1", 1000));
	/* full: stale ones go first, then the nearest to its end */
	char id[32];
	for (int i = 0; i < GRANT_CACHE_MAX; i++) {
		snprintf(id, sizeof(id), "r%d", i);
		assert_int_equal(grant_cache_put(c, id, "g", i == 5 ? 1100 : 5000 + i, 1000), 0);
	}
	assert_int_equal(c->count, GRANT_CACHE_MAX);
	assert_int_equal(grant_cache_put(c, "extra", "g", 9000, 1080), 0); /* r5 stale at 1080 */
	assert_null(grant_cache_get(c, "r5", 1000));
	assert_non_null(grant_cache_get(c, "r6", 1000));
	assert_int_equal(grant_cache_put(c, "extra2", "g", 9000, 1000), 0); /* evicts r0 (5000) */
	assert_null(grant_cache_get(c, "r0", 1000));
	assert_non_null(grant_cache_get(c, "r1", 1000));
	assert_int_equal(c->count, GRANT_CACHE_MAX);
	grant_cache_free(c);
	assert_int_equal(c->count, 0);
	grant_cache_free(NULL);
	free(c);
}

static void test_loopback_assign(void **state)
{
	(void)state;
	struct loopback *lb = NULL;
	struct sp_diag diag = {{0}};
	assert_int_equal(loopback_new("10.0.0.0/16", &lb, &diag), SP_ERR_INVALID);
	assert_null(lb);
	assert_non_null(strstr(diag.message, "10.0.0.0/16"));
	assert_int_equal(loopback_new("127.0.0.0/31", &lb, &diag), SP_ERR_INVALID);
	assert_int_equal(loopback_new("fd00::/64", &lb, &diag), SP_ERR_INVALID);
	assert_int_equal(loopback_new("nonsense", &lb, &diag), SP_ERR_INVALID);
	assert_int_equal(loopback_new(NULL, &lb, &diag), 0);
	uint8_t a[4], b[4];
	assert_int_equal(loopback_assign(lb, "a.corp", a), 0);
	assert_memory_equal(a, ((uint8_t[]){127, 77, 0, 1}), 4);
	assert_int_equal(loopback_assign(lb, "b.corp", b), 0);
	assert_memory_equal(b, ((uint8_t[]){127, 77, 0, 2}), 4);
	assert_int_equal(loopback_assign(lb, "a.corp", a), 0); /* stable */
	assert_memory_equal(a, ((uint8_t[]){127, 77, 0, 1}), 4);
	assert_string_equal(loopback_reverse(lb, b), "b.corp");
	assert_null(loopback_reverse(lb, (uint8_t[]){127, 77, 0, 3}));
	assert_null(loopback_reverse(lb, (uint8_t[]){127, 77, 0, 0}));
	assert_null(loopback_reverse(lb, (uint8_t[]){127, 0, 0, 1}));
	assert_int_equal(loopback_assign(lb, "", a), SP_ERR_INVALID);
	loopback_free(lb);
	/* a /30 holds two names: network and broadcast are never handed out */
	assert_int_equal(loopback_new("127.9.9.0/30", &lb, &diag), 0);
	assert_int_equal(loopback_assign(lb, "x", a), 0);
	assert_memory_equal(a, ((uint8_t[]){127, 9, 9, 1}), 4);
	assert_int_equal(loopback_assign(lb, "y", a), 0);
	assert_memory_equal(a, ((uint8_t[]){127, 9, 9, 2}), 4);
	assert_int_equal(loopback_assign(lb, "z", a), SP_ERR_TOO_LARGE);
	loopback_free(lb);
	loopback_free(NULL);
}

static void test_loopback_plan(void **state)
{
	(void)state;
	const char *json = "{\"resources\": ["
			   "{\"id\":\"r1\",\"address\":\"web.corp\",\"alias\":\"web.sp\","
			   "\"tcp\":[\"80\",\"443\"],\"udp\":\"none\"},"
			   "{\"id\":\"r2\",\"address\":\"*.lab.corp\",\"tcp\":[\"22\"],\"udp\":\"none\"},"
			   "{\"id\":\"r3\",\"address\":\"10.0.0.0/8\",\"tcp\":\"all\",\"udp\":\"none\"},"
			   "{\"id\":\"r4\",\"address\":\"db.corp\",\"tcp\":\"all\",\"udp\":\"none\"},"
			   "{\"id\":\"r5\",\"address\":\"10.1.1.1\",\"alias\":\"one.sp\","
			   "\"tcp\":[\"1000-1100\"],\"udp\":\"none\"}]}";
	struct sp_resource *res = NULL;
	size_t count = 0;
	struct sp_diag diag = {{0}};
	assert_int_equal(resource_list_parse(json, strlen(json), &res, &count, &diag), 0);
	assert_int_equal(count, 5);
	struct loopback *lb = NULL;
	assert_int_equal(loopback_new("127.77.0.0/16", &lb, &diag), 0);
	struct loopback_listener out[256];
	size_t n = 0, all = 0;
	assert_int_equal(loopback_plan(lb, res, count, out, 256, &n, &all), 0);
	/* web.corp:80,443 + web.sp:80,443 + one.sp: 64 of 101 ports; db.corp "all": no listener */
	assert_int_equal(n, 4 + LOOPBACK_MAX_PORTS_PER_RESOURCE);
	assert_int_equal(all, 1);
	assert_string_equal(out[0].name, "web.corp");
	assert_int_equal(out[0].port, 80);
	assert_memory_equal(out[0].addr, ((uint8_t[]){127, 77, 0, 1}), 4);
	assert_string_equal(out[3].name, "web.sp");
	assert_int_equal(out[3].port, 443);
	assert_memory_equal(out[3].addr, ((uint8_t[]){127, 77, 0, 2}), 4);
	assert_int_equal(out[3].resource_position, 0);
	uint8_t a[4];
	assert_int_equal(loopback_assign(lb, "db.corp", a), 0); /* got an address anyway */
	assert_memory_equal(a, ((uint8_t[]){127, 77, 0, 3}), 4);
	assert_string_equal(out[4].name, "one.sp");
	assert_int_equal(out[4].port, 1000);
	assert_int_equal(out[4].resource_position, 4);
	assert_int_equal(out[n - 1].port, 1000 + LOOPBACK_MAX_PORTS_PER_RESOURCE - 1);
	/* the same plan again keeps every address */
	size_t n2 = 0;
	assert_int_equal(loopback_plan(lb, res, count, out, 256, &n2, &all), 0);
	assert_int_equal(n2, n);
	assert_memory_equal(out[3].addr, ((uint8_t[]){127, 77, 0, 2}), 4);
	/* too small an output array */
	assert_int_equal(loopback_plan(lb, res, count, out, 3, &n2, &all), SP_ERR_TOO_LARGE);
	loopback_free(lb);
	sp_resource_list_free(res, count);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_control_parse),
	    cmocka_unit_test(test_grant_cache_expiry),
	    cmocka_unit_test(test_loopback_assign),
	    cmocka_unit_test(test_loopback_plan),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
