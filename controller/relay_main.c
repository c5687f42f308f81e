/*
 * sallyport-relay: the relay of controller/relay.h as its own process, for scale-out
 * (DESIGN.md §1: relays are stateless and scale out behind DNS or a load balancer).
 *
 * It needs nothing but the controller's public URL: it fetches the published JWKS from
 * /.well-known/jwks.json at start (and refuses to start without it), then again every
 * minute, handing each changed document to the relay. The controller publishes a new
 * signing key a day before it signs with it, so a minute's lag never refuses a ticket.
 *
 * Ownership: main owns the relay and the configuration; the relay thread owns its
 * connections; this (main) thread is the only caller of relay_sync_keys.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "controller/relay.h"
#include "shared/buf.h"
#include "shared/config.h"
#include "shared/log.h"

extern char **environ;

#define PROGRAM "sallyport-relay"
#define REFETCH_S 60

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"text", "json", NULL};

static const struct sp_config_key schema[] = {
	{"config", SP_CONFIG_PATH, NULL, "configuration file (key = value lines)",
	 SP_CONFIG_NOT_IN_FILE, 0, 0, NULL},
	{"controller_url", SP_CONFIG_URL, NULL,
	 "public URL of the controller whose tickets this relay accepts", SP_CONFIG_REQUIRED, 0, 0,
	 NULL},
	{"relay_listen", SP_CONFIG_ADDRESS, "127.0.0.1:8443", "address:port of the relay", 0, 0, 0,
	 NULL},
	{"relay_max_connections", SP_CONFIG_INT, "4096",
	 "most client connections the relay carries at once", 0, 1, 1000000, NULL},
	{"relay_max_per_client", SP_CONFIG_INT, "64",
	 "most client connections at once for one client IP address", 0, 1, 1000000, NULL},
	{"log_level", SP_CONFIG_ENUM, "info", "debug, info, warn or error", 0, 0, 0, log_levels},
	{"log_format", SP_CONFIG_ENUM, "text", "text or json", 0, 0, 0, log_formats},
};

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
	struct sp_buf *b = arg;
	return sp_buf_put(b, data, size * n) == 0 ? size * n : 0;
}

/* GET <url>/.well-known/jwks.json into out (bounded by SP_JWKS_DOC_MAX). */
static int fetch_jwks(const char *url, struct sp_buf *out, struct sp_diag *diag)
{
	char full[1024];
	size_t len = strlen(url);
	while (len > 0 && url[len - 1] == '/')
		len--;
	snprintf(full, sizeof(full), "%.*s/.well-known/jwks.json", (int)len, url);
	sp_buf_reset(out);
	CURL *curl = curl_easy_init();
	if (curl == NULL)
		return sp_diag_set(diag, SP_ERR_NOMEM, "cannot start an HTTP client");
	long status = 0;
	curl_easy_setopt(curl, CURLOPT_URL, full);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	CURLcode rc = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(curl);
	if (rc != CURLE_OK)
		return sp_diag_set(diag, SP_ERR_IO, "%s: %s", full, curl_easy_strerror(rc));
	if (status != 200)
		return sp_diag_set(diag, SP_ERR_IO, "%s answered %ld", full, status);
	return 0;
}

int main(int argc, char **argv)
{
	struct sp_config cfg;
	struct sp_diag d;
	struct sp_log_config log;
	struct relay *relay = NULL;
	struct sp_buf doc;
	int rest = 0, status = 1;
	sigset_t signals;
	memset(&d, 0, sizeof(d));
	sp_buf_init(&doc, SP_JWKS_DOC_MAX);
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			struct sp_buf help;
			sp_buf_init(&help, 1 << 20);
			printf("usage: " PROGRAM " [OPTIONS]\n\noptions (also SALLYPORT_<NAME> in the "
			       "environment, or NAME = value in the --config file):\n");
			if (sp_config_help(schema, sizeof(schema) / sizeof(schema[0]), &help) == 0)
				fwrite(help.data, 1, help.len, stdout);
			sp_buf_free(&help);
			return 0;
		}
	if (sp_config_init(&cfg, schema, sizeof(schema) / sizeof(schema[0]), &d) < 0 ||
	    sp_config_apply_env(&cfg, environ, &d) < 0 ||
	    sp_config_apply_args(&cfg, argc, argv, &rest, &d) < 0 ||
	    (sp_config_get_str(&cfg, "config") != NULL &&
	     sp_config_load_file(&cfg, sp_config_get_str(&cfg, "config"), &d) < 0) ||
	    sp_config_check_required(&cfg, &d) < 0) {
		fprintf(stderr, PROGRAM ": configuration: %s\n", d.message);
		sp_config_free(&cfg);
		return 2;
	}
	if (rest < argc) {
		fprintf(stderr, PROGRAM ": unexpected argument \"%s\"\n", argv[rest]);
		sp_config_free(&cfg);
		return 2;
	}
	memset(&log, 0, sizeof(log));
	log.fd = STDERR_FILENO;
	log.program = PROGRAM;
	if (sp_log_level_parse(sp_config_get_str(&cfg, "log_level"), &log.level, &d) < 0 ||
	    sp_log_format_parse(sp_config_get_str(&cfg, "log_format"), &log.format, &d) < 0) {
		fprintf(stderr, PROGRAM ": configuration: %s\n", d.message);
		sp_config_free(&cfg);
		return 2;
	}
	sp_log_set_default(&log);

	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);
	signal(SIGPIPE, SIG_IGN);
	curl_global_init(CURL_GLOBAL_DEFAULT);

	const char *url = sp_config_get_str(&cfg, "controller_url");
	int64_t max_conn = 0, max_per_client = 0;
	(void)sp_config_get_int(&cfg, "relay_max_connections", &max_conn);
	(void)sp_config_get_int(&cfg, "relay_max_per_client", &max_per_client);
	if (fetch_jwks(url, &doc, &d) < 0) {
		fprintf(stderr, PROGRAM ": the controller's keys: %s\n", d.message);
		goto out;
	}
	struct relay_options o = {.listen = sp_config_get_str(&cfg, "relay_listen"),
	                          .jwks_document = (const char *)doc.data,
	                          .jwks_length = doc.len,
	                          .max_connections = (size_t)max_conn,
	                          .max_per_client = (size_t)max_per_client};
	if (relay_start(&o, &relay, &d) < 0) {
		fprintf(stderr, PROGRAM ": %s\n", d.message);
		goto out;
	}
	SP_LOG(SP_LOG_INFO, "relay started", SP_LOG_STR("listen", o.listen),
	       SP_LOG_INT("port", relay_port(relay)), SP_LOG_STR("controller", url));
	for (;;) {
		struct timespec wait = {REFETCH_S, 0};
		int sig = sigtimedwait(&signals, NULL, &wait);
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig >= 0)
			continue;
		if (fetch_jwks(url, &doc, &d) < 0) {
			SP_LOG(SP_LOG_WARN, "key refresh failed", SP_LOG_STR("reason", d.message));
			continue;
		}
		relay_sync_keys(relay, (const char *)doc.data, doc.len);
	}
	SP_LOG_MSG(SP_LOG_INFO, "stopping");
	status = 0;
out:
	relay_free(relay);
	sp_buf_free(&doc);
	sp_config_free(&cfg);
	curl_global_cleanup();
	return status;
}
