/*
 * client/main.c — `sallyport`, the Sallyport client (docs/client.md).
 *
 *   sallyport login [--controller URL] [--no-browser] [--device-code] [--service-key FILE
 *                   --service-kid KID --service-account ID] [--device-name NAME]
 *   sallyport logout
 *   sallyport status [--json]
 *   sallyport resources [--json]
 *   sallyport up [--mode proxy|loopback|tun] [--socks ADDR] [--http-proxy ADDR]
 *                [--loopback-range CIDR] [--tun-range CIDR] [--tun-range6 CIDR|off]
 *                [--tun-device NAME] [--dns ADDR:PORT [--dns-upstream LIST]]
 *                [--no-system-dns] [--foreground]
 *   sallyport down [--tun-device NAME]
 *
 * System DNS (client/sysdns.h): run as root in loopback mode, `up` starts the DNS stub
 * (on SYSDNS_DEFAULT_LISTEN unless --dns says otherwise) and points the system resolver
 * at it until the daemon stops; --no-system-dns, or a --dns on a port other than 53,
 * leaves the system resolver alone.
 *
 * Exit codes: 0 success, 1 error, 2 usage, 3 not signed in / daemon not running.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "client/api.h"
#include "client/control_proto.h"
#include "client/daemon.h"
#include "client/login_redirect.h"
#include "client/state.h"
#include "client/tun_rules.h"
#include "client/tun_sys.h"
#include "client/sysdns.h"
#include "shared/jwk.h"
#include "shared/keys.h"
#include "shared/log.h"
#include "shared/token.h"

static const char *opt(int argc, char **argv, const char *name)
{
	for (int i = 2; i + 1 < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return argv[i + 1];
	return NULL;
}

static int flag(int argc, char **argv, const char *name)
{
	for (int i = 2; i < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return 1;
	return 0;
}

static int fail(const char *what, const struct sp_diag *diag)
{
	fprintf(stderr, "sallyport: %s%s%s\n", what, diag != NULL && diag->message[0] ? ": " : "",
		diag != NULL ? diag->message : "");
	return 1;
}

/* ---------- control socket client ---------- */

/* Sends one command to the daemon; *reply (json_decref). SP_ERR_NOT_FOUND when down. */
static int control_call(const char *dir, enum control_cmd cmd, json_t **reply)
{
	*reply = NULL;
	char path[STATE_PATH_MAX];
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	if (state_path(dir, "control.sock", path, sizeof(path)) < 0 ||
	    strlen(path) >= sizeof(un.sun_path))
		return SP_ERR_TOO_LARGE;
	memcpy(un.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return SP_ERR_IO;
	if (connect(fd, (struct sockaddr *)&un, sizeof(un)) == -1) {
		close(fd);
		return SP_ERR_NOT_FOUND;
	}
	char req[64];
	int n = snprintf(req, sizeof(req), "{\"cmd\":\"%s\"}\n", control_cmd_name(cmd));
	if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		close(fd);
		return SP_ERR_IO;
	}
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	int rc = SP_ERR_IO;
	while (buf != NULL) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 10000) <= 0)
			break;
		if (len + 4096 > cap) {
			if (cap >= API_ANSWER_MAX)
				break;
			char *g = realloc(buf, cap * 2);
			if (g == NULL)
				break;
			buf = g;
			cap *= 2;
		}
		ssize_t got = recv(fd, buf + len, cap - len, 0);
		if (got <= 0)
			break;
		len += (size_t)got;
		if (buf[len - 1] == '\n') {
			*reply = json_loadb(buf, len, 0, NULL);
			rc = *reply != NULL ? 0 : SP_ERR_INVALID;
			break;
		}
	}
	free(buf);
	close(fd);
	return rc;
}

/* ---------- login ---------- */

static void b64url(const uint8_t *data, size_t len, char *out, size_t size)
{
	(void)sp_jwk_base64url_encode(data, len, out, size);
}

