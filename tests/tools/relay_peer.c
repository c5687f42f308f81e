/*
 * relay_peer — a test peer for the relay (docs/protocol.md §3). It plays the
 * relay side of a connector, or a client, with the codecs of shared/wire.h, so the relay
 * can be proven before the real connector and client adopt the protocol.
 *
 *   relay_peer connector --relay HOST:PORT --token-file F --target HOST:PORT [--ignore-dials]
 *       registers with the token, prints "status N" once the relay answers, then answers
 *       each dial with a data connection joined to a new TCP connection to the target.
 *   relay_peer client (--relay HOST:PORT --ticket-file F | --direct HOST:PORT)
 *                     [--send BYTES] [--hold] [--source IPV4]
 *       sends the client preamble (not with --direct), prints "status N", then either
 *       sends BYTES and checks that exactly the same bytes come back (an echo target),
 *       printing "echo ok BYTES SECONDS", or with --hold keeps the connection open until
 *       its standard input closes. --source connects from that local address (loopback
 *       tests use 127.0.0.N to look like N different clients).
 *   relay_peer crowd --relay HOST:PORT --ticket-file F
 *       one client connection per ticket in F (one a line), each from its own loopback
 *       address 127.1.x.y, all open at once; each echoes 1 KiB; prints
 *       "crowd N paired P echoed E open_s S", then holds them until stdin closes.
 *   relay_peer echo --listen HOST:PORT
 *       an echo server (one thread per connection); prints "listening PORT".
 *   relay_peer forward --listen HOST:PORT --target HOST:PORT
 *       a plain TCP forwarder (splice, one thread per direction): chained twice it is the
 *       same path as relay + connector without the relay protocol, the throughput baseline
 *       for "what the relay costs beyond the hops"; prints "listening PORT".
 *
 * Exit status: 0 success, 1 failure (a refused status, a mismatch, an I/O error),
 * 2 usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "shared/buf.h"
#include "shared/error.h"
#include "shared/wire.h"

#define IO_BUF (256 * 1024)
#define PATTERN_LEN ((1u << 20) + 7u)

static const char *target_address;
static const char *source_address; /* client mode: local address to connect from */
static const char *relay_address;
static int ignore_dials;

static int split_hostport(const char *text, char *host, size_t host_size, char *port,
                          size_t port_size)
{
	const char *colon = strrchr(text, ':');
	if (colon == NULL)
		return -1;
	const char *h = text;
	size_t hlen = (size_t)(colon - text);
	if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	if (hlen >= host_size || strlen(colon + 1) >= port_size)
		return -1;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	snprintf(port, port_size, "%s", colon + 1);
	return 0;
}

static int dial(const char *address)
{
	char host[256], port[16];
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	if (split_hostport(address, host, sizeof(host), port, sizeof(port)) < 0 ||
	    getaddrinfo(host, port, &hints, &res) != 0)
		return -1;
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && source_address != NULL && res->ai_family == AF_INET) {
		struct sockaddr_in local = {.sin_family = AF_INET};
		if (inet_pton(AF_INET, source_address, &local.sin_addr) != 1 ||
		    bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0) {
			close(fd);
			fd = -1;
		}
	}
	if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd >= 0) {
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return fd;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int read_file(const char *path, struct sp_buf *out)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return -1;
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (sp_buf_put(out, chunk, n) < 0)
			break;
	fclose(f);
	while (out->len > 0 && (out->data[out->len - 1] == '\n' || out->data[out->len - 1] == '\r'))
		out->len--;
	return out->len > 0 ? 0 : -1;
}

/* ---- copying between two sockets (one thread per direction) ---- */

struct copy {
	int from, to;
};

/* Kernel-side copy through a pipe, like the relay, so the peer costs little in the
 * throughput figures. Returns 0 at the end of the stream, -1 when splice is unusable
 * before any byte moved (the caller copies in user space then). */
static int splice_copy(int from, int to)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	(void)fcntl(p[1], F_SETPIPE_SZ, IO_BUF);
	int moved = 0, rc = 0;
	for (;;) {
		ssize_t n = splice(from, NULL, p[1], NULL, IO_BUF, SPLICE_F_MOVE);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && !moved && (errno == EINVAL || errno == ENOSYS)) {
			rc = -1;
			break;
		}
		if (n <= 0)
			break;
		moved = 1;
		size_t left = (size_t)n;
		while (left > 0) {
			ssize_t w = splice(p[0], NULL, to, NULL, left, SPLICE_F_MOVE);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				goto out;
			left -= (size_t)w;
		}
	}
out:
	close(p[0]);
	close(p[1]);
	return rc;
}

