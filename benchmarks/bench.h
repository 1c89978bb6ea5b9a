/* benchmarks/bench.h — `sampan bench`: speed against the machine's measured ceilings.
 *
 * One harness, one schema (nccl-tests style): every run measures its ceilings in the same
 * process (memory read bandwidth, STREAM triad, peak FMA rate, each with the run's thread count)
 * and reports each result as a fraction of them, as a table on stdout and optionally JSON.
 */
#ifndef SAMPAN_BENCH_H
#define SAMPAN_BENCH_H

/* argv[0] is the subcommand name ("bench"); returns the process exit status
 * (0 ok, 1 runtime error, 2 usage error). */
int bench_main(int argc, char **argv);

#endif
