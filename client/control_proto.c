/*
 * client/control_proto.c — control request parsing (see control_proto.h).
 */
#include "client/control_proto.h"

#include <string.h>

#include <jansson.h>

static const char *const names[] = {NULL, "status", "resources", "down"};

const char *control_cmd_name(enum control_cmd cmd)
{
	if ((int)cmd < 1 || (int)cmd > 3)
		return NULL;
	return names[cmd];
}

int control_parse(const char *line, size_t len, enum control_cmd *cmd, struct sp_diag *diag)
{
	*cmd = 0;
	if (len > CONTROL_LINE_MAX) {
		sp_diag_set(diag, SP_ERR_TOO_LARGE, "control request longer than %d bytes",
			    CONTROL_LINE_MAX);
		return SP_ERR_TOO_LARGE;
	}
	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (memchr(line, '\n', len) != NULL) {
		sp_diag_set(diag, SP_ERR_INVALID, "control request: one line only");
		return SP_ERR_INVALID;
	}
	json_error_t err;
	json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &err);
	int rc = SP_ERR_INVALID;
	if (root == NULL || !json_is_object(root)) {
		sp_diag_set(diag, rc, "control request: not a JSON object");
		goto out;
	}
	json_t *c = json_object_get(root, "cmd");
	if (!json_is_string(c)) {
		sp_diag_set(diag, rc, "control request: \"cmd\" must be a string");
		goto out;
	}
	if (json_object_size(root) != 1) {
		sp_diag_set(diag, rc, "control request: only \"cmd\" is allowed");
		goto out;
	}
	for (int i = 1; i <= 3; i++) {
		if (strcmp(json_string_value(c), names[i]) == 0) {
			*cmd = (enum control_cmd)i;
			rc = 0;
			goto out;
		}
	}
	rc = SP_ERR_NOT_FOUND;
	sp_diag_set(diag, rc, "control request: unknown command");
out:
	json_decref(root);
	return rc;
}
