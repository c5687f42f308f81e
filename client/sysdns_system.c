/*
 * client/sysdns_system.c — the I/O half of system DNS integration (see sysdns.h): reads
 * and replaces resolv.conf, keeps the saved copy and the marker in the state directory,
 * runs resolvectl. Decisions come from client/sysdns.c.
 *
 * Files in the state directory (0600): resolv.conf.saved (the original bytes, when the
 * original was a regular file) and sysdns.json (the marker). The marker is written
 * before resolv.conf is replaced, so a crash at any point leaves something the next
 * `up` or `down` can act on: when resolv.conf is not (yet, or any more) the file we
 * wrote, it is left alone and only our files go.
 */
#include "client/sysdns.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "client/state.h"
#include "shared/log.h"
#include "shared/secret.h"

extern char **environ;

#define SAVED_NAME "resolv.conf.saved"
#define MARKER_NAME "sysdns.json"
#define RESOLVED_DIR "/run/systemd/resolve"
#define RESOLVED_UPSTREAMS "/run/systemd/resolve/resolv.conf"

enum sysdns_mode { SYSDNS_MODE_RESOLV_CONF = 1, SYSDNS_MODE_RESOLVED };

struct sysdns {
	enum sysdns_mode mode;
	char state_dir[STATE_PATH_MAX];
	char path[1024]; /* resolv.conf */
	char stub_addr[SYSDNS_ADDR_MAX];
	uint16_t stub_port;
	char link[64];
	struct sysdns_resolv orig;
	struct sp_buf orig_bytes; /* the original file's bytes (FILE) */
	struct sysdns_marker marker;
	char upstreams[SYSDNS_NAMESERVERS_MAX * (SYSDNS_ADDR_MAX + 8)];
	int applied;
	char (*domains)[SYSDNS_DOMAIN_MAX + 1]; /* resolved mode: the ones set on the link */
	size_t domain_count;
};

static const char *resolv_path(void)
{
	const char *p = getenv(SYSDNS_RESOLV_CONF_ENV);
	return p != NULL && p[0] == '/' ? p : SYSDNS_RESOLV_CONF;
}

static void sha256_hex(const uint8_t *bytes, size_t len, char out[SYSDNS_SHA256_HEX])
{
	uint8_t md[32];
	unsigned mdlen = 0;
	if (EVP_Digest(bytes, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
		out[0] = '\0';
		return;
	}
	sp_hex_encode(md, 32, out);
}

/* Reads at most max bytes of path (following links) into buf. SP_ERR_NOT_FOUND: absent. */
static int read_file(const char *path, size_t max, struct sp_buf *buf, struct sp_diag *diag)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return errno == ENOENT
			   ? SP_ERR_NOT_FOUND
			   : sp_diag_set(diag, SP_ERR_IO, "%s: %s", path, strerror(errno));
	int r = 0;
	uint8_t chunk[4096];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			r = sp_diag_set(diag, SP_ERR_IO, "%s: %s", path, strerror(errno));
			break;
		}
		if (n == 0)
			break;
		if (buf->len + (size_t)n > max) {
			r = sp_diag_set(diag, SP_ERR_TOO_LARGE, "%s is larger than %zu bytes", path,
					max);
			break;
		}
		if (sp_buf_put(buf, chunk, (size_t)n) < 0) {
			r = SP_ERR_NOMEM;
			break;
		}
	}
	close(fd);
	return r;
}

