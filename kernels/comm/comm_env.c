/* Where this process stands in a launch, read from the launcher's environment before MPI or a
 * GPU is touched (kernels/comm/comm.h). Each launcher sets its own variables:
 *   mpirun (OpenMPI)     OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}
 *   srun --mpi=pmix      PMIX_RANK (+ SLURM's sizes)
 *   mpiexec (Hydra), srun --mpi=pmi2   PMI_RANK, PMI_SIZE (+ MPI_LOCALRANKID or SLURM_LOCALID)
 *   srun                 SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID, SLURM_NODEID,
 *                        SLURM_STEP_TASKS_PER_NODE
 * SLURM_NTASKS alone is not used: the batch script itself sees it although it is one process. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"

/* The variable as a non-negative int, or -1 when unset or not a number. */
static int env_int(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) return -1;
    char *end;
    long x = strtol(v, &end, 10);
    return *end || x < 0 || x > (1L << 30) ? -1 : (int)x;
}

/* Tasks on node `node` from SLURM's compressed list "2(x3),1": -1 when it cannot be read. */
static int slurm_tasks_on_node(const char *list, int node) {
    if (!list || node < 0) return -1;
    const char *p = list;
    while (*p) {
        char *end;
        long tasks = strtol(p, &end, 10), repeat = 1;
        if (end == p) return -1;
        p = end;
        if (strncmp(p, "(x", 2) == 0) {
            repeat = strtol(p + 2, &end, 10);
            if (end == p + 2 || *end != ')') return -1;
            p = end + 1;
        }
        if (node < repeat) return (int)tasks;
        node -= (int)repeat;
        if (*p == ',') p++;
        else if (*p) return -1;
    }
    return -1;
}

void ms_comm_env_detect(ms_comm_env *e) {
    memset(e, 0, sizeof *e);
    e->world = e->local_world = 1;
    snprintf(e->launcher, sizeof e->launcher, "none");
    int slurm_size = env_int("SLURM_STEP_NUM_TASKS"), slurm_rank = env_int("SLURM_PROCID");
    int slurm_local = env_int("SLURM_LOCALID");
    int slurm_local_size = slurm_tasks_on_node(getenv("SLURM_STEP_TASKS_PER_NODE"),
                                               env_int("SLURM_NODEID"));
    int rank = -1, size = -1, local = -1, local_size = -1;
    if ((rank = env_int("OMPI_COMM_WORLD_RANK")) >= 0) {
        size = env_int("OMPI_COMM_WORLD_SIZE");
        local = env_int("OMPI_COMM_WORLD_LOCAL_RANK");
        local_size = env_int("OMPI_COMM_WORLD_LOCAL_SIZE");
        snprintf(e->launcher, sizeof e->launcher, "OpenMPI");
        e->mpi = 1;
    } else if ((rank = env_int("PMIX_RANK")) >= 0 && slurm_size > 0) {
        size = slurm_size, local = slurm_local, local_size = slurm_local_size;
        snprintf(e->launcher, sizeof e->launcher, "PMIx");
        e->mpi = 1;
    } else if ((rank = env_int("PMI_RANK")) >= 0 && (size = env_int("PMI_SIZE")) > 0) {
        local = env_int("MPI_LOCALRANKID");
        if (local < 0) local = slurm_local, local_size = slurm_local_size;
        snprintf(e->launcher, sizeof e->launcher, "PMI");
        e->mpi = 1;
    } else if (slurm_rank >= 0 && slurm_size > 0) {
        rank = slurm_rank, size = slurm_size, local = slurm_local, local_size = slurm_local_size;
        snprintf(e->launcher, sizeof e->launcher, "SLURM");
    }
    if (rank < 0 || size < 1 || rank >= size) return; /* not launched as a rank of several */
    e->rank = rank, e->world = size;
    e->local_rank = local >= 0 ? local : rank;
    e->local_world = local_size >= 1 ? local_size : size;
    const char *job = getenv("SLURM_JOB_ID"), *step = getenv("SLURM_STEP_ID");
    const char *restart = getenv("SLURM_RESTART_COUNT"), *ns = getenv("PMIX_NAMESPACE");
    if (job && step)
        snprintf(e->job, sizeof e->job, "slurm-%s.%s.%s", job, step, restart ? restart : "0");
    else if (ns)
        snprintf(e->job, sizeof e->job, "pmix-%s", ns);
    /* Only characters that are safe in a file name. */
    for (char *c = e->job; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '-' || *c == '_'))
            *c = '_';
}
