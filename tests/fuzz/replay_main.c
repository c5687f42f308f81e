/*
 * tests/fuzz/replay_main.c — runs a fuzz target over files, without libFuzzer.
 * Each argument is a file or a folder of files; every file is fed to
 * LLVMFuzzerTestOneInput once. Used by ctest to replay the committed corpus in the
 * ordinary and sanitizer builds.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		fprintf(stderr, "replay: cannot open %s\n", path);
		return -1;
	}
	size_t cap = 1 << 20, len = 0;
	uint8_t *data = malloc(cap);
	if (data == NULL) {
		fclose(f);
		return -1;
	}
	len = fread(data, 1, cap, f);
	fclose(f);
	/* A copy of exactly len bytes, so ASan sees reads past the end. */
	uint8_t *exact = malloc(len != 0 ? len : 1);
	if (exact == NULL) {
		free(data);
		return -1;
	}
	memcpy(exact, data, len);
	free(data);
	LLVMFuzzerTestOneInput(exact, len);
	free(exact);
	return 0;
}

static int replay_path(const char *path, int *count)
{
	struct stat st;
	if (stat(path, &st) == -1) {
		fprintf(stderr, "replay: %s does not exist\n", path);
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		(*count)++;
		return replay_file(path);
	}
	DIR *dir = opendir(path);
	if (dir == NULL)
		return -1;
	struct dirent *e;
	int r = 0;
	while ((e = readdir(dir)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char child[4096];
		int n = snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
		if (n < 0 || (size_t)n >= sizeof(child))
			continue;
		if (replay_path(child, count) < 0)
			r = -1;
	}
	closedir(dir);
	return r;
}

int main(int argc, char **argv)
{
	if (LLVMFuzzerInitialize != NULL)
		LLVMFuzzerInitialize(&argc, &argv);
	int count = 0, r = 0;
	for (int i = 1; i < argc; i++)
		if (replay_path(argv[i], &count) < 0)
			r = 1;
	printf("replayed %d inputs\n", count);
	if (count == 0) {
		fprintf(stderr, "replay: no inputs found\n");
		return 1;
	}
	return r;
}