static void *copy_thread(void *arg)
{
	struct copy *c = arg;
	if (splice_copy(c->from, c->to) < 0) {
		uint8_t *buf = malloc(IO_BUF);
		if (buf != NULL)
			for (;;) {
				ssize_t n = recv(c->from, buf, IO_BUF, 0);
				if (n < 0 && errno == EINTR)
					continue;
				if (n <= 0 || write_all(c->to, buf, (size_t)n) < 0)
					break;
			}
		free(buf);
	}
	(void)shutdown(c->to, SHUT_WR);
	return NULL;
}

/* Joins a and b until both directions end, then closes both. */
static void join_sockets(int a, int b)
{
	struct copy ab = {a, b}, ba = {b, a};
	pthread_t t;
	int started = pthread_create(&t, NULL, copy_thread, &ab) == 0;
	(void)copy_thread(&ba);
	if (started)
		pthread_join(t, NULL);
	close(a);
	close(b);
}

/* ---- connector ---- */

static void *answer_dial(void *arg)
{
	uint8_t *id = arg;
	struct sp_buf hello;
	sp_buf_init(&hello, 64);
	int data = dial(relay_address);
	int target = data >= 0 ? dial(target_address) : -1;
	if (data >= 0 && target >= 0 && sp_relay_connector_hello_encode(id, &hello) == 0 &&
	    write_all(data, hello.data, hello.len) == 0) {
		join_sockets(data, target);
	} else {
		fprintf(stderr, "relay_peer: cannot answer a dial\n");
		if (data >= 0)
			close(data);
		if (target >= 0)
			close(target);
	}
	sp_buf_free(&hello);
	free(id);
	return NULL;
}

