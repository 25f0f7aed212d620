/* mcgw_loadgen's parts shared between files: the HTTP/2 mode
 * (loadgen_h2.c) is entered from main() in loadgen.c. */
#ifndef MCGW_LOADGEN_H
#define MCGW_LOADGEN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* `mcgw_loadgen h2 bulk|hold ...` (argv as main() got it). Exit status as for
 * the other modes: 0 all streams succeeded, 1 any failed, 2 usage error. */
int lg_h2_main(int argc, char **argv, uv_loop_t *loop);

/* Hold levels, for both modes. `--steps a,b,c`: appends the counts to
 * steps[*n] (at most cap). Returns 0, or -1 when the list is malformed. */
int lg_parse_steps(const char *s, uint64_t *steps, size_t *n, size_t cap);
/* Moves *target to the next level: the next step above it and below total,
 * else total. *next is the index of the next step to consider. */
void lg_next_level(const uint64_t *steps, size_t n, size_t *next, uint64_t *target,
                   uint64_t total);

/* The hold modes' levels. A mode opens tunnels (or streams) up to `target`
 * and calls lg_levels_reached() once all of them are settled: the level is
 * reported ("LEVEL", or "HELD" at total) and the run pauses until SIGUSR1
 * or pause_s (hold_s at the last level), then go_on() continues at the next
 * level. SIGUSR1 at the last level, SIGINT and SIGTERM call finish(). */
typedef struct lg_levels {
  const uint64_t *steps;
  size_t n_steps, next;
  uint64_t target, total;
  double pause_s, hold_s;
  int paused;
  void (*report)(const char *what);
  void (*go_on)(void);
  void (*finish)(void);
  uv_timer_t timer;
  uv_signal_t sig_usr1, sig_int, sig_term;
} lg_levels;

/* Initialises the handles (the fields above them are the caller's). */
void lg_levels_init(lg_levels *l, uv_loop_t *loop);
/* Starts listening for the signals. */
void lg_levels_start(lg_levels *l);
/* target := the next level (lg_next_level). */
void lg_levels_next(lg_levels *l);
void lg_levels_reached(lg_levels *l);
void lg_levels_close(lg_levels *l, void (*close_handle)(uv_handle_t *h));

#endif
