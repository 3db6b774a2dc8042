/* Every subcommand is `int cmd_NAME(int argc, char **argv)` with argv[0] = the command name.
 * It returns the process exit status: 0 success, 1 failure, 2 usage error. */
#ifndef MS_COMMANDS_H
#define MS_COMMANDS_H

#define MS_VERSION "0.1.0"

/* Exit status for a usage error (unknown option, missing argument). */
#define MS_EXIT_USAGE 2

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_extract(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);

/* Shared by subcommands: prints "modsquad CMD: MSG" and "Try 'modsquad CMD --help'." to stderr
 * and returns MS_EXIT_USAGE. */
int ms_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
