/* controller/settings.c — see settings.h. */
#include "controller/settings.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"text", "json", NULL};
static const char *const token_auth_methods[] = {"client_secret_basic", "client_secret_post", NULL};

#define MINUTE_MS (60 * 1000LL)
#define DAY_MS (24 * 60 * MINUTE_MS)

const struct sp_config_key controller_schema[] = {
	{"config", SP_CONFIG_PATH, NULL, "configuration file (key = value lines)",
	 SP_CONFIG_NOT_IN_FILE, 0, 0, NULL},
	{"public_url", SP_CONFIG_URL, "http://127.0.0.1:8080",
	 "URL at which clients, connectors and browsers reach this controller", 0, 0, 0, NULL},
	{"http_listen", SP_CONFIG_ADDRESS, "127.0.0.1:8080", "address:port of the HTTP(S) listener",
	 0, 0, 0, NULL},
	{"relay_listen", SP_CONFIG_ADDRESS, "127.0.0.1:8443", "address:port of the tunnel relay", 0,
	 0, 0, NULL},
	{"relay_public", SP_CONFIG_STRING, NULL,
	 "comma-separated host:port list of the relays connectors and clients dial (at most 8; "
	 "default: relay_listen with the port it bound)", 0, 0, 0, NULL},
	{"relay_max_connections", SP_CONFIG_INT, "4096",
	 "most client connections the relay carries at once", 0, 1, 1000000, NULL},
	{"relay_max_per_client", SP_CONFIG_INT, "64",
	 "most client connections the relay carries at once for one client IP address", 0, 1,
	 1000000, NULL},
	{"tls_cert", SP_CONFIG_PATH, NULL, "PEM certificate chain for HTTPS (with tls_key)", 0, 0,
	 0, NULL},
	{"tls_key", SP_CONFIG_PATH, NULL, "PEM private key for HTTPS, mode 0600", 0, 0, 0, NULL},
	{"plain_http", SP_CONFIG_BOOL, "false",
	 "serve plain HTTP on a non-loopback address (behind a TLS-terminating proxy only)", 0, 0,
	 0, NULL},
	{"state_dir", SP_CONFIG_PATH, "/var/lib/sallyport-controller",
	 "directory for the database and other state (created 0700)", 0, 0, 0, NULL},
	{"database", SP_CONFIG_STRING, NULL,
	 "sqlite:PATH (default: controller.db in state_dir) or postgres://...", SP_CONFIG_SECRET,
	 0, 0, NULL},
	{"oidc_issuer", SP_CONFIG_URL, NULL, "OpenID Connect issuer of the company IdP", 0, 0, 0,
	 NULL},
	{"oidc_client_id", SP_CONFIG_STRING, NULL, "client id registered at the IdP", 0, 0, 0, NULL},
	{"oidc_client_secret", SP_CONFIG_STRING, NULL, "client secret registered at the IdP",
	 SP_CONFIG_SECRET, 0, 0, NULL},
	{"oidc_token_auth", SP_CONFIG_ENUM, "client_secret_basic",
	 "how the controller authenticates at the IdP's token endpoint: client_secret_basic or "
	 "client_secret_post (as registered at the IdP)", 0, 0, 0, token_auth_methods},
	{"oidc_groups_claim", SP_CONFIG_STRING, "groups",
	 "ID token or userinfo claim listing the user's groups", 0, 0, 0, NULL},
	{"admin_emails", SP_CONFIG_STRING, NULL,
	 "comma-separated e-mail addresses made console admins at their first sign-in", 0, 0, 0,
	 NULL},
	{"grant_ttl", SP_CONFIG_DURATION, "5m", "lifetime of flow grants", 0, 30 * 1000LL,
	 60 * MINUTE_MS, NULL},
	{"session_ttl", SP_CONFIG_DURATION, "30d", "lifetime of a client session without sign-in",
	 0, 60 * MINUTE_MS, 366 * DAY_MS, NULL},
	{"log_level", SP_CONFIG_ENUM, "info", "debug, info, warn or error", 0, 0, 0, log_levels},
	{"log_format", SP_CONFIG_ENUM, "text", "text or json", 0, 0, 0, log_formats},
};
const size_t controller_schema_count = sizeof(controller_schema) / sizeof(controller_schema[0]);