static int device_key(const char *dir, EVP_PKEY **key, char **pem, size_t *pem_len,
		      struct sp_diag *diag)
{
	char path[STATE_PATH_MAX];
	int created = 0;
	state_path(dir, "device.key", path, sizeof(path));
	int rc = sp_key_load_or_create(path, key, &created, diag);
	if (rc < 0)
		return rc;
	if (created)
		fprintf(stderr, "sallyport: new device key %s\n", path);
	return sp_key_public_pem(*key, pem, pem_len);
}

/* Saves a session answer; prints who is signed in. */
static int save_session(const char *dir, const char *controller, json_t *ans, struct sp_diag *diag)
{
	json_t *s = json_pack("{s:s, s:O?, s:O?, s:O?, s:O?, s:O?}", "controller", controller,
			      "session_id", json_object_get(ans, "session_id"), "device_id",
			      json_object_get(ans, "device_id"), "refresh_token",
			      json_object_get(ans, "refresh_token"), "user",
			      json_object_get(ans, "user"), "session_expires_at",
			      json_object_get(ans, "session_expires_at"));
	if (s == NULL || !json_is_string(json_object_get(s, "refresh_token"))) {
		json_decref(s);
		return sp_diag_set(diag, SP_ERR_INVALID, "the controller's answer has no session");
	}
	int rc = state_session_save(dir, s, diag);
	if (rc == 0) {
		const char *email = json_string_value(
		    json_object_get(json_object_get(s, "user"), "email"));
		printf("signed in as %s (device %s)\n", email != NULL ? email : "?",
		       json_string_value(json_object_get(s, "device_id")));
	}
	json_decref(s);
	return rc;
}

/* Waits for the browser's redirect on fd; copies code and state out. */
/*
 * Waits for the browser's redirect on lfd and copies its code out. Only a redirect with
 * our state counts: another local program connecting first cannot end or steer the
 * sign-in.
 */
static int receive_redirect(int lfd, const char *expected_state, char *code, size_t code_size,
			    struct sp_diag *diag)
{
	time_t deadline = time(NULL) + 600;
	while (time(NULL) < deadline) {
		struct pollfd p = {.fd = lfd, .events = POLLIN};
		if (poll(&p, 1, 1000) <= 0)
			continue;
		int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (c == -1)
			continue;
		char req[8192];
		size_t len = 0;
		while (len < sizeof(req) - 1) {
			struct pollfd q = {.fd = c, .events = POLLIN};
			if (poll(&q, 1, 5000) <= 0)
				break;
			ssize_t n = recv(c, req + len, sizeof(req) - 1 - len, 0);
			if (n <= 0)
				break;
			len += (size_t)n;
			req[len] = '\0';
			if (strstr(req, "\r\n\r\n") != NULL)
				break;
		}
		req[len] = '\0';
		char got_code[LOGIN_VALUE_MAX + 1], got_state[LOGIN_VALUE_MAX + 1];
		code[0] = '\0';
		if (login_parse_redirect(req, len, got_code, got_state) == 0 &&
		    strlen(got_state) == strlen(expected_state) &&
		    CRYPTO_memcmp(got_state, expected_state, strlen(got_state)) == 0)
			snprintf(code, code_size, "%s", got_code);
		OPENSSL_cleanse(got_code, sizeof(got_code));
		const char *page = code[0] != '\0'
				       ? "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: "
					 "close\r\n\r\n<html><body>Sallyport: signed in. You may close "
					 "this window.</body></html>\n"
				       : "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
					 "Connection: close\r\n\r\nsallyport: no code\n";
		ssize_t w = send(c, page, strlen(page), MSG_NOSIGNAL);
		(void)w;
		close(c);
		if (code[0] != '\0')
			return 0;
	}
	return sp_diag_set(diag, SP_ERR_EXPIRED, "no sign-in within 10 minutes");
}

