/*
 * sallyport-controller: the control plane. See `sallyport-controller --help`.
 *
 *   serve                                   run the controller
 *   migrate                                 apply database migrations (idempotent)
 *   admin-key create --name N [--role R]    print a new admin API key once
 *   connector-token create --network NAME   print a one-time connector enrollment token
 *
 * Every command takes the configuration flags listed by --help, the same keys as
 * SALLYPORT_* variables, and --config FILE.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "controller/admin_api.h"
#include "controller/apikey.h"
#include "controller/app.h"
#include "controller/audit.h"
#include "controller/auth.h"
#include "controller/feed_api.h"
#include "controller/policy.h"
#include "controller/settings.h"
#include "controller/store.h"
#include "shared/secret.h"

extern char **environ;

#define PROGRAM "sallyport-controller"
#define EXIT_USAGE 2

static int64_t wall_clock_s(void)
{
	return (int64_t)time(NULL);
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: " PROGRAM " COMMAND [OPTIONS]\n"
	        "\n"
	        "commands:\n"
	        "  serve                                    run the controller\n"
	        "  migrate                                  apply database migrations\n"
	        "  admin-key create --name NAME [--role admin|auditor]\n"
	        "                                           print a new admin API key (once)\n"
	        "  connector-token create --network NAME [--ttl 24h]\n"
	        "                                           print a one-time enrollment token\n"
	        "\n"
	        "  --help, --version\n"
	        "\n"
	        "options (each also as SALLYPORT_<NAME> in the environment, or NAME = value in\n"
	        "the --config file; flags win over the environment, which wins over the file):\n");
	struct sp_buf help;
	sp_buf_init(&help, 1 << 20);
	if (sp_config_help(controller_schema, controller_schema_count, &help) == 0)
		fwrite(help.data, 1, help.len, out);
	sp_buf_free(&help);
}

static int fail_usage(const char *message)
{
	fprintf(stderr, PROGRAM ": %s (see " PROGRAM " --help)\n", message);
	return EXIT_USAGE;
}

static int fail(const char *what, const struct sp_diag *diag)
{
	fprintf(stderr, PROGRAM ": %s: %s\n", what, diag->message);
	return 1;
}

/*
 * Command options that are not configuration keys (--name, --role, --network, --ttl) are
 * taken out of argv here; everything else goes to the configuration parser.
 */
struct command_options {
	const char *name;
	const char *role;
	const char *network;
	const char *ttl;
};

static int split_options(int argc, char **argv, int first, const char *const *accepted,
                         struct command_options *opts, int *config_argc, char **config_argv)
{
	*config_argc = 0;
	config_argv[(*config_argc)++] = argv[0];
	for (int i = first; i < argc; i++) {
		const char *a = argv[i];
		int taken = 0;
		for (size_t k = 0; accepted[k] != NULL; k++) {
			size_t n = strlen(accepted[k]);
			const char **slot = strcmp(accepted[k], "--name") == 0      ? &opts->name
			                    : strcmp(accepted[k], "--role") == 0    ? &opts->role
			                    : strcmp(accepted[k], "--network") == 0 ? &opts->network
			                                                            : &opts->ttl;
			if (strcmp(a, accepted[k]) == 0) {
				if (i + 1 >= argc) {
					fprintf(stderr, PROGRAM ": %s needs a value\n", a);
					return -1;
				}
				*slot = argv[++i];
				taken = 1;
			} else if (strncmp(a, accepted[k], n) == 0 && a[n] == '=') {
				*slot = a + n + 1;
				taken = 1;
			}
		}
		if (!taken)
			config_argv[(*config_argc)++] = argv[i];
	}
	config_argv[*config_argc] = NULL;
	return 0;
}

/* Creates the state directory (0700) when it does not exist. */
static int ensure_state_dir(const char *dir, struct sp_diag *diag)
{
	if (mkdir(dir, 0700) == -1 && errno != EEXIST)
		return sp_diag_set(diag, SP_ERR_IO, "cannot create state directory %s: %s", dir,
		                   strerror(errno));
	return 0;
}

