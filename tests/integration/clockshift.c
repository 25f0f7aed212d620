/* LD_PRELOAD shim for the clock-jump test (test_idm_clock_jump.py): shifts
 * the wall clock - time(), gettimeofday(), clock_gettime(CLOCK_REALTIME and
 * CLOCK_REALTIME_COARSE) - by the signed seconds held in the first 8 bytes
 * of the file MCGW_CLOCK_OFFSET_FILE (mapped shared, so the test moves the
 * clock of the running process by writing the file). Monotonic clocks are
 * untouched. A time namespace (unshare --time) cannot do this: it offsets
 * only CLOCK_MONOTONIC and CLOCK_BOOTTIME (time_namespaces(7)). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile int64_t *offset;
static int (*real_clock_gettime)(clockid_t, struct timespec *);

static int64_t shift(void) {
  if (!offset) {
    const char *path = getenv("MCGW_CLOCK_OFFSET_FILE");
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    void *p = fd >= 0 ? mmap(NULL, 8, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
    if (fd >= 0)
      close(fd);
    static const int64_t zero = 0;
    offset = p == MAP_FAILED ? (volatile int64_t *)&zero : (volatile int64_t *)p;
  }
  return *offset;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
  if (!real_clock_gettime)
    real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
  int r = real_clock_gettime(id, ts);
  if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
    ts->tv_sec += shift();
  return r;
}

time_t time(time_t *t) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (t)
    *t = ts.tv_sec;
  return ts.tv_sec;
}

int gettimeofday(struct timeval *tv, void *tz) {
  (void)tz;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (tv) {
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
  }
  return 0;
}
