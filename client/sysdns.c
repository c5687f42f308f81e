/*
 * client/sysdns.c — the pure part of system DNS integration (see sysdns.h): resolv.conf
 * parse and render, the stub's upstream list, the marker, the restore decision, the
 * routing domains and resolvectl command lines. No I/O here.
 */
#include "client/sysdns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define MANAGED_LINE "# Managed by Sallyport"

/* ---------- resolv.conf ---------- */

static int is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* The next word of line[*pos..len) into word (size bytes); 0 when there is none. */
static size_t next_word(const char *line, size_t len, size_t *pos, char *word, size_t size)
{
	while (*pos < len && is_blank(line[*pos]))
		(*pos)++;
	size_t start = *pos;
	while (*pos < len && !is_blank(line[*pos]))
		(*pos)++;
	size_t n = *pos - start;
	if (n == 0 || n >= size)
		return n == 0 ? 0 : n;
	memcpy(word, line + start, n);
	word[n] = '\0';
	return n;
}

/* A scope id: an interface name or index (letters, digits, '.', '-', '_'), 1..15 bytes. */
static int valid_scope(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 15)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '-' && s[i] != '_')
			return 0;
	return 1;
}

static int parse_nameserver(const char *text, struct sysdns_nameserver *ns)
{
	memset(ns, 0, sizeof(*ns));
	size_t n = strlen(text);
	if (n >= sizeof(ns->addr))
		return SP_ERR_INVALID;
	unsigned char bin[16];
	if (inet_pton(AF_INET, text, bin) == 1) {
		ns->family = AF_INET;
	} else {
		char host[SYSDNS_ADDR_MAX];
		memcpy(host, text, n + 1);
		char *pct = strchr(host, '%');
		if (pct != NULL) {
			*pct = '\0';
			if (!valid_scope(pct + 1))
				return SP_ERR_INVALID;
			ns->scoped = 1;
		}
		if (inet_pton(AF_INET6, host, bin) != 1)
			return SP_ERR_INVALID;
		ns->family = AF_INET6;
	}
	memcpy(ns->addr, text, n + 1);
	return 0;
}

static void parse_line(const char *line, size_t len, struct sysdns_resolv *out)
{
	if (len == 0)
		return;
	if (line[0] == '#' || line[0] == ';') {
		if (len >= strlen(MANAGED_LINE) &&
		    memcmp(line, MANAGED_LINE, strlen(MANAGED_LINE)) == 0)
			out->managed = 1;
		return;
	}
	size_t pos = 0;
	char key[16], arg[SYSDNS_LINE_MAX];
	size_t kn = next_word(line, len, &pos, key, sizeof(key));
	if (kn == 0)
		return; /* blank */
	if (kn >= sizeof(key)) {
		out->lines_ignored++;
		return;
	}
	if (strcmp(key, "nameserver") == 0) {
		size_t an = next_word(line, len, &pos, arg, sizeof(arg));
		struct sysdns_nameserver ns;
		if (an == 0 || an >= sizeof(arg) || parse_nameserver(arg, &ns) < 0 ||
		    out->ns_count == SYSDNS_NAMESERVERS_MAX) {
			out->ns_ignored++;
			return;
		}
		out->ns[out->ns_count++] = ns;
		return;
	}
	if (strcmp(key, "search") == 0 || strcmp(key, "domain") == 0 ||
	    strcmp(key, "options") == 0 || strcmp(key, "sortlist") == 0) {
		if (out->kept_count == SYSDNS_KEPT_LINES_MAX) {
			out->lines_ignored++;
			return;
		}
		/* kept verbatim but for trailing blanks (and a CR) */
		while (len > 0 && is_blank(line[len - 1]))
			len--;
		memcpy(out->kept[out->kept_count], line, len);
		out->kept[out->kept_count][len] = '\0';
		out->kept_count++;
		return;
	}
	out->lines_ignored++;
}

