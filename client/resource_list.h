/*
 * client/resource_list.h — the client's resource list, from the JSON the controller signs.
 *
 * The controller's signed resource list (docs/protocol.md §1.5) carries its resources
 * under "resources", each with string "id" and "network_id". shared/resource.h parses
 * resources with integer ids, so this loader drops string ids and numbers the resources
 * by position instead (id = position + 1, network_id = 0): the DNS stub only needs the
 * address, alias and ports, and the client keeps the controller's ids beside the list.
 * Accepted shapes: the claims object ({"resources": [...], ...}, other claims ignored)
 * or a bare array of resource objects.
 *
 * Ownership: *out is a new array released with sp_resource_list_free(*out, *count).
 */
#ifndef SALLYPORT_CLIENT_RESOURCE_LIST_H
#define SALLYPORT_CLIENT_RESOURCE_LIST_H

#include <stddef.h>

#include "shared/error.h"
#include "shared/resource.h"

/* Most bytes of JSON accepted (the signed document's own bound). */
#define RESOURCE_LIST_JSON_MAX (4u * 1024u * 1024u)

/*
 * Parses `len` bytes of JSON text. SP_ERR_INVALID with a diag naming the position
 * ("resources[3]: ...") for malformed JSON, a wrong shape or a bad resource;
 * SP_ERR_TOO_LARGE above RESOURCE_LIST_JSON_MAX. *out NULL and *count 0 on failure.
 */
int resource_list_parse(const char *text, size_t len, struct sp_resource **out, size_t *count,
			struct sp_diag *diag);

/* Reads and parses a file (SP_ERR_IO when it cannot be read). */
int resource_list_load(const char *path, struct sp_resource **out, size_t *count,
		       struct sp_diag *diag);

#endif
