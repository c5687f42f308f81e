/*
 * client/control_proto.h — the daemon's control protocol over its Unix socket.
 *
 * One request per connection: a single line of JSON {"cmd": "status"|"resources"|"down"}
 * ended by '\n', at most CONTROL_LINE_MAX bytes; the daemon answers one line of JSON and
 * closes. Only the socket owner's uid and root may connect (SO_PEERCRED, checked by the
 * daemon on every connection). Pure parsing here.
 */
#ifndef SALLYPORT_CLIENT_CONTROL_PROTO_H
#define SALLYPORT_CLIENT_CONTROL_PROTO_H
#include <stddef.h>
#include "shared/error.h"

#define CONTROL_LINE_MAX 1024

enum control_cmd {
	CONTROL_STATUS = 1,
	CONTROL_RESOURCES = 2,
	CONTROL_DOWN = 3,
};

/*
 * Parses one request line of len bytes (a trailing "\n" or "\r\n" allowed). Returns 0 and
 * *cmd; SP_ERR_TOO_LARGE above CONTROL_LINE_MAX; SP_ERR_INVALID for bad JSON, a missing or
 * non-string "cmd", unknown members; SP_ERR_NOT_FOUND for an unknown command. The diag
 * says which.
 */
int control_parse(const char *line, size_t len, enum control_cmd *cmd, struct sp_diag *diag);

/* The wire name of a command ("status"), or NULL for an unknown value. */
const char *control_cmd_name(enum control_cmd cmd);
#endif
