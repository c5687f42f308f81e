/*
 * sallyport-connector — runs inside a private network, dials out only, and carries the
 * flows the controller's grants and its own signed config allow (docs/connector.md).
 *
 *   sallyport-connector            run in the foreground (configured by SALLYPORT_* env)
 *   sallyport-connector health     exit 0 only when connected and ready (asks /healthz)
 *   sallyport-connector --help | --version
 */
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "connector/control.h"
#include "connector/dataplane.h"
#include "connector/http_client.h"
#include "connector/identity.h"
#include "connector/privdrop.h"
#include "shared/config.h"
#include "shared/log.h"

#define PROGRAM "sallyport-connector"
#define EXIT_USAGE 2

extern char **environ;

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"text", "json", NULL};

static const struct sp_config_key connector_schema[] = {
	{"url", SP_CONFIG_URL, NULL, "controller URL", SP_CONFIG_REQUIRED, 0, 0, NULL},
	{"enroll_token", SP_CONFIG_STRING, NULL,
	 "one-time enrollment token for the first start", SP_CONFIG_SECRET, 0, 0, NULL},
	{"state_dir", SP_CONFIG_PATH, "/var/lib/sallyport-connector",
	 "key and identity (created 0700)", 0, 0, 0, NULL},
	{"name", SP_CONFIG_STRING, NULL, "connector name at enrollment (default: host name)", 0,
	 0, 0, NULL},
	{"dns", SP_CONFIG_STRING, NULL, "resolvers for internal names, IP[:port],... (default: "
	 "the host's)", 0, 0, 0, NULL},
	{"direct_listen", SP_CONFIG_ADDRESS, NULL, "addr:port for direct tunnels", 0, 0, 0, NULL},
	{"direct_address", SP_CONFIG_ADDRESS, NULL,
	 "host:port clients dial for direct tunnels (default: direct_listen)", 0, 0, 0, NULL},
	{"metrics_addr", SP_CONFIG_ADDRESS, NULL, "addr:port for /metrics and /healthz", 0, 0, 0,
	 NULL},
	{"connect_timeout", SP_CONFIG_DURATION, "10s", "dialing an internal service", 0, 100,
	 300000, NULL},
	{"drain_timeout", SP_CONFIG_DURATION, "30s", "SIGTERM: grace period for live flows", 0, 0,
	 3600000, NULL},
	{"udp_idle_timeout", SP_CONFIG_DURATION, "60s", "a UDP flow closes after this long without a datagram",
	 0, 100, 3600000, NULL},
	{"user", SP_CONFIG_STRING, NULL,
	 "started as root: the unprivileged user to become once the state dir and listeners are "
	 "open (the state dir is handed to it)", 0, 0, 0, NULL},
	{"allow_root", SP_CONFIG_BOOL, "false",
	 "started as root without a user: keep running as root instead of refusing", 0, 0, 0,
	 NULL},
	{"log_level", SP_CONFIG_ENUM, "info", "debug, info, warn or error", 0, 0, 0, log_levels},
	{"log_format", SP_CONFIG_ENUM, "text", "text or json", 0, 0, 0, log_formats},
};
#define SCHEMA_COUNT (sizeof(connector_schema) / sizeof(connector_schema[0]))

static void usage(FILE *out)
{
	fprintf(out, "usage: " PROGRAM " [health] [--help] [--version]\n"
		     "\n"
		     "  (no command)   run the connector in the foreground\n"
		     "  health         exit 0 only when connected to the controller and ready to\n"
		     "                 carry flows (asks SALLYPORT_METRICS_ADDR/healthz)\n"
		     "\n"
		     "settings (environment SALLYPORT_<NAME>, or --name VALUE):\n");
	struct sp_buf help;
	sp_buf_init(&help, 1 << 20);
	if (sp_config_help(connector_schema, SCHEMA_COUNT, &help) == 0)
		fwrite(help.data, 1, help.len, out);
	sp_buf_free(&help);
}

