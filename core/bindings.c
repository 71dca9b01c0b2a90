#include "bindings.h"

#include "bind_codec.h"
#include "bind_conv.h"
#include "bind_core.h"
#include "bind_crypto.h"
#include "bind_events.h"
#include "bind_http.h"
#include "bind_metrics.h"
#include "bind_outbox.h"
#include "bind_state.h"
#include "bind_timer.h"
#include "runtime.h"

void sb_bindings_open(struct sb_runtime *rt)
{
    sb_bind_core_open(rt);
    sb_bind_crypto_open(rt->L);
    sb_bind_codec_open(rt->L);
    sb_bind_http_open(rt->L);
    sb_bind_timer_open(rt->L);
    sb_bind_state_open(rt->L);
    sb_bind_conv_open(rt->L);
    sb_bind_outbox_open(rt->L);
    sb_bind_events_open(rt->L);
    sb_bind_metrics_open(rt->L);
}

void sb_bindings_runners(void)
{
    sb_bind_timer_runner();
    sb_bind_outbox_runner();
    sb_bind_events_runner();
}
