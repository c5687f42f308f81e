/*
 * connector/identity.c — state directory, key and enrollment (see identity.h).
 */
#include "connector/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include <openssl/crypto.h>

#include "connector/http_client.h"
#include "shared/keys.h"

#define IDENTITY_FILE_MAX 65536

static int ensure_state_dir(const char *dir, struct sp_diag *diag)
{
	struct stat st;
	if (stat(dir, &st) == -1) {
		if (errno != ENOENT)
			return sp_diag_set(diag, SP_ERR_IO, "state dir %s: %s", dir, strerror(errno));
		if (mkdir(dir, 0700) == -1)
			return sp_diag_set(diag, SP_ERR_IO, "cannot create state dir %s: %s", dir,
					   strerror(errno));
		return 0;
	}
	if (!S_ISDIR(st.st_mode))
		return sp_diag_set(diag, SP_ERR_INVALID, "state dir %s is not a directory", dir);
	if ((st.st_mode & 077) != 0)
		return sp_diag_set(diag, SP_ERR_PERMISSION,
				   "state dir %s is open to other users (mode %03o): chmod 700 it",
				   dir, (unsigned)(st.st_mode & 0777));
	return 0;
}

static int path_join(char *out, size_t size, const char *dir, const char *name)
{
	int n = snprintf(out, size, "%s/%s", dir, name);
	return n < 0 || (size_t)n >= size ? SP_ERR_TOO_LARGE : 0;
}

static int identity_from_json(const json_t *root, struct connector_identity *out,
			      struct sp_diag *diag, const char *what)
{
	const char *cid = json_string_value(json_object_get(root, "connector_id"));
	const char *nid = json_string_value(json_object_get(root, "network_id"));
	json_t *jwks = json_object_get(root, "controller_jwks");
	if (cid == NULL || nid == NULL || strlen(cid) == 0 || strlen(cid) > CONNECTOR_ID_MAX ||
	    strlen(nid) == 0 || strlen(nid) > CONNECTOR_ID_MAX || !json_is_object(jwks))
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "%s: connector_id, network_id or controller_jwks missing", what);
	char *text = json_dumps(jwks, JSON_COMPACT);
	if (text == NULL)
		return SP_ERR_NOMEM;
	struct sp_diag d = {{0}};
	int r = sp_jwks_parse(text, strlen(text), &out->keys, &d);
	free(text);
	if (r < 0)
		return sp_diag_set(diag, r, "%s: controller_jwks: %s", what, d.message);
	memcpy(out->connector_id, cid, strlen(cid) + 1);
	memcpy(out->network_id, nid, strlen(nid) + 1);
	return 0;
}