static int login_native(const char *dir, const char *controller, int no_browser,
			const char *device_name, const char *pem, struct sp_diag *diag)
{
	uint8_t raw[32];
	char verifier[64], challenge[64], state[64], code[LOGIN_VALUE_MAX + 1];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return SP_ERR_CRYPTO;
	b64url(raw, sizeof(raw), verifier, sizeof(verifier));
	uint8_t digest[32];
	unsigned dlen = 0;
	EVP_Digest(verifier, strlen(verifier), digest, &dlen, EVP_sha256(), NULL);
	b64url(digest, sizeof(digest), challenge, sizeof(challenge));
	RAND_bytes(raw, 16);
	b64url(raw, 16, state, sizeof(state));
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t slen = sizeof(sin);
	if (lfd == -1 || bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(lfd, 8) == -1 || getsockname(lfd, (struct sockaddr *)&sin, &slen) == -1) {
		if (lfd != -1)
			close(lfd);
		return sp_diag_set(diag, SP_ERR_IO, "loopback listener: %s", strerror(errno));
	}
	char url[2048];
	snprintf(url, sizeof(url),
		 "%s/auth/login?client=native&redirect_uri=http%%3A%%2F%%2F127.0.0.1%%3A%u%%2Fcb"
		 "&code_challenge=%s&code_challenge_method=S256&state=%s",
		 controller, ntohs(sin.sin_port), challenge, state);
	printf("Open this URL to sign in:\n%s\n", url);
	fflush(stdout);
	if (!no_browser) {
		pid_t pid = fork();
		if (pid == 0) {
			int devnull = open("/dev/null", O_RDWR);
			if (devnull != -1) {
				dup2(devnull, 1);
				dup2(devnull, 2);
			}
			execlp("xdg-open", "xdg-open", url, (char *)NULL);
			_exit(127);
		}
	}
	int rc = receive_redirect(lfd, state, code, sizeof(code), diag);
	close(lfd);
	if (rc < 0)
		return rc;
	json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "code", code, "code_verifier", verifier,
				 "device_public_key_pem", pem, "device_name", device_name);
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	long status = 0;
	json_t *ans = NULL;
	rc = api_call(controller, "POST", "/api/client/v1/session", text, NULL, 30, &status, &ans,
		      diag);
	OPENSSL_cleanse(text, strlen(text));
	free(text);
	OPENSSL_cleanse(verifier, sizeof(verifier));
	if (rc == 0 && status != 201)
		rc = sp_diag_set(diag, SP_ERR_PERMISSION, "session refused: HTTP %ld %s", status,
				 api_error_code(ans));
	if (rc == 0)
		rc = save_session(dir, controller, ans, diag);
	json_decref(ans);
	return rc;
}

static int login_device_code(const char *dir, const char *controller, const char *device_name,
			     const char *pem, struct sp_diag *diag)
{
	json_t *body = json_pack("{s:s, s:s}", "device_public_key_pem", pem, "device_name",
				 device_name);
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	long status = 0;
	json_t *ans = NULL;
	int rc = api_call(controller, "POST", "/auth/device/code", text, NULL, 15, &status, &ans,
			  diag);
	free(text);
	if (rc < 0)
		return rc;
	const char *dc = json_string_value(json_object_get(ans, "device_code"));
	if (status != 200 || dc == NULL) {
		rc = sp_diag_set(diag, SP_ERR_IO, "device code refused: HTTP %ld %s", status,
				 api_error_code(ans));
		json_decref(ans);
		return rc;
	}
	char *device_code = strdup(dc);
	int interval = (int)json_integer_value(json_object_get(ans, "interval"));
	int64_t expires = time(NULL) + json_integer_value(json_object_get(ans, "expires_in"));
	printf("To sign in, open %s and enter the code %s\n(or open %s)\n",
	       json_string_value(json_object_get(ans, "verification_uri")),
	       json_string_value(json_object_get(ans, "user_code")),
	       json_string_value(json_object_get(ans, "verification_uri_complete")));
	fflush(stdout);
	json_decref(ans);
	if (interval < 1)
		interval = 5;
	rc = SP_ERR_EXPIRED;
	sp_diag_set(diag, rc, "the code expired");
	json_t *poll_body = json_pack("{s:s}", "device_code", device_code);
	char *poll_text = json_dumps(poll_body, JSON_COMPACT);
	json_decref(poll_body);
	while (time(NULL) < expires) {
		sleep((unsigned)interval);
		ans = NULL;
		if (api_call(controller, "POST", "/auth/device/token", poll_text, NULL, 15, &status,
			     &ans, diag) < 0) {
			json_decref(ans);
			continue;
		}
		const char *err = api_error_code(ans);
		if (status == 200 || status == 201) {
			rc = save_session(dir, controller, ans, diag);
			json_decref(ans);
			break;
		}
		if (strcmp(err, "slow_down") == 0)
			interval += 5;
		else if (strcmp(err, "authorization_pending") != 0) {
			rc = sp_diag_set(diag, SP_ERR_PERMISSION, "sign-in refused: %s", err);
			json_decref(ans);
			break;
		}
		json_decref(ans);
	}
	OPENSSL_cleanse(poll_text, strlen(poll_text));
	free(poll_text);
	OPENSSL_cleanse(device_code, strlen(device_code));
	free(device_code);
	return rc;
}