static int run_connector(const char *token_file)
{
	struct sp_buf token, hello;
	sp_buf_init(&token, 1 << 16);
	sp_buf_init(&hello, 1 << 16);
	if (read_file(token_file, &token) < 0) {
		fprintf(stderr, "relay_peer: cannot read %s\n", token_file);
		return 1;
	}
	int fd = dial(relay_address);
	if (fd < 0 || sp_relay_register_encode(token.data, token.len, &hello) < 0 ||
	    write_all(fd, hello.data, hello.len) < 0) {
		fprintf(stderr, "relay_peer: cannot register at %s\n", relay_address);
		return 1;
	}
	uint8_t status;
	if (recv(fd, &status, 1, MSG_WAITALL) != 1) {
		fprintf(stderr, "relay_peer: the relay closed without a status\n");
		return 1;
	}
	printf("status %u %s\n", status, sp_relay_status_name(status));
	fflush(stdout);
	if (status != SP_RELAY_PAIRED)
		return 1;
	uint8_t buf[4096];
	size_t have = 0;
	for (;;) {
		ssize_t n = recv(fd, buf + have, sizeof(buf) - have, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
		size_t at = 0;
		for (;;) {
			uint8_t id[SP_RELAY_PAIRING_ID_LEN];
			int r = sp_relay_dial_decode(buf + at, have - at, id);
			if (r == SP_ERR_AGAIN)
				break;
			if (r < 0) {
				fprintf(stderr, "relay_peer: not a dial message\n");
				return 1;
			}
			at += (size_t)r;
			if (ignore_dials)
				continue;
			uint8_t *copy = malloc(sizeof(id));
			pthread_t t;
			if (copy == NULL)
				return 1;
			memcpy(copy, id, sizeof(id));
			if (pthread_create(&t, NULL, answer_dial, copy) != 0) {
				free(copy);
				return 1;
			}
			pthread_detach(t);
		}
		memmove(buf, buf + at, have - at);
		have -= at;
	}
	printf("control connection closed\n");
	fflush(stdout);
	close(fd);
	sp_buf_free(&token);
	sp_buf_free(&hello);
	return 0;
}

/* ---- client ---- */

static uint8_t *pattern;

struct sender {
	int fd;
	uint64_t total;
	int failed;
};

static void *send_thread(void *arg)
{
	struct sender *s = arg;
	uint64_t off = 0;
	while (off < s->total) {
		size_t at = (size_t)(off % PATTERN_LEN);
		size_t n = PATTERN_LEN - at;
		if (n > IO_BUF)
			n = IO_BUF;
		if ((uint64_t)n > s->total - off)
			n = (size_t)(s->total - off);
		if (write_all(s->fd, pattern + at, n) < 0) {
			s->failed = 1;
			break;
		}
		off += n;
	}
	(void)shutdown(s->fd, SHUT_WR);
	return NULL;
}

static double seconds_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int echo_check(int fd, uint64_t total)
{
	pattern = malloc(PATTERN_LEN);
	uint8_t *buf = malloc(IO_BUF);
	if (pattern == NULL || buf == NULL || RAND_bytes(pattern, (int)PATTERN_LEN) != 1)
		return 1;
	double start = seconds_now();
	struct sender s = {.fd = fd, .total = total};
	pthread_t t;
	if (pthread_create(&t, NULL, send_thread, &s) != 0)
		return 1;
	uint64_t got = 0;
	int mismatch = 0;
	for (;;) {
		ssize_t n = recv(fd, buf, IO_BUF, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		size_t done = 0;
		while (done < (size_t)n && !mismatch) {
			size_t at = (size_t)((got + done) % PATTERN_LEN);
			size_t k = PATTERN_LEN - at;
			if (k > (size_t)n - done)
				k = (size_t)n - done;
			if (got + done + k > total || memcmp(buf + done, pattern + at, k) != 0)
				mismatch = 1;
			done += k;
		}
		got += (uint64_t)n;
		if (mismatch)
			break;
	}
	pthread_join(t, NULL);
	double elapsed = seconds_now() - start;
	free(buf);
	free(pattern);
	if (mismatch || s.failed || got != total) {
		printf("echo FAILED sent %llu received %llu%s\n", (unsigned long long)total,
		       (unsigned long long)got, mismatch ? " (bytes differ)" : "");
		return 1;
	}
	printf("echo ok %llu %.3f\n", (unsigned long long)total, elapsed);
	return 0;
}

static int run_client(const char *ticket_file, const char *direct, uint64_t send_bytes, int hold)
{
	int fd;
	if (direct != NULL) {
		fd = dial(direct);
		if (fd < 0) {
			fprintf(stderr, "relay_peer: cannot connect to %s\n", direct);
			return 1;
		}
		printf("status 0 direct\n");
	} else {
		struct sp_buf ticket, hello;
		sp_buf_init(&ticket, 1 << 16);
		sp_buf_init(&hello, 1 << 16);
		if (read_file(ticket_file, &ticket) < 0) {
			fprintf(stderr, "relay_peer: cannot read %s\n", ticket_file);
			return 1;
		}
		fd = dial(relay_address);
		if (fd < 0 || sp_relay_client_hello_encode(ticket.data, ticket.len, &hello) < 0 ||
		    write_all(fd, hello.data, hello.len) < 0) {
			fprintf(stderr, "relay_peer: cannot reach the relay at %s\n", relay_address);
			return 1;
		}
		sp_buf_free(&ticket);
		sp_buf_free(&hello);
		uint8_t status;
		if (recv(fd, &status, 1, MSG_WAITALL) != 1) {
			printf("status none\n");
			return 1;
		}
		printf("status %u %s\n", status, sp_relay_status_name(status));
		if (status != SP_RELAY_PAIRED) {
			fflush(stdout);
			close(fd);
			return 1;
		}
	}
	fflush(stdout);
	int rc = 0;
	if (send_bytes > 0)
		rc = echo_check(fd, send_bytes);
	if (hold) {
		char b[64];
		while (read(STDIN_FILENO, b, sizeof(b)) > 0) {
		}
	}
	fflush(stdout);
	close(fd);
	return rc;
}

/* ---- crowd: many relayed connections held open at once ---- */

static int run_crowd(const char *tickets_file)
{
	FILE *f = fopen(tickets_file, "r");
	if (f == NULL)
		return 1;
	static char line[8192];
	int *fds = calloc(65536, sizeof(int));
	size_t n = 0, paired = 0, echoed = 0;
	struct sp_buf hello;
	sp_buf_init(&hello, 1 << 16);
	char source[32];
	source_address = source;
	double start = seconds_now();
	while (fds != NULL && n < 65536 && fgets(line, sizeof(line), f) != NULL) {
		size_t len = strcspn(line, "\r\n");
		if (len == 0)
			continue;
		/* Each connection from its own loopback address: 127.1.x.y. */
		snprintf(source, sizeof(source), "127.1.%zu.%zu", n / 250, n % 250 + 1);
		sp_buf_reset(&hello);
		int fd = dial(relay_address);
		if (fd < 0 || sp_relay_client_hello_encode((const uint8_t *)line, len, &hello) < 0 ||
		    write_all(fd, hello.data, hello.len) < 0) {
			fprintf(stderr, "relay_peer: crowd connection %zu failed\n", n);
			if (fd >= 0)
				close(fd);
			break;
		}
		fds[n++] = fd;
	}
	fclose(f);
	sp_buf_free(&hello);
	for (size_t i = 0; i < n; i++) {
		uint8_t status = 255;
		if (recv(fds[i], &status, 1, MSG_WAITALL) == 1 && status == SP_RELAY_PAIRED)
			paired++;
	}
	double open_s = seconds_now() - start;
	/* Every connection carries 1 KiB both ways while all are open. */
	uint8_t out[1024], back[1024];
	for (size_t i = 0; i < n; i++) {
		memset(out, (int)(i & 0xff), sizeof(out));
		if (write_all(fds[i], out, sizeof(out)) < 0)
			continue;
		if (recv(fds[i], back, sizeof(back), MSG_WAITALL) == (ssize_t)sizeof(back) &&
		    memcmp(out, back, sizeof(out)) == 0)
			echoed++;
	}
	printf("crowd %zu paired %zu echoed %zu open_s %.3f\n", n, paired, echoed, open_s);
	fflush(stdout);
	char b[64];
	while (read(STDIN_FILENO, b, sizeof(b)) > 0) {
	}
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
	return paired == n && echoed == n && n > 0 ? 0 : 1;
}

/* ---- echo ---- */

static void *echo_one(void *arg)
{
	int fd = (int)(intptr_t)arg;
	uint8_t *buf = malloc(IO_BUF);
	if (buf != NULL)
		for (;;) {
			ssize_t n = recv(fd, buf, IO_BUF, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0 || write_all(fd, buf, (size_t)n) < 0)
				break;
		}
	free(buf);
	(void)shutdown(fd, SHUT_WR);
	close(fd);
	return NULL;
}

/* forward mode: joins each accepted connection with a new one to the target. */
static void *forward_one(void *arg)
{
	int fd = (int)(intptr_t)arg;
	int target = dial(target_address);
	if (target < 0) {
		close(fd);
		return NULL;
	}
	join_sockets(fd, target);
	return NULL;
}

static int run_listener(const char *listen_address, void *(*serve)(void *))
{
	char host[256], port[16];
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
	if (split_hostport(listen_address, host, sizeof(host), port, sizeof(port)) < 0 ||
	    getaddrinfo(host, port, &hints, &res) != 0)
		return 2;
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 128) < 0) {
		fprintf(stderr, "relay_peer: cannot listen on %s\n", listen_address);
		freeaddrinfo(res);
		return 1;
	}
	freeaddrinfo(res);
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	(void)getsockname(fd, (struct sockaddr *)&ss, &len);
	printf("listening %u\n", ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port));
	fflush(stdout);
	for (;;) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return 1;
		}
		(void)setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pthread_t t;
		if (pthread_create(&t, NULL, serve, (void *)(intptr_t)c) != 0) {
			close(c);
			continue;
		}
		pthread_detach(t);
	}
}

