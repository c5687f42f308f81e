/* shared/clock.c — see clock.h. */
#include "shared/clock.h"

#include <time.h>

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;
	if (clock_gettime(id, &ts) == -1)
		return 0;
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sp_monotonic_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

int64_t sp_realtime_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}