int sysdns_resolv_parse(const uint8_t *text, size_t len, struct sysdns_resolv *out,
			struct sp_diag *diag)
{
	memset(out, 0, sizeof(*out));
	if (len > SYSDNS_RESOLV_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE,
				   "resolv.conf is %zu bytes, more than the %d accepted", len,
				   SYSDNS_RESOLV_MAX);
	if (len > 0 && memchr(text, '\0', len) != NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "resolv.conf holds a NUL byte");
	size_t start = 0;
	while (start < len) {
		const uint8_t *nl = memchr(text + start, '\n', len - start);
		size_t end = nl != NULL ? (size_t)(nl - text) : len;
		size_t n = end - start;
		if (n >= SYSDNS_LINE_MAX)
			out->lines_ignored++;
		else
			parse_line((const char *)text + start, n, out);
		start = end + 1;
	}
	return 0;
}

int sysdns_upstreams(const struct sysdns_resolv *r, const char *stub_addr, uint16_t stub_port,
		     char *out, size_t size, size_t *dropped)
{
	if (size == 0)
		return SP_ERR_TOO_LARGE;
	out[0] = '\0';
	*dropped = 0;
	unsigned char stub[16];
	int stub_family = 0;
	if (inet_pton(AF_INET, stub_addr, stub) == 1)
		stub_family = AF_INET;
	else if (inet_pton(AF_INET6, stub_addr, stub) == 1)
		stub_family = AF_INET6;
	size_t used = 0, kept = 0;
	for (size_t i = 0; i < r->ns_count; i++) {
		const struct sysdns_nameserver *ns = &r->ns[i];
		if (ns->scoped) {
			(*dropped)++;
			continue;
		}
		unsigned char bin[16];
		if (inet_pton(ns->family, ns->addr, bin) != 1)
			continue;
		/* resolv.conf has no ports: a nameserver is on 53 */
		if (stub_port == 53 && ns->family == stub_family &&
		    memcmp(bin, stub, ns->family == AF_INET ? 4 : 16) == 0)
			continue;
		int w = snprintf(out + used, size - used, "%s%s%s%s:53", kept > 0 ? "," : "",
				 ns->family == AF_INET6 ? "[" : "", ns->addr,
				 ns->family == AF_INET6 ? "]" : "");
		if (w < 0 || (size_t)w >= size - used) {
			out[used] = '\0';
			return SP_ERR_TOO_LARGE;
		}
		used += (size_t)w;
		kept++;
	}
	return kept > 0 ? 0 : SP_ERR_NOT_FOUND;
}

int sysdns_resolv_render(const struct sysdns_resolv *orig, const char *stub_addr,
			 const char *previous, struct sp_buf *out)
{
	int r = sp_buf_printf(out,
			      MANAGED_LINE " while it is up: names go to its DNS stub, which\n"
					   "# forwards what it does not protect to the previous "
					   "nameservers. `sallyport down`\n"
					   "# puts the previous resolv.conf back (%s).\n"
					   "nameserver %s\n",
			      previous, stub_addr);
	for (size_t i = 0; r == 0 && i < orig->kept_count; i++)
		r = sp_buf_printf(out, "%s\n", orig->kept[i]);
	return r;
}

/* ---------- marker ---------- */

static const char *kind_name(enum sysdns_kind k)
{
	return k == SYSDNS_KIND_FILE ? "file" : k == SYSDNS_KIND_SYMLINK ? "symlink" : "absent";
}

