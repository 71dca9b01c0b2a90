/* The one event loop of the process. */
#ifndef SB_LOOP_H
#define SB_LOOP_H

struct event_base;
extern struct event_base *sb_base;

#endif
