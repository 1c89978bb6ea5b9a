/* benchmarks/allreduce.h — `sampan bench allreduce` and `sampan bench alltoall`: collective time
 * and bandwidth over message sizes, with nccl-tests' algorithm and bus bandwidth, as JSON. */
#ifndef SAMPAN_BENCH_ALLREDUCE_H
#define SAMPAN_BENCH_ALLREDUCE_H

/* argv[0] is the subcommand's name; options follow (--help lists them). Starts and ends the
 * world comm itself (comm_world_init / comm_world_finalize), so call it before any other
 * comm_world_init. Returns 0, 1 when a result was wrong, 2 on a usage or start-up error. */
int bench_allreduce_main(int argc, char **argv);
/* the same for comm_alltoallv with equal blocks (bytes per rank split over the n ranks) */
int bench_alltoall_main(int argc, char **argv);

#endif