int sysdns_marker_render(const struct sysdns_marker *m, struct sp_buf *out)
{
	json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:s}", "pid", (json_int_t)m->pid, "start", "",
			      "path", m->path, "kind", kind_name(m->kind), "written", m->written);
	if (j == NULL)
		return SP_ERR_NOMEM;
	char start[32];
	snprintf(start, sizeof(start), "%" PRIu64, m->start); /* u64: beyond json_int_t */
	json_object_set_new(j, "start", json_string(start));
	if (m->kind == SYSDNS_KIND_FILE) {
		json_object_set_new(j, "mode", json_integer((json_int_t)m->mode));
		json_object_set_new(j, "uid", json_integer((json_int_t)m->uid));
		json_object_set_new(j, "gid", json_integer((json_int_t)m->gid));
	}
	if (m->kind == SYSDNS_KIND_SYMLINK)
		json_object_set_new(j, "target", json_string(m->target));
	char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	if (text == NULL)
		return SP_ERR_NOMEM;
	int r = sp_buf_printf(out, "%s\n", text);
	free(text);
	return r;
}

static int copy_string(json_t *j, const char *key, char *out, size_t size, int required,
		       struct sp_diag *diag)
{
	json_t *v = json_object_get(j, key);
	if (v == NULL && !required) {
		out[0] = '\0';
		return 0;
	}
	const char *s = json_string_value(v);
	if (s == NULL || strlen(s) >= size)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "sysdns marker: \"%s\" is missing or too long", key);
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

int sysdns_marker_parse(const char *text, size_t len, struct sysdns_marker *out,
			struct sp_diag *diag)
{
	memset(out, 0, sizeof(*out));
	if (len > SYSDNS_MARKER_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "sysdns marker is too large");
	json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	int r = SP_ERR_INVALID;
	char start[32], kind[16];
	if (!json_is_object(j)) {
		sp_diag_set(diag, r, "sysdns marker is not a JSON object");
		goto out;
	}
	json_t *pid = json_object_get(j, "pid");
	if (!json_is_integer(pid) || json_integer_value(pid) <= 0) {
		sp_diag_set(diag, r, "sysdns marker: \"pid\" is not a process id");
		goto out;
	}
	out->pid = json_integer_value(pid);
	if ((r = copy_string(j, "start", start, sizeof(start), 1, diag)) < 0 ||
	    (r = copy_string(j, "path", out->path, sizeof(out->path), 1, diag)) < 0 ||
	    (r = copy_string(j, "kind", kind, sizeof(kind), 1, diag)) < 0 ||
	    (r = copy_string(j, "written", out->written, sizeof(out->written), 1, diag)) < 0 ||
	    (r = copy_string(j, "target", out->target, sizeof(out->target), 0, diag)) < 0)
		goto out;
	r = SP_ERR_INVALID;
	char *end = NULL;
	errno = 0;
	out->start = strtoull(start, &end, 10);
	if (start[0] == '\0' || start[0] == '-' || *end != '\0' || errno != 0) {
		sp_diag_set(diag, r, "sysdns marker: \"start\" is not a number");
		goto out;
	}
	if (out->path[0] != '/') {
		sp_diag_set(diag, r, "sysdns marker: \"path\" is not absolute");
		goto out;
	}
	if (strlen(out->written) != SYSDNS_SHA256_HEX - 1) {
		sp_diag_set(diag, r, "sysdns marker: \"written\" is not a SHA-256");
		goto out;
	}
	if (strcmp(kind, "file") == 0) {
		out->kind = SYSDNS_KIND_FILE;
		json_t *mode = json_object_get(j, "mode"), *uid = json_object_get(j, "uid"),
		       *gid = json_object_get(j, "gid");
		if (!json_is_integer(mode) || json_integer_value(mode) < 0 ||
		    json_integer_value(mode) > 07777 || !json_is_integer(uid) ||
		    !json_is_integer(gid)) {
			sp_diag_set(diag, r, "sysdns marker: a file needs mode, uid and gid");
			goto out;
		}
		out->mode = (uint32_t)json_integer_value(mode);
		out->uid = json_integer_value(uid);
		out->gid = json_integer_value(gid);
	} else if (strcmp(kind, "symlink") == 0) {
		out->kind = SYSDNS_KIND_SYMLINK;
		if (out->target[0] == '\0') {
			sp_diag_set(diag, r, "sysdns marker: a symlink needs its target");
			goto out;
		}
	} else if (strcmp(kind, "absent") == 0) {
		out->kind = SYSDNS_KIND_ABSENT;
	} else {
		sp_diag_set(diag, r, "sysdns marker: unknown \"kind\"");
		goto out;
	}
	r = 0;
out:
	json_decref(j);
	if (r < 0)
		memset(out, 0, sizeof(*out));
	return r;
}

