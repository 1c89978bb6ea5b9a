/* tests/comm/bench_alltoall.c — the all-to-all benchmark as a program of its own (for the
 * tests; `sampan bench alltoall` runs the same bench_alltoall_main). */
#include "benchmarks/allreduce.h"

int main(int argc, char **argv) { return bench_alltoall_main(argc, argv); }