/* Writes bytes to a new file made next to path, then renames it over path. */
static int write_replace(const char *path, const void *bytes, size_t len, mode_t mode, int chown_to,
			 uid_t uid, gid_t gid, struct sp_diag *diag)
{
	char tmp[1100];
	int w = snprintf(tmp, sizeof(tmp), "%s.sallyport-XXXXXX", path);
	if (w < 0 || (size_t)w >= sizeof(tmp))
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "path too long: %s", path);
	int fd = mkstemp(tmp);
	if (fd == -1)
		return sp_diag_set(diag, SP_ERR_IO, "cannot create a file next to %s: %s", path,
				   strerror(errno));
	int r = 0;
	const uint8_t *p = bytes;
	size_t left = len;
	while (left > 0 && r == 0) {
		ssize_t n = write(fd, p, left);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			r = sp_diag_set(diag, SP_ERR_IO, "write %s: %s", tmp, strerror(errno));
		else {
			p += n;
			left -= (size_t)n;
		}
	}
	if (r == 0 && fchmod(fd, mode) == -1)
		r = sp_diag_set(diag, SP_ERR_IO, "chmod %s: %s", tmp, strerror(errno));
	if (r == 0 && chown_to && fchown(fd, uid, gid) == -1)
		r = sp_diag_set(diag, SP_ERR_IO, "chown %s: %s", tmp, strerror(errno));
	if (r == 0 && fsync(fd) == -1)
		r = sp_diag_set(diag, SP_ERR_IO, "fsync %s: %s", tmp, strerror(errno));
	if (close(fd) == -1 && r == 0)
		r = sp_diag_set(diag, SP_ERR_IO, "close %s: %s", tmp, strerror(errno));
	if (r == 0 && rename(tmp, path) == -1) {
		int e = errno;
		if (e == EBUSY) {
			/*
			 * path is a mount point (a container's or `ip netns exec`'s bind-mounted
			 * resolv.conf): it cannot be replaced, only rewritten in place.
			 */
			int out = open(path, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
			if (out == -1)
				r = sp_diag_set(diag, SP_ERR_IO, "%s: %s", path, strerror(errno));
			p = bytes;
			left = len;
			while (out != -1 && left > 0 && r == 0) {
				ssize_t n = write(out, p, left);
				if (n == -1 && errno == EINTR)
					continue;
				if (n == -1)
					r = sp_diag_set(diag, SP_ERR_IO, "write %s: %s", path,
							strerror(errno));
				else {
					p += n;
					left -= (size_t)n;
				}
			}
			if (out != -1)
				close(out);
			if (r == 0)
				SP_LOG(SP_LOG_INFO,
				       "resolv.conf is a mount point: rewritten in place",
				       SP_LOG_STR("path", path));
		} else {
			r = sp_diag_set(diag, SP_ERR_IO, "rename %s: %s", path, strerror(e));
		}
	}
	(void)unlink(tmp); /* gone after a good rename */
	return r;
}

/* Puts a symbolic link to target at path, replacing what is there, atomically. */
static int symlink_replace(const char *path, const char *target, struct sp_diag *diag)
{
	char tmp[1100];
	char rnd[17];
	if (sp_random_hex(8, rnd, sizeof(rnd)) < 0)
		return SP_ERR_CRYPTO;
	int w = snprintf(tmp, sizeof(tmp), "%s.sallyport-%s", path, rnd);
	if (w < 0 || (size_t)w >= sizeof(tmp))
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "path too long: %s", path);
	if (symlink(target, tmp) == -1)
		return sp_diag_set(diag, SP_ERR_IO, "symlink %s: %s", tmp, strerror(errno));
	if (rename(tmp, path) == -1) {
		int e = errno;
		(void)unlink(tmp);
		return sp_diag_set(diag, SP_ERR_IO, "rename %s: %s", path, strerror(e));
	}
	return 0;
}

/* What path is now (never following a link). */
static int current_of(const char *path, struct sysdns_current *cur, struct sp_diag *diag)
{
	memset(cur, 0, sizeof(*cur));
	struct stat st;
	if (lstat(path, &st) == -1) {
		if (errno != ENOENT)
			return sp_diag_set(diag, SP_ERR_IO, "%s: %s", path, strerror(errno));
		cur->kind = SYSDNS_KIND_ABSENT;
		return 0;
	}
	if (S_ISLNK(st.st_mode)) {
		cur->kind = SYSDNS_KIND_SYMLINK;
		return 0;
	}
	cur->kind = SYSDNS_KIND_FILE;
	struct sp_buf b;
	sp_buf_init(&b, SYSDNS_RESOLV_MAX);
	if (read_file(path, SYSDNS_RESOLV_MAX, &b, NULL) == 0)
		sha256_hex(b.data != NULL ? b.data : (const uint8_t *)"", b.len, cur->sha256);
	sp_buf_free(&b);
	return 0;
}

static int state_file(const char *dir, const char *name, char *out, size_t size,
		      struct sp_diag *diag)
{
	if (state_path(dir, name, out, size) < 0)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "state directory path too long");
	return 0;
}

/* Writes a 0600 file in the state directory (temp + rename). */
static int state_write(const char *dir, const char *name, const void *bytes, size_t len,
		       struct sp_diag *diag)
{
	char path[STATE_PATH_MAX];
	int r = state_file(dir, name, path, sizeof(path), diag);
	return r < 0 ? r : write_replace(path, bytes, len, 0600, 0, 0, 0, diag);
}

