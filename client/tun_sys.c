/*
 * client/tun_sys.c — TUN device and command runner for tun mode (see tun_sys.h).
 */
#include "client/tun_sys.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int tun_sys_device_open(const char *name, int *fd, struct sp_diag *diag)
{
	*fd = -1;
	int t = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (t == -1)
		return sp_diag_set(diag, errno == EACCES || errno == EPERM ? SP_ERR_PERMISSION : SP_ERR_IO,
				   "tun mode: cannot open /dev/net/tun: %s (tun mode needs root or "
				   "CAP_NET_ADMIN)",
				   strerror(errno));
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(t, TUNSETIFF, &ifr) == -1) {
		int e = errno;
		close(t);
		return sp_diag_set(diag, e == EPERM || e == EACCES ? SP_ERR_PERMISSION : SP_ERR_IO,
				   "tun mode: cannot create device %s: %s%s", name, strerror(e),
				   e == EPERM || e == EACCES ? " (tun mode needs root or CAP_NET_ADMIN)"
							     : "");
	}
	/*
	 * Sockets to a synthetic address take their segment size and offloads from the route
	 * through this device before TPROXY moves them to lo: with the defaults (MTU 1500, no
	 * TSO) every segment is 1500 bytes and rerouted on its own. Failing to set them is
	 * only slower. Packets that really reach
	 * the device are never read, so what it claims to handle costs nothing.
	 */
	(void)ioctl(t, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6));
	*fd = t;
	return 0;
}

static const char *find_program(const char *name, char *buf, size_t size)
{
	static const char *const dirs[] = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(buf, size, "%s/%s", dirs[i], name);
		if (access(buf, X_OK) == 0)
			return buf;
	}
	return NULL;
}

/*
 * Runs one command line (words split at spaces), feeding `input` (may be NULL) on its
 * standard input. Returns 0 when it exits with 0; else SP_ERR_IO with its first error
 * line in diag (when diag is not NULL).
 */
static int run_line(const char *line, const char *input, struct sp_diag *diag)
{
	char copy[TUN_RULES_LINE_MAX];
	char *argv[16];
	snprintf(copy, sizeof(copy), "%s", line);
	if (tun_rules_split(copy, argv, 16) == 0)
		return SP_ERR_INVALID;
	char path[64];
	const char *prog = find_program(argv[0], path, sizeof(path));
	if (prog == NULL)
		return sp_diag_set(diag, SP_ERR_NOT_FOUND, "tun mode: %s not found (install %s)",
				   argv[0], strcmp(argv[0], "nft") == 0 ? "nftables" : "iproute2");
	int in[2] = {-1, -1}, err[2] = {-1, -1};
	int rc = SP_ERR_IO;
	pid_t pid = -1;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	if (pipe2(in, O_CLOEXEC) == -1 || pipe2(err, O_CLOEXEC) == -1) {
		rc = sp_diag_set(diag, SP_ERR_IO, "tun mode: pipe: %s", strerror(errno));
		goto out;
	}
	posix_spawn_file_actions_adddup2(&fa, in[0], 0);
	posix_spawn_file_actions_adddup2(&fa, err[1], 1);
	posix_spawn_file_actions_adddup2(&fa, err[1], 2);
	posix_spawnattr_t attr;
	posix_spawnattr_init(&attr);
	sigset_t def, block, old;
	sigemptyset(&def);
	sigaddset(&def, SIGPIPE);
	posix_spawnattr_setsigdefault(&attr, &def);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
	int e = posix_spawn(&pid, prog, &fa, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	if (e != 0) {
		pid = -1;
		rc = sp_diag_set(diag, SP_ERR_IO, "tun mode: cannot run %s: %s", prog, strerror(e));
		goto out;
	}
	close(in[0]);
	close(err[1]);
	in[0] = err[1] = -1;
	/* a command that exits before reading its input must not kill us with SIGPIPE */
	sigemptyset(&block);
	sigaddset(&block, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	if (input != NULL) {
		/* the script is a few hundred bytes: one write fits the pipe */
		size_t len = strlen(input), off = 0;
		while (off < len) {
			ssize_t n = write(in[1], input + off, len - off);
			if (n == -1 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			off += (size_t)n;
		}
	}
	close(in[1]);
	in[1] = -1;
	struct timespec zero = {0, 0};
	while (sigtimedwait(&block, NULL, &zero) > 0) {
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	char out[512];
	size_t got = 0;
	for (;;) {
		ssize_t n = read(err[0], out + got, sizeof(out) - 1 - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got == sizeof(out) - 1) {
			char sink[256];
			while (read(err[0], sink, sizeof(sink)) > 0) {
			}
			break;
		}
	}
	out[got] = '\0';
	char *nl = strchr(out, '\n');
	if (nl != NULL)
		*nl = '\0';
	int status = 0;
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR) {
	}
	pid = -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		rc = 0;
	else
		rc = sp_diag_set(diag, SP_ERR_IO, "tun mode: `%s` failed: %s", line,
				 out[0] != '\0' ? out : "no output");
out:
	posix_spawn_file_actions_destroy(&fa);
	for (int i = 0; i < 2; i++) {
		if (in[i] != -1)
			close(in[i]);
		if (err[i] != -1)
			close(err[i]);
	}
	return rc;
}

int tun_sys_apply(const struct tun_rules *r, struct sp_diag *diag)
{
	struct tun_rules_lines lines;
	char script[TUN_RULES_SCRIPT_MAX];
	int rc = tun_rules_up_lines(r, &lines);
	if (rc == 0)
		rc = tun_rules_nft_script(r, script, sizeof(script));
	if (rc < 0)
		return sp_diag_set(diag, rc, "tun mode: rules do not fit");
	for (size_t i = 0; i < lines.count; i++) {
		rc = run_line(lines.line[i], NULL, diag);
		if (rc < 0)
			return rc;
	}
	return run_line("nft -f -", script, diag);
}

void tun_sys_cleanup(const struct tun_rules *r, int *removed)
{
	struct tun_rules_lines lines;
	int count = 0;
	if (removed != NULL)
		*removed = 0;
	if (tun_rules_down_lines(r, &lines) < 0)
		return;
	for (size_t i = 0; i < lines.count; i++) {
		const char *l = lines.line[i];
		int loop = strncmp(l, "ip rule del", 11) == 0 || strncmp(l, "ip -6 rule del", 14) == 0;
		int counts = strstr(l, " flush ") == NULL;
		for (int k = 0; k < (loop ? TUN_RULES_RULE_DELETE_TRIES : 1); k++) {
			if (run_line(l, NULL, NULL) < 0)
				break;
			count += counts;
		}
	}
	if (removed != NULL)
		*removed = count;
}
