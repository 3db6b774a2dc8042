/* The command-line surface: help, version, usage errors and their exit codes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "../testutil.h"

/* Runs `modsquad ARGS`, capturing stdout+stderr into out; returns the exit status. */
static int run_cli(const char *args, char *out, size_t cap) {
    const char *bin = getenv("MODSQUAD_BIN");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", bin ? bin : "./modsquad", args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "cannot run %s", cmd);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    cr_assert(WIFEXITED(st), "'%s' did not exit normally", cmd);
    return WEXITSTATUS(st);
}

Test(cli, help_lists_commands) {
    char out[8192];
    cr_assert_eq(run_cli("--help", out, sizeof out), 0);
    cr_assert(strstr(out, "Usage: modsquad <command>"), "help output: %s", out);
    cr_assert(strstr(out, "config"), "help does not list 'config': %s", out);
}

Test(cli, version) {
    char out[256];
    cr_assert_eq(run_cli("--version", out, sizeof out), 0);
    cr_assert(strncmp(out, "modsquad ", 9) == 0, "version output: %s", out);
}

Test(cli, no_command_is_usage_error) {
    char out[8192];
    cr_assert_eq(run_cli("", out, sizeof out), 2);
    cr_assert(strstr(out, "Usage:"), "output: %s", out);
}

Test(cli, unknown_command_exits_2) {
    char out[1024];
    cr_assert_eq(run_cli("trian configs/demo.yaml", out, sizeof out), 2);
    cr_assert(strstr(out, "unknown command 'trian'"), "output: %s", out);
}

Test(cli, unknown_option_exits_2) {
    char out[1024];
    cr_assert_eq(run_cli("--frobnicate", out, sizeof out), 2);
    cr_assert(strstr(out, "unknown option '--frobnicate'"), "output: %s", out);
}

/* Every command listed by `modsquad --help` answers `--help` itself. */
Test(cli, every_command_has_help) {
    char help[8192], out[8192];
    cr_assert_eq(run_cli("--help", help, sizeof help), 0);
    char *line = strstr(help, "Commands:\n");
    cr_assert_not_null(line);
    int checked = 0;
    for (line = strchr(line, '\n') + 1; strncmp(line, "  ", 2) == 0; line = strchr(line, '\n') + 1) {
        char name[64], args[96];
        cr_assert_eq(sscanf(line, " %63s", name), 1);
        snprintf(args, sizeof args, "%s --help", name);
        cr_assert_eq(run_cli(args, out, sizeof out), 0, "'modsquad %s' failed: %s", args, out);
        cr_assert(strstr(out, "Usage: modsquad"), "'modsquad %s' output: %s", args, out);
        checked++;
    }
    cr_assert_geq(checked, 1, "no commands found in: %s", help);
}
