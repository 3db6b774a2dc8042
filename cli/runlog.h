/* What a training run tells people and tools: a progress line (a bar with ETA on a terminal,
 * plain lines otherwise) and a JSONL log of every step and evaluation in the run directory. */
#ifndef MS_RUNLOG_H
#define MS_RUNLOG_H

#include <stdio.h>

typedef struct {
    FILE *jsonl;      /* RUN_DIR/log.jsonl, appended to (a resumed run continues it) */
    int tty;          /* stderr is a terminal: redraw one progress line */
    int log_every;    /* plain-line period when not a tty */
    long total_steps;
    double t_start;   /* wall clock of the first step of this process */
    long step_start;  /* step at which this process started (for the ETA after a resume) */
    int line_open;    /* a progress line is on screen without its newline */
} ms_runlog;

/* Opens RUN_DIR/log.jsonl for appending. progress: 1 on, 0 off, -1 auto (a terminal). */
int ms_runlog_open(ms_runlog *l, const char *run_dir, int progress, int log_every,
                   long total_steps, long step_start, char *err, size_t cap);
void ms_runlog_close(ms_runlog *l);

/* One optimizer step: total loss, per-task losses (names[T], losses[T]), MI loss, lr,
 * gradient norm, images/s. Writes a JSONL record and updates the progress display. */
void ms_runlog_step(ms_runlog *l, long step, double epoch, double loss, int T,
                    const char *const *names, const double *losses, double mi, double lr,
                    double grad_norm, double images_per_s);

/* An evaluation: a JSON object text for "metrics" (already formatted) at `step`. */
void ms_runlog_eval(ms_runlog *l, long step, const char *split, const char *metrics_json);

/* A free-form event ("checkpoint", "skipped_step", "signal", ...) with a message. */
void ms_runlog_event(ms_runlog *l, long step, const char *kind, const char *message);

/* Ends an open progress line so that other output starts on a fresh line. */
void ms_runlog_break(ms_runlog *l);

#endif
