/* Scheduler signals (issue 9). SIGTERM, SIGINT and SIGUSR1 (what SLURM sends before a time
 * limit with --signal) ask the training loop to finish its current step, write a checkpoint
 * and exit with MS_EXIT_REQUEUE, which scripts/slurm requeues on. A second SIGINT exits at
 * once (the newest complete checkpoint stays valid: they are written atomically). */
#ifndef MS_SIGNALS_H
#define MS_SIGNALS_H

#include <signal.h>

/* EX_TEMPFAIL of sysexits.h: "try again later". */
#define MS_EXIT_REQUEUE 75

/* The first stop signal received, or 0. */
extern volatile sig_atomic_t ms_stop_signal;

void ms_signals_install(void);

#endif
