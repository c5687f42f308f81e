/*
 * sallyport-dnsstub: the client's DNS stub on its own, for tests and benchmarks.
 *
 *   sallyport-dnsstub [--listen ADDR[:PORT]] [--upstream ADDR[:PORT],...]
 *                     [--resources FILE] [--synthetic-v4 CIDR] [--synthetic-v6 CIDR|off]
 *                     [--ttl SECONDS] [--deadline-ms MS] [--log-level L]
 *                     [--log-format text|json]
 *
 * SIGHUP reloads the resource file (a bad file keeps the old set), SIGUSR1 writes the
 * metrics to stderr, SIGTERM and SIGINT stop the stub.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "client/dns_stub.h"
#include "client/resource_list.h"
#include "shared/log.h"
#include "shared/metrics.h"

#define PROGRAM "sallyport-dnsstub"
#define EXIT_USAGE 2

struct stub_program {
	struct event_base *base;
	struct dns_stub *stub;
	const char *resources_path;
	struct sp_metrics_registry metrics;
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: " PROGRAM " [OPTIONS]\n"
		"\n"
		"  --listen ADDR[:PORT]     where to answer (default " DNS_STUB_DEFAULT_LISTEN
		":53;\n"
		"                           [v6]:PORT for IPv6; port 0 picks a free one)\n"
		"  --upstream LIST          ADDR[:PORT],... (default: /etc/resolv.conf minus us)\n"
		"  --resources FILE         JSON resource list (the claims of docs/protocol.md\n"
		"                           1.5, or an array of resources); SIGHUP reloads it\n"
		"  --synthetic-v4 CIDR      default " SYNTHETIC_DEFAULT_V4 "\n"
		"  --synthetic-v6 CIDR|off  default " SYNTHETIC_DEFAULT_V6 "\n"
		"  --ttl SECONDS            TTL of synthetic answers (default 30)\n"
		"  --deadline-ms MS         longest wait for an upstream answer before SERVFAIL\n"
		"                           (default 4000)\n"
		"  --log-level LEVEL        debug, info, warn, error (default info)\n"
		"  --log-format FORMAT      text or json (default text)\n"
		"  --help, --version\n");
}

static int fail_usage(const char *message, const char *value)
{
	fprintf(stderr, PROGRAM ": %s%s%s (see " PROGRAM " --help)\n", message,
		value != NULL ? ": " : "", value != NULL ? value : "");
	return EXIT_USAGE;
}

/* "ADDR", "ADDR:PORT", "[V6]:PORT" or a bare IPv6 literal, into host (NUL-terminated). */
static int split_listen(const char *text, char *host, size_t host_size, long *port)
{
	*port = DNS_STUB_DEFAULT_PORT;
	const char *colon = strrchr(text, ':');
	const char *host_start = text;
	size_t host_len = strlen(text);
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (close == NULL)
			return -1;
		host_start = text + 1;
		host_len = (size_t)(close - host_start);
		colon = close[1] == ':' ? close + 1 : NULL;
		if (close[1] != '\0' && colon == NULL)
			return -1;
	} else if (colon != NULL && strchr(text, ':') != colon) {
		colon = NULL; /* a bare IPv6 literal */
	} else if (colon != NULL) {
		host_len = (size_t)(colon - text);
	}
	if (host_len == 0 || host_len >= host_size)
		return -1;
	memcpy(host, host_start, host_len);
	host[host_len] = '\0';
	if (colon != NULL) {
		char *end = NULL;
		errno = 0;
		*port = strtol(colon + 1, &end, 10);
		if (errno != 0 || end == colon + 1 || *end != '\0' || *port < 0 || *port > 65535)
			return -1;
	}
	return 0;
}

static int load_resources(struct stub_program *prog)
{
	struct sp_resource *list = NULL;
	size_t count = 0;
	struct sp_diag diag = {{0}};
	int r = resource_list_load(prog->resources_path, &list, &count, &diag);
	if (r == 0)
		r = dns_stub_set_resources(prog->stub, list, count, &diag);
	sp_resource_list_free(list, count);
	if (r < 0)
		SP_LOG(SP_LOG_ERROR, "resource list not loaded", SP_LOG_STR("path",
		       prog->resources_path), SP_LOG_STR("reason", diag.message), SP_LOG_ERR(r));
	else
		SP_LOG(SP_LOG_INFO, "resource list loaded", SP_LOG_STR("path", prog->resources_path),
		       SP_LOG_UINT("resources", count));
	return r;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	struct stub_program *prog = arg;
	if (sig == SIGHUP) {
		if (prog->resources_path != NULL)
			(void)load_resources(prog);
		return;
	}
	if (sig == SIGUSR1) {
		struct sp_buf out;
		sp_buf_init(&out, 1 << 20);
		if (sp_metrics_render(&prog->metrics, &out) == 0 && out.len > 0 &&
		    write(STDERR_FILENO, out.data, out.len) == -1)
			SP_LOG_MSG(SP_LOG_WARN, "cannot write metrics");
		sp_buf_free(&out);
		return;
	}
	SP_LOG(SP_LOG_INFO, "stopping", SP_LOG_INT("signal", sig));
	event_base_loopexit(prog->base, NULL);
}