static int login_service(const char *dir, const char *controller, const char *key_file,
			 const char *kid, const char *account, EVP_PKEY *dev, const char *pem,
			 const char *device_name, struct sp_diag *diag)
{
	EVP_PKEY *skey = NULL;
	int rc = sp_key_load_private(key_file, &skey, diag);
	if (rc < 0)
		return rc;
	char jkt[SP_JWK_THUMBPRINT_LEN + 1];
	sp_jwk_thumbprint(dev, jkt);
	uint8_t raw[24];
	char jti[64];
	RAND_bytes(raw, sizeof(raw));
	b64url(raw, sizeof(raw), jti, sizeof(jti));
	int64_t now = time(NULL);
	json_t *claims = json_pack("{s:s, s:s, s:I, s:I, s:s, s:{s:s}}", "iss", account, "aud",
				   controller, "iat", (json_int_t)now, "exp", (json_int_t)(now + 120),
				   "jti", jti, "cnf", "jkt", jkt);
	char *assertion = NULL;
	rc = sp_token_sign_es256(skey, kid, claims, &assertion);
	json_decref(claims);
	EVP_PKEY_free(skey);
	if (rc < 0)
		return sp_diag_set(diag, rc, "cannot sign the service assertion");
	json_t *body = json_pack("{s:s, s:s, s:s}", "assertion", assertion, "device_public_key_pem",
				 pem, "device_name", device_name);
	free(assertion);
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	long status = 0;
	json_t *ans = NULL;
	rc = api_call(controller, "POST", "/api/client/v1/session/service", text, NULL, 15, &status,
		      &ans, diag);
	free(text);
	if (rc == 0 && status != 201)
		rc = sp_diag_set(diag, SP_ERR_PERMISSION, "service sign-in refused: HTTP %ld %s",
				 status, api_error_code(ans));
	if (rc == 0)
		rc = save_session(dir, controller, ans, diag);
	json_decref(ans);
	return rc;
}

