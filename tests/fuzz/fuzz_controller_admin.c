/*
 * Fuzz target: request bodies of the admin API as controller/admin_api.c checks them
 * (admin_fields_check), with a field set like a resource's (text, id, address, alias,
 * port sets, boolean, bounded integer, enum). The first byte picks create or update.
 * Properties: an accepted body yields only known fields, and its canonical form is
 * accepted again unchanged (canonicalisation is idempotent).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "controller/admin_api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *all_ports(void)
{
	return json_string("all");
}

static const char *const states[] = {"active", "disabled", NULL};
static const struct admin_field fields[] = {
    {.name = "name",
     .column = "name",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_REQUIRED,
     .min = 1,
     .max = 256},
    {.name = "network_id",
     .column = "network_id",
     .type = ADMIN_FIELD_ID,
     .flags = ADMIN_CREATE_ONLY},
    {.name = "address", .column = "address", .type = ADMIN_FIELD_ADDRESS},
    {.name = "alias", .column = "alias", .type = ADMIN_FIELD_ALIAS, .flags = ADMIN_NULLABLE},
    {.name = "tcp", .column = "tcp_ports", .type = ADMIN_FIELD_PORTS, .default_value = all_ports},
    {.name = "udp", .column = "udp_ports", .type = ADMIN_FIELD_PORTS},
    {.name = "icmp", .column = "icmp", .type = ADMIN_FIELD_BOOL},
    {.name = "age", .column = "age", .type = ADMIN_FIELD_INT, .min = 0, .max = 31622400},
    {.name = "state",
     .column = "state",
     .type = ADMIN_FIELD_ENUM,
     .flags = ADMIN_UPDATE_ONLY,
     .values = states},
    {.name = "pem",
     .column = "pem",
     .type = ADMIN_FIELD_TEXT,
     .flags = ADMIN_MULTILINE | ADMIN_NULLABLE,
     .min = 1,
     .max = 4096},
};
#define FIELD_COUNT (sizeof(fields) / sizeof(fields[0]))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	int creating = data[0] & 1;
	json_t *body = json_loadb((const char *)data + 1, size - 1,
				  JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
	if (body == NULL)
		return 0;
	struct sp_diag diag;
	json_t *out = NULL;
	if (admin_fields_check(body, fields, FIELD_COUNT, creating, &out, &diag) == 0) {
		const char *key;
		json_t *value;
		json_object_foreach (out, key, value) {
			size_t i = 0;
			while (i < FIELD_COUNT && strcmp(fields[i].name, key) != 0)
				i++;
			if (i == FIELD_COUNT)
				abort();
		}
		json_t *again = NULL;
		if (admin_fields_check(out, fields, FIELD_COUNT, creating, &again, &diag) != 0 ||
		    !json_equal(out, again))
			abort();
		json_decref(again);
		json_decref(out);
	} else if (out != NULL) {
		abort();
	}
	json_decref(body);
	return 0;
}