int sysdns_proc_start(const char *stat_text, size_t len, uint64_t *start)
{
	*start = 0;
	/* "PID (COMM) S ..." and COMM may hold ')' or spaces: fields count from the last ')' */
	size_t close = len;
	for (size_t i = len; i-- > 0;)
		if (stat_text[i] == ')') {
			close = i;
			break;
		}
	if (close == len)
		return SP_ERR_INVALID;
	/* field 3 (state) follows ") "; the start time is field 22 */
	int field = 2;
	size_t i = close + 1;
	while (i < len) {
		while (i < len && stat_text[i] == ' ')
			i++;
		if (i >= len)
			break;
		field++;
		if (field == 22) {
			uint64_t v = 0;
			size_t digits = 0;
			while (i < len && stat_text[i] >= '0' && stat_text[i] <= '9') {
				uint64_t d = (uint64_t)(stat_text[i] - '0');
				if (v > (UINT64_MAX - d) / 10)
					return SP_ERR_INVALID;
				v = v * 10 + d;
				i++;
				digits++;
			}
			if (digits == 0)
				return SP_ERR_INVALID;
			*start = v;
			return 0;
		}
		while (i < len && stat_text[i] != ' ')
			i++;
	}
	return SP_ERR_INVALID;
}

int sysdns_owner_alive(const struct sysdns_marker *m, int pid_exists, uint64_t observed_start)
{
	if (!pid_exists)
		return 0;
	if (m->start != 0 && observed_start != 0 && m->start != observed_start)
		return 0; /* the pid now belongs to another process */
	return 1;
}

enum sysdns_restore_action sysdns_decide_restore(const struct sysdns_marker *m,
						 const struct sysdns_current *cur)
{
	if (cur->kind != SYSDNS_KIND_FILE)
		return SYSDNS_KEEP;
	if (strlen(cur->sha256) != SYSDNS_SHA256_HEX - 1 || strcmp(cur->sha256, m->written) != 0)
		return SYSDNS_KEEP;
	return SYSDNS_RESTORE;
}

/* ---------- systemd-resolved ---------- */

static int add_domain(char (*out)[SYSDNS_DOMAIN_MAX + 1], size_t cap, size_t *count,
		      const char *name, size_t len)
{
	while (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > SYSDNS_DOMAIN_MAX)
		return 0;
	char low[SYSDNS_DOMAIN_MAX + 1];
	for (size_t i = 0; i < len; i++)
		low[i] = (char)tolower((unsigned char)name[i]);
	low[len] = '\0';
	for (size_t i = 0; i < *count; i++)
		if (strcmp(out[i], low) == 0)
			return 0;
	if (*count == cap)
		return SP_ERR_TOO_LARGE;
	memcpy(out[*count], low, len + 1);
	(*count)++;
	return 0;
}

