#include "runlog.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../kernels/util.h"

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int ms_runlog_open(ms_runlog *l, const char *run_dir, int progress, int log_every,
                   long total_steps, long step_start, char *err, size_t cap) {
    memset(l, 0, sizeof *l);
    char path[4096];
    snprintf(path, sizeof path, "%s/log.jsonl", run_dir);
    l->jsonl = fopen(path, "a");
    if (!l->jsonl) {
        snprintf(err, cap, "cannot open %s for appending: %s", path, strerror(errno));
        return -1;
    }
    l->tty = progress < 0 ? isatty(STDERR_FILENO) : progress;
    l->log_every = log_every > 0 ? log_every : 1;
    l->total_steps = total_steps;
    l->step_start = step_start;
    l->t_start = ms_now();
    return 0;
}

void ms_runlog_close(ms_runlog *l) {
    ms_runlog_break(l);
    if (l->jsonl) fclose(l->jsonl);
    l->jsonl = NULL;
}

void ms_runlog_break(ms_runlog *l) {
    if (l->line_open) fputc('\n', stderr);
    l->line_open = 0;
}

/* JSON has no NaN or Infinity: write null, which a reader treats as a missing value. */
static void json_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.9g", v);
    else fputs("null", f);
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", (unsigned char)*s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

static void fmt_duration(char *buf, size_t cap, double s) {
    if (!isfinite(s) || s < 0) snprintf(buf, cap, "?");
    else if (s < 60) snprintf(buf, cap, "%.0fs", s);
    else if (s < 3600) snprintf(buf, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, cap, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

void ms_runlog_step(ms_runlog *l, long step, double epoch, double loss, int T,
                    const char *const *names, const double *losses, double mi, double lr,
                    double grad_norm, double images_per_s) {
    FILE *f = l->jsonl;
    fprintf(f, "{\"kind\":\"step\",\"time\":%.3f,\"step\":%ld,\"epoch\":", wall(), step);
    json_num(f, epoch);
    fputs(",\"loss\":", f);
    json_num(f, loss);
    fputs(",\"task_loss\":{", f);
    for (int t = 0; t < T; t++) {
        if (t) fputc(',', f);
        json_str(f, names[t]);
        fputc(':', f);
        json_num(f, losses[t]);
    }
    fputs("},\"mi_loss\":", f);
    json_num(f, mi);
    fputs(",\"lr\":", f);
    json_num(f, lr);
    fputs(",\"grad_norm\":", f);
    json_num(f, grad_norm);
    fputs(",\"images_per_s\":", f);
    json_num(f, images_per_s);
    fputs("}\n", f);
    fflush(f);

    long done = step + 1 - l->step_start;
    double elapsed = ms_now() - l->t_start;
    double eta = done > 0 ? elapsed / (double)done * (double)(l->total_steps - step - 1) : NAN;
    char eta_s[32];
    fmt_duration(eta_s, sizeof eta_s, eta);
    if (l->tty) {
        int width = 24, filled = l->total_steps > 0 ? (int)((step + 1) * width / l->total_steps) : 0;
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r[%s] step %ld/%ld  loss %.4f  mi %.4f  lr %.2e  %.1f img/s  ETA %s   ",
                bar, step + 1, l->total_steps, loss, mi, lr, images_per_s, eta_s);
        l->line_open = 1;
        if (step + 1 == l->total_steps) ms_runlog_break(l);
    } else if ((step + 1) % l->log_every == 0 || step + 1 == l->total_steps) {
        fprintf(stderr, "step %ld/%ld  loss %.4f", step + 1, l->total_steps, loss);
        for (int t = 0; t < T; t++) fprintf(stderr, "  %s %.4f", names[t], losses[t]);
        fprintf(stderr, "  mi %.4f  lr %.3e  %.1f img/s  ETA %s\n", mi, lr, images_per_s, eta_s);
    }
    fflush(stderr);
}

void ms_runlog_eval(ms_runlog *l, long step, const char *split, const char *metrics_json) {
    fprintf(l->jsonl, "{\"kind\":\"eval\",\"time\":%.3f,\"step\":%ld,\"split\":", wall(), step);
    json_str(l->jsonl, split);
    /* One record per line: the (pretty-printed) metrics object loses its newlines. */
    fputs(",\"metrics\":", l->jsonl);
    for (const char *p = metrics_json; *p; p++) fputc(*p == '\n' ? ' ' : *p, l->jsonl);
    fputs("}\n", l->jsonl);
    fflush(l->jsonl);
}

void ms_runlog_event(ms_runlog *l, long step, const char *kind, const char *message) {
    fprintf(l->jsonl, "{\"kind\":");
    json_str(l->jsonl, kind);
    fprintf(l->jsonl, ",\"time\":%.3f,\"step\":%ld,\"message\":", wall(), step);
    json_str(l->jsonl, message);
    fputs("}\n", l->jsonl);
    fflush(l->jsonl);
}
