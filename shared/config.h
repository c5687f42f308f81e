/*
 * shared/config.h — layered configuration: defaults < file < environment < flags.
 *
 * A program describes its settings once, as an array of struct sp_config_key (the
 * schema). struct sp_config holds, for every key, one slot per layer:
 *
 *   default   the schema's default_value                      source "default"
 *   file      `key = value` lines of a config file             "file PATH line N"
 *   env       SALLYPORT_<NAME> variables, from an envp array   "env SALLYPORT_NAME"
 *   flag      --name VALUE / --name=VALUE on the command line  "flag --name"
 *
 * A key's value is the one of the highest layer that sets it, whatever the order in
 * which the layers were applied (so a program may read --config from the flags first
 * and load the file afterwards). Applying a layer replaces that layer as a whole and is
 * atomic: it is parsed into a scratch copy and committed only when every entry is valid;
 * on any error the config is exactly as it was and the diag names the key and where the
 * bad value came from, e.g.
 *   config file /etc/sallyport/controller.conf line 7: key "http_listen":
 *   "127.0.0.1:99999" is not a valid address (port must be 1-65535)
 *
 * Names: keys are lower case with underscores ("http_listen"). In a file and on the
 * command line a dash may stand for an underscore (http-listen, --http_listen); the
 * environment variable is SALLYPORT_ followed by the name in upper case.
 *
 * An empty value ("key =", "SALLYPORT_X=", "--x=") means "not set" for every type: it
 * overrides lower layers with nothing, and the getters report SP_ERR_NOT_FOUND. Values
 * never contain control characters and are at most SP_CONFIG_VALUE_MAX bytes.
 *
 * Value types (see docs/config.md for the exact grammar):
 *   STRING    any text without control characters
 *   INT       decimal, optional '-', within [min, max]
 *   BOOL      true/false, yes/no, on/off, 1/0 (case ignored); stored as "true"/"false"
 *   ENUM      one of `allowed` (case ignored); stored in the schema's spelling
 *   DURATION  number+unit pairs, units ms s m h d: "30s", "5m", "1h30m"; or "0"
 *   URL       http:// or https:// URL with a host, no user or password, ASCII only
 *   ADDRESS   HOST:PORT with a host name, IPv4 or [IPv6], port 1-65535
 *   PATH      a file system path without control characters, at most 4095 bytes
 *
 * Parsing is pure: the file layer is fed one line at a time (sp_config_feed_line) with no
 * I/O inside; sp_config_load_file is the thin reader beside it. The environment comes
 * as an envp array and the flags as argc/argv, so all three are unit-tested and fuzzed.
 *
 * Ownership: the caller owns struct sp_config (usually on the stack) and the schema,
 * which must outlive it. Values are copies on the heap, freed (secrets wiped first) by
 * sp_config_free. Strings returned by the getters stay valid until the next call that
 * changes the config or sp_config_free. Not thread-safe: configure, then share read-only.
 */
#ifndef SALLYPORT_SHARED_CONFIG_H
#define SALLYPORT_SHARED_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "shared/buf.h"
#include "shared/error.h"

/* Longest line of a config file, line ending included. */
#define SP_CONFIG_LINE_MAX 4096
/* Largest config file sp_config_load_file reads. */
#define SP_CONFIG_FILE_MAX ((size_t)1 << 20)
/* Longest value in any layer. */
#define SP_CONFIG_VALUE_MAX 4096
/* Longest key name, and most keys in a schema. */
#define SP_CONFIG_NAME_MAX 64
#define SP_CONFIG_KEYS_MAX 256
/* Longest path value (PATH_MAX minus the NUL). */
#define SP_CONFIG_PATH_MAX 4095
/* Room for a host name or address text returned by sp_config_parse_address. */
#define SP_CONFIG_HOST_MAX 256

enum sp_config_type {
	SP_CONFIG_STRING = 0,
	SP_CONFIG_INT,
	SP_CONFIG_BOOL,
	SP_CONFIG_ENUM,
	SP_CONFIG_DURATION,
	SP_CONFIG_URL,
	SP_CONFIG_ADDRESS,
	SP_CONFIG_PATH,
};

