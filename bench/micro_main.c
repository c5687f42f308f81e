/*
 * bench/micro_main.c — sallyport-bench-micro: figures for the common library's hot
 * paths, each next to a reference measured in the same run. It prints; it does not
 * judge. bench/micro.sh adds `openssl speed` for comparison.
 *
 * Usage: sallyport-bench-micro [token|dns|resource|tunnel|controller_policy]...   (default: all)
 */
#include <stdio.h>
#include <string.h>

#include "bench/micro.h"

struct bench_part {
	const char *name;
	int (*run)(void);
};

/* Parts of programs still being built are weak: a tree without them links and says so. */
int bench_controller_policy(void) __attribute__((weak));

int main(int argc, char **argv)
{
	const struct bench_part parts[] = {
		{"token", bench_token},
		{"dns", bench_dns},
		{"resource", bench_resource},
		{"tunnel", bench_tunnel},
		{"controller_policy", bench_controller_policy},
	};
	int failures = 0;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		int wanted = argc < 2;
		for (int a = 1; a < argc; a++)
			if (strcmp(argv[a], parts[i].name) == 0)
				wanted = 1;
		if (!wanted)
			continue;
		printf("%s:\n", parts[i].name);
		if (parts[i].run == NULL) {
			printf("  (not built in this tree)\n");
			continue;
		}
		if (parts[i].run() != 0)
			failures++;
	}
	return failures == 0 ? 0 : 1;
}