int main(int argc, char **argv)
{
	struct dns_stub_config cfg = {0};
	struct stub_program prog = {0};
	struct sp_log_config log = {.level = SP_LOG_INFO, .format = SP_LOG_TEXT,
				    .fd = STDERR_FILENO, .program = PROGRAM};
	char host[64];
	struct sp_diag diag = {{0}};
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "--help") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(arg, "--version") == 0) {
			printf(PROGRAM " " SALLYPORT_VERSION "\n");
			return 0;
		}
		if (i + 1 >= argc)
			return fail_usage("unknown option or missing value", arg);
		const char *value = argv[++i];
		if (strcmp(arg, "--listen") == 0) {
			long port;
			if (split_listen(value, host, sizeof(host), &port) < 0)
				return fail_usage("--listen wants ADDR[:PORT]", value);
			cfg.listen_address = host;
			cfg.listen_port = (uint16_t)port;
			cfg.listen_port_any = port == 0;
		} else if (strcmp(arg, "--upstream") == 0) {
			cfg.upstreams = value;
		} else if (strcmp(arg, "--resources") == 0) {
			prog.resources_path = value;
		} else if (strcmp(arg, "--synthetic-v4") == 0) {
			cfg.synthetic_v4 = value;
		} else if (strcmp(arg, "--synthetic-v6") == 0) {
			cfg.synthetic_v6 = value;
		} else if (strcmp(arg, "--ttl") == 0) {
			char *end = NULL;
			errno = 0;
			long ttl = strtol(value, &end, 10);
			if (errno != 0 || *end != '\0' || ttl < 1 || ttl > 86400)
				return fail_usage("--ttl wants 1..86400 seconds", value);
			cfg.answer_ttl = (uint32_t)ttl;
		} else if (strcmp(arg, "--deadline-ms") == 0) {
			char *end = NULL;
			errno = 0;
			long ms = strtol(value, &end, 10);
			if (errno != 0 || *end != '\0' || ms < 100 || ms > 60000)
				return fail_usage("--deadline-ms wants 100..60000", value);
			cfg.deadline_ms = (unsigned)ms;
		} else if (strcmp(arg, "--log-level") == 0) {
			if (sp_log_level_parse(value, &log.level, &diag) < 0)
				return fail_usage(diag.message, NULL);
		} else if (strcmp(arg, "--log-format") == 0) {
			if (sp_log_format_parse(value, &log.format, &diag) < 0)
				return fail_usage(diag.message, NULL);
		} else {
			return fail_usage("unknown option", arg);
		}
	}
	sp_log_set_default(&log);
	cfg.metrics = &prog.metrics;

	int status = 1;
	struct event *signals[5] = {0};
	const int numbers[5] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, 0};
	signal(SIGPIPE, SIG_IGN);
	prog.base = event_base_new();
	if (prog.base == NULL) {
		fprintf(stderr, PROGRAM ": cannot create the event loop\n");
		goto out;
	}
	if (dns_stub_new(prog.base, &cfg, &prog.stub, &diag) < 0) {
		fprintf(stderr, PROGRAM ": %s\n", diag.message);
		goto out;
	}
	if (prog.resources_path != NULL && load_resources(&prog) < 0)
		goto out;
	for (int i = 0; numbers[i] != 0; i++) {
		signals[i] = evsignal_new(prog.base, numbers[i], on_signal, &prog);
		if (signals[i] == NULL || event_add(signals[i], NULL) == -1) {
			fprintf(stderr, PROGRAM ": cannot handle signals\n");
			goto out;
		}
	}
	SP_LOG(SP_LOG_INFO, "listening", SP_LOG_STR("address", cfg.listen_address != NULL
						       ? cfg.listen_address : DNS_STUB_DEFAULT_LISTEN),
	       SP_LOG_UINT("port", dns_stub_port(prog.stub)));
	if (event_base_dispatch(prog.base) == -1) {
		fprintf(stderr, PROGRAM ": event loop failed\n");
		goto out;
	}
	status = 0;
out:
	for (int i = 0; i < 5; i++)
		if (signals[i] != NULL)
			event_free(signals[i]);
	dns_stub_free(prog.stub);
	if (prog.base != NULL)
		event_base_free(prog.base);
	return status;
}
