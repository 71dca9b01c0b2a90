#include "fixtures.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *fixture_dir(void)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/sb-unit-XXXXXX");
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        exit(2);
    }
    return path;
}

void fixture_write(const char *dir, const char *name, const char *content)
{
    char path[1024];
    char *slash;
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    for (slash = strchr(path + strlen(dir) + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        mkdir(path, 0700);
        *slash = '/';
    }
    f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(content, f);
    fclose(f);
}