static int save_identity(const char *path, const json_t *root, struct sp_diag *diag)
{
	char tmp[4200];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return SP_ERR_TOO_LARGE;
	char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (text == NULL)
		return SP_ERR_NOMEM;
	int r = 0;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1) {
		r = sp_diag_set(diag, SP_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	size_t len = strlen(text), done = 0;
	while (done < len) {
		ssize_t n = write(fd, text + done, len - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			r = sp_diag_set(diag, SP_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
			close(fd);
			goto out;
		}
		done += (size_t)n;
	}
	if (fsync(fd) == -1 || close(fd) == -1) {
		r = sp_diag_set(diag, SP_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, path) == -1)
		r = sp_diag_set(diag, SP_ERR_IO, "cannot rename %s: %s", tmp, strerror(errno));
out:
	free(text);
	return r;
}

static int load_identity(const char *path, struct connector_identity *out, struct sp_diag *diag)
{
	struct stat st;
	if (stat(path, &st) == -1)
		return SP_ERR_NOT_FOUND;
	if ((st.st_mode & 077) != 0)
		return sp_diag_set(diag, SP_ERR_PERMISSION,
				   "%s is open to other users (mode %03o): chmod 600 it", path,
				   (unsigned)(st.st_mode & 0777));
	json_error_t err;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
	if (root == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s line %d: %s", path, err.line, err.text);
	int r = identity_from_json(root, out, diag, path);
	json_decref(root);
	return r;
}

/* Maps the controller's refusal of an enrollment to one clear line. */
static int enroll_refused(const struct connector_http_response *resp, struct sp_diag *diag)
{
	json_t *body = json_loads(resp->body, 0, NULL);
	const char *code = json_string_value(json_object_get(json_object_get(body, "error"), "code"));
	const char *msg =
	    json_string_value(json_object_get(json_object_get(body, "error"), "message"));
	int r;
	if (code != NULL && strcmp(code, "token_used") == 0)
		r = sp_diag_set(diag, SP_ERR_EXISTS,
				"enrollment refused: SALLYPORT_ENROLL_TOKEN was already used (make a "
				"new one with `sallyport-controller connector-token create`)");
	else if (code != NULL && strcmp(code, "token_expired") == 0)
		r = sp_diag_set(diag, SP_ERR_EXPIRED,
				"enrollment refused: SALLYPORT_ENROLL_TOKEN has expired (make a new "
				"one with `sallyport-controller connector-token create`)");
	else if (code != NULL && strcmp(code, "token_unknown") == 0)
		r = sp_diag_set(diag, SP_ERR_INVALID,
				"enrollment refused: the controller does not know SALLYPORT_ENROLL_TOKEN "
				"(check it was copied whole, and SALLYPORT_URL)");
	else
		r = sp_diag_set(diag, SP_ERR_INVALID, "enrollment refused: HTTP %ld %s: %s",
				resp->status, code != NULL ? code : "", msg != NULL ? msg : "");
	json_decref(body);
	return r;
}

int connector_identity_load_or_enroll(const struct connector_enroll_params *p,
				      struct connector_identity *out, struct sp_diag *diag)
{
	memset(out, 0, sizeof(*out));
	sp_jwks_init(&out->keys);
	char key_path[4200], id_path[4200];
	int r = ensure_state_dir(p->state_dir, diag);
	if (r < 0)
		return r;
	if (path_join(key_path, sizeof(key_path), p->state_dir, "connector.key") < 0 ||
	    path_join(id_path, sizeof(id_path), p->state_dir, "identity.json") < 0)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "state dir path too long");
	int created = 0;
	struct sp_diag d = {{0}};
	r = sp_key_load_or_create(key_path, &out->key, &created, &d);
	if (r < 0)
		return sp_diag_set(diag, r, "connector key: %s", d.message);

	r = load_identity(id_path, out, diag);
	if (r != SP_ERR_NOT_FOUND)
		return r;
	if (p->enroll_token == NULL || p->enroll_token[0] == '\0')
		return sp_diag_set(diag, SP_ERR_NOT_FOUND,
				   "not enrolled yet: set SALLYPORT_ENROLL_TOKEN for the first start "
				   "(state dir %s holds no identity)",
				   p->state_dir);

	char *pem = NULL;
	size_t pem_len = 0;
	r = sp_key_public_pem(out->key, &pem, &pem_len);
	if (r < 0)
		return r;
	json_t *req = json_pack("{s:s, s:s, s:s%, s:s?, s:s}", "token", p->enroll_token, "name",
				p->name, "public_key_pem", pem, pem_len, "direct_address",
				p->direct_address, "version", p->version);
	sp_key_free_pem(pem, pem_len);
	char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (body == NULL)
		return SP_ERR_NOMEM;
	struct connector_http_response resp;
	r = connector_http(p->controller_url, "POST", "/api/connector/v1/enroll", body, NULL, 30,
			   1 << 20, NULL, &resp, &d);
	OPENSSL_cleanse(body, strlen(body));
	free(body);
	if (r < 0)
		return sp_diag_set(diag, r, "enrollment: controller unreachable: %s", d.message);
	if (resp.status != 201) {
		r = enroll_refused(&resp, diag);
		connector_http_response_free(&resp);
		return r;
	}
	json_t *root = json_loads(resp.body, JSON_REJECT_DUPLICATES, NULL);
	connector_http_response_free(&resp);
	if (root == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "enrollment: the answer is not JSON");
	json_object_del(root, "network_name");
	r = identity_from_json(root, out, diag, "enrollment answer");
	if (r == 0)
		r = save_identity(id_path, root, diag);
	json_decref(root);
	if (r == 0)
		out->enrolled_now = 1;
	return r;
}

void connector_identity_free(struct connector_identity *id)
{
	if (id == NULL)
		return;
	EVP_PKEY_free(id->key);
	id->key = NULL;
	sp_jwks_free(&id->keys);
}
