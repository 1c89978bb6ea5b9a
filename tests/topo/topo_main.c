/* tests/topo/topo_main.c — `topo_cli topo ARGS` runs `sampan topo ARGS` (launch/cmd_topo.c) on
 * its own, so the topo tests do not depend on the other subcommands being built or on
 * launch/main.c dispatching `topo`. */
#include <stdio.h>
#include <string.h>

int cmd_topo(int argc, char **argv);

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "topo")) {
        fputs("usage: topo_cli topo [options]   (as 'sampan topo')\n", stderr);
        return 2;
    }
    return cmd_topo(argc - 1, argv + 1);
}
