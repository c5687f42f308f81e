/*
 * connector/privdrop.c — giving up root after start-up (see privdrop.h).
 */
#include "connector/privdrop.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int connector_privdrop_decide(uid_t euid, const char *user, int allow_root,
			      enum connector_privdrop_action *out, struct sp_diag *diag)
{
	*out = CONNECTOR_PRIVDROP_NONE;
	if (euid != 0)
		return 0;
	if (user != NULL && user[0] != '\0') {
		*out = CONNECTOR_PRIVDROP_SWITCH;
		return 0;
	}
	if (allow_root) {
		*out = CONNECTOR_PRIVDROP_STAY_ROOT;
		return 0;
	}
	return sp_diag_set(diag, SP_ERR_INVALID,
			   "started as root without SALLYPORT_USER: set SALLYPORT_USER to an "
			   "unprivileged user to run as after start-up (the state dir is handed to "
			   "it), or SALLYPORT_ALLOW_ROOT=true to keep running as root");
}

/* ---------- /proc/<pid>/status ---------- */

static int parse_decimal(const char **p, const char *end, uint64_t *out)
{
	const char *s = *p;
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	uint64_t v = 0;
	const char *start = s;
	while (s < end && *s >= '0' && *s <= '9') {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
		s++;
	}
	if (s == start)
		return -1;
	*p = s;
	*out = v;
	return 0;
}

static int parse_hex(const char *s, const char *end, uint64_t *out)
{
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	uint64_t v = 0;
	size_t n = 0;
	for (; s < end; s++, n++) {
		int x = *s >= '0' && *s <= '9'   ? *s - '0'
			: *s >= 'a' && *s <= 'f' ? *s - 'a' + 10
			: *s >= 'A' && *s <= 'F' ? *s - 'A' + 10
						 : -1;
		if (x < 0 || n == 16)
			return -1;
		v = v << 4 | (uint64_t)x;
	}
	if (n == 0)
		return -1;
	*out = v;
	return 0;
}

static int parse_ids(const char *s, const char *end, uint64_t ids[4])
{
	for (int i = 0; i < 4; i++)
		if (parse_decimal(&s, end, &ids[i]) < 0)
			return -1;
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	return s == end ? 0 : -1;
}

int connector_proc_status_parse(const char *text, size_t len, struct connector_proc_status *out)
{
	memset(out, 0, sizeof(*out));
	static const char *const names[] = {"Uid",    "Gid",    "CapInh", "CapPrm",
					    "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"};
	uint64_t *hex_targets[] = {NULL,	  NULL,		&out->cap_inh, &out->cap_prm,
				   &out->cap_eff, &out->cap_bnd, &out->cap_amb, NULL};
	const char *p = text, *end = text + len;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			eol = end;
		const char *colon = memchr(p, ':', (size_t)(eol - p));
		if (colon != NULL) {
			size_t nlen = (size_t)(colon - p);
			for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
				if (strlen(names[i]) != nlen || memcmp(p, names[i], nlen) != 0)
					continue;
				const char *v = colon + 1;
				int bad;
				if (i == 0)
					bad = parse_ids(v, eol, out->uid);
				else if (i == 1)
					bad = parse_ids(v, eol, out->gid);
				else if (i == 7) {
					uint64_t nnp = 0;
					bad = parse_decimal(&v, eol, &nnp) < 0 || nnp > 1;
					out->no_new_privs = (int)nnp;
				} else
					bad = parse_hex(v, eol, hex_targets[i]);
				if (bad || (out->seen & (1u << i)) != 0)
					return SP_ERR_INVALID;
				out->seen |= 1u << i;
			}
		}
		p = eol < end ? eol + 1 : end;
	}
	return out->seen == CONNECTOR_PROC_STATUS_ALL ? 0 : SP_ERR_INVALID;
}

int connector_privdrop_check(const struct connector_proc_status *st, uid_t uid, gid_t gid,
			     struct sp_diag *diag)
{
	for (int i = 0; i < 4; i++) {
		if (st->uid[i] != (uint64_t)uid)
			return sp_diag_set(diag, SP_ERR_PERMISSION,
					   "privilege drop: uid slot %d is %llu, not %llu", i,
					   (unsigned long long)st->uid[i], (unsigned long long)uid);
		if (st->gid[i] != (uint64_t)gid)
			return sp_diag_set(diag, SP_ERR_PERMISSION,
					   "privilege drop: gid slot %d is %llu, not %llu", i,
					   (unsigned long long)st->gid[i], (unsigned long long)gid);
	}
	const struct {
		const char *name;
		uint64_t v;
	} caps[] = {{"CapInh", st->cap_inh}, {"CapPrm", st->cap_prm}, {"CapEff", st->cap_eff},
		    {"CapBnd", st->cap_bnd}, {"CapAmb", st->cap_amb}};
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
		if (caps[i].v != 0)
			return sp_diag_set(diag, SP_ERR_PERMISSION,
					   "privilege drop: %s is %016llx, not empty", caps[i].name,
					   (unsigned long long)caps[i].v);
	if (!st->no_new_privs)
		return sp_diag_set(diag, SP_ERR_PERMISSION, "privilege drop: no_new_privs is off");
	return 0;
}

