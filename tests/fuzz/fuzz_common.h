/* fuzz_common.h - shared by the libFuzzer harnesses (tests/fuzz/fuzz_*.c).
 *
 * The APIs under test take paths, so every input is written to a file under /tmp whose name
 * holds the harness name and the process id (parallel jobs, -fork and -jobs workers never share
 * one), parsed from there, and unlinked after the run. (Creating a fresh file each run is also
 * the fast way: truncating a file that holds data makes ext4 flush it on close, ~1 ms.) */
#ifndef UPCYCLE_FUZZ_COMMON_H
#define UPCYCLE_FUZZ_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* "/tmp/upcycle-fuzz-<name>-<pid><suffix>"; the buffer is the caller's */
static inline void fuzz_path(char *buf, size_t cap, const char *name, const char *suffix) {
    snprintf(buf, cap, "/tmp/upcycle-fuzz-%s-%ld%s", name, (long)getpid(), suffix ? suffix : "");
}

/* Writes the input to path; aborts (a harness failure, not a finding) if /tmp is unusable. */
static inline void fuzz_write_file(const char *path, const uint8_t *data, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "fuzz: cannot create %s (%s)\n", path, strerror(errno));
        abort();
    }
    for (size_t done = 0; done < size;) {
        ssize_t n = write(fd, data + done, size - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            fprintf(stderr, "fuzz: cannot write %s (%s)\n", path, strerror(errno));
            abort();
        }
        done += (size_t)n;
    }
    close(fd);
}

#endif
