#include "fixtures.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lua.h>

#include "config.h"
#include "harness.h"
#include "loader.h"
#include "runtime.h"
#include "txn.h"

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

struct sb_runtime *fixture_runtime(const char *const *files, struct sb_error *err, const char *extra_config)
{
    const char *dir = fixture_dir();
    char conf[2048], path[512];
    struct sb_config *cfg;
    struct sb_runtime *rt;
    size_t i;
    for (i = 0; files[i]; i += 2)
        fixture_write(dir, files[i], files[i + 1]);
    snprintf(conf, sizeof conf,
             "return { paths = { scripts = '%s/scripts', providers = '%s/providers', rules = '%s/rules' },"
             " lua = { cpu_ms_per_resume = 50, cpu_ms_per_job = 200, memory_limit_mb = 8 }, %s }",
             dir, dir, dir, extra_config ? extra_config : "");
    fixture_write(dir, "conf.lua", conf);
    snprintf(path, sizeof path, "%s/conf.lua", dir);
    memset(err, 0, sizeof *err);
    cfg = sb_config_load(path, NULL, err);
    if (!cfg)
        return NULL;
    {
        struct sb_txn *txn = sb_txn_new();
        rt = sb_load_runtime(cfg, 1, txn, err, NULL);
        sb_txn_abort(txn);   /* no store here: what a load wrote is dropped */
    }
    sb_config_unref(cfg);
    return rt;
}

struct sb_runtime *fixture_runtime_ok(const char *const *files)
{
    struct sb_error err;
    struct sb_runtime *rt = fixture_runtime(files, &err, NULL);
    CHECK(rt != NULL);
    if (!rt)
        fprintf(stderr, "  %s:%d: %s\n", err.file, err.line, err.message);
    return rt;
}

const char *fixture_global(struct sb_runtime *rt, const char *name)
{
    static char buf[256];
    lua_getglobal(rt->L, name);
    snprintf(buf, sizeof buf, "%s", lua_tostring(rt->L, -1) ? lua_tostring(rt->L, -1) : "(nil)");
    lua_pop(rt->L, 1);
    return buf;
}