static int copy_setting(const struct sp_config *cfg, const char *key, char *out, size_t size,
                        struct sp_diag *diag)
{
	const char *v = sp_config_get_str(cfg, key);
	if (v == NULL) {
		out[0] = '\0';
		return 0;
	}
	if (strlen(v) >= size)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "setting %s is longer than %zu bytes", key,
		                   size - 1);
	memcpy(out, v, strlen(v) + 1);
	return 0;
}

static int address_is_loopback(const char *address)
{
	return strncmp(address, "127.", 4) == 0 || strncmp(address, "[::1]:", 6) == 0 ||
	       strncmp(address, "localhost:", 10) == 0;
}

int settings_relay_public_check(const char *list, struct sp_diag *diag)
{
	size_t count = 0;
	const char *p = list;
	for (;;) {
		const char *end = strchr(p, ',');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
		char item[SP_CONFIG_HOST_MAX + 8];
		char host[SP_CONFIG_HOST_MAX];
		uint16_t port = 0;
		if (len == 0 || len >= sizeof(item))
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "relay_public: entry %zu must be host:port", count + 1);
		memcpy(item, p, len);
		item[len] = '\0';
		if (sp_config_parse_address(item, host, sizeof(host), &port, NULL) < 0 || port == 0)
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "relay_public: \"%s\" is not host:port", item);
		if (++count > SETTINGS_RELAY_PUBLIC_MAX)
			return sp_diag_set(diag, SP_ERR_INVALID, "relay_public: at most %d relays",
			                   SETTINGS_RELAY_PUBLIC_MAX);
		if (end == NULL)
			return 0;
		p = end + 1;
	}
}

int settings_load(struct sp_config *cfg, int argc, char *const argv[], char *const envp[],
                  struct controller_settings *out, struct sp_log_config *log,
                  struct sp_diag *diag)
{
	int r;
	int rest = 0;
	memset(out, 0, sizeof(*out));
	if ((r = sp_config_init(cfg, controller_schema, controller_schema_count, diag)) < 0)
		return r;
	if ((r = sp_config_apply_env(cfg, envp, diag)) < 0)
		return r;
	if ((r = sp_config_apply_args(cfg, argc, argv, &rest, diag)) < 0)
		return r;
	if (rest < argc)
		return sp_diag_set(diag, SP_ERR_INVALID, "unexpected argument \"%s\"", argv[rest]);
	const char *file = sp_config_get_str(cfg, "config");
	if (file != NULL && (r = sp_config_load_file(cfg, file, diag)) < 0)
		return r;

