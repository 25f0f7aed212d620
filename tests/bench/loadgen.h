/* mcgw_loadgen's parts shared between files: the HTTP/2 mode
 * (loadgen_h2.c) is entered from main() in loadgen.c. */
#ifndef MCGW_LOADGEN_H
#define MCGW_LOADGEN_H

#include <uv.h>

/* `mcgw_loadgen h2 bulk|hold ...` (argv as main() got it). Exit status as for
 * the other modes: 0 all streams succeeded, 1 any failed, 2 usage error. */
int lg_h2_main(int argc, char **argv, uv_loop_t *loop);

#endif