int sysdns_routing_domains(const struct sp_resource *res, size_t n,
			   char (*out)[SYSDNS_DOMAIN_MAX + 1], size_t cap, size_t *count)
{
	*count = 0;
	int r = 0;
	for (size_t i = 0; i < n; i++) {
		const struct sp_resource_address *a = &res[i].address;
		int e = 0;
		if (a->kind == SP_RESOURCE_ADDRESS_NAME && a->name != NULL) {
			e = add_domain(out, cap, count, a->name, a->name_len);
		} else if (a->kind == SP_RESOURCE_ADDRESS_PATTERN && a->name != NULL) {
			/* the labels after the last one holding a wildcard */
			const char *suffix = NULL;
			for (size_t k = 0; k < a->name_len; k++)
				if (a->name[k] == '*' || a->name[k] == '?') {
					const char *dot = memchr(a->name + k, '.', a->name_len - k);
					suffix = dot != NULL ? dot + 1 : a->name + a->name_len;
				}
			if (suffix != NULL)
				e = add_domain(out, cap, count, suffix,
					       a->name_len - (size_t)(suffix - a->name));
		}
		if (e == 0 && res[i].alias != NULL)
			e = add_domain(out, cap, count, res[i].alias, res[i].alias_len);
		if (e < 0)
			r = e;
	}
	return r;
}

/* Appends one argument to cmd; SP_ERR_TOO_LARGE when out of room. */
static int cmd_add(struct sysdns_command *cmd, size_t *argc, size_t *used, const char *prefix,
		   const char *arg)
{
	size_t room = sizeof(cmd->storage) - *used;
	int w = snprintf(cmd->storage + *used, room, "%s%s", prefix, arg);
	if (w < 0 || (size_t)w >= room || *argc + 1 >= SYSDNS_ARGV_MAX)
		return SP_ERR_TOO_LARGE;
	cmd->argv[(*argc)++] = cmd->storage + *used;
	cmd->argv[*argc] = NULL;
	*used += (size_t)w + 1;
	return 0;
}

static int cmd_start(struct sysdns_command *cmd, size_t *argc, size_t *used, const char *verb,
		     const char *link)
{
	memset(cmd, 0, sizeof(*cmd));
	*argc = *used = 0;
	if (link == NULL || link[0] == '\0' || link[0] == '-')
		return SP_ERR_INVALID;
	int r = cmd_add(cmd, argc, used, "", "resolvectl");
	if (r == 0)
		r = cmd_add(cmd, argc, used, "", verb);
	if (r == 0)
		r = cmd_add(cmd, argc, used, "", link);
	return r;
}

int sysdns_resolved_dns_command(const char *link, const char *stub_addr, uint16_t stub_port,
				struct sysdns_command *cmd)
{
	size_t argc, used;
	int r = cmd_start(cmd, &argc, &used, "dns", link);
	if (r < 0)
		return r;
	unsigned char bin[16];
	char text[SYSDNS_ADDR_MAX + 16];
	int v6 = inet_pton(AF_INET6, stub_addr, bin) == 1;
	if (!v6 && inet_pton(AF_INET, stub_addr, bin) != 1)
		return SP_ERR_INVALID;
	if (stub_port == 53)
		snprintf(text, sizeof(text), "%s", stub_addr);
	else
		snprintf(text, sizeof(text), v6 ? "[%s]:%u" : "%s:%u", stub_addr, stub_port);
	return cmd_add(cmd, &argc, &used, "", text);
}

int sysdns_resolved_domain_command(const char *link, char (*domains)[SYSDNS_DOMAIN_MAX + 1],
				   size_t n, struct sysdns_command *cmd)
{
	size_t argc, used;
	int r = cmd_start(cmd, &argc, &used, "domain", link);
	for (size_t i = 0; r == 0 && i < n; i++)
		r = cmd_add(cmd, &argc, &used, "~", domains[i]);
	/* resolvectl domain LINK "" clears the list: the empty argument says so */
	if (r == 0 && n == 0)
		r = cmd_add(cmd, &argc, &used, "", "");
	return r;
}

int sysdns_resolved_default_route_command(const char *link, struct sysdns_command *cmd)
{
	size_t argc, used;
	int r = cmd_start(cmd, &argc, &used, "default-route", link);
	return r == 0 ? cmd_add(cmd, &argc, &used, "", "false") : r;
}

int sysdns_resolved_revert_command(const char *link, struct sysdns_command *cmd)
{
	size_t argc, used;
	return cmd_start(cmd, &argc, &used, "revert", link);
}