	if ((r = copy_setting(cfg, "public_url", out->public_url, sizeof(out->public_url), diag)) ||
	    (r = copy_setting(cfg, "http_listen", out->http_listen, sizeof(out->http_listen), diag)) ||
	    (r = copy_setting(cfg, "relay_listen", out->relay_listen, sizeof(out->relay_listen),
	                      diag)) ||
	    (r = copy_setting(cfg, "relay_public", out->relay_public, sizeof(out->relay_public),
	                      diag)) ||
	    (r = copy_setting(cfg, "tls_cert", out->tls_cert, sizeof(out->tls_cert), diag)) ||
	    (r = copy_setting(cfg, "tls_key", out->tls_key, sizeof(out->tls_key), diag)) ||
	    (r = copy_setting(cfg, "state_dir", out->state_dir, sizeof(out->state_dir), diag)) ||
	    (r = copy_setting(cfg, "database", out->database, sizeof(out->database), diag)) ||
	    (r = copy_setting(cfg, "oidc_issuer", out->oidc_issuer, sizeof(out->oidc_issuer), diag)) ||
	    (r = copy_setting(cfg, "oidc_client_id", out->oidc_client_id,
	                      sizeof(out->oidc_client_id), diag)) ||
	    (r = copy_setting(cfg, "oidc_client_secret", out->oidc_client_secret,
	                      sizeof(out->oidc_client_secret), diag)) ||
	    (r = copy_setting(cfg, "oidc_token_auth", out->oidc_token_auth,
	                      sizeof(out->oidc_token_auth), diag)) ||
	    (r = copy_setting(cfg, "oidc_groups_claim", out->oidc_groups_claim,
	                      sizeof(out->oidc_groups_claim), diag)) ||
	    (r = copy_setting(cfg, "admin_emails", out->admin_emails, sizeof(out->admin_emails),
	                      diag)))
		return r;
	/* A trailing slash would make every URL built from public_url differ from the issuer. */
	size_t url_len = strlen(out->public_url);
	while (url_len > 0 && out->public_url[url_len - 1] == '/')
		out->public_url[--url_len] = '\0';
	if (out->database[0] == '\0') {
		int n = snprintf(out->database, sizeof(out->database), "sqlite:%s/controller.db",
		                 out->state_dir);
		if (n < 0 || (size_t)n >= sizeof(out->database))
			return sp_diag_set(diag, SP_ERR_TOO_LARGE, "state_dir is too long");
	}
	int64_t ms = 0;
	(void)sp_config_get_duration_ms(cfg, "grant_ttl", &ms);
	out->grant_ttl_s = ms / 1000;
	(void)sp_config_get_duration_ms(cfg, "session_ttl", &ms);
	out->session_ttl_s = ms / 1000;
	(void)sp_config_get_bool(cfg, "plain_http", &out->plain_http);
	(void)sp_config_get_int(cfg, "relay_max_connections", &out->relay_max_connections);
	(void)sp_config_get_int(cfg, "relay_max_per_client", &out->relay_max_per_client);

	if (out->relay_public[0] != '\0' &&
	    (r = settings_relay_public_check(out->relay_public, diag)) < 0)
		return r;
	if ((out->tls_cert[0] == '\0') != (out->tls_key[0] == '\0'))
		return sp_diag_set(diag, SP_ERR_INVALID, "tls_cert and tls_key must be set together");
	if (out->tls_cert[0] == '\0' && !out->plain_http && !address_is_loopback(out->http_listen))
		return sp_diag_set(diag, SP_ERR_INVALID,
		                   "http_listen %s is not a loopback address: set tls_cert and tls_key, "
		                   "or plain_http = true when a TLS-terminating proxy is in front",
		                   out->http_listen);
	int oidc_set = (out->oidc_issuer[0] != '\0') + (out->oidc_client_id[0] != '\0');
	if (oidc_set == 1)
		return sp_diag_set(diag, SP_ERR_INVALID,
		                   "oidc_issuer and oidc_client_id must be set together");

	memset(log, 0, sizeof(*log));
	log->fd = STDERR_FILENO;
	log->program = "sallyport-controller";
	if ((r = sp_log_level_parse(sp_config_get_str(cfg, "log_level"), &log->level, diag)) < 0 ||
	    (r = sp_log_format_parse(sp_config_get_str(cfg, "log_format"), &log->format, diag)) < 0)
		return r;
	return 0;
}

int settings_sqlite_path(const struct controller_settings *s, const char **path,
                         struct sp_diag *diag)
{
	*path = NULL;
	if (strncmp(s->database, "sqlite:", 7) == 0 && s->database[7] != '\0') {
		*path = s->database + 7;
		return 0;
	}
	if (strncmp(s->database, "postgres://", 11) == 0 ||
	    strncmp(s->database, "postgresql://", 13) == 0)
		return sp_diag_set(diag, SP_ERR_UNSUPPORTED,
		                   "database: PostgreSQL is not available in this build yet; use sqlite:PATH");
	return sp_diag_set(diag, SP_ERR_INVALID, "database must be sqlite:PATH or postgres://...");
}
