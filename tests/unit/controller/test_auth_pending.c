/* Unit tests for auth_pending_slot (controller/auth.c) and auth_device_slot
 * (controller/auth_device.c): the pending sign-in and device grant tables cannot be filled
 * by one client address, and a full table still takes a newcomer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "controller/auth_internal.h"

static struct pending_login table[AUTH_PENDING_MAX];

/* Starts a sign-in from address at time t the way auth_start_login stores it. */
static struct pending_login *start(const char *address, int64_t t)
{
	struct pending_login *p = auth_pending_slot(table, AUTH_PENDING_MAX, address);
	assert_non_null(p);
	memset(p, 0, sizeof(*p));
	p->in_use = 1;
	p->expires = t + AUTH_PENDING_TTL_S;
	snprintf(p->address, sizeof(p->address), "%s", address);
	return p;
}

static size_t count(const char *address)
{
	size_t n = 0;
	for (size_t i = 0; i < AUTH_PENDING_MAX; i++)
		n += table[i].in_use && strcmp(table[i].address, address) == 0;
	return n;
}

static void test_one_address_cannot_fill_the_table(void **state)
{
	(void)state;
	memset(table, 0, sizeof(table));
	struct pending_login *victim = start("192.0.2.7", 100);
	victim->state[0] = 'v';
	for (int64_t t = 0; t < 5 * AUTH_PENDING_MAX; t++)
		start("198.51.100.9", 200 + t);
	assert_int_equal(count("198.51.100.9"), AUTH_PENDING_PER_ADDRESS);
	/* The other person's sign-in survived the flood, and newcomers find room. */
	assert_true(victim->in_use && victim->state[0] == 'v');
	struct pending_login *p = auth_pending_slot(table, AUTH_PENDING_MAX, "203.0.113.1");
	assert_false(p->in_use);
	/* The flooding address replaces its own oldest. */
	p = auth_pending_slot(table, AUTH_PENDING_MAX, "198.51.100.9");
	assert_true(p->in_use);
	assert_string_equal(p->address, "198.51.100.9");
	assert_int_equal(p->expires, 200 + 5 * AUTH_PENDING_MAX - AUTH_PENDING_PER_ADDRESS +
	                                 AUTH_PENDING_TTL_S);
}

static void test_full_table_replaces_oldest(void **state)
{
	(void)state;
	memset(table, 0, sizeof(table));
	char address[64];
	for (int64_t i = 0; i < AUTH_PENDING_MAX; i++) {
		snprintf(address, sizeof(address), "10.0.%d.%d", (int)(i / 256), (int)(i % 256));
		start(address, 1000 - i); /* the last started is the oldest */
	}
	/* Full: the oldest of all goes, unless a completed one can go instead. */
	struct pending_login *p = auth_pending_slot(table, AUTH_PENDING_MAX, "203.0.113.1");
	assert_ptr_equal(p, &table[AUTH_PENDING_MAX - 1]);
	table[5].used = 1;
	p = auth_pending_slot(table, AUTH_PENDING_MAX, "203.0.113.1");
	assert_ptr_equal(p, &table[5]);
}

static struct device_grant devices[AUTH_DEVICE_MAX];

static struct device_grant *ask(const char *address, int64_t t)
{
	struct device_grant *g = auth_device_slot(devices, AUTH_DEVICE_MAX, address);
	assert_non_null(g);
	memset(g, 0, sizeof(*g));
	g->in_use = 1;
	g->expires = t + AUTH_DEVICE_TTL_S;
	snprintf(g->address, sizeof(g->address), "%s", address);
	return g;
}

static void test_device_grants_quota(void **state)
{
	(void)state;
	memset(devices, 0, sizeof(devices));
	struct device_grant *victim = ask("192.0.2.7", 100);
	victim->status = DEVICE_APPROVED;
	for (int64_t t = 0; t < 4 * AUTH_DEVICE_MAX; t++)
		ask("198.51.100.9", 200 + t);
	size_t n = 0;
	for (size_t i = 0; i < AUTH_DEVICE_MAX; i++)
		n += devices[i].in_use && strcmp(devices[i].address, "198.51.100.9") == 0;
	assert_int_equal(n, AUTH_DEVICE_PER_ADDRESS);
	assert_true(victim->in_use && victim->status == DEVICE_APPROVED);
	assert_false(auth_device_slot(devices, AUTH_DEVICE_MAX, "203.0.113.1")->in_use);
	/* Full from many addresses: the grant expiring first goes. */
	memset(devices, 0, sizeof(devices));
	char address[64];
	for (int64_t i = 0; i < AUTH_DEVICE_MAX; i++) {
		snprintf(address, sizeof(address), "10.0.0.%d", (int)i);
		ask(address, 1000 + (i == 17 ? -900 : i));
	}
	assert_ptr_equal(auth_device_slot(devices, AUTH_DEVICE_MAX, "203.0.113.1"), &devices[17]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_address_cannot_fill_the_table),
		cmocka_unit_test(test_full_table_replaces_oldest),
		cmocka_unit_test(test_device_grants_quota),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
