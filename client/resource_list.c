/* client/resource_list.c — see resource_list.h. */
#include "client/resource_list.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "shared/buf.h"

/* A copy of the array whose objects carry integer ids in place of the controller's strings. */
static int renumber(const json_t *array, json_t **out, struct sp_diag *diag)
{
	*out = NULL;
	json_t *copy = json_array();
	if (copy == NULL)
		return sp_diag_set(diag, SP_ERR_NOMEM, "out of memory");
	size_t i;
	const json_t *item;
	json_array_foreach(array, i, item) {
		if (!json_is_object(item)) {
			json_decref(copy);
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "resources[%zu]: must be an object", i);
		}
		json_t *obj = json_copy((json_t *)item);
		if (obj == NULL || json_array_append_new(copy, obj) == -1) {
			json_decref(copy);
			return sp_diag_set(diag, SP_ERR_NOMEM, "out of memory");
		}
		if (json_is_string(json_object_get(obj, "id")) ||
		    json_object_get(obj, "id") == NULL)
			json_object_set_new(obj, "id", json_integer((json_int_t)i + 1));
		if (json_is_string(json_object_get(obj, "network_id")))
			json_object_del(obj, "network_id");
	}
	*out = copy;
	return 0;
}

int resource_list_parse(const char *text, size_t len, struct sp_resource **out, size_t *count,
			struct sp_diag *diag)
{
	*out = NULL;
	*count = 0;
	if (len > RESOURCE_LIST_JSON_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "resource list is larger than %u bytes",
				   RESOURCE_LIST_JSON_MAX);
	json_error_t error;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &error);
	if (root == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "resource list: line %d: %s", error.line,
				   error.text);
	json_t *array = root;
	if (json_is_object(root))
		array = json_object_get(root, "resources");
	int r;
	if (!json_is_array(array)) {
		r = sp_diag_set(diag, SP_ERR_INVALID,
				"resource list: expected an array or an object with \"resources\"");
		goto out;
	}
	json_t *numbered = NULL;
	r = renumber(array, &numbered, diag);
	if (r < 0)
		goto out;
	r = sp_resource_list_from_json(numbered, out, count, diag);
	json_decref(numbered);
out:
	json_decref(root);
	return r;
}

int resource_list_load(const char *path, struct sp_resource **out, size_t *count,
		       struct sp_diag *diag)
{
	*out = NULL;
	*count = 0;
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return sp_diag_set(diag, SP_ERR_IO, "%s: %s", path, strerror(errno));
	struct sp_buf text;
	sp_buf_init(&text, RESOURCE_LIST_JSON_MAX);
	int r = 0;
	uint8_t chunk[16384];
	size_t n;
	while (r == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		r = sp_buf_put(&text, chunk, n);
	if (r == 0 && ferror(f))
		r = sp_diag_set(diag, SP_ERR_IO, "%s: read error", path);
	else if (r < 0)
		r = sp_diag_set(diag, r, "%s: larger than %u bytes", path, RESOURCE_LIST_JSON_MAX);
	fclose(f);
	if (r == 0)
		r = resource_list_parse(text.data != NULL ? (const char *)text.data : "", text.len,
					out, count, diag);
	sp_buf_free(&text);
	return r;
}