static int command_health(const struct sp_config *cfg)
{
	const char *addr = sp_config_get_str(cfg, "metrics_addr");
	if (addr == NULL) {
		fprintf(stderr, PROGRAM " health: SALLYPORT_METRICS_ADDR is not set; the health "
				"check asks its /healthz\n");
		return 1;
	}
	char url[300];
	snprintf(url, sizeof(url), "http://%s", addr);
	struct connector_http_response resp;
	struct sp_diag d = {{0}};
	int r = connector_http(url, "GET", "/healthz", NULL, NULL, 5, 4096, NULL, &resp, &d);
	if (r < 0) {
		fprintf(stderr, PROGRAM " health: not running: %s\n", d.message);
		return 1;
	}
	int ok = resp.status == 200;
	fprintf(ok ? stdout : stderr, "%s", resp.body);
	connector_http_response_free(&resp);
	return ok ? 0 : 1;
}

static int command_run(const struct sp_config *cfg)
{
	int status = 1;
	struct connector_identity identity;
	struct connector_shared shared;
	struct dataplane *dp = NULL;
	pthread_t threads[2];
	int threads_started = 0;
	memset(&identity, 0, sizeof(identity));
	if (connector_shared_init(&shared) < 0) {
		fprintf(stderr, PROGRAM ": out of memory\n");
		return 1;
	}

	char hostname[256] = "connector";
	const char *name = sp_config_get_str(cfg, "name");
	if (name == NULL) {
		if (gethostname(hostname, sizeof(hostname) - 1) == -1)
			snprintf(hostname, sizeof(hostname), "connector");
		hostname[sizeof(hostname) - 1] = '\0';
		name = hostname;
	}
	const char *direct = sp_config_get_str(cfg, "direct_address");
	if (direct == NULL)
		direct = sp_config_get_str(cfg, "direct_listen");
	struct connector_enroll_params ep = {
		.state_dir = sp_config_get_str(cfg, "state_dir"),
		.controller_url = sp_config_get_str(cfg, "url"),
		.enroll_token = sp_config_get_str(cfg, "enroll_token"),
		.name = name,
		.direct_address = direct,
		.version = SALLYPORT_VERSION,
	};
	struct sp_diag d = {{0}};
	/* decided before enrollment, so a refusal does not spend the one-time token */
	const char *run_as = sp_config_get_str(cfg, "user");
	int allow_root = 0;
	(void)sp_config_get_bool(cfg, "allow_root", &allow_root);
	enum connector_privdrop_action drop;
	uid_t uid = 0;
	gid_t gid = 0;
	if (connector_privdrop_decide(geteuid(), run_as, allow_root, &drop, &d) < 0 ||
	    (drop == CONNECTOR_PRIVDROP_SWITCH &&
	     connector_privdrop_lookup(run_as, &uid, &gid, &d) < 0)) {
		fprintf(stderr, PROGRAM ": %s\n", d.message);
		goto out;
	}
	if (connector_identity_load_or_enroll(&ep, &identity, &d) < 0) {
		fprintf(stderr, PROGRAM ": %s\n", d.message);
		goto out;
	}
	if (drop == CONNECTOR_PRIVDROP_SWITCH &&
	    connector_privdrop_chown_state(ep.state_dir, uid, gid, &d) < 0) {
		fprintf(stderr, PROGRAM ": %s\n", d.message);
		goto out;
	}
	SP_LOG(SP_LOG_INFO, identity.enrolled_now ? "enrolled" : "identity loaded",
	       SP_LOG_STR("connector_id", identity.connector_id),
	       SP_LOG_STR("network_id", identity.network_id), SP_LOG_STR("state_dir", ep.state_dir));

	shared.controller_url = ep.controller_url;
	shared.identity = &identity;
	shared.direct_address = direct;
	shared.version = SALLYPORT_VERSION;

	struct dataplane_options opts = {
		.direct_listen = sp_config_get_str(cfg, "direct_listen"),
		.metrics_listen = sp_config_get_str(cfg, "metrics_addr"),
		.dns_servers = sp_config_get_str(cfg, "dns"),
	};
	sp_config_get_duration_ms(cfg, "connect_timeout", &opts.connect_timeout_ms);
	sp_config_get_duration_ms(cfg, "drain_timeout", &opts.drain_grace_ms);
	sp_config_get_duration_ms(cfg, "udp_idle_timeout", &opts.udp_idle_timeout_ms);
	if (dataplane_new(&shared, &opts, &dp, &d) < 0) {
		fprintf(stderr, PROGRAM ": %s\n", d.message);
		goto out;
	}
	/* everything that needed root is open: give it up before any thread starts */
	if ((drop == CONNECTOR_PRIVDROP_SWITCH ? connector_privdrop_apply(uid, gid, &d)
					       : connector_privdrop_no_new_privs(&d)) < 0) {
		fprintf(stderr, PROGRAM ": %s\n", d.message);
		goto out;
	}
	if (drop == CONNECTOR_PRIVDROP_SWITCH)
		SP_LOG(SP_LOG_INFO, "privileges dropped", SP_LOG_STR("user", run_as));
	else if (drop == CONNECTOR_PRIVDROP_STAY_ROOT)
		SP_LOG_MSG(SP_LOG_WARN, "running as root (SALLYPORT_ALLOW_ROOT is set)");
	if (connector_control_start(&shared, threads) < 0) {
		fprintf(stderr, PROGRAM ": cannot start the control threads\n");
		goto out;
	}
	threads_started = 1;
	SP_LOG(SP_LOG_INFO, "connector running", SP_LOG_STR("controller", ep.controller_url),
	       SP_LOG_STR("direct_listen", opts.direct_listen != NULL ? opts.direct_listen : ""),
	       SP_LOG_STR("metrics", opts.metrics_listen != NULL ? opts.metrics_listen : ""));
	status = dataplane_run(dp) < 0 ? 1 : 0;
	SP_LOG_MSG(SP_LOG_INFO, "connector stopped");
out:
	if (threads_started)
		connector_control_stop(&shared, threads);
	dataplane_free(dp);
	connector_shared_destroy(&shared);
	connector_identity_free(&identity);
	return status;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(argv[i], "--version") == 0) {
			printf(PROGRAM " %s\n", SALLYPORT_VERSION);
			return 0;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	struct sp_config cfg;
	struct sp_diag d = {{0}};
	if (sp_config_init(&cfg, connector_schema, SCHEMA_COUNT, &d) < 0) {
		fprintf(stderr, PROGRAM ": %s\n", d.message);
		return 1;
	}
	int rest = argc;
	if (sp_config_apply_env(&cfg, environ, &d) < 0 ||
	    sp_config_apply_args(&cfg, argc, argv, &rest, &d) < 0) {
		fprintf(stderr, PROGRAM ": configuration: %s\n", d.message);
		sp_config_free(&cfg);
		return EXIT_USAGE;
	}
	const char *cmd = rest < argc ? argv[rest] : NULL;
	if (cmd != NULL && strcmp(cmd, "health") != 0) {
		fprintf(stderr, PROGRAM ": unknown command \"%s\" (see " PROGRAM " --help)\n", cmd);
		sp_config_free(&cfg);
		return EXIT_USAGE;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	int status;
	if (cmd != NULL) {
		status = command_health(&cfg);
	} else if (sp_config_check_required(&cfg, &d) < 0) {
		fprintf(stderr, PROGRAM ": configuration: %s (set SALLYPORT_URL)\n", d.message);
		status = EXIT_USAGE;
	} else {
		struct sp_log_config log = {.fd = 2, .program = PROGRAM};
		sp_log_level_parse(sp_config_get_str(&cfg, "log_level"), &log.level, NULL);
		sp_log_format_parse(sp_config_get_str(&cfg, "log_format"), &log.format, NULL);
		sp_log_set_default(&log);
		status = command_run(&cfg);
	}
	sp_config_free(&cfg);
	curl_global_cleanup();
	return status;
}