static int usage(void)
{
	fprintf(stderr,
	        "usage: relay_peer connector --relay HOST:PORT --token-file F --target HOST:PORT "
	        "[--ignore-dials]\n"
	        "       relay_peer client (--relay HOST:PORT --ticket-file F | --direct HOST:PORT) "
	        "[--send BYTES] [--hold] [--source IPV4]\n"
	        "       relay_peer crowd --relay HOST:PORT --ticket-file F\n"
	        "       relay_peer echo --listen HOST:PORT\n"
	        "       relay_peer forward --listen HOST:PORT --target HOST:PORT\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *token_file = NULL, *ticket_file = NULL, *direct = NULL, *listen_address = NULL;
	uint64_t send_bytes = 0;
	int hold = 0;
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2)
		return usage();
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--ignore-dials") == 0) {
			ignore_dials = 1;
			continue;
		}
		if (strcmp(a, "--hold") == 0) {
			hold = 1;
			continue;
		}
		if (v == NULL)
			return usage();
		i++;
		if (strcmp(a, "--relay") == 0)
			relay_address = v;
		else if (strcmp(a, "--token-file") == 0)
			token_file = v;
		else if (strcmp(a, "--ticket-file") == 0)
			ticket_file = v;
		else if (strcmp(a, "--target") == 0)
			target_address = v;
		else if (strcmp(a, "--direct") == 0)
			direct = v;
		else if (strcmp(a, "--source") == 0)
			source_address = v;
		else if (strcmp(a, "--listen") == 0)
			listen_address = v;
		else if (strcmp(a, "--send") == 0) {
			char *end = NULL;
			errno = 0;
			unsigned long long n = strtoull(v, &end, 10);
			if (errno != 0 || end == v || *end != '\0')
				return usage();
			send_bytes = n;
		} else {
			return usage();
		}
	}
	if (strcmp(argv[1], "connector") == 0) {
		if (relay_address == NULL || token_file == NULL || target_address == NULL)
			return usage();
		return run_connector(token_file);
	}
	if (strcmp(argv[1], "client") == 0) {
		if ((direct == NULL) == (relay_address == NULL || ticket_file == NULL))
			return usage();
		return run_client(ticket_file, direct, send_bytes, hold);
	}
	if (strcmp(argv[1], "crowd") == 0) {
		if (relay_address == NULL || ticket_file == NULL)
			return usage();
		return run_crowd(ticket_file);
	}
	if (strcmp(argv[1], "echo") == 0) {
		if (listen_address == NULL)
			return usage();
		return run_listener(listen_address, echo_one);
	}
	if (strcmp(argv[1], "forward") == 0) {
		if (listen_address == NULL || target_address == NULL)
			return usage();
		return run_listener(listen_address, forward_one);
	}
	return usage();
}