/* Opens the database and brings its schema up to date. */
static int open_store(const struct controller_settings *s, struct db **db, int *applied,
		      struct sp_diag *diag)
{
	const char *path = NULL;
	int r = settings_sqlite_path(s, &path, diag);
	if (r < 0)
		return r;
	if ((r = ensure_state_dir(s->state_dir, diag)) < 0)
		return r;
	if ((r = db_open(&db_sqlite_driver, path, 0, db, diag)) < 0)
		return r;
	if ((r = db_migrate(*db, applied, diag)) < 0) {
		db_close(*db);
		*db = NULL;
	}
	return r;
}

static int command_migrate(const struct controller_settings *s)
{
	struct sp_diag d;
	struct db *db = NULL;
	int applied = 0, version = 0;
	if (open_store(s, &db, &applied, &d) < 0)
		return fail("migrate", &d);
	db_schema_version(db, &version);
	printf("database %s: applied %d migration%s; schema version %d\n", s->database + 7, applied,
	       applied == 1 ? "" : "s", version);
	db_close(db);
	return 0;
}

static int command_admin_key(const struct controller_settings *s, const struct command_options *o)
{
	struct sp_diag d;
	struct db *db = NULL;
	int applied = 0;
	if (o->name == NULL)
		return fail_usage("admin-key create needs --name NAME");
	const char *role = o->role != NULL ? o->role : "admin";
	if (open_store(s, &db, &applied, &d) < 0)
		return fail("admin-key create", &d);
	char key[SP_SECRET_TEXT_MAX], id[33];
	int64_t now = wall_clock_s();
	int r = db_begin_immediate(db) == 0 ? 0 : SP_ERR_DATABASE;
	if (r == 0)
		r = apikey_create(db, o->name, role, now, key, id, &d);
	if (r == 0) {
		json_t *after = json_pack("{s:s, s:s, s:s}", "id", id, "name", o->name, "role", role);
		struct audit_event e = {.time = now, .actor_type = "system", .actor_label = "command line",
		                        .action = "api_key.create", .target_type = "api_key",
		                        .target_id = id, .after = after};
		r = audit_record(db, &e);
		json_decref(after);
		if (r < 0)
			sp_diag_set(&d, r, "cannot record the audit event: %s", db_errmsg(db));
	}
	if (r == 0 && db_commit(db) != 0)
		r = sp_diag_set(&d, SP_ERR_DATABASE, "commit: %s", db_errmsg(db));
	if (r < 0) {
		db_rollback(db);
		db_close(db);
		return fail("admin-key create", &d);
	}
	/* The key alone on stdout, so scripts can capture it; the rest for the person. */
	printf("%s\n", key);
	fprintf(stderr, "created %s API key \"%s\" (id %s); it is shown only this once\n", role,
	        o->name, id);
	db_close(db);
	return 0;
}

