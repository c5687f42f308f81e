/*
 * client/loopback.c — loopback address table and listener plan (see loopback.h).
 */
#include "client/loopback.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>

#include "shared/cidr.h"
#include "shared/portset.h"

struct loopback {
	uint32_t base;	   /* network address, host order */
	uint32_t capacity; /* usable offsets: 1..capacity */
	char **names;	   /* names[i] has offset i + 1 */
	size_t count;
};

int loopback_new(const char *range, struct loopback **out, struct sp_diag *diag)
{
	*out = NULL;
	struct sp_cidr c;
	if (range == NULL)
		range = LOOPBACK_DEFAULT_RANGE;
	if (sp_cidr_parse(range, &c, NULL) < 0 || c.family != AF_INET || c.prefix_len > 30 ||
	    c.prefix_len < 8 || c.addr[0] != 127)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "loopback range \"%s\": want an IPv4 CIDR in 127.0.0.0/8, /8../30",
				   range);
	struct loopback *lb = calloc(1, sizeof(*lb));
	if (lb == NULL)
		return SP_ERR_NOMEM;
	lb->base = ((uint32_t)c.addr[0] << 24) | ((uint32_t)c.addr[1] << 16) |
		   ((uint32_t)c.addr[2] << 8) | c.addr[3];
	uint64_t size = (uint64_t)1 << (32 - c.prefix_len);
	lb->capacity = (uint32_t)(size - 2);
	if (lb->capacity > LOOPBACK_MAX_NAMES)
		lb->capacity = LOOPBACK_MAX_NAMES;
	lb->names = calloc(lb->capacity, sizeof(char *));
	if (lb->names == NULL) {
		free(lb);
		return SP_ERR_NOMEM;
	}
	*out = lb;
	return 0;
}

void loopback_free(struct loopback *lb)
{
	if (lb == NULL)
		return;
	for (size_t i = 0; i < lb->count; i++)
		free(lb->names[i]);
	free(lb->names);
	free(lb);
}

static void offset_addr(const struct loopback *lb, size_t index, uint8_t addr[4])
{
	uint32_t a = lb->base + (uint32_t)index + 1u;
	addr[0] = (uint8_t)(a >> 24);
	addr[1] = (uint8_t)(a >> 16);
	addr[2] = (uint8_t)(a >> 8);
	addr[3] = (uint8_t)a;
}

int loopback_assign(struct loopback *lb, const char *name, uint8_t addr[4])
{
	memset(addr, 0, 4);
	if (name == NULL || name[0] == '\0')
		return SP_ERR_INVALID;
	for (size_t i = 0; i < lb->count; i++) {
		if (strcmp(lb->names[i], name) == 0) {
			offset_addr(lb, i, addr);
			return 0;
		}
	}
	if (lb->count >= lb->capacity)
		return SP_ERR_TOO_LARGE;
	char *copy = strdup(name);
	if (copy == NULL)
		return SP_ERR_NOMEM;
	lb->names[lb->count] = copy;
	offset_addr(lb, lb->count, addr);
	lb->count++;
	return 0;
}

const char *loopback_reverse(const struct loopback *lb, const uint8_t addr[4])
{
	uint32_t a = ((uint32_t)addr[0] << 24) | ((uint32_t)addr[1] << 16) |
		     ((uint32_t)addr[2] << 8) | addr[3];
	if (a <= lb->base || a - lb->base > lb->count)
		return NULL;
	return lb->names[a - lb->base - 1];
}

static int add_name(struct loopback *lb, const char *name, const struct sp_resource *r,
		    size_t position, struct loopback_listener *out, size_t cap, size_t *n)
{
	uint8_t addr[4];
	int rc = loopback_assign(lb, name, addr);
	if (rc < 0)
		return rc;
	const char *kept = loopback_reverse(lb, addr);
	size_t ports = 0;
	for (uint32_t k = 0; k < r->tcp.count; k++) {
		for (uint32_t p = r->tcp.ranges[k].first; p <= r->tcp.ranges[k].last; p++) {
			if (ports == LOOPBACK_MAX_PORTS_PER_RESOURCE)
				return 0;
			if (*n == cap)
				return SP_ERR_TOO_LARGE;
			out[*n] = (struct loopback_listener){.name = kept,
							      .port = (uint16_t)p,
							      .resource_position = position};
			memcpy(out[*n].addr, addr, 4);
			(*n)++;
			ports++;
		}
	}
	return 0;
}

int loopback_plan(struct loopback *lb, const struct sp_resource *resources, size_t count,
		  struct loopback_listener *out, size_t cap, size_t *n, size_t *skipped_all)
{
	*n = 0;
	*skipped_all = 0;
	for (size_t i = 0; i < count; i++) {
		const struct sp_resource *r = &resources[i];
		const char *names[2] = {NULL, NULL};
		if (r->address.kind == SP_RESOURCE_ADDRESS_NAME)
			names[0] = r->address.name;
		names[1] = r->alias;
		if (names[0] == NULL && names[1] == NULL)
			continue;
		if (sp_portset_is_all(&r->tcp)) {
			(*skipped_all)++;
			for (int k = 0; k < 2; k++) {
				uint8_t addr[4];
				if (names[k] != NULL && loopback_assign(lb, names[k], addr) < 0)
					return SP_ERR_TOO_LARGE;
			}
			continue;
		}
		for (int k = 0; k < 2; k++) {
			if (names[k] == NULL)
				continue;
			int rc = add_name(lb, names[k], r, i, out, cap, n);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}
