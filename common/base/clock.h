/* clock: the two clocks fedopt reads.
 *
 * fl_clock_mono_s is for every duration, deadline and timeout: it never jumps
 * when the wall clock is set (NTP step, an operator's `date -s`), so a round's
 * deadline or a heartbeat silence is measured in real elapsed seconds.
 * fl_clock_wall_s is for timestamps that are stored or shown (the database's
 * started_at/finished_at, log lines, heartbeats' unix_ms) and for nothing that
 * is compared against a deadline. */
#ifndef FL_CLOCK_H
#define FL_CLOCK_H

#include <stdint.h>

/* Seconds on CLOCK_MONOTONIC (arbitrary origin, never goes back). */
double fl_clock_mono_s(void);

/* Seconds since the Unix epoch on CLOCK_REALTIME. */
double fl_clock_wall_s(void);

/* Milliseconds since the Unix epoch on CLOCK_REALTIME. */
uint64_t fl_clock_wall_ms(void);

#endif