static int command_connector_token(const struct controller_settings *s,
                                   const struct command_options *o)
{
	struct sp_diag d;
	struct db *db = NULL;
	struct db_stmt *st = NULL;
	int applied = 0;
	if (o->network == NULL)
		return fail_usage("connector-token create needs --network NAME");
	int64_t ttl_ms = 24 * 3600 * 1000LL;
	if (o->ttl != NULL && (sp_config_parse_duration(o->ttl, &ttl_ms, &d) < 0 || ttl_ms < 60000 ||
	                       ttl_ms > 30LL * 24 * 3600 * 1000))
		return fail_usage("--ttl must be a duration between 1m and 30d, such as 24h");
	if (open_store(s, &db, &applied, &d) < 0)
		return fail("connector-token create", &d);
	int r = SP_ERR_DATABASE;
	char network_id[33] = "";
	char token[SP_SECRET_TEXT_MAX], id[33];
	int64_t now = wall_clock_s();
	if (db_begin_immediate(db) != 0)
		goto out;
	if (db_prepare(db, "SELECT id FROM remote_networks WHERE name = ?", &st) != 0)
		goto out;
	db_bind_text(st, 1, o->network, -1, DB_STATIC);
	if (db_step(st) != DB_ROW) {
		r = sp_diag_set(&d, SP_ERR_NOT_FOUND,
		                "there is no remote network named \"%s\" (create it with POST "
		                "/api/v1/remote-networks)", o->network);
		goto out;
	}
	snprintf(network_id, sizeof(network_id), "%s", (const char *)db_column_text(st, 0));
	db_finalize(st);
	st = NULL;
	json_t *after = NULL;
	r = admin_connector_token_create(db, network_id, now, ttl_ms / 1000, token, id, &after, &d);
	if (r < 0)
		goto out;
	struct audit_event e = {.time = now, .actor_type = "system", .actor_label = "command line",
	                        .action = "connector_token.create",
	                        .target_type = "connector_enrollment_token", .target_id = id,
	                        .after = after};
	r = audit_record(db, &e);
	json_decref(after);
	if (r == 0 && db_commit(db) != 0)
		r = SP_ERR_DATABASE;
out:
	if (r == SP_ERR_DATABASE)
		sp_diag_set(&d, r, "database: %s", db_errmsg(db));
	else if (r < 0 && d.message[0] == '\0')
		sp_diag_set(&d, r, "%s", sp_strerror(r));
	db_finalize(st);
	if (r < 0) {
		db_rollback(db);
		db_close(db);
		return fail("connector-token create", &d);
	}
	printf("%s\n", token);
	fprintf(stderr, "enrollment token for network \"%s\", valid until %lld (unix time), usable "
	        "once; start the connector with SALLYPORT_ENROLL_TOKEN set to it\n", o->network,
	        (long long)(now + ttl_ms / 1000));
	db_close(db);
	return 0;
}

static void register_metrics(struct controller *c)
{
	struct controller_metrics *m = &c->metrics;
	*m = (struct controller_metrics){
		.http_requests = {.name = "sallyport_controller_http_requests_total",
		                  .help = "HTTP requests answered.", .type = SP_METRIC_COUNTER},
		.api_errors = {.name = "sallyport_controller_http_errors_total",
		               .help = "HTTP requests answered with a 4xx or 5xx status.",
		               .type = SP_METRIC_COUNTER},
		.grants_issued = {.name = "sallyport_controller_grants_issued_total",
		                  .help = "Flow grants signed.", .type = SP_METRIC_COUNTER},
		.sign_ins = {.name = "sallyport_controller_sign_ins_total",
		             .help = "Successful sign-ins.", .type = SP_METRIC_COUNTER},
		.sign_in_failures = {.name = "sallyport_controller_sign_in_failures_total",
		                     .help = "Refused sign-ins.", .type = SP_METRIC_COUNTER},
		.feed_waiters = {.name = "sallyport_controller_feed_waiters",
		                 .help = "Long polls waiting for a change.", .type = SP_METRIC_GAUGE},
	};
	struct sp_metric *all[] = {&m->http_requests, &m->api_errors, &m->grants_issued,
	                           &m->sign_ins, &m->sign_in_failures, &m->feed_waiters};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		(void)sp_metrics_register(&c->metrics_registry, all[i]);
	relay_metrics_register(&m->relay, &c->metrics_registry);
}

static void count_response(struct http_request *req, void *app)
{
	struct controller *c = app;
	sp_metric_add(&c->metrics.http_requests, 1);
	if (req->status >= 400)
		sp_metric_add(&c->metrics.api_errors, 1);
	if (req->status >= 500 || sp_log_enabled(SP_LOG_DEBUG))
		SP_LOG(req->status >= 500 ? SP_LOG_WARN : SP_LOG_DEBUG, "request",
		       SP_LOG_STR("method", req->method), SP_LOG_STR("path", req->path),
		       SP_LOG_UINT("status", req->status), SP_LOG_STR("request_id", req->request_id),
		       SP_LOG_STR("client", req->client_address));
}