/* Key flags (struct sp_config_key.flags). */
#define SP_CONFIG_SECRET 0x1u	   /* value shown as [redacted] in dumps, help and diags */
#define SP_CONFIG_REQUIRED 0x2u	   /* sp_config_check_required fails while it is not set */
#define SP_CONFIG_NOT_IN_FILE 0x4u /* env and flags only, e.g. the config file's own path */
#define SP_CONFIG_FLAG_ONLY 0x8u   /* command line only, e.g. help, print_config */

/*
 * One setting. Schemas are static const arrays in the programs. default_value is text
 * parsed by the same rules as every other layer (checked by sp_config_init); NULL means
 * "not set unless a layer sets it". For INT, min/max bound the value; for DURATION they
 * bound it in milliseconds; min == max == 0 means no bound beyond the type's own (INT:
 * int64 range; DURATION: 0 to INT64_MAX ms). allowed is the NULL-terminated list for
 * ENUM.
 */
struct sp_config_key {
	const char *name;
	enum sp_config_type type;
	const char *default_value;
	const char *help;
	unsigned flags;
	int64_t min;
	int64_t max;
	const char *const *allowed;
};

enum sp_config_layer {
	SP_CONFIG_LAYER_DEFAULT = 0,
	SP_CONFIG_LAYER_FILE = 1,
	SP_CONFIG_LAYER_ENV = 2,
	SP_CONFIG_LAYER_FLAG = 3,
};
#define SP_CONFIG_LAYERS 4

/* One layer's setting of one key. Private to config.c. */
struct sp_config_slot {
	int set;	/* this layer sets the key (text "" means: set to "not set") */
	char *text;	/* the value, normalised (bool, enum); heap */
	int64_t number; /* INT value, BOOL 0/1, DURATION in ms */
	unsigned line;	/* file layer: the line it came from */
	char *source;	/* "file /etc/x.conf line 7", "env SALLYPORT_X", ...; heap */
};

/*
 * The configuration of one program. Fields are private to config.c; use the functions.
 * Zero-initialise or sp_config_init before use; sp_config_free is safe on a zeroed one.
 */
struct sp_config {
	const struct sp_config_key *schema;
	size_t count;
	struct sp_config_slot *slots; /* count * SP_CONFIG_LAYERS, [key][layer] */
	/* A file layer being fed line by line (sp_config_file_begin ... _commit). */
	struct sp_config_slot *pending; /* count slots, or NULL when no file is being fed */
	char *pending_path;
	int pending_error;
	struct sp_diag pending_diag;
};

/*
 * Checks the schema (names [a-z][a-z0-9_]* up to 64 bytes, unique; enum lists; bounds;
 * every default valid for its key) and fills the default layer. On failure the config
 * is zeroed and diag names the key. Returns 0, SP_ERR_INVALID, SP_ERR_TOO_LARGE (more
 * than SP_CONFIG_KEYS_MAX keys) or SP_ERR_NOMEM.
 */
int sp_config_init(struct sp_config *cfg, const struct sp_config_key *schema, size_t count,
		   struct sp_diag *diag);
/* Frees every value (secrets wiped) and zeroes the struct. Safe on NULL or zeroed. */
void sp_config_free(struct sp_config *cfg);

/*
 * The incremental file parser. sp_config_file_begin starts a new file layer named by
 * `path` (used only in sources and diags; any unfinished one is dropped). Each line is
 * then fed, in order, with its 1-based number; a trailing "\n" or "\r\n" is ignored.
 * Syntax: blank lines; comment lines starting with '#'; `key = value` with whitespace
 * trimmed; a value in double quotes may hold '#', leading or trailing spaces and the
 * escapes \" and \\; an unquoted value ends at whitespace followed by '#'.
 * sp_config_feed_line returns 0 or the error of this line; after an error the layer is
 * poisoned and every later feed and the commit return the first error and its diag.
 * sp_config_file_commit replaces the file layer with the lines fed (returns the first
 * error instead, leaving the config unchanged); sp_config_file_abort drops them. The
 * config's visible values change only at a successful commit.
 */
int sp_config_file_begin(struct sp_config *cfg, const char *path);
int sp_config_feed_line(struct sp_config *cfg, const char *line, size_t len, unsigned lineno,
			struct sp_diag *diag);
int sp_config_file_commit(struct sp_config *cfg, struct sp_diag *diag);
void sp_config_file_abort(struct sp_config *cfg);

