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

#endif