static int cmd_login(const char *dir, int argc, char **argv)
{
	struct sp_diag diag = {{0}};
	const char *controller = opt(argc, argv, "--controller");
	json_t *old = NULL;
	if (controller == NULL && state_session_load(dir, &old, NULL) == 0)
		controller = json_string_value(json_object_get(old, "controller"));
	if (controller == NULL)
		controller = getenv("SALLYPORT_CONTROLLER");
	if (controller == NULL) {
		json_decref(old);
		fprintf(stderr, "sallyport: --controller URL is required at the first sign-in\n");
		return 2;
	}
	char url[1024];
	snprintf(url, sizeof(url), "%s", controller);
	json_decref(old);
	size_t ul = strlen(url);
	while (ul > 0 && url[ul - 1] == '/')
		url[--ul] = '\0';
	char host[256] = "sallyport-client";
	gethostname(host, sizeof(host) - 1);
	const char *name = opt(argc, argv, "--device-name");
	if (name == NULL)
		name = host;
	EVP_PKEY *key = NULL;
	char *pem = NULL;
	size_t pem_len = 0;
	int rc = device_key(dir, &key, &pem, &pem_len, &diag);
	if (rc < 0)
		return fail("device key", &diag);
	const char *skey = opt(argc, argv, "--service-key");
	if (skey != NULL) {
		const char *kid = opt(argc, argv, "--service-kid");
		const char *acct = opt(argc, argv, "--service-account");
		if (kid == NULL || acct == NULL) {
			fprintf(stderr, "sallyport: --service-key needs --service-kid and "
					"--service-account\n");
			rc = SP_ERR_INVALID;
		} else {
			rc = login_service(dir, url, skey, kid, acct, key, pem, name, &diag);
		}
	} else if (flag(argc, argv, "--device-code")) {
		rc = login_device_code(dir, url, name, pem, &diag);
	} else {
		rc = login_native(dir, url, flag(argc, argv, "--no-browser"), name, pem, &diag);
	}
	sp_key_free_pem(pem, pem_len);
	EVP_PKEY_free(key);
	if (rc < 0)
		return fail("sign-in failed", &diag);
	return 0;
}

static int cmd_logout(const char *dir)
{
	json_t *reply = NULL;
	if (control_call(dir, CONTROL_DOWN, &reply) == 0) {
		json_decref(reply);
		/* wait for the daemon to let go of the session */
		for (int i = 0; i < 50 && control_call(dir, CONTROL_STATUS, &reply) == 0; i++) {
			json_decref(reply);
			usleep(100000);
		}
	}
	struct sp_diag diag = {{0}};
	json_t *session = NULL;
	if (state_session_load(dir, &session, &diag) < 0) {
		printf("not signed in\n");
		return 0;
	}
	char *access = NULL;
	int64_t exp = 0;
	int revoked = 0;
	if (api_refresh(dir, session, &access, &exp, &diag) == 0) {
		long status = 0;
		json_t *ans = NULL;
		if (api_call(json_string_value(json_object_get(session, "controller")), "POST",
			     "/api/client/v1/session/logout", "{}", access, 15, &status, &ans,
			     &diag) == 0 &&
		    status >= 200 && status < 300)
			revoked = 1;
		json_decref(ans);
		OPENSSL_cleanse(access, strlen(access));
		free(access);
	}
	json_decref(session);
	state_session_forget(dir);
	printf(revoked ? "signed out (session revoked at the controller)\n"
		       : "signed out locally (the controller could not be told: %s)\n",
	       diag.message);
	return 0;
}

static int cmd_status(const char *dir, int argc, char **argv)
{
	json_t *reply = NULL;
	int json_out = flag(argc, argv, "--json");
	if (control_call(dir, CONTROL_STATUS, &reply) < 0) {
		json_t *s = NULL;
		int signed_in = state_session_load(dir, &s, NULL) == 0;
		reply = json_pack("{s:s, s:b}", "state", "down", "signed_in", signed_in);
		if (signed_in) {
			json_object_set(reply, "controller", json_object_get(s, "controller"));
			json_object_set(reply, "device_id", json_object_get(s, "device_id"));
			if (json_object_get(s, "user") != NULL)
				json_object_set(reply, "user", json_object_get(s, "user"));
		}
		json_decref(s);
	}
	if (json_out) {
		char *t = json_dumps(reply, JSON_COMPACT);
		printf("%s\n", t);
		free(t);
	} else {
		const char *email =
		    json_string_value(json_object_get(json_object_get(reply, "user"), "email"));
		printf("daemon: %s\n", json_string_value(json_object_get(reply, "state")));
		printf("controller: %s\n",
		       json_string_value(json_object_get(reply, "controller")) != NULL
			   ? json_string_value(json_object_get(reply, "controller"))
			   : "(signed out)");
		if (email != NULL)
			printf("user: %s\n", email);
		json_t *mode = json_object_get(reply, "mode");
		if (mode != NULL)
			printf("mode: %s\nresources: %lld\n", json_string_value(mode),
			       (long long)json_integer_value(json_object_get(reply, "resources")));
		size_t i;
		json_t *x;
		json_array_foreach(json_object_get(reply, "tunnels"), i, x)
			printf("tunnel: %s %s (%s, %s) streams %lld\n",
			       json_string_value(json_object_get(x, "connector")),
			       json_string_value(json_object_get(x, "address")),
			       json_string_value(json_object_get(x, "path")),
			       json_string_value(json_object_get(x, "state")),
			       (long long)json_integer_value(json_object_get(x, "streams_open")));
		json_array_foreach(json_object_get(reply, "listeners"), i, x)
			printf("listening: %s %s:%lld %s\n", json_string_value(json_object_get(x, "kind")),
			       json_string_value(json_object_get(x, "address")),
			       (long long)json_integer_value(json_object_get(x, "port")),
			       json_string_value(json_object_get(x, "name")));
		json_array_foreach(json_object_get(reply, "denials"), i, x)
			printf("refused: %s %s (by %s)\n", json_string_value(json_object_get(x, "target")),
			       json_string_value(json_object_get(x, "reason")),
			       json_string_value(json_object_get(x, "by")));
	}
	json_decref(reply);
	return 0;
}