/*
 * Reads `path` (a regular file of at most SP_CONFIG_FILE_MAX bytes) and applies it as
 * the file layer through the functions above. A file readable by others (mode & 0004)
 * may not set a secret key (SP_ERR_PERMISSION). SP_ERR_NOT_FOUND when it does not exist,
 * so a program may treat a missing default path as empty. The buffer is wiped after use.
 */
int sp_config_load_file(struct sp_config *cfg, const char *path, struct sp_diag *diag);

/*
 * Applies SALLYPORT_<NAME>=value entries of envp (NULL-terminated, as environ) as the
 * env layer. Variables not naming a key (and those naming a FLAG_ONLY key) are ignored,
 * since the programs share the prefix; when a name appears twice the first counts, as
 * with getenv. Returns 0 or the first error (config unchanged).
 */
int sp_config_apply_env(struct sp_config *cfg, char *const envp[], struct sp_diag *diag);

/*
 * Names, one per call, the SALLYPORT_ variables of envp that name no key, so a program
 * can warn about typos. *cursor starts at 0. Copies the name (without "=value") into
 * name (cut to name_size - 1) and returns 1, or returns 0 when there are no more.
 */
int sp_config_next_unknown_env(const struct sp_config *cfg, char *const envp[], size_t *cursor,
			       char *name, size_t name_size);

/*
 * Applies command-line flags as the flag layer. argv[0] is skipped. Accepts --name VALUE
 * and --name=VALUE; for BOOL keys --name means true and --no-name false, and a bool
 * never takes the next argument. Parsing stops at "--" (skipped) or at the first
 * argument that does not start with '-' (a lone "-" counts as such): *rest is set to
 * the index of the first argument not consumed (argc when none), so argv[*rest..argc)
 * are the subcommand and its arguments. Unknown flags, short options (-x), a missing
 * value, a flag given twice or a bad value fail with the config unchanged.
 */
int sp_config_apply_args(struct sp_config *cfg, int argc, char *const argv[], int *rest,
			 struct sp_diag *diag);

/* SP_ERR_NOT_FOUND naming the first REQUIRED key that is not set, else 0. */
int sp_config_check_required(const struct sp_config *cfg, struct sp_diag *diag);

/*
 * The value of `key` (dashes or underscores). sp_config_get_str works for every type and
 * returns NULL when the key is unknown or not set. The others return 0,
 * SP_ERR_NOT_FOUND (unknown or not set) or SP_ERR_INVALID (the key is of another type);
 * *out is zeroed on failure.
 */
const char *sp_config_get_str(const struct sp_config *cfg, const char *key);
int sp_config_get_int(const struct sp_config *cfg, const char *key, int64_t *out);
int sp_config_get_bool(const struct sp_config *cfg, const char *key, int *out);
int sp_config_get_duration_ms(const struct sp_config *cfg, const char *key, int64_t *out);

/*
 * Where the value of `key` came from: "default", "file PATH line N", "env SALLYPORT_X",
 * "flag --x", or "not set" when no layer sets it. NULL for an unknown key.
 */
const char *sp_config_source(const struct sp_config *cfg, const char *key);
/* The layer that decides `key` (enum sp_config_layer), or SP_ERR_NOT_FOUND. */
int sp_config_layer_of(const struct sp_config *cfg, const char *key);

/*
 * Appends every key in schema order as `name = "value"  # source` (secrets as
 * "[redacted]"; keys not set as ""), which reads back as a config file. With
 * all_layers, each key is followed by comment lines giving every layer that sets it.
 * Returns 0 or the sp_buf error (out then holds a partial dump).
 */
int sp_config_dump(const struct sp_config *cfg, int all_layers, struct sp_buf *out);

/*
 * Appends help for the schema: for each key the flag and its value form, the help text,
 * the environment variable, the default (never a secret's) and bounds or choices.
 */
int sp_config_help(const struct sp_config_key *schema, size_t count, struct sp_buf *out);

/*
 * The value parsers behind DURATION and ADDRESS, for programs and tests. Duration: *ms
 * (0 to INT64_MAX). Address: host without brackets, NUL-terminated, into host (at least
 * SP_CONFIG_HOST_MAX bytes), and the port. SP_ERR_INVALID with a diag saying why.
 */
int sp_config_parse_duration(const char *text, int64_t *ms, struct sp_diag *diag);
int sp_config_parse_address(const char *text, char *host, size_t host_size, uint16_t *port,
			    struct sp_diag *diag);

#endif