static void state_remove(const char *dir)
{
	char path[STATE_PATH_MAX];
	if (state_path(dir, SAVED_NAME, path, sizeof(path)) == 0)
		(void)unlink(path);
	if (state_path(dir, MARKER_NAME, path, sizeof(path)) == 0)
		(void)unlink(path);
}

static uint64_t process_start(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	struct sp_buf b;
	sp_buf_init(&b, 8192);
	uint64_t start = 0;
	if (read_file(path, 8192, &b, NULL) == 0 && b.len > 0)
		(void)sysdns_proc_start((const char *)b.data, b.len, &start);
	sp_buf_free(&b);
	return start;
}

/* Puts back what the marker describes when resolv.conf is still ours; removes our files. */
static int restore_marker(const char *dir, const struct sysdns_marker *m, const char *why,
			  struct sp_diag *diag)
{
	struct sysdns_current cur;
	int r = current_of(m->path, &cur, diag);
	if (r < 0)
		return r;
	if (sysdns_decide_restore(m, &cur) == SYSDNS_KEEP) {
		SP_LOG(SP_LOG_WARN, "resolv.conf was changed by someone else: kept as it is",
		       SP_LOG_STR("path", m->path), SP_LOG_STR("when", why));
		state_remove(dir);
		return 0;
	}
	if (m->kind == SYSDNS_KIND_FILE) {
		char saved[STATE_PATH_MAX];
		struct sp_buf b;
		sp_buf_init(&b, SYSDNS_RESOLV_MAX);
		r = state_file(dir, SAVED_NAME, saved, sizeof(saved), diag);
		if (r == 0)
			r = read_file(saved, SYSDNS_RESOLV_MAX, &b, diag);
		if (r == SP_ERR_NOT_FOUND)
			r = sp_diag_set(diag, r, "the saved resolv.conf (%s) is missing", saved);
		if (r == 0)
			r = write_replace(m->path, b.data != NULL ? b.data : (const uint8_t *)"",
					  b.len, (mode_t)m->mode, geteuid() == 0, (uid_t)m->uid,
					  (gid_t)m->gid, diag);
		sp_buf_free(&b);
	} else if (m->kind == SYSDNS_KIND_SYMLINK) {
		r = symlink_replace(m->path, m->target, diag);
	} else if (unlink(m->path) == -1 && errno != ENOENT) {
		r = sp_diag_set(diag, SP_ERR_IO, "unlink %s: %s", m->path, strerror(errno));
	}
	if (r < 0)
		return r; /* our files stay: they are what a person needs to repair it */
	state_remove(dir);
	SP_LOG(SP_LOG_INFO, "resolv.conf restored", SP_LOG_STR("path", m->path),
	       SP_LOG_STR("when", why));
	return 0;
}

int sysdns_recover(const char *state_dir, int *restored, struct sp_diag *diag)
{
	*restored = 0;
	char path[STATE_PATH_MAX];
	int r = state_file(state_dir, MARKER_NAME, path, sizeof(path), diag);
	if (r < 0)
		return r;
	struct sp_buf b;
	sp_buf_init(&b, SYSDNS_MARKER_MAX);
	struct sysdns_marker m;
	r = read_file(path, SYSDNS_MARKER_MAX, &b, diag);
	if (r == SP_ERR_NOT_FOUND) {
		r = 0;
		goto out;
	}
	if (r < 0)
		goto out;
	r = sysdns_marker_parse(b.data != NULL ? (const char *)b.data : "", b.len, &m, diag);
	if (r < 0)
		goto out;
	int exists = kill((pid_t)m.pid, 0) == 0 || errno == EPERM;
	if (sysdns_owner_alive(&m, exists, exists ? process_start((pid_t)m.pid) : 0)) {
		r = sp_diag_set(diag, SP_ERR_EXISTS, "system DNS is managed by process %lld",
				(long long)m.pid);
		goto out;
	}
	SP_LOG(SP_LOG_WARN, "a sallyport daemon stopped without restoring resolv.conf",
	       SP_LOG_INT("pid", m.pid), SP_LOG_STR("path", m.path));
	r = restore_marker(state_dir, &m, "recovery after a crash", diag);
	if (r == 0)
		*restored = 1;
out:
	sp_buf_free(&b);
	return r;
}