static int cmd_resources(const char *dir, int argc, char **argv)
{
	json_t *reply = NULL;
	struct sp_diag diag = {{0}};
	if (control_call(dir, CONTROL_RESOURCES, &reply) < 0) {
		json_t *s = NULL;
		if (state_session_load(dir, &s, &diag) < 0)
			return fail("resources", &diag) + 2;
		char *access = NULL;
		int64_t exp = 0;
		struct sp_jwks keys;
		sp_jwks_init(&keys);
		const char *ctl = json_string_value(json_object_get(s, "controller"));
		json_t *claims = NULL;
		int rc = api_refresh(dir, s, &access, &exp, &diag);
		if (rc == 0)
			rc = api_fetch_jwks(ctl, &keys, &diag);
		if (rc == 0)
			rc = api_fetch_resources(ctl, access, json_string_value(json_object_get(
							      s, "device_id")),
						 &keys, time(NULL), &claims, &diag);
		if (access != NULL) {
			OPENSSL_cleanse(access, strlen(access));
			free(access);
		}
		sp_jwks_free(&keys);
		json_decref(s);
		if (rc < 0)
			return fail("resources", &diag);
		reply = json_pack("{s:O?, s:O?, s:O?}", "resources", json_object_get(claims, "resources"),
				  "networks", json_object_get(claims, "networks"), "seq",
				  json_object_get(claims, "seq"));
		json_decref(claims);
	}
	if (flag(argc, argv, "--json")) {
		char *t = json_dumps(reply, JSON_COMPACT);
		printf("%s\n", t);
		free(t);
	} else {
		size_t i;
		json_t *r;
		json_array_foreach(json_object_get(reply, "resources"), i, r)
		{
			char *tcp = json_dumps(json_object_get(r, "tcp"), JSON_ENCODE_ANY | JSON_COMPACT);
			printf("%-24s %-32s tcp %s%s%s\n", json_string_value(json_object_get(r, "name")),
			       json_string_value(json_object_get(r, "address")), tcp != NULL ? tcp : "",
			       json_is_string(json_object_get(r, "alias")) ? " alias " : "",
			       json_is_string(json_object_get(r, "alias"))
				   ? json_string_value(json_object_get(r, "alias"))
				   : "");
			free(tcp);
		}
	}
	json_decref(reply);
	return 0;
}

/* 1 when the process may configure the network: root or CAP_NET_ADMIN (bit 12). */
static int may_admin_network(void)
{
	if (geteuid() == 0)
		return 1;
	FILE *f = fopen("/proc/self/status", "re");
	if (f == NULL)
		return 0;
	char line[256];
	unsigned long long caps = 0;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "CapEff:", 7) == 0)
			caps = strtoull(line + 7, NULL, 16);
	fclose(f);
	return (caps >> 12) & 1u;
}

