/* launch/main.c — the `sampan` command: dispatches to a subcommand.
 * Only this layer decides to exit; libraries return codes and messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../benchmarks/allreduce.h"
#include "../benchmarks/bench.h"
#include "cli.h"
#include "kern.h"

static void usage(FILE *f) {
    fputs("usage: sampan <command> [options]\n"
          "  run    -m MODEL -p PROMPT [-n N] [--temp T] [--seed S] [-t N] [--json]   generate text\n"
          "  score  -m MODEL (-p PROMPT | --tokens ID,ID,...) [--top K]   teacher-forced logits (JSON)\n"
          "  serve  -m MODEL [--tp N --pp N] [--host H] [--port P] [--api-key KEY]   OpenAI-compatible HTTP server\n"
          "  info   MODEL                       architecture, hyper-parameters, tokenizer, tensors\n"
          "  model  synth -o FILE [--arch llama|deepseek2] --shape SHAPE [--type T] [--layers N] [--seed S]\n"
          "  model  quantize IN OUT TYPE        convert matrices to TYPE (an unknown TYPE lists them)\n"
          "  topo   [--topology FILE.xml | --synthetic DESC] [--ranks N] [--bind]   where ranks run (cores, NUMA node, GPU)\n"
          "  bench  [--quick] [--json FILE] ... prompt/decode speed against measured machine ceilings\n"
          "  bench  allreduce [--json FILE]     all-reduce algbw/busbw, 4 KiB-64 MiB (under mpirun)\n"
          "  bench  alltoall [--json FILE]      all-to-all algbw/busbw, 4 KiB-64 MiB (under mpirun)\n"
          "Run 'sampan <command> --help' for a command's options.\n",
          f);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("sampan 0.1.0\n");
        return 0;
    }
    /* the collective benchmarks start and end MPI themselves */
    if (!strcmp(cmd, "bench") && argc > 2 && !strcmp(argv[2], "allreduce"))
        return bench_allreduce_main(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench") && argc > 2 && !strcmp(argv[2], "alltoall"))
        return bench_alltoall_main(argc - 2, argv + 2);
    const char *isa = getenv("SAMPAN_ISA");
    if (kern_init(isa && *isa ? isa : NULL) != 0) {
        cli_error("SAMPAN_ISA=%s is not supported by this CPU", isa);
        return 1;
    }
    if (!strcmp(cmd, "run")) return cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "score")) return cmd_score(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "model")) return cmd_model(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return bench_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "topo")) return cmd_topo(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve")) return cmd_serve(argc - 1, argv + 1);
    cli_error("unknown command '%s' (run 'sampan --help')", cmd);
    return 2;
}
