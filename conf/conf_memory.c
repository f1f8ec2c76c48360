/* conf_memory: the default of limits.max_memory, from the cgroup the daemon runs in (v2, then
 * v1) or the machine's RAM. Read once per load, on the main thread. */
#include <stdio.h>
#include <unistd.h>

#include "conf/conf.h"

/* A number from a one-line file; 0 when absent, "max", or unreadable. */
static uint64_t read_limit(const char *path)
{
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%llu", &v) != 1)
        v = 0;
    fclose(f);
    return v >= (1ull << 60) ? 0 : (uint64_t)v;     /* v1 says "no limit" with a huge value */
}

uint64_t conf_memory_auto(void)
{
    uint64_t cg = read_limit("/sys/fs/cgroup/memory.max");
    if (!cg)
        cg = read_limit("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    if (cg)
        return cg / 4 * 3;      /* the rest: code, stacks, libraries, allocator slack */
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || size <= 0)
        return (uint64_t)1 << 30;
    return (uint64_t)pages * (uint64_t)size / 2;
}
