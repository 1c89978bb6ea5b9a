/* tests/comm/bench_allreduce.c — the all-reduce benchmark as a program of its own (for the
 * tests; `sampan bench allreduce` runs the same bench_allreduce_main). */
#include "benchmarks/allreduce.h"

int main(int argc, char **argv) { return bench_allreduce_main(argc, argv); }
