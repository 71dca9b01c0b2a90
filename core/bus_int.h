/* Inside the event bus: what bus.c (events, the tail, readers) and
 * bus_sub.c (subscribers, their lanes, retries and cursors) share. Not for
 * other modules: they use bus.h. */
#ifndef SB_BUS_INT_H
#define SB_BUS_INT_H

#include "bus.h"

/* Follows the journal from its current end (start-up, the store open). */
void sb_bus_start_reading(void);
/* No more reads (graceful stop): readers keep their positions. */
void sb_bus_stop_reading(void);
/* Frees every reader and the tail (exit). */
void sb_bus_readers_free(void);

#endif
