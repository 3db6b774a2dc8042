/* The usage-error message every subcommand prints (cli/commands.h). Kept out of main.c so the
 * tests, which link the commands without main, have it too. */
#include <stdarg.h>
#include <stdio.h>

#include "commands.h"

int ms_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "modsquad%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fprintf(stderr, "Try 'modsquad%s%s --help'.\n", cmd ? " " : "", cmd ? cmd : "");
    return MS_EXIT_USAGE;
}
