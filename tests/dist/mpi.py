"""tests/dist/mpi.py — how the distributed tests start ranks: Open MPI's mpirun as root, with
oversubscription (this machine has 2 cores) and shared-memory transport only."""
import os

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_mpi_yield_when_idle="1")
os.environ.update(ENV)

def mpirun(n):
    return ["mpirun", "-np", str(n), "--mca", "btl", "self,vader", "-x", "LSAN_OPTIONS",
            "-x", "ASAN_OPTIONS", "-x", "UBSAN_OPTIONS"]

LAYOUTS = [(2, 1), (4, 1), (1, 2), (2, 2)]   # (tp, pp) besides the single rank

def layout_args(tp, pp):
    return ["--tp", str(tp), "--pp", str(pp)]