/*
 * With the daemon gone, removes what a tun-mode daemon killed with SIGKILL left (the nft
 * table, the policy rules, the device), found by name and mark. 1 when something was there.
 */
static int tun_leftovers(const char *device)
{
	struct tun_rules r;
	memset(&r, 0, sizeof(r));
	snprintf(r.device, sizeof(r.device), "%s", device != NULL ? device : TUN_RULES_DEFAULT_DEVICE);
	if (!may_admin_network())
		return 0;
	int removed = 0;
	tun_sys_cleanup(&r, &removed);
	if (removed > 0)
		printf("removed %d leftover tun-mode item%s (device %s, nft table inet %s, rules "
		       "fwmark 0x%x)\n",
		       removed, removed == 1 ? "" : "s", r.device, TUN_RULES_NFT_TABLE, TUN_RULES_MARK);
	return removed > 0;
}

/* Puts back a resolv.conf that a daemon killed without cleaning up left behind. */
static int recover_system_dns(const char *dir)
{
	int restored = 0;
	struct sp_diag diag = {{0}};
	int rc = sysdns_recover(dir, &restored, &diag);
	if (rc < 0 && rc != SP_ERR_EXISTS)
		fprintf(stderr, "sallyport: system DNS: %s\n", diag.message);
	if (restored)
		printf("system DNS restored (a daemon had stopped without restoring it)\n");
	return restored;
}

static int cmd_down(const char *dir, int argc, char **argv)
{
	json_t *reply = NULL;
	if (control_call(dir, CONTROL_DOWN, &reply) < 0) {
		int tun_removed = tun_leftovers(opt(argc, argv, "--tun-device"));
		if (recover_system_dns(dir) + tun_removed > 0)
			return 0;
		fprintf(stderr, "sallyport: the daemon is not running\n");
		return 3;
	}
	json_decref(reply);
	for (int i = 0; i < 100; i++) {
		if (control_call(dir, CONTROL_STATUS, &reply) < 0) {
			printf("down\n");
			return 0;
		}
		json_decref(reply);
		usleep(100000);
	}
	fprintf(stderr, "sallyport: the daemon did not stop within 10 s\n");
	return 1;
}

