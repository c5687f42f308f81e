/*
 * client/state.c — the client's state directory and session file (see state.h).
 */
#include "client/state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

int state_path(const char *dir, const char *name, char *out, size_t size)
{
	int n = snprintf(out, size, "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= size)
		return SP_ERR_TOO_LARGE;
	return 0;
}

static int mkdir_p(char *path, struct sp_diag *diag)
{
	for (char *p = path + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) == -1 && errno != EEXIST) {
			int e = errno;
			*p = '/';
			return sp_diag_set(diag, SP_ERR_IO, "cannot create %s: %s", path, strerror(e));
		}
		*p = '/';
	}
	if (mkdir(path, 0700) == -1 && errno != EEXIST)
		return sp_diag_set(diag, SP_ERR_IO, "cannot create %s: %s", path, strerror(errno));
	return 0;
}

int state_dir_open(char *dir, size_t size, struct sp_diag *diag)
{
	const char *env = getenv("SALLYPORT_STATE_DIR");
	const char *xdg = getenv("XDG_STATE_HOME");
	const char *home = getenv("HOME");
	int n;
	if (env != NULL && env[0] != '\0')
		n = snprintf(dir, size, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(dir, size, "/var/lib/sallyport");
	else if (xdg != NULL && xdg[0] == '/')
		n = snprintf(dir, size, "%s/sallyport", xdg);
	else if (home != NULL && home[0] == '/')
		n = snprintf(dir, size, "%s/.local/state/sallyport", home);
	else
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "no state directory: set SALLYPORT_STATE_DIR or HOME");
	if (n < 0 || (size_t)n >= size)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "state directory path too long");
	int rc = mkdir_p(dir, diag);
	if (rc < 0)
		return rc;
	struct stat st;
	if (stat(dir, &st) == -1)
		return sp_diag_set(diag, SP_ERR_IO, "%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return sp_diag_set(diag, SP_ERR_INVALID, "%s is not a directory", dir);
	if (st.st_uid != geteuid())
		return sp_diag_set(diag, SP_ERR_PERMISSION, "%s belongs to another user", dir);
	if ((st.st_mode & 0777) != 0700 && chmod(dir, 0700) == -1)
		return sp_diag_set(diag, SP_ERR_IO, "chmod 0700 %s: %s", dir, strerror(errno));
	return 0;
}

int state_session_load(const char *dir, json_t **out, struct sp_diag *diag)
{
	*out = NULL;
	char path[STATE_PATH_MAX];
	if (state_path(dir, "session.json", path, sizeof(path)) < 0)
		return SP_ERR_TOO_LARGE;
	struct stat st;
	if (stat(path, &st) == -1) {
		if (errno == ENOENT)
			return sp_diag_set(diag, SP_ERR_NOT_FOUND,
					   "not signed in (run `sallyport login`)");
		return sp_diag_set(diag, SP_ERR_IO, "%s: %s", path, strerror(errno));
	}
	if ((st.st_mode & 077) != 0)
		return sp_diag_set(diag, SP_ERR_PERMISSION, "%s must be mode 0600", path);
	json_error_t err;
	json_t *s = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
	if (s == NULL || !json_is_object(s) ||
	    !json_is_string(json_object_get(s, "controller")) ||
	    !json_is_string(json_object_get(s, "refresh_token")) ||
	    !json_is_string(json_object_get(s, "device_id"))) {
		json_decref(s);
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "%s: not a session file (needs controller, device_id, "
				   "refresh_token)",
				   path);
	}
	*out = s;
	return 0;
}

int state_session_save(const char *dir, const json_t *session, struct sp_diag *diag)
{
	char path[STATE_PATH_MAX], tmp[STATE_PATH_MAX];
	if (state_path(dir, "session.json", path, sizeof(path)) < 0 ||
	    state_path(dir, "session.json.tmp", tmp, sizeof(tmp)) < 0)
		return SP_ERR_TOO_LARGE;
	char *text = json_dumps(session, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (text == NULL)
		return SP_ERR_NOMEM;
	int rc = 0;
	size_t len = strlen(text);
	(void)unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd == -1) {
		rc = sp_diag_set(diag, SP_ERR_IO, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, text + done, len - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			rc = sp_diag_set(diag, SP_ERR_IO, "%s: %s", tmp, strerror(errno));
			close(fd);
			goto out;
		}
		done += (size_t)n;
	}
	if (fsync(fd) == -1 || close(fd) == -1) {
		rc = sp_diag_set(diag, SP_ERR_IO, "%s: %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, path) == -1)
		rc = sp_diag_set(diag, SP_ERR_IO, "rename to %s: %s", path, strerror(errno));
out:
	OPENSSL_cleanse(text, len);
	free(text);
	return rc;
}

int state_session_forget(const char *dir)
{
	char path[STATE_PATH_MAX];
	if (state_path(dir, "session.json", path, sizeof(path)) < 0)
		return SP_ERR_TOO_LARGE;
	if (unlink(path) == -1 && errno != ENOENT)
		return SP_ERR_IO;
	return 0;
}