static char *read_file_text(const char *path, struct sp_diag *diag)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		sp_diag_set(diag, SP_ERR_IO, "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	struct sp_buf b;
	sp_buf_init(&b, 1 << 20);
	char chunk[4096];
	size_t n;
	int r = 0;
	while (r == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		r = sp_buf_put(&b, chunk, n);
	fclose(f);
	if (r < 0 || sp_buf_cstr(&b) == NULL) {
		sp_buf_free_secret(&b);
		sp_diag_set(diag, SP_ERR_TOO_LARGE, "%s is larger than 1 MiB", path);
		return NULL;
	}
	return (char *)b.data;
}

static int command_serve(struct controller *c, struct sp_config *cfg)
{
	struct sp_diag d;
	int applied = 0;
	int status = 1;
	char *cert = NULL, *key = NULL;
	sigset_t signals;

	/* Signals are taken synchronously by this thread; block them before any thread starts. */
	sigemptyset(&signals);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	c->now = wall_clock_s;
	register_metrics(c);
	if (open_store(&c->settings, &c->db, &applied, &d) < 0) {
		fail("database", &d);
		goto out;
	}
	if (applied > 0)
		SP_LOG(SP_LOG_INFO, "database migrated", SP_LOG_INT("applied", applied));
	if (authority_open(&c->authority, c->db, NULL, c->now(), &d) < 0) {
		fail("signing keys", &d);
		goto out;
	}
	if (feed_new(store_latest_change(c), 50, &c->feed) < 0) {
		fprintf(stderr, PROGRAM ": cannot start the change feed\n");
		goto out;
	}
	const char *db_path = NULL;
	if (settings_sqlite_path(&c->settings, &db_path, &d) < 0 ||
	    change_watch_start(db_driver_of(c->db), db_path, c->feed, 0, &c->change_watch, &d) <
		0) {
		fail("change feed", &d);
		goto out;
	}
	if (auth_open(c, &d) < 0) {
		fail("sign-in", &d);
		goto out;
	}
	if (c->settings.tls_cert[0] != '\0') {
		cert = read_file_text(c->settings.tls_cert, &d);
		key = cert != NULL ? read_file_text(c->settings.tls_key, &d) : NULL;
		if (key == NULL) {
			fail("TLS", &d);
			goto out;
		}
	}
	/* The relay takes its own copy of the published keys; the gate hands it new ones after
	 * each rotation. A relay that cannot listen leaves the controller serving the API and
	 * direct tunnels, and says so. */
	size_t jwks_len = 0;
	const char *jwks = authority_jwks(&c->authority, &jwks_len);
	struct relay_options ro = {.listen = c->settings.relay_listen,
	                           .jwks_document = jwks,
	                           .jwks_length = jwks_len,
	                           .max_connections = (size_t)c->settings.relay_max_connections,
	                           .max_per_client = (size_t)c->settings.relay_max_per_client,
	                           .metrics = &c->metrics.relay,
	                           .now = c->now};
	if (relay_start(&ro, &c->relay, &d) < 0)
		SP_LOG(SP_LOG_ERROR, "relay not started", SP_LOG_STR("reason", d.message));
	else
		SP_LOG(SP_LOG_INFO, "relay started", SP_LOG_STR("listen", c->settings.relay_listen),
		       SP_LOG_INT("port", relay_port(c->relay)));
	size_t route_count = 0;
	const struct route *routes = controller_routes(&route_count);
	struct http_server_options o = {.listen = c->settings.http_listen,
	                                .routes = routes,
	                                .route_count = route_count,
	                                .app = c,
	                                .gate = controller_gate,
	                                .on_response = count_response,
	                                .tls_cert_pem = cert,
	                                .tls_key_pem = key};
	if (http_server_start(&o, &c->http, &d) < 0) {
		fail("http", &d);
		goto out;
	}
	c->ready = 1;
	SP_LOG(SP_LOG_INFO, "controller started", SP_LOG_STR("listen", c->settings.http_listen),
	       SP_LOG_INT("port", http_server_port(c->http)),
	       SP_LOG_STR("public_url", c->settings.public_url),
	       SP_LOG_STR("database", c->settings.database + 7 /* sqlite: a path, no secret */));

	for (;;) {
		int sig = 0;
		if (sigwait(&signals, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			/* Reload what can change without a restart: the log level and format. */
			struct sp_config fresh;
			struct controller_settings ignored;
			struct sp_log_config log;
			char *empty[] = {PROGRAM, NULL};
			if (settings_load(&fresh, 1, empty, environ, &ignored, &log, &d) == 0) {
				sp_log_set_default(&log);
				SP_LOG_MSG(SP_LOG_INFO, "configuration reloaded (log settings)");
			} else {
				SP_LOG(SP_LOG_WARN, "configuration reload refused", SP_LOG_STR("reason", d.message));
			}
			sp_config_free(&fresh);
			continue;
		}
		SP_LOG(SP_LOG_INFO, "stopping", SP_LOG_STR("signal", sig == SIGTERM ? "TERM" : "INT"));
		break;
	}
	status = 0;
out:
	(void)cfg;
	c->ready = 0;
	if (c->feed != NULL) {
		/* Held long polls answer at once now (the controller is no longer ready); give
		 * the server up to two seconds to send those answers before it stops. */
		feed_wake_all(c->feed);
		for (int i = 0; i < 200 && feed_api_open_polls() > 0; i++) {
			struct timespec pause = {0, 10 * 1000000L};
			nanosleep(&pause, NULL);
			feed_wake_all(c->feed);
		}
	}
	relay_stop(c->relay); /* its connections end; the gate may still hand it keys */
	auth_drain(c);             /* sign-in workers resume their requests first */
	http_server_stop(c->http); /* finishes requests in flight */
	relay_free(c->relay);
	c->relay = NULL;
	change_watch_stop(c->change_watch); /* publishes to the feed: stopped before it */
	auth_close(c);
	feed_free(c->feed);
	policy_state_free(c);
	authority_close(&c->authority);
	controller_gate_forget_keys();
	db_close(c->db);
	if (key != NULL) {
		OPENSSL_cleanse(key, strlen(key));
		free(key);
	}
	free(cert);
	return status;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return fail_usage("missing command: serve, migrate, admin-key create or "
		                  "connector-token create");
	const char *cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "--version") == 0) {
		printf(PROGRAM " %s\n", SALLYPORT_VERSION);
		return 0;
	}
	int first = 2;
	static const char *const no_options[] = {NULL};
	static const char *const key_options[] = {"--name", "--role", NULL};
	static const char *const token_options[] = {"--network", "--ttl", NULL};
	const char *const *accepted = no_options;
	if (strcmp(cmd, "admin-key") == 0 || strcmp(cmd, "connector-token") == 0) {
		if (argc < 3 || strcmp(argv[2], "create") != 0)
			return fail_usage(strcmp(cmd, "admin-key") == 0 ? "usage: admin-key create --name NAME"
			                                                : "usage: connector-token create "
			                                                  "--network NAME");
		first = 3;
		accepted = strcmp(cmd, "admin-key") == 0 ? key_options : token_options;
	} else if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "migrate") != 0) {
		char message[160];
		snprintf(message, sizeof(message), "unknown command \"%.64s\"", cmd);
		return fail_usage(message);
	}
	for (int i = first; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		}

	struct command_options opts = {0};
	char **config_argv = calloc((size_t)argc + 1, sizeof(char *));
	int config_argc = 0;
	if (config_argv == NULL)
		return 1;
	if (split_options(argc, argv, first, accepted, &opts, &config_argc, config_argv) < 0) {
		free(config_argv);
		return EXIT_USAGE;
	}

	static struct controller c;
	struct sp_config cfg;
	struct sp_log_config log;
	struct sp_diag d;
	memset(&d, 0, sizeof(d));
	int r = settings_load(&cfg, config_argc, config_argv, environ, &c.settings, &log, &d);
	free(config_argv);
	if (r < 0) {
		sp_config_free(&cfg);
		fprintf(stderr, PROGRAM ": configuration: %s\n", d.message);
		return EXIT_USAGE;
	}
	sp_log_set_default(&log);
	curl_global_init(CURL_GLOBAL_DEFAULT);

	int status;
	if (strcmp(cmd, "serve") == 0)
		status = command_serve(&c, &cfg);
	else if (strcmp(cmd, "migrate") == 0)
		status = command_migrate(&c.settings);
	else if (strcmp(cmd, "admin-key") == 0)
		status = command_admin_key(&c.settings, &opts);
	else
		status = command_connector_token(&c.settings, &opts);
	sp_config_free(&cfg);
	OPENSSL_cleanse(&c.settings, sizeof(c.settings));
	curl_global_cleanup();
	return status;
}