static int cmd_up(const char *dir, int argc, char **argv)
{
	struct daemon_options o = {.state_dir = dir, .mode = DAEMON_MODE_PROXY};
	const char *mode = opt(argc, argv, "--mode");
	if (mode != NULL && strcmp(mode, "loopback") == 0)
		o.mode = DAEMON_MODE_LOOPBACK;
	else if (mode != NULL && strcmp(mode, "tun") == 0)
		o.mode = DAEMON_MODE_TUN;
	else if (mode != NULL && strcmp(mode, "proxy") != 0) {
		fprintf(stderr, "sallyport: --mode is proxy, loopback or tun\n");
		return 2;
	}
	if (o.mode == DAEMON_MODE_TUN && !may_admin_network()) {
		fprintf(stderr, "sallyport: tun mode needs root or CAP_NET_ADMIN (it creates a "
				"network device, routes and nftables rules); use --mode loopback or "
				"proxy without privileges\n");
		return 1;
	}
	o.tun_range = opt(argc, argv, "--tun-range");
	o.tun_range6 = opt(argc, argv, "--tun-range6");
	o.tun_device = opt(argc, argv, "--tun-device");
	o.socks_addr = opt(argc, argv, "--socks");
	o.http_addr = opt(argc, argv, "--http-proxy");
	if (o.socks_addr == NULL)
		o.socks_addr = "127.0.0.1:1080";
	if (o.http_addr == NULL)
		o.http_addr = "127.0.0.1:3128";
	o.loopback_range = opt(argc, argv, "--loopback-range");
	o.dns_addr = opt(argc, argv, "--dns");
	o.dns_upstreams = opt(argc, argv, "--dns-upstream");
	/* system DNS needs root and a stub: on by default then, the stub on its own address */
	o.system_dns = geteuid() == 0 && o.mode != DAEMON_MODE_PROXY &&
		       !flag(argc, argv, "--no-system-dns");
	if (o.system_dns && o.dns_addr == NULL)
		o.dns_addr = SYSDNS_DEFAULT_LISTEN;
	if (o.dns_addr != NULL && o.dns_addr[0] == '\0')
		o.system_dns = 0; /* --dns "": no stub */
	const char *port = o.dns_addr != NULL ? strrchr(o.dns_addr, ':') : NULL;
	if (o.system_dns && (port == NULL || strcmp(port, ":53") != 0)) {
		/* resolv.conf cannot name a port: a stub elsewhere is for the user to point at */
		fprintf(stderr, "sallyport: system DNS left alone: the DNS stub is not on port 53\n");
		o.system_dns = 0;
	}
	json_t *s = NULL;
	struct sp_diag diag = {{0}};
	if (state_session_load(dir, &s, &diag) < 0)
		return fail("up", &diag) + 2;
	json_decref(s);
	(void)recover_system_dns(dir);
	if (!flag(argc, argv, "--foreground")) {
		char logp[STATE_PATH_MAX];
		state_path(dir, "daemon.log", logp, sizeof(logp));
		pid_t pid = fork();
		if (pid == -1)
			return fail("fork", NULL);
		if (pid == 0) {
			setsid();
			if (fork() != 0)
				_exit(0);
			int fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
			int nul = open("/dev/null", O_RDONLY);
			if (fd != -1) {
				dup2(fd, 1);
				dup2(fd, 2);
			}
			if (nul != -1)
				dup2(nul, 0);
			int rc = daemon_run(&o, &diag);
			if (rc < 0)
				fprintf(stderr, "sallyport: %s\n", diag.message);
			_exit(rc < 0 ? 1 : 0);
		}
		waitpid(pid, NULL, 0);
		json_t *reply = NULL;
		for (int i = 0; i < 100; i++) {
			if (control_call(dir, CONTROL_STATUS, &reply) == 0) {
				json_decref(reply);
				printf("up (log: %s)\n", logp);
				return 0;
			}
			usleep(100000);
		}
		fprintf(stderr, "sallyport: the daemon did not start; see %s\n", logp);
		return 1;
	}
	if (daemon_run(&o, &diag) < 0)
		return fail("up", &diag);
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: sallyport login [--controller URL] [--no-browser] [--device-code]\n"
		"                       [--service-key FILE --service-kid KID --service-account ID]\n"
		"       sallyport logout\n"
		"       sallyport status [--json]\n"
		"       sallyport resources [--json]\n"
		"       sallyport up [--mode proxy|loopback|tun] [--socks ADDR] [--http-proxy ADDR]\n"
		"                    [--loopback-range CIDR] [--tun-range CIDR] [--tun-range6 CIDR|off]\n"
		"                    [--tun-device NAME] [--dns ADDR:PORT [--dns-upstream LIST]]\n"
		"                    [--no-system-dns] [--foreground]\n"
		"       sallyport down [--tun-device NAME]\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage();
		return 2;
	}
	const char *cmd = argv[1];
	char dir[STATE_PATH_MAX];
	struct sp_diag diag = {{0}};
	if (state_dir_open(dir, sizeof(dir), &diag) < 0)
		return fail("state directory", &diag);
	struct sp_log_config lc = {.program = "sallyport", .level = SP_LOG_INFO, .fd = 2};
	sp_log_set_default(&lc);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	int rc;
	if (strcmp(cmd, "login") == 0)
		rc = cmd_login(dir, argc, argv);
	else if (strcmp(cmd, "logout") == 0)
		rc = cmd_logout(dir);
	else if (strcmp(cmd, "status") == 0)
		rc = cmd_status(dir, argc, argv);
	else if (strcmp(cmd, "resources") == 0)
		rc = cmd_resources(dir, argc, argv);
	else if (strcmp(cmd, "up") == 0)
		rc = cmd_up(dir, argc, argv);
	else if (strcmp(cmd, "down") == 0)
		rc = cmd_down(dir, argc, argv);
	else {
		usage();
		rc = 2;
	}
	curl_global_cleanup();
	return rc;
}
