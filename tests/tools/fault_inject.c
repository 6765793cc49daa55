/* An LD_PRELOAD library that makes the file system fail on purpose, for the
 * fault tests (tests/test_faults.cpp): a disk that fills up, or a device that
 * returns errors, from the Nth call of one kind onwards.
 *
 *   STEM_FAULT=CALL:N[-M]:ERRNO[:PATH]
 *                             CALL is write (write and pwrite), fsync, rename
 *                             or read (read and pread); ERRNO is ENOSPC, EIO
 *                             or eof (read only: the file ends early, as a
 *                             truncated or short file does).
 *
 * With PATH, only calls on files whose path contains PATH count (and fail;
 * for rename, the destination's path). Calls 1 .. N-1 of that kind go
 * through; call N and every later one fail (a full disk stays full), or with
 * N-M only calls N to M (a passing error). Only calls made through the dynamic symbols are
 * seen (stem's own I/O is; stdio's internal writes are not). The count and
 * the first failure are printed to stderr as "fault_inject: ..." so a test
 * can tell that the fault fired; a process in which it never fired says at
 * exit how many calls matched ("fault_inject: K CALL calls matched"), which
 * is how a test learns where the calls of a command fall. With CALL read, io_uring is reported
 * missing (io_uring_queue_init fails with ENOSYS, as on a kernel without
 * it), so that reads take the pread path the library falls back to. No other
 * call is touched. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static char g_call[16];
static char g_path[256];
static long g_at = 0, g_until = 0; /* g_at 0: no fault; g_until 0: no end */
static int g_errno = 0, g_eof = 0;
static long g_count = 0;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

__attribute__((constructor)) static void fault_init(void) {
  const char* spec = getenv("STEM_FAULT");
  if (!spec) return;
  char err[16] = {0};
  char range[48] = {0};
  const int got = sscanf(spec, "%15[a-z]:%47[0-9-]:%15[^:]:%255s", g_call, range, err, g_path);
  if (got >= 2 && sscanf(range, "%ld-%ld", &g_at, &g_until) < 1) g_at = 0;
  if (got < 3 || g_at < 1 || (g_until != 0 && g_until < g_at)) {
    fprintf(stderr, "fault_inject: STEM_FAULT='%s' is not CALL:N[-M]:ERRNO[:PATH]\n", spec);
    g_at = 0;
    return;
  }
  if (strcmp(err, "ENOSPC") == 0) g_errno = ENOSPC;
  else if (strcmp(err, "EIO") == 0) g_errno = EIO;
  else if (strcmp(err, "eof") == 0) g_eof = 1;
  else {
    fprintf(stderr, "fault_inject: unknown error '%s'\n", err);
    g_at = 0;
  }
}

/* Whether `path` (or, when null, the file open as fd) is one the fault is for. */
static int matches(int fd, const char* path) {
  if (!g_path[0]) return 1;
  char buf[4096];
  if (!path) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    const ssize_t n = readlink(link, buf, sizeof buf - 1);
    if (n < 0) return 0;
    buf[n] = 0;
    path = buf;
  }
  return strstr(path, g_path) != NULL;
}

/* True when this call of kind `call` on fd (or path) must fail. */
static int should_fail_on(const char* call, int fd, const char* path) {
  if (g_at == 0 || strcmp(call, g_call) != 0 || !matches(fd, path)) return 0;
  pthread_mutex_lock(&g_mu);
  const long n = ++g_count;
  pthread_mutex_unlock(&g_mu);
  if (n == g_at) fprintf(stderr, "fault_inject: %s call %ld fails%s\n", call, n, g_until ? "" : " from now on");
  return n >= g_at && (g_until == 0 || n <= g_until);
}

__attribute__((destructor)) static void fault_report(void) {
  if (g_at != 0 && g_count < g_at) fprintf(stderr, "fault_inject: %ld %s calls matched\n", g_count, g_call);
}

static int should_fail(const char* call, int fd) { return should_fail_on(call, fd, NULL); }

static void* next(const char* name) { return dlsym(RTLD_NEXT, name); }

ssize_t write(int fd, const void* buf, size_t n) {
  static ssize_t (*real)(int, const void*, size_t);
  if (!real) real = (ssize_t (*)(int, const void*, size_t))next("write");
  if (fd > 2 && should_fail("write", fd)) {
    errno = g_errno ? g_errno : EIO;
    return -1;
  }
  return real(fd, buf, n);
}

ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  static ssize_t (*real)(int, const void*, size_t, off_t);
  if (!real) real = (ssize_t (*)(int, const void*, size_t, off_t))next("pwrite");
  if (should_fail("write", fd)) {
    errno = g_errno ? g_errno : EIO;
    return -1;
  }
  return real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void* buf, size_t n, off_t off) { return pwrite(fd, buf, n, off); }

int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))next("fsync");
  if (should_fail("fsync", fd)) {
    errno = g_errno ? g_errno : EIO;
    return -1;
  }
  return real(fd);
}

int rename(const char* from, const char* to) {
  static int (*real)(const char*, const char*);
  if (!real) real = (int (*)(const char*, const char*))next("rename");
  if (should_fail_on("rename", -1, to)) {
    errno = g_errno ? g_errno : EIO;
    return -1;
  }
  return real(from, to);
}

ssize_t read(int fd, void* buf, size_t n) {
  static ssize_t (*real)(int, void*, size_t);
  if (!real) real = (ssize_t (*)(int, void*, size_t))next("read");
  if (fd > 2 && should_fail("read", fd)) {
    if (g_eof) return 0;
    errno = g_errno;
    return -1;
  }
  return real(fd, buf, n);
}

ssize_t pread(int fd, void* buf, size_t n, off_t off) {
  static ssize_t (*real)(int, void*, size_t, off_t);
  if (!real) real = (ssize_t (*)(int, void*, size_t, off_t))next("pread");
  if (should_fail("read", fd)) {
    if (g_eof) return 0;
    errno = g_errno;
    return -1;
  }
  return real(fd, buf, n, off);
}

ssize_t pread64(int fd, void* buf, size_t n, off_t off) { return pread(fd, buf, n, off); }

struct io_uring;
int io_uring_queue_init(unsigned entries, struct io_uring* ring, unsigned flags) {
  static int (*real)(unsigned, struct io_uring*, unsigned);
  if (g_at != 0 && strcmp(g_call, "read") == 0) return -ENOSYS;
  if (!real) real = (int (*)(unsigned, struct io_uring*, unsigned))next("io_uring_queue_init");
  return real ? real(entries, ring, flags) : -ENOSYS;
}