/* Runs a command and waits; 0 when it exited 0. */
static int run_command(const struct sysdns_command *cmd, struct sp_diag *diag)
{
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	pid_t pid;
	int e = posix_spawnp(&pid, cmd->argv[0], &fa, NULL, cmd->argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (e != 0)
		return sp_diag_set(diag, SP_ERR_IO, "%s: %s", cmd->argv[0], strerror(e));
	int status = 0;
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return sp_diag_set(diag, SP_ERR_IO, "waitpid: %s", strerror(errno));
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return sp_diag_set(diag, SP_ERR_IO, "`%s %s %s` failed (status %d)", cmd->argv[0],
				   cmd->argv[1], cmd->argv[2], status);
	return 0;
}

static int resolved_running(void)
{
	struct stat st;
	if (stat(RESOLVED_DIR, &st) == -1 || !S_ISDIR(st.st_mode))
		return 0;
	struct sysdns_command *cmd = calloc(1, sizeof(*cmd));
	if (cmd == NULL)
		return 0;
	cmd->argv[0] = "resolvectl";
	cmd->argv[1] = "status";
	cmd->argv[2] = NULL;
	int ok = run_command(cmd, NULL) == 0;
	free(cmd);
	return ok;
}

/* Reads and parses resolv.conf at path into s (original bytes kept for FILE). */
static int read_original(struct sysdns *s, const char *path, struct sp_diag *diag)
{
	struct stat st;
	memset(&s->marker, 0, sizeof(s->marker));
	if (lstat(path, &st) == -1) {
		if (errno != ENOENT)
			return sp_diag_set(diag, SP_ERR_IO, "%s: %s", path, strerror(errno));
		s->marker.kind = SYSDNS_KIND_ABSENT;
	} else if (S_ISLNK(st.st_mode)) {
		s->marker.kind = SYSDNS_KIND_SYMLINK;
		ssize_t n = readlink(path, s->marker.target, sizeof(s->marker.target) - 1);
		if (n == -1 || (size_t)n >= sizeof(s->marker.target) - 1)
			return sp_diag_set(diag, SP_ERR_IO, "readlink %s failed", path);
		s->marker.target[n] = '\0';
	} else if (S_ISREG(st.st_mode)) {
		s->marker.kind = SYSDNS_KIND_FILE;
		s->marker.mode = (uint32_t)(st.st_mode & 07777);
		s->marker.uid = (int64_t)st.st_uid;
		s->marker.gid = (int64_t)st.st_gid;
	} else {
		return sp_diag_set(diag, SP_ERR_INVALID, "%s is not a file", path);
	}
	sp_buf_free(&s->orig_bytes);
	sp_buf_init(&s->orig_bytes, SYSDNS_RESOLV_MAX);
	int r = 0;
	if (s->marker.kind != SYSDNS_KIND_ABSENT) {
		/* a link is read through (a dangling one reads as empty) */
		r = read_file(path, SYSDNS_RESOLV_MAX, &s->orig_bytes, diag);
		if (r == SP_ERR_NOT_FOUND)
			r = 0;
	}
	if (r == 0)
		r = sysdns_resolv_parse(s->orig_bytes.data != NULL ? s->orig_bytes.data
								   : (const uint8_t *)"",
					s->orig_bytes.len, &s->orig, diag);
	return r;
}

int sysdns_prepare(const struct sysdns_options *o, struct sysdns **out, struct sp_diag *diag)
{
	*out = NULL;
	int restored = 0;
	int r = sysdns_recover(o->state_dir, &restored, diag);
	if (r < 0)
		return r;
	struct sysdns *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return SP_ERR_NOMEM;
	sp_buf_init(&s->orig_bytes, SYSDNS_RESOLV_MAX);
	snprintf(s->state_dir, sizeof(s->state_dir), "%s", o->state_dir);
	snprintf(s->path, sizeof(s->path), "%s", resolv_path());
	snprintf(s->stub_addr, sizeof(s->stub_addr), "%s", o->stub_addr);
	s->stub_port = o->stub_port;
	s->mode = SYSDNS_MODE_RESOLV_CONF;
	int resolved = resolved_running();
	if (resolved && o->link != NULL && o->link[0] != '\0') {
		s->mode = SYSDNS_MODE_RESOLVED;
		snprintf(s->link, sizeof(s->link), "%s", o->link);
	} else if (resolved) {
		SP_LOG(SP_LOG_INFO,
		       "systemd-resolved is running, but this mode has no network link to give it "
		       "a DNS server for: rewriting resolv.conf instead",
		       SP_LOG_STR("path", s->path));
	}
	if (s->mode == SYSDNS_MODE_RESOLVED) {
		/* the stub forwards what it gets to resolved's own upstreams, not to resolved */
		struct sysdns_resolv *up = calloc(1, sizeof(*up));
		struct sp_buf b;
		sp_buf_init(&b, SYSDNS_RESOLV_MAX);
		r = up == NULL ? SP_ERR_NOMEM
			       : read_file(RESOLVED_UPSTREAMS, SYSDNS_RESOLV_MAX, &b, diag);
		if (r == 0)
			r = sysdns_resolv_parse(b.data != NULL ? b.data : (const uint8_t *)"",
						b.len, up, diag);
		size_t dropped = 0;
		if (r == 0 && sysdns_upstreams(up, s->stub_addr, s->stub_port, s->upstreams,
					       sizeof(s->upstreams), &dropped) < 0)
			s->upstreams[0] = '\0';
		if (r == SP_ERR_NOT_FOUND)
			r = 0;
		sp_buf_free(&b);
		free(up);
	} else {
		if (s->stub_port != 53) {
			r = sp_diag_set(
			    diag, SP_ERR_INVALID,
			    "resolv.conf cannot name a port: the DNS stub must listen on "
			    "port 53 for system DNS (or use --no-system-dns)");
			goto out;
		}
		r = read_original(s, s->path, diag);
		if (r < 0)
			goto out;
		if (s->orig.managed)
			SP_LOG(SP_LOG_WARN,
			       "resolv.conf is already managed by Sallyport and no "
			       "saved copy is known: its nameservers are not used",
			       SP_LOG_STR("path", s->path));
		size_t dropped = 0;
		if (sysdns_upstreams(&s->orig, s->stub_addr, s->stub_port, s->upstreams,
				     sizeof(s->upstreams), &dropped) < 0)
			s->upstreams[0] = '\0';
		if (dropped > 0)
			SP_LOG(SP_LOG_WARN, "nameservers with a scope id are not forwarded to",
			       SP_LOG_UINT("count", dropped));
	}
out:
	if (r < 0) {
		sp_buf_free(&s->orig_bytes);
		free(s);
		return r;
	}
	*out = s;
	return 0;
}

const char *sysdns_upstreams_text(const struct sysdns *s)
{
	return s->upstreams;
}

const char *sysdns_mode_name(const struct sysdns *s)
{
	return s->mode == SYSDNS_MODE_RESOLVED ? "systemd-resolved" : "resolv.conf";
}

static int apply_resolved(struct sysdns *s, struct sp_diag *diag)
{
	struct sysdns_command *cmd = calloc(1, sizeof(*cmd));
	if (cmd == NULL)
		return SP_ERR_NOMEM;
	int r = sysdns_resolved_dns_command(s->link, s->stub_addr, s->stub_port, cmd);
	if (r == 0)
		r = run_command(cmd, diag);
	if (r == 0)
		r = sysdns_resolved_default_route_command(s->link, cmd);
	if (r == 0)
		r = run_command(cmd, diag);
	if (r == 0)
		r = sysdns_resolved_domain_command(s->link, s->domains, s->domain_count, cmd);
	if (r == 0)
		r = run_command(cmd, diag);
	free(cmd);
	if (r == 0)
		s->applied = 1;
	return r;
}

int sysdns_apply(struct sysdns *s, struct sp_diag *diag)
{
	if (s->mode == SYSDNS_MODE_RESOLVED)
		return apply_resolved(s, diag);
	char saved[STATE_PATH_MAX];
	struct sp_buf text, marker;
	sp_buf_init(&text, SYSDNS_RESOLV_MAX);
	sp_buf_init(&marker, SYSDNS_MARKER_MAX);
	int r = state_file(s->state_dir, SAVED_NAME, saved, sizeof(saved), diag);
	if (r == 0 && s->marker.kind == SYSDNS_KIND_FILE)
		r = state_write(s->state_dir, SAVED_NAME,
				s->orig_bytes.data != NULL ? s->orig_bytes.data
							   : (const uint8_t *)"",
				s->orig_bytes.len, diag);
	char previous[STATE_PATH_MAX + 64];
	if (s->marker.kind == SYSDNS_KIND_FILE)
		snprintf(previous, sizeof(previous), "saved in %s", saved);
	else if (s->marker.kind == SYSDNS_KIND_SYMLINK)
		snprintf(previous, sizeof(previous), "a link to %.1024s", s->marker.target);
	else
		snprintf(previous, sizeof(previous), "there was none: removed");
	if (r == 0)
		r = sysdns_resolv_render(&s->orig, s->stub_addr, previous, &text);
	if (r == 0) {
		sha256_hex(text.data, text.len, s->marker.written);
		s->marker.pid = (int64_t)getpid();
		s->marker.start = process_start(getpid());
		snprintf(s->marker.path, sizeof(s->marker.path), "%s", s->path);
		r = sysdns_marker_render(&s->marker, &marker);
	}
	/* the marker first: a crash from here on is recoverable */
	if (r == 0)
		r = state_write(s->state_dir, MARKER_NAME, marker.data, marker.len, diag);
	if (r == 0) {
		/* a link is replaced by a file (its target belongs to whoever made it) */
		mode_t mode = s->marker.kind == SYSDNS_KIND_FILE ? (mode_t)s->marker.mode : 0644;
		r = write_replace(s->path, text.data, text.len, mode, 0, 0, 0, diag);
		if (r < 0)
			state_remove(s->state_dir);
	}
	if (r == 0) {
		s->applied = 1;
		SP_LOG(SP_LOG_INFO, "resolv.conf points at the DNS stub",
		       SP_LOG_STR("path", s->path), SP_LOG_STR("stub", s->stub_addr),
		       SP_LOG_STR("upstreams", s->upstreams));
	}
	sp_buf_free(&text);
	sp_buf_free(&marker);
	return r;
}

int sysdns_set_resources(struct sysdns *s, const struct sp_resource *res, size_t n)
{
	if (s == NULL || s->mode != SYSDNS_MODE_RESOLVED)
		return 0;
	char(*domains)[SYSDNS_DOMAIN_MAX + 1] = calloc(SYSDNS_DOMAINS_MAX, sizeof(*domains));
	if (domains == NULL)
		return SP_ERR_NOMEM;
	size_t count = 0;
	if (sysdns_routing_domains(res, n, domains, SYSDNS_DOMAINS_MAX, &count) < 0)
		SP_LOG(SP_LOG_WARN, "too many routing domains: the first ones are used",
		       SP_LOG_UINT("max", SYSDNS_DOMAINS_MAX));
	int same = count == s->domain_count;
	for (size_t i = 0; same && i < count; i++)
		same = strcmp(domains[i], s->domains[i]) == 0;
	int r = 0;
	if (!same) {
		free(s->domains);
		s->domains = domains;
		s->domain_count = count;
		domains = NULL;
		if (s->applied) {
			struct sysdns_command *cmd = calloc(1, sizeof(*cmd));
			struct sp_diag diag = {{0}};
			r = cmd == NULL ? SP_ERR_NOMEM
					: sysdns_resolved_domain_command(s->link, s->domains,
									 s->domain_count, cmd);
			if (r == 0)
				r = run_command(cmd, &diag);
			if (r < 0)
				SP_LOG(SP_LOG_WARN, "routing domains not updated",
				       SP_LOG_STR("why", diag.message));
			free(cmd);
		}
	}
	free(domains);
	return r;
}

void sysdns_restore(struct sysdns *s)
{
	if (s == NULL)
		return;
	struct sp_diag diag = {{0}};
	if (s->applied && s->mode == SYSDNS_MODE_RESOLVED) {
		struct sysdns_command *cmd = calloc(1, sizeof(*cmd));
		int r = cmd == NULL ? SP_ERR_NOMEM : sysdns_resolved_revert_command(s->link, cmd);
		if (r == 0)
			r = run_command(cmd, &diag);
		if (r < 0)
			SP_LOG(SP_LOG_ERROR, "resolvectl revert failed",
			       SP_LOG_STR("why", diag.message));
		free(cmd);
	} else if (s->applied) {
		if (restore_marker(s->state_dir, &s->marker, "daemon stopping", &diag) < 0)
			SP_LOG(SP_LOG_ERROR, "resolv.conf not restored",
			       SP_LOG_STR("why", diag.message));
	}
	sp_buf_free(&s->orig_bytes);
	free(s->domains);
	free(s);
}
