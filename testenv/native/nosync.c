/* Preloaded into test brokers (LD_PRELOAD): their data is deleted when the test ends, so forcing
 * it to disk buys nothing, while a new partition costs 4 fsyncs that wait behind whatever else
 * the disk is writing (a build's gigabytes in CI). etcd's --unsafe-no-fsync does the same for the
 * test apiserver. */
#include <unistd.h>

int fsync(int fd) {
    (void)fd;
    return 0;
}

int fdatasync(int fd) {
    (void)fd;
    return 0;
}