/* ---------- system calls ---------- */

int connector_privdrop_lookup(const char *user, uid_t *uid, gid_t *gid, struct sp_diag *diag)
{
	*uid = 0;
	*gid = 0;
	struct passwd pw, *found = NULL;
	char buf[4096];
	int e = getpwnam_r(user, &pw, buf, sizeof(buf), &found);
	if (e != 0)
		return sp_diag_set(diag, SP_ERR_IO, "SALLYPORT_USER %s: %s", user, strerror(e));
	if (found == NULL)
		return sp_diag_set(diag, SP_ERR_NOT_FOUND, "SALLYPORT_USER %s: no such user", user);
	if (pw.pw_uid == 0 || pw.pw_gid == 0)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "SALLYPORT_USER %s has uid or gid 0: name an unprivileged user",
				   user);
	*uid = pw.pw_uid;
	*gid = pw.pw_gid;
	return 0;
}

int connector_privdrop_chown_state(const char *dir, uid_t uid, gid_t gid, struct sp_diag *diag)
{
	int r = SP_ERR_IO;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd == -1)
		return sp_diag_set(diag, SP_ERR_IO, "state dir %s: %s", dir, strerror(errno));
	if (fchown(dfd, uid, gid) == -1) {
		sp_diag_set(diag, SP_ERR_IO, "cannot hand state dir %s to the user: %s", dir,
			    strerror(errno));
		goto out;
	}
	static const char *const files[] = {"connector.key", "identity.json"};
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		if (fchownat(dfd, files[i], uid, gid, AT_SYMLINK_NOFOLLOW) == -1 &&
		    errno != ENOENT) {
			sp_diag_set(diag, SP_ERR_IO, "cannot hand %s/%s to the user: %s", dir,
				    files[i], strerror(errno));
			goto out;
		}
	}
	r = 0;
out:
	close(dfd);
	return r;
}

int connector_privdrop_no_new_privs(struct sp_diag *diag)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1)
		return sp_diag_set(diag, SP_ERR_IO, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	return 0;
}

static int read_own_status(struct connector_proc_status *st, struct sp_diag *diag)
{
	char text[8192];
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return sp_diag_set(diag, SP_ERR_IO, "/proc/self/status: %s", strerror(errno));
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, text + len, sizeof(text) - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == sizeof(text))
			break;
	}
	close(fd);
	if (connector_proc_status_parse(text, len, st) < 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "/proc/self/status: unreadable");
	return 0;
}

int connector_privdrop_apply(uid_t uid, gid_t gid, struct sp_diag *diag)
{
	if (uid == 0 || gid == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "privilege drop: refusing uid/gid 0");
	/* the bounding set can only be emptied while CAP_SETPCAP is still ours */
	for (int cap = 0; cap < 64; cap++) {
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1) {
			if (errno == EINVAL)
				break; /* past the kernel's last capability */
			return sp_diag_set(diag, SP_ERR_IO, "privilege drop: PR_CAPBSET_DROP %d: %s",
					   cap, strerror(errno));
		}
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1 && errno != EINVAL)
		return sp_diag_set(diag, SP_ERR_IO, "privilege drop: clearing ambient: %s",
				   strerror(errno));
	if (setgroups(0, NULL) == -1)
		return sp_diag_set(diag, SP_ERR_IO, "privilege drop: setgroups: %s", strerror(errno));
	if (setresgid(gid, gid, gid) == -1)
		return sp_diag_set(diag, SP_ERR_IO, "privilege drop: setresgid: %s", strerror(errno));
	if (setresuid(uid, uid, uid) == -1)
		return sp_diag_set(diag, SP_ERR_IO, "privilege drop: setresuid: %s", strerror(errno));
	/* leaving uid 0 cleared permitted, effective and ambient; inheritable goes too */
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) == -1)
		return sp_diag_set(diag, SP_ERR_IO, "privilege drop: capset: %s", strerror(errno));
	int r = connector_privdrop_no_new_privs(diag);
	if (r < 0)
		return r;
	/* the way back must be closed */
	if (setuid(0) != -1 || setgid(0) != -1 || seteuid(0) != -1)
		return sp_diag_set(diag, SP_ERR_PERMISSION,
				   "privilege drop: root could be regained after the switch");
	struct connector_proc_status st;
	r = read_own_status(&st, diag);
	if (r < 0)
		return r;
	return connector_privdrop_check(&st, uid, gid, diag);
}
