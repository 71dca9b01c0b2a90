#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fixtures.h"
#include "tests.h"

static struct sb_config *load(const char *content, const struct sb_overrides *ov, struct sb_error *err)
{
    const char *dir = fixture_dir();
    char path[512];
    fixture_write(dir, "conf.lua", content);
    snprintf(path, sizeof path, "%s/conf.lua", dir);
    memset(err, 0, sizeof *err);
    return sb_config_load(path, ov, err);
}

static void test_defaults(void)
{
    struct sb_error err;
    struct sb_config *cfg = load("return {}", NULL, &err);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    CHECK_STR(cfg->listen_host, "127.0.0.1");
    CHECK(cfg->listen_port == 8080);
    CHECK_STR(cfg->data_dir, "./var");
    CHECK_STR(cfg->dirs[SB_DIR_SCRIPTS], "scripts");
    CHECK_STR(cfg->dirs[SB_DIR_RULES], "rules");
    CHECK(cfg->max_body_bytes == 1048576);
    CHECK(cfg->admin_token == NULL);
    CHECK(cfg->lua_memory_limit == 64u * 1024 * 1024);
    CHECK(cfg->events_concurrency == 16 && cfg->events_max_attempts == 5 && cfg->events_stream_max == 64);
    CHECK(cfg->events_retry_max == 60 && cfg->events_keep_cursors == 7 * 86400.0);
    CHECK(cfg->events_stream_buffer == 1048576 && cfg->events_stream_heartbeat == 15);
    CHECK(cfg->metrics_max_series == 1000);
    sb_config_unref(cfg);
}

static void test_overrides_and_env(void)
{
    struct sb_error err;
    struct sb_overrides ov = { "127.0.0.1:0", "/tmp/data" };
    struct sb_config *cfg;
    setenv("SB_UNIT_TOKEN", "s3cret", 1);
    cfg = load("return { listen = '0.0.0.0:1', admin_token = env('SB_UNIT_TOKEN'), api_token = env('SB_UNIT_UNSET') }",
               &ov, &err);
    CHECK(cfg != NULL);
    if (!cfg)
        return;
    CHECK(cfg->listen_port == 0);
    CHECK_STR(cfg->data_dir, "/tmp/data");
    CHECK_STR(cfg->admin_token, "s3cret");
    CHECK(cfg->api_token == NULL);
    sb_config_unref(cfg);
}

static void test_errors(void)
{
    struct sb_error err;
    CHECK(load("return {\n http = { max_body_bytes = 'big' } }", NULL, &err) == NULL);
    CHECK(strstr(err.message, "http.max_body_bytes") != NULL);
    CHECK(load("return { events = { concurrency = 0 } }", NULL, &err) == NULL);
    CHECK(strstr(err.message, "events.concurrency") != NULL);
    CHECK(load("return { events = { stream_buffer_bytes = 10 } }", NULL, &err) == NULL);
    CHECK(strstr(err.message, "events.stream_buffer_bytes") != NULL);
    CHECK(load("return { metrics = { max_series = 0 } }", NULL, &err) == NULL);
    CHECK(strstr(err.message, "metrics.max_series") != NULL);
    CHECK(load("return { events = 3 }", NULL, &err) == NULL);
    CHECK(strstr(err.message, "events must be a table") != NULL);
    CHECK(load("return {\n\n listen = }", NULL, &err) == NULL);
    CHECK(err.line == 3);
    CHECK(strstr(err.file, "conf.lua") != NULL);
    CHECK(load("return 42", NULL, &err) == NULL);
    CHECK(strstr(err.message, "must return a table") != NULL);
    CHECK(load("return { log = { level = 'loud' } }", NULL, &err) == NULL);
    CHECK(load("local f = io.open('/etc/passwd') return {}", NULL, &err) == NULL);
    CHECK(load("while true do end", NULL, &err) == NULL);
    CHECK(strstr(err.message, "ran too long") != NULL);
}

const struct test_case config_tests[] = {
    { "config: defaults", test_defaults },
    { "config: overrides and env()", test_overrides_and_env },
    { "config: errors name the field or file:line", test_errors },
    { NULL, NULL },
};
